/* Request statistics for /metrics: each shard counts its own requests in its own slots (a relaxed
 * load and store per counter, since only that shard's thread writes them), and a scrape sums the
 * shards. */
#include "http_internal.h"

#include <stdio.h>

const double fl_http_latency_bounds[FL_HTTP_LATENCY_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* The same bounds in nanoseconds, for the hot path. */
static const int64_t bounds_ns[FL_HTTP_LATENCY_BUCKETS] = {500000,     1000000,    2500000,    5000000,    10000000,
                                                           25000000,   50000000,   100000000,  250000000,  500000000,
                                                           1000000000, 2500000000, 5000000000, 10000000000};

static const short codes[] = {101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404,
                              405, 408, 409, 411, 413, 415, 417, 422, 429, 431, 500, 503};
#define NKNOWN ((int)(sizeof(codes) / sizeof(codes[0])))
_Static_assert(NKNOWN + 5 == FL_HTTP_STAT_CODES, "one slot per listed code and one per class");

const char *fl_http_stat_code(int slot)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    static _Thread_local char text[8];
    if (slot < 0 || slot >= FL_HTTP_STAT_CODES)
        return "";
    if (slot >= NKNOWN)
        return classes[slot - NKNOWN];
    snprintf(text, sizeof(text), "%d", codes[slot]);
    return text;
}

static int status_slot(int status)
{
    for (int i = 0; i < NKNOWN; i++)
        if (codes[i] == status)
            return i;
    int cls = status / 100;
    return NKNOWN + (cls < 1 ? 0 : cls > 5 ? 4 : cls - 1);
}

static inline void bump(_Atomic uint64_t *v, uint64_t by)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + by, memory_order_relaxed);
}

void stats_count(http_conn_t *c, const fl_http_req_t *req, int status)
{
    route_stats_t *all = c->hs->stats;
    if (all == NULL)
        return;
    route_stats_t *st = &all[req->ep ? req->ep->index : router_count(c->hs->srv->router)];
    int64_t ns = req->start_ns ? fl_now_mono_ns() - req->start_ns : 0;
    if (ns < 0)
        ns = 0;
    int b = 0;
    while (b < FL_HTTP_LATENCY_BUCKETS && ns > bounds_ns[b])
        b++;
    bump(&st->codes[status_slot(status)], 1);
    bump(&st->buckets[b], 1);
    bump(&st->sum_ns, (uint64_t)ns);
}

void stats_count_refused(struct http_shard *hs)
{
    route_stats_t *all = hs->stats;
    if (all == NULL)
        return;
    route_stats_t *st = &all[router_count(hs->srv->router)]; /* no route read it: "unmatched" */
    bump(&st->codes[status_slot(503)], 1);
    bump(&st->buckets[0], 1);
}

void fl_http_server_stats(const fl_http_server_t *srv, void (*fn)(const fl_http_route_stats_t *st, void *arg), void *arg)
{
    if (srv == NULL || !srv->listening)
        return;
    unsigned n = router_count(srv->router);
    for (unsigned r = 0; r <= n; r++) {
        fl_http_route_stats_t out = {.route = router_pattern(srv->router, r)};
        uint64_t sum_ns = 0;
        for (int s = 0; s < srv->nshards; s++) {
            const route_stats_t *st = srv->shards[s].stats ? &srv->shards[s].stats[r] : NULL;
            if (st == NULL)
                continue;
            for (int i = 0; i < FL_HTTP_STAT_CODES; i++)
                out.codes[i] += atomic_load_explicit(&st->codes[i], memory_order_relaxed);
            for (int i = 0; i <= FL_HTTP_LATENCY_BUCKETS; i++)
                out.buckets[i] += atomic_load_explicit(&st->buckets[i], memory_order_relaxed);
            sum_ns += atomic_load_explicit(&st->sum_ns, memory_order_relaxed);
        }
        for (int i = 1; i <= FL_HTTP_LATENCY_BUCKETS; i++)
            out.buckets[i] += out.buckets[i - 1];
        out.sum_seconds = (double)sum_ns / 1e9;
        fn(&out, arg);
    }
}
