/* GET /metrics: Prometheus text exposition format (version 0.0.4), CONTRACT.md "Operations".
 * Who may read it is FLEETD_METRICS_ACCESS: loopback clients without a token (the default), an
 * admin token always, or anyone. Everything is read from counters kept in memory, except the job
 * queue's depth, which is one GROUP BY on the jobs table cached for JOBS_TTL_MS so that scrapes do
 * not load PostgreSQL. The metrics are listed in docs/operations.md ("Metrics"). */
#include "api_internal.h"
#include "http/ws.h"
#include "live.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define JOBS_TTL_MS   5000
#define JOBS_MAX_ROWS 256 /* queues x states kept; queue names are at most 64 characters */

static const char jobs_sql[] =
    "SELECT queue, state::text, count(*) FROM jobs GROUP BY queue, state ORDER BY queue, state LIMIT 256";

/* The ingest refusals, as lib/api/ingest.c names them (413 and 415 come from the HTTP layer). */
static const char *const ingest_reasons[] = {"invalid_json",      "invalid_payload", "invalid_signature", "timestamp_out_of_range",
                                             "fleet_not_allowed", "invalid_fix",     "rate_limited",      "unavailable"};

typedef struct {
    char queue[65];
    char state[16];
    long count;
} job_row_t;

/* The job counts last read, shared by every shard. */
static struct {
    pthread_mutex_t lock;
    int64_t read_at_ms; /* monotonic; 0: never */
    bool refreshing;    /* one query at a time: other scrapes meanwhile show the last counts */
    int nrows;
    job_row_t rows[JOBS_MAX_ROWS];
} jobs_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* ---- writing the exposition ---- */

static void family(fl_strbuf_t *b, const char *name, const char *type, const char *help)
{
    fl_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped. */
static void label_value(fl_strbuf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fl_strbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            fl_strbuf_str(b, "\\n");
        else
            fl_strbuf_add(b, s, 1);
    }
}

static void sample(fl_strbuf_t *b, const char *name, double v)
{
    fl_strbuf_printf(b, "%s %.17g\n", name, v);
}

static void gauge(fl_strbuf_t *b, const char *name, const char *help, double v)
{
    family(b, name, "gauge", help);
    sample(b, name, v);
}

static void counter(fl_strbuf_t *b, const char *name, const char *help, double v)
{
    family(b, name, "counter", help);
    sample(b, name, v);
}

/* ---- HTTP ---- */

typedef struct {
    fl_strbuf_t *b;
    bool durations; /* the histogram pass, else the request counts */
} http_pass_t;

static void route_label(fl_strbuf_t *b, const fl_http_route_stats_t *st)
{
    fl_strbuf_str(b, "route=\"");
    label_value(b, st->route ? st->route : "unmatched");
    fl_strbuf_str(b, "\"");
}

static void http_route(const fl_http_route_stats_t *st, void *arg)
{
    http_pass_t *pass = arg;
    fl_strbuf_t *b = pass->b;
    if (!pass->durations) {
        for (int i = 0; i < FL_HTTP_STAT_CODES; i++) {
            if (st->codes[i] == 0)
                continue;
            fl_strbuf_str(b, "fleetd_http_requests_total{");
            route_label(b, st);
            fl_strbuf_printf(b, ",code=\"%s\"} %llu\n", fl_http_stat_code(i), (unsigned long long)st->codes[i]);
        }
        return;
    }
    uint64_t count = st->buckets[FL_HTTP_LATENCY_BUCKETS];
    if (count == 0)
        return;
    for (int i = 0; i <= FL_HTTP_LATENCY_BUCKETS; i++) {
        fl_strbuf_str(b, "fleetd_http_request_duration_seconds_bucket{");
        route_label(b, st);
        if (i < FL_HTTP_LATENCY_BUCKETS)
            fl_strbuf_printf(b, ",le=\"%g\"} %llu\n", fl_http_latency_bounds[i], (unsigned long long)st->buckets[i]);
        else
            fl_strbuf_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)st->buckets[i]);
    }
    fl_strbuf_str(b, "fleetd_http_request_duration_seconds_sum{");
    route_label(b, st);
    fl_strbuf_printf(b, "} %.9f\n", st->sum_seconds);
    fl_strbuf_str(b, "fleetd_http_request_duration_seconds_count{");
    route_label(b, st);
    fl_strbuf_printf(b, "} %llu\n", (unsigned long long)count);
}

