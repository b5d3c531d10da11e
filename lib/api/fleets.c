/* GET /api/v1/fleets: the fleets a bearer token may read (every fleet for an admin token), for
 * the live map's fleet picker. One query on the shard's own connection. */
#include "api_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FLEETS_MAX = 10000 };

static const char fleets_sql[] = "SELECT id, name FROM fleets WHERE $1::bool OR id = ANY (string_to_array($2, ' '))"
                                 " ORDER BY id LIMIT 10000";

static void on_fleets(const PGresult *res, int status, const char *err, void *arg)
{
    fl_http_req_t *req = arg;
    if (status != FL_OK) {
        fl_log(FL_LOG_WARN, "fleets.query_failed", FL_MSG("the token's fleets could not be read"), FL_RID(fl_http_req_id(req)),
               FL_STR("error", err ? err : fl_strerror(status)));
        fl_http_set_header(req, "Retry-After", "1");
        fl_http_respond_error(req, 503, "unavailable", "the fleets cannot be read now (database unavailable)");
        return;
    }
    json_t *list = json_array();
    json_t *doc = json_pack("{s:o}", "fleets", list);
    for (int i = 0; doc && i < PQntuples(res); i++) {
        json_t *fleet = json_pack("{s:s}", "fleet_id", PQgetvalue(res, i, 0));
        if (fleet && !PQgetisnull(res, i, 1) && json_object_set_new(fleet, "name", json_string(PQgetvalue(res, i, 1))) != 0) {
            json_decref(fleet);
            fleet = NULL;
        }
        if (fleet == NULL || json_array_append_new(list, fleet) != 0) {
            json_decref(doc);
            doc = NULL;
        }
    }
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory while writing the fleets");
        return;
    }
    fl_http_set_header(req, "Cache-Control", "no-store");
    fl_http_respond(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void fleets_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    fl_api_t *api = arg;
    fl_strbuf_t ids = {0};
    for (int i = 0; i < token->nfleets && i < FLEETS_MAX; i++) {
        if (i)
            fl_strbuf_add(&ids, " ", 1);
        fl_strbuf_str(&ids, token->fleets[i]);
    }
    if (ids.failed) {
        fl_strbuf_free(&ids);
        fl_http_respond_error(req, 503, "unavailable", "out of memory");
        return;
    }
    fl_db_t *db = api->deps.db ? fl_db_service_get(api->deps.db, fl_shard_index(fl_http_req_shard(req))) : NULL;
    const char *params[] = {token->admin ? "true" : "false", ids.p ? ids.p : ""};
    int rc = db ? fl_db_query(db, fleets_sql, 2, params, on_fleets, req) : FL_EUNAVAIL;
    fl_strbuf_free(&ids);
    if (rc != FL_OK)
        on_fleets(NULL, rc, fl_strerror(rc), req);
}

static void get_fleets(fl_http_req_t *req, void *arg)
{
    fl_api_authorize_token(arg, req, fleets_authorized, arg);
}

int fl_api_fleets_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/api/v1/fleets", get_fleets, api, 0);
}
