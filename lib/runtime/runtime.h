/*
 * fleetd runtime: shards (one event-loop thread each) and cross-shard tasks.
 * A shard owns its event_base, its connections and (later) its actors; other threads reach it
 * only by posting a task, which the shard runs on its own thread. Nothing here knows about fleets.
 */
#ifndef FL_RUNTIME_H
#define FL_RUNTIME_H

#include "core/core.h"

struct event_base;

typedef struct fl_runtime fl_runtime_t;
typedef struct fl_shard fl_shard_t;
typedef void (*fl_task_fn)(void *arg);

/* Creates nshards shards (0: one per online CPU) with their event bases; threads start later. */
int fl_runtime_new(int nshards, fl_runtime_t **out);
/* Starts one thread per shard. Each runs its event loop until fl_runtime_stop. */
int fl_runtime_start(fl_runtime_t *rt);
/* Asks every loop to exit once its pending tasks have run, then joins the threads. */
void fl_runtime_stop(fl_runtime_t *rt);
/* Frees the shards; the runtime must be stopped (or never started). */
void fl_runtime_free(fl_runtime_t *rt);

int fl_runtime_nshards(const fl_runtime_t *rt);
fl_shard_t *fl_runtime_shard(fl_runtime_t *rt, int index);

struct event_base *fl_shard_base(fl_shard_t *shard);
int fl_shard_index(const fl_shard_t *shard);
fl_runtime_t *fl_shard_runtime(fl_shard_t *shard);
/* The shard whose thread is calling, or NULL on any other thread. */
fl_shard_t *fl_shard_current(void);

/* Runs fn(arg) on the shard's thread, from any thread. Tasks posted from one thread run in the
 * order posted. Wake-ups are batched: a burst of posts costs the shard one wake-up.
 * Returns FL_ENOMEM or FL_ECLOSED (the shard has stopped), in which case fn will not run. */
int fl_shard_post(fl_shard_t *shard, fl_task_fn fn, void *arg);

/* ---- actors -------------------------------------------------------------------------------------
 * An actor is state + a behaviour + a bounded mailbox, living on one shard. Its handler runs on
 * that shard's thread only, one message at a time, so its state needs no lock. Any thread may
 * cast (fire and forget) or call (reply or timeout). A full mailbox is FL_EFULL to the sender.
 * Actors are reference counted: fl_actor_ref/fl_actor_unref; a message to a stopped actor is
 * refused with FL_ECLOSED. */

typedef struct fl_actor fl_actor_t;
typedef struct fl_call fl_call_t;

typedef struct fl_msg {
    struct fl_msg *next;
    int type;                 /* the behaviour's own message types are >= 0 */
    void *data;               /* owned by the message; the handler may take it (set data = NULL) */
    void (*dtor)(void *data); /* frees data when the message is dropped or handled (may be NULL) */
    fl_call_t *call;          /* set for calls: answer with fl_actor_reply */
} fl_msg_t;

/* Why an actor ended. FL_EXIT_NORMAL and FL_EXIT_SHUTDOWN are not crashes. */
enum { FL_EXIT_NORMAL = 0, FL_EXIT_SHUTDOWN = 1, FL_EXIT_CRASH = 2, FL_EXIT_KILLED = 3 };

typedef struct fl_behaviour {
    const char *name;
    /* Runs on the actor's shard before any message. Returns FL_OK or an error (the start fails). */
    int (*init)(fl_actor_t *self, void *arg, void **state);
    /* One message. FL_OK, FL_STOP_NORMAL to stop normally, anything else is a crash. */
    int (*handle)(fl_actor_t *self, void *state, fl_msg_t *msg);
    /* Always called once when the actor ends (after a crash too); frees the state. May be NULL. */
    void (*terminate)(fl_actor_t *self, void *state, int exit_kind);
    /* Bytes the state holds, for the tree's memory column. May be NULL. */
    size_t (*memory)(const void *state);
    unsigned flags; /* FL_BEHAVIOUR_* */
} fl_behaviour_t;

#define FL_STOP_NORMAL 1

