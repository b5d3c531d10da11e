/* fleetd tree: the live supervision tree of a running daemon, from its /admin/tree route, which
 * needs an admin token. Read like Erlang's observer in a terminal: one row per supervisor and
 * actor, nested with tree lines, with status, restarts and the last crash, mailbox, messages
 * handled, uptime and memory; colours only on a terminal; --watch refreshes it. */
#include "commands.h"

#include "api/api.h"
#include "cli_http.h"

#include <errno.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A supervisor with more children than SUMMARISE_OVER shows its SUMMARY_SHOWN busiest (by mailbox)
 * and every one not running; --all shows them all. Deeper than MAX_DEPTH is summarised too. */
enum { SUMMARISE_OVER = 20, SUMMARY_SHOWN = 10, MAX_DEPTH = 24, MAX_CHILD_ID = 128, MAX_WATCH_S = 3600 };
enum { MAILBOX_WARN = 100 }; /* a mailbox this deep is painted as a warning */

typedef enum { COLOR_AUTO, COLOR_ALWAYS, COLOR_NEVER } color_when_t;

typedef struct {
    const char *url;   /* http://host:port */
    const char *token; /* admin token */
    bool json, all, watch, colour;
    int interval_s;
    long count; /* refreshes before stopping; 0: until interrupted */
    const char *restart_id;
} tree_opts_t;

/* ---- talking to the daemon ------------------------------------------------------------------------ */

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

