#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <strings.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB      1024LL
#define MIB      (1024LL * 1024)
#define SEC      1000LL
#define MIN      (60 * SEC)
#define F(field) offsetof(fl_config_t, field)

/* The one table of settings. Ranges are in bytes for sizes and milliseconds for durations. */
static const fl_setting_t settings[] = {
    {"FLEETD_CONFIG", FL_SET_STRING, NULL, 0, 0, NULL, false,
     "Path of an optional configuration file of KEY=VALUE lines (the names below). The environment overrides it.", F(config_file)},
    {"DATABASE_URL", FL_SET_STRING, "", 0, 0, NULL, true,
     "PostgreSQL connection string (libpq URI or key=value conninfo). Empty: libpq's defaults (PGHOST, PGDATABASE, ...).",
     F(database_url)},
    {"FLEETD_LISTEN", FL_SET_STRING, "127.0.0.1:4000", 0, 0, NULL, false,
     "Address and port the HTTP server listens on (host:port, [v6]:port). Port 0 picks a free port.", F(listen)},
    {"FLEETD_SHARDS", FL_SET_INT, "0", 0, 256, NULL, false,
     "Event-loop threads (shards), each with its own listening socket. 0: one per online CPU.", F(shards)},
    {"FLEETD_MASTER_KEY", FL_SET_STRING, NULL, 0, 0, NULL, true,
     "Key that encrypts partner secrets at rest: 64 hex characters (32 bytes).", F(master_key)},
    {"FLEETD_MASTER_KEY_FILE", FL_SET_STRING, NULL, 0, 0, NULL, false,
     "File holding the master key (64 hex characters), instead of FLEETD_MASTER_KEY.", F(master_key_file)},
    {"FLEETD_DATA_DIR", FL_SET_STRING, NULL, 0, 0, NULL, false,
     "Directory for local state: scripts/run keeps its private PostgreSQL and master key there (default .data in the "
     "repository), and fleetd demo its operator token (demo-token, mode 0600).",
     F(data_dir)},
    {"FLEETD_LOG_LEVEL", FL_SET_ENUM, "info", 0, 0, "debug|info|warn|error", false, "Least severe log level written.",
     F(log_level)},
    {"FLEETD_LOG_FORMAT", FL_SET_ENUM, "auto", 0, 0, "auto|json|text", false,
     "Log line format on stderr. auto: readable text on a terminal, JSON lines otherwise.", F(log_format)},
    {"FLEETD_ACCESS_LOG", FL_SET_BOOL, "true", 0, 0, NULL, false, "Write one log line per HTTP request (event http.access).",
     F(access_log)},
    {"FLEETD_METRICS_ACCESS", FL_SET_ENUM, "loopback", 0, 0, "loopback|token|public", false,
     "Who may read GET /metrics. loopback: clients on 127.0.0.0/8 or ::1 without a token, others with an admin token; "
     "token: an admin token always; public: anyone (put it behind a proxy that keeps it private).",
     F(metrics_access)},
    {"FLEETD_MAX_CONNECTIONS", FL_SET_INT, "10000", 1, 1000000, NULL, false,
     "Open client connections across all shards. Past it a new connection gets 503 and is closed.", F(max_connections)},
    {"FLEETD_MAX_HEADER_BYTES", FL_SET_BYTES, "16KiB", 1 * KIB, 1 * MIB, NULL, false,
     "Bytes of request line and headers. Past it: 431.", F(max_header_bytes)},
    {"FLEETD_MAX_HEADERS", FL_SET_INT, "64", 4, 1000, NULL, false, "Header fields in one request. Past it: 431.", F(max_headers)},
    {"FLEETD_MAX_BODY_BYTES", FL_SET_BYTES, "1MiB", 1 * KIB, 64 * MIB, NULL, false,
     "Bytes of request body (after chunked decoding). Past it: 413, refused before the body is read.", F(max_body_bytes)},
    {"FLEETD_HEADER_TIMEOUT", FL_SET_DURATION, "10s", 100, 5 * MIN, NULL, false,
     "Absolute deadline for the request line and headers, counted from their first byte. Past it: 408 and close.",
     F(header_timeout_ms)},
    {"FLEETD_BODY_TIMEOUT", FL_SET_DURATION, "30s", 100, 10 * MIN, NULL, false,
     "Absolute deadline for the request body, counted from the end of the headers. Past it: 408 and close.", F(body_timeout_ms)},
    {"FLEETD_KEEPALIVE_TIMEOUT", FL_SET_DURATION, "60s", 100, 60 * MIN, NULL, false,
     "How long an idle keep-alive connection is kept open between requests.", F(keepalive_timeout_ms)},
    {"FLEETD_WRITE_TIMEOUT", FL_SET_DURATION, "30s", 100, 10 * MIN, NULL, false,
     "How long a response may wait for the client to read it before the connection is closed.", F(write_timeout_ms)},
    {"FLEETD_WS_ORIGINS", FL_SET_STRING, "", 0, 0, NULL, false,
     "Origins allowed to open a WebSocket, comma-separated (https://ops.example,http://127.0.0.1:4000), or * for any. "
     "Empty: the same origin only (Origin's host:port equal to Host). Requests without Origin (not from a browser) are "
     "allowed; others get 403.",
     F(ws_origins)},
    {"FLEETD_WS_MAX_MESSAGE", FL_SET_BYTES, "64KiB", 125, 16 * MIB, NULL, false,
     "Bytes of one incoming WebSocket message (all its fragments). Past it the connection is closed with 1009.", F(ws_max_message)},
    {"FLEETD_WS_OUTPUT_MAX", FL_SET_BYTES, "1MiB", 64 * KIB, 256 * MIB, NULL, false,
     "Bytes queued for one WebSocket client that is not reading; past it sends are refused (the live layer coalesces and "
     "then closes). It must hold the largest join reply (a fleet's snapshot).",
     F(ws_output_max)},
    {"FLEETD_WS_IDLE_TIMEOUT", FL_SET_DURATION, "60s", 0, 24 * 60 * MIN, NULL, false,
     "A WebSocket that receives nothing (not even a heartbeat) for this long is closed with 1001. 0: never.",
     F(ws_idle_timeout_ms)},
    {"FLEETD_DB_CONNECT_TIMEOUT", FL_SET_DURATION, "5s", 100, 5 * MIN, NULL, false,
     "Deadline for one attempt to connect to PostgreSQL.", F(db_connect_timeout_ms)},
    {"FLEETD_DB_RECONNECT_MIN", FL_SET_DURATION, "100ms", 10, 1 * MIN, NULL, false,
     "First delay before reconnecting to PostgreSQL; it doubles (with jitter) after each failure.", F(db_reconnect_min_ms)},
    {"FLEETD_DB_RECONNECT_MAX", FL_SET_DURATION, "10s", 10, 10 * MIN, NULL, false, "Longest delay between reconnection attempts.",
     F(db_reconnect_max_ms)},
    {"FLEETD_DB_HEALTH_INTERVAL", FL_SET_DURATION, "1s", 50, 1 * MIN, NULL, false,
     "How often the database and the schema version are checked for /ready.", F(db_health_interval_ms)},
    {"FLEETD_SHUTDOWN_TIMEOUT", FL_SET_DURATION, "10s", 0, 10 * MIN, NULL, false,
     "On SIGTERM, how long requests in flight may take to finish before connections are closed.", F(shutdown_timeout_ms)},
    {"FLEETD_TRACKER_IDLE_TIMEOUT", FL_SET_DURATION, "10m", 1 * SEC, 24 * 60 * MIN, NULL, false,
     "A fleet's tracker with no fixes and no live subscribers for this long stops; the next fix or read starts it again.",
     F(tracker_idle_timeout_ms)},
    {"FLEETD_TRACKER_REPLAY", FL_SET_INT, "1000", 0, 1000000, NULL, false,
     "Recent positions each fleet keeps for live clients that rejoin (last_seq, Last-Event-ID); older gaps get a snapshot.",
     F(tracker_replay)},
    {"FLEETD_LIVE_BEHIND_TIMEOUT", FL_SET_DURATION, "30s", 1000, 3600 * SEC, NULL, false,
     "A live subscriber (WebSocket or SSE) whose output stays backed up for this long, getting only each vehicle's latest "
     "position meanwhile, is closed with a reason.",
     F(live_behind_timeout_ms)},
    {"FLEETD_LIVE_SNDBUF", FL_SET_BYTES, "0", 0, 64 * MIB, NULL, false,
     "The kernel's send buffer (SO_SNDBUF) of each WebSocket and event stream; 0 leaves the kernel's default and its "
     "autotuning. A small one bounds the kernel memory of many idle subscribers, and makes a slow one count as behind "
     "sooner.",
     F(live_sndbuf)},
    {"FLEETD_LIVE_BEHIND_VEHICLES", FL_SET_INT, "10000", 1, 10000000, NULL, false,
     "A backed-up live subscriber with more vehicles than this waiting for their latest position is closed at once.",
     F(live_behind_vehicles)},
    {"FLEETD_TRACKER_MAILBOX", FL_SET_INT, "10000", 16, 10000000, NULL, false,
     "Messages a fleet's tracker may have waiting; past it new work for that fleet is refused (503).", F(tracker_mailbox)},
    {"FLEETD_TRACKER_SNAPSHOT_INTERVAL", FL_SET_DURATION, "20ms", 0, 10 * SEC, NULL, false,
     "Under a stream of fixes, a fleet's status JSON is rebuilt at most this often (the first change after a quiet spell "
     "shows at once).",
     F(tracker_snapshot_interval_ms)},
    {"FLEETD_STATUS_WAIT", FL_SET_DURATION, "2s", 10, 1 * MIN, NULL, false,
     "A status read of a fleet whose tracker is starting, loading or restarting waits this long for it; then 503 (the "
     "database is down).",
     F(status_wait_ms)},
    {"FLEETD_NODE", FL_SET_STRING, "", 0, 0, NULL, false,
     "This node's name, recorded on the jobs it runs. Empty: the host name and process id.", F(node)},
    {"FLEETD_JOBS_COMMIT_INTERVAL", FL_SET_DURATION, "5ms", 0, 1 * SEC, NULL, false,
     "Group commit: the longest an enqueued job (an ingest batch) waits for its transaction.", F(jobs_commit_interval_ms)},
    {"FLEETD_JOBS_COMMIT_MAX", FL_SET_INT, "500", 1, 100000, NULL, false,
     "Group commit: a transaction starts at once when this many jobs wait.", F(jobs_commit_max)},
    {"FLEETD_JOBS_COMMIT_TIMEOUT", FL_SET_DURATION, "5s", 10, 5 * MIN, NULL, false,
     "An enqueue not durable by then fails (ingest answers 503); the job may still commit, and its unique key makes a retry "
     "safe.",
     F(jobs_commit_timeout_ms)},
    {"FLEETD_JOBS_MAX_PENDING", FL_SET_INT, "10000", 1, 10000000, NULL, false,
     "Enqueues waiting for a commit; past it new ones are refused at once (ingest answers 503).", F(jobs_max_pending)},
    {"FLEETD_JOBS_MAX_PENDING_BYTES", FL_SET_BYTES, "64MiB", 1 * MIB, 4096 * MIB, NULL, false,
     "Bytes of job arguments (ingest bodies) waiting for a commit; past it new enqueues are refused at once.",
     F(jobs_max_pending_bytes)},
    {"FLEETD_JOBS_POLL_INTERVAL", FL_SET_DURATION, "1s", 10, 5 * MIN, NULL, false,
     "Queues look for due jobs this often when no notification (LISTEN/NOTIFY) arrives.", F(jobs_poll_interval_ms)},
    {"FLEETD_JOBS_LEASE", FL_SET_DURATION, "30s", 300, 60 * MIN, NULL, false,
     "A running job's lease, renewed every third of it; a job whose lease runs out (its node died) is run again.",
     F(jobs_lease_ms)},
    {"FLEETD_JOBS_BACKOFF_BASE", FL_SET_DURATION, "1s", 1, 60 * MIN, NULL, false,
     "A failed job is retried after base * 2^(attempt - 1), with jitter, up to FLEETD_JOBS_BACKOFF_MAX.", F(jobs_backoff_base_ms)},
    {"FLEETD_JOBS_BACKOFF_MAX", FL_SET_DURATION, "1h", 1, 24 * 60 * MIN, NULL, false, "The longest wait before a retry.",
     F(jobs_backoff_max_ms)},
    {"FLEETD_JOBS_KEEP_COMPLETED", FL_SET_SECONDS, "1h", 0, 3650LL * 86400, NULL, false,
     "Completed jobs are deleted after this age (the audit trail itself is kept in ingest_batches).", F(jobs_keep_completed_s)},
    {"FLEETD_JOBS_KEEP_DISCARDED", FL_SET_SECONDS, "14d", 0, 3650LL * 86400, NULL, false,
     "Discarded jobs (failed for good) are deleted after this age.", F(jobs_keep_discarded_s)},
    {"FLEETD_JOBS_KEEP_CANCELLED", FL_SET_SECONDS, "7d", 0, 3650LL * 86400, NULL, false,
     "Cancelled jobs are deleted after this age.", F(jobs_keep_cancelled_s)},
    {"FLEETD_RETENTION", FL_SET_SECONDS, "90d", 0, 3650LL * 86400, NULL, false,
     "Positions (and their signed batches) older than this are deleted, in small batches. 0: keep everything.", F(retention_s)},
    {"FLEETD_RETENTION_EVERY", FL_SET_SECONDS, "1d", 60, 30LL * 86400, NULL, false,
     "How often the retention job runs (one node per tick).", F(retention_every_s)},
    {"FLEETD_INGEST_MAX_FIXES", FL_SET_INT, "1000", 1, 100000, NULL, false,
     "Fixes in one ingest batch; a larger batch is refused whole (422).", F(ingest_max_fixes)},
    {"FLEETD_INGEST_TIMESTAMP_TOLERANCE", FL_SET_DURATION, "5m", 1 * SEC, 60 * MIN, NULL, false,
     "How far webhook-timestamp may be from fleetd's clock, either way (401 timestamp_out_of_range past it).",
     F(ingest_timestamp_tolerance_ms)},
    {"FLEETD_INGEST_RATE", FL_SET_INT, "100", 0, 1000000, NULL, false,
     "Batches per second each partner may send, on average (429 with Retry-After past it). 0: no limit.", F(ingest_rate)},
    {"FLEETD_INGEST_BURST", FL_SET_INT, "200", 1, 10000000, NULL, false,
     "Batches a partner may send at once above its rate (the token bucket's size).", F(ingest_burst)},
    {"FLEETD_WEB_DIR", FL_SET_STRING, "", 0, 0, NULL, false,
     "Directory of the live map's files (index.html, assets/), read once at start. Empty: web/ beside the binary (a build "
     "tree), else ../share/fleetd/web beside it, else the installed share/fleetd/web.",
     F(web_dir)},
    {"FLEETD_MAP_TILES", FL_SET_STRING, "https://tile.openstreetmap.org/{z}/{x}/{y}.png", 0, 0, NULL, false,
     "Tile URL template of the live map ({z}, {x}, {y}, optional {s}; http(s):// or a path on this server). Empty: no tiles, "
     "the map shows vehicles on a plain background.",
     F(map_tiles)},
    {"FLEETD_MAP_ATTRIBUTION", FL_SET_STRING, "&copy; OpenStreetMap contributors", 0, 0, NULL, false,
     "Attribution the live map shows for its tiles (HTML; the tile provider's terms usually require one).", F(map_attribution)},
    {NULL, 0, NULL, 0, 0, NULL, false, NULL, 0},
};

