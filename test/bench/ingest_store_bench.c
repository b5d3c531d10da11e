/*
 * ingest_store_bench: how fast the job queue makes ingest batches durable, with the real thing
 * (fl_runtime_new(2), the db service, fl_jobs_new with fleetd serve's commit settings,
 * fl_jobs_enqueue from both shards) against a real PostgreSQL.
 *
 * A batch is what one accepted ingest request becomes: one audit job whose args are built with
 * fl_audit_args from a signed request (100 fixes of compact JSON, ~17 KB, a real Standard Webhooks
 * HMAC-SHA256 signature) with its unique key "ingest:{partner}:{webhook_id}" held forever, as
 * lib/ingest will enqueue it. Every batch's fixes are distinct (vehicle, recorded_at) pairs.
 *
 *   1. closed loop: K batches in flight (half from each shard; each acknowledgement sends the next
 *      one), for each K of --inflight: durable fixes/s and acknowledgement latency; the best K is
 *      the maximum sustained rate;
 *   2. open loop: batches arrive on a fixed schedule (a 1 ms timer on each shard issues every batch
 *      whose arrival time has come) at --rate (default half the maximum) for --open seconds:
 *      acknowledgement latency p50/p99/p99.9 from fl_jobs_enqueue to its callback with FL_OK, and
 *      from the scheduled arrival (which also counts any delay in issuing it);
 *   3. the committer's flushes per phase, read back from the jobs table (rows of one transaction
 *      share xmin): jobs per flush;
 *   4. the audit worker: a node with fl_audit_register started on the backlog, time until every
 *      job is completed: fixes/s stored in positions;
 *   5. --csv=FILE: the same fixes (every batch acknowledged FL_OK) as CSV for positions, for
 *      test/bench/ingest-store.sh to time `psql \copy` into a fresh positions table of a second
 *      database (--db-prefix NAME: NAME_queue and NAME_copy, both migrated and given the same
 *      fleets, partners and vehicles; the script drops them).
 *
 * CPU is accounted per window: this process (shards, committer, libpq), PostgreSQL's processes
 * (every process named postgres), everything else, idle and iowait, as shares of the machine.
 *
 * A benchmark, not a test: target ingest_store_bench, never registered with ctest. It prints a
 * report for people and `RESULT key value unit` lines for the script's medians.
 */
#include "db/db.h"
#include "jobs/jobs.h"
#include "runtime/runtime.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE "unknown"
#endif

/* ---- settings ---------------------------------------------------------------------------------- */

static double opt_window = 5.0;                       /* seconds measured per closed-loop K */
static double opt_warmup = 2.0;                       /* seconds before each measured window */
static const char *opt_inflight = "16,32,64,128,256"; /* closed loop: batches in flight, total over both shards */
static double opt_open = 10.0;                        /* open loop: seconds measured */
static double opt_rate = 0;                           /* open loop: batches/s; 0: half the best closed-loop rate */
static int opt_fixes = 100;                           /* fixes per batch (= vehicles per fleet) */
static int opt_fleets = 10;
static int opt_partners = 4;
static int opt_commit_interval_ms = 5; /* fleetd serve's defaults (FLEETD_JOBS_COMMIT_INTERVAL, _MAX) */
static int opt_commit_max = 500;
static bool opt_audit = true;
static bool opt_profile = false; /* pg_stat_statements and commit timestamps, when the cluster has them */
static double opt_drain_timeout = 900;
static const char *opt_csv = NULL;
static const char *opt_prefix = NULL;
static const char *opt_label = "";

#define MAX_BATCHES (8L << 20)      /* per run: the acknowledged-batch map */
#define T0_MS       1767225600000LL /* 2026-01-01T00:00:00Z: the first round of fixes */

__attribute__((format(printf, 1, 2))) static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ingest_store_bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double now_s(void)
{
    return (double)fl_now_mono_ns() / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define WAIT_UNTIL(cond, timeout_s)                                                                                                \
    ({                                                                                                                             \
        double deadline_ = now_s() + (timeout_s);                                                                                  \
        while (!(cond) && now_s() < deadline_)                                                                                     \
            sleep_s(0.002);                                                                                                        \
        (bool)(cond);                                                                                                              \
    })

static void result(const char *key, double value, const char *unit)
{
    printf("RESULT %s %.10g %s\n", key, value, unit);
}

/* ---- the machine, and where its CPU went during a window ---------------------------------------- */

static void read_line(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (f && fgets(out, (int)n, f))
        out[strcspn(out, "\n")] = '\0';
    if (f)
        fclose(f);
}

static void print_machine(void)
{
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                snprintf(model, sizeof(model), "%s", colon + 2);
                model[strcspn(model, "\n")] = '\0';
            }
            break;
        }
    }
    if (f)
        fclose(f);
    struct utsname u;
    uname(&u);
    char load[128];
    read_line("/proc/loadavg", load, sizeof(load));
    printf("machine   : %ld online CPUs, %s, %s %s\n", sysconf(_SC_NPROCESSORS_ONLN), model, u.sysname, u.release);
    printf("software  : libevent %s, libpq %d, build %s%s\n", event_get_version(), PQlibVersion(), BENCH_BUILD_TYPE,
#ifdef FLEETD_SANITIZED
           " WITH SANITIZERS (figures not representative)"
#else
           ""
#endif
    );
    printf("loadavg   : %s (at start)\n", load);
    printf("NOTE      : this program (2 shards, the committer, libpq) and PostgreSQL share these CPUs\n");
}

typedef struct {
    double wall, self_cpu, pg_cpu;
    unsigned long long busy, iowait, steal, total; /* /proc/stat ticks, all CPUs */
} sample_t;

/* The postmaster of the cluster under test: its processes are counted as PostgreSQL's (other
 * clusters on the machine count as other processes). */
static long g_postmaster;

static long ppid_of(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *close = strrchr(buf, ')');
    long ppid = -1;
    if (close == NULL || sscanf(close + 2, "%*c %ld", &ppid) != 1)
        return -1;
    return ppid;
}

/* CPU seconds of the postmaster and its children (backends, checkpointer, WAL writer, ...). */
static double postgres_cpu_s(void)
{
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    double hz = (double)sysconf(_SC_CLK_TCK), total = 0;
    struct dirent *e;
    char path[300], buf[1024];
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (open == NULL || close == NULL || close - open - 1 != 8 || strncmp(open + 1, "postgres", 8) != 0)
            continue;
        /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
        unsigned long long ut = 0, st = 0;
        long ppid = 0;
        if (sscanf(close + 2, "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ppid, &ut, &st) == 3 &&
            (ppid == g_postmaster || atol(e->d_name) == g_postmaster))
            total += (double)(ut + st) / hz;
    }
    closedir(d);
    return total;
}

static void take_sample(sample_t *s)
{
    s->wall = now_s();
    s->self_cpu = cpu_s();
    s->pg_cpu = postgres_cpu_s();
    s->busy = s->iowait = s->steal = s->total = 0;
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[10] = {0};
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                    &v[7], &v[8], &v[9]) >= 8) {
        /* user nice system idle iowait irq softirq steal (guest is inside user) */
        s->busy = v[0] + v[1] + v[2] + v[5] + v[6];
        s->iowait = v[4];
        s->steal = v[7];
        s->total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    }
    if (f)
        fclose(f);
}