static void write_http(fl_strbuf_t *b, fl_http_req_t *req)
{
    fl_http_server_t *srv = fl_http_req_server(req);
    http_pass_t pass = {.b = b, .durations = false};
    family(b, "fleetd_http_requests_total", "counter",
           "HTTP requests answered, by route pattern (unmatched: no route took it) and status code (or class).");
    fl_http_server_stats(srv, http_route, &pass);
    pass.durations = true;
    family(b, "fleetd_http_request_duration_seconds", "histogram",
           "Time from a request's first byte to its answer being queued, by route pattern.");
    fl_http_server_stats(srv, http_route, &pass);
    gauge(b, "fleetd_http_connections", "Open HTTP connections, upgraded ones (WebSocket, event streams) included.",
          fl_http_server_connections(srv));
}

/* ---- ingest, live fan-out ---- */

static void write_ingest(fl_strbuf_t *b)
{
    family(b, "fleetd_ingest_batches_total", "counter", "Signed ingest batches answered 202, by result.");
    fl_strbuf_printf(b, "fleetd_ingest_batches_total{result=\"accepted\"} %ld\n", fl_api_ingest_count("accepted_batches"));
    fl_strbuf_printf(b, "fleetd_ingest_batches_total{result=\"duplicate\"} %ld\n", fl_api_ingest_count("duplicate_batches"));
    counter(b, "fleetd_ingest_fixes_total", "Fixes in accepted ingest batches.", (double)fl_api_ingest_count("accepted_fixes"));
    family(b, "fleetd_ingest_rejected_total", "counter", "Ingest requests refused, by the error code answered.");
    for (size_t i = 0; i < sizeof(ingest_reasons) / sizeof(ingest_reasons[0]); i++) {
        long n = fl_api_ingest_count(ingest_reasons[i]);
        fl_strbuf_printf(b, "fleetd_ingest_rejected_total{reason=\"%s\"} %ld\n", ingest_reasons[i], n < 0 ? 0 : n);
    }
}

static void write_live(fl_strbuf_t *b)
{
    fl_live_counts_t live;
    fl_live_counts(&live);
    gauge(b, "fleetd_websocket_connections", "Open WebSocket connections.", fl_ws_count());
    counter(b, "fleetd_live_frames_delivered_total", "Live frames handed to WebSocket and event-stream subscribers.",
            (double)live.delivered);
    counter(b, "fleetd_live_positions_coalesced_total",
            "Positions replaced by a newer one of the same vehicle before a slow subscriber was sent them.",
            (double)live.coalesced);
    counter(b, "fleetd_live_subscribers_closed_behind_total", "Live subscribers closed for staying too far behind.",
            (double)live.closed_behind);
    counter(b, "fleetd_live_subscriptions_lost_total", "Live subscriptions lost with a shard's pubsub actor.", (double)live.lost);
}

/* ---- the supervision tree ---- */

typedef struct {
    long trackers, mailbox_sum, mailbox_max;
} tree_sums_t;

static void walk_tree(const json_t *node, tree_sums_t *t)
{
    const char *id = json_string_value(json_object_get(node, "id"));
    const char *status = json_string_value(json_object_get(node, "status"));
    if (id && strncmp(id, "tracker:", 8) == 0 && status && strcmp(status, "running") == 0) {
        long depth = (long)json_integer_value(json_object_get(node, "mailbox"));
        t->trackers++;
        t->mailbox_sum += depth;
        if (depth > t->mailbox_max)
            t->mailbox_max = depth;
    }
    const json_t *kids = json_object_get(node, "children");
    size_t i;
    const json_t *kid;
    json_array_foreach(kids, i, kid) walk_tree(kid, t);
}

static void write_tree(fl_strbuf_t *b, fl_api_t *api)
{
    tree_sums_t t = {0};
    fl_actor_t *root = fl_api_root(api);
    json_t *tree = root ? fl_tree_json(root) : NULL;
    if (root)
        fl_actor_unref(root);
    if (tree)
        walk_tree(tree, &t);
    json_decref(tree);
    gauge(b, "fleetd_tree_up", "1 while the supervision tree runs.", tree ? 1 : 0);
    counter(b, "fleetd_supervisor_restarts_total", "Restarts of children by their supervisors since fleetd started.",
            (double)fl_tree_restarts_total());
    gauge(b, "fleetd_trackers", "Fleet trackers running.", (double)t.trackers);
    gauge(b, "fleetd_tracker_mailbox_messages", "Messages waiting in the trackers' mailboxes, summed.", (double)t.mailbox_sum);
    gauge(b, "fleetd_tracker_mailbox_messages_max", "Messages waiting in the fullest tracker mailbox.", (double)t.mailbox_max);
}

