/*
 * runtime_bench: what the runtime costs, measured with the real thing (fl_runtime_new(2),
 * fl_actor_spawn, fl_actor_cast) and, with DATABASE_URL, a real fleet tracker.
 *
 *   - messages/s within one shard and across shards (one way and both ways at once);
 *   - the latency of a cross-shard cast (fl_actor_cast on shard A until the handler runs on B), with
 *     one message in flight and under load;
 *   - memory per idle actor (100,000 of them) and per tracked vehicle (100,000 in one fleet).
 *
 * A benchmark, not a test: it is built as target runtime_bench and never registered with ctest.
 * test/bench/runtime.sh builds it (Release), provides a throwaway PostgreSQL and runs it 3 times.
 * It prints a report for people and `RESULT key value` lines for the script's medians.
 */
#include "runtime/runtime.h"
#include "tracker/tracker.h"

#include <errno.h>
#include <event2/event.h>
#include <gnu/libc-version.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE "unknown"
#endif

/* ---- settings ---------------------------------------------------------------------------------- */

static double opt_duration = 3.0;       /* seconds measured per throughput/latency run */
static double opt_warmup = 1.0;         /* seconds run before measuring */
static int opt_batch = FL_ACTOR_BUDGET; /* casts a producer makes per turn */
static int opt_pairs = 16;              /* producer/consumer pairs per direction in the "many actors" run */
static int opt_actors = 100000;
static int opt_vehicles = 100000;
static int opt_fix_batch = 100; /* fixes per fl_trackers_apply, like one ingest request */
static const char *opt_only = "actors,tracker,within,cross,latency";
static bool g_pin = true; /* shard i's thread on CPU i */

static bool selected(const char *what)
{
    size_t n = strlen(what);
    for (const char *p = opt_only; (p = strstr(p, what)) != NULL; p += n)
        if ((p == opt_only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

__attribute__((format(printf, 1, 2))) static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "runtime_bench: ");
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

/* ---- results: printed as they come, and as RESULT lines for test/bench/runtime.sh ---------------- */

static void result(const char *key, double value, const char *unit)
{
    printf("RESULT %s %.6g %s\n", key, value, unit);
}

/* ---- the machine, and how busy the rest of it was during a measurement -------------------------- */

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
    long kb = 0;
    f = fopen("/proc/meminfo", "r");
    if (f) {
        if (fscanf(f, "MemTotal: %ld kB", &kb) != 1)
            kb = 0;
        fclose(f);
    }
    char load[128] = "";
    f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fgets(load, sizeof(load), f) == NULL)
            load[0] = '\0';
        load[strcspn(load, "\n")] = '\0';
        fclose(f);
    }
    char src[64] = "?";
    f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f) {
        if (fgets(src, sizeof(src), f) == NULL)
            snprintf(src, sizeof(src), "?");
        src[strcspn(src, "\n")] = '\0';
        fclose(f);
    }
    printf("machine   : %ld online CPUs, %s, %ld MiB RAM, %s %s, clocksource %s\n", sysconf(_SC_NPROCESSORS_ONLN), model, kb / 1024,
           u.sysname, u.release, src);
    printf("software  : glibc %s, libevent %s, libpq %d, build %s%s\n", gnu_get_libc_version(), event_get_version(), PQlibVersion(),
           BENCH_BUILD_TYPE,
#ifdef FLEETD_SANITIZED
           " WITH SANITIZERS (figures not representative)"
#else
           ""
#endif
    );
    printf("loadavg   : %s (at start)\n", load);
    printf("pinning   : %s\n", g_pin ? "shard i's thread on CPU i (--pin=0 to leave placement to the kernel)" : "none");
    printf("settings  : duration %.1f s after %.1f s warm-up per run, producer batch %d casts/turn, mailbox %d, budget %d/turn\n",
           opt_duration, opt_warmup, opt_batch, FL_ACTOR_DEFAULT_MAILBOX, FL_ACTOR_BUDGET);
    result("machine.cpus", (double)sysconf(_SC_NPROCESSORS_ONLN), "cpus");
}

typedef struct {
    double wall, self_cpu;
    unsigned long long busy, steal, total; /* /proc/stat ticks, all CPUs */
} sample_t;

static void take_sample(sample_t *s)
{
    s->wall = now_s();
    s->self_cpu = cpu_s();
    s->busy = s->steal = s->total = 0;
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[10] = {0};
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                    &v[7], &v[8], &v[9]) >= 8) {
        /* user nice system idle iowait irq softirq steal (guest is inside user) */
        s->busy = v[0] + v[1] + v[2] + v[5] + v[6];
        s->steal = v[7];
        s->total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    }
    if (f)
        fclose(f);
}

typedef struct {
    double wall, self_cpu, others_share, steal_share;
    bool clean;
} window_t;

/* What the rest of the machine did between a and b: a run where other processes took over 10% of
 * the machine or the hypervisor stole over 5% is flagged. */
static window_t window_of(const sample_t *a, const sample_t *b)
{
    window_t w = {.wall = b->wall - a->wall, .self_cpu = b->self_cpu - a->self_cpu};
    double hz = (double)sysconf(_SC_CLK_TCK);
    double ticks = (double)(b->total - a->total);
    double cap = ticks > 0 ? ticks / hz : w.wall * (double)sysconf(_SC_NPROCESSORS_ONLN);
    double busy = (double)(b->busy - a->busy) / hz;
    w.others_share = cap > 0 ? (busy - w.self_cpu) / cap : 0;
    if (w.others_share < 0)
        w.others_share = 0;
    w.steal_share = cap > 0 ? (double)(b->steal - a->steal) / hz / cap : 0;
    w.clean = w.others_share <= 0.10 && w.steal_share <= 0.05;
    return w;
}

static int unclean_windows;

static void print_window(const char *key, const window_t *w)
{
    printf("    machine during the window: this process %.2f CPU-s in %.2f s; other processes %.0f%%, steal %.0f%% of the "
           "machine%s\n",
           w->self_cpu, w->wall, w->others_share * 100, w->steal_share * 100, w->clean ? "" : "  ** NOT CLEAN **");
    char k[128];
    snprintf(k, sizeof(k), "%s.others_pct", key);
    result(k, w->others_share * 100, "%");
    snprintf(k, sizeof(k), "%s.steal_pct", key);
    result(k, w->steal_share * 100, "%");
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
    printf("    %-44s n=%-9" PRIu64 " p50 %8.1f us   p99 %8.1f us   p99.9 %8.1f us   max %8.1f us\n", label, h->n,
           hist_quantile(h, 0.50) / 1e3, hist_quantile(h, 0.99) / 1e3, hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3);
    char k[128];
    const char *names[] = {"p50", "p99", "p999"};
    const double qs[] = {0.50, 0.99, 0.999};
    for (int i = 0; i < 3; i++) {
        snprintf(k, sizeof(k), "%s.%s", key, names[i]);
        result(k, hist_quantile(h, qs[i]) / 1e3, "us");
    }
}

