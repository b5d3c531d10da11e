/* POST /api/v1/ingest/{partner_id}: signed batches of fixes (CONTRACT.md "Ingest").
 *
 * In order: the body limit and Content-Type (the HTTP server, before the body is read), the
 * partner, the timestamp window, the signature over the raw bytes, the partner's rate, the JSON and
 * every fix, the fleets the partner may write, the vehicles' fleets; then the batch goes to the
 * group commit as an audit job whose unique key is the partner's webhook-id, and only when it is
 * durable are its fixes handed to their trackers and the partner told 202. An unknown partner and a
 * bad signature get the same answer, after the same work. */
#include "api_internal.h"

#include "ingest/ingest.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- rejections, counted per reason for /metrics and logged once each ---- */

/* A body over the limit (413) or not JSON (415) is refused by the HTTP layer before any route runs:
 * those show in fleetd_http_requests_total{route="unmatched"} and the access log, not here. */
static const char *const reason_names[] = {"invalid_json",      "invalid_payload", "invalid_signature", "timestamp_out_of_range",
                                           "fleet_not_allowed", "invalid_fix",     "rate_limited",      "unavailable"};
enum { R_JSON, R_PAYLOAD, R_SIGNATURE, R_TIMESTAMP, R_FLEET, R_FIX, R_RATE, R_UNAVAILABLE, R_NREASONS };
static atomic_long rejected[R_NREASONS];
static atomic_long accepted_batches, accepted_fixes, duplicate_batches;

long fl_api_ingest_count(const char *what)
{
    if (strcmp(what, "accepted_batches") == 0)
        return atomic_load(&accepted_batches);
    if (strcmp(what, "accepted_fixes") == 0)
        return atomic_load(&accepted_fixes);
    if (strcmp(what, "duplicate_batches") == 0)
        return atomic_load(&duplicate_batches);
    for (int i = 0; i < R_NREASONS; i++)
        if (strcmp(what, reason_names[i]) == 0)
            return atomic_load(&rejected[i]);
    return -1;
}

static void reject(fl_http_req_t *req, const char *partner_id, int reason, int status, const char *message)
{
    atomic_fetch_add(&rejected[reason], 1);
    fl_log(FL_LOG_INFO, "ingest.rejected", FL_MSG(message), FL_RID(fl_http_req_id(req)), FL_STR("partner", partner_id),
           FL_STR("reason", reason_names[reason]), FL_INT("status", status));
    if (status == 429 || status == 503)
        fl_http_set_header(req, "Retry-After", "1");
    fl_http_respond_error(req, status, reason_names[reason], message);
}

/* ---- per-partner rate: a token bucket each, shared by all shards ---- */

typedef struct {
    double tokens;
    int64_t at_us;
} bucket_t;

static pthread_mutex_t rate_lock = PTHREAD_MUTEX_INITIALIZER;
static fl_map_t *buckets;

/* true when the partner may send one more request now; else *retry_s says when it may */
static bool rate_take(const fl_config_t *cfg, const char *partner_id, int *retry_s)
{
    if (cfg->ingest_rate <= 0)
        return true;
    int64_t now = fl_now_mono_ns() / 1000;
    bool ok = true;
    pthread_mutex_lock(&rate_lock);
    if (buckets == NULL)
        buckets = fl_map_new();
    bucket_t *b = buckets ? fl_map_get(buckets, partner_id) : NULL;
    if (b == NULL && buckets && (b = fl_malloc(sizeof(*b))) != NULL) {
        *b = (bucket_t){.tokens = cfg->ingest_burst, .at_us = now};
        if (fl_map_put(buckets, partner_id, b, NULL) != FL_OK) {
            fl_free(b);
            b = NULL;
        }
    }
    if (b) {
        b->tokens += (double)(now - b->at_us) / 1e6 * cfg->ingest_rate;
        if (b->tokens > cfg->ingest_burst)
            b->tokens = cfg->ingest_burst;
        b->at_us = now;
        if (b->tokens >= 1) {
            b->tokens -= 1;
        } else {
            ok = false;
            *retry_s = (int)((1 - b->tokens) / cfg->ingest_rate) + 1;
        }
    }
    pthread_mutex_unlock(&rate_lock);
    return ok; /* no memory for a bucket: not limited, rather than refused */
}