/* ---- database and jobs ---- */

static void write_db(fl_strbuf_t *b, fl_api_t *api)
{
    int up = 0, total = api->deps.db ? fl_db_service_connections(api->deps.db, &up) : 0;
    family(b, "fleetd_db_connections", "gauge", "PostgreSQL connections of the database service, by state.");
    fl_strbuf_printf(b, "fleetd_db_connections{state=\"up\"} %d\nfleetd_db_connections{state=\"down\"} %d\n", up, total - up);
    fl_db_failures_t f;
    fl_db_failure_counts(&f);
    family(b, "fleetd_db_query_failures_total", "counter",
           "Queries and transactions that failed: unavailable (not connected, or the connection dropped), refused "
           "(PostgreSQL answered an error), timeout.");
    fl_strbuf_printf(b,
                     "fleetd_db_query_failures_total{reason=\"unavailable\"} %ld\n"
                     "fleetd_db_query_failures_total{reason=\"refused\"} %ld\n"
                     "fleetd_db_query_failures_total{reason=\"timeout\"} %ld\n",
                     f.unavailable, f.refused, f.timeout);
}

static void write_jobs(fl_strbuf_t *b)
{
    pthread_mutex_lock(&jobs_cache.lock);
    if (jobs_cache.read_at_ms == 0) {
        pthread_mutex_unlock(&jobs_cache.lock);
        return; /* never read: say nothing rather than zeros */
    }
    family(b, "fleetd_jobs", "gauge",
           "Jobs in the queue table by queue and state (retryable: failed, will retry; discarded: failed for good); read "
           "from the database at most every 5 s.");
    for (int i = 0; i < jobs_cache.nrows; i++)
        fl_strbuf_printf(b, "fleetd_jobs{queue=\"%s\",state=\"%s\"} %ld\n", jobs_cache.rows[i].queue, jobs_cache.rows[i].state,
                         jobs_cache.rows[i].count);
    double age = (double)(fl_now_mono_ms() - jobs_cache.read_at_ms) / 1000.0;
    pthread_mutex_unlock(&jobs_cache.lock);
    gauge(b, "fleetd_jobs_read_age_seconds", "How old the job counts shown are.", age);
}

/* ---- the process ---- */

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static long long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %lld kB", &kib) == 1)
            break;
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

/* Seconds since the epoch the process started: boot time (/proc/stat btime) plus its start in
 * clock ticks after boot (field 22 of /proc/self/stat). */
static double start_time(void)
{
    static _Atomic double cached; /* shards may scrape at once: each computes the same value */
    double known = atomic_load(&cached);
    if (known > 0)
        return known;
    long long btime = -1;
    unsigned long long ticks = 0;
    char line[1024];
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %lld", &btime) == 1)
                break;
        fclose(f);
    }
    f = fopen("/proc/self/stat", "r");
    bool ok = false;
    if (f) {
        if (fgets(line, sizeof(line), f)) {
            const char *p = strrchr(line, ')'); /* the command name may hold spaces */
            /* after ") ": state is field 3; starttime is field 22, 19 fields further */
            ok =
                p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu", &ticks) == 1;
        }
        fclose(f);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (btime < 0 || !ok || hz <= 0)
        return -1;
    known = (double)btime + (double)ticks / (double)hz;
    atomic_store(&cached, known);
    return known;
}