/* ---- the actors of the message benchmarks --------------------------------------------------------
 * A message carries its send time (CLOCK_MONOTONIC ns) in the data pointer itself: no payload to
 * allocate, so what is measured is the runtime's own cost per message. */

enum { M_DATA = 1, M_KICK = 2, M_PING = 3 };

static atomic_bool g_stop;      /* producers stop re-kicking themselves, ping-pong stops */
static atomic_bool g_recording; /* latency samples are kept (after the warm-up, until the window ends) */

static void *stamp(void)
{
    return (void *)(uintptr_t)fl_now_mono_ns();
}

static int64_t age_of(const fl_msg_t *msg)
{
    return fl_now_mono_ns() - (int64_t)(uintptr_t)msg->data;
}

/* The consumer: counts what it handles (one writer, so a relaxed store); records each message's
 * age when timed. Its state is the bench's, read after the runtime has stopped. */
typedef struct {
    _Alignas(64) atomic_long count;
    bool timed;
    bool payload;
    hist_t *hist;
} sink_t;

static int sink_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    *state = arg;
    return FL_OK;
}

static int sink_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    sink_t *s = state;
    if (msg->type != M_DATA)
        return FL_EINVAL;
    if (s->timed && atomic_load_explicit(&g_recording, memory_order_relaxed))
        hist_add(s->hist, s->payload ? fl_now_mono_ns() - *(const int64_t *)msg->data : age_of(msg));
    atomic_store_explicit(&s->count, atomic_load_explicit(&s->count, memory_order_relaxed) + 1, memory_order_relaxed);
    return FL_OK;
}

static const fl_behaviour_t sink_behaviour = {.name = "bench.sink", .init = sink_init, .handle = sink_handle};

/* The producer: on each kick, up to opt_batch casts to its consumer, stopping at the first FL_EFULL
 * (back-pressure: it tries again on its next turn), then kicks itself so the shard moves on to its
 * other actors and its I/O in between, as a real actor must. */
typedef struct {
    _Alignas(64) atomic_long sent;
    atomic_long efull;
    fl_actor_t *to;
    bool timed;
    int payload; /* bytes of heap payload per message (0: none, the send time rides in the pointer) */
} source_t;

static int source_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    *state = arg;
    return FL_OK;
}

static int source_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    source_t *s = state;
    if (msg->type != M_KICK)
        return FL_EINVAL;
    if (atomic_load_explicit(&g_stop, memory_order_relaxed))
        return FL_OK;
    long sent = 0, full = 0;
    for (int i = 0; i < opt_batch; i++) {
        int rc;
        if (s->payload) {
            /* a heap payload, as real messages carry: allocated here, freed by the runtime (dtor)
             * on the consumer's shard after the handler */
            int64_t *p = fl_malloc((size_t)s->payload);
            if (p == NULL)
                return FL_ENOMEM;
            p[0] = s->timed ? fl_now_mono_ns() : 0;
            rc = fl_actor_cast(s->to, M_DATA, p, fl_free);
        } else {
            rc = fl_actor_cast(s->to, M_DATA, s->timed ? stamp() : NULL, NULL);
        }
        if (rc == FL_EFULL) {
            full++;
            break;
        }
        if (rc != FL_OK)
            return rc;
        sent++;
    }
    atomic_store_explicit(&s->sent, atomic_load_explicit(&s->sent, memory_order_relaxed) + sent, memory_order_relaxed);
    atomic_store_explicit(&s->efull, atomic_load_explicit(&s->efull, memory_order_relaxed) + full, memory_order_relaxed);
    return fl_actor_notify(self, M_KICK, NULL, NULL);
}

static const fl_behaviour_t source_behaviour = {.name = "bench.source", .init = source_init, .handle = source_handle};

/* Ping-pong: one message in flight between two actors on different shards; each side records the
 * age of what it receives (a cross-shard cast each time) and sends the next one. */
typedef struct {
    _Alignas(64) atomic_long count;
    fl_actor_t *peer;
    hist_t *hist;
} pong_t;

static int pong_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    *state = arg;
    return FL_OK;
}

static int pong_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    pong_t *p = state;
    if (msg->type != M_PING)
        return FL_EINVAL;
    if (atomic_load_explicit(&g_recording, memory_order_relaxed))
        hist_add(p->hist, age_of(msg));
    atomic_store_explicit(&p->count, atomic_load_explicit(&p->count, memory_order_relaxed) + 1, memory_order_relaxed);
    if (atomic_load_explicit(&g_stop, memory_order_relaxed))
        return FL_OK;
    int rc = fl_actor_cast(p->peer, M_PING, stamp(), NULL);
    return rc == FL_OK || rc == FL_ECLOSED ? FL_OK : rc;
}

static const fl_behaviour_t pong_behaviour = {.name = "bench.pong", .init = pong_init, .handle = pong_handle};

/* ---- running a message benchmark ---------------------------------------------------------------- */

/* Shard i on CPU i: one shard per core, as the design intends under load. Unpinned, the kernel may
 * put both threads on one CPU while they are mostly idle, which makes a hand-over a cheap local
 * context switch instead of a cross-CPU wake-up: a different (and luckier) figure. */
static atomic_int pinned;

static void pin_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
        fprintf(stderr, "runtime_bench: cannot pin a thread to CPU %d\n", cpu);
}

static void pin_shard(void *arg)
{
    pin_cpu(fl_shard_index(arg));
    atomic_fetch_add(&pinned, 1);
}

static fl_runtime_t *start_runtime(void)
{
    fl_runtime_t *rt = NULL;
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK)
        die("cannot start a runtime with 2 shards");
    if (g_pin && sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
        atomic_store(&pinned, 0);
        for (int i = 0; i < 2; i++)
            fl_shard_post(fl_runtime_shard(rt, i), pin_shard, fl_runtime_shard(rt, i));
        if (!WAIT_UNTIL(atomic_load(&pinned) == 2, 5))
            die("the shards did not pin themselves");
    }
    return rt;
}

static fl_actor_t *spawn(fl_runtime_t *rt, int shard, const fl_behaviour_t *b, void *arg, const char *id)
{
    fl_actor_t *a = NULL;
    fl_actor_opts_t opts = {.id = id};
    if (fl_actor_spawn(fl_runtime_shard(rt, shard), b, arg, &opts, NULL, NULL, &a) != FL_OK)
        die("cannot spawn %s", id);
    return a;
}

static void stop_actors(fl_actor_t **actors, int n)
{
    for (int i = 0; i < n; i++)
        fl_actor_stop(actors[i], FL_EXIT_SHUTDOWN, "bench over");
    for (int i = 0; i < n; i++) {
        if (!WAIT_UNTIL(!fl_actor_alive(actors[i]), 10))
            die("an actor did not stop");
        fl_actor_unref(actors[i]);
    }
}

