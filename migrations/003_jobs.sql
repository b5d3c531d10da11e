-- 003_jobs: the job queue (lib/jobs) and the audit trail it writes.

CREATE TYPE job_state AS ENUM ('available', 'scheduled', 'executing', 'retryable', 'completed', 'discarded', 'cancelled');

CREATE TABLE jobs (
    id           bigserial PRIMARY KEY,
    queue        text NOT NULL CONSTRAINT jobs_queue_format CHECK (queue ~ '^[a-z0-9_]{1,64}$'),
    kind         text NOT NULL CONSTRAINT jobs_kind_format CHECK (kind ~ '^[a-z0-9_]{1,64}$'),
    args         jsonb NOT NULL DEFAULT '{}',
    state        job_state NOT NULL DEFAULT 'available',
    attempt      integer NOT NULL DEFAULT 0 CONSTRAINT jobs_attempt_range CHECK (attempt >= 0),
    max_attempts integer NOT NULL DEFAULT 20 CONSTRAINT jobs_max_attempts_range CHECK (max_attempts > 0),
    -- every failed attempt: [{"attempt":1,"at":"...","error":"..."}, ...]
    errors       jsonb NOT NULL DEFAULT '[]',
    unique_key   text,
    inserted_at  timestamptz NOT NULL DEFAULT now(),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    attempted_at timestamptz,
    attempted_by text,
    -- while executing: the claiming node keeps pushing this forward (heartbeat); once it is past,
    -- the node is presumed dead and the job is rescued
    lease_until  timestamptz,
    completed_at timestamptz,
    discarded_at timestamptz,
    cancelled_at timestamptz,
    CONSTRAINT jobs_executing_has_lease CHECK (state <> 'executing' OR lease_until IS NOT NULL)
);
-- Claims: the oldest due jobs of a queue.
CREATE INDEX jobs_claim ON jobs (queue, scheduled_at, id) WHERE state = 'available';
-- Scheduled and retryable jobs becoming due.
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
-- Rescue: executing jobs whose lease ran out.
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'executing';
-- Pruning finished jobs by age.
CREATE INDEX jobs_finished ON jobs (state, coalesce(completed_at, discarded_at, cancelled_at))
    WHERE state IN ('completed', 'discarded', 'cancelled');
CREATE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- Unique jobs: a key is held until `until` ('infinity' for keys that never expire, such as a
-- partner's webhook-id). A second enqueue with a held key returns the job that holds it.
CREATE TABLE job_uniques (
    key         text PRIMARY KEY,
    job_id      bigint NOT NULL,
    until       timestamptz NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT now()
);

-- Cron: one row per entry and tick; the node whose insert wins enqueues that tick's job.
CREATE TABLE cron_ticks (
    name        text NOT NULL,
    tick        timestamptz NOT NULL,
    job_id      bigint,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, tick)
);

-- The audit trail: every accepted ingest batch, exactly as it was signed, so that any stored fix
-- can be re-verified later (HMAC over "{webhook_id}.{webhook_timestamp}.{body}").
CREATE TABLE ingest_batches (
    id                bigserial PRIMARY KEY,
    partner_id        text NOT NULL REFERENCES partners (id),
    webhook_id        text NOT NULL,
    webhook_timestamp bigint NOT NULL,
    signature         text NOT NULL,  -- the webhook-signature header as received
    body              bytea NOT NULL, -- the raw body, byte for byte
    received_at       timestamptz NOT NULL,
    job_id            bigint NOT NULL,
    CONSTRAINT ingest_batches_webhook_id UNIQUE (partner_id, webhook_id)
);
CREATE INDEX ingest_batches_received_at ON ingest_batches USING brin (received_at);

-- Every acknowledged fix. A fix is identified by (vehicle_id, recorded_at): storing it twice is
-- impossible. History reads are range scans of this key.
CREATE TABLE positions (
    vehicle_id  text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    recorded_at timestamptz NOT NULL,
    fleet_id    text NOT NULL REFERENCES fleets (id) ON DELETE CASCADE,
    lat         double precision NOT NULL,
    lng         double precision NOT NULL,
    received_at timestamptz NOT NULL,
    speed_kmh   double precision,
    heading_deg double precision,
    accuracy_m  double precision,
    batch_id    bigint NOT NULL, -- the ingest batch (and signed request) it came in
    PRIMARY KEY (vehicle_id, recorded_at)
);
-- Retention deletes by age.
CREATE INDEX positions_recorded_at ON positions USING brin (recorded_at);
