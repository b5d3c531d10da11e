#include "api_internal.h"
#include "live.h"
#include "presence.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void publish_presence(const char *fleet_id, const char *diff, size_t len, void *arg)
{
    fl_api_t *api = arg;
    if (api->live)
        fl_live_publish_presence(api->live, fleet_id, diff, len);
}

int fl_api_new(const fl_api_deps_t *deps, fl_api_t **out)
{
    fl_api_t *api = fl_calloc(1, sizeof(*api));
    if (api == NULL)
        return FL_ENOMEM;
    api->deps = *deps;
    atomic_init(&api->draining, false);
    pthread_mutex_init(&api->lock, NULL);
    if (fl_api_tokens_new(api) != FL_OK || fl_presence_new(deps->rt, publish_presence, api, &api->presence) != FL_OK ||
        (deps->rt && deps->pubsub && fl_live_new(deps->rt, deps->pubsub, deps->cfg, &api->live) != FL_OK)) {
        fl_api_free(api);
        return FL_ENOMEM;
    }
    int rc = fl_api_web_new(api);
    if (rc != FL_OK) {
        fl_api_free(api);
        return rc;
    }
    *out = api;
    return FL_OK;
}

void fl_api_free(fl_api_t *api)
{
    if (api == NULL)
        return;
    if (api->root)
        fl_actor_unref(api->root);
    fl_api_tokens_free(api);
    fl_api_web_free(api);
    fl_live_free(api->live);
    fl_presence_free(api->presence);
    pthread_mutex_destroy(&api->lock);
    fl_free(api);
}

void fl_api_set_root(fl_api_t *api, fl_actor_t *root)
{
    if (root)
        fl_actor_ref(root);
    pthread_mutex_lock(&api->lock);
    fl_actor_t *old = api->root;
    api->root = root;
    pthread_mutex_unlock(&api->lock);
    if (old)
        fl_actor_unref(old);
}

fl_actor_t *fl_api_root(fl_api_t *api)
{
    pthread_mutex_lock(&api->lock);
    fl_actor_t *root = api->root;
    if (root && !fl_actor_alive(root))
        root = NULL;
    if (root)
        fl_actor_ref(root);
    pthread_mutex_unlock(&api->lock);
    return root;
}

void fl_api_set_draining(fl_api_t *api)
{
    atomic_store(&api->draining, true);
    fl_api_sse_close_all(api);
}

int fl_api_routes(fl_api_t *api, fl_http_router_t *router)
{
    int rc = fl_api_health_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_admin_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_history_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_fleets_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_web_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_status_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_ingest_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_channel_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_sse_routes(api, router);
    if (rc == FL_OK)
        rc = fl_api_metrics_routes(api, router);
    return rc;
}

void fl_api_respond_invalid_fix(fl_http_req_t *req, json_t *details, const char *message)
{
    json_t *body = json_pack("{s:{s:s, s:s, s:o}}", "error", "code", "invalid_fix", "message", message, "details", details);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        fl_http_respond_error(req, 422, "invalid_fix", message);
        return;
    }
    fl_http_respond(req, 422, "application/json", text, strlen(text));
    free(text);
}