typedef struct {
    const char *name; /* for the report */
    const char *key;  /* RESULT prefix */
    int pairs;        /* producer/consumer pairs per direction */
    int from, to;     /* shards of the first direction's producers and consumers */
    bool both;        /* also the other direction (to -> from) at once */
    bool timed;       /* messages carry their send time; consumers record their age */
    int payload;      /* bytes of heap payload per message */
    bool probe;       /* a ping-pong pair runs beside the load */
} flood_t;

typedef struct {
    double rate;     /* messages handled per second in the window */
    double cpu_ns;   /* process CPU time per message handled */
    long efull;      /* casts refused with FL_EFULL during the whole run */
    long sent;       /* casts accepted during the whole run */
    hist_t *flood;   /* ages of the load's messages (timed) */
    hist_t *probe;   /* ping-pong ages (probe) */
    double pp_rate;  /* ping-pong messages per second (probe) */
    window_t window; /* the machine during the window */
} flood_result_t;

static void run_flood(const flood_t *f, flood_result_t *r)
{
    memset(r, 0, sizeof(*r));
    int ndir = f->both ? 2 : 1, n = f->pairs * ndir;
    sink_t *sinks = aligned_alloc(64, sizeof(sink_t) * (size_t)(n ? n : 1)); /* n = 0: ping-pong alone */
    source_t *sources = aligned_alloc(64, sizeof(source_t) * (size_t)(n ? n : 1));
    hist_t *hists = calloc((size_t)n + 2, sizeof(hist_t));
    fl_actor_t **actors = calloc((size_t)n * 2 + 2, sizeof(*actors));
    pong_t *pp = aligned_alloc(64, sizeof(pong_t) * 2);
    if (!sinks || !sources || !hists || !actors || !pp)
        die("out of memory");
    atomic_store(&g_stop, false);
    atomic_store(&g_recording, false);

    fl_runtime_t *rt = start_runtime();
    int na = 0;
    char id[64];
    for (int i = 0; i < n; i++) {
        bool reverse = i >= f->pairs;
        int src = reverse ? f->to : f->from, dst = reverse ? f->from : f->to;
        sinks[i] = (sink_t){.timed = f->timed, .payload = f->payload > 0, .hist = &hists[i]};
        atomic_init(&sinks[i].count, 0);
        snprintf(id, sizeof(id), "sink:%d", i);
        fl_actor_t *sink = spawn(rt, dst, &sink_behaviour, &sinks[i], id);
        sources[i] = (source_t){.to = sink, .timed = f->timed, .payload = f->payload};
        atomic_init(&sources[i].sent, 0);
        atomic_init(&sources[i].efull, 0);
        snprintf(id, sizeof(id), "source:%d", i);
        actors[na++] = spawn(rt, src, &source_behaviour, &sources[i], id);
        actors[na++] = sink;
    }
    if (f->probe) {
        for (int i = 0; i < 2; i++) {
            pp[i] = (pong_t){.hist = &hists[n + i]};
            atomic_init(&pp[i].count, 0);
        }
        fl_actor_t *b = spawn(rt, 1, &pong_behaviour, &pp[1], "pong:1");
        pp[0].peer = b;
        fl_actor_t *a = spawn(rt, 0, &pong_behaviour, &pp[0], "pong:0");
        pp[1].peer = a; /* set before the first message reaches b: the cast below orders it */
        actors[na++] = a;
        actors[na++] = b;
    }
    for (int i = 0; i < n; i++)
        fl_actor_cast(actors[2 * i], M_KICK, NULL, NULL); /* the sources */
    if (f->probe)
        fl_actor_cast(actors[na - 2], M_PING, stamp(), NULL);

    sleep_s(opt_warmup);
    long c0 = 0, c1 = 0, p0 = 0, p1 = 0;
    sample_t s0, s1;
    atomic_store(&g_recording, true);
    take_sample(&s0);
    for (int i = 0; i < n; i++)
        c0 += atomic_load_explicit(&sinks[i].count, memory_order_relaxed);
    for (int i = 0; f->probe && i < 2; i++)
        p0 += atomic_load_explicit(&pp[i].count, memory_order_relaxed);
    sleep_s(opt_duration);
    for (int i = 0; i < n; i++)
        c1 += atomic_load_explicit(&sinks[i].count, memory_order_relaxed);
    for (int i = 0; f->probe && i < 2; i++)
        p1 += atomic_load_explicit(&pp[i].count, memory_order_relaxed);
    take_sample(&s1);
    atomic_store(&g_recording, false);
    atomic_store(&g_stop, true);

    /* drain: every accepted cast is handled before the actors stop */
    long sent = 0;
    bool drained = WAIT_UNTIL(({
                                  long handled = 0;
                                  sent = 0;
                                  for (int i = 0; i < n; i++) {
                                      handled += atomic_load(&sinks[i].count);
                                      sent += atomic_load(&sources[i].sent);
                                  }
                                  handled == sent;
                              }),
                              10);
    if (!drained)
        fprintf(stderr, "runtime_bench: %s: consumers did not catch up with producers within 10 s\n", f->name);
    stop_actors(actors, na);
    fl_runtime_stop(rt);
    fl_runtime_free(rt);

    r->window = window_of(&s0, &s1);
    r->rate = (double)(c1 - c0) / r->window.wall;
    r->cpu_ns = c1 > c0 ? r->window.self_cpu * 1e9 / (double)(c1 - c0) : 0;
    r->sent = sent;
    for (int i = 0; i < n; i++)
        r->efull += atomic_load(&sources[i].efull);
    if (f->timed) {
        r->flood = calloc(1, sizeof(hist_t));
        for (int i = 0; i < n; i++)
            hist_merge(r->flood, &hists[i]);
    }
    if (f->probe) {
        r->probe = calloc(1, sizeof(hist_t));
        hist_merge(r->probe, &hists[n]);
        hist_merge(r->probe, &hists[n + 1]);
        r->pp_rate = (double)(p1 - p0) / r->window.wall;
    }
    free(sinks);
    free(sources);
    free(hists);
    free(actors);
    free(pp);
}

static void report_flood(const flood_t *f, const flood_result_t *r)
{
    printf("  %s\n", f->name);
    printf("    %12.0f messages/s handled   %6.0f ns CPU per message (whole process)   %ld FL_EFULL of %ld casts "
           "(%.2f%%)\n",
           r->rate, r->cpu_ns, r->efull, r->sent + r->efull,
           r->sent + r->efull ? 100.0 * (double)r->efull / (double)(r->sent + r->efull) : 0.0);
    char k[128];
    snprintf(k, sizeof(k), "%s.rate", f->key);
    result(k, r->rate, "msg/s");
    snprintf(k, sizeof(k), "%s.cpu_ns", f->key);
    result(k, r->cpu_ns, "ns/msg");
    snprintf(k, sizeof(k), "%s.efull_pct", f->key);
    result(k, r->sent + r->efull ? 100.0 * (double)r->efull / (double)(r->sent + r->efull) : 0.0, "%");
    if (r->flood) {
        snprintf(k, sizeof(k), "%s.age", f->key);
        print_hist("age of the load's messages (queueing incl.)", k, r->flood);
    }
    if (r->probe) {
        snprintf(k, sizeof(k), "%s.probe", f->key);
        print_hist("ping-pong probe beside the load", k, r->probe);
    }
    print_window(f->key, &r->window);
    free(r->flood);
    free(r->probe);
}