const fl_setting_t *fl_settings(void)
{
    return settings;
}

static const fl_setting_t *find(const char *name)
{
    for (const fl_setting_t *s = settings; s->name; s++)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return FL_EINVAL;
}

/* A number with an optional unit suffix; units[] maps suffix to multiplier. */
typedef struct {
    const char *suffix;
    long long mult;
} unit_t;

static const unit_t byte_units[] = {{"", 1},    {"B", 1},        {"KiB", KIB},        {"K", KIB},        {"KB", 1000}, {"MiB", MIB},
                                    {"M", MIB}, {"MB", 1000000}, {"GiB", 1024 * MIB}, {"G", 1024 * MIB}, {NULL, 0}};
static const unit_t duration_units[] = {{"", 1},      {"ms", 1},       {"s", SEC},           {"m", MIN},
                                        {"min", MIN}, {"h", 60 * MIN}, {"d", 24 * 60 * MIN}, {NULL, 0}};
static const unit_t seconds_units[] = {{"", 1}, {"s", 1}, {"m", 60}, {"min", 60}, {"h", 3600}, {"d", 86400}, {NULL, 0}};

static bool parse_number(const char *text, const unit_t *units, long long *out)
{
    errno = 0;
    char *end;
    if (!isdigit((unsigned char)text[0]))
        return false;
    long long n = strtoll(text, &end, 10);
    if (errno != 0)
        return false;
    while (*end == ' ')
        end++;
    for (const unit_t *u = units; u->suffix; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (n > LLONG_MAX / u->mult)
                return false;
            *out = n * u->mult;
            return true;
        }
    }
    return false;
}