/* The handler receives stop requests (type FL_MSG_STOP, data an fl_stop_req_t) instead of the
 * runtime ending the actor at once, and ends itself with fl_actor_exit when ready (supervisors:
 * their children stop first). */
#define FL_BEHAVIOUR_TRAP_STOP 1u
/* The handler receives FL_MSG_PING calls (sent after a spawn to learn that init has run) and
 * answers them itself, possibly later (a supervisor answers once its children have started). */
#define FL_BEHAVIOUR_OWN_PING 2u

enum { FL_MSG_INIT = -1, FL_MSG_STOP = -2, FL_MSG_PING = -3 };

typedef struct {
    int kind; /* FL_EXIT_* */
    char reason[];
} fl_stop_req_t;

/* From inside a handler: end this actor after the current message. */
void fl_actor_exit(fl_actor_t *self, int exit_kind, const char *reason);

typedef struct {
    const char *id;       /* tree id, e.g. "tracker:harbor-1" (copied) */
    int mailbox_capacity; /* 0: FL_ACTOR_DEFAULT_MAILBOX */
    bool registered;      /* also register the actor under its id (fl_registry_lookup) */
} fl_actor_opts_t;

#define FL_ACTOR_DEFAULT_MAILBOX 1024
/* Messages one actor handles per turn before the shard moves on to other actors and I/O. */
#define FL_ACTOR_BUDGET 64

/* Where an actor's end is reported: on_exit runs on the actor's shard after terminate. */
typedef void (*fl_actor_exit_fn)(fl_actor_t *actor, int exit_kind, const char *reason, void *arg);

/* Creates an actor on shard and schedules its init there. Messages sent before init has run wait in
 * the mailbox. *out gets a reference the caller must drop with fl_actor_unref. on_exit (optional)
 * is how supervisors learn of a crash; it also reports a failed init. */
int fl_actor_spawn(fl_shard_t *shard, const fl_behaviour_t *behaviour, void *arg, const fl_actor_opts_t *opts,
                   fl_actor_exit_fn on_exit, void *exit_arg, fl_actor_t **out);
void fl_actor_ref(fl_actor_t *actor);
void fl_actor_unref(fl_actor_t *actor);

/* Sends a message; data is freed with dtor if the send fails. FL_OK, FL_EFULL, FL_ECLOSED, FL_ENOMEM. */
int fl_actor_cast(fl_actor_t *to, int type, void *data, void (*dtor)(void *));
/* A cast that the mailbox bound does not refuse, for an actor's notes to itself (its timers, its
 * database callbacks) and the runtime's notices: a bounded number by construction, never traffic. */
int fl_actor_notify(fl_actor_t *to, int type, void *data, void (*dtor)(void *));
/* Replies arrive on the caller's shard: status is FL_OK with reply (the callback owns it and frees
 * it with reply_dtor semantics of its choosing), or FL_ETIMEDOUT, FL_ECLOSED (the actor ended
 * first), FL_EFULL. Only on a shard thread. */
typedef void (*fl_reply_fn)(int status, void *reply, void *arg);
int fl_actor_call(fl_actor_t *to, int type, void *data, void (*dtor)(void *), int timeout_ms, fl_reply_fn cb, void *arg);
/* Blocking call for threads that are not shards (the main thread, tests). */
int fl_actor_call_wait(fl_actor_t *to, int type, void *data, void (*dtor)(void *), int timeout_ms, void **reply);
/* Answers a call from inside handle. A reply that comes after the caller timed out is freed with
 * reply_dtor. A call left unanswered when its handler returns is answered FL_EPROTO (and logged),
 * unless the handler kept it with fl_actor_keep_call to answer later with fl_call_reply. */
void fl_actor_reply(fl_msg_t *msg, int status, void *reply, void (*reply_dtor)(void *));
fl_call_t *fl_actor_keep_call(fl_msg_t *msg);
void fl_call_reply(fl_call_t *call, int status, void *reply, void (*reply_dtor)(void *));

