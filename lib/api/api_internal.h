/* Shared by the api's route files. */
#ifndef FL_API_INTERNAL_H
#define FL_API_INTERNAL_H

#include "api.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct fl_api_token_cache fl_api_token_cache_t;
typedef struct fl_api_web fl_api_web_t;

struct fl_api {
    fl_api_deps_t deps;
    atomic_bool draining;
    pthread_mutex_t lock; /* guards root */
    fl_actor_t *root;
    fl_api_token_cache_t *tokens; /* auth.c */
    struct fl_live *live;         /* live.c: the fan-out to WebSocket and SSE subscribers (NULL without pubsub) */
    struct fl_presence *presence; /* presence.c: who watches each fleet */
    fl_api_web_t *web;            /* web.c: the live map's files */
};

/* The tree's root (a reference the caller drops), or NULL when the tree is not up. */
fl_actor_t *fl_api_root(fl_api_t *api);

int fl_api_health_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_admin_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_metrics_routes(fl_api_t *api, fl_http_router_t *router); /* metrics.c: GET /metrics */
int fl_api_ingest_routes(fl_api_t *api, fl_http_router_t *router);

/* 422 invalid_fix with a "details" array (taken: its reference is the function's). */
struct json_t;
void fl_api_respond_invalid_fix(fl_http_req_t *req, struct json_t *details, const char *message);
/* Ingest counters by name (accepted_batches, accepted_fixes, duplicate_batches, or a rejection
 * code); -1 for an unknown name. For /metrics. */
long fl_api_ingest_count(const char *what);
int fl_api_history_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_fleets_routes(fl_api_t *api, fl_http_router_t *router);

/* ---- the live map (web.c) ---- */

/* Reads the map's files into memory (a missing directory is logged; GET / then answers 503). */
int fl_api_web_new(fl_api_t *api);
void fl_api_web_free(fl_api_t *api);
int fl_api_web_routes(fl_api_t *api, fl_http_router_t *router);
/* True when an If-None-Match value names etag (weak comparison, RFC 9110 13.1.2) or is "*". */
bool fl_api_etag_matches(const char *if_none_match, const char *etag);
int fl_api_status_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_channel_routes(fl_api_t *api, fl_http_router_t *router);
int fl_api_sse_routes(fl_api_t *api, fl_http_router_t *router);
/* Closes every open event stream (draining), any thread. */
void fl_api_sse_close_all(fl_api_t *api);

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
/* While the database cannot be reached, a verdict expired less than this long ago still stands
 * (reads from memory go on through an outage); SIGHUP forgets these too. */
#define FL_API_TOKEN_STALE_MS (5 * 60 * 1000)
typedef void (*fl_api_authorized_fn)(fl_http_req_t *req, const fl_api_token_t *token, void *arg);
void fl_api_authorize(fl_api_t *api, fl_http_req_t *req, const char *fleet_id, fl_api_authorized_fn fn, void *arg);
/* The same for the admin routes: fn runs when the token is an admin token; a valid token that is
 * not one gets 403 forbidden (WWW-Authenticate: Bearer error="insufficient_scope"). */
void fl_api_authorize_admin(fl_api_t *api, fl_http_req_t *req, fl_api_authorized_fn fn, void *arg);
/* The same for a route of any valid token (GET /api/v1/fleets): fn sees which fleets it holds. */
void fl_api_authorize_token(fl_api_t *api, fl_http_req_t *req, fl_api_authorized_fn fn, void *arg);

/* A token given other than in an Authorization header (a WebSocket join, ?token=): fn gets FL_OK
 * with who it is (lent for the call), FL_EINVAL when token is NULL or empty, FL_ENOTFOUND when it
 * is malformed, unknown or revoked, FL_EUNAVAIL or FL_ENOMEM when it cannot be checked now. On a
 * shard thread; fn runs on it, maybe before this returns. Uses the same cache as the routes. */
typedef void (*fl_api_token_fn)(int status, const fl_api_token_t *token, void *arg);
void fl_api_token_check(fl_api_t *api, const char *token, fl_api_token_fn fn, void *arg);
/* An admin token, or one holding fleet_id. */
bool fl_api_token_allows(const fl_api_token_t *token, const char *fleet_id);
/* The request's token: from `Authorization: Bearer`, else the token query parameter (or NULL). */
const char *fl_api_request_token(fl_http_req_t *req);
/* Answers a request whose fl_api_token_check failed with status: 401 (with WWW-Authenticate) or 503. */
void fl_api_token_refused(fl_http_req_t *req, int status);
/* 404 fleet_not_found: a fleet that does not exist, or one the token may not see. */
void fl_api_fleet_not_found(fl_http_req_t *req, const char *fleet_id);

#endif