static void bench_within(void)
{
    printf("\n## Messages within a shard (producer and consumer actors on the same shard)\n");
    flood_t one = {.name = "shard 0 -> shard 0, 1 pair (shard 1 idle)", .key = "within.1pair", .pairs = 1, .from = 0, .to = 0};
    flood_result_t r;
    run_flood(&one, &r);
    report_flood(&one, &r);
}

/* Two local floods at once, one on each shard: the runtime's local messaging capacity. */
static void bench_within_both(void)
{
    const char *name = "each shard to itself at once, 1 pair per shard (total)";
    sink_t *sinks = aligned_alloc(64, 2 * sizeof(sink_t));
    source_t *sources = aligned_alloc(64, 2 * sizeof(source_t));
    fl_actor_t *actors[4];
    if (!sinks || !sources)
        die("out of memory");
    atomic_store(&g_stop, false);
    fl_runtime_t *rt = start_runtime();
    for (int i = 0; i < 2; i++) {
        sinks[i] = (sink_t){.timed = false};
        atomic_init(&sinks[i].count, 0);
        actors[2 * i + 1] = spawn(rt, i, &sink_behaviour, &sinks[i], "sink");
        sources[i] = (source_t){.to = actors[2 * i + 1]};
        atomic_init(&sources[i].sent, 0);
        atomic_init(&sources[i].efull, 0);
        actors[2 * i] = spawn(rt, i, &source_behaviour, &sources[i], "source");
        fl_actor_cast(actors[2 * i], M_KICK, NULL, NULL);
    }
    sleep_s(opt_warmup);
    sample_t s0, s1;
    take_sample(&s0);
    long c0 = atomic_load(&sinks[0].count) + atomic_load(&sinks[1].count);
    sleep_s(opt_duration);
    long c1 = atomic_load(&sinks[0].count) + atomic_load(&sinks[1].count);
    take_sample(&s1);
    atomic_store(&g_stop, true);
    WAIT_UNTIL(atomic_load(&sinks[0].count) == atomic_load(&sources[0].sent) &&
                   atomic_load(&sinks[1].count) == atomic_load(&sources[1].sent),
               10);
    stop_actors(actors, 4);
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
    flood_result_t r = {.window = window_of(&s0, &s1)};
    r.rate = (double)(c1 - c0) / r.window.wall;
    r.cpu_ns = r.window.self_cpu * 1e9 / (double)(c1 - c0);
    r.sent = atomic_load(&sources[0].sent) + atomic_load(&sources[1].sent);
    r.efull = atomic_load(&sources[0].efull) + atomic_load(&sources[1].efull);
    flood_t f = {.name = name, .key = "within.both"};
    report_flood(&f, &r);
    free(sinks);
    free(sources);
}

static double cross_one_way_rate, cross_both_rate, cross_many_rate;

static void bench_cross(void)
{
    printf("\n## Messages across shards (producers on one shard, consumers on the other)\n");
    flood_t fs[] = {
        {.name = "shard 0 -> shard 1, 1 pair", .key = "cross.1way", .pairs = 1, .from = 0, .to = 1},
        {.name = "shard 0 -> shard 1, 1 pair, a 64-byte heap payload per message (freed by the runtime)",
         .key = "cross.1way_payload",
         .pairs = 1,
         .from = 0,
         .to = 1,
         .payload = 64},
        {.name = "shard 0 -> 1 and 1 -> 0 at once, 1 pair each way (total)",
         .key = "cross.2way",
         .pairs = 1,
         .from = 0,
         .to = 1,
         .both = true},
        {.name = "shard 0 -> 1 and 1 -> 0 at once, many pairs each way (total)",
         .key = "cross.2way_many",
         .from = 0,
         .to = 1,
         .both = true},
    };
    fs[3].pairs = opt_pairs;
    char many[128];
    snprintf(many, sizeof(many), "shard 0 -> 1 and 1 -> 0 at once, %d pairs each way (total)", opt_pairs);
    fs[3].name = many;
    double payload_rate;
    double *rates[] = {&cross_one_way_rate, &payload_rate, &cross_both_rate, &cross_many_rate};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) {
        flood_result_t r;
        run_flood(&fs[i], &r);
        *rates[i] = r.rate;
        report_flood(&fs[i], &r);
    }
}

/* The floor the runtime builds on: two bare threads passing one timestamp back and forth through
 * eventfds, each waiting in epoll_wait as a shard's loop does. No runtime, no allocation. */
typedef struct {
    int epfd, in_fd, out_fd, cpu;
    hist_t *hist;
    atomic_long *count;
} raw_side_t;

static void *raw_side(void *arg)
{
    raw_side_t *r = arg;
    if (g_pin && sysconf(_SC_NPROCESSORS_ONLN) >= 2)
        pin_cpu(r->cpu);
    struct epoll_event ev;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        if (epoll_wait(r->epfd, &ev, 1, 100) != 1)
            continue;
        uint64_t sent_ns;
        if (read(r->in_fd, &sent_ns, sizeof(sent_ns)) != sizeof(sent_ns))
            continue;
        if (atomic_load_explicit(&g_recording, memory_order_relaxed))
            hist_add(r->hist, fl_now_mono_ns() - (int64_t)sent_ns);
        atomic_fetch_add_explicit(r->count, 1, memory_order_relaxed);
        uint64_t now = (uint64_t)fl_now_mono_ns();
        if (write(r->out_fd, &now, sizeof(now)) != sizeof(now))
            break;
    }
    return NULL;
}

static void bench_raw_pingpong(void)
{
    /* an eventfd adds what is written: one value in flight at a time keeps the timestamp intact */
    int fd[2] = {eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC)};
    hist_t *h = calloc(2, sizeof(hist_t));
    atomic_long count = 0;
    raw_side_t side[2];
    pthread_t th[2];
    atomic_store(&g_stop, false);
    atomic_store(&g_recording, false);
    for (int i = 0; i < 2; i++) {
        side[i] = (raw_side_t){
            .epfd = epoll_create1(EPOLL_CLOEXEC), .in_fd = fd[i], .out_fd = fd[1 - i], .cpu = i, .hist = &h[i], .count = &count};
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(side[i].epfd, EPOLL_CTL_ADD, fd[i], &ev);
        pthread_create(&th[i], NULL, raw_side, &side[i]);
    }
    uint64_t now = (uint64_t)fl_now_mono_ns();
    if (write(fd[0], &now, sizeof(now)) != sizeof(now))
        die("eventfd write failed");
    sleep_s(opt_warmup);
    sample_t s0, s1;
    atomic_store(&g_recording, true);
    take_sample(&s0);
    long c0 = atomic_load(&count);
    sleep_s(opt_duration);
    long c1 = atomic_load(&count);
    take_sample(&s1);
    atomic_store(&g_recording, false);
    atomic_store(&g_stop, true);
    for (int i = 0; i < 2; i++) {
        uint64_t one = 1; /* wakes a side still waiting; the value is garbage, not recorded */
        if (write(fd[i], &one, sizeof(one)) < 0)
            break;
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        close(side[i].epfd);
        close(fd[i]);
    }
    hist_merge(&h[0], &h[1]);
    window_t w = window_of(&s0, &s1);
    printf("  baseline, no runtime: two threads passing a timestamp through eventfds, waiting in epoll_wait\n");
    printf("    %12.0f one-way hand-overs/s\n", (double)(c1 - c0) / w.wall);
    print_hist("one-way thread-to-thread wake-up", "latency.raw", &h[0]);
    print_window("latency.raw", &w);
    free(h);
}