/* Asks the actor to stop after the message it is handling (a high-priority message). */
int fl_actor_stop(fl_actor_t *actor, int exit_kind, const char *reason);

fl_shard_t *fl_actor_shard(const fl_actor_t *actor);
const char *fl_actor_id(const fl_actor_t *actor);
bool fl_actor_alive(const fl_actor_t *actor);
/* The actor whose handler is running on this thread, or NULL. */
fl_actor_t *fl_actor_self(void);

/* A published value: an actor shares an immutable, reference-counted blob (its status JSON, say)
 * that any thread can take without a message round trip. tag is the caller's (a sequence number).
 * fl_actor_publish takes over the caller's reference; fl_actor_snapshot returns a new reference
 * (or NULL when nothing is published) that the reader drops with fl_blob_unref. */
void fl_actor_publish(fl_actor_t *self, fl_blob_t *blob, uint64_t tag);
fl_blob_t *fl_actor_snapshot(fl_actor_t *actor, uint64_t *tag);

typedef struct {
    int mailbox;        /* messages waiting */
    long handled;       /* messages handled since start */
    size_t memory;      /* estimate in bytes: the actor, its queued messages, its state */
    int64_t started_ms; /* monotonic */
    bool alive;
} fl_actor_stats_t;
void fl_actor_stats(const fl_actor_t *actor, fl_actor_stats_t *out);

/* ---- supervisors -----------------------------------------------------------------------------
 * A supervisor is an actor that starts its children in order, watches them, restarts them by its
 * strategy and restart intensity, and stops them in reverse order. Too many restarts within the
 * period: it stops its children and crashes itself, and its parent decides. The root has no parent:
 * its on_exit (given to fl_sup_start) decides for the process. */

typedef enum { FL_RESTART_PERMANENT = 0, FL_RESTART_TRANSIENT, FL_RESTART_TEMPORARY } fl_restart_t;
typedef enum { FL_ONE_FOR_ONE = 0, FL_ONE_FOR_ALL, FL_REST_FOR_ONE } fl_strategy_t;

typedef struct fl_sup_spec fl_sup_spec_t;

typedef struct fl_child_spec {
    const char *id; /* unique in the whole tree, e.g. "db", "tracker:harbor-1" */
    /* a worker: */
    const fl_behaviour_t *behaviour;
    void *arg; /* passed to init; freed with arg_dtor when the child is removed */
    void (*arg_dtor)(void *arg);
    int mailbox_capacity;
    fl_shard_t *shard; /* NULL: the supervisor's shard (for a supervisor child too) */
    bool registered;   /* each incarnation is registered under id (fl_registry_lookup) */
    /* or a supervisor: */
    const fl_sup_spec_t *sup;
    fl_restart_t restart;
    int shutdown_ms;      /* how long a stop may take before the supervisor moves on; 0: 5000 */
    int start_timeout_ms; /* how long init may take; 0: 5000 */
} fl_child_spec_t;

struct fl_sup_spec {
    fl_strategy_t strategy;
    int max_restarts; /* restarts allowed within period_ms (OTP's intensity) */
    int period_ms;
    bool dynamic;                    /* children added at run time with fl_sup_start_child */
    const fl_child_spec_t *children; /* static children, started in this order */
    int nchildren;
};

/* Starts a supervisor (the root of a tree, or a free-standing one in tests) on shard and waits
 * (blocking: not on a shard thread) until every child has started. FL_OK, or the error that
 * stopped the start (a child's init failing beyond the restart intensity: FL_EUNAVAIL). */
int fl_sup_start(fl_shard_t *shard, const char *id, const fl_sup_spec_t *spec, fl_actor_exit_fn on_exit, void *exit_arg,
                 int timeout_ms, fl_actor_t **out);
/* Stops a supervisor and its tree in reverse order and waits until it has ended. Not on a shard. */
int fl_sup_stop(fl_actor_t *sup, int timeout_ms);
/* Adds a child to a dynamic supervisor and starts it. cb gets FL_OK with the child's actor (a
 * reference the callback must drop) once its init has run, or an error. A child of that id already
 * there: FL_OK with the existing actor. On a shard thread. */
