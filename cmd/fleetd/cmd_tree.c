/* fleetd tree: the live supervision tree of a running daemon, from its /admin/tree route, which
 * needs an admin token. */
#include "commands.h"

#include "api/api.h"
#include "cli_http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *url;   /* http://host:port */
    const char *token; /* admin token */
    bool json;
    const char *restart_id;
} tree_opts_t;

/* One HTTP/1.1 request with Connection: close (cli_http.c); returns the status and the body (caller
 * frees). */
static int http_call(const tree_opts_t *o, const char *method, const char *path, int *status, char **body, char *err, size_t errlen)
{
    char headers[160];
    snprintf(headers, sizeof(headers), "Authorization: Bearer %.100s\r\n", o->token);
    cli_http_response_t res;
    int st = cli_http_request(o->url, method, path, headers, NULL, 0, 10000, &res, err, errlen);
    if (st == FL_EUNAVAIL) {
        char why[256];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "cannot reach the daemon at %s: %s (is fleetd serve running there?)", o->url, why);
    }
    if (st != FL_OK)
        return st == FL_EINVAL ? EXIT_USAGE : EXIT_RUNTIME;
    *status = res.status;
    *body = strdup(res.body);
    cli_http_response_free(&res);
    if (*body == NULL) {
        snprintf(err, errlen, "out of memory");
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

static const char *error_message(const char *body)
{
    static char msg[512];
    json_t *doc = json_loads(body, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    snprintf(msg, sizeof(msg), "%s", m ? m : body);
    json_decref(doc);
    return msg;
}

static void human_bytes(long long b, char *out, size_t outlen)
{
    if (b >= 1 << 20)
        snprintf(out, outlen, "%.1fMiB", (double)b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(out, outlen, "%.1fKiB", (double)b / (1 << 10));
    else
        snprintf(out, outlen, "%lldB", b);
}

static void human_duration(long long s, char *out, size_t outlen)
{
    if (s >= 86400)
        snprintf(out, outlen, "%lldd%lldh", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(out, outlen, "%lldh%lldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, outlen, "%lldm%llds", s / 60, s % 60);
    else
        snprintf(out, outlen, "%llds", s);
}

/* One line per node, indented by depth with tree branches; colours on a terminal. */
static void print_node(json_t *node, const char *prefix, bool last, bool root, bool colour)
{
    const char *id = json_string_value(json_object_get(node, "id"));
    const char *kind = json_string_value(json_object_get(node, "kind"));
    const char *status = json_string_value(json_object_get(node, "status"));
    bool sup = kind && strcmp(kind, "supervisor") == 0;
    char label[512], mem[32], up[32];
    snprintf(label, sizeof(label), "%s%s%s", prefix, root ? "" : last ? "`- " : "|- ", id ? id : "?");
    human_bytes(json_integer_value(json_object_get(node, "memory")), mem, sizeof(mem));
    human_duration(json_integer_value(json_object_get(node, "uptime_s")), up, sizeof(up));
    const char *hue = !colour                                    ? ""
                      : status && strcmp(status, "running") == 0 ? "\033[32m"
                      : status && strcmp(status, "stopped") == 0 ? "\033[31m"
                                                                 : "\033[33m";
    printf("%-40s %-10s %s%-10s%s restarts %-3lld up %-8s mem %-9s", label,
           sup ? (json_is_true(json_object_get(node, "dynamic")) ? "dynamic" : json_string_value(json_object_get(node, "strategy")))
               : "actor",
           hue, status ? status : "?", colour ? "\033[0m" : "", json_integer_value(json_object_get(node, "restarts")), up, mem);
    if (!sup)
        printf(" mailbox %-5lld handled %lld", json_integer_value(json_object_get(node, "mailbox")),
               json_integer_value(json_object_get(node, "handled")));
    json_t *crash = json_object_get(node, "last_crash");
    if (json_is_object(crash))
        printf("%s  last crash %s: %s%s", colour ? "\033[31m" : "", json_string_value(json_object_get(crash, "at")),
               json_string_value(json_object_get(crash, "reason")), colour ? "\033[0m" : "");
    printf("\n");

    json_t *children = json_object_get(node, "children");
    char sub[512];
    snprintf(sub, sizeof(sub), "%s%s", prefix, root ? "" : last ? "   " : "|  ");
    size_t n = json_array_size(children);
    for (size_t i = 0; i < n; i++)
        print_node(json_array_get(children, i), sub, i + 1 == n, false, colour);
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    static char url[160];
    snprintf(url, sizeof(url), "http://%s", cfg->listen);
    tree_opts_t o = {.url = url, .token = getenv("FLEETD_ADMIN_TOKEN")};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o.json = true;
        else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            o.url = argv[++i];
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            o.token = argv[++i];
        else if (strcmp(argv[i], "restart") == 0 && i + 1 < argc && o.restart_id == NULL)
            o.restart_id = argv[++i];
        else
            return usage_error("tree: unexpected argument \"%s\" (see fleetd tree --help)", argv[i]);
    }
    if (o.token == NULL || o.token[0] == '\0')
        return usage_error("tree: no admin token: set FLEETD_ADMIN_TOKEN or give --token (fleetd token create --admin makes one)");
    if (!fl_api_token_well_formed(o.token))
        return usage_error("tree: the admin token is not a fleetd token (\"fl_\" and 43 characters of [A-Za-z0-9_-])");

    int status = 0;
    char *body = NULL, err[512];
    int rc;
    if (o.restart_id) {
        char path[256];
        snprintf(path, sizeof(path), "/admin/tree/%s/restart", o.restart_id);
        rc = http_call(&o, "POST", path, &status, &body, err, sizeof(err));
    } else {
        rc = http_call(&o, "GET", "/admin/tree", &status, &body, err, sizeof(err));
    }
    if (rc != EXIT_OK)
        return rc == EXIT_USAGE ? usage_error("tree: %s", err) : runtime_error("tree: %s", err);
    if (status != 200) {
        rc = runtime_error("tree: the daemon answered %d: %s", status, error_message(body));
        free(body);
        return rc;
    }
    if (o.restart_id) {
        printf("%s restarted\n", o.restart_id);
    } else if (o.json) {
        printf("%s\n", body);
    } else {
        json_error_t jerr;
        json_t *tree = json_loads(body, 0, &jerr);
        if (tree == NULL) {
            free(body);
            return runtime_error("tree: the daemon's answer is not JSON: %s", jerr.text);
        }
        print_node(tree, "", true, true, isatty(STDOUT_FILENO));
        json_decref(tree);
    }
    free(body);
    return EXIT_OK;
}

const command_t cmd_tree = {
    .name = "tree",
    .summary = "show the live supervision tree of a running daemon, or restart one child",
    .usage = "Usage: fleetd tree [--json] [--url http://HOST:PORT] [--token TOKEN]\n"
             "       fleetd tree restart CHILD_ID [--url ...] [--token ...]\n\n"
             "Asks the daemon at FLEETD_LISTEN (or --url) for its supervision tree (GET /admin/tree) and\n"
             "prints it indented: every supervisor and actor with its status, restarts, last crash,\n"
             "uptime, memory, and for actors the mailbox depth and messages handled. The admin routes need\n"
             "an admin token (fleetd token create --admin): FLEETD_ADMIN_TOKEN, or --token.\n\n"
             "  --json               print the tree as the daemon's JSON\n"
             "  --url URL            the daemon's address (default http://$FLEETD_LISTEN)\n"
             "  --token TOKEN        the admin token (default $FLEETD_ADMIN_TOKEN; prefer the variable: a\n"
             "                       command line is visible to other users of the machine)\n"
             "  restart CHILD_ID     kill that child as a drill; its supervisor restarts it (for example\n"
             "                       tracker:harbor-1, db:0, pubsub:1); prints once it runs again\n\n"
             "Exit status: 0 success, 1 the daemon cannot be reached or refused (a token that is unknown,\n"
             "revoked or not admin), 2 usage error or no admin token.\n",
    .run = run,
};