/* "the daemon answered 403: why", with a hint for the two refusals of the token. */
static void refusal(int status, const char *body, char *err, size_t errlen)
{
    json_t *doc = json_loads(body, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    const char *hint = status == 401   ? " (the token is unknown or revoked: fleetd token create --admin makes one)"
                       : status == 403 ? " (fleetd token create --admin makes an admin token)"
                                       : "";
    snprintf(err, errlen, "the daemon answered %d: %.300s%s", status, m ? m : body, hint);
    json_decref(doc);
}

/* ---- text ----------------------------------------------------------------------------------------- */

static void human_bytes(long long b, char *out, size_t outlen)
{
    if (b >= 1LL << 30)
        snprintf(out, outlen, "%.1f GiB", (double)b / (1LL << 30));
    else if (b >= 1 << 20)
        snprintf(out, outlen, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(out, outlen, "%.1f KiB", (double)b / (1 << 10));
    else
        snprintf(out, outlen, "%lld B", b);
}

static void human_duration(long long s, char *out, size_t outlen)
{
    if (s < 0)
        s = 0;
    if (s >= 86400)
        snprintf(out, outlen, "%lldd%lldh", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(out, outlen, "%lldh%lldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, outlen, "%lldm%llds", s / 60, s % 60);
    else
        snprintf(out, outlen, "%llds", s);
}

/* "2026-11-23T10:00:00.123Z" (the daemon's format) as Unix milliseconds. */
static bool parse_time(const char *s, int64_t *ms)
{
    struct tm tm = {0};
    int milli = 0;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                            &tm.tm_sec, &milli) != 7)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *ms = (int64_t)t * 1000 + milli;
    return true;
}

/* Appends s with control characters (a terminal's escapes) replaced; returns its display width. */
static int put_text(fl_strbuf_t *out, const char *s)
{
    int width = 0;
    for (const unsigned char *c = (const unsigned char *)(s ? s : "?"); *c; c++) {
        char ch = (*c < 0x20 || *c == 0x7f) ? '?' : (char)*c;
        fl_strbuf_add(out, &ch, 1);
        width += (*c & 0xc0) != 0x80; /* UTF-8 continuation bytes take no column */
    }
    return width;
}

static int text_width(const char *s)
{
    int width = 0;
    for (const unsigned char *c = (const unsigned char *)(s ? s : "?"); *c; c++)
        width += (*c & 0xc0) != 0x80;
    return width;
}

static void pad(fl_strbuf_t *out, int n)
{
    for (; n > 0; n--)
        fl_strbuf_add(out, " ", 1);
}

/* ---- colours -------------------------------------------------------------------------------------- */

#define GREEN  "\033[32m"
#define YELLOW "\033[33m"
#define RED    "\033[31m"
#define DIM    "\033[2m"
#define BOLD   "\033[1m"
#define RESET  "\033[0m"

/* Appends text in that colour when colours are on. */
static void paint(fl_strbuf_t *out, bool colour, const char *hue, const char *text)
{
    colour = colour && text[0] != '\0';
    if (colour && hue)
        fl_strbuf_str(out, hue);
    fl_strbuf_str(out, text);
    if (colour && hue)
        fl_strbuf_str(out, RESET);
}

static const char *status_hue(const char *status)
{
    if (status && strcmp(status, "running") == 0)
        return GREEN;
    if (status && (strcmp(status, "restarting") == 0 || strcmp(status, "starting") == 0 || strcmp(status, "stopping") == 0))
        return YELLOW;
    return RED; /* stopped, failed, anything unknown */
}

/* ---- the rows ------------------------------------------------------------------------------------- */

typedef struct {
    const char *tee, *elbow, *pipe, *space, *more;
} glyphs_t;

static const glyphs_t unicode_glyphs = {"\u251c\u2500 ", "\u2514\u2500 ", "\u2502  ", "   ", "\u2026"};
static const glyphs_t ascii_glyphs = {"|- ", "`- ", "|  ", "   ", "..."};

typedef struct {
    json_t *node;                  /* borrowed from the tree; NULL for a summary row */
    char lines[MAX_DEPTH * 6 + 8]; /* the tree lines before the name */
    size_t more;                   /* a summary row: children not shown */
    long long more_mailbox;        /* the deepest mailbox among them */
} row_t;

typedef struct {
    row_t *v;
    size_t n, cap;
    bool failed;
    const glyphs_t *g;
    bool all;
} rows_t;

static row_t *add_row(rows_t *rows, const char *prefix, const char *branch)
{
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? rows->cap * 2 : 64;
        row_t *v = fl_realloc(rows->v, cap * sizeof(*v));
        if (v == NULL) {
            rows->failed = true;
            return NULL;
        }
        rows->v = v;
        rows->cap = cap;
    }
    row_t *r = &rows->v[rows->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->lines, sizeof(r->lines), "%s%s", prefix, branch);
    return r;
}

static long long mailbox_of(json_t *node)
{
    return json_integer_value(json_object_get(node, "mailbox"));
}

static bool running(json_t *node)
{
    const char *status = json_string_value(json_object_get(node, "status"));
    return status && strcmp(status, "running") == 0;
}

typedef struct {
    json_t *node;
    long long mailbox;
    size_t index;
} ranked_t;

static int busiest_first(const void *a, const void *b)
{
    const ranked_t *x = a, *y = b;
    if (x->mailbox != y->mailbox)
        return x->mailbox > y->mailbox ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void add_node(rows_t *rows, json_t *node, const char *prefix, bool last, bool root, int depth);

/* The children of a supervisor: all of them, or the busiest and those not running plus one
 * summary row for the rest. */
static void add_children(rows_t *rows, json_t *children, const char *prefix, int depth)
{
    size_t n = json_array_size(children);
    if (n == 0)
        return;
    if (depth >= MAX_DEPTH) {
        row_t *r = add_row(rows, prefix, rows->g->elbow);
        if (r)
            r->more = n;
        return;
    }
    if (n <= SUMMARISE_OVER || rows->all) {
        for (size_t i = 0; i < n; i++)
            add_node(rows, json_array_get(children, i), prefix, i + 1 == n, false, depth);
        return;
    }
    ranked_t *ranked = fl_malloc(n * sizeof(*ranked));
    if (ranked == NULL) {
        rows->failed = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        ranked[i] = (ranked_t){.node = json_array_get(children, i), .mailbox = mailbox_of(json_array_get(children, i)), .index = i};
    qsort(ranked, n, sizeof(*ranked), busiest_first);
    size_t more = 0;
    long long more_mailbox = 0;
    for (size_t i = 0; i < n; i++) {
        if (i < SUMMARY_SHOWN || !running(ranked[i].node)) {
            add_node(rows, ranked[i].node, prefix, false, false, depth);
        } else {
            more++;
            more_mailbox = ranked[i].mailbox > more_mailbox ? ranked[i].mailbox : more_mailbox;
        }
    }
    fl_free(ranked);
    row_t *r = more ? add_row(rows, prefix, rows->g->elbow) : NULL;
    if (r) {
        r->more = more;
        r->more_mailbox = more_mailbox;
    }
}

static void add_node(rows_t *rows, json_t *node, const char *prefix, bool last, bool root, int depth)
{
    row_t *r = add_row(rows, prefix, root ? "" : last ? rows->g->elbow : rows->g->tee);
    if (r == NULL)
        return;
    r->node = node;
    char sub[sizeof(r->lines)];
    snprintf(sub, sizeof(sub), "%s%s", prefix, root ? "" : last ? rows->g->space : rows->g->pipe);
    add_children(rows, json_object_get(node, "children"), sub, depth + 1);
}

/* ---- printing ------------------------------------------------------------------------------------- */

/* Column widths after the name. */
enum { W_TYPE = 12, W_STATUS = 10, W_UPTIME = 8, W_RESTARTS = 8, W_MAILBOX = 8, W_HANDLED = 10, W_MEMORY = 10 };

static void put_cell(fl_strbuf_t *out, bool colour, const char *hue, const char *text, int width, bool right)
{
    int gap = width - text_width(text);
    if (right)
        pad(out, gap);
    paint(out, colour, hue, text);
    if (!right)
        pad(out, gap);
    fl_strbuf_add(out, "  ", 2);
}

static void put_row(fl_strbuf_t *out, const row_t *r, int name_w, const tree_opts_t *o, const glyphs_t *g, int64_t now_ms)
{
    bool c = o->colour;
    paint(out, c, DIM, r->lines);
    int width = text_width(r->lines);
    if (r->node == NULL) {
        char text[160];
        if (r->more_mailbox > 0)
            snprintf(text, sizeof(text), "%s and %zu more (mailboxes up to %lld; --all shows them)", g->more, r->more,
                     r->more_mailbox);
        else
            snprintf(text, sizeof(text), "%s and %zu more (all running, mailboxes empty; --all shows them)", g->more, r->more);
        paint(out, c, DIM, text);
        fl_strbuf_add(out, "\n", 1);
        return;
    }
    json_t *n = r->node;
    const char *kind = json_string_value(json_object_get(n, "kind"));
    const char *status = json_string_value(json_object_get(n, "status"));
    bool sup = kind && strcmp(kind, "supervisor") == 0;
    if (c && sup)
        fl_strbuf_str(out, BOLD);
    width += put_text(out, json_string_value(json_object_get(n, "id")));
    if (c && sup)
        fl_strbuf_str(out, RESET);
    pad(out, name_w - width);
    fl_strbuf_add(out, "  ", 2);

    const char *type = !sup                                                ? "actor"
                       : json_is_true(json_object_get(n, "dynamic"))       ? "dynamic"
                       : json_string_value(json_object_get(n, "strategy")) ? json_string_value(json_object_get(n, "strategy"))
                                                                           : "supervisor";
    char cell[64];
    put_cell(out, c, DIM, type, W_TYPE, false);
    snprintf(cell, sizeof(cell), "%.32s", status ? status : "?");
    put_cell(out, c, status_hue(status), cell, W_STATUS, false);
    human_duration(json_integer_value(json_object_get(n, "uptime_s")), cell, sizeof(cell));
    put_cell(out, c, DIM, cell, W_UPTIME, false);
    long long restarts = json_integer_value(json_object_get(n, "restarts"));
    snprintf(cell, sizeof(cell), "%lld", restarts);
    put_cell(out, c, restarts > 0 ? YELLOW : NULL, cell, W_RESTARTS, true);
    if (sup) {
        put_cell(out, c, NULL, "", W_MAILBOX, true);
        put_cell(out, c, NULL, "", W_HANDLED, true);
    } else {
        long long mailbox = mailbox_of(n);
        snprintf(cell, sizeof(cell), "%lld", mailbox);
        put_cell(out, c, mailbox >= MAILBOX_WARN ? YELLOW : NULL, cell, W_MAILBOX, true);
        snprintf(cell, sizeof(cell), "%lld", json_integer_value(json_object_get(n, "handled")));
        put_cell(out, c, NULL, cell, W_HANDLED, true);
    }
    human_bytes(json_integer_value(json_object_get(n, "memory")), cell, sizeof(cell));
    put_cell(out, c, DIM, cell, W_MEMORY, true);

    json_t *crash = json_object_get(n, "last_crash");
    if (json_is_object(crash)) {
        int64_t at;
        char ago[96] = "at an unknown time";
        if (parse_time(json_string_value(json_object_get(crash, "at")), &at)) {
            human_duration((now_ms - at) / 1000, cell, sizeof(cell));
            snprintf(ago, sizeof(ago), "%s ago", cell);
        }
        paint(out, c, DIM, ago);
        fl_strbuf_add(out, ": ", 2);
        if (c)
            fl_strbuf_str(out, RED);
        put_text(out, json_string_value(json_object_get(crash, "reason")));
        if (c)
            fl_strbuf_str(out, RESET);
    }
    while (out->len > 0 && out->p[out->len - 1] == ' ') /* no trailing blanks */
        out->len--;
    fl_strbuf_add(out, "\n", 1);
}

typedef struct {
    long supervisors, actors, not_running, restarts;
    long long mailboxes, deepest;
    const char *deepest_id;
} totals_t;

static void count(json_t *node, totals_t *t, int depth)
{
    bool sup = json_is_array(json_object_get(node, "children"));
    *(sup ? &t->supervisors : &t->actors) += 1;
    t->not_running += !running(node);
    t->restarts += (long)json_integer_value(json_object_get(node, "restarts"));
    long long mailbox = mailbox_of(node);
    t->mailboxes += mailbox;
    if (!sup && (t->deepest_id == NULL || mailbox > t->deepest)) {
        t->deepest = mailbox;
        t->deepest_id = json_string_value(json_object_get(node, "id"));
    }
    json_t *children = json_object_get(node, "children");
    for (size_t i = 0; depth < 64 && i < json_array_size(children); i++)
        count(json_array_get(children, i), t, depth + 1);
}

/* The whole table (header, rows, totals) into out. */
static int render(fl_strbuf_t *out, json_t *tree, const tree_opts_t *o, const glyphs_t *g)
{
    rows_t rows = {.g = g, .all = o->all};
    add_node(&rows, tree, "", true, true, 0);
    if (rows.failed) {
        fl_free(rows.v);
        return FL_ENOMEM;
    }
    int name_w = 4; /* "NAME" */
    for (size_t i = 0; i < rows.n; i++) {
        int w = text_width(rows.v[i].lines) +
                (rows.v[i].node ? text_width(json_string_value(json_object_get(rows.v[i].node, "id"))) : 0);
        name_w = w > name_w && w <= 80 ? w : name_w;
    }
    if (o->colour)
        fl_strbuf_str(out, BOLD);
    fl_strbuf_str(out, "NAME");
    pad(out, name_w - 4);
    fl_strbuf_printf(out, "  %-*s  %-*s  %-*s  %*s  %*s  %*s  %*s  LAST CRASH", W_TYPE, "TYPE", W_STATUS, "STATUS", W_UPTIME,
                     "UPTIME", W_RESTARTS, "RESTARTS", W_MAILBOX, "MAILBOX", W_HANDLED, "HANDLED", W_MEMORY, "MEMORY");
    if (o->colour)
        fl_strbuf_str(out, RESET);
    fl_strbuf_add(out, "\n", 1);
    int64_t now = fl_now_wall_ms();
    for (size_t i = 0; i < rows.n; i++)
        put_row(out, &rows.v[i], name_w, o, g, now);
    fl_free(rows.v);

    totals_t t = {0};
    count(tree, &t, 0);
    char line[400];
    snprintf(line, sizeof(line), "%ld supervisors, %ld actors; %ld not running; %ld restarts; mailboxes %lld in all", t.supervisors,
             t.actors, t.not_running, t.restarts, t.mailboxes);
    paint(out, o->colour, t.not_running ? RED : DIM, line);
    if (t.deepest_id && t.deepest > 0) {
        fl_strbuf_printf(out, ", deepest %lld at ", t.deepest);
        put_text(out, t.deepest_id);
    }
    fl_strbuf_add(out, "\n", 1);
    return out->failed ? FL_ENOMEM : FL_OK;
}

/* ---- running -------------------------------------------------------------------------------------- */

/* A child id as the tree names them ("tracker:harbor-1", "db:0"): it goes into the request path. */
static bool child_id_ok(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > MAX_CHILD_ID)
        return false;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' ||
              *c == '-' || *c == ':'))
            return false;
    return true;
}