static void bench_latency(void)
{
    printf("\n## Cross-shard cast latency: fl_actor_cast on shard A until the handler runs on shard B\n");
    printf("   (send time in the message, CLOCK_MONOTONIC, age taken in the handler on B)\n");
    bench_raw_pingpong();
    /* one in flight: the ping-pong pair alone; then the same with the threads left unpinned */
    for (int pass = 0; pass < (g_pin ? 2 : 1); pass++) {
        bool unpinned = pass == 1;
        flood_t f = {.name = unpinned ? "one in flight, shard threads NOT pinned (the kernel may co-locate them)"
                                      : "one in flight (ping-pong 0 <-> 1, nothing else running)",
                     .key = unpinned ? "latency.unpinned" : "latency.idle",
                     .pairs = 0,
                     .probe = true};
        g_pin = !unpinned;
        flood_result_t r;
        run_flood(&f, &r);
        g_pin = true;
        char k[64];
        printf("  %s\n", f.name);
        printf("    %12.0f one-way casts/s (each waits for the previous one)\n", r.pp_rate);
        snprintf(k, sizeof(k), "%s.rate", f.key);
        result(k, r.pp_rate, "msg/s");
        print_hist("one-way cross-shard cast", f.key, r.probe);
        print_window(f.key, &r.window);
        free(r.probe);
    }
    /* under load: both directions flooded, every message timed, and the probe beside them */
    {
        flood_t f = {.name = "under load: shard 0 <-> 1 flood (1 pair each way, timed) + ping-pong probe",
                     .key = "latency.load",
                     .pairs = 1,
                     .from = 0,
                     .to = 1,
                     .both = true,
                     .timed = true,
                     .probe = true};
        flood_result_t r;
        run_flood(&f, &r);
        report_flood(&f, &r);
    }
}

/* ---- memory ------------------------------------------------------------------------------------ */

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

static long hwm_bytes(void)
{
    char line[256];
    long kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so a later VmHWM is the peak since now. */
static void reset_hwm(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* Bytes malloc has handed out and not had back, over all arenas (chunk headers included). */
static long heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return (long)(mi.uordblks + mi.hblkhd);
}

typedef struct {
    long rss, rss_trimmed, heap, hwm;
} mem_t;

/* RSS as it is, then after malloc_trim (free pages given back), and the live heap. */
static void take_mem(mem_t *m)
{
    m->rss = rss_bytes();
    malloc_trim(0);
    m->rss_trimmed = rss_bytes();
    m->heap = heap_bytes();
    m->hwm = hwm_bytes();
}

static atomic_long idle_inits;

typedef struct {
    long messages;
    void *data;
} idle_state_t;

static int idle_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    (void)arg;
    idle_state_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL)
        return FL_ENOMEM;
    *state = s;
    atomic_fetch_add_explicit(&idle_inits, 1, memory_order_relaxed);
    return FL_OK;
}

static int idle_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    (void)msg;
    ((idle_state_t *)state)->messages++;
    return FL_OK;
}

static void idle_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    fl_free(state);
}

static size_t idle_memory(const void *state)
{
    (void)state;
    return sizeof(idle_state_t);
}

static const fl_behaviour_t idle_behaviour = {
    .name = "bench.idle", .init = idle_init, .handle = idle_handle, .terminate = idle_terminate, .memory = idle_memory};

static double idle_actor_bytes;

static void bench_actors(void)
{
    int n = opt_actors;
    printf("\n## Memory per idle actor: %d actors (id \"idle:NNNNNN\", a %zu-byte state), half on each shard\n", n,
           sizeof(idle_state_t));
    fl_actor_t **actors = calloc((size_t)n, sizeof(*actors));
    if (actors == NULL)
        die("out of memory");
    memset(actors, 0, (size_t)n * sizeof(*actors)); /* resident before the baseline */
    atomic_store(&idle_inits, 0);
    fl_runtime_t *rt = start_runtime();
    sleep_s(0.2);
    mem_t before, after;
    take_mem(&before);
    double t0 = now_s();
    char id[32];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "idle:%06d", i);
        actors[i] = spawn(rt, i % 2, &idle_behaviour, NULL, id);
    }
    if (!WAIT_UNTIL(atomic_load(&idle_inits) == n, 60))
        die("the idle actors did not all start");
    double spawn_s = now_s() - t0;
    sleep_s(0.2); /* let the shards drop their run-queue references */
    take_mem(&after);
    size_t estimate = 0;
    for (int i = 0; i < n; i++) {
        fl_actor_stats_t st;
        fl_actor_stats(actors[i], &st);
        estimate += st.memory;
    }
    double per_rss = (double)(after.rss - before.rss) / n, per_trim = (double)(after.rss_trimmed - before.rss_trimmed) / n;
    double per_heap = (double)(after.heap - before.heap) / n, per_est = (double)estimate / n;
    printf("  spawned and initialised in %.2f s (%.0f spawns/s, from the main thread)\n", spawn_s, n / spawn_s);
    printf("    RSS growth / actor                 %8.0f bytes\n", per_rss);
    printf("    RSS growth / actor after malloc_trim %6.0f bytes\n", per_trim);
    printf("    live heap growth / actor (mallinfo2) %6.0f bytes   <- the figure compared with the target\n", per_heap);
    printf("    fl_actor_stats memory estimate      %7.0f bytes   (sizeof the actor + id + state; no malloc overhead)\n", per_est);
    result("actors.rss_per_actor", per_rss, "B");
    result("actors.heap_per_actor", per_heap, "B");
    result("actors.stats_per_actor", per_est, "B");
    idle_actor_bytes = per_heap > per_rss ? per_heap : per_rss;
    t0 = now_s();
    stop_actors(actors, n);
    printf("  stopped in %.2f s\n", now_s() - t0);
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
    free(actors);
}

/* ---- memory per tracked vehicle: a real tracker on a real database ------------------------------- */

static const char fleet_id[] = "bench-fleet";

static fl_db_service_t *dbs;

static fl_db_t *db_of(int shard, void *arg)
{
    (void)arg;
    return fl_db_service_get(dbs, shard);
}

