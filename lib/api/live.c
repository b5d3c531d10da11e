/* The live fan-out hub: see live.h. */
#include "live.h"

#include "http/ws.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct live_topic live_topic_t;

/* One position waiting for a subscriber that is held or behind: the newest of its vehicle. */
typedef struct {
    uint64_t seq;
    fl_blob_t *frame; /* in the subscriber's transport's form */
    char vehicle[65];
} waiting_t;

struct live_sub {
    live_topic_t *topic;
    live_sub_t *prev, *next;
    live_target_t target;
    uint64_t sent_seq;
    bool held;            /* joining: nothing goes out until fl_live_release */
    fl_map_t *waiting;    /* vehicle id -> waiting_t *, while held or behind (NULL otherwise) */
    int64_t behind_since; /* monotonic ms; 0 when not behind */
    bool lost;            /* told its owner; no more deliveries */
};

struct live_topic {
    struct shard_hub *hub;
    char name[96];    /* the pubsub topic: fleet:ID or presence:fleet:ID */
    char channel[80]; /* the Phoenix topic in frames: fleet:ID */
    bool presence;
    fl_sub_t *sub;
    live_sub_t *subs;
    int nsubs;
};

typedef struct shard_hub {
    fl_live_t *live;
    fl_map_t *topics; /* name -> live_topic_t * */
} shard_hub_t;

struct fl_live {
    fl_runtime_t *rt;
    fl_pubsub_t *ps;
    int behind_timeout_ms;
    int behind_vehicles;
    int nshards;
    shard_hub_t hubs[];
};

static atomic_long n_delivered, n_coalesced, n_closed_behind, n_lost;

void fl_live_counts(fl_live_counts_t *out)
{
    out->delivered = atomic_load(&n_delivered);
    out->coalesced = atomic_load(&n_coalesced);
    out->closed_behind = atomic_load(&n_closed_behind);
    out->lost = atomic_load(&n_lost);
}

int fl_live_new(fl_runtime_t *rt, fl_pubsub_t *ps, const fl_config_t *cfg, fl_live_t **out)
{
    int n = fl_runtime_nshards(rt);
    fl_live_t *live = fl_calloc(1, sizeof(*live) + (size_t)n * sizeof(shard_hub_t));
    if (live == NULL)
        return FL_ENOMEM;
    live->rt = rt;
    live->ps = ps;
    live->behind_timeout_ms = cfg->live_behind_timeout_ms;
    live->behind_vehicles = cfg->live_behind_vehicles;
    live->nshards = n;
    for (int i = 0; i < n; i++) {
        live->hubs[i].live = live;
        if ((live->hubs[i].topics = fl_map_new()) == NULL) {
            fl_live_free(live);
            return FL_ENOMEM;
        }
    }
    *out = live;
    return FL_OK;
}

/* After the shards have stopped: every connection, and so every subscriber, is gone. */
void fl_live_free(fl_live_t *live)
{
    if (live == NULL)
        return;
    for (int i = 0; i < live->nshards; i++)
        fl_map_free(live->hubs[i].topics, fl_free);
    fl_free(live);
}

/* ---- frames ------------------------------------------------------------------------------------- */

fl_blob_t *fl_live_ws_frame(const char *topic, const char *event, const char *json, size_t len)
{
    fl_strbuf_t b = {0};
    fl_strbuf_str(&b, "[null,null,\"");
    fl_strbuf_str(&b, topic); /* fleet ids are [A-Za-z0-9._-]: nothing to escape */
    fl_strbuf_str(&b, "\",\"");
    fl_strbuf_str(&b, event);
    fl_strbuf_str(&b, "\",");
    fl_strbuf_add(&b, json, len);
    fl_strbuf_add(&b, "]", 1);
    fl_blob_t *frame = b.failed ? NULL : fl_ws_frame_text(b.p, b.len);
    fl_strbuf_free(&b);
    return frame;
}

fl_blob_t *fl_live_sse_event(const char *event, uint64_t id, const char *json, size_t len)
{
    fl_strbuf_t b = {0};
    fl_strbuf_printf(&b, "id: %llu\nevent: %s\ndata: ", (unsigned long long)id, event);
    fl_strbuf_add(&b, json, len); /* our JSON has no line breaks */
    fl_strbuf_add(&b, "\n\n", 2);
    fl_blob_t *blob = b.failed ? NULL : fl_blob_from(b.p, b.len);
    fl_strbuf_free(&b);
    return blob;
}

uint64_t fl_live_event_seq(const char *json, size_t len)
{
    static const char key[] = ",\"seq\":";
    if (len < sizeof(key) + 1 || json[len - 1] != '}')
        return 0;
    size_t end = len - 1, start = end;
    while (start > 0 && json[start - 1] >= '0' && json[start - 1] <= '9')
        start--;
    if (start == end || start < sizeof(key) - 1 || memcmp(json + start - (sizeof(key) - 1), key, sizeof(key) - 1) != 0)
        return 0;
    uint64_t seq = 0;
    for (size_t i = start; i < end; i++)
        seq = seq * 10 + (uint64_t)(json[i] - '0');
    return seq;
}

