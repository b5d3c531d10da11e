/*
 * fleetd api: the HTTP routes. Now the operational ones (/health, /ready) and the supervision
 * tree (/admin/tree); status, history, live and ingest arrive with their issues.
 */
#ifndef FL_API_H
#define FL_API_H

#include "core/core.h"
#include "db/db.h"
#include "http/http.h"
#include "runtime/runtime.h"

typedef struct fl_api fl_api_t;

typedef struct {
    const fl_config_t *cfg;
    fl_db_service_t *db; /* may be NULL: /ready then reports the database unreachable */
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

#endif