/* ---- a request in flight ---- */

typedef struct {
    fl_api_t *api;
    fl_http_req_t *req;
    char partner_id[65];
    char webhook_id[129];
    int64_t webhook_ts;
    int64_t received_us;
    fl_batch_t batch;
    char (*fleets)[65];
    int nfleets;
    int pending_trackers;
    bool duplicate;
} ingest_t;

static void ingest_free(ingest_t *in)
{
    fl_batch_free(&in->batch);
    fl_free(in->fleets);
    fl_free(in);
}

static void answer_accepted(ingest_t *in)
{
    char body[96];
    int n = snprintf(body, sizeof(body), in->duplicate ? "{\"accepted\":%d,\"duplicate\":true}" : "{\"accepted\":%d}", in->batch.n);
    fl_http_respond(in->req, 202, "application/json", body, (size_t)n);
    ingest_free(in);
}

static void tracker_fed(int status, void *arg)
{
    ingest_t *in = arg;
    if (status != FL_OK)
        fl_log(FL_LOG_WARN, "ingest.tracker_behind",
               FL_MSG("an acknowledged batch could not reach its tracker now; it will show after the tracker reloads"),
               FL_RID(fl_http_req_id(in->req)), FL_STR("error", fl_strerror(status)));
    if (--in->pending_trackers == 0)
        answer_accepted(in);
}

/* The batch is durable: show it live, fleet by fleet, then answer. */
static void on_durable(int status, int64_t job_id, bool duplicate, void *arg)
{
    (void)job_id;
    ingest_t *in = arg;
    if (status != FL_OK) {
        const char *why = status == FL_EFULL       ? "fleetd is accepting more batches than it can store; retry shortly"
                          : status == FL_ETIMEDOUT ? "the batch could not be made durable in time; retry (the same "
                                                     "webhook-id is safe)"
                                                   : "the database is not available; retry shortly";
        reject(in->req, in->partner_id, R_UNAVAILABLE, 503, why);
        ingest_free(in);
        return;
    }
    if (duplicate) {
        atomic_fetch_add(&duplicate_batches, 1);
        in->duplicate = true;
        answer_accepted(in);
        return;
    }
    atomic_fetch_add(&accepted_batches, 1);
    atomic_fetch_add(&accepted_fixes, in->batch.n);
    fl_trackers_t *tr = in->api->deps.trackers;
    if (tr == NULL) {
        answer_accepted(in);
        return;
    }
    fl_fix_t *fixes = fl_malloc((size_t)in->batch.n * sizeof(*fixes));
    in->pending_trackers = 1; /* held until every fleet has been handed its fixes */
    for (int f = 0; fixes && f < in->nfleets; f++) {
        int n = 0;
        for (int i = 0; i < in->batch.n; i++)
            if (strcmp(in->batch.fixes[i].fleet_id, in->fleets[f]) == 0)
                fixes[n++] = in->batch.fixes[i].fix;
        in->pending_trackers++;
        if (fl_trackers_apply(tr, in->fleets[f], fixes, n, tracker_fed, in) != FL_OK)
            tracker_fed(FL_EUNAVAIL, in);
    }
    if (fixes == NULL)
        fl_log(FL_LOG_WARN, "ingest.tracker_behind", FL_MSG("no memory to show an acknowledged batch live"),
               FL_RID(fl_http_req_id(in->req)));
    fl_free(fixes);
    tracker_fed(FL_OK, in);
}