/* The vehicle id at the start of a position event ({"vehicle_id":"ID",...}) into out. */
static bool event_vehicle(const char *json, size_t len, char out[65])
{
    static const char key[] = "{\"vehicle_id\":\"";
    if (len < sizeof(key) || memcmp(json, key, sizeof(key) - 1) != 0)
        return false;
    const char *id = json + sizeof(key) - 1, *end = memchr(id, '"', len - (sizeof(key) - 1));
    if (end == NULL || end == id || end - id > 64)
        return false;
    memcpy(out, id, (size_t)(end - id));
    out[end - id] = '\0';
    return true;
}

/* ---- writing to one subscriber ------------------------------------------------------------------ */

static int transport_write(live_sub_t *s, fl_blob_t *frame)
{
    if (s->target.kind == LIVE_WS)
        return fl_ws_send_frame(s->target.conn, frame);
    return fl_stream_write_blob(s->target.conn, frame);
}

/* Past the low-water mark: a write now would only queue behind what is there. */
static bool transport_backed_up(live_sub_t *s)
{
    size_t pending = s->target.kind == LIVE_WS ? fl_ws_pending(s->target.conn) : fl_stream_pending(s->target.conn);
    return pending > s->target.low_water;
}

static void waiting_free(void *p)
{
    waiting_t *w = p;
    fl_blob_unref(w->frame);
    fl_free(w);
}

static void lose(live_sub_t *s, bool behind)
{
    if (s->lost)
        return;
    s->lost = true;
    atomic_fetch_add(behind ? &n_closed_behind : &n_lost, 1);
    s->target.lost(s, behind, s->target.arg);
}

/* Keeps frame as the vehicle's newest waiting position. */
static void wait_for(live_sub_t *s, const char *vehicle, uint64_t seq, fl_blob_t *frame)
{
    if (s->waiting == NULL && (s->waiting = fl_map_new()) == NULL) {
        lose(s, true);
        return;
    }
    waiting_t *w = fl_map_get(s->waiting, vehicle);
    if (w) {
        atomic_fetch_add(&n_coalesced, 1);
        fl_blob_unref(w->frame);
        w->seq = seq;
        w->frame = fl_blob_ref(frame);
        return;
    }
    if ((int)fl_map_count(s->waiting) >= s->topic->hub->live->behind_vehicles) {
        lose(s, true);
        return;
    }
    w = fl_malloc(sizeof(*w));
    if (w == NULL || fl_map_put(s->waiting, vehicle, w, NULL) != FL_OK) {
        fl_free(w);
        lose(s, true);
        return;
    }
    snprintf(w->vehicle, sizeof(w->vehicle), "%s", vehicle);
    w->seq = seq;
    w->frame = fl_blob_ref(frame);
}

