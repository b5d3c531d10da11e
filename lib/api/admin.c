/* /admin/tree: the supervision tree, and a drill that restarts one child. Both need an admin
 * bearer token (fl_api_authorize_admin: 401 without a valid token, 403 for one that is not admin). */
#include "api_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tree's root for an admin request (a reference), or NULL after answering the request. */
static fl_actor_t *admin_root(fl_api_t *api, fl_http_req_t *req)
{
    fl_actor_t *root = fl_api_root(api);
    if (root == NULL)
        fl_http_respond_error(req, 503, "unavailable", "the supervision tree is not running");
    return root;
}

static void tree_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    (void)token;
    fl_actor_t *root = admin_root(arg, req);
    if (root == NULL)
        return;
    json_t *tree = fl_tree_json(root);
    fl_actor_unref(root);
    char *text = tree ? json_dumps(tree, JSON_COMPACT) : NULL;
    json_decref(tree);
    if (text == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory while describing the tree");
        return;
    }
    fl_http_respond(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void restarted(int status, void *reply, void *arg)
{
    (void)reply;
    fl_http_req_t *req = arg;
    const char *id = fl_http_req_param(req, "child_id");
    if (status == FL_OK) {
        json_t *body = json_pack("{s:s, s:s}", "id", id, "status", "running");
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        if (text) {
            fl_http_respond(req, 200, "application/json", text, strlen(text));
            free(text);
            return;
        }
        status = FL_ENOMEM;
    }
    char message[256];
    if (status == FL_ENOTFOUND) {
        snprintf(message, sizeof(message), "no child with id %s in the tree", id);
        fl_http_respond_error(req, 404, "not_found", message);
    } else {
        snprintf(message, sizeof(message), "%s was not running again in time: %s", id, fl_strerror(status));
        fl_http_respond_error(req, 503, "unavailable", message);
    }
}

static void restart_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    fl_actor_t *root = admin_root(arg, req);
    if (root == NULL)
        return;
    const char *id = fl_http_req_param(req, "child_id");
    fl_log(FL_LOG_WARN, "admin.restart", FL_MSG("an operator restarts a child of the tree"), FL_RID(fl_http_req_id(req)),
           FL_STR("child", id), FL_STR("peer", fl_http_req_peer(req)), FL_INT("token_id", (long long)token->id));
    int rc = fl_tree_restart(root, id, restarted, req);
    fl_actor_unref(root);
    if (rc != FL_OK)
        restarted(rc, NULL, req); /* answers the request: req is not touched after this */
}

static void get_tree(fl_http_req_t *req, void *arg)
{
    fl_api_authorize_admin(arg, req, tree_authorized, arg);
}

static void post_restart(fl_http_req_t *req, void *arg)
{
    fl_api_authorize_admin(arg, req, restart_authorized, arg);
}

int fl_api_admin_routes(fl_api_t *api, fl_http_router_t *router)
{
    int rc = fl_http_router_add(router, FL_HTTP_GET, "/admin/tree", get_tree, api, 0);
    if (rc == FL_OK)
        rc = fl_http_router_add(router, FL_HTTP_POST, "/admin/tree/{child_id}/restart", post_restart, api, 0);
    return rc;
}