static void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *pg_connect(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK)
        die("cannot connect to the database: %s", PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, quiet_notices, NULL);
    return pg;
}

static void pg_exec(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        die("SQL failed: %s", PQerrorMessage(pg));
    PQclear(res);
}

/* DATABASE_URL with another database name, as a key=value conninfo. */
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

/* Reads the fleet's status on a shard; the blob is kept for the caller. */
typedef struct {
    fl_trackers_t *tr;
    atomic_int done;
    int status;
    fl_blob_t *json;
    uint64_t seq;
} status_job_t;

static void status_answer(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    status_job_t *j = arg;
    j->status = status;
    j->json = json;
    j->seq = seq;
    atomic_store(&j->done, 1);
}

static void status_on_shard(void *arg)
{
    status_job_t *j = arg;
    int rc = fl_trackers_status(j->tr, fleet_id, 10000, status_answer, j);
    if (rc != FL_OK)
        status_answer(rc, NULL, 0, j);
}

/* vehicle_count in the status JSON (-1 when there is no status), the JSON's length and its seq. */
static long status_count(fl_runtime_t *rt, fl_trackers_t *tr, size_t *len, uint64_t *seq)
{
    status_job_t j = {.tr = tr};
    fl_shard_post(fl_runtime_shard(rt, 0), status_on_shard, &j);
    if (!WAIT_UNTIL(atomic_load(&j.done) == 1, 15))
        die("no status answer within 15 s");
    if (j.status != FL_OK || j.json == NULL)
        return -1;
    const char *count = strstr(fl_blob_data(j.json), "\"vehicle_count\":");
    long n = count ? atol(count + 16) : -1;
    if (len)
        *len = fl_blob_len(j.json);
    if (seq)
        *seq = j.seq;
    fl_blob_unref(j.json);
    return n;
}

/* Feeds the fleet's tracker fixes for opt_vehicles distinct vehicles, opt_fix_batch per
 * fl_trackers_apply, from a shard, the way ingest does. It keeps the tracker's mailbox short (a real
 * ingest is paced by its HTTP clients) and retries a batch refused with FL_EFULL. */
typedef struct {
    fl_runtime_t *rt;
    fl_trackers_t *tr;
    fl_shard_t *shard;
    fl_fix_t *fixes;
    int next, cur;
    fl_actor_t *tracker;
    struct event *timer;
    bool async, answered;
    int last_status;
    long efull, retries;
    atomic_int done; /* 1: all applied; -1: failed */
    int fail_status;
} driver_t;

static void pump(driver_t *d);

static void retry_later(driver_t *d, int ms)
{
    struct timeval tv = {0, ms * 1000};
    evtimer_add(d->timer, &tv);
}

static void on_driver_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

/* After an apply's answer: true to go on with the next batch at once. */
static bool settle(driver_t *d)
{
    if (d->last_status == FL_OK) {
        d->next += d->cur;
        return true;
    }
    if (d->last_status == FL_EFULL || d->last_status == FL_EUNAVAIL) {
        d->efull += d->last_status == FL_EFULL;
        if (++d->retries > 100000) {
            d->fail_status = d->last_status;
            atomic_store(&d->done, -1);
            return false;
        }
        retry_later(d, 1);
        return false;
    }
    d->fail_status = d->last_status;
    atomic_store(&d->done, -1);
    return false;
}

static void on_applied(int status, void *arg)
{
    driver_t *d = arg;
    d->last_status = status;
    d->answered = true;
    if (d->async) {
        d->async = false;
        if (settle(d))
            pump(d);
    }
}

static void pump(driver_t *d)
{
    while (d->next < opt_vehicles) {
        if (d->tracker == NULL) {
            char name[96];
            snprintf(name, sizeof(name), "tracker:%s", fleet_id);
            d->tracker = fl_registry_lookup(name);
        }
        if (d->tracker) {
            fl_actor_stats_t st;
            fl_actor_stats(d->tracker, &st);
            if (st.mailbox >= 4) {
                retry_later(d, 1);
                return;
            }
        }
        d->cur = opt_vehicles - d->next < opt_fix_batch ? opt_vehicles - d->next : opt_fix_batch;
        int64_t now_us = fl_now_wall_ms() * 1000;
        for (int i = 0; i < d->cur; i++) {
            fl_fix_t *f = &d->fixes[i];
            int v = d->next + i;
            snprintf(f->vehicle_id, sizeof(f->vehicle_id), "veh-%06d", v);
            f->lat = 59.0 + (v % 1000) * 0.001;
            f->lng = 18.0 + (v / 1000) * 0.001;
            f->recorded_us = now_us - 1000;
            f->received_us = now_us;
            f->speed_kmh = 42.5;
            f->heading_deg = (double)(v % 360);
            f->accuracy_m = 5;
            f->has = FL_FIX_SPEED | FL_FIX_HEADING | FL_FIX_ACCURACY;
        }
        d->answered = false;
        d->async = false;
        int rc = fl_trackers_apply(d->tr, fleet_id, d->fixes, d->cur, on_applied, d);
        if (rc != FL_OK) {
            d->last_status = rc;
            if (settle(d))
                continue;
            return;
        }
        if (!d->answered) {
            d->async = true; /* the tracker is starting: on_applied goes on */
            return;
        }
        if (!settle(d))
            return;
    }
    fl_actor_unref(d->tracker);
    d->tracker = NULL;
    atomic_store(&d->done, 1);
}

static void driver_start(void *arg)
{
    driver_t *d = arg;
    d->timer = evtimer_new(fl_shard_base(d->shard), on_driver_timer, d);
    pump(d);
}

static void driver_free_timer(void *arg)
{
    driver_t *d = arg;
    if (d->timer)
        event_free(d->timer);
    d->timer = NULL;
    atomic_store(&d->done, 2);
}

typedef struct {
    fl_trackers_t *tr;
    int64_t us;
    atomic_int done;
} one_fix_t;

static void one_fix_done(int status, void *arg)
{
    (void)status;
    atomic_store(&((one_fix_t *)arg)->done, 1);
}