/* Outcome of one refresh: shown, failed for now (watch goes on), or refused or not an address (stop). */
enum { SHOWN, FAILED, REFUSED, BAD_URL };

static int show_once(const tree_opts_t *o, const glyphs_t *g, bool terminal, long refresh, char *err, size_t errlen)
{
    int status = 0;
    char *body = NULL;
    int rc = http_call(o, "GET", "/admin/tree", &status, &body, err, errlen);
    if (rc == EXIT_USAGE)
        return BAD_URL;
    char stamp[32];
    fl_time_format_ms(fl_now_wall_ms(), stamp);
    if (o->watch && !o->json && terminal) /* in place: home, clear, then where, how often, when */
        printf("\033[H\033[2J%s%s \u00b7 every %ds \u00b7 %s \u00b7 Ctrl-C stops%s\n\n", o->colour ? DIM : "", o->url,
               o->interval_s, stamp, o->colour ? RESET : "");
    else if (o->watch && !o->json)
        printf("%s---- %s ----\n", refresh ? "\n" : "", stamp);
    if (rc != EXIT_OK) {
        fflush(stdout);
        return FAILED;
    }
    if (status != 200) {
        refusal(status, body, err, errlen);
        free(body);
        fflush(stdout);
        return status == 401 || status == 403 ? REFUSED : FAILED;
    }
    if (o->json) {
        printf("%s\n", body);
        free(body);
        fflush(stdout);
        return SHOWN;
    }
    json_error_t jerr;
    json_t *tree = json_loads(body, 0, &jerr);
    free(body);
    if (!json_is_object(tree)) {
        snprintf(err, errlen, "the daemon's answer is not a tree: %s", tree ? "not an object" : jerr.text);
        json_decref(tree);
        return FAILED;
    }
    fl_strbuf_t out = {0};
    rc = render(&out, tree, o, g);
    json_decref(tree);
    if (rc != FL_OK) {
        fl_strbuf_free(&out);
        snprintf(err, errlen, "out of memory");
        return FAILED;
    }
    fwrite(out.p, 1, out.len, stdout);
    fl_strbuf_free(&out);
    fflush(stdout);
    return SHOWN;
}

