/*
 * fleetd ingest: partners POST signed batches of fixes (CONTRACT.md "Ingest"); fleetd accepts
 * exactly what it can prove and store. This header holds the parts: the master key and partner
 * secrets, the partner cache, Standard Webhooks signature verification, and payload parsing and
 * validation. The route that strings them together lives in lib/api (it needs HTTP); nothing here
 * knows about HTTP.
 */
#ifndef FL_INGEST_H
#define FL_INGEST_H

#include "core/core.h"
#include "db/db.h"
#include "runtime/runtime.h"
#include "tracker/tracker.h"

/* ---- the master key and partner secrets ------------------------------------------------------------
 * Partner signing secrets are "whsec_" + base64 of 32 random bytes; the HMAC key is the 32 bytes.
 * At rest they are encrypted with libsodium's secretbox under the master key (FLEETD_MASTER_KEY:
 * 64 hex characters, or FLEETD_MASTER_KEY_FILE holding them). */

#define FL_SECRET_BYTES     32
#define FL_MASTER_KEY_BYTES 32

/* Reads the master key from cfg (the key, or the file: 64 hex characters, whitespace around them
 * ignored). FL_ENOTFOUND when neither is set, FL_EINVAL when malformed, when the file cannot be read
 * or when both are set (err says which setting and why, one line, never the key). */
int fl_master_key_load(const fl_config_t *cfg, uint8_t key[FL_MASTER_KEY_BYTES], char *err, size_t errlen);
/* A new secret: raw bytes and its "whsec_..." text (out needs 64 bytes). */
void fl_secret_generate(uint8_t secret[FL_SECRET_BYTES], char text[64]);
/* The "whsec_..." text of a secret (standard base64 with padding; 51 bytes with the NUL), and back:
 * FL_EINVAL unless text is "whsec_" + base64 of exactly FL_SECRET_BYTES bytes. */
void fl_secret_format(const uint8_t secret[FL_SECRET_BYTES], char text[64]);
int fl_secret_parse(const char *text, uint8_t secret[FL_SECRET_BYTES]);
/* Encrypts/decrypts a secret for storage: nonce (24 bytes) and ciphertext (secret + 16 bytes MAC). */
void fl_secret_seal(const uint8_t master[FL_MASTER_KEY_BYTES], const uint8_t secret[FL_SECRET_BYTES], uint8_t nonce[24],
                    uint8_t ciphertext[FL_SECRET_BYTES + 16]);
int fl_secret_open(const uint8_t master[FL_MASTER_KEY_BYTES], const uint8_t nonce[24], const uint8_t *ciphertext, size_t len,
                   uint8_t secret[FL_SECRET_BYTES]); /* FL_EINVAL: wrong master key or tampered */

/* ---- the partner cache -----------------------------------------------------------------------------
 * Every partner with its live (not retired) secrets, decrypted, and the fleets it may write, held in
 * memory so that verifying a request costs no query. Reloaded from PostgreSQL at start, on SIGHUP
 * (fl_partners_reload) and when the channel "fleetd_partners" is notified (the CLI notifies it after
 * every change), so a new partner works without a restart. The reload runs in the actor
 * "partners" (fl_partners_spec) on its own connection. Reads take an immutable snapshot. */

typedef struct fl_partners fl_partners_t;

typedef struct {
    char id[65];
    int nsecrets;
    uint8_t (*secrets)[FL_SECRET_BYTES]; /* newest first */
    int nfleets;
    char (*fleets)[65]; /* sorted bytewise (strcmp) */
} fl_partner_t;

/* db and master are copied (the key is wiped on free). The actor runs on shard 0 with its own
 * connection made from db. */
int fl_partners_new(fl_runtime_t *rt, const fl_db_options_t *db, const uint8_t master[FL_MASTER_KEY_BYTES], fl_partners_t **out);
/* After the tree holding the actor has stopped. Snapshots readers still hold stay valid until
 * released. */
void fl_partners_free(fl_partners_t *ps);
/* The actor for the application tree (id "partners", permanent, on shard 0). Its start waits for
 * the first load (up to 2 s, so a database that is down does not hold fleetd's start; it then keeps
 * retrying) so that ingest starts with the cache warm; it reloads on notifications, on request, when
 * its connection comes back, and every minute. A failed load keeps the last snapshot. */