static void enqueue(ingest_t *in)
{
    size_t body_len;
    const char *body = fl_http_req_body(in->req, &body_len);
    const char *sig = fl_http_req_header(in->req, "webhook-signature");
    const char **fleets = fl_malloc((size_t)in->nfleets * sizeof(char *));
    char *args = NULL;
    size_t args_len = 0;
    int rc = fleets ? FL_OK : FL_ENOMEM;
    for (int i = 0; fleets && i < in->nfleets; i++)
        fleets[i] = in->fleets[i];
    if (rc == FL_OK)
        rc = fl_audit_args(in->partner_id, in->webhook_id, in->webhook_ts, sig, in->received_us, fleets, in->nfleets, body,
                           body_len, &args, &args_len);
    fl_free(fleets);
    char key[256];
    snprintf(key, sizeof(key), "ingest:%s:%s", in->partner_id, in->webhook_id);
    fl_job_new_t job = {.queue = FL_AUDIT_QUEUE,
                        .kind = FL_AUDIT_KIND,
                        .args = args,
                        .args_len = args_len,
                        .unique_key = key,
                        .unique_period_s = -1};
    if (rc == FL_OK)
        rc = in->api->deps.jobs ? fl_jobs_enqueue(in->api->deps.jobs, &job, on_durable, in) : FL_EUNAVAIL;
    fl_free(args);
    if (rc != FL_OK)
        on_durable(rc, 0, false, in);
}

/* ---- the vehicles' fleets: a vehicle belongs to the fleet of its first fix ----
 * Known owners are cached per shard (ownership never changes); the others are registered and read
 * in one statement, so of two batches naming a new vehicle with different fleets, exactly one
 * wins. */

static fl_map_t **owner_caches; /* one per shard, each touched only by its shard */
static pthread_once_t owner_once = PTHREAD_ONCE_INIT;
static int owner_nshards;
#define OWNER_CACHE_MAX 1000000

static fl_runtime_t *owner_rt;

static void owner_caches_init(void)
{
    owner_nshards = owner_rt ? fl_runtime_nshards(owner_rt) : 1;
    owner_caches = fl_calloc((size_t)owner_nshards, sizeof(*owner_caches));
}

static fl_map_t *owner_cache(fl_api_t *api)
{
    owner_rt = api->deps.rt;
    pthread_once(&owner_once, owner_caches_init);
    fl_shard_t *here = fl_shard_current();
    int i = here ? fl_shard_index(here) : 0;
    if (owner_caches == NULL || i >= owner_nshards)
        return NULL;
    if (owner_caches[i] == NULL)
        owner_caches[i] = fl_map_new();
    return owner_caches[i];
}

static const char owners_sql[] =
    "WITH input AS (SELECT DISTINCT ON (id) id, fleet_id FROM unnest($1::text[], $2::text[]) AS t(id, fleet_id)),"
    " registered AS (INSERT INTO vehicles (id, fleet_id) SELECT id, fleet_id FROM input"
    "   ON CONFLICT (id) DO NOTHING RETURNING id, fleet_id)"
    " SELECT id, fleet_id FROM registered"
    " UNION ALL SELECT v.id, v.fleet_id FROM vehicles v JOIN input i ON i.id = v.id"
    "   WHERE v.id NOT IN (SELECT id FROM registered)";