typedef struct {
    double wall, self_cpu, pg_cpu;                         /* seconds */
    double self_share, pg_share, others_share, idle_share; /* of the machine's capacity */
    double iowait_share, steal_share;
    bool clean;
} window_t;

static int unclean_windows;

/* A window where other processes took over 10% of the machine or steal over 5% is NOT CLEAN. */
static window_t window_of(const sample_t *a, const sample_t *b)
{
    window_t w = {.wall = b->wall - a->wall, .self_cpu = b->self_cpu - a->self_cpu, .pg_cpu = b->pg_cpu - a->pg_cpu};
    double hz = (double)sysconf(_SC_CLK_TCK);
    double ticks = (double)(b->total - a->total);
    double cap = ticks > 0 ? ticks / hz : w.wall * (double)sysconf(_SC_NPROCESSORS_ONLN);
    double busy = (double)(b->busy - a->busy) / hz;
    if (cap <= 0)
        return w;
    w.self_share = w.self_cpu / cap;
    w.pg_share = w.pg_cpu / cap;
    w.others_share = (busy - w.self_cpu - w.pg_cpu) / cap;
    if (w.others_share < 0)
        w.others_share = 0;
    /* /proc/stat is sampled at the tick and misses short bursts between ticks (a 1 ms timer, a
     * backend woken per flush); the processes' own times are exact: busy is at least theirs */
    if (busy < w.self_cpu + w.pg_cpu)
        busy = w.self_cpu + w.pg_cpu;
    w.idle_share = 1 - busy / cap - (double)(b->iowait - a->iowait) / hz / cap - (double)(b->steal - a->steal) / hz / cap;
    if (w.idle_share < 0)
        w.idle_share = 0;
    w.iowait_share = (double)(b->iowait - a->iowait) / hz / cap;
    w.steal_share = (double)(b->steal - a->steal) / hz / cap;
    w.clean = w.others_share <= 0.10 && w.steal_share <= 0.05;
    return w;
}

/* per_unit: batches (or fixes) done in the window, for CPU per unit. */
static void print_window(const char *key, const window_t *w, double units, const char *unit)
{
    printf("    CPU in %.2f s: this process %.0f%%, PostgreSQL %.0f%%, other processes %.0f%%, idle %.0f%%, iowait %.0f%%, steal "
           "%.0f%% of the machine%s\n",
           w->wall, w->self_share * 100, w->pg_share * 100, w->others_share * 100, w->idle_share * 100, w->iowait_share * 100,
           w->steal_share * 100, w->clean ? "" : "  ** NOT CLEAN **");
    if (units > 0)
        printf("    CPU per %s: this process %.0f us, PostgreSQL %.0f us\n", unit, w->self_cpu * 1e6 / units,
               w->pg_cpu * 1e6 / units);
    char k[128];
    const struct {
        const char *name;
        double v;
    } f[] = {{"self_pct", w->self_share * 100},
             {"pg_pct", w->pg_share * 100},
             {"others_pct", w->others_share * 100},
             {"idle_pct", w->idle_share * 100},
             {"iowait_pct", w->iowait_share * 100},
             {"steal_pct", w->steal_share * 100},
             {"self_cpu_us_per_unit", units > 0 ? w->self_cpu * 1e6 / units : 0},
             {"pg_cpu_us_per_unit", units > 0 ? w->pg_cpu * 1e6 / units : 0}};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        snprintf(k, sizeof(k), "%s.%s", key, f[i].name);
        result(k, f[i].v, strstr(f[i].name, "pct") ? "%" : "us");
    }
    if (!w->clean)
        unclean_windows++;
}

/* ---- latency histogram: log-linear, 64 linear buckets per power of two (under 1.6% error) ------- */

#define HIST_SUB     64
#define HIST_BUCKETS ((63 - 5) * HIST_SUB)

typedef struct {
    uint64_t n, max;
    uint64_t b[HIST_BUCKETS];
} hist_t;

static void hist_add(hist_t *h, int64_t v)
{
    uint64_t x = v > 0 ? (uint64_t)v : 0;
    int idx;
    if (x < 2 * HIST_SUB) {
        idx = (int)x;
    } else {
        int msb = 63 - __builtin_clzll(x);
        idx = (msb - 5) * HIST_SUB + (int)((x >> (msb - 6)) - HIST_SUB);
    }
    h->b[idx]++;
    h->n++;
    if (x > h->max)
        h->max = x;
}

static void hist_merge(hist_t *into, const hist_t *from)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->n += from->n;
    if (from->max > into->max)
        into->max = from->max;
}

/* The value at quantile q (the middle of its bucket), in ns. */
static double hist_quantile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            if (i < 2 * HIST_SUB)
                return i;
            int msb = i / HIST_SUB + 5;
            double low = (double)((uint64_t)(HIST_SUB + i % HIST_SUB) << (msb - 6));
            double width = (double)(1ull << (msb - 6));
            double mid = low + width / 2;
            return mid < (double)h->max ? mid : (double)h->max;
        }
    }
    return (double)h->max;
}

static void print_hist(const char *label, const char *key, const hist_t *h)
{
    printf("    %-40s n=%-7" PRIu64 " p50 %7.2f ms   p99 %7.2f ms   p99.9 %7.2f ms   max %7.2f ms\n", label, h->n,
           hist_quantile(h, 0.50) / 1e6, hist_quantile(h, 0.99) / 1e6, hist_quantile(h, 0.999) / 1e6, (double)h->max / 1e6);
    char k[128];
    const char *names[] = {"p50", "p99", "p999", "max"};
    const double qs[] = {0.50, 0.99, 0.999, -1};
    for (int i = 0; i < 4; i++) {
        snprintf(k, sizeof(k), "%s.%s", key, names[i]);
        result(k, (qs[i] < 0 ? (double)h->max : hist_quantile(h, qs[i])) / 1e6, "ms");
    }
}

/* ---- the batches: deterministic from their index, the same in JSON and in CSV -------------------- *
 * Batch i comes from fleet f = i % fleets (partner f % partners), round r = i / fleets, and holds one
 * fix of each of the fleet's vehicles truck-FF-VVV, recorded at T0 + r s + 7 ms * v: every
 * (vehicle, recorded_at) is new. */

typedef struct {
    int fleet, vehicle;
    int64_t recorded_ms;
    int lat_frac, lng_frac; /* millionths of a degree above 59 N, 18 E */
    int speed_d, heading_d, accuracy_d;
} fix_t;

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void fix_of(long i, int j, fix_t *f)
{
    uint64_t h = mix64((uint64_t)i * 1024 + (uint64_t)j);
    f->fleet = (int)(i % opt_fleets);
    f->vehicle = j;
    f->recorded_ms = T0_MS + (i / opt_fleets) * 1000 + (int64_t)j * 7;
    f->lat_frac = (int)((f->fleet * 9973 + h % 100000) % 1000000);
    f->lng_frac = (int)((h >> 20) % 1000000);
    f->speed_d = (int)((h >> 40) % 1300);
    f->heading_d = (int)((h >> 12) % 3600);
    f->accuracy_d = 20 + (int)((h >> 52) % 150);
}