static int restart(const tree_opts_t *o)
{
    if (!child_id_ok(o->restart_id)) /* not echoed: it may hold anything, a line break too */
        return usage_error("tree: restart takes a child id as fleetd tree shows them (1 to %d of [A-Za-z0-9._:-])", MAX_CHILD_ID);
    char path[256], err[512];
    snprintf(path, sizeof(path), "/admin/tree/%s/restart", o->restart_id);
    int status = 0;
    char *body = NULL;
    int rc = http_call(o, "POST", path, &status, &body, err, sizeof(err));
    if (rc != EXIT_OK)
        return rc == EXIT_USAGE ? usage_error("tree: %s", err) : runtime_error("tree: %s", err);
    if (status != 200) {
        refusal(status, body, err, sizeof(err));
        free(body);
        return runtime_error("tree: %s", err);
    }
    free(body);
    printf("%s restarted\n", o->restart_id);
    return EXIT_OK;
}

static bool parse_number(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* The value of --name=VALUE or --name VALUE (taking the next argument), else NULL. */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len) != 0)
        return NULL;
    if (argv[*i][len] == '=')
        return argv[*i] + len + 1;
    if (argv[*i][len] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    static char url[160];
    snprintf(url, sizeof(url), "http://%s", cfg->listen);
    tree_opts_t o = {.url = url, .token = getenv("FLEETD_ADMIN_TOKEN"), .interval_s = 2};
    color_when_t when = COLOR_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *v;
        long n;
        if (strcmp(argv[i], "--json") == 0) {
            o.json = true;
        } else if (strcmp(argv[i], "--all") == 0) {
            o.all = true;
        } else if ((v = option_value(argc, argv, &i, "--url")) != NULL) {
            o.url = v;
        } else if ((v = option_value(argc, argv, &i, "--token")) != NULL) {
            o.token = v;
        } else if (strcmp(argv[i], "--color") == 0 || strcmp(argv[i], "--color=always") == 0) {
            when = COLOR_ALWAYS;
        } else if (strcmp(argv[i], "--color=never") == 0) {
            when = COLOR_NEVER;
        } else if (strcmp(argv[i], "--color=auto") == 0) {
            when = COLOR_AUTO;
        } else if (strcmp(argv[i], "--watch") == 0) {
            o.watch = true;
        } else if (strncmp(argv[i], "--watch=", 8) == 0) {
            if (!parse_number(argv[i] + 8, 1, MAX_WATCH_S, &n))
                return usage_error("tree: --watch=SECONDS takes 1 to %d seconds, not \"%.40s\"", MAX_WATCH_S, argv[i] + 8);
            o.watch = true;
            o.interval_s = (int)n;
        } else if ((v = option_value(argc, argv, &i, "--count")) != NULL) {
            if (!parse_number(v, 1, 1000000000, &o.count))
                return usage_error("tree: --count takes a number of refreshes from 1, not \"%.40s\"", v);
            o.watch = true;
        } else if (strcmp(argv[i], "restart") == 0 && i + 1 < argc && o.restart_id == NULL) {
            o.restart_id = argv[++i];
        } else {
            return usage_error("tree: unexpected argument \"%.80s\" (see fleetd tree --help)", argv[i]);
        }
    }
    if (o.restart_id && (o.watch || o.json || o.all))
        return usage_error("tree: restart takes no --watch, --count, --json or --all");
    if (o.token == NULL || o.token[0] == '\0')
        return usage_error("tree: no admin token: set FLEETD_ADMIN_TOKEN or give --token (fleetd token create --admin makes one)");
    if (!fl_api_token_well_formed(o.token))
        return usage_error("tree: the admin token is not a fleetd token (\"fl_\" and 43 characters of [A-Za-z0-9_-])");
    if (o.restart_id)
        return restart(&o);

    bool terminal = isatty(STDOUT_FILENO);
    const char *no_color = getenv("NO_COLOR");
    o.colour = when == COLOR_ALWAYS || (when == COLOR_AUTO && terminal && !(no_color && no_color[0]));
    /* box-drawing lines where the locale's characters are UTF-8, ASCII elsewhere */
    setlocale(LC_CTYPE, "");
    const glyphs_t *g = strcmp(nl_langinfo(CODESET), "UTF-8") == 0 ? &unicode_glyphs : &ascii_glyphs;

    char err[512];
    int rc = EXIT_OK;
    for (long refresh = 0;; refresh++) {
        int shown = show_once(&o, g, terminal, refresh, err, sizeof(err));
        if (shown == BAD_URL)
            return usage_error("tree: %s", err);
        if (shown == REFUSED)
            return runtime_error("tree: %s", err);
        rc = shown == SHOWN ? EXIT_OK : runtime_error("tree: %s", err);
        if (!o.watch || (o.count && refresh + 1 >= o.count))
            break;
        struct timespec ts = {.tv_sec = o.interval_s};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    return rc;
}