static void apply_one_fix(void *arg)
{
    one_fix_t *o = arg;
    fl_fix_t f = {.vehicle_id = "veh-000000", .lat = 59.5, .lng = 18.5, .recorded_us = o->us, .received_us = o->us};
    if (fl_trackers_apply(o->tr, fleet_id, &f, 1, one_fix_done, o) != FL_OK)
        atomic_store(&o->done, 1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double vehicle_state_bytes, vehicle_total_bytes;
static bool tracker_ran;

static void bench_tracker(void)
{
    int n = opt_vehicles;
    printf("\n## Memory per tracked vehicle: one fleet, %d vehicles, a real tracker loaded from PostgreSQL\n", n);
    const char *url = getenv("DATABASE_URL");
    if (url == NULL || url[0] == '\0') {
        printf("  SKIPPED: DATABASE_URL is not set (the tracker loads its fleet from PostgreSQL).\n"
               "  test/bench/runtime.sh starts a throwaway PostgreSQL and sets it.\n");
        return;
    }
    char dbname[64], sql[256];
    snprintf(dbname, sizeof(dbname), "fleetd_bench_%d", (int)getpid());
    PGconn *admin = pg_connect(url);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    pg_exec(admin, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
    pg_exec(admin, sql);
    char *conninfo = conninfo_for(url, dbname);
    char err[512];
    if (fl_db_migrate(conninfo, 10000, err, sizeof(err)) != FL_OK)
        die("fl_db_migrate: %s", err);
    PGconn *pg = pg_connect(conninfo);
    pg_exec(pg, "INSERT INTO fleets (id, name) VALUES ('bench-fleet', 'runtime_bench')");
    PQfinish(pg);

    /* the tracker settings fleetd itself would use (defaults, or FLEETD_TRACKER_* if set) */
    fl_config_t cfg;
    if (fl_config_load(&cfg, err, sizeof(err)) != FL_OK)
        die("settings: %s", err);
    fl_runtime_t *rt = start_runtime();
    fl_pubsub_t *ps = NULL;
    fl_trackers_t *tr = NULL;
    fl_db_options_t dbo = {.conninfo = conninfo};
    fl_trackers_opts_t topts = {.idle_timeout_ms = cfg.tracker_idle_timeout_ms,
                                .replay = cfg.tracker_replay,
                                .mailbox = cfg.tracker_mailbox,
                                .snapshot_min_interval_ms = cfg.tracker_snapshot_interval_ms,
                                .db = db_of};
    printf("  tracker settings: replay %d, mailbox %d, snapshot interval %d ms, idle timeout %d ms; %d fixes per apply\n",
           topts.replay, topts.mailbox, topts.snapshot_min_interval_ms, topts.idle_timeout_ms, opt_fix_batch);
    if (fl_db_service_new(rt, &dbo, &dbs) != FL_OK || fl_pubsub_new(rt, &ps) != FL_OK ||
        fl_trackers_new(rt, ps, &topts, &tr) != FL_OK)
        die("cannot create the services");
    fl_child_spec_t kids[3] = {
        {.id = "db", .sup = fl_db_service_spec(dbs)},
        {.id = "pubsub", .sup = fl_pubsub_spec(ps)},
        {.id = "trackers", .sup = fl_trackers_spec(tr)},
    };
    fl_sup_spec_t spec = {.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 3};
    fl_actor_t *root = NULL;
    if (fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) != FL_OK)
        die("the tree did not start");
    if (!WAIT_UNTIL(fl_db_service_up(dbs), 10))
        die("the database connections did not come up");
    if (status_count(rt, tr, NULL, NULL) != 0)
        die("the empty fleet's status did not load");

    int feed_shard = (fl_trackers_shard_of(tr, fleet_id) + 1) % 2;
    driver_t *d = calloc(1, sizeof(*d));
    d->fixes = calloc((size_t)opt_fix_batch, sizeof(fl_fix_t));
    d->rt = rt;
    d->tr = tr;
    d->shard = fl_runtime_shard(rt, feed_shard);
    memset(d->fixes, 0, (size_t)opt_fix_batch * sizeof(fl_fix_t));
    char name[96];
    snprintf(name, sizeof(name), "tracker:%s", fleet_id);
    fl_actor_t *tracker = fl_registry_lookup(name);
    if (tracker == NULL)
        die("the tracker is not registered");
    sleep_s(0.3);
    mem_t before, after;
    fl_actor_stats_t st0, st1;
    fl_actor_stats(tracker, &st0);
    take_mem(&before);
    reset_hwm();

    sample_t w0, w1;
    take_sample(&w0);
    double t0 = now_s(), c0 = cpu_s();
    fl_shard_post(d->shard, driver_start, d);
    if (!WAIT_UNTIL(atomic_load(&d->done) != 0, 600))
        die("feeding the tracker took over 10 minutes");
    if (atomic_load(&d->done) < 0)
        die("feeding the tracker failed: %s", fl_strerror(d->fail_status));
    fl_actor_stats_t st;
    WAIT_UNTIL((fl_actor_stats(tracker, &st), st.mailbox == 0), 60);
    double feed_s = now_s() - t0, feed_cpu = cpu_s() - c0;
    take_sample(&w1);
    size_t json_len = 0;
    long count = -1;
    if (!WAIT_UNTIL((count = status_count(rt, tr, &json_len, NULL)) == n, 120))
        die("the status did not reach the vehicle count (last: %s)", count < 0 ? "none" : "fewer");
    double visible_s = now_s() - t0;
    sleep_s(0.5); /* any rebuild in progress is over; the status is final */
    status_count(rt, tr, &json_len, NULL);
    fl_actor_stats(tracker, &st1);
    take_mem(&after);

    /* the replay ring is a fixed cost per fleet, not per vehicle: take it out of the state figure.
     * Each of its events is one vehicle object plus ,"seq":N (about 23 bytes) in a blob (16-byte
     * header + NUL) in a malloc chunk (8-byte header, 16-byte rounding). */
    double vehicle_json = (double)json_len / n;
    size_t event = ((size_t)vehicle_json + 23 + 16 + 1 + 8 + 15) & ~(size_t)15;
    double ring = (double)topts.replay * (double)(event + sizeof(void *) * 2);
    double heap = (double)(after.heap - before.heap), rss = (double)(after.rss_trimmed - before.rss_trimmed);
    double snap = (double)json_len + 16 + 1;
    printf("  fed %d fixes (%d distinct vehicles) in %.2f s: %.0f fixes/s handled by the tracker, %.2f CPU-s (%ld FL_EFULL "
           "retries); all %d in the status after %.2f s\n",
           n, n, feed_s, n / feed_s, feed_cpu, d->efull, n, visible_s);
    printf("  status JSON: %zu bytes = %.0f bytes per vehicle (one immutable snapshot, shared by all readers)\n", json_len,
           vehicle_json);
    printf("  replay ring (estimate, fixed per fleet): %d events = %.0f KiB\n", topts.replay, ring / 1024);
    printf("    live heap growth (mallinfo2)       %12.0f bytes = %6.0f bytes/vehicle  (state + snapshot + ring)\n", heap,
           heap / n);
    printf("    RSS growth after malloc_trim       %12.0f bytes = %6.0f bytes/vehicle\n", rss, rss / n);
    printf("    RSS growth as the kernel saw it    %12ld bytes = %6.0f bytes/vehicle  (freed memory not given back "
           "included)\n",
           after.rss - before.rss, (double)(after.rss - before.rss) / n);
    printf("    peak RSS growth while feeding      %12ld bytes = %6.0f bytes/vehicle  (VmHWM: rebuilds' transient "
           "buffers included)\n",
           after.hwm - before.rss_trimmed, (double)(after.hwm - before.rss_trimmed) / n);
    printf("    state per vehicle                  %6.0f bytes   (heap growth - snapshot - ring) / vehicles\n",
           (heap - snap - ring) / n);
    printf("    state + serialized snapshot        %6.0f bytes   (heap growth - ring) / vehicles\n", (heap - ring) / n);
    printf("    tracker's own estimate (fl_actor_stats) grew %.0f bytes = %.0f bytes/vehicle (map + vehicle_t + ring; no "
           "malloc overhead, no snapshot)\n",
           (double)st1.memory - (double)st0.memory, ((double)st1.memory - (double)st0.memory) / n);
    vehicle_state_bytes = (heap - snap - ring) / n;
    vehicle_total_bytes = (heap - ring) / n;
    tracker_ran = true;
    result("tracker.state_per_vehicle", vehicle_state_bytes, "B");
    result("tracker.state_snapshot_per_vehicle", vehicle_total_bytes, "B");
    result("tracker.snapshot_per_vehicle", vehicle_json, "B");
    result("tracker.rss_trimmed_per_vehicle", rss / n, "B");
    result("tracker.peak_rss_per_vehicle", (double)(after.hwm - before.rss_trimmed) / n, "B");
    result("tracker.stats_per_vehicle", ((double)st1.memory - (double)st0.memory) / n, "B");
    result("tracker.feed.fixes_per_s", n / feed_s, "fix/s");
    result("tracker.feed.cpu_us_per_fix", feed_cpu * 1e6 / n, "us");
    window_t w = window_of(&w0, &w1);
    print_window("tracker.feed", &w);

    /* how long one rebuild of the status takes at this size: one more fix, after the minimum
     * interval has passed (so it rebuilds at once), until a status with the new seq is readable */
    double rebuild[5];
    take_sample(&w0);
    for (int i = 0; i < 5; i++) {
        uint64_t seq0 = 0, seq1 = 0;
        sleep_s(0.1 + topts.snapshot_min_interval_ms / 1000.0);
        status_count(rt, tr, NULL, &seq0);
        double r0 = now_s();
        one_fix_t one = {.tr = tr, .us = fl_now_wall_ms() * 1000};
        fl_shard_post(d->shard, apply_one_fix, &one);
        if (!WAIT_UNTIL((status_count(rt, tr, NULL, &seq1), seq1 > seq0), 30))
            die("the status did not change after one more fix");
        rebuild[i] = now_s() - r0;
        WAIT_UNTIL(atomic_load(&one.done) == 1, 5);
    }
    qsort(rebuild, 5, sizeof(double), cmp_double);
    printf("  one more fix until the new status is readable, at %d vehicles: median %.1f ms (min %.1f, max %.1f; 5 tries)\n", n,
           rebuild[2] * 1e3, rebuild[0] * 1e3, rebuild[4] * 1e3);
    result("tracker.rebuild.fix_to_status_ms", rebuild[2] * 1e3, "ms");
    take_sample(&w1);
    w = window_of(&w0, &w1);
    print_window("tracker.rebuild", &w);

    fl_actor_unref(tracker);
    fl_shard_post(d->shard, driver_free_timer, d);
    WAIT_UNTIL(atomic_load(&d->done) == 2, 5);
    fl_sup_stop(root, 30000);
    fl_actor_unref(root);
    fl_runtime_stop(rt);
    fl_trackers_free(tr);
    fl_pubsub_free(ps);
    fl_db_service_free(dbs);
    fl_runtime_free(rt);
    fl_config_free(&cfg);
    free(d->fixes);
    free(d);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
    pg_exec(admin, sql);
    PQfinish(admin);
    free(conninfo);
}

/* ---- main ---------------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: runtime_bench [--duration=S] [--warmup=S] [--batch=N] [--pairs=N] [--actors=N] [--vehicles=N]\n"
                    "                     [--fix-batch=N] [--pin=0|1] [--only=actors,tracker,within,cross,latency]\n"
                    "Memory per tracked vehicle needs DATABASE_URL (a PostgreSQL superuser URL); without it, it is skipped.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--duration=", 11) == 0)
            opt_duration = atof(a + 11);
        else if (strncmp(a, "--warmup=", 9) == 0)
            opt_warmup = atof(a + 9);
        else if (strncmp(a, "--batch=", 8) == 0)
            opt_batch = atoi(a + 8);
        else if (strncmp(a, "--pairs=", 8) == 0)
            opt_pairs = atoi(a + 8);
        else if (strncmp(a, "--actors=", 9) == 0)
            opt_actors = atoi(a + 9);
        else if (strncmp(a, "--vehicles=", 11) == 0)
            opt_vehicles = atoi(a + 11);
        else if (strncmp(a, "--fix-batch=", 12) == 0)
            opt_fix_batch = atoi(a + 12);
        else if (strncmp(a, "--pin=", 6) == 0)
            g_pin = atoi(a + 6) != 0;
        else if (strncmp(a, "--only=", 7) == 0)
            opt_only = a + 7;
        else
            usage();
    }
    if (opt_duration <= 0 || opt_warmup < 0 || opt_batch < 1 || opt_pairs < 1 || opt_actors < 1 || opt_vehicles < 1 ||
        opt_fix_batch < 1)
        usage();
    fl_log_init(FL_LOG_WARN, FL_LOG_JSON);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# fleetd runtime_bench\n");
    print_machine();

    /* memory first, on a fresh heap */
    if (selected("actors"))
        bench_actors();
    if (selected("tracker"))
        bench_tracker();
    if (selected("within")) {
        bench_within();
        bench_within_both();
    }
    if (selected("cross"))
        bench_cross();
    if (selected("latency"))
        bench_latency();

    printf("\n## Against the targets\n");
    if (selected("cross"))
        printf("  cross-shard messages/s >= 1,000,000: one way %.0f, both ways %.0f, %d pairs both ways %.0f  -> %s\n",
               cross_one_way_rate, cross_both_rate, opt_pairs, cross_many_rate,
               cross_one_way_rate >= 1e6 ? "met"
                                         : (cross_both_rate >= 1e6 || cross_many_rate >= 1e6 ? "met in total only" : "MISSED"));
    if (selected("tracker")) {
        if (tracker_ran)
            printf("  bytes per tracked vehicle <= 200: state %.0f, state + snapshot %.0f  -> %s\n", vehicle_state_bytes,
                   vehicle_total_bytes,
                   vehicle_total_bytes <= 200 ? "met" : (vehicle_state_bytes <= 200 ? "met for the state only" : "MISSED"));
        else
            printf("  bytes per tracked vehicle <= 200: not measured (no DATABASE_URL)\n");
    }
    if (selected("actors"))
        printf("  bytes per idle actor <= 1024: %.0f  -> %s\n", idle_actor_bytes, idle_actor_bytes <= 1024 ? "met" : "MISSED");
    if (unclean_windows)
        printf("  %d measurement window(s) NOT CLEAN (other processes > 10%% or steal > 5%% of the machine)\n", unclean_windows);
    result("unclean_windows", unclean_windows, "windows");
    return 0;
}