static int64_t received_us_of(long i)
{
    return (T0_MS + (i / opt_fleets) * 1000 + 950) * 1000 + (i % opt_fleets) * 10;
}

static int64_t webhook_ts_of(long i)
{
    return T0_MS / 1000 + i / opt_fleets;
}

static void partner_of(long i, char out[32])
{
    snprintf(out, 32, "partner-%d", (int)(i % opt_fleets) % opt_partners);
}

static void fleet_id(int f, char out[32])
{
    snprintf(out, 32, "harbor-%02d", f);
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *put_int(char *p, long v)
{
    char tmp[24];
    int n = 0;
    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_fixed(char *p, long v, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        p[k] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/* tenths: 427 -> "42.7" */
static char *put_tenths(char *p, int d)
{
    p = put_int(p, d / 10);
    *p++ = '.';
    *p++ = (char)('0' + d % 10);
    return p;
}

static char *put_time(char *p, int64_t ms)
{
    char t[32];
    fl_time_format_ms(ms, t); /* 2026-01-01T00:00:05.042Z */
    return put(p, t);
}

static char *put_vehicle(char *p, const fix_t *f)
{
    p = put(p, "truck-");
    p = put_fixed(p, f->fleet, 2);
    *p++ = '-';
    return put_fixed(p, f->vehicle, 3);
}

/* Room for one batch's body. */
static size_t body_cap(void)
{
    return 64 + (size_t)opt_fixes * 256;
}

/* The request body of batch i, compact JSON as a partner sends it; returns its length. */
static size_t body_of(long i, char *out)
{
    char *p = put(out, "{\"fixes\":[");
    for (int j = 0; j < opt_fixes; j++) {
        fix_t f;
        fix_of(i, j, &f);
        if (j)
            *p++ = ',';
        p = put(p, "{\"fleet_id\":\"harbor-");
        p = put_fixed(p, f.fleet, 2);
        p = put(p, "\",\"vehicle_id\":\"");
        p = put_vehicle(p, &f);
        p = put(p, "\",\"recorded_at\":\"");
        p = put_time(p, f.recorded_ms);
        p = put(p, "\",\"lat\":59.");
        p = put_fixed(p, f.lat_frac, 6);
        p = put(p, ",\"lng\":18.");
        p = put_fixed(p, f.lng_frac, 6);
        p = put(p, ",\"speed_kmh\":");
        p = put_tenths(p, f.speed_d);
        p = put(p, ",\"heading_deg\":");
        p = put_tenths(p, f.heading_d);
        p = put(p, ",\"accuracy_m\":");
        p = put_tenths(p, f.accuracy_d);
        *p++ = '}';
    }
    p = put(p, "]}");
    *p = '\0';
    return (size_t)(p - out);
}

/* One CSV line per fix of batch i, in the column order of write_csv's header. */
static void csv_of(long i, FILE *out, char *line)
{
    char received[40], ms[32];
    int64_t rus = received_us_of(i);
    fl_time_format_ms(rus / 1000, ms);
    snprintf(received, sizeof(received), "%.19s.%06lldZ", ms, (long long)(rus % 1000000));
    for (int j = 0; j < opt_fixes; j++) {
        fix_t f;
        fix_of(i, j, &f);
        char *p = put_vehicle(line, &f);
        *p++ = ',';
        p = put_time(p, f.recorded_ms);
        p = put(p, ",harbor-");
        p = put_fixed(p, f.fleet, 2);
        p = put(p, ",59.");
        p = put_fixed(p, f.lat_frac, 6);
        p = put(p, ",18.");
        p = put_fixed(p, f.lng_frac, 6);
        *p++ = ',';
        p = put(p, received);
        *p++ = ',';
        p = put_tenths(p, f.speed_d);
        *p++ = ',';
        p = put_tenths(p, f.heading_d);
        *p++ = ',';
        p = put_tenths(p, f.accuracy_d);
        *p++ = ',';
        p = put_int(p, i + 1);
        *p++ = '\n';
        fwrite(line, 1, (size_t)(p - line), out);
    }
}

/* ---- signing (Standard Webhooks: v1,base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}"))) ----- */

static unsigned char g_secret[32];

static void sign(const char *webhook_id, int64_t ts, const char *body, size_t len, char out[128])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char prefix[128];
    int n = snprintf(prefix, sizeof(prefix), "%s.%lld.", webhook_id, (long long)ts);
    crypto_auth_hmacsha256_init(&st, g_secret, sizeof(g_secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)prefix, (unsigned long long)n);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    memcpy(out, "v1,", 3);
    sodium_bin2base64(out + 3, 125, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
}

/* ---- load generation on the shards ---------------------------------------------------------------- */

enum { MODE_STOP = 0, MODE_CLOSED = 1, MODE_OPEN = 2 };

static fl_runtime_t *rt;
static fl_jobs_t *g_jobs;
static atomic_int g_mode;
static atomic_bool g_recording;  /* closed loop: acknowledgements counted and timed */
static atomic_long g_inflight;   /* enqueued and not yet acknowledged, plus retries waiting */
static atomic_long g_next;       /* the next batch index */
static atomic_uchar *g_ok;       /* [batch]: acknowledged FL_OK, not a duplicate */
static char g_tag[16];           /* the phase, in each webhook-id: msg_TAG_INDEX */
static atomic_long g_status[16]; /* acknowledgements by -status (0: FL_OK) */
static atomic_long g_refused;    /* fl_jobs_enqueue's own errors */
static atomic_long g_dups;
static atomic_long g_args_bytes, g_body_bytes, g_built;

typedef struct lane {
    int index;
    fl_shard_t *shard;
    char *body;
    hist_t *lat_call, *lat_sched; /* the phase's, written on this lane's shard only */
    atomic_long win_ok;           /* FL_OK acknowledgements counted in the phase's window */
    /* open loop */
    struct event *tick;
    int64_t start_ns, end_ns, rec_from_ns, rec_to_ns;
    double rate; /* batches/s from this lane */
    long issued;
    atomic_long missed; /* arrivals in the window refused at once */
    atomic_int done;
} lane_t;

static lane_t lanes[2];

typedef struct {
    lane_t *lane;
    long i;
    int64_t t_call, t_sched; /* ns; t_sched 0: closed loop */
    int record;              /* -1: decide at the acknowledgement (closed loop); 0/1: decided at arrival */
} slot_t;

static void closed_issue(lane_t *l);

static void on_ack(int status, int64_t job_id, bool duplicate, void *arg)
{
    (void)job_id;
    slot_t *s = arg;
    lane_t *l = s->lane;
    int64_t now = fl_now_mono_ns();
    if (status == FL_OK && !duplicate)
        atomic_store(&g_ok[s->i], 1);
    if (duplicate)
        atomic_fetch_add(&g_dups, 1);
    atomic_fetch_add(&g_status[status <= 0 && status > -16 ? -status : 15], 1);
    bool record = s->record < 0 ? atomic_load(&g_recording) : s->record == 1;
    if (record && status == FL_OK) {
        hist_add(l->lat_call, now - s->t_call);
        if (s->t_sched)
            hist_add(l->lat_sched, now - s->t_sched);
        atomic_fetch_add(&l->win_ok, 1);
    }
    free(s);
    if (atomic_load(&g_mode) == MODE_CLOSED)
        closed_issue(l); /* takes over this one's place in g_inflight */
    else
        atomic_fetch_sub(&g_inflight, 1);
}

/* Builds batch i's request and enqueues it; on FL_OK its acknowledgement will come. */
static int enqueue_one(lane_t *l, int64_t t_sched, int record)
{
    long i = atomic_fetch_add(&g_next, 1);
    if (i >= MAX_BATCHES)
        return FL_EFULL;
    char partner[32], fleet[32], wid[64], sig[128];
    partner_of(i, partner);
    fleet_id((int)(i % opt_fleets), fleet);
    snprintf(wid, sizeof(wid), "msg_%s_%ld", g_tag, i);
    size_t blen = body_of(i, l->body);
    int64_t ts = webhook_ts_of(i);
    sign(wid, ts, l->body, blen, sig);
    const char *fleets[] = {fleet};
    char *args = NULL;
    size_t alen = 0;
    if (fl_audit_args(partner, wid, ts, sig, received_us_of(i), fleets, 1, l->body, blen, &args, &alen) != FL_OK)
        die("fl_audit_args failed");
    char key[128];
    snprintf(key, sizeof(key), "ingest:%s:%s", partner, wid);
    fl_job_new_t job = {
        .queue = FL_AUDIT_QUEUE, .kind = FL_AUDIT_KIND, .args = args, .args_len = alen, .unique_key = key, .unique_period_s = -1};
    slot_t *s = malloc(sizeof(*s));
    if (s == NULL)
        die("out of memory");
    *s = (slot_t){.lane = l, .i = i, .t_sched = t_sched, .record = record};
    s->t_call = fl_now_mono_ns();
    int rc = fl_jobs_enqueue(g_jobs, &job, on_ack, s);
    fl_free(args);
    atomic_fetch_add(&g_built, 1);
    atomic_fetch_add(&g_args_bytes, (long)alen);
    atomic_fetch_add(&g_body_bytes, (long)blen);
    if (rc != FL_OK) {
        atomic_fetch_add(&g_refused, 1);
        free(s);
    }
    return rc;
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lane_t *l = arg;
    if (atomic_load(&g_mode) == MODE_CLOSED)
        closed_issue(l);
    else
        atomic_fetch_sub(&g_inflight, 1);
}

/* Holds one place in g_inflight: the enqueued job takes it, or a retry 1 ms later does. */
static void closed_issue(lane_t *l)
{
    if (enqueue_one(l, 0, -1) == FL_OK)
        return;
    struct timeval tv = {0, 1000};
    if (event_base_once(fl_shard_base(l->shard), -1, EV_TIMEOUT, on_retry, l, &tv) != 0)
        atomic_fetch_sub(&g_inflight, 1);
}

typedef struct {
    lane_t *lane;
    int n;
} kick_t;

static void kick(void *arg)
{
    kick_t *k = arg;
    for (int n = 0; n < k->n; n++)
        closed_issue(k->lane);
    free(k);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lane_t *l = arg;
    int64_t now = fl_now_mono_ns();
    long due = now < l->start_ns ? 0 : (long)floor((double)(now - l->start_ns) * l->rate / 1e9) + 1;
    while (l->issued < due) {
        int64_t at = l->start_ns + (int64_t)((double)l->issued * 1e9 / l->rate);
        if (at >= l->end_ns)
            break;
        int record = at >= l->rec_from_ns && at < l->rec_to_ns;
        atomic_fetch_add(&g_inflight, 1);
        if (enqueue_one(l, at, record) != FL_OK) {
            atomic_fetch_sub(&g_inflight, 1);
            if (record)
                atomic_fetch_add(&l->missed, 1);
        }
        l->issued++;
    }
    if (now >= l->end_ns) {
        event_free(l->tick); /* a persistent event, freed in its own callback: libevent allows it */
        l->tick = NULL;
        atomic_store(&l->done, 1);
    }
}

static void open_start(void *arg)
{
    lane_t *l = arg;
    l->tick = event_new(fl_shard_base(l->shard), -1, EV_PERSIST, on_tick, l);
    struct timeval tv = {0, 1000};
    if (l->tick == NULL || event_add(l->tick, &tv) != 0)
        die("cannot arm the open-loop timer");
}

/* ---- blocking libpq for setup and read-backs ---------------------------------------------------- */

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *pg_connect(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK)
        die("cannot connect: %s", PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, quiet, NULL);
    return pg;
}

static PGresult *pg_query(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        die("SQL failed: %s\n  %s", PQerrorMessage(pg), sql);
    return res;
}

static void pg_exec(PGconn *pg, const char *sql)
{
    PQclear(pg_query(pg, sql));
}

static long pg_long(PGconn *pg, const char *sql)
{
    PGresult *res = pg_query(pg, sql);
    long v = PQntuples(res) && !PQgetisnull(res, 0, 0) ? atol(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    return v;
}

/* url with another database name, as a key=value conninfo. */
static char *conninfo_for(const char *url, const char *dbname)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (opts == NULL)
        die("DATABASE_URL cannot be parsed: %s", perr);
    size_t cap = 4096, len = 0;
    char *out = calloc(1, cap);
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? dbname : o->val;
        if (v == NULL)
            continue;
        len += (size_t)snprintf(out + len, cap - len, "%s%s='", len ? " " : "", o->keyword);
        for (const char *c = v; *c && len + 4 < cap; c++) {
            if (*c == '\'' || *c == '\\')
                out[len++] = '\\';
            out[len++] = *c;
        }
        len += (size_t)snprintf(out + len, cap - len, "'");
    }
    PQconninfoFree(opts);
    return out;
}

/* A new database, migrated, with the fleets, partners and vehicles every batch names. */
static char *make_database(PGconn *admin, const char *url, const char *name)
{
    char sql[512], err[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    pg_exec(admin, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    pg_exec(admin, sql);
    char *conninfo = conninfo_for(url, name);
    if (fl_db_migrate(conninfo, 10000, err, sizeof(err)) != FL_OK)
        die("fl_db_migrate %s: %s", name, err);
    PGconn *pg = pg_connect(conninfo);
    snprintf(sql, sizeof(sql),
             "INSERT INTO fleets (id) SELECT format('harbor-%%s', lpad(f::text, 2, '0')) FROM generate_series(0, %d) f",
             opt_fleets - 1);
    pg_exec(pg, sql);
    snprintf(sql, sizeof(sql), "INSERT INTO partners (id) SELECT 'partner-' || p FROM generate_series(0, %d) p", opt_partners - 1);
    pg_exec(pg, sql);
    snprintf(
        sql, sizeof(sql),
        "INSERT INTO partner_fleets (partner_id, fleet_id) SELECT 'partner-' || (f %% %d), format('harbor-%%s', lpad(f::text, 2, "
        "'0')) FROM generate_series(0, %d) f",
        opt_partners, opt_fleets - 1);
    pg_exec(pg, sql);
    snprintf(sql, sizeof(sql),
             "INSERT INTO vehicles (id, fleet_id) SELECT format('truck-%%s-%%s', lpad(f::text, 2, '0'), lpad(v::text, 3, '0')),"
             " format('harbor-%%s', lpad(f::text, 2, '0')) FROM generate_series(0, %d) f, generate_series(0, %d) v",
             opt_fleets - 1, opt_fixes - 1);
    pg_exec(pg, sql);
    pg_exec(pg, "VACUUM ANALYZE");
    PQfinish(pg);
    return conninfo;
}

/* ---- the node: db service + jobs, with or without the audit worker ------------------------------ */

typedef struct {
    fl_db_service_t *dbs;
    fl_jobs_t *jobs;
    fl_actor_t *root;
    fl_child_spec_t kids[2];
    fl_sup_spec_t spec;
} node_t;

static void node_start(node_t *n, const char *conninfo, bool audit)
{
    memset(n, 0, sizeof(*n));
    fl_db_options_t dbo = {.conninfo = conninfo};
    fl_jobs_opts_t jo = {.node = "bench",
                         .conninfo = conninfo,
                         .commit_interval_ms = opt_commit_interval_ms,
                         .commit_max_jobs = opt_commit_max,
                         .poll_interval_ms = 200};
    if (fl_db_service_new(rt, &dbo, &n->dbs) != FL_OK || fl_jobs_new(rt, n->dbs, &jo, &n->jobs) != FL_OK)
        die("cannot create the db service or the jobs service");
    if (audit && fl_audit_register(n->jobs, 0, 0) != FL_OK)
        die("fl_audit_register failed");
    n->kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(n->dbs)};
    n->kids[1] = (fl_child_spec_t){.id = "jobs", .sup = fl_jobs_spec(n->jobs), .shutdown_ms = fl_jobs_shutdown_ms(n->jobs)};
    n->spec =
        (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 5000, .children = n->kids, .nchildren = 2};
    if (fl_sup_start(fl_runtime_shard(rt, 0), "root", &n->spec, NULL, NULL, 20000, &n->root) != FL_OK)
        die("the node did not start");
    if (!WAIT_UNTIL(fl_jobs_ready(n->jobs) && fl_db_service_up(n->dbs), 20))
        die("the committer did not connect");
}

static void node_stop(node_t *n)
{
    fl_sup_stop(n->root, 60000);
    fl_actor_unref(n->root);
    fl_jobs_free(n->jobs);
    fl_db_service_free(n->dbs);
}

/* ---- phases ------------------------------------------------------------------------------------- */

static void phase_reset(const char *tag)
{
    snprintf(g_tag, sizeof(g_tag), "%s", tag);
    for (int k = 0; k < 2; k++) {
        free(lanes[k].lat_call);
        free(lanes[k].lat_sched);
        lanes[k].lat_call = calloc(1, sizeof(hist_t));
        lanes[k].lat_sched = calloc(1, sizeof(hist_t));
        if (!lanes[k].lat_call || !lanes[k].lat_sched)
            die("out of memory");
        atomic_store(&lanes[k].win_ok, 0);
        atomic_store(&lanes[k].missed, 0);
        atomic_store(&lanes[k].done, 0);
    }
    for (int s = 0; s < 16; s++)
        atomic_store(&g_status[s], 0);
    atomic_store(&g_refused, 0);
}

static void wait_quiet(const char *what)
{
    if (!WAIT_UNTIL(atomic_load(&g_inflight) == 0, 60))
        die("%s: %ld enqueues still unanswered after 60 s", what, atomic_load(&g_inflight));
}

static void print_errors(const char *key)
{
    long timeouts = atomic_load(&g_status[-FL_ETIMEDOUT]), unavail = atomic_load(&g_status[-FL_EUNAVAIL]);
    long other = 0;
    for (int s = 1; s < 16; s++)
        other += atomic_load(&g_status[s]);
    other -= timeouts + unavail;
    long refused = atomic_load(&g_refused);
    printf("    errors: %ld refused at once (FL_EFULL), %ld FL_ETIMEDOUT, %ld FL_EUNAVAIL, %ld other\n", refused, timeouts, unavail,
           other);
    char k[128];
    snprintf(k, sizeof(k), "%s.errors", key);
    result(k, (double)(refused + timeouts + unavail + other), "enqueues");
}

static hist_t *merged(bool sched)
{
    static hist_t h;
    memset(&h, 0, sizeof(h));
    for (int k = 0; k < 2; k++)
        hist_merge(&h, sched ? lanes[k].lat_sched : lanes[k].lat_call);
    return &h;
}

static PGconn *g_qpg; /* the queue database, for CHECKPOINT and read-backs */

static void checkpoint(void)
{
    pg_exec(g_qpg, "CHECKPOINT");
}

/* Closed loop with k batches in flight; returns fixes/s. */
static double closed_loop(int k, double warm, double window, bool report)
{
    char tag[16];
    snprintf(tag, sizeof(tag), report ? "k%d" : "warm", k);
    phase_reset(tag);
    if (report)
        checkpoint();
    atomic_store(&g_mode, MODE_CLOSED);
    atomic_fetch_add(&g_inflight, k);
    for (int l = 0; l < 2; l++) {
        kick_t *kk = malloc(sizeof(*kk));
        *kk = (kick_t){&lanes[l], l == 0 ? k / 2 : k - k / 2};
        if (kk->n == 0) {
            free(kk);
            continue;
        }
        if (fl_shard_post(lanes[l].shard, kick, kk) != FL_OK)
            die("cannot post to a shard");
    }
    sleep_s(warm);
    sample_t s0, s1;
    take_sample(&s0);
    atomic_store(&g_recording, true);
    sleep_s(window);
    atomic_store(&g_recording, false);
    take_sample(&s1);
    atomic_store(&g_mode, MODE_STOP);
    wait_quiet(tag);
    long ok = atomic_load(&lanes[0].win_ok) + atomic_load(&lanes[1].win_ok);
    double wall = s1.wall - s0.wall;
    double batches_s = (double)ok / wall, fixes_s = batches_s * opt_fixes;
    if (!report)
        return fixes_s;
    printf("\n  closed loop, %d batches in flight (%d + %d from the two shards), %.1f s after %.1f s:\n", k, k / 2, k - k / 2, wall,
           warm);
    printf("    %.0f batches/s acknowledged durable = %.0f fixes/s (%.1f MB/s of job args)\n", batches_s, fixes_s,
           batches_s * (double)atomic_load(&g_args_bytes) / (double)atomic_load(&g_built) / 1e6);
    char key[64], k2[96];
    snprintf(key, sizeof(key), "closed.k%d", k);
    snprintf(k2, sizeof(k2), "%s.fixes_per_s", key);
    result(k2, fixes_s, "fixes/s");
    snprintf(k2, sizeof(k2), "%s.batches_per_s", key);
    result(k2, batches_s, "batches/s");
    snprintf(k2, sizeof(k2), "%s.ack", key);
    print_hist("ack latency (enqueue -> FL_OK)", k2, merged(false));
    print_errors(key);
    window_t w = window_of(&s0, &s1);
    print_window(key, &w, (double)ok, "batch");
    return fixes_s;
}

static void open_loop(double rate, double warm, double window)
{
    phase_reset("open");
    checkpoint();
    atomic_store(&g_mode, MODE_OPEN);
    int64_t start = fl_now_mono_ns() + 50000000;
    for (int k = 0; k < 2; k++) {
        lane_t *l = &lanes[k];
        l->rate = rate / 2;
        l->issued = 0;
        l->start_ns = start + (int64_t)(k * 1e9 / rate); /* the lanes alternate: arrivals evenly spaced */
        l->rec_from_ns = start + (int64_t)(warm * 1e9);
        l->rec_to_ns = l->rec_from_ns + (int64_t)(window * 1e9);
        l->end_ns = l->rec_to_ns;
        if (fl_shard_post(l->shard, open_start, l) != FL_OK)
            die("cannot post to a shard");
    }
    sample_t s0, s1;
    sleep_s((double)(lanes[0].rec_from_ns - fl_now_mono_ns()) / 1e9);
    take_sample(&s0);
    sleep_s((double)(lanes[0].rec_to_ns - fl_now_mono_ns()) / 1e9);
    take_sample(&s1);
    if (!WAIT_UNTIL(atomic_load(&lanes[0].done) && atomic_load(&lanes[1].done), 10))
        die("the open-loop timers did not end");
    atomic_store(&g_mode, MODE_STOP);
    wait_quiet("open loop");
    long ok = atomic_load(&lanes[0].win_ok) + atomic_load(&lanes[1].win_ok);
    long missed = atomic_load(&lanes[0].missed) + atomic_load(&lanes[1].missed);
    double expected = rate * window;
    printf("\n  open loop: %.1f batches/s scheduled (%.0f fixes/s; a 1 ms timer on each shard issues every due arrival), %.1f s "
           "after %.1f s:\n",
           rate, rate * opt_fixes, window, warm);
    printf("    %ld of %.0f scheduled batches in the window acknowledged FL_OK (%.0f fixes/s), %ld refused at once\n", ok, expected,
           (double)ok * opt_fixes / window, missed);
    result("open.rate_batches_per_s", rate, "batches/s");
    result("open.rate_fixes_per_s", rate * opt_fixes, "fixes/s");
    result("open.acked_fixes_per_s", (double)ok * opt_fixes / window, "fixes/s");
    result("open.unacked", expected - (double)ok, "batches");
    print_hist("ack latency (enqueue -> FL_OK)", "open.ack", merged(false));
    print_hist("from the scheduled arrival -> FL_OK", "open.sched", merged(true));
    print_errors("open");
    window_t w = window_of(&s0, &s1);
    print_window("open", &w, (double)ok, "batch");
}

/* The committer's transactions, read back: rows of one transaction share xmin. */
static void flush_sizes(void)
{
    printf("\n  the committer's flushes (jobs sharing a transaction id), by phase:\n");
    PGresult *res =
        pg_query(g_qpg, "WITH f AS (SELECT split_part(unique_key, '_', 2) AS phase, xmin::text AS tx, count(*) AS n,"
                        "  min(inserted_at) AS t0, max(pg_column_size(args)) AS b FROM jobs WHERE queue = 'audit' GROUP BY 1, 2)"
                        " SELECT phase, count(*), sum(n), round(avg(n), 1), percentile_disc(0.5) WITHIN GROUP (ORDER BY n),"
                        "  percentile_disc(0.9) WITHIN GROUP (ORDER BY n), max(n),"
                        "  round((extract(epoch FROM max(t0) - min(t0)) * 1000 / greatest(count(*) - 1, 1))::numeric, 2)"
                        " FROM f GROUP BY phase ORDER BY min(t0)");
    printf("    %-6s %8s %8s %8s %6s %6s %6s %14s\n", "phase", "flushes", "jobs", "mean", "p50", "p90", "max", "ms between");
    for (int r = 0; r < PQntuples(res); r++) {
        printf("    %-6s %8s %8s %8s %6s %6s %6s %14s\n", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
               PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5), PQgetvalue(res, r, 6), PQgetvalue(res, r, 7));
        char k[96];
        snprintf(k, sizeof(k), "flush.%s.mean_jobs", PQgetvalue(res, r, 0));
        result(k, atof(PQgetvalue(res, r, 3)), "jobs");
        snprintf(k, sizeof(k), "flush.%s.ms_between", PQgetvalue(res, r, 0));
        result(k, atof(PQgetvalue(res, r, 7)), "ms");
    }
    PQclear(res);
    printf("    (ms between: from one flush's transaction start to the next, averaged)\n");
    long stored = pg_long(g_qpg, "SELECT round(avg(pg_column_size(args))) FROM jobs WHERE queue = 'audit'");
    printf("    job args as stored (jsonb, after TOAST compression): %ld bytes on average\n", stored);
    result("jobs.args_stored_bytes", (double)stored, "bytes");
    if (opt_profile) {
        res = PQexec(
            g_qpg, "WITH f AS (SELECT split_part(unique_key, '_', 2) AS phase, xmin AS tx, count(*) AS n, min(inserted_at) AS t0"
                   "  FROM jobs WHERE queue = 'audit' GROUP BY 1, 2),"
                   " g AS (SELECT phase, n, extract(epoch FROM pg_xact_commit_timestamp(tx) - t0) * 1000 AS run_ms,"
                   "  extract(epoch FROM lead(t0) OVER (PARTITION BY phase ORDER BY t0) - pg_xact_commit_timestamp(tx)) * 1000 AS "
                   "gap_ms FROM f)"
                   " SELECT phase, round(avg(run_ms)::numeric, 2), round((percentile_cont(0.5) WITHIN GROUP (ORDER BY "
                   "run_ms))::numeric, 2), round(max(run_ms)::numeric, 2),"
                   "  round(avg(gap_ms)::numeric, 2), round((percentile_cont(0.5) WITHIN GROUP (ORDER BY gap_ms))::numeric, 2),"
                   "  round((avg(run_ms) / avg(n))::numeric, 3)"
                   " FROM g GROUP BY phase ORDER BY phase");
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            printf(
                "\n  flush timing from commit timestamps (track_commit_timestamp): server time of a flush's transaction, and the\n"
                "  gap from its commit to the next flush's start (the client's side: answering, gathering, the interval timer)\n");
            printf("    %-6s %10s %10s %10s %10s %10s %12s\n", "phase", "run avg", "run p50", "run max", "gap avg", "gap p50",
                   "ms per job");
            for (int r = 0; r < PQntuples(res); r++)
                printf("    %-6s %10s %10s %10s %10s %10s %12s\n", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
                       PQgetvalue(res, r, 2), PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5),
                       PQgetvalue(res, r, 6));
        }
        PQclear(res);
    }
}