static void write_process(fl_strbuf_t *b)
{
    family(b, "fleetd_build_info", "gauge", "Always 1; the version of the running fleetd is its label.");
    fl_strbuf_printf(b, "fleetd_build_info{version=\"%s\"} 1\n", FLEETD_VERSION);
    double started = start_time();
    if (started > 0)
        gauge(b, "fleetd_process_start_time_seconds", "When the process started, in seconds since the Unix epoch.", started);
    long long rss = rss_bytes();
    if (rss >= 0)
        gauge(b, "fleetd_process_resident_memory_bytes", "Resident memory of the process.", (double)rss);
    long fds = count_fds();
    if (fds >= 0)
        gauge(b, "fleetd_process_open_fds", "Open file descriptors.", (double)fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge(b, "fleetd_process_max_fds", "The open file descriptor limit.", (double)rl.rlim_cur);
}

/* ---- the route ---- */

static void respond_metrics(fl_http_req_t *req, fl_api_t *api)
{
    fl_strbuf_t b = {0};
    write_process(&b);
    write_http(&b, req);
    write_ingest(&b);
    write_live(&b);
    write_tree(&b, api);
    write_db(&b, api);
    write_jobs(&b);
    gauge(&b, "fleetd_draining", "1 once fleetd is shutting down.", atomic_load(&api->draining) ? 1 : 0);
    if (b.failed) {
        fl_strbuf_free(&b);
        fl_http_respond_error(req, 503, "unavailable", "out of memory while writing the metrics");
        return;
    }
    fl_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
    fl_strbuf_free(&b);
}

typedef struct {
    fl_http_req_t *req;
    fl_api_t *api;
} jobs_read_t;

static void jobs_read(const PGresult *res, int status, const char *err, void *arg)
{
    jobs_read_t *r = arg;
    pthread_mutex_lock(&jobs_cache.lock);
    jobs_cache.refreshing = false;
    if (status == FL_OK && PQnfields(res) == 3) {
        int n = PQntuples(res);
        jobs_cache.nrows = 0;
        for (int i = 0; i < n && i < JOBS_MAX_ROWS; i++) {
            job_row_t *row = &jobs_cache.rows[jobs_cache.nrows++];
            snprintf(row->queue, sizeof(row->queue), "%s", PQgetvalue(res, i, 0));
            snprintf(row->state, sizeof(row->state), "%s", PQgetvalue(res, i, 1));
            row->count = atol(PQgetvalue(res, i, 2));
        }
        jobs_cache.read_at_ms = fl_now_mono_ms();
    }
    pthread_mutex_unlock(&jobs_cache.lock);
    if (status != FL_OK && status != FL_ECLOSED)
        fl_log(FL_LOG_WARN, "metrics.jobs_unread", FL_MSG("cannot count the jobs for /metrics; showing the last counts"),
               FL_STR("error", err ? err : fl_strerror(status)), FL_RID(fl_http_req_id(r->req)));
    respond_metrics(r->req, r->api);
    fl_free(r);
}

/* Answers at once, or after refreshing the job counts when they are older than JOBS_TTL_MS. */
static void serve(fl_http_req_t *req, fl_api_t *api)
{
    bool refresh = false;
    fl_db_t *db = api->deps.db ? fl_db_service_get(api->deps.db, fl_shard_index(fl_http_req_shard(req))) : NULL;
    if (db && fl_db_is_up(db)) {
        pthread_mutex_lock(&jobs_cache.lock);
        if (!jobs_cache.refreshing && (jobs_cache.read_at_ms == 0 || fl_now_mono_ms() - jobs_cache.read_at_ms >= JOBS_TTL_MS))
            refresh = jobs_cache.refreshing = true;
        pthread_mutex_unlock(&jobs_cache.lock);
    }
    jobs_read_t *r = refresh ? fl_malloc(sizeof(*r)) : NULL;
    if (r) {
        *r = (jobs_read_t){.req = req, .api = api};
        if (fl_db_query(db, jobs_sql, 0, NULL, jobs_read, r) == FL_OK)
            return;
        fl_free(r);
    }
    if (refresh) {
        pthread_mutex_lock(&jobs_cache.lock);
        jobs_cache.refreshing = false;
        pthread_mutex_unlock(&jobs_cache.lock);
    }
    respond_metrics(req, api);
}

static void metrics_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    (void)token;
    serve(req, arg);
}

static void get_metrics(fl_http_req_t *req, void *arg)
{
    fl_api_t *api = arg;
    int access = api->deps.cfg ? api->deps.cfg->metrics_access : FL_METRICS_LOOPBACK;
    if (access == FL_METRICS_PUBLIC || (access == FL_METRICS_LOOPBACK && fl_http_req_peer_is_loopback(req)))
        serve(req, api);
    else
        fl_api_authorize_admin(api, req, metrics_authorized, api);
}

int fl_api_metrics_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/metrics", get_metrics, api, 0);
}