int fl_sup_start_child(fl_actor_t *sup, const fl_child_spec_t *spec, fl_reply_fn cb, void *arg);
/* The same from a thread that is not a shard: waits. */
int fl_sup_start_child_wait(fl_actor_t *sup, const fl_child_spec_t *spec, int timeout_ms, fl_actor_t **child);

/* ---- the tree ---------------------------------------------------------------------------------- */

/* The live tree under root as JSON (CONTRACT.md "Tree JSON"): every supervisor and actor with id,
 * kind, status, restarts, last_crash, uptime_s; supervisors add strategy and children, actors add
 * mailbox, handled and memory. Returns a new json_t (jansson) the caller frees, or NULL (no memory).
 * Any thread; it takes no message round trip. */
struct json_t;
struct json_t *fl_tree_json(fl_actor_t *root);
/* Kills the child with that id as a drill; its supervisor restarts it by its strategy (it counts
 * toward the restart intensity). cb gets FL_OK once the child is running again, FL_ENOTFOUND, or
 * the error that stopped the restart. On a shard thread. */
int fl_tree_restart(fl_actor_t *root, const char *id, fl_reply_fn cb, void *arg);
int fl_tree_restart_wait(fl_actor_t *root, const char *id, int timeout_ms);
/* Restarts by any supervisor since the process started (never goes down). Any thread. */
uint64_t fl_tree_restarts_total(void);

/* ---- registry -----------------------------------------------------------------------------------
 * Actors by name, from any shard. A name maps to one live actor; it is released when the actor
 * unregisters or ends. */

int fl_registry_register(const char *name, fl_actor_t *actor); /* FL_EEXIST when taken */
void fl_registry_unregister(const char *name, fl_actor_t *actor);
/* A reference to the actor registered under name (drop it with fl_actor_unref), or NULL. */
fl_actor_t *fl_registry_lookup(const char *name);
int fl_registry_count(void);

/* ---- pubsub -------------------------------------------------------------------------------------
 * Topics with subscribers on any shard. A publish costs one message per shard that has
 * subscribers to the topic, carrying one shared reference to the payload: the shard hands the
 * same bytes to each of its subscribers, nothing is copied per subscriber. Each shard's
 * subscriptions belong to an actor, pubsub:N, under the "pubsub" supervisor; its mailbox bounds
 * what a slow shard can queue (a full one makes publish report FL_EFULL for that shard). */

typedef struct fl_pubsub fl_pubsub_t;
typedef struct fl_sub fl_sub_t;
/* Runs on the subscriber's shard. payload is borrowed (fl_blob_ref to keep it). A NULL payload
 * says the subscription is gone (the shard's pubsub actor restarted): do not unsubscribe it. */
typedef void (*fl_deliver_fn)(const char *topic, fl_blob_t *payload, void *ctx);

int fl_pubsub_new(fl_runtime_t *rt, fl_pubsub_t **out);
/* After the pubsub supervisor has stopped. */
void fl_pubsub_free(fl_pubsub_t *ps);
/* The "pubsub" supervisor's spec, one actor per shard, for the application tree. */
const fl_sup_spec_t *fl_pubsub_spec(fl_pubsub_t *ps);
/* On a shard thread: subscribes there. FL_EUNAVAIL while that shard's pubsub actor is down. */
int fl_pubsub_subscribe(fl_pubsub_t *ps, const char *topic, fl_deliver_fn fn, void *ctx, fl_sub_t **out);
/* On the shard that subscribed. After it returns, fn is not called again for this subscription. */
void fl_pubsub_unsubscribe(fl_pubsub_t *ps, fl_sub_t *sub);
/* Any thread. FL_OK when every shard with subscribers took the message, else the last error. */
int fl_pubsub_publish(fl_pubsub_t *ps, const char *topic, fl_blob_t *payload);
/* Subscribers to topic across all shards. */
int fl_pubsub_count(fl_pubsub_t *ps, const char *topic);

#endif
