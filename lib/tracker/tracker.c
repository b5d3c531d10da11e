/* The tracker actor and the trackers service around it. */
#include "tracker_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fl_trackers {
    fl_runtime_t *rt;
    fl_pubsub_t *ps;
    fl_trackers_opts_t opts;
    int nshards;
    fl_sup_spec_t dynamic_spec;  /* each trackers:N */
    fl_child_spec_t *partitions; /* trackers:0 .. trackers:N-1 */
    char (*ids)[32];
    fl_sup_spec_t spec; /* "trackers" */
};

enum { TR_FIXES = 1, TR_LOADED, TR_AWAIT, TR_REPLAY, TR_REBUILD, TR_IDLE, TR_RETRY_LOAD };

typedef struct {
    int n;
    fl_fix_t fixes[];
} batch_t;

typedef struct {
    int status; /* FL_OK, FL_ENOTFOUND (no such fleet) or an error */
    batch_t *rows;
} loaded_t;

typedef struct {
    uint64_t seq;
    fl_blob_t *event;
} ring_slot_t;

typedef struct {
    fl_trackers_t *tr;
    fl_actor_t *self;
    char fleet_id[65];
    char topic[72];
    fl_map_t *vehicles; /* vehicle id -> vehicle_t * */
    uint64_t seq;

    bool loaded;
    bool missing; /* the fleet does not exist */
    int load_attempts;
    fl_call_t **waiters; /* TR_AWAIT calls until loaded */
    int nwaiters;

    ring_slot_t *ring; /* allocated on the first change */
    int ring_head, ring_len;

    bool dirty; /* the published snapshot is behind */
    int64_t built_ms;
    struct event *rebuild_timer, *idle_timer, *retry_timer;
    int64_t active_ms; /* last fix */
} tracker_t;

/* ---- helpers on the tracker's own thread ---- */

static void cast_self(fl_actor_t *self, int type)
{
    /* timers tell the handler by message, so only the handler touches the state */
    fl_actor_notify(self, type, NULL, NULL);
}

static void on_rebuild_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cast_self(arg, TR_REBUILD);
}

static void on_idle_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cast_self(arg, TR_IDLE);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cast_self(arg, TR_RETRY_LOAD);
}

static void rebuild(tracker_t *t)
{
    fl_blob_t *json = fl_status_json(t->fleet_id, t->vehicles);
    if (json == NULL) {
        /* keep the old snapshot; try again shortly */
        struct timeval tv = {0, 50 * 1000};
        evtimer_add(t->rebuild_timer, &tv);
        return;
    }
    fl_actor_publish(t->self, json, t->seq);
    t->dirty = false;
    t->built_ms = fl_now_mono_ms();
}

/* Serialises the status JSON at most once per snapshot_min_interval_ms under a stream of changes;
 * the first change after a quiet spell is visible at once. */
static void snapshot_changed(tracker_t *t)
{
    if (!t->loaded)
        return;
    t->dirty = true;
    int64_t wait = t->built_ms + t->tr->opts.snapshot_min_interval_ms - fl_now_mono_ms();
    if (wait <= 0) {
        rebuild(t);
        return;
    }
    if (!evtimer_pending(t->rebuild_timer, NULL)) {
        struct timeval tv = {.tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000};
        evtimer_add(t->rebuild_timer, &tv);
    }
}

static void ring_push(tracker_t *t, uint64_t seq, fl_blob_t *event)
{
    int cap = t->tr->opts.replay;
    if (cap <= 0)
        return;
    if (t->ring == NULL && (t->ring = fl_calloc((size_t)cap, sizeof(*t->ring))) == NULL)
        return; /* no replay for now: a rejoining client gets a snapshot instead */
    int slot = (t->ring_head + t->ring_len) % cap;
    if (t->ring_len == cap) {
        fl_blob_unref(t->ring[t->ring_head].event);
        slot = t->ring_head;
        t->ring_head = (t->ring_head + 1) % cap;
    } else {
        t->ring_len++;
    }
    t->ring[slot] = (ring_slot_t){seq, fl_blob_ref(event)};
}