static void print_statements(void)
{
    PGresult *res = PQexec(g_qpg, "SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 2), rows,"
                                  " pg_size_pretty(wal_bytes), left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
                                  " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = "
                                  "current_database()) ORDER BY total_exec_time DESC LIMIT 8");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        printf("  (pg_stat_statements is not available: %s)", PQerrorMessage(g_qpg));
        PQclear(res);
        return;
    }
    printf("\n  pg_stat_statements, this database, by total execution time:\n");
    printf("    %8s %10s %9s %9s %9s  %s\n", "calls", "total ms", "mean ms", "rows", "WAL", "statement");
    for (int r = 0; r < PQntuples(res); r++)
        printf("    %8s %10s %9s %9s %9s  %s\n", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
               PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5));
    PQclear(res);
}

static void drain(const char *conninfo, long batches)
{
    checkpoint();
    if (opt_profile)
        PQclear(PQexec(g_qpg, "SELECT pg_stat_statements_reset()"));
    printf("\n  audit worker: a node with fl_audit_register (queue \"audit\", 4 jobs at once) started on the backlog of %ld jobs\n",
           batches);
    sample_t s0, s1;
    take_sample(&s0);
    node_t n;
    node_start(&n, conninfo, true);
    long done = 0, bad = 0;
    double deadline = now_s() + opt_drain_timeout;
    while (now_s() < deadline) {
        PGresult *res = pg_query(g_qpg, "SELECT count(*) FILTER (WHERE state = 'completed'),"
                                        " count(*) FILTER (WHERE state IN ('discarded', 'cancelled', 'retryable'))"
                                        " FROM jobs WHERE queue = 'audit'");
        done = atol(PQgetvalue(res, 0, 0));
        bad = atol(PQgetvalue(res, 0, 1));
        PQclear(res);
        if (done + bad >= batches)
            break;
        sleep_s(0.1);
    }
    take_sample(&s1);
    node_stop(&n);
    double wall = s1.wall - s0.wall;
    long positions = pg_long(g_qpg, "SELECT count(*) FROM positions");
    long again = pg_long(g_qpg, "SELECT count(*) FROM jobs WHERE queue = 'audit' AND attempt > 1");
    printf("    %ld jobs completed, %ld failed or discarded, in %.1f s: %.0f fixes/s stored (%ld rows in positions, %ld "
           "expected)%s\n",
           done, bad, wall, (double)positions / wall, positions, batches * opt_fixes,
           done + bad < batches ? "  ** TIMED OUT **" : "");
    if (again > 0)
        printf("    %ld jobs ran more than once (attempt > 1)\n", again);
    result("drain.rerun", (double)again, "jobs");
    result("drain.seconds", wall, "s");
    result("drain.fixes_per_s", (double)positions / wall, "fixes/s");
    result("drain.positions", (double)positions, "rows");
    result("drain.failed", (double)bad, "jobs");
    window_t w = window_of(&s0, &s1);
    print_window("drain", &w, (double)done, "job");
    if (opt_profile)
        print_statements();
}

