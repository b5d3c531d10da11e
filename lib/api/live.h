/*
 * The live fan-out hub, shared by the Phoenix channel (channel.c) and Server-Sent Events (sse.c).
 *
 * Each shard keeps one pubsub subscription per topic that has local subscribers. When a position
 * arrives, the shard frames it once per transport (one WebSocket frame, one SSE event) and hands
 * the same bytes to every local subscriber. A subscriber whose output is past its transport's
 * low-water mark is "behind": from then on it gets only the latest position per vehicle
 * (coalesced, replayed in seq order when its output drains), and one behind for too long, or with
 * too many vehicles waiting, is closed with a reason. Everything here runs on the subscriber's
 * shard, so none of it needs a lock.
 */
#ifndef FL_API_LIVE_H
#define FL_API_LIVE_H

#include "api_internal.h"

typedef struct fl_live fl_live_t;
typedef struct live_sub live_sub_t;

typedef enum { LIVE_WS, LIVE_SSE } live_kind_t;

/* What the hub needs from a subscriber's transport. */
typedef struct {
    live_kind_t kind;
    void *conn;       /* fl_ws_t * (LIVE_WS) or fl_stream_t * (LIVE_SSE) */
    size_t low_water; /* output pending past this: the subscriber is behind (where the transport reports a drain) */
    /* The subscription cannot go on: gone (the shard's pubsub restarted: events may be missed) or
     * too far behind (behind = true). The owner decides what the client is told, and must call
     * fl_live_unsubscribe (later or at once). */
    void (*lost)(live_sub_t *sub, bool behind, void *arg);
    void *arg;
} live_target_t;

int fl_live_new(fl_runtime_t *rt, fl_pubsub_t *ps, const fl_config_t *cfg, fl_live_t **out);
void fl_live_free(fl_live_t *live);

/* On a shard thread: subscribes the target to the fleet's positions (presence = false) or presence
 * diffs (true). A new subscription starts "held": events are kept (latest per vehicle) until
 * fl_live_release, so that a join can send its snapshot or replay first. FL_EUNAVAIL when the
 * shard's pubsub is down, FL_ENOMEM. */
int fl_live_subscribe(fl_live_t *live, const char *fleet_id, bool presence, const live_target_t *target, live_sub_t **out);
/* Ends the hold: what arrived meanwhile with a seq above sent_seq goes out, in seq order. */
void fl_live_release(live_sub_t *sub, uint64_t sent_seq);
/* The subscriber's output drained: sends what was coalesced for it. */
void fl_live_drain(live_sub_t *sub);
void fl_live_unsubscribe(live_sub_t *sub);

/* A subscriber's start: with has_last_seq, the positions after last_seq from the tracker's replay
 * ring (snapshot NULL); otherwise, or when they are no longer all there, the fleet's status JSON
 * (snapshot, lent for the call) with its seq and the positions after that seq (the status JSON is
 * rebuilt at most every few ms, so a few may be newer than it). cb gets FL_OK, FL_ENOTFOUND (no
 * such fleet), FL_EUNAVAIL (the tracker could not load in timeout_ms) or FL_ENOMEM; it owns the
 * events' references. On a shard thread; cb runs on it, maybe before this returns. */
typedef void (*live_catch_up_fn)(int status, fl_blob_t *snapshot, uint64_t seq, fl_blob_t **events, int n, void *arg);
int fl_live_catch_up(fl_trackers_t *tr, const char *fleet_id, bool has_last_seq, uint64_t last_seq, int timeout_ms,
                     live_catch_up_fn cb, void *arg);

/* Publishes a presence diff ({"joins":...,"leaves":...}) to every shard's presence subscribers of
 * the fleet. Any thread. */
int fl_live_publish_presence(fl_live_t *live, const char *fleet_id, const char *diff_json, size_t len);

/* Phoenix frames and SSE events built from a position event (the tracker's JSON, with its seq). */
fl_blob_t *fl_live_ws_frame(const char *topic, const char *event, const char *json, size_t len);
fl_blob_t *fl_live_sse_event(const char *event, uint64_t id, const char *json, size_t len);
/* The seq at the end of a position event ("...,\"seq\":N}"), or 0. */
uint64_t fl_live_event_seq(const char *json, size_t len);

/* Counters for /metrics. */
typedef struct {
    long delivered; /* frames handed to subscribers' output */
    long coalesced; /* positions replaced by a newer one of the same vehicle before they were sent */
    long closed_behind;
    long lost; /* subscriptions lost with the shard's pubsub */
} fl_live_counts_t;
void fl_live_counts(fl_live_counts_t *out);

#endif
