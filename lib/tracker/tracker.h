/*
 * fleetd tracker: one actor per fleet, tracker:{fleet_id}, holding every vehicle's latest fix.
 * Started on demand (first fix or first read) under the dynamic supervisor of the fleet's shard,
 * reloaded from PostgreSQL (vehicle_latest) on every start, stopped when idle. Each change bumps
 * the fleet's seq, goes into a bounded replay ring, is published on topic fleet:{id}, and the
 * status JSON is serialised once into an immutable snapshot that readers on any shard take
 * without a message. Nothing here knows about HTTP.
 */
#ifndef FL_TRACKER_H
#define FL_TRACKER_H

#include "core/core.h"
#include "db/db.h"
#include "runtime/runtime.h"

/* Which optional fields a fix carries. */
enum { FL_FIX_SPEED = 1, FL_FIX_HEADING = 2, FL_FIX_ACCURACY = 4 };

typedef struct {
    char vehicle_id[65];
    double lat, lng;
    int64_t recorded_us; /* Unix microseconds */
    int64_t received_us;
    double speed_kmh, heading_deg, accuracy_m;
    unsigned has; /* FL_FIX_* */
} fl_fix_t;

typedef struct fl_trackers fl_trackers_t;

/* Where a shard's tracker finds its database connection: called on that shard's thread; NULL
 * while the connection's owner is restarting (the tracker retries its load). */
typedef fl_db_t *(*fl_tracker_db_fn)(int shard, void *arg);

typedef struct {
    int idle_timeout_ms;          /* a tracker with no fixes and no subscribers for this long stops */
    int replay;                   /* positions kept for replay per fleet */
    int mailbox;                  /* tracker mailbox capacity */
    int snapshot_min_interval_ms; /* the status JSON is rebuilt at most this often under load */
    fl_tracker_db_fn db;
    void *db_arg;
} fl_trackers_opts_t;

int fl_trackers_new(fl_runtime_t *rt, fl_pubsub_t *ps, const fl_trackers_opts_t *opts, fl_trackers_t **out);
/* After the trackers supervisor has stopped. */
void fl_trackers_free(fl_trackers_t *tr);
/* The "trackers" supervisor: one dynamic supervisor per shard, trackers:N, for the tree. */
const fl_sup_spec_t *fl_trackers_spec(fl_trackers_t *tr);
/* The shard that owns a fleet's tracker. */
int fl_trackers_shard_of(const fl_trackers_t *tr, const char *fleet_id);

/* Status reads. cb gets FL_OK with the fleet's status JSON (a reference: fl_blob_unref it) and its
 * seq; FL_ENOTFOUND for a fleet that does not exist; FL_EUNAVAIL when the tracker cannot load
 * (database down) within timeout_ms; FL_ENOMEM. When the tracker is running and loaded, cb runs
 * before this returns (no message round trip); otherwise later, on this shard. On a shard thread. */
typedef void (*fl_status_fn)(int status, fl_blob_t *json, uint64_t seq, void *arg);
int fl_trackers_status(fl_trackers_t *tr, const char *fleet_id, int timeout_ms, fl_status_fn cb, void *arg);

/* Applies fixes (all of one fleet) to its tracker, starting it if needed. cb (may be NULL) gets
 * FL_OK once they are in the tracker's mailbox, FL_EFULL when it is full, FL_ENOTFOUND for an
 * unknown fleet, or another error. On a shard thread; fixes are copied. */
typedef void (*fl_done_fn)(int status, void *arg);
int fl_trackers_apply(fl_trackers_t *tr, const char *fleet_id, const fl_fix_t *fixes, int n, fl_done_fn cb, void *arg);

/* Any thread: the fleet's tracker is running and its mailbox is over 90% full, so new fixes for
 * it should be refused for now (ingest answers 503 before committing anything). */
bool fl_trackers_busy(fl_trackers_t *tr, const char *fleet_id);

/* Replay for a live subscriber that saw seq last_seq: FL_OK with the positions after it (each a
 * position event JSON with its seq, oldest first: n references the callback owns and drops; the
 * array itself is only lent for the call), or
 * FL_ERANGE when they are no longer all in the ring (take a fresh snapshot instead). */
typedef void (*fl_replay_fn)(int status, fl_blob_t **events, int n, uint64_t seq, void *arg);
int fl_trackers_replay(fl_trackers_t *tr, const char *fleet_id, uint64_t last_seq, fl_replay_fn cb, void *arg);

#endif