static int by_seq(const void *a, const void *b)
{
    const waiting_t *x = *(waiting_t *const *)a, *y = *(waiting_t *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void gather(const char *key, void *value, void *arg)
{
    (void)key;
    waiting_t ***cursor = arg;
    *(*cursor)++ = value;
}

/* Sends what waits, oldest seq first, while the output takes it; the rest keeps waiting. */
static void flush_waiting(live_sub_t *s)
{
    size_t n = s->waiting ? fl_map_count(s->waiting) : 0;
    waiting_t **items = n ? fl_malloc(n * sizeof(*items)) : NULL;
    if (n > 0 && items == NULL)
        return; /* try again at the next drain */
    waiting_t **cursor = items;
    if (n > 0)
        fl_map_foreach(s->waiting, gather, &cursor);
    qsort(items, n, sizeof(*items), by_seq);
    size_t sent = 0;
    for (; sent < n; sent++) {
        if (items[sent]->seq <= s->sent_seq)
            continue; /* already covered by a join's snapshot or replay */
        if (transport_write(s, items[sent]->frame) != FL_OK)
            break;
        atomic_fetch_add(&n_delivered, 1);
        s->sent_seq = items[sent]->seq;
    }
    for (size_t i = 0; i < sent; i++)
        waiting_free(fl_map_remove(s->waiting, items[i]->vehicle));
    fl_free(items);
    if (s->waiting && fl_map_count(s->waiting) == 0) {
        fl_map_free(s->waiting, NULL);
        s->waiting = NULL;
        s->behind_since = 0;
    }
}

/* ---- delivery on the shard ---------------------------------------------------------------------- */

static void offer_position(live_sub_t *s, const char *vehicle, uint64_t seq, fl_blob_t **ws, fl_blob_t **sse, const char *json,
                           size_t len)
{
    if (s->lost || seq <= s->sent_seq)
        return;
    fl_blob_t **slot = s->target.kind == LIVE_WS ? ws : sse;
    if (*slot == NULL) {
        *slot = s->target.kind == LIVE_WS ? fl_live_ws_frame(s->topic->channel, "position", json, len)
                                          : fl_live_sse_event("position", seq, json, len);
        if (*slot == NULL) {
            lose(s, true);
            return;
        }
    }
    if (!s->held && s->waiting == NULL) {
        int rc = transport_backed_up(s) ? FL_EFULL : transport_write(s, *slot);
        if (rc == FL_OK) {
            atomic_fetch_add(&n_delivered, 1);
            s->sent_seq = seq;
            return;
        }
        if (rc != FL_EFULL && rc != FL_ENOMEM)
            return; /* closing already (peer gone): not a slow subscriber */
        s->behind_since = fl_now_mono_ms();
    }
    wait_for(s, vehicle, seq, *slot);
    if (!s->lost && !s->held && s->behind_since && fl_now_mono_ms() - s->behind_since >= s->topic->hub->live->behind_timeout_ms)
        lose(s, true);
}

static void offer_presence(live_sub_t *s, fl_blob_t **frame, const char *json, size_t len)
{
    if (s->lost)
        return;
    if (*frame == NULL && (*frame = fl_live_ws_frame(s->topic->channel, "presence_diff", json, len)) == NULL) {
        lose(s, true);
        return;
    }
    /* presence diffs are rare and small: they go straight out, also while held (the phoenix client
     * keeps diffs that arrive before the presence state and applies them after it) */
    int rc = transport_write(s, *frame);
    if (rc == FL_EFULL || rc == FL_ENOMEM)
        lose(s, true); /* else the connection is closing already: its owner unsubscribes */
}

static void topic_free(live_topic_t *t);

static void on_deliver(const char *topic_name, fl_blob_t *payload, void *ctx)
{
    (void)topic_name;
    live_topic_t *t = ctx;
    t->nsubs++; /* pin the topic: an owner may unsubscribe from inside lost() */
    fl_blob_t *ws = NULL, *sse = NULL;
    if (payload == NULL) {
        /* the shard's pubsub stopped or restarted: the subscription is gone, events may be missed */
        t->sub = NULL;
        for (live_sub_t *s = t->subs, *next; s; s = next) {
            next = s->next;
            lose(s, false);
        }
    } else if (t->presence) {
        const char *json = fl_blob_data(payload);
        size_t len = fl_blob_len(payload);
        for (live_sub_t *s = t->subs, *next; s; s = next) {
            next = s->next;
            offer_presence(s, &ws, json, len);
        }
    } else {
        const char *json = fl_blob_data(payload);
        size_t len = fl_blob_len(payload);
        char vehicle[65];
        uint64_t seq = fl_live_event_seq(json, len);
        if (seq > 0 && event_vehicle(json, len, vehicle)) {
            for (live_sub_t *s = t->subs, *next; s; s = next) {
                next = s->next;
                offer_position(s, vehicle, seq, &ws, &sse, json, len);
            }
        }
    }
    fl_blob_unref(ws);
    fl_blob_unref(sse);
    if (--t->nsubs == 0)
        topic_free(t);
}

/* ---- subscriptions ------------------------------------------------------------------------------ */

static shard_hub_t *current_hub(fl_live_t *live)
{
    fl_shard_t *shard = fl_shard_current();
    int i = shard ? fl_shard_index(shard) : -1;
    return i >= 0 && i < live->nshards ? &live->hubs[i] : NULL;
}

static void topic_free(live_topic_t *t)
{
    fl_map_remove(t->hub->topics, t->name);
    if (t->sub)
        fl_pubsub_unsubscribe(t->hub->live->ps, t->sub);
    fl_free(t);
}

int fl_live_subscribe(fl_live_t *live, const char *fleet_id, bool presence, const live_target_t *target, live_sub_t **out)
{
    shard_hub_t *hub = current_hub(live);
    if (hub == NULL)
        return FL_ESTATE;
    char name[96];
    snprintf(name, sizeof(name), "%sfleet:%s", presence ? "presence:" : "", fleet_id);
    live_topic_t *t = fl_map_get(hub->topics, name);
    if (t && t->sub == NULL) {
        /* lost with a pubsub restart: subscribe again */
        int rc = fl_pubsub_subscribe(live->ps, t->name, on_deliver, t, &t->sub);
        if (rc != FL_OK)
            return rc;
    }
    bool created = false;
    if (t == NULL) {
        if ((t = fl_calloc(1, sizeof(*t))) == NULL)
            return FL_ENOMEM;
        t->hub = hub;
        t->presence = presence;
        snprintf(t->name, sizeof(t->name), "%s", name);
        snprintf(t->channel, sizeof(t->channel), "fleet:%s", fleet_id);
        int rc = fl_pubsub_subscribe(live->ps, t->name, on_deliver, t, &t->sub);
        if (rc == FL_OK && (rc = fl_map_put(hub->topics, t->name, t, NULL)) != FL_OK)
            fl_pubsub_unsubscribe(live->ps, t->sub);
        if (rc != FL_OK) {
            fl_free(t);
            return rc;
        }
        created = true;
    }
    live_sub_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL) {
        if (created)
            topic_free(t);
        return FL_ENOMEM;
    }
    s->topic = t;
    s->target = *target;
    s->held = true;
    s->next = t->subs;
    if (t->subs)
        t->subs->prev = s;
    t->subs = s;
    t->nsubs++;
    *out = s;
    return FL_OK;
}

void fl_live_release(live_sub_t *sub, uint64_t sent_seq)
{
    if (sub->sent_seq < sent_seq)
        sub->sent_seq = sent_seq;
    sub->held = false;
    if (sub->waiting) {
        sub->behind_since = fl_now_mono_ms();
        flush_waiting(sub);
    }
}

void fl_live_drain(live_sub_t *sub)
{
    if (!sub->held && !sub->lost && sub->waiting)
        flush_waiting(sub);
}

void fl_live_unsubscribe(live_sub_t *sub)
{
    if (sub == NULL)
        return;
    live_topic_t *t = sub->topic;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        t->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    fl_map_free(sub->waiting, waiting_free);
    fl_free(sub);
    if (--t->nsubs == 0)
        topic_free(t);
}

/* ---- presence ----------------------------------------------------------------------------------- */

int fl_live_publish_presence(fl_live_t *live, const char *fleet_id, const char *diff_json, size_t len)
{
    char name[96];
    snprintf(name, sizeof(name), "presence:fleet:%s", fleet_id);
    fl_blob_t *b = fl_blob_from(diff_json, len);
    if (b == NULL)
        return FL_ENOMEM;
    int rc = fl_pubsub_publish(live->ps, name, b);
    fl_blob_unref(b);
    return rc;
}

/* ---- catching up -------------------------------------------------------------------------------- */

typedef struct {
    fl_trackers_t *tr;
    char fleet_id[65];
    int timeout_ms;
    live_catch_up_fn cb;
    void *arg;
    fl_blob_t *snapshot; /* once read */
    uint64_t seq;
} catch_up_t;

static void catch_up_done(catch_up_t *c, int status, fl_blob_t **events, int n)
{
    c->cb(status, c->snapshot, c->seq, events, n, c->arg);
    fl_blob_unref(c->snapshot);
    fl_free(c);
}

static void on_status(int status, fl_blob_t *json, uint64_t seq, void *arg);

static void on_replay(int status, fl_blob_t **events, int n, uint64_t seq, void *arg)
{
    catch_up_t *c = arg;
    if (status == FL_OK) {
        c->seq = c->snapshot ? c->seq : seq;
        catch_up_done(c, FL_OK, events, n);
        return;
    }
    if (c->snapshot) {
        /* the gap after the snapshot is gone already (or the tracker restarted): the snapshot alone */
        catch_up_done(c, FL_OK, NULL, 0);
        return;
    }
    if (status != FL_ERANGE) {
        catch_up_done(c, status, NULL, 0);
        return;
    }
    int rc = fl_trackers_status(c->tr, c->fleet_id, c->timeout_ms, on_status, c);
    if (rc != FL_OK)
        catch_up_done(c, rc, NULL, 0);
}

static void on_status(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    catch_up_t *c = arg;
    if (status != FL_OK) {
        catch_up_done(c, status, NULL, 0);
        return;
    }
    c->snapshot = json; /* our reference now */
    c->seq = seq;
    int rc = fl_trackers_replay(c->tr, c->fleet_id, seq, on_replay, c);
    if (rc != FL_OK)
        catch_up_done(c, FL_OK, NULL, 0);
}

int fl_live_catch_up(fl_trackers_t *tr, const char *fleet_id, bool has_last_seq, uint64_t last_seq, int timeout_ms,
                     live_catch_up_fn cb, void *arg)
{
    catch_up_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        return FL_ENOMEM;
    *c = (catch_up_t){.tr = tr, .timeout_ms = timeout_ms, .cb = cb, .arg = arg};
    snprintf(c->fleet_id, sizeof(c->fleet_id), "%s", fleet_id);
    int rc = has_last_seq ? fl_trackers_replay(tr, fleet_id, last_seq, on_replay, c)
                          : fl_trackers_status(tr, fleet_id, timeout_ms, on_status, c);
    if (rc != FL_OK)
        fl_free(c);
    return rc;
}