/* Applies one fix; returns true when it moved the vehicle. A fix not newer than the vehicle's
 * latest never moves it back (it stays in history, which the audit trail keeps). */
static bool apply_fix(tracker_t *t, const fl_fix_t *f, bool live)
{
    vehicle_t *v = fl_map_get(t->vehicles, f->vehicle_id);
    if (v && f->recorded_us <= v->recorded_us)
        return false;
    if (v == NULL) {
        v = fl_malloc(sizeof(*v));
        if (v == NULL || fl_map_put(t->vehicles, f->vehicle_id, v, NULL) != FL_OK) {
            fl_free(v);
            fl_log(FL_LOG_ERROR, "tracker.no_memory", FL_MSG("no memory for a new vehicle; fix not shown live"),
                   FL_STR("fleet", t->fleet_id), FL_STR("vehicle", f->vehicle_id));
            return false;
        }
    }
    *v = (vehicle_t){.lat = f->lat,
                     .lng = f->lng,
                     .recorded_us = f->recorded_us,
                     .received_us = f->received_us,
                     .speed_kmh = (float)f->speed_kmh,
                     .heading_deg = (float)f->heading_deg,
                     .accuracy_m = (float)f->accuracy_m,
                     .has = (uint8_t)f->has};
    if (!live)
        return true;

    t->seq++;
    fl_strbuf_t b = {0};
    fl_vehicle_json(&b, f->vehicle_id, v, t->seq);
    fl_blob_t *event = b.failed ? NULL : fl_blob_from(b.p, b.len);
    fl_free(b.p);
    if (event == NULL) {
        fl_log(FL_LOG_ERROR, "tracker.no_memory", FL_MSG("no memory for a position event; subscribers will resync"),
               FL_STR("fleet", t->fleet_id));
        return true;
    }
    ring_push(t, t->seq, event);
    int rc = fl_pubsub_publish(t->tr->ps, t->topic, event);
    if (rc != FL_OK)
        fl_log(FL_LOG_WARN, "tracker.publish_failed", FL_MSG("a position could not reach every shard's subscribers"),
               FL_STR("fleet", t->fleet_id), FL_STR("error", fl_strerror(rc)));
    fl_blob_unref(event);
    return true;
}

static void answer_waiters(tracker_t *t, int status)
{
    for (int i = 0; i < t->nwaiters; i++)
        fl_call_reply(t->waiters[i], status, NULL, NULL);
    fl_free(t->waiters);
    t->waiters = NULL;
    t->nwaiters = 0;
}

/* ---- loading from PostgreSQL ---- */

/* The fleet's latest positions, and the fixes of its audit jobs that have not run yet: those are
 * acknowledged but not in vehicle_latest until the job runs (jobs.h, "the audit trail"). The
 * tracker's merge never moves a vehicle back, so the order of the rows does not matter. No row at
 * all means no such fleet. The second part reads only pending jobs naming the fleet (index
 * jobs_pending_audit_fleets); a job whose body cannot be read makes this fail and the load is
 * retried, until the audit worker has discarded that job. */