static long write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die("cannot write %s: %s", path, strerror(errno));
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof(buf));
    char line[512];
    long rows = 0, end = atomic_load(&g_next);
    for (long i = 0; i < end && i < MAX_BATCHES; i++)
        if (atomic_load(&g_ok[i])) {
            csv_of(i, f, line);
            rows += opt_fixes;
        }
    if (fclose(f) != 0)
        die("writing %s: %s", path, strerror(errno));
    return rows;
}

/* What building one request costs (body, signature, fl_audit_args), measured on this thread. */
static void measure_build(void)
{
    char *body = malloc(body_cap());
    int n = 2000;
    size_t total = 0, args_total = 0, len = 0;
    double c0 = cpu_s();
    for (int i = 0; i < n; i++)
        total += len = body_of(i, body);
    double c1 = cpu_s();
    char sig[128];
    for (int i = 0; i < n; i++)
        sign("msg_x_0", 1, body, len, sig);
    double c2 = cpu_s();
    for (int i = 0; i < n; i++) {
        char *args = NULL;
        size_t alen = 0;
        const char *fleets[] = {"harbor-00"};
        if (fl_audit_args("partner-0", "msg_x_0", 1, sig, 1, fleets, 1, body, len, &args, &alen) != FL_OK)
            die("fl_audit_args failed");
        args_total += alen;
        fl_free(args);
    }
    double c3 = cpu_s();
    double body_us = (c1 - c0) * 1e6 / n, sign_us = (c2 - c1) * 1e6 / n, args_us = (c3 - c2) * 1e6 / n;
    printf("batch     : %d fixes, body %.0f bytes, job args %.0f bytes (the body as a JSON string plus the request's headers)\n",
           opt_fixes, (double)total / n, (double)args_total / n);
    printf(
        "            building one on a shard, CPU: body %.0f us (a partner's work, here), HMAC-SHA256 %.0f us, fl_audit_args %.0f "
        "us\n",
        body_us, sign_us, args_us);
    result("batch.body_bytes", (double)total / n, "bytes");
    result("batch.args_bytes", (double)args_total / n, "bytes");
    result("batch.build_us", body_us + sign_us + args_us, "us");
    result("batch.audit_args_us", args_us, "us");
    free(body);
}

