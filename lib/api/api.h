/*
 * fleetd api: the HTTP routes. For now the operational ones, /health and /ready; the status,
 * history, live and admin routes arrive with their issues.
 */
#ifndef FL_API_H
#define FL_API_H

#include "core/core.h"
#include "db/db.h"
#include "http/http.h"

typedef struct fl_api fl_api_t;

/* db may be NULL (then /ready reports the database as unreachable). The api keeps cfg and db. */
int fl_api_new(const fl_config_t *cfg, fl_db_t *db, fl_api_t **out);
void fl_api_free(fl_api_t *api);
/* Adds every route to router. */
int fl_api_routes(fl_api_t *api, fl_http_router_t *router);
/* Marks fleetd as draining (SIGTERM): /ready answers 503 from then on. Any thread. */
void fl_api_set_draining(fl_api_t *api);

#endif