static const char load_sql[] =
    "SELECT v.vehicle_id, v.lat, v.lng,"
    " (extract(epoch FROM v.recorded_at) * 1000000)::bigint,"
    " (extract(epoch FROM v.received_at) * 1000000)::bigint,"
    " v.speed_kmh, v.heading_deg, v.accuracy_m"
    " FROM fleets f LEFT JOIN vehicle_latest v ON v.fleet_id = f.id WHERE f.id = $1"
    " UNION ALL"
    " SELECT x.fix ->> 'vehicle_id', (x.fix ->> 'lat')::float8, (x.fix ->> 'lng')::float8,"
    " (extract(epoch FROM (x.fix ->> 'recorded_at')::timestamptz) * 1000000)::bigint,"
    " (extract(epoch FROM (j.args ->> 'received_at')::timestamptz) * 1000000)::bigint,"
    " CASE WHEN jsonb_typeof(x.fix -> 'speed_kmh') = 'number' THEN (x.fix ->> 'speed_kmh')::float8 END,"
    " CASE WHEN jsonb_typeof(x.fix -> 'heading_deg') = 'number' THEN (x.fix ->> 'heading_deg')::float8 END,"
    " CASE WHEN jsonb_typeof(x.fix -> 'accuracy_m') = 'number' THEN (x.fix ->> 'accuracy_m')::float8 END"
    " FROM fleets f"
    " JOIN jobs j ON j.queue = 'audit' AND j.state IN ('available', 'scheduled', 'executing', 'retryable')"
    "  AND j.args -> 'fleets' ? $1"
    " CROSS JOIN LATERAL (SELECT (j.args ->> 'body')::jsonb -> 'fixes' AS fixes) b"
    " CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(b.fixes) = 'array' THEN b.fixes ELSE '[]' END) x(fix)"
    " WHERE f.id = $1 AND x.fix ->> 'fleet_id' = $1 AND jsonb_typeof(x.fix -> 'vehicle_id') = 'string'"
    "  AND jsonb_typeof(x.fix -> 'lat') = 'number' AND jsonb_typeof(x.fix -> 'lng') = 'number'"
    "  AND jsonb_typeof(x.fix -> 'recorded_at') = 'string'";

static void loaded_free(void *p)
{
    loaded_t *l = p;
    fl_free(l->rows);
    fl_free(l);
}

static void on_load_result(const PGresult *res, int status, const char *err, void *arg)
{
    fl_actor_t *self = arg;
    loaded_t *l = fl_calloc(1, sizeof(*l));
    if (l == NULL) {
        fl_actor_unref(self);
        return; /* the retry timer tries again */
    }
    l->status = status;
    if (status == FL_OK) {
        int n = PQntuples(res);
        if (n == 0) {
            l->status = FL_ENOTFOUND;
        } else if ((l->rows = fl_malloc(sizeof(batch_t) + (size_t)n * sizeof(fl_fix_t))) == NULL) {
            l->status = FL_ENOMEM;
        } else {
            int k = 0;
            for (int i = 0; i < n; i++) {
                /* a NULL id: the fleet exists but has no vehicles yet; an id over 64 bytes can come
                 * only from a job that ingest never accepted (the audit worker discards it) */
                if (PQgetisnull(res, i, 0) || PQgetlength(res, i, 0) >= (int)sizeof(l->rows->fixes[0].vehicle_id))
                    continue;
                fl_fix_t *f = &l->rows->fixes[k++];
                memset(f, 0, sizeof(*f));
                snprintf(f->vehicle_id, sizeof(f->vehicle_id), "%s", PQgetvalue(res, i, 0));
                f->lat = strtod(PQgetvalue(res, i, 1), NULL);
                f->lng = strtod(PQgetvalue(res, i, 2), NULL);
                f->recorded_us = strtoll(PQgetvalue(res, i, 3), NULL, 10);
                f->received_us = strtoll(PQgetvalue(res, i, 4), NULL, 10);
                static const unsigned flags[] = {FL_FIX_SPEED, FL_FIX_HEADING, FL_FIX_ACCURACY};
                double *values[] = {&f->speed_kmh, &f->heading_deg, &f->accuracy_m};
                for (int j = 0; j < 3; j++) {
                    if (!PQgetisnull(res, i, 5 + j)) {
                        *values[j] = strtod(PQgetvalue(res, i, 5 + j), NULL);
                        f->has |= flags[j];
                    }
                }
            }
            l->rows->n = k;
        }
    } else {
        fl_log(FL_LOG_WARN, "tracker.load_failed", FL_MSG("could not load the fleet's latest positions; retrying"),
               FL_STR("actor", fl_actor_id(self)), FL_STR("error", err ? err : fl_strerror(status)));
    }
    fl_actor_notify(self, TR_LOADED, l, loaded_free);
    fl_actor_unref(self);
}

