/* Shared by the api's route files. */
#ifndef FL_API_INTERNAL_H
#define FL_API_INTERNAL_H

#include "api.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct fl_api_token_cache fl_api_token_cache_t;

struct fl_api {
    fl_api_deps_t deps;
    atomic_bool draining;
    pthread_mutex_t lock; /* guards root */
    fl_actor_t *root;
    fl_api_token_cache_t *tokens; /* auth.c */
};

/* The tree's root (a reference the caller drops), or NULL when the tree is not up. */
fl_actor_t *fl_api_root(fl_api_t *api);

int fl_api_health_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_admin_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_ingest_routes(fl_api_t *api, fl_http_router_t *router);

/* 422 invalid_fix with a "details" array (taken: its reference is the function's). */
struct json_t;
void fl_api_respond_invalid_fix(fl_http_req_t *req, struct json_t *details, const char *message);
/* Ingest counters by name (accepted_batches, accepted_fixes, duplicate_batches, or a rejection
 * code); -1 for an unknown name. For /metrics. */
long fl_api_ingest_count(const char *what);
int fl_api_history_routes(fl_api_t *api, fl_http_router_t *router);

/* ---- bearer tokens (auth.c) ---- */

/* Who a valid token is: lent to the callback, valid during the call. */
typedef struct {
    int64_t id;
    const char *name; /* may be NULL */
    bool admin;
    int nfleets;
    const char *const *fleets; /* the fleets a non-admin token may read */
} fl_api_token_t;

int fl_api_tokens_new(fl_api_t *api);
void fl_api_tokens_free(fl_api_t *api);

/* Runs fn on the request's shard (at once, or after a database lookup) when the request's
 * `Authorization: Bearer TOKEN` may read fleet_id: an admin token, or a token holding that fleet
 * (whether an admin's fleet exists is the route's to check). Otherwise answers req itself:
 * 401 unauthorized with WWW-Authenticate: Bearer (no token, or not a valid one: unknown or
 * revoked), 404 fleet_not_found (the token may not see that fleet: the same answer as a fleet that
 * does not exist), 503 unavailable (the token cannot be checked now). Verdicts are cached per
 * shard for FL_API_TOKEN_TTL_MS, so a revocation takes effect within that time. */
#define FL_API_TOKEN_TTL_MS 5000
typedef void (*fl_api_authorized_fn)(fl_http_req_t *req, const fl_api_token_t *token, void *arg);
void fl_api_authorize(fl_api_t *api, fl_http_req_t *req, const char *fleet_id, fl_api_authorized_fn fn, void *arg);

#endif
