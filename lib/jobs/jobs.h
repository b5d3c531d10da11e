/*
 * fleetd jobs: a job queue in PostgreSQL (Oban's guarantees, in C) and the audit trail built on it.
 *
 * A job is a row of `jobs` (migration 003) with a queue, a kind (which worker runs it), JSON args
 * and a state: available, scheduled, executing, retryable, completed, discarded, cancelled.
 *
 *   enqueue ──> available ──claim──> executing ──ok──> completed
 *      │            ▲                    │ error, attempts left ──> retryable ──(backoff)──┐
 *      │            └────────────────────┼─────────────────────────────────────────────────┘
 *      └─(at > now)─> scheduled ─(due)───┘ error, no attempts left ──> discarded
 *                                        │ lease expired (node died) ──> available (rescued)
 *   cancel (any state but completed) ──> cancelled
 *
 * Enqueues from many requests are committed together (group commit): one transaction per flush,
 * every `commit_interval_ms` or `commit_max_jobs` jobs, whichever comes first. Each caller hears
 * once its job is durable, or gets an error within a bounded time (never a false success).
 *
 * Workers are actors under the `jobs` supervisor: per queue, a producer (queue:NAME) claims up to
 * the queue's concurrency with FOR UPDATE SKIP LOCKED, woken by LISTEN/NOTIFY with polling as a
 * fallback; cron, rescuer and pruner are actors too. Nothing here knows about HTTP.
 */
#ifndef FL_JOBS_H
#define FL_JOBS_H

#include "core/core.h"
#include "db/db.h"
#include "runtime/runtime.h"

typedef struct fl_jobs fl_jobs_t;

/* ---- workers ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t id;
    const char *queue;
    const char *kind;
    const char *args; /* JSON text */
    int attempt;      /* 1 on the first run */
    int max_attempts;
} fl_job_t;

/* The handle a worker answers through; valid until it is answered. */
typedef struct fl_job_ctx fl_job_ctx_t;

/* Runs a job on the worker's shard (its queue's producer's shard). The worker answers exactly
 * once, from inside perform or later on that shard: fl_job_complete, fl_job_fail (retried with
 * backoff until max_attempts, then discarded), or fl_job_discard (never retried); error is copied.
 * A job not answered within its worker's timeout fails ("timed out after N ms") and may be retried
 * while the late worker still runs: a worker must still answer (the answer is then ignored), and
 * what it does should be idempotent, as with any at-least-once queue. The job's fields and ctx stay
 * valid until the answer. db is the shard's connection (may be NULL while it restarts: fail the
 * job then). */
typedef void (*fl_job_perform_fn)(fl_job_ctx_t *ctx, const fl_job_t *job, fl_db_t *db, void *arg);
void fl_job_complete(fl_job_ctx_t *ctx);
void fl_job_fail(fl_job_ctx_t *ctx, const char *error);
void fl_job_discard(fl_job_ctx_t *ctx, const char *error);

typedef struct {
    const char *kind; /* e.g. "audit" */
    fl_job_perform_fn perform;
    void *arg;
    int timeout_ms; /* 0: 60 s */
} fl_worker_def_t;

typedef struct {
    const char *name; /* e.g. "audit" */
    int concurrency;  /* jobs of this queue running at once on this node */
} fl_queue_def_t;

/* A cron entry: every `every_s` seconds, aligned to the epoch (so ticks are the same instants on
 * every node), one job is enqueued, by exactly one node per tick (cron_ticks decides, in the same
 * statement that inserts the job). A node that starts within a tick nobody has fired yet fires it
 * then, so a tick missed while no node ran is made up once. */
typedef struct {
    const char *name; /* unique, e.g. "retention" */
    int every_s;
    const char *queue;
    const char *kind;
    const char *args; /* JSON */
} fl_cron_def_t;

/* ---- the service -------------------------------------------------------------------------------- */

/* Every field: 0 (or NULL) takes the default in brackets. */
typedef struct {
    const char *node;       /* this node's name, recorded on the jobs it runs (attempted_by) [host name] */
    const char *conninfo;   /* for the committer's and listener's own connections [libpq's defaults] */
    int commit_interval_ms; /* longest wait before a flush [5] */
    int commit_max_jobs;    /* flush at once when this many wait [1000] */
    int commit_timeout_ms;  /* a caller hears an error if its job is not durable by then [5000] */
    int max_pending;        /* enqueues waiting for a flush; past it FL_EFULL at once [10000] */
    long max_pending_bytes; /* bytes of args waiting for a flush; past it FL_EFULL at once (0: 64 MiB) */
    int poll_interval_ms;   /* producers poll, and the stager stages, this often [1000] */
    /* an executing job's lease, renewed by its producer every lease/3; the rescuer looks for
     * expired leases every lease/2 [30000] */
    int lease_ms;
    /* ages of finished jobs to delete [1 day, 7 days, 7 days]; < 0: never */
    int prune_completed_s, prune_discarded_s, prune_cancelled_s;
    /* retry delay: base * 2^(attempt-1), capped at max, then +-20% jitter [1000, 3600000] */
    int backoff_base_ms, backoff_max_ms;
    int prune_interval_ms; /* how often the pruner runs [60000] */
    /* when the tree stops, running jobs get this long to finish; the others are rescued once
     * their lease runs out [5000] */
    int stop_grace_ms;
} fl_jobs_opts_t;