static void start_load(tracker_t *t)
{
    fl_db_t *db = t->tr->opts.db ? t->tr->opts.db(fl_shard_index(fl_actor_shard(t->self)), t->tr->opts.db_arg) : NULL;
    const char *params[] = {t->fleet_id};
    fl_actor_ref(t->self);
    int rc = db ? fl_db_query(db, load_sql, 1, params, on_load_result, t->self) : FL_EUNAVAIL;
    if (rc != FL_OK) {
        fl_actor_unref(t->self);
        /* back off: 100 ms, 200 ms, ... up to 2 s */
        int ms = 100 << (t->load_attempts < 5 ? t->load_attempts : 5);
        if (ms > 2000)
            ms = 2000;
        t->load_attempts++;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        evtimer_add(t->retry_timer, &tv);
    }
}

static int on_loaded(tracker_t *t, loaded_t *l)
{
    if (l->status == FL_ENOTFOUND) {
        /* Stay until idle, answering "no such fleet" from memory: repeated reads of a wrong id
         * cost no database query each. */
        t->missing = true;
        t->loaded = true;
        answer_waiters(t, FL_ENOTFOUND);
        return FL_OK;
    }
    if (l->status != FL_OK) {
        t->load_attempts++;
        struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
        evtimer_add(t->retry_timer, &tv);
        return FL_OK;
    }
    /* Merge: fixes that arrived while loading are newer or equal, and apply_fix never moves a
     * vehicle backwards, so the order of the two does not matter. */
    for (int i = 0; i < l->rows->n; i++)
        apply_fix(t, &l->rows->fixes[i], false);
    t->loaded = true;
    t->load_attempts = 0;
    rebuild(t);
    answer_waiters(t, FL_OK);
    fl_log(FL_LOG_DEBUG, "tracker.loaded", FL_MSG("tracker loaded"), FL_STR("fleet", t->fleet_id),
           FL_INT("vehicles", (long long)fl_map_count(t->vehicles)));
    return FL_OK;
}

/* ---- the behaviour ---- */

static void tracker_free(tracker_t *t);

static int tracker_init(fl_actor_t *self, void *arg, void **state)
{
    fl_trackers_t *tr = ((void **)arg)[0];
    const char *fleet_id = ((void **)arg)[1];
    tracker_t *t = fl_calloc(1, sizeof(*t));
    if (t == NULL)
        return FL_ENOMEM;
    t->tr = tr;
    t->self = self;
    snprintf(t->fleet_id, sizeof(t->fleet_id), "%s", fleet_id);
    snprintf(t->topic, sizeof(t->topic), "fleet:%s", fleet_id);
    /* seq continues across restarts without being stored: it starts at the wall clock in
     * microseconds, which a fleet's changes cannot outrun */
    t->seq = (uint64_t)fl_now_wall_ms() * 1000;
    t->active_ms = fl_now_mono_ms();
    struct event_base *base = fl_shard_base(fl_actor_shard(self));
    t->vehicles = fl_map_new();
    t->rebuild_timer = evtimer_new(base, on_rebuild_timer, self);
    t->idle_timer = evtimer_new(base, on_idle_timer, self);
    t->retry_timer = evtimer_new(base, on_retry_timer, self);
    if (!t->vehicles || !t->rebuild_timer || !t->idle_timer || !t->retry_timer) {
        tracker_free(t); /* terminate is not called after a failed init */
        return FL_ENOMEM;
    }
    int idle = tr->opts.idle_timeout_ms;
    struct timeval tv = {.tv_sec = idle / 1000, .tv_usec = (idle % 1000) * 1000};
    evtimer_add(t->idle_timer, &tv);
    start_load(t);
    *state = t;
    return FL_OK;
}

static void free_vehicle(void *v)
{
    fl_free(v);
}

static void tracker_free(tracker_t *t)
{
    if (t == NULL)
        return;
    answer_waiters(t, FL_ECLOSED);
    if (t->rebuild_timer)
        event_free(t->rebuild_timer);
    if (t->idle_timer)
        event_free(t->idle_timer);
    if (t->retry_timer)
        event_free(t->retry_timer);
    for (int i = 0; t->ring && i < t->ring_len; i++)
        fl_blob_unref(t->ring[(t->ring_head + i) % t->tr->opts.replay].event);
    fl_free(t->ring);
    fl_map_free(t->vehicles, free_vehicle);
    fl_free(t);
}

