/* fleetd tree: the live supervision tree of a running daemon, from its /admin/tree route. */
#include "commands.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct {
    const char *url;   /* http://host:port */
    const char *token; /* admin token, or NULL */
    bool json;
    const char *restart_id;
} tree_opts_t;

/* Splits "http://host:port" or "host:port" (IPv6 in brackets) into host and port. */
static int split_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
    if (strncmp(url, "http://", 7) == 0)
        url += 7;
    const char *end = url + strcspn(url, "/");
    const char *colon;
    if (*url == '[') {
        const char *close = memchr(url, ']', (size_t)(end - url));
        if (close == NULL || close[1] != ':')
            return FL_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(close - url - 1), url + 1);
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = url; p < end; p++)
            if (*p == ':')
                colon = p;
        if (colon == NULL)
            return FL_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(colon - url), url);
    }
    snprintf(port, portlen, "%.*s", (int)(end - colon - 1), colon + 1);
    return host[0] && port[0] ? FL_OK : FL_EINVAL;
}

/* One HTTP/1.1 request with Connection: close; returns the status and the body (caller frees). */
static int http_call(const tree_opts_t *o, const char *method, const char *path, int *status, char **body, char *err, size_t errlen)
{
    char host[256], port[16];
    if (split_url(o->url, host, sizeof(host), port, sizeof(port)) != FL_OK) {
        snprintf(err, errlen, "\"%s\" is not a daemon address (expected http://HOST:PORT)", o->url);
        return EXIT_USAGE;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return EXIT_RUNTIME;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 10};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        snprintf(err, errlen, "cannot reach the daemon at %s:%s: %s (is fleetd serve running there?)", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return EXIT_RUNTIME;
    }
    freeaddrinfo(ai);

    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: application/json\r\nConnection: close\r\n%s%s%s"
                     "Content-Length: 0\r\n\r\n",
                     method, path, host, port, o->token ? "Authorization: Bearer " : "", o->token ? o->token : "",
                     o->token ? "\r\n" : "");
    if (n <= 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n) {
        snprintf(err, errlen, "cannot send the request: %s", strerror(errno));
        close(fd);
        return EXIT_RUNTIME;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while (buf && (got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (len + 1 == cap) {
            char *bigger = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    close(fd);
    if (buf == NULL) {
        snprintf(err, errlen, "the daemon's answer is too large");
        return EXIT_RUNTIME;
    }
    buf[len] = '\0';
    char *head_end = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || head_end == NULL || sscanf(buf + 9, "%d", status) != 1) {
        snprintf(err, errlen, "the daemon's answer is not HTTP");
        free(buf);
        return EXIT_RUNTIME;
    }
    *body = strdup(head_end + 4);
    free(buf);
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
    if (o.token && o.token[0] == '\0')
        o.token = NULL;

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
             "uptime, memory, and for actors the mailbox depth and messages handled.\n\n"
             "  --json               print the tree as the daemon's JSON\n"
             "  --url URL            the daemon's address (default http://$FLEETD_LISTEN)\n"
             "  --token TOKEN        admin token (default $FLEETD_ADMIN_TOKEN)\n"
             "  restart CHILD_ID     kill that child as a drill; its supervisor restarts it (for example\n"
             "                       tracker:harbor-1, db:0, pubsub:1); prints once it runs again\n\n"
             "Exit status: 0 success, 1 the daemon cannot be reached or refused, 2 usage error.\n",
    .run = run,
};