static void format_number(long long n, fl_setting_type_t type, char *out, size_t outlen)
{
    if (type == FL_SET_BYTES && n >= MIB && n % MIB == 0)
        snprintf(out, outlen, "%lldMiB", n / MIB);
    else if (type == FL_SET_BYTES && n >= KIB && n % KIB == 0)
        snprintf(out, outlen, "%lldKiB", n / KIB);
    else if (type == FL_SET_DURATION && n >= MIN && n % MIN == 0)
        snprintf(out, outlen, "%lldm", n / MIN);
    else if (type == FL_SET_DURATION && n >= SEC && n % SEC == 0)
        snprintf(out, outlen, "%llds", n / SEC);
    else if (type == FL_SET_DURATION)
        snprintf(out, outlen, "%lldms", n);
    else if (type == FL_SET_SECONDS && n > 0 && n % 86400 == 0)
        snprintf(out, outlen, "%lldd", n / 86400);
    else if (type == FL_SET_SECONDS && n > 0 && n % 3600 == 0)
        snprintf(out, outlen, "%lldh", n / 3600);
    else if (type == FL_SET_SECONDS && n > 0 && n % 60 == 0)
        snprintf(out, outlen, "%lldm", n / 60);
    else if (type == FL_SET_SECONDS)
        snprintf(out, outlen, "%llds", n);
    else
        snprintf(out, outlen, "%lld", n);
}