typedef struct {
    int n;
    uint64_t seq;
    fl_blob_t *events[];
} replay_t;

static void replay_free(void *p)
{
    replay_t *r = p;
    for (int i = 0; i < r->n; i++)
        fl_blob_unref(r->events[i]);
    fl_free(r);
}

static void on_replay(tracker_t *t, fl_msg_t *msg)
{
    uint64_t last = *(const uint64_t *)msg->data;
    if (!t->loaded) {
        fl_actor_reply(msg, FL_ERANGE, NULL, NULL);
        return;
    }
    uint64_t missed = last >= t->seq ? 0 : t->seq - last;
    /* the ring holds seqs (seq - ring_len, seq]; more missed than that, or a seq from another
     * incarnation's future, means a snapshot */
    if (last > t->seq || missed > (uint64_t)t->ring_len || (missed > 0 && t->ring == NULL)) {
        fl_actor_reply(msg, FL_ERANGE, NULL, NULL);
        return;
    }
    replay_t *r = fl_malloc(sizeof(*r) + missed * sizeof(fl_blob_t *));
    if (r == NULL) {
        fl_actor_reply(msg, FL_ENOMEM, NULL, NULL);
        return;
    }
    r->n = (int)missed;
    r->seq = t->seq;
    int cap = t->tr->opts.replay;
    for (int i = 0; i < r->n; i++) {
        ring_slot_t *slot = &t->ring[(t->ring_head + t->ring_len - r->n + i) % cap];
        r->events[i] = fl_blob_ref(slot->event);
    }
    /* a seq the ring never held (a gap from an event that could not be built) is a snapshot too */
    if (r->n > 0 && t->ring[(t->ring_head + t->ring_len - r->n) % cap].seq != last + 1) {
        replay_free(r);
        fl_actor_reply(msg, FL_ERANGE, NULL, NULL);
        return;
    }
    fl_actor_reply(msg, FL_OK, r, replay_free);
}

static int tracker_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    tracker_t *t = state;
    switch (msg->type) {
    case TR_FIXES: {
        const batch_t *b = msg->data;
        if (t->missing)
            return FL_OK; /* ingest refuses fixes for unknown fleets before they get here */
        bool changed = false;
        for (int i = 0; i < b->n; i++)
            changed |= apply_fix(t, &b->fixes[i], true);
        t->active_ms = fl_now_mono_ms();
        if (changed)
            snapshot_changed(t);
        return FL_OK;
    }
    case TR_LOADED:
        return on_loaded(t, msg->data);
    case TR_RETRY_LOAD:
        if (!t->loaded)
            start_load(t);
        return FL_OK;
    case TR_AWAIT:
        if (t->loaded)
            fl_actor_reply(msg, t->missing ? FL_ENOTFOUND : FL_OK, NULL, NULL);
        else {
            fl_call_t **w = fl_realloc(t->waiters, (size_t)(t->nwaiters + 1) * sizeof(*w));
            if (w == NULL) {
                fl_actor_reply(msg, FL_ENOMEM, NULL, NULL);
                return FL_OK;
            }
            t->waiters = w;
            t->waiters[t->nwaiters++] = fl_actor_keep_call(msg);
        }
        return FL_OK;
    case TR_REPLAY:
        on_replay(t, msg);
        return FL_OK;
    case TR_REBUILD:
        if (t->dirty)
            rebuild(t);
        return FL_OK;
    case TR_IDLE: {
        int idle = t->tr->opts.idle_timeout_ms;
        int64_t quiet = fl_now_mono_ms() - t->active_ms;
        if (quiet >= idle && fl_pubsub_count(t->tr->ps, t->topic) == 0) {
            fl_log(FL_LOG_INFO, "tracker.idle_stop", FL_MSG("stopping an idle tracker"), FL_STR("fleet", t->fleet_id));
            return FL_STOP_NORMAL;
        }
        int64_t next = quiet >= idle ? idle : idle - quiet;
        struct timeval tv = {.tv_sec = next / 1000, .tv_usec = (next % 1000) * 1000};
        evtimer_add(t->idle_timer, &tv);
        return FL_OK;
    }
    default:
        return FL_EINVAL;
    }
}

