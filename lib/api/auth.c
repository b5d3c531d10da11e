/* Operator bearer tokens: making them (fleetd token create) and checking them on a request.
 * Verdicts (valid with its fleets, or unknown) are cached per shard for a few seconds, so a busy
 * route costs no database round trip per request and a flood of wrong tokens costs one each.
 * fl_api_tokens_forget (SIGHUP) makes every cached verdict stale at once: a revocation then
 * takes effect from the next request instead of within the cache's lifetime. */
#include "api_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { TOKEN_RANDOM_BYTES = 32, CACHE_MAX_ENTRIES = 10000 };

int fl_api_token_new(char *token, unsigned char hash[32])
{
    if (sodium_init() < 0)
        return FL_EIO;
    unsigned char raw[TOKEN_RANDOM_BYTES];
    randombytes_buf(raw, sizeof(raw));
    memcpy(token, "fl_", 3);
    sodium_bin2base64(token + 3, FL_API_TOKEN_LEN + 1 - 3, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
    fl_api_token_hash(token, hash);
    return FL_OK;
}

void fl_api_token_hash(const char *token, unsigned char hash[32])
{
    crypto_hash_sha256(hash, (const unsigned char *)token, strlen(token));
}

bool fl_api_token_well_formed(const char *s)
{
    if (strncmp(s, "fl_", 3) != 0 || strlen(s) != FL_API_TOKEN_LEN)
        return false;
    for (const char *c = s + 3; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
            return false;
    return true;
}

/* ---- the cache ---------------------------------------------------------------------------------- */

/* A verdict: a valid token (fleets and name in one allocation after the struct) or an unknown one. */
typedef struct {
    int64_t expires_ms;
    unsigned generation; /* the cache's generation when the lookup started */
    bool refreshing;     /* expired, still answering while one lookup renews it */
    bool valid;
    fl_api_token_t token;
} entry_t;

typedef struct {
    pthread_mutex_t lock; /* the shard's own thread is the only user; the lock keeps a stray caller safe */
    fl_map_t *map;        /* hex of the token's hash -> entry_t * */
} partition_t;

struct fl_api_token_cache {
    atomic_uint generation; /* bumped by fl_api_tokens_forget; an entry of another one is stale */
    int n;
    partition_t parts[];
};

static void entry_free(void *p)
{
    fl_free(p);
}

int fl_api_tokens_new(fl_api_t *api)
{
    int n = api->deps.rt ? fl_runtime_nshards(api->deps.rt) : 1;
    fl_api_token_cache_t *c = fl_calloc(1, sizeof(*c) + (size_t)n * sizeof(partition_t));
    if (c == NULL)
        return FL_ENOMEM;
    c->n = n;
    atomic_init(&c->generation, 0);
    for (int i = 0; i < n; i++) {
        pthread_mutex_init(&c->parts[i].lock, NULL);
        c->parts[i].map = fl_map_new();
        if (c->parts[i].map == NULL) {
            c->n = i + 1;
            api->tokens = c;
            fl_api_tokens_free(api);
            return FL_ENOMEM;
        }
    }
    api->tokens = c;
    return FL_OK;
}

void fl_api_tokens_free(fl_api_t *api)
{
    fl_api_token_cache_t *c = api->tokens;
    if (c == NULL)
        return;
    for (int i = 0; i < c->n; i++) {
        fl_map_free(c->parts[i].map, entry_free);
        pthread_mutex_destroy(&c->parts[i].lock);
    }
    fl_free(c);
    api->tokens = NULL;
}

void fl_api_tokens_forget(fl_api_t *api)
{
    /* Entries are freed lazily by their shard (a shard may be using one right now); a lookup that
     * was in flight keeps the generation it started with, so its answer is stale too. */
    atomic_fetch_add(&api->tokens->generation, 1);
}

static partition_t *partition_of(fl_api_t *api, int shard)
{
    return &api->tokens->parts[shard >= 0 && shard < api->tokens->n ? shard : 0];
}

static int current_shard(void)
{
    fl_shard_t *shard = fl_shard_current();
    return shard ? fl_shard_index(shard) : 0;
}

/* ---- answering ---------------------------------------------------------------------------------- */

static void unauthorized(fl_http_req_t *req, bool invalid)
{
    fl_http_set_header(req, "WWW-Authenticate", invalid ? "Bearer error=\"invalid_token\"" : "Bearer");
    fl_http_respond_error(req, 401, "unauthorized",
                          invalid ? "the bearer token is not valid (unknown or revoked)"
                                  : "this route needs an Authorization: Bearer token");
}

static void forbidden(fl_http_req_t *req)
{
    fl_http_set_header(req, "WWW-Authenticate", "Bearer error=\"insufficient_scope\"");
    fl_http_respond_error(req, 403, "forbidden", "this route needs an admin token (fleetd token create --admin)");
}

void fl_api_fleet_not_found(fl_http_req_t *req, const char *fleet_id)
{
    char message[160];
    snprintf(message, sizeof(message), "no fleet \"%.64s\" for this token", fleet_id);
    fl_http_respond_error(req, 404, "fleet_not_found", message);
}

/* The fleet_id of fl_api_authorize_token: any valid token will do (compared by address). */
static const char any_fleet[] = "*";

/* fleet_id NULL: an admin route. */
static void decide(fl_http_req_t *req, const entry_t *e, const char *fleet_id, fl_api_authorized_fn fn, void *arg)
{
    if (!e->valid) {
        unauthorized(req, true);
        return;
    }
    if (fleet_id == any_fleet) {
        fn(req, &e->token, arg);
        return;
    }
    if (fleet_id == NULL) {
        if (e->token.admin)
            fn(req, &e->token, arg);
        else
            forbidden(req);
        return;
    }
    bool allowed = e->token.admin;
    for (int i = 0; !allowed && i < e->token.nfleets; i++)
        allowed = strcmp(e->token.fleets[i], fleet_id) == 0;
    if (!allowed) {
        fl_api_fleet_not_found(req, fleet_id);
        return;
    }
    fn(req, &e->token, arg);
}

/* "Bearer TOKEN" (the scheme in any case, RFC 7235) -> TOKEN, or NULL. */
static const char *bearer_of(const char *header)
{
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return NULL;
    header += 7;
    while (*header == ' ')
        header++;
    return header;
}

/* The entry for a lookup's row (or an unknown token when res has none); NULL without memory. */
static entry_t *entry_from(const PGresult *res)
{
    if (PQntuples(res) == 0) {
        entry_t *e = fl_calloc(1, sizeof(*e));
        return e;
    }
    const char *name = PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2);
    const char *fleets = PQgetvalue(res, 0, 3);
    int nfleets = 0;
    for (const char *p = fleets; *p; p++)
        if (*p != ' ' && (p == fleets || p[-1] == ' '))
            nfleets++;
    size_t size = sizeof(entry_t) + (size_t)nfleets * sizeof(char *) + strlen(fleets) + 1 + (name ? strlen(name) + 1 : 0);
    entry_t *e = fl_calloc(1, size);
    if (e == NULL)
        return NULL;
    const char **list = (const char **)(void *)(e + 1);
    char *text = (char *)(list + nfleets);
    strcpy(text, fleets);
    e->valid = true;
    e->token.id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    e->token.admin = PQgetvalue(res, 0, 1)[0] == 't';
    e->token.fleets = list;
    for (char *save = NULL, *f = strtok_r(text, " ", &save); f; f = strtok_r(NULL, " ", &save))
        list[e->token.nfleets++] = f;
    if (name) {
        char *copy = text + strlen(fleets) + 1;
        strcpy(copy, name);
        e->token.name = copy;
    }
    return e;
}

/* ---- checking a token --------------------------------------------------------------------------- */

typedef void (*verdict_fn)(int status, const entry_t *e, void *arg);

typedef struct {
    fl_api_t *api;
    int shard;
    verdict_fn fn; /* NULL: a renewal nobody waits for */
    void *arg;
    char key[65];
    unsigned generation;
} lookup_t;

/* While the database is away, the last verdict on a token (of this generation, expired less than
 * FL_API_TOKEN_STALE_MS ago) stands in for a lookup: reads served from memory go on during an
 * outage. NULL when there is none. The entry is lent: only this shard's thread frees entries. */
static const entry_t *stale_verdict(const lookup_t *l)
{
    partition_t *p = partition_of(l->api, l->shard);
    pthread_mutex_lock(&p->lock);
    const entry_t *e = fl_map_get(p->map, l->key);
    if (e && (e->generation != l->generation || e->expires_ms + FL_API_TOKEN_STALE_MS <= fl_now_mono_ms()))
        e = NULL;
    pthread_mutex_unlock(&p->lock);
    return e;
}

/* A renewal failed: the entry (if still there) is renewed by a later request. */
static void renewal_failed(const lookup_t *l)
{
    partition_t *p = partition_of(l->api, l->shard);
    pthread_mutex_lock(&p->lock);
    entry_t *e = fl_map_get(p->map, l->key);
    if (e)
        e->refreshing = false;
    pthread_mutex_unlock(&p->lock);
}

static void on_lookup(const PGresult *res, int status, const char *err, void *arg)
{
    lookup_t *l = arg;
    if (status != FL_OK && l->fn == NULL) {
        renewal_failed(l);
        fl_free(l);
        return;
    }
    const entry_t *stale = status != FL_OK ? stale_verdict(l) : NULL;
    if (stale) {
        fl_log(FL_LOG_DEBUG, "auth.stale_verdict", FL_MSG("a token's last verdict is used while the database is away"),
               FL_STR("error", err ? err : fl_strerror(status)));
        l->fn(FL_OK, stale, l->arg);
        fl_free(l);
        return;
    }
    if (status != FL_OK) {
        fl_log(FL_LOG_WARN, "auth.lookup_failed", FL_MSG("a bearer token could not be checked"),
               FL_STR("error", err ? err : fl_strerror(status)));
        l->fn(FL_EUNAVAIL, NULL, l->arg);
        fl_free(l);
        return;
    }
    entry_t *e = entry_from(res);
    if (e == NULL) {
        if (l->fn)
            l->fn(FL_ENOMEM, NULL, l->arg);
        else
            renewal_failed(l);
        fl_free(l);
        return;
    }
    e->expires_ms = fl_now_mono_ms() + FL_API_TOKEN_TTL_MS;
    e->generation = l->generation;
    partition_t *p = partition_of(l->api, l->shard);
    pthread_mutex_lock(&p->lock);
    if (fl_map_count(p->map) >= CACHE_MAX_ENTRIES) {
        /* a flood of distinct tokens: start over rather than grow without bound */
        fl_map_t *fresh = fl_map_new();
        if (fresh) {
            fl_map_free(p->map, entry_free);
            p->map = fresh;
        }
    }
    void *old = NULL;
    bool cached = fl_map_put(p->map, l->key, e, &old) == FL_OK;
    pthread_mutex_unlock(&p->lock);
    fl_free(old);
    /* the entry stays alive through the verdict: only this shard's thread replaces it */
    if (l->fn)
        l->fn(FL_OK, e, l->arg);
    if (!cached)
        fl_free(e);
    fl_free(l);
}

static const char lookup_sql[] =
    "SELECT t.id, t.admin, t.name,"
    " coalesce((SELECT string_agg(tf.fleet_id, ' ') FROM token_fleets tf WHERE tf.token_id = t.id), '')"
    " FROM tokens t WHERE t.token_hash = $1::bytea AND t.revoked_at IS NULL";

/* Asks the database about the token whose hash is key; on_lookup caches the verdict and gives it
 * to fn (fn NULL: only cache it). */
static void lookup(fl_api_t *api, int shard, const char *key, unsigned generation, verdict_fn fn, void *arg)
{
    fl_db_t *db = api->deps.db ? fl_db_service_get(api->deps.db, shard) : NULL;
    lookup_t *l = fl_malloc(sizeof(*l));
    if (l == NULL) {
        if (fn)
            fn(FL_ENOMEM, NULL, arg);
        return;
    }
    *l = (lookup_t){.api = api, .shard = shard, .fn = fn, .arg = arg, .generation = generation};
    memcpy(l->key, key, sizeof(l->key));
    char param[2 + 64 + 1] = "\\x";
    memcpy(param + 2, key, 65);
    const char *params[] = {param};
    int rc = db ? fl_db_query(db, lookup_sql, 1, params, on_lookup, l) : FL_EUNAVAIL;
    if (rc != FL_OK)
        on_lookup(NULL, rc, fl_strerror(rc), l);
}

/* The verdict on a well-formed token, from this shard's cache or the database: fn gets FL_OK with
 * the entry (valid or not; lent for the call), FL_EUNAVAIL or FL_ENOMEM. On a shard thread.
 * A verdict that expired less than FL_API_TOKEN_TTL_MS ago still answers while one lookup renews
 * it: a token in steady use never makes its requests wait for the database, nor sends it a query
 * per request in the moment between expiry and renewal (each would queue behind the others on the
 * shard's one connection). A revocation thus takes effect within the TTL and one lookup. */
static void check(fl_api_t *api, const char *token, verdict_fn fn, void *arg)
{
    unsigned char hash[32];
    char key[65];
    fl_api_token_hash(token, hash);
    sodium_bin2hex(key, sizeof(key), hash, sizeof(hash));

    int shard = current_shard();
    unsigned generation = atomic_load(&api->tokens->generation);
    partition_t *p = partition_of(api, shard);
    pthread_mutex_lock(&p->lock);
    entry_t *e = fl_map_get(p->map, key);
    int64_t now = fl_now_mono_ms();
    if (e && (e->generation != generation || e->expires_ms + FL_API_TOKEN_STALE_MS <= now)) {
        fl_free(fl_map_remove(p->map, key));
        e = NULL;
    }
    bool fresh = e && e->expires_ms > now;
    bool renewing = !fresh && e && e->expires_ms + FL_API_TOKEN_TTL_MS > now;
    bool renew = renewing && !e->refreshing;
    if (renew)
        e->refreshing = true;
    pthread_mutex_unlock(&p->lock);
    if (renew)
        lookup(api, shard, key, generation, NULL, NULL); /* answers later, or failed at once (flag cleared) */
    if (fresh || renewing)
        fn(FL_OK, e, arg);
    else
        lookup(api, shard, key, generation, fn, arg);
}

/* ---- on a request ------------------------------------------------------------------------------- */

typedef struct {
    fl_http_req_t *req;
    const char *fleet_id; /* the caller's: valid until req is answered; NULL for an admin route */
    fl_api_authorized_fn fn;
    void *arg;
} authorizing_t;

static void on_request_verdict(int status, const entry_t *e, void *arg)
{
    authorizing_t *a = arg;
    if (status == FL_OK) {
        decide(a->req, e, a->fleet_id, a->fn, a->arg);
    } else {
        fl_http_set_header(a->req, "Retry-After", "1");
        fl_http_respond_error(a->req, 503, "unavailable",
                              status == FL_ENOMEM ? "out of memory while checking the token"
                                                  : "the token cannot be checked now (database unavailable)");
    }
    fl_free(a);
}

static void authorize(fl_api_t *api, fl_http_req_t *req, const char *fleet_id, fl_api_authorized_fn fn, void *arg)
{
    const char *token = bearer_of(fl_http_req_header(req, "Authorization"));
    if (token == NULL || !token[0]) {
        unauthorized(req, false);
        return;
    }
    if (!fl_api_token_well_formed(token)) {
        unauthorized(req, true);
        return;
    }
    authorizing_t *a = fl_malloc(sizeof(*a));
    if (a == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory while checking the token");
        return;
    }
    *a = (authorizing_t){.req = req, .fleet_id = fleet_id, .fn = fn, .arg = arg};
    check(api, token, on_request_verdict, a);
}

/* ---- a token given another way (WebSocket joins, ?token=) --------------------------------------- */

typedef struct {
    fl_api_token_fn fn;
    void *arg;
} token_check_t;

static void on_token_verdict(int status, const entry_t *e, void *arg)
{
    token_check_t *t = arg;
    if (status == FL_OK && !e->valid)
        status = FL_ENOTFOUND;
    t->fn(status, status == FL_OK ? &e->token : NULL, t->arg);
    fl_free(t);
}

void fl_api_token_check(fl_api_t *api, const char *token, fl_api_token_fn fn, void *arg)
{
    if (token == NULL || !token[0]) {
        fn(FL_EINVAL, NULL, arg);
        return;
    }
    if (!fl_api_token_well_formed(token)) {
        fn(FL_ENOTFOUND, NULL, arg);
        return;
    }
    token_check_t *t = fl_malloc(sizeof(*t));
    if (t == NULL) {
        fn(FL_ENOMEM, NULL, arg);
        return;
    }
    *t = (token_check_t){fn, arg};
    check(api, token, on_token_verdict, t);
}

bool fl_api_token_allows(const fl_api_token_t *token, const char *fleet_id)
{
    bool allowed = token->admin;
    for (int i = 0; !allowed && i < token->nfleets; i++)
        allowed = strcmp(token->fleets[i], fleet_id) == 0;
    return allowed;
}

const char *fl_api_request_token(fl_http_req_t *req)
{
    const char *token = bearer_of(fl_http_req_header(req, "Authorization"));
    return token && token[0] ? token : fl_http_req_query(req, "token");
}

void fl_api_token_refused(fl_http_req_t *req, int status)
{
    if (status == FL_EINVAL || status == FL_ENOTFOUND) {
        unauthorized(req, status == FL_ENOTFOUND);
        return;
    }
    fl_http_set_header(req, "Retry-After", "1");
    fl_http_respond_error(req, 503, "unavailable", "the token cannot be checked now; retry shortly");
}

void fl_api_authorize(fl_api_t *api, fl_http_req_t *req, const char *fleet_id, fl_api_authorized_fn fn, void *arg)
{
    authorize(api, req, fleet_id, fn, arg);
}

void fl_api_authorize_admin(fl_api_t *api, fl_http_req_t *req, fl_api_authorized_fn fn, void *arg)
{
    authorize(api, req, NULL, fn, arg);
}

void fl_api_authorize_token(fl_api_t *api, fl_http_req_t *req, fl_api_authorized_fn fn, void *arg)
{
    authorize(api, req, any_fleet, fn, arg);
}
