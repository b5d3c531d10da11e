-- 001_initial: fleets, partners and their signing secrets, operator tokens, vehicles.
-- `fleetd migrate` runs this inside one transaction with its schema_migrations row: no BEGIN/COMMIT here.
-- Ids follow the contract: 1 to 64 characters of [A-Za-z0-9._-].

CREATE TABLE fleets (
    id         text PRIMARY KEY CONSTRAINT fleets_id_format CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    name       text CONSTRAINT fleets_name_length CHECK (char_length(name) <= 256),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE partners (
    id         text PRIMARY KEY CONSTRAINT partners_id_format CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Signing secrets, encrypted with libsodium's secretbox under the master key (FLEETD_MASTER_KEY):
-- the ciphertext carries a 16-byte MAC, the nonce is crypto_secretbox_NONCEBYTES (24) long.
-- Several live secrets per partner allow rotation; retiring one sets retired_at.
CREATE TABLE partner_secrets (
    id                bigserial PRIMARY KEY,
    partner_id        text NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    secret_ciphertext bytea NOT NULL CONSTRAINT partner_secrets_ciphertext_length CHECK (octet_length(secret_ciphertext) > 16),
    nonce             bytea NOT NULL CONSTRAINT partner_secrets_nonce_length CHECK (octet_length(nonce) = 24),
    created_at        timestamptz NOT NULL DEFAULT now(),
    retired_at        timestamptz,
    CONSTRAINT partner_secrets_retired_after_created CHECK (retired_at IS NULL OR retired_at >= created_at)
);
-- A partner's secrets in age order (the partner cache, rotation, retirement), and the foreign key's
-- index for ON DELETE CASCADE.
CREATE INDEX partner_secrets_partner ON partner_secrets (partner_id, id);

-- Which fleets a partner may write.
CREATE TABLE partner_fleets (
    partner_id text NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    fleet_id   text NOT NULL REFERENCES fleets (id) ON DELETE CASCADE,
    PRIMARY KEY (partner_id, fleet_id)
);
CREATE INDEX partner_fleets_fleet ON partner_fleets (fleet_id);

-- Operator bearer tokens: only a hash of the token is stored (32 to 64 bytes), never the token.
CREATE TABLE tokens (
    id         bigserial PRIMARY KEY,
    name       text CONSTRAINT tokens_name_length CHECK (char_length(name) <= 256),
    token_hash bytea NOT NULL CONSTRAINT tokens_token_hash_key UNIQUE
                             CONSTRAINT tokens_token_hash_length CHECK (octet_length(token_hash) BETWEEN 32 AND 64),
    admin      boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CONSTRAINT tokens_revoked_after_created CHECK (revoked_at IS NULL OR revoked_at >= created_at)
);

-- The fleets a (non-admin) token may read.
CREATE TABLE token_fleets (
    token_id bigint NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    fleet_id text NOT NULL REFERENCES fleets (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, fleet_id)
);
CREATE INDEX token_fleets_fleet ON token_fleets (fleet_id);

-- A vehicle belongs to one fleet: its first fix registers it, and it never moves to another.
-- Deleting a fleet that still has vehicles is refused (their history hangs off them).
CREATE TABLE vehicles (
    id         text PRIMARY KEY CONSTRAINT vehicles_id_format CHECK (id ~ '^[A-Za-z0-9._-]{1,64}$'),
    fleet_id   text NOT NULL REFERENCES fleets (id) ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_fleet ON vehicles (fleet_id, id);