/* rt and db must outlive the service. FL_EINVAL (a bad option) or FL_ENOMEM. */
int fl_jobs_new(fl_runtime_t *rt, fl_db_service_t *db, const fl_jobs_opts_t *opts, fl_jobs_t **out);
/* Before fl_jobs_spec (FL_ESTATE after). The definitions are copied. FL_EINVAL: a queue or kind
 * name that is not [a-z0-9_]{1,64}, a concurrency or every_s < 1, args that are not a JSON object;
 * FL_EEXIST: that name is already registered. A job whose kind has no worker on the node that
 * claims it fails ("no worker for kind ...") and is retried, perhaps by another node. */
int fl_jobs_add_queue(fl_jobs_t *jobs, const fl_queue_def_t *queue);
int fl_jobs_add_worker(fl_jobs_t *jobs, const fl_worker_def_t *worker);
int fl_jobs_add_cron(fl_jobs_t *jobs, const fl_cron_def_t *cron);
/* The "jobs" supervisor for the application tree (one_for_one): committer, listener, one producer
 * per queue (queue:NAME, spread over the shards), stager, cron, rescuer, pruner. Call it once,
 * after the registrations; the spec stays valid until fl_jobs_free. NULL when out of memory. */
const fl_sup_spec_t *fl_jobs_spec(fl_jobs_t *jobs);
/* The shutdown_ms to give the "jobs" child spec: each producer lets its running jobs finish first
 * (up to stop_grace_ms), one queue after the other, so the supervisor above must wait that long. */
int fl_jobs_shutdown_ms(const fl_jobs_t *jobs);
/* After the whole tree has stopped (jobs and db supervisors), before fl_runtime_free. */
void fl_jobs_free(fl_jobs_t *jobs);

/* ---- enqueue (group commit) --------------------------------------------------------------------- */

typedef struct {
    const char *queue;
    const char *kind;
    const char *args; /* JSON text (copied) */
    size_t args_len;
    const char *unique_key;  /* NULL, or: a second enqueue with this key within unique_period_s
                              * returns the first job (duplicate = true) */
    int unique_period_s;     /* < 0: forever */
    int64_t scheduled_at_us; /* 0: now */
    int max_attempts;        /* 0: 20 */
} fl_job_new_t;

/* Runs on the caller's shard once the job is committed (status FL_OK, its id, and whether it was a
 * duplicate of an earlier job with the same unique key), or with an error: FL_EFULL (too many
 * waiting), FL_EUNAVAIL (the database is down or the commit failed), FL_ETIMEDOUT (not durable
 * within commit_timeout_ms; it may still commit later, so callers must not retry blindly: the
 * unique key makes a retry safe). */
typedef void (*fl_enqueue_fn)(int status, int64_t job_id, bool duplicate, void *arg);
/* Any thread: the committer is connected, so enqueues can be made durable now (for /ready). */
bool fl_jobs_ready(const fl_jobs_t *jobs);

/* On a shard thread. Returns FL_OK (cb will run) or an error at once (cb will not run). */
int fl_jobs_enqueue(fl_jobs_t *jobs, const fl_job_new_t *job, fl_enqueue_fn cb, void *arg);

/* ---- the audit trail ------------------------------------------------------------------------------
 * One audit job per accepted ingest batch: queue "audit", kind "audit", unique key
 * "ingest:{partner_id}:{webhook_id}" held forever (a partner's webhook-id is accepted once), args:
 *
 *   {"partner_id":"acme","webhook_id":"msg_123","webhook_timestamp":1795428000,
 *    "signature":"v1,K5oZ... v1,3Kj9...","received_at":"2026-11-23T10:00:00.200123Z",
 *    "fleets":["harbor-1"],"body":"{\"fixes\":[...]}"}
 *
 * body is the raw request body, exactly as signed (a JSON string holding the bytes). The audit
 * worker stores the request in ingest_batches and its fixes in positions (a fix already there is
 * ignored), registers new vehicles, and moves vehicle_latest forward (never back). Until it has run,
 * a (re)starting tracker reads the job's fixes from the job itself, so every acknowledged fix is
 * seen. */

#define FL_AUDIT_QUEUE "audit"
#define FL_AUDIT_KIND  "audit"

/* Registers on jobs (before its supervisor starts): the audit worker (queue "audit", 4 jobs at once
 * per node) and, when retention_s > 0, the retention worker (queue "retention", one at a time) with
 * its cron entry every retention_every_s (0: daily). A retention run deletes, in statements of a few
 * thousand rows each (no long lock): positions recorded more than retention_s ago, then the ingest
 * batches received before then that have no position left, then the partners' webhook-ids
 * (job_uniques "ingest:...") held since before then. retention_s <= 0 keeps everything forever.
 * FL_OK, or the error of fl_jobs_add_*. */
int fl_audit_register(fl_jobs_t *jobs, int retention_s, int retention_every_s);

/* The args of an audit job (the JSON above) for an accepted batch: into *out a NUL-terminated
 * string the caller frees with fl_free, its length in *len (may be NULL). received_at_us is Unix
 * microseconds; fleets are the fleets the batch's fixes name (a restarting tracker finds its
 * fleet's pending jobs by them). FL_OK, FL_EINVAL (a string is not valid UTF-8 or an id is empty)
 * or FL_ENOMEM. */
int fl_audit_args(const char *partner_id, const char *webhook_id, int64_t webhook_timestamp, const char *signature,
                  int64_t received_at_us, const char *const *fleets, int nfleets, const char *body, size_t body_len, char **out,
                  size_t *len);

/* Reads an RFC 3339 timestamp (offset or Z, any number of fractional digits, rounded to the
 * microsecond) of exactly len bytes into Unix microseconds: how the audit worker reads recorded_at,
 * shared so that every reader of input times agrees. FL_OK or FL_EINVAL. */
int fl_audit_parse_time(const char *s, size_t len, int64_t *epoch_us);

#endif