static void tracker_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)kind;
    fl_actor_publish(self, NULL, 0); /* readers go to the next incarnation */
    tracker_free(state);
}

static size_t tracker_memory(const void *state)
{
    const tracker_t *t = state;
    size_t bytes = sizeof(*t) + fl_map_memory(t->vehicles) + fl_map_count(t->vehicles) * sizeof(vehicle_t);
    if (t->ring) {
        bytes += (size_t)t->tr->opts.replay * sizeof(ring_slot_t);
        for (int i = 0; i < t->ring_len; i++)
            bytes += fl_blob_len(t->ring[(t->ring_head + i) % t->tr->opts.replay].event) + 16;
    }
    return bytes;
}

static const fl_behaviour_t tracker_behaviour = {
    .name = "tracker",
    .init = tracker_init,
    .handle = tracker_handle,
    .terminate = tracker_terminate,
    .memory = tracker_memory,
};

/* ---- the service ---- */

int fl_trackers_shard_of(const fl_trackers_t *tr, const char *fleet_id)
{
    uint32_t h = 2166136261u;
    for (const char *p = fleet_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return (int)(h % (uint32_t)tr->nshards);
}

int fl_trackers_new(fl_runtime_t *rt, fl_pubsub_t *ps, const fl_trackers_opts_t *opts, fl_trackers_t **out)
{
    fl_trackers_t *tr = fl_calloc(1, sizeof(*tr));
    if (tr == NULL)
        return FL_ENOMEM;
    tr->rt = rt;
    tr->ps = ps;
    tr->opts = *opts;
    if (tr->opts.replay < 0)
        tr->opts.replay = 0;
    tr->nshards = fl_runtime_nshards(rt);
    tr->partitions = fl_calloc((size_t)tr->nshards, sizeof(*tr->partitions));
    tr->ids = fl_calloc((size_t)tr->nshards, sizeof(*tr->ids));
    if (tr->partitions == NULL || tr->ids == NULL) {
        fl_trackers_free(tr);
        return FL_ENOMEM;
    }
    /* a tracker that keeps crashing is restarted, but not forever: past 20 restarts in 10 s its
     * partition fails, and the trackers supervisor restarts the partition */
    tr->dynamic_spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 20, .period_ms = 10000, .dynamic = true};
    for (int i = 0; i < tr->nshards; i++) {
        snprintf(tr->ids[i], sizeof(tr->ids[i]), "trackers:%d", i);
        tr->partitions[i] = (fl_child_spec_t){.id = tr->ids[i],
                                              .sup = &tr->dynamic_spec,
                                              .shard = fl_runtime_shard(rt, i),
                                              .registered = true,
                                              .restart = FL_RESTART_PERMANENT,
                                              .shutdown_ms = 10000};
    }
    tr->spec = (fl_sup_spec_t){
        .strategy = FL_ONE_FOR_ONE, .max_restarts = 3, .period_ms = 10000, .children = tr->partitions, .nchildren = tr->nshards};
    *out = tr;
    return FL_OK;
}

void fl_trackers_free(fl_trackers_t *tr)
{
    if (tr == NULL)
        return;
    fl_free(tr->partitions);
    fl_free(tr->ids);
    fl_free(tr);
}

const fl_sup_spec_t *fl_trackers_spec(fl_trackers_t *tr)
{
    return &tr->spec;
}

/* ---- finding or starting a fleet's tracker, asynchronously ---- */

typedef void (*got_fn)(int status, fl_actor_t *tracker, void *arg);

typedef struct {
    got_fn fn;
    void *arg;
} get_req_t;

static void start_arg_free(void *p)
{
    void **pair = p;
    fl_free(pair[1]);
    fl_free(pair);
}

static void on_started(int status, void *reply, void *arg)
{
    get_req_t *g = arg;
    g->fn(status, status == FL_OK ? reply : NULL, g->arg);
    fl_free(g);
}