/* Refuses the batch with 422 when a fix names another fleet than its vehicle's; true if it did. */
static bool refuse_foreign_vehicles(ingest_t *in, fl_map_t *cache)
{
    json_t *details = json_array();
    for (int i = 0; i < in->batch.n && details; i++) {
        const char *owner = cache ? fl_map_get(cache, in->batch.fixes[i].fix.vehicle_id) : NULL;
        if (owner && strcmp(owner, in->batch.fixes[i].fleet_id) != 0) {
            char problem[160];
            snprintf(problem, sizeof(problem), "vehicle %s belongs to fleet %s", in->batch.fixes[i].fix.vehicle_id, owner);
            json_array_append_new(details, json_pack("{s:i, s:s, s:s}", "index", i, "field", "fleet_id", "problem", problem));
        }
    }
    if (details == NULL || json_array_size(details) == 0) {
        json_decref(details);
        return false;
    }
    atomic_fetch_add(&rejected[R_FIX], 1);
    fl_log(FL_LOG_INFO, "ingest.rejected", FL_MSG("a fix names another fleet than its vehicle's"), FL_RID(fl_http_req_id(in->req)),
           FL_STR("partner", in->partner_id), FL_STR("reason", "invalid_fix"), FL_INT("status", 422));
    /* Last: answering may free the request (and its id) when the connection closes. */
    fl_api_respond_invalid_fix(in->req, details, "a vehicle belongs to the fleet of its first fix");
    return true;
}

static void cache_owner(fl_map_t *cache, const char *vehicle, const char *fleet)
{
    if (cache == NULL || fl_map_get(cache, vehicle))
        return;
    if (fl_map_count(cache) >= OWNER_CACHE_MAX)
        return; /* full: further lookups go to the database */
    char *copy = fl_strdup(fleet);
    if (copy && fl_map_put(cache, vehicle, copy, NULL) != FL_OK)
        fl_free(copy);
}

static void on_owners(const PGresult *res, int status, const char *err, void *arg)
{
    ingest_t *in = arg;
    if (status != FL_OK) {
        fl_log(FL_LOG_WARN, "ingest.owners_failed", FL_MSG("could not check the vehicles' fleets"), FL_RID(fl_http_req_id(in->req)),
               FL_STR("error", err ? err : fl_strerror(status)));
        reject(in->req, in->partner_id, R_UNAVAILABLE, 503, "the database is not available; retry shortly");
        ingest_free(in);
        return;
    }
    fl_map_t *cache = owner_cache(in->api);
    for (int i = 0; i < PQntuples(res); i++)
        cache_owner(cache, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    if (refuse_foreign_vehicles(in, cache)) {
        ingest_free(in);
        return;
    }
    enqueue(in);
}

static void check_owners(ingest_t *in)
{
    fl_map_t *cache = owner_cache(in->api);
    fl_strbuf_t ids = {0}, fleets = {0};
    int unknown = 0;
    fl_strbuf_str(&ids, "{");
    fl_strbuf_str(&fleets, "{");
    for (int i = 0; i < in->batch.n; i++) {
        if (cache && fl_map_get(cache, in->batch.fixes[i].fix.vehicle_id))
            continue;
        /* ids are [A-Za-z0-9._-]: nothing to escape in the array literal */
        fl_strbuf_printf(&ids, "%s\"%s\"", unknown ? "," : "", in->batch.fixes[i].fix.vehicle_id);
        fl_strbuf_printf(&fleets, "%s\"%s\"", unknown ? "," : "", in->batch.fixes[i].fleet_id);
        unknown++;
    }
    fl_strbuf_str(&ids, "}");
    fl_strbuf_str(&fleets, "}");
    if (unknown == 0 || ids.failed || fleets.failed) {
        bool failed = ids.failed || fleets.failed;
        fl_strbuf_free(&ids);
        fl_strbuf_free(&fleets);
        if (failed) {
            reject(in->req, in->partner_id, R_UNAVAILABLE, 503, "out of memory; retry shortly");
            ingest_free(in);
        } else if (refuse_foreign_vehicles(in, cache)) {
            ingest_free(in);
        } else {
            enqueue(in);
        }
        return;
    }
    fl_shard_t *here = fl_shard_current();
    fl_db_t *db = here && in->api->deps.db ? fl_db_service_get(in->api->deps.db, fl_shard_index(here)) : NULL;
    const char *values[] = {ids.p, fleets.p};
    int rc = db ? fl_db_query(db, owners_sql, 2, values, on_owners, in) : FL_EUNAVAIL;
    fl_strbuf_free(&ids);
    fl_strbuf_free(&fleets);
    if (rc != FL_OK)
        on_owners(NULL, rc, NULL, in);
}

/* ---- the handler ---- */

static bool printable_id(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e || n >= max)
            return false;
    return n >= 1;
}

