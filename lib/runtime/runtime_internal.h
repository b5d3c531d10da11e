/* Shared between the runtime's own files; nothing outside lib/runtime includes it. */
#ifndef FL_RUNTIME_INTERNAL_H
#define FL_RUNTIME_INTERNAL_H

#include "runtime.h"

#include <pthread.h>
#include <stdatomic.h>

struct event;

struct fl_call {
    atomic_int refs;
    pthread_mutex_t lock;
    bool decided; /* a reply or the timeout has won */
    int status;
    void *reply;
    void (*reply_dtor)(void *);
    /* asynchronous caller */
    fl_shard_t *caller;
    fl_reply_fn cb;
    void *cb_arg;
    struct event *timer;
    /* blocking caller */
    bool sync;
    pthread_cond_t cond;
};

struct fl_actor {
    atomic_int refs;
    fl_shard_t *shard;
    const fl_behaviour_t *behaviour;
    void *state;
    void *init_arg;
    char *id;

    /* mailbox: many producers, under lock; `scheduled` says the actor is in a run queue */
    pthread_mutex_t lock;
    fl_msg_t *head, *tail;
    int len, cap;
    bool scheduled;
    bool closed; /* no more messages accepted */
    fl_actor_t *next_ready;

    /* owned by the shard thread */
    bool started; /* init has run */
    bool stopping;
    int stop_kind;
    char *stop_reason;

    fl_actor_exit_fn on_exit;
    void *exit_arg;

    fl_blob_t *published; /* under lock */
    uint64_t published_tag;

    atomic_long handled;
    atomic_int mailbox_len;
    atomic_size_t state_memory;
    atomic_bool alive;
    int64_t started_ms;
};

/* Puts actor on its shard's run queue (the caller set actor->scheduled under the mailbox lock
 * and holds a reference for the queue). Any thread. */
void fl_shard_schedule(fl_shard_t *shard, fl_actor_t *actor);
/* Runs one turn of an actor (called by the shard's scheduler, on its thread). Returns true when
 * the actor has more messages and must stay scheduled. */
bool fl_actor_run_turn(fl_actor_t *actor);

#endif