/* fn gets the tracker (a reference) or an error; synchronously when it is already running. */
static int get_tracker(fl_trackers_t *tr, const char *fleet_id, got_fn fn, void *arg)
{
    char name[80];
    snprintf(name, sizeof(name), "tracker:%s", fleet_id);
    fl_actor_t *a = fl_registry_lookup(name);
    if (a) {
        fn(FL_OK, a, arg);
        return FL_OK;
    }
    char part[32];
    snprintf(part, sizeof(part), "trackers:%d", fl_trackers_shard_of(tr, fleet_id));
    fl_actor_t *sup = fl_registry_lookup(part);
    if (sup == NULL)
        return FL_EUNAVAIL; /* the partition is restarting */
    get_req_t *g = fl_malloc(sizeof(*g));
    void **pair = fl_malloc(2 * sizeof(void *));
    char *id = fl_strdup(fleet_id);
    if (g == NULL || pair == NULL || id == NULL) {
        fl_free(g);
        fl_free(pair);
        fl_free(id);
        fl_actor_unref(sup);
        return FL_ENOMEM;
    }
    *g = (get_req_t){fn, arg};
    pair[0] = tr;
    pair[1] = id;
    fl_child_spec_t spec = {.id = name,
                            .behaviour = &tracker_behaviour,
                            .arg = pair,
                            .arg_dtor = start_arg_free,
                            .mailbox_capacity = tr->opts.mailbox,
                            .registered = true,
                            .restart = FL_RESTART_TRANSIENT,
                            .shutdown_ms = 5000};
    int rc = fl_sup_start_child(sup, &spec, on_started, g);
    fl_actor_unref(sup);
    if (rc != FL_OK) {
        fl_free(g);
        start_arg_free(pair);
    }
    return rc;
}

bool fl_trackers_busy(fl_trackers_t *tr, const char *fleet_id)
{
    char name[80];
    snprintf(name, sizeof(name), "tracker:%s", fleet_id);
    fl_actor_t *a = fl_registry_lookup(name);
    if (a == NULL)
        return false;
    fl_actor_stats_t st;
    fl_actor_stats(a, &st);
    fl_actor_unref(a);
    int cap = tr->opts.mailbox > 0 ? tr->opts.mailbox : FL_ACTOR_DEFAULT_MAILBOX;
    return st.mailbox >= cap - cap / 10;
}

/* status */

typedef struct {
    fl_status_fn cb;
    void *arg;
    int timeout_ms;
    fl_actor_t *tracker;
} status_req_t;

static void status_after_wait(int status, void *reply, void *arg)
{
    (void)reply;
    status_req_t *s = arg;
    uint64_t seq = 0;
    fl_blob_t *json = status == FL_OK ? fl_actor_snapshot(s->tracker, &seq) : NULL;
    if (status == FL_OK && json == NULL)
        status = FL_EUNAVAIL; /* it ended between loading and our read */
    if (status == FL_ETIMEDOUT || status == FL_ECLOSED)
        status = FL_EUNAVAIL;
    s->cb(status, json, seq, s->arg);
    fl_actor_unref(s->tracker);
    fl_free(s);
}

static void status_got(int status, fl_actor_t *tracker, void *arg)
{
    status_req_t *s = arg;
    if (status != FL_OK) {
        s->cb(status == FL_ECLOSED ? FL_EUNAVAIL : status, NULL, 0, s->arg);
        fl_free(s);
        return;
    }
    uint64_t seq;
    fl_blob_t *json = fl_actor_snapshot(tracker, &seq);
    if (json) {
        s->cb(FL_OK, json, seq, s->arg);
        fl_actor_unref(tracker);
        fl_free(s);
        return;
    }
    s->tracker = tracker; /* loading: wait for it */
    int rc = fl_actor_call(tracker, TR_AWAIT, NULL, NULL, s->timeout_ms, status_after_wait, s);
    if (rc != FL_OK) {
        s->cb(rc == FL_ECLOSED ? FL_EUNAVAIL : rc, NULL, 0, s->arg);
        fl_actor_unref(tracker);
        fl_free(s);
    }
}

