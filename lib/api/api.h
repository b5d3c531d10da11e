/*
 * fleetd api: the HTTP routes: /health, /ready, the supervision tree (/admin/tree), vehicle
 * history, and bearer tokens; status, live and ingest arrive with their issues.
 */
#ifndef FL_API_H
#define FL_API_H

#include "core/core.h"
#include "db/db.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "jobs/jobs.h"
#include "tracker/tracker.h"
#include "runtime/runtime.h"

typedef struct fl_api fl_api_t;

typedef struct {
    const fl_config_t *cfg;
    fl_db_service_t *db;     /* may be NULL: /ready then reports the database unreachable */
    fl_runtime_t *rt;        /* the shards: the token cache keeps one partition per shard (NULL: one shared) */
    fl_jobs_t *jobs;         /* may be NULL: /ready then does not wait for the job queue */
    fl_partners_t *partners; /* NULL without a master key: ingest answers 503 */
    fl_trackers_t *trackers; /* where accepted fixes are shown live (may be NULL) */
    fl_pubsub_t *pubsub;     /* positions and presence for live subscribers (NULL: no live routes' fan-out) */
} fl_api_deps_t;

int fl_api_new(const fl_api_deps_t *deps, fl_api_t **out);
void fl_api_free(fl_api_t *api);
/* Adds every route to router. */
int fl_api_routes(fl_api_t *api, fl_http_router_t *router);
/* The root of the running supervision tree (a reference is taken), or NULL once it has stopped:
 * /admin/tree shows it and /ready needs it. Any thread. */
void fl_api_set_root(fl_api_t *api, fl_actor_t *root);
/* Marks fleetd as draining (SIGTERM): /ready answers 503 from then on. Any thread. */
void fl_api_set_draining(fl_api_t *api);

/* ---- operator bearer tokens ---------------------------------------------------------------------
 * A token is "fl_" + base64url (no padding) of 32 random bytes: 46 characters. Only its SHA-256
 * (of those 46 characters) is stored, in tokens.token_hash. */
#define FL_API_TOKEN_LEN 46

/* A new token into token (FL_API_TOKEN_LEN + 1 bytes with the NUL) and its hash into hash.
 * FL_OK, or FL_EIO when libsodium cannot initialise. */
int fl_api_token_new(char *token, unsigned char hash[32]);
/* The stored hash of a token. */
void fl_api_token_hash(const char *token, unsigned char hash[32]);
/* True when s has the shape of a token (it may still be unknown or revoked). */
bool fl_api_token_well_formed(const char *s);
/* Forgets every cached token verdict, so a revoked token is refused from the next request on
 * (SIGHUP; otherwise a revocation takes effect within the cache's 5 s). Any thread. */
void fl_api_tokens_forget(fl_api_t *api);

#endif