static void post_ingest(fl_http_req_t *req, void *arg)
{
    fl_api_t *api = arg;
    const fl_config_t *cfg = api->deps.cfg;
    const char *partner_id = fl_http_req_param(req, "partner_id");
    const char *msg_id = fl_http_req_header(req, "webhook-id");
    const char *ts_text = fl_http_req_header(req, "webhook-timestamp");
    const char *sig = fl_http_req_header(req, "webhook-signature");
    if (api->deps.partners == NULL) {
        reject(req, partner_id, R_UNAVAILABLE, 503, "ingest is not configured: fleetd has no master key (FLEETD_MASTER_KEY)");
        return;
    }
    if (!fl_partners_loaded(api->deps.partners)) {
        reject(req, partner_id, R_UNAVAILABLE, 503, "the partners are not loaded yet (is the database up?); retry shortly");
        return;
    }
    if (msg_id == NULL || ts_text == NULL || sig == NULL) {
        reject(req, partner_id, R_SIGNATURE, 401, "webhook-id, webhook-timestamp and webhook-signature are required");
        return;
    }
    if (!printable_id(msg_id, 128)) {
        reject(req, partner_id, R_PAYLOAD, 400, "webhook-id must be 1 to 128 printable ASCII characters");
        return;
    }

    /* the timestamp window, for known and unknown partners alike */
    char *end = NULL;
    long long ts = strtoll(ts_text, &end, 10);
    int64_t now_s = fl_now_wall_ms() / 1000;
    if (end == ts_text || *end != '\0') {
        reject(req, partner_id, R_SIGNATURE, 401, "webhook-timestamp must be integer Unix seconds");
        return;
    }
    if (ts < now_s - cfg->ingest_timestamp_tolerance_ms / 1000 || ts > now_s + cfg->ingest_timestamp_tolerance_ms / 1000) {
        reject(req, partner_id, R_TIMESTAMP, 401, "webhook-timestamp is too far from now");
        return;
    }

    /* the signature: an unknown partner is checked against a throwaway key, so its answer and its
     * cost are those of a bad signature */
    size_t body_len;
    const char *body = fl_http_req_body(req, &body_len);
    void *snap = NULL;
    const fl_partner_t *p = fl_id_valid(partner_id) ? fl_partners_get(api->deps.partners, partner_id, &snap) : NULL;
    static const uint8_t nobody[1][FL_SECRET_BYTES];
    int verified = fl_webhook_verify(msg_id, ts_text, sig, body, body_len,
                                     p ? (const uint8_t(*)[FL_SECRET_BYTES])p->secrets : nobody, p ? p->nsecrets : 1);
    if (p == NULL || p->nsecrets == 0 || verified != FL_OK) {
        if (snap)
            fl_partners_release(snap);
        reject(req, partner_id, R_SIGNATURE, 401, "the signature does not match (or the partner is unknown)");
        return;
    }

    int retry_s = 1;
    if (!rate_take(cfg, partner_id, &retry_s)) {
        fl_partners_release(snap);
        char after[16];
        snprintf(after, sizeof(after), "%d", retry_s);
        fl_http_set_header(req, "Retry-After", after);
        atomic_fetch_add(&rejected[R_RATE], 1);
        fl_log(FL_LOG_INFO, "ingest.rejected", FL_MSG("partner over its rate"), FL_RID(fl_http_req_id(req)),
               FL_STR("partner", partner_id), FL_STR("reason", "rate_limited"), FL_INT("status", 429));
        fl_http_respond_error(req, 429, "rate_limited", "too many batches; slow down and retry after Retry-After seconds");
        return;
    }

    ingest_t *in = fl_calloc(1, sizeof(*in));
    if (in == NULL) {
        fl_partners_release(snap);
        reject(req, partner_id, R_UNAVAILABLE, 503, "out of memory; retry shortly");
        return;
    }
    in->api = api;
    in->req = req;
    snprintf(in->partner_id, sizeof(in->partner_id), "%s", partner_id);
    snprintf(in->webhook_id, sizeof(in->webhook_id), "%s", msg_id);
    in->webhook_ts = ts;
    in->received_us = fl_now_wall_ms() * 1000;

    char err[256] = "";
    int rc = fl_batch_parse(body, body_len, cfg->ingest_max_fixes, in->received_us, &in->batch, err, sizeof(err));
    if (rc != FL_OK) {
        fl_partners_release(snap);
        if (rc == FL_EPROTO) {
            char message[300];
            snprintf(message, sizeof(message), "the body is not JSON%s%s", err[0] ? ": " : "", err);
            reject(req, partner_id, R_JSON, 400, message);
        } else if (rc == FL_EINVAL) {
            reject(req, partner_id, R_PAYLOAD, 400, err[0] ? err : "the body is not {\"fixes\":[...]}");
        } else if (rc == FL_ERANGE) {
            json_t *details = json_array();
            for (int i = 0; i < in->batch.nproblems && details; i++)
                json_array_append_new(details, json_pack("{s:i, s:s, s:s}", "index", in->batch.problems[i].index, "field",
                                                         in->batch.problems[i].field, "problem", in->batch.problems[i].problem));
            atomic_fetch_add(&rejected[R_FIX], 1);
            fl_log(FL_LOG_INFO, "ingest.rejected", FL_MSG("invalid fixes"), FL_RID(fl_http_req_id(req)),
                   FL_STR("partner", partner_id), FL_STR("reason", "invalid_fix"), FL_INT("status", 422),
                   FL_INT("problems", in->batch.nproblems));
            fl_api_respond_invalid_fix(req, details, "one or more fixes are invalid; nothing from the batch was accepted");
        } else {
            reject(req, partner_id, R_UNAVAILABLE, 503, "out of memory; retry shortly");
        }
        ingest_free(in);
        return;
    }

    /* the fleets of the batch, each one the partner's */
    in->fleets = fl_calloc((size_t)in->batch.n, sizeof(*in->fleets));
    for (int i = 0; in->fleets && i < in->batch.n; i++) {
        const char *fleet = in->batch.fixes[i].fleet_id;
        in->batch.fixes[i].fix.received_us = in->received_us;
        bool seen = false;
        for (int f = 0; f < in->nfleets && !seen; f++)
            seen = strcmp(in->fleets[f], fleet) == 0;
        if (seen)
            continue;
        if (!fl_partner_may_write(p, fleet)) {
            char message[160];
            snprintf(message, sizeof(message), "partner %s may not write fleet %s", partner_id, fleet);
            fl_partners_release(snap);
            reject(req, partner_id, R_FLEET, 403, message);
            ingest_free(in);
            return;
        }
        snprintf(in->fleets[in->nfleets++], 65, "%s", fleet);
    }
    fl_partners_release(snap);
    for (int f = 0; in->fleets && api->deps.trackers && f < in->nfleets; f++) {
        if (fl_trackers_busy(api->deps.trackers, in->fleets[f])) {
            char message[160];
            snprintf(message, sizeof(message), "fleet %s is receiving more fixes than it can show; retry shortly", in->fleets[f]);
            reject(req, partner_id, R_UNAVAILABLE, 503, message);
            ingest_free(in);
            return;
        }
    }
    if (in->fleets == NULL) {
        reject(req, partner_id, R_UNAVAILABLE, 503, "out of memory; retry shortly");
        ingest_free(in);
        return;
    }
    check_owners(in);
}

int fl_api_ingest_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_POST, "/api/v1/ingest/{partner_id}", post_ingest, api, FL_ROUTE_JSON_BODY);
}