int fl_trackers_status(fl_trackers_t *tr, const char *fleet_id, int timeout_ms, fl_status_fn cb, void *arg)
{
    status_req_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL)
        return FL_ENOMEM;
    *s = (status_req_t){.cb = cb, .arg = arg, .timeout_ms = timeout_ms};
    int rc = get_tracker(tr, fleet_id, status_got, s);
    if (rc != FL_OK)
        fl_free(s);
    return rc;
}

/* apply */

typedef struct {
    fl_trackers_t *tr;
    char fleet_id[65];
    batch_t *batch;
    fl_done_fn cb;
    void *arg;
    int tries;
} apply_req_t;

static void apply_got(int status, fl_actor_t *tracker, void *arg)
{
    apply_req_t *a = arg;
    if (status == FL_OK) {
        /* the message takes a copy: the original stays here for a retry */
        size_t size = sizeof(batch_t) + (size_t)a->batch->n * sizeof(fl_fix_t);
        batch_t *copy = fl_malloc(size);
        if (copy == NULL) {
            status = FL_ENOMEM;
        } else {
            memcpy(copy, a->batch, size);
            status = fl_actor_cast(tracker, TR_FIXES, copy, fl_free);
        }
        fl_actor_unref(tracker);
    }
    /* The tracker was stopping (idle) just as we found it: the next incarnation takes the fixes. */
    if (status == FL_ECLOSED && ++a->tries < 5 && get_tracker(a->tr, a->fleet_id, apply_got, a) == FL_OK)
        return;
    fl_free(a->batch);
    if (a->cb)
        a->cb(status, a->arg);
    fl_free(a);
}

int fl_trackers_apply(fl_trackers_t *tr, const char *fleet_id, const fl_fix_t *fixes, int n, fl_done_fn cb, void *arg)
{
    apply_req_t *a = fl_malloc(sizeof(*a));
    batch_t *b = fl_malloc(sizeof(*b) + (size_t)n * sizeof(fl_fix_t));
    if (a == NULL || b == NULL) {
        fl_free(a);
        fl_free(b);
        return FL_ENOMEM;
    }
    b->n = n;
    memcpy(b->fixes, fixes, (size_t)n * sizeof(fl_fix_t));
    *a = (apply_req_t){.tr = tr, .batch = b, .cb = cb, .arg = arg};
    snprintf(a->fleet_id, sizeof(a->fleet_id), "%s", fleet_id);
    int rc = get_tracker(tr, fleet_id, apply_got, a);
    if (rc != FL_OK) {
        fl_free(b);
        fl_free(a);
    }
    return rc;
}

/* replay */

typedef struct {
    fl_replay_fn cb;
    void *arg;
    uint64_t last_seq;
} replay_req_t;

static void replay_answered(int status, void *reply, void *arg)
{
    replay_req_t *r = arg;
    replay_t *rep = reply;
    if (status == FL_OK) {
        r->cb(FL_OK, rep->events, rep->n, rep->seq, r->arg);
        rep->n = 0; /* the callback owns the references now */
        replay_free(rep);
    } else {
        r->cb(status, NULL, 0, 0, r->arg);
    }
    fl_free(r);
}

static void replay_got(int status, fl_actor_t *tracker, void *arg)
{
    replay_req_t *r = arg;
    if (status == FL_OK) {
        uint64_t *last = fl_malloc(sizeof(*last));
        if (last == NULL) {
            status = FL_ENOMEM;
        } else {
            *last = r->last_seq;
            status = fl_actor_call(tracker, TR_REPLAY, last, fl_free, 5000, replay_answered, r);
        }
        fl_actor_unref(tracker);
        if (status == FL_OK)
            return;
    }
    r->cb(status, NULL, 0, 0, r->arg);
    fl_free(r);
}

int fl_trackers_replay(fl_trackers_t *tr, const char *fleet_id, uint64_t last_seq, fl_replay_fn cb, void *arg)
{
    replay_req_t *r = fl_malloc(sizeof(*r));
    if (r == NULL)
        return FL_ENOMEM;
    *r = (replay_req_t){cb, arg, last_seq};
    int rc = get_tracker(tr, fleet_id, replay_got, r);
    if (rc != FL_OK)
        fl_free(r);
    return rc;
}
