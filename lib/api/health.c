/* GET /health: the process serves. GET /ready: it can do its job (CONTRACT.md "Operations"). */
#include "api_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static const char health_body[] = "{\"status\":\"ok\"}";

static void get_health(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond_ref(req, 200, "application/json", health_body, sizeof(health_body) - 1, NULL, NULL);
}

/* Appends a JSON string (the reasons are fleetd's own words: no escaping needed beyond quotes). */
static size_t add_reason(char *out, size_t len, size_t cap, const char *reason)
{
    int n = snprintf(out + len, cap - len, "%s\"%s\"", out[len - 1] == '[' ? "" : ",", reason);
    return n > 0 && (size_t)n < cap - len ? len + (size_t)n : len;
}

static void get_ready(fl_http_req_t *req, void *arg)
{
    fl_api_t *api = arg;
    char body[512] = "{\"status\":\"not_ready\",\"reasons\":[";
    size_t len = strlen(body);
    size_t empty = len;
    int wanted = fl_migrations_latest();

    fl_db_service_t *db = api->deps.db;
    if (db == NULL || !fl_db_service_up(db)) {
        len = add_reason(body, len, sizeof(body), "database unreachable");
    } else {
        int version = fl_db_service_schema_version(db);
        if (version < 0) {
            len = add_reason(body, len, sizeof(body), "schema version not read yet");
        } else if (version < wanted) {
            char reason[96];
            snprintf(reason, sizeof(reason), "migrations behind: database at %d, fleetd needs %d (run fleetd migrate)", version,
                     wanted);
            len = add_reason(body, len, sizeof(body), reason);
        }
    }
    if (api->deps.jobs && db != NULL && fl_db_service_up(db) && !fl_jobs_ready(api->deps.jobs))
        len = add_reason(body, len, sizeof(body), "job queue not connected to the database");
    if (api->deps.partners && !fl_partners_loaded(api->deps.partners))
        len = add_reason(body, len, sizeof(body), "partners not loaded");
    fl_actor_t *root = fl_api_root(api);
    if (root == NULL)
        len = add_reason(body, len, sizeof(body), "supervision tree not running");
    else
        fl_actor_unref(root);
    if (atomic_load(&api->draining))
        len = add_reason(body, len, sizeof(body), "draining");

    if (len == empty) {
        static const char ready[] = "{\"status\":\"ready\"}";
        fl_http_respond_ref(req, 200, "application/json", ready, sizeof(ready) - 1, NULL, NULL);
        return;
    }
    len += (size_t)snprintf(body + len, sizeof(body) - len, "]}");
    fl_http_set_header(req, "Retry-After", "1");
    fl_http_respond(req, 503, "application/json", body, len);
}

int fl_api_health_routes(fl_api_t *api, fl_http_router_t *router)
{
    int rc = fl_http_router_add(router, FL_HTTP_GET, "/health", get_health, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_GET, "/ready", get_ready, api, 0);
    return rc;
}