const command_t cmd_tree = {
    .name = "tree",
    .summary = "show the live supervision tree of a running daemon, or restart one child",
    .usage = "Usage: fleetd tree [--json] [--all] [--color=auto|always|never] [--watch[=SECONDS]] [--count N]\n"
             "                   [--url http://HOST:PORT] [--token TOKEN]\n"
             "       fleetd tree restart CHILD_ID [--url ...] [--token ...]\n\n"
             "Asks the daemon at FLEETD_LISTEN (or --url) for its supervision tree (GET /admin/tree) and\n"
             "prints it as a table, nested with tree lines: every supervisor (its strategy, or \"dynamic\")\n"
             "and actor with its status, uptime, restarts, and for actors the mailbox depth and messages\n"
             "handled, then memory and the last crash (how long ago, and why). A last line sums it up:\n"
             "how many are not running, restarts in all, the deepest mailbox. A supervisor with more than\n"
             "20 children (the trackers of a big deployment) shows its 10 busiest by mailbox and every one\n"
             "not running, then \"... and N more\". The admin routes need an admin token (fleetd token create\n"
             "--admin): FLEETD_ADMIN_TOKEN, or --token.\n\n"
             "  --json               print the daemon's JSON (with --watch: one document a line)\n"
             "  --all                show every child, however many\n"
             "  --color=WHEN         auto (the default: colours when stdout is a terminal and NO_COLOR is\n"
             "                       unset), always, or never\n"
             "  --watch[=SECONDS]    refresh every SECONDS (default 2, up to 3600) until interrupted: in\n"
             "                       place on a terminal, else a \"---- TIME ----\" line before each tree\n"
             "  --count N            stop after N refreshes (implies --watch)\n"
             "  --url URL            the daemon's address (default http://$FLEETD_LISTEN)\n"
             "  --token TOKEN        the admin token (default $FLEETD_ADMIN_TOKEN; prefer the variable: a\n"
             "                       command line is visible to other users of the machine)\n"
             "  restart CHILD_ID     kill that child as a drill; its supervisor restarts it (for example\n"
             "                       tracker:harbor-1, db:0, pubsub:1); prints once it runs again\n\n"
             "Status colours: running green; starting, stopping, restarting yellow; stopped red. Tree\n"
             "lines use box-drawing characters in a UTF-8 locale, ASCII otherwise.\n\n"
             "Exit status: 0 success, 1 the daemon cannot be reached or refused (a token that is unknown,\n"
             "revoked or not admin; with --watch, when the last refresh failed), 2 usage error or no\n"
             "admin token.\n",
    .run = run,
};