/* ---- main ---------------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: ingest_store_bench --db-prefix=NAME [--csv=FILE] [--inflight=16,32,64,128,256] [--window=S] [--warmup=S] "
            "[--open=S]\n"
            "                          [--rate=BATCHES_PER_S] [--fixes=N] [--fleets=N] [--partners=N] [--commit-interval-ms=N]\n"
            "                          [--commit-max=N] [--audit=0|1] [--profile=0|1] [--label=TEXT]\n"
            "DATABASE_URL: a PostgreSQL superuser URL; databases NAME_queue and NAME_copy are (re)created on it and left\n"
            "for the caller (test/bench/ingest-store.sh) to use and drop.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define OPT(name) (strncmp(a, "--" name "=", sizeof(name) + 2) == 0 ? a + sizeof(name) + 2 : NULL)
        const char *v;
        if ((v = OPT("window")))
            opt_window = atof(v);
        else if ((v = OPT("warmup")))
            opt_warmup = atof(v);
        else if ((v = OPT("inflight")))
            opt_inflight = v;
        else if ((v = OPT("open")))
            opt_open = atof(v);
        else if ((v = OPT("rate")))
            opt_rate = atof(v);
        else if ((v = OPT("fixes")))
            opt_fixes = atoi(v);
        else if ((v = OPT("fleets")))
            opt_fleets = atoi(v);
        else if ((v = OPT("partners")))
            opt_partners = atoi(v);
        else if ((v = OPT("commit-interval-ms")))
            opt_commit_interval_ms = atoi(v);
        else if ((v = OPT("commit-max")))
            opt_commit_max = atoi(v);
        else if ((v = OPT("audit")))
            opt_audit = atoi(v) != 0;
        else if ((v = OPT("profile")))
            opt_profile = atoi(v) != 0;
        else if ((v = OPT("csv")))
            opt_csv = v;
        else if ((v = OPT("db-prefix")))
            opt_prefix = v;
        else if ((v = OPT("label")))
            opt_label = v;
        else
            usage();
#undef OPT
    }
    if (opt_prefix == NULL || opt_window <= 0 || opt_warmup < 0 || opt_open <= 0 || opt_fixes < 1 || opt_fixes > 999 ||
        opt_fleets < 1 || opt_fleets > 99 || opt_partners < 1 || opt_commit_interval_ms < 0 || opt_commit_max < 1)
        usage();
    for (const char *c = opt_prefix; *c; c++)
        if (!(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_'))
            die("--db-prefix must be [a-z0-9_]");
    const char *url = getenv("DATABASE_URL");
    if (url == NULL || !*url)
        die("DATABASE_URL is not set");
    int ks[16], nk = 0;
    for (const char *p = opt_inflight; *p && nk < 16;) {
        ks[nk] = atoi(p);
        if (ks[nk] < 1)
            usage();
        nk++;
        p = strchr(p, ',');
        if (p == NULL)
            break;
        p++;
    }
    if (sodium_init() < 0)
        die("sodium_init failed");
    randombytes_buf(g_secret, sizeof(g_secret));
    fl_log_init(FL_LOG_WARN, FL_LOG_JSON);
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_ok = calloc(MAX_BATCHES, 1);
    if (g_ok == NULL)
        die("out of memory");

    printf("# fleetd ingest_store_bench%s%s\n", *opt_label ? ": " : "", opt_label);
    print_machine();

    PGconn *admin = pg_connect(url);
    PGresult *res = pg_query(admin, "SELECT current_setting('server_version'), current_setting('fsync'),"
                                    " current_setting('synchronous_commit'), current_setting('full_page_writes'),"
                                    " current_setting('wal_compression'), current_setting('shared_buffers'),"
                                    " current_setting('max_wal_size'), current_setting('default_toast_compression'),"
                                    " current_setting('shared_preload_libraries'), current_setting('track_commit_timestamp')");
    printf("postgres  : %s; fsync %s, synchronous_commit %s, full_page_writes %s, wal_compression %s, shared_buffers %s,\n"
           "            max_wal_size %s, default_toast_compression %s, preload '%s', track_commit_timestamp %s\n",
           PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4),
           PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6), PQgetvalue(res, 0, 7), PQgetvalue(res, 0, 8), PQgetvalue(res, 0, 9));
    result("pg.fsync", strcmp(PQgetvalue(res, 0, 1), "on") == 0, "bool");
    g_postmaster = ppid_of(PQbackendPID(admin));
    if (g_postmaster <= 1)
        printf("            (the server is not on this machine or not visible: its CPU is not accounted)\n");
    bool pgss = strstr(PQgetvalue(res, 0, 8), "pg_stat_statements") != NULL;
    if (opt_profile && !pgss)
        printf("            (--profile: pg_stat_statements is not preloaded; statement figures skipped)\n");
    PQclear(res);
    printf("settings  : closed loop K = %s in flight, %.1f s each after %.1f s; open loop %.1f s after %.1f s; commit every %d ms "
           "or %d jobs (fleetd serve's defaults)\n",
           opt_inflight, opt_window, opt_warmup, opt_open, opt_warmup, opt_commit_interval_ms, opt_commit_max);

    char qname[128], cname[128];
    snprintf(qname, sizeof(qname), "%s_queue", opt_prefix);
    snprintf(cname, sizeof(cname), "%s_copy", opt_prefix);
    char *qconn = make_database(admin, url, qname);
    char *cconn = make_database(admin, url, cname);
    PQfinish(admin);
    g_qpg = pg_connect(qconn);
    if (opt_profile && pgss)
        pg_exec(g_qpg, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    printf("databases : %s (the queue; %d fleets x %d vehicles, %d partners) and %s (the same rows, for \\copy)\n", qname,
           opt_fleets, opt_fixes, opt_partners, cname);
    measure_build();

    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK)
        die("cannot start the runtime");
    for (int k = 0; k < 2; k++) {
        lanes[k].index = k;
        lanes[k].shard = fl_runtime_shard(rt, k);
        lanes[k].body = malloc(body_cap());
    }
    node_t node;
    node_start(&node, qconn, false);
    g_jobs = node.jobs;
    printf("\n## Durable enqueue (fl_jobs_enqueue -> FL_OK), no worker running\n");
    closed_loop(ks[0], opt_warmup, 0.5, false); /* warm-up: connections, caches, the first pages of every index */
    if (opt_profile && pgss)
        PQclear(PQexec(g_qpg, "SELECT pg_stat_statements_reset()"));
    double best = 0;
    int best_k = 0;
    for (int i = 0; i < nk; i++) {
        double r = closed_loop(ks[i], opt_warmup, opt_window, true);
        if (r > best) {
            best = r;
            best_k = ks[i];
        }
    }
    printf("\n  maximum sustained rate: %.0f fixes/s (%.0f batches/s) with %d in flight\n", best, best / opt_fixes, best_k);
    result("max.fixes_per_s", best, "fixes/s");
    result("max.batches_per_s", best / opt_fixes, "batches/s");
    result("max.inflight", best_k, "batches");
    double rate = opt_rate > 0 ? opt_rate : best / opt_fixes / 2;
    open_loop(rate, opt_warmup, opt_open);
    if (opt_profile && pgss)
        print_statements();
    node_stop(&node);
    g_jobs = NULL;
    flush_sizes();

    long batches = 0, end = atomic_load(&g_next);
    for (long i = 0; i < end && i < MAX_BATCHES; i++)
        batches += atomic_load(&g_ok[i]);
    long jobs = pg_long(g_qpg, "SELECT count(*) FROM jobs WHERE queue = 'audit'");
    printf("\n  %ld batches acknowledged FL_OK in this run; %ld audit jobs in the table%s; %ld duplicates\n", batches, jobs,
           jobs == batches ? "" : "  ** MISMATCH **", atomic_load(&g_dups));
    result("batches.acked", (double)batches, "batches");
    result("batches.in_table", (double)jobs, "jobs");

    if (opt_audit) {
        printf("\n## The audit worker: jobs -> positions\n");
        drain(qconn, jobs);
    }
    if (opt_csv) {
        long rows = write_csv(opt_csv);
        printf("\ncsv       : %ld fixes of the %ld acknowledged batches written to %s for \\copy\n", rows, batches, opt_csv);
        result("csv.rows", (double)rows, "rows");
    }
    printf("COPY_CONNINFO %s\n", cconn);
    result("unclean_windows", unclean_windows, "windows");
    if (unclean_windows)
        printf("%d measurement window(s) NOT CLEAN (other processes > 10%% or steal > 5%% of the machine)\n", unclean_windows);

    PQfinish(g_qpg);
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
    for (int k = 0; k < 2; k++) {
        free(lanes[k].body);
        free(lanes[k].lat_call);
        free(lanes[k].lat_sched);
    }
    free(qconn);
    free(cconn);
    free(g_ok);
    return 0;
}