const fl_child_spec_t *fl_partners_spec(fl_partners_t *ps);
/* Any thread: ask for a reload (SIGHUP). */
void fl_partners_reload(fl_partners_t *ps);
/* Any thread: the partner (a pointer into the current snapshot, valid until fl_partners_release),
 * or NULL when unknown or nothing is loaded yet (then *snapshot is NULL too). No query, no message:
 * a short mutex and a reference count. */
const fl_partner_t *fl_partners_get(fl_partners_t *ps, const char *id, void **snapshot);
/* Drops the reference fl_partners_get gave; NULL is a no-op. The last one frees the snapshot and
 * wipes its secrets. */
void fl_partners_release(void *snapshot);
/* p's fleets include fleet_id (binary search); false for a NULL p. */
bool fl_partner_may_write(const fl_partner_t *p, const char *fleet_id);
/* Any thread: the cache holds a load (false until the first succeeded). */
bool fl_partners_loaded(fl_partners_t *ps);

/* ---- Standard Webhooks signatures ------------------------------------------------------------------ */

/* Verifies webhook-signature (a space-separated list of "v1,<base64 HMAC-SHA256>"; other versions
 * are ignored; at most 32 entries) over "{msg_id}.{timestamp}.{body}" with any of the keys, in
 * constant time per comparison. FL_OK when one matches; FL_EINVAL when none does or the header is
 * malformed. */
int fl_webhook_verify(const char *msg_id, const char *timestamp, const char *signature_header, const void *body, size_t body_len,
                      const uint8_t (*keys)[FL_SECRET_BYTES], int nkeys);
/* Signs like a Standard Webhooks library: out gets "v1,<base64>" (needs 64 bytes). For tests and
 * the demo simulator. */
void fl_webhook_sign(const char *msg_id, const char *timestamp, const void *body, size_t body_len,
                     const uint8_t key[FL_SECRET_BYTES], char out[64]);

/* ---- payload -------------------------------------------------------------------------------------- */

typedef struct {
    char fleet_id[65];
    fl_fix_t fix; /* vehicle_id, position, times (received_us filled by the caller) */
} fl_ingest_fix_t;

typedef struct {
    int index;        /* the fix's position in "fixes" */
    char field[24];   /* "lat", "recorded_at", ... or "" for the fix itself */
    char problem[96]; /* what is wrong, a short phrase */
} fl_fix_problem_t;

typedef struct {
    fl_ingest_fix_t *fixes;
    int n;
    fl_fix_problem_t *problems; /* when the batch is refused with FL_ERANGE */
    int nproblems;
} fl_batch_t;

/* Parses and validates a body {"fixes":[FIX, ...]} (CONTRACT.md): 1..max_fixes fixes; fleet_id and
 * vehicle_id 1..64 of [A-Za-z0-9._-]; lat -90..90; lng -180..180; recorded_at any RFC 3339 time not
 * more than 5 minutes after now_us; optional speed_kmh 0..1000, heading_deg 0 <= h < 360,
 * accuracy_m 0..100000; no other types. Returns FL_OK (batch filled), FL_EPROTO when the body is
 * not JSON (invalid_json), FL_EINVAL when it is JSON but not that shape (invalid_payload: message
 * in err), FL_ERANGE when one or more fixes are invalid (invalid_fix: every problem listed, up to
 * 100), FL_ENOMEM. fl_batch_free releases what it filled, whatever it returned.
 * Choices the contract leaves open (payload.c): unknown fields, in a fix or beside "fixes", are
 * ignored (partners may send more than this version reads); an optional field that is null is
 * absent; a key repeated in any object is invalid_payload; a fix that is not an object is an
 * invalid fix with field "". On FL_ERANGE batch->fixes is NULL and err names the first problem. */
int fl_batch_parse(const char *body, size_t len, int max_fixes, int64_t now_us, fl_batch_t *batch, char *err, size_t errlen);
void fl_batch_free(fl_batch_t *batch);

/* Parses an RFC 3339 timestamp (offset or Z, fractional seconds) to Unix microseconds: FL_OK or
 * FL_EINVAL. Fractions beyond microseconds are truncated; "-00:00" reads as UTC; a leap second
 * (23:59:60 UTC only) is clamped to 23:59:59.999999; impossible dates are refused (rfc3339.c). */
int fl_rfc3339_parse(const char *text, int64_t *us);

#endif