static int choice_index(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    int index = 0;
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncasecmp(p, value, len) == 0)
            return index;
        index++;
        p += len + (bar ? 1 : 0);
    }
    return -1;
}

static const char *choice_name(const char *choices, int index, char *out, size_t outlen)
{
    const char *p = choices;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '|');
        if (p)
            p++;
    }
    if (p == NULL)
        return "";
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    snprintf(out, outlen, "%.*s", (int)len, p);
    return out;
}

int fl_config_set(fl_config_t *cfg, const char *name, const char *value, char *err, size_t errlen)
{
    const fl_setting_t *s = find(name);
    if (s == NULL)
        return fail(err, errlen, "%s: unknown setting", name);
    char *field = (char *)cfg + s->offset;
    char range[96];
    long long n;

    switch (s->type) {
    case FL_SET_STRING: {
        char **slot = (char **)field;
        if (strcmp(name, "FLEETD_MASTER_KEY") == 0 && value[0]) {
            size_t len = strlen(value);
            bool hex = len == 64;
            for (size_t i = 0; hex && i < len; i++)
                hex = isxdigit((unsigned char)value[i]);
            if (!hex)
                return fail(err, errlen, "%s: must be 64 hex characters (32 bytes), got %zu characters", name, len);
        }
        /* a bad template would only show as a map without tiles: refuse it at start instead */
        if (strcmp(name, "FLEETD_MAP_TILES") == 0 && value[0] &&
            (!(strncmp(value, "https://", 8) == 0 || strncmp(value, "http://", 7) == 0 || value[0] == '/') ||
             !strstr(value, "{z}") || !strstr(value, "{x}") || !strstr(value, "{y}") || strpbrk(value, "\"'<> \t\r\n\\")))
            return fail(err, errlen,
                        "%s: \"%.200s\" is not a tile URL template (http(s)://host/{z}/{x}/{y}.png or /path/{z}/{x}/{y}.png)", name,
                        value);
        char *copy = fl_strdup(value);
        if (copy == NULL)
            return fail(err, errlen, "%s: out of memory", name);
        fl_free(*slot);
        *slot = copy;
        return FL_OK;
    }
    case FL_SET_BOOL: {
        static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(bool *)field = strcasecmp(value, yes[i]) == 0;
                return FL_OK;
            }
        }
        return fail(err, errlen, "%s: \"%s\" is not a boolean (expected true or false)", name, value);
    }
    case FL_SET_ENUM: {
        int index = choice_index(s->choices, value);
        if (index < 0)
            return fail(err, errlen, "%s: \"%s\" is not one of %s", name, value, s->choices);
        *(int *)field = index;
        return FL_OK;
    }
    case FL_SET_INT:
    case FL_SET_BYTES:
    case FL_SET_DURATION:
    case FL_SET_SECONDS: {
        char lo[32], hi[32];
        format_number(s->min, s->type, lo, sizeof(lo));
        format_number(s->max, s->type, hi, sizeof(hi));
        snprintf(range, sizeof(range), "%s..%s", lo, hi);
        const unit_t *units = s->type == FL_SET_BYTES      ? byte_units
                              : s->type == FL_SET_DURATION ? duration_units
                              : s->type == FL_SET_SECONDS  ? seconds_units
                                                           : (const unit_t[]){{"", 1}, {NULL, 0}};
        if (!parse_number(value, units, &n)) {
            const char *what = s->type == FL_SET_BYTES      ? "a size (e.g. 1048576, 64KiB, 1MiB)"
                               : s->type == FL_SET_DURATION ? "a duration (e.g. 500ms, 10s, 2m; a bare number is ms)"
                               : s->type == FL_SET_SECONDS  ? "a duration (e.g. 90s, 30m, 12h, 90d; a bare number is seconds)"
                                                            : "a whole number";
            return fail(err, errlen, "%s: \"%s\" is not %s; allowed range %s", name, value, what, range);
        }
        if (n < s->min || n > s->max)
            return fail(err, errlen, "%s: %s is out of range; allowed range %s", name, value, range);
        if (s->type == FL_SET_BYTES &&
            (s->offset == offsetof(fl_config_t, max_body_bytes) || s->offset == offsetof(fl_config_t, jobs_max_pending_bytes)))
            *(long *)field = (long)n;
        else
            *(int *)field = (int)n;
        return FL_OK;
    }
    }
    return FL_EINVAL;
}

static int load_file(fl_config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return fail(err, errlen, "FLEETD_CONFIG: cannot open %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = FL_OK;
    while (rc == FL_OK && fgets(line, sizeof(line), f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        size_t len = strlen(p);
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            p[--len] = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            rc = fail(err, errlen, "FLEETD_CONFIG: %s:%d: expected NAME=VALUE", path, lineno);
            break;
        }
        *eq = '\0';
        for (char *k = eq - 1; k >= p && isspace((unsigned char)*k); k--)
            *k = '\0';
        char *value = eq + 1;
        while (isspace((unsigned char)*value))
            value++;
        len = strlen(value);
        if (len >= 2 && (value[0] == '"' || value[0] == '\'') && value[len - 1] == value[0]) {
            value[len - 1] = '\0';
            value++;
        }
        char inner[512];
        rc = fl_config_set(cfg, p, value, inner, sizeof(inner));
        if (rc != FL_OK)
            fail(err, errlen, "%s (in %s line %d)", inner, path, lineno);
    }
    fclose(f);
    return rc;
}

int fl_config_load(fl_config_t *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (const fl_setting_t *s = settings; s->name; s++) {
        if (s->def == NULL)
            continue;
        int rc = fl_config_set(cfg, s->name, s->def, err, errlen);
        fl_assert(rc == FL_OK); /* a bad default is a bug in the table */
    }
    const char *file = getenv("FLEETD_CONFIG");
    if (file && *file) {
        int rc = load_file(cfg, file, err, errlen);
        if (rc != FL_OK)
            return rc;
    }
    for (const fl_setting_t *s = settings; s->name; s++) {
        const char *value = getenv(s->name);
        if (value == NULL)
            continue;
        int rc = fl_config_set(cfg, s->name, value, err, errlen);
        if (rc != FL_OK)
            return rc;
    }
    return FL_OK;
}

void fl_config_free(fl_config_t *cfg)
{
    for (const fl_setting_t *s = settings; s->name; s++) {
        if (s->type == FL_SET_STRING) {
            char **slot = (char **)((char *)cfg + s->offset);
            fl_free(*slot);
            *slot = NULL;
        }
    }
}

void fl_config_format(const fl_config_t *cfg, const fl_setting_t *s, char *out, size_t outlen)
{
    const char *field = (const char *)cfg + s->offset;
    char tmp[32];
    switch (s->type) {
    case FL_SET_STRING: {
        const char *v = *(char *const *)field;
        snprintf(out, outlen, "%s", v == NULL ? "" : s->secret && v[0] ? "(set)" : v);
        break;
    }
    case FL_SET_BOOL:
        snprintf(out, outlen, "%s", *(const bool *)field ? "true" : "false");
        break;
    case FL_SET_ENUM:
        snprintf(out, outlen, "%s", choice_name(s->choices, *(const int *)field, tmp, sizeof(tmp)));
        break;
    default: {
        bool is_long =
            s->offset == offsetof(fl_config_t, max_body_bytes) || s->offset == offsetof(fl_config_t, jobs_max_pending_bytes);
        long long n = is_long ? *(const long *)field : *(const int *)field;
        format_number(n, s->type, out, outlen);
    }
    }
}

void fl_config_markdown(void *file)
{
    FILE *f = file;
    static const char *type_names[] = {"string", "integer", "size", "duration", "boolean", "one of", "duration"};
    fputs("# fleetd configuration\n\n"
          "<!-- Generated by `fleetd config --markdown` from the settings table in lib/core/config.c;\n"
          "     test/integration/config_docs.test.mjs fails when this file and the table disagree. -->\n\n"
          "fleetd reads its settings from, later sources winning: the defaults below, the file named by\n"
          "`FLEETD_CONFIG` (lines of `NAME=VALUE`, `#` comments, the same format as a systemd\n"
          "`EnvironmentFile`), then the environment. `fleetd config` prints the values in effect\n"
          "(secrets shown as `(set)`).\n\n"
          "Sizes take `B`, `KiB`, `MiB`, `GiB` (or a bare number of bytes); durations take `ms`, `s`, `m`, `h`,\n"
          "`d` (a bare number is milliseconds, or seconds for the retention and job-keeping ages). A value that does not parse or "
          "is out of range stops fleetd\n"
          "with one line naming the setting, and exit status 2.\n\n"
          "| setting | type | default | range | meaning |\n"
          "|---|---|---|---|---|\n",
          f);
    for (const fl_setting_t *s = settings; s->name; s++) {
        char def[64] = "", lo[32], hi[32], range[80] = "";
        if (s->def)
            snprintf(def, sizeof(def), "`%s`", s->def[0] ? s->def : "\"\"");
        if (s->type == FL_SET_INT || s->type == FL_SET_BYTES || s->type == FL_SET_DURATION || s->type == FL_SET_SECONDS) {
            format_number(s->min, s->type, lo, sizeof(lo));
            format_number(s->max, s->type, hi, sizeof(hi));
            snprintf(range, sizeof(range), "%s .. %s", lo, hi);
        } else if (s->type == FL_SET_ENUM) {
            /* a bare | would split the Markdown table cell */
            size_t o = 0;
            for (const char *c = s->choices; *c && o + 3 < sizeof(range); c++) {
                if (*c == '|') {
                    range[o++] = ',';
                    range[o++] = ' ';
                } else {
                    range[o++] = *c;
                }
            }
            range[o] = '\0';
        }
        fprintf(f, "| `%s` | %s | %s | %s | %s |\n", s->name, type_names[s->type], def, range, s->help);
    }
}
