/* A test behaviour shared by the runtime's tests: a counter that can be told to crash, to fail
 * an assertion, to sleep, or to stop; it records the order of inits and terminates. */
#ifndef ACTOR_FIXTURE_H
#define ACTOR_FIXTURE_H

#include "runtime/runtime.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { T_INCR, T_GET, T_CRASH, T_ASSERT, T_SLEEP, T_STOP, T_BUSY_FLAG };

typedef struct {
    char name[32];
    atomic_int fail_init; /* init fails while this is > 0 (then counts down) */
    atomic_int inits;     /* incarnations started */
    atomic_int terminates;
    atomic_int sleeping;
    atomic_int last_exit_kind;
} fixture_t;

/* A global journal of "init:NAME" / "term:NAME" events, to check start and stop order. */
static pthread_mutex_t journal_lock = PTHREAD_MUTEX_INITIALIZER;
static char journal[4096];

static inline void journal_add(const char *what, const char *name)
{
    pthread_mutex_lock(&journal_lock);
    size_t len = strlen(journal);
    snprintf(journal + len, sizeof(journal) - len, "%s:%s ", what, name);
    pthread_mutex_unlock(&journal_lock);
}

static inline void journal_reset(void)
{
    pthread_mutex_lock(&journal_lock);
    journal[0] = '\0';
    pthread_mutex_unlock(&journal_lock);
}

typedef struct {
    fixture_t *fx;
    long count;
} counter_t;

static inline int counter_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    fixture_t *fx = arg;
    if (atomic_load(&fx->fail_init) > 0) {
        atomic_fetch_sub(&fx->fail_init, 1);
        return FL_EIO;
    }
    counter_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        return FL_ENOMEM;
    c->fx = fx;
    atomic_fetch_add(&fx->inits, 1);
    journal_add("init", fx->name);
    *state = c;
    return FL_OK;
}

static inline long *long_box(long v)
{
    long *p = fl_malloc(sizeof(*p));
    *p = v;
    return p;
}

static inline int counter_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    counter_t *c = state;
    switch (msg->type) {
    case T_INCR:
        c->count++;
        return FL_OK;
    case T_GET:
        fl_actor_reply(msg, FL_OK, long_box(c->count), fl_free);
        return FL_OK;
    case T_CRASH:
        return FL_EIO;
    case T_ASSERT:
        fl_assert(c->count < 0);
        return FL_OK;
    case T_SLEEP: {
        atomic_store(&c->fx->sleeping, 1);
        struct timespec ts = {0, *(long *)msg->data * 1000000L};
        nanosleep(&ts, NULL);
        atomic_store(&c->fx->sleeping, 0);
        if (msg->call)
            fl_actor_reply(msg, FL_OK, long_box(c->count), fl_free);
        return FL_OK;
    }
    case T_STOP:
        return FL_STOP_NORMAL;
    default:
        return FL_EINVAL;
    }
}

static inline void counter_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    counter_t *c = state;
    if (c == NULL)
        return;
    atomic_fetch_add(&c->fx->terminates, 1);
    atomic_store(&c->fx->last_exit_kind, kind);
    journal_add("term", c->fx->name);
    fl_free(c);
}

static inline size_t counter_memory(const void *state)
{
    (void)state;
    return sizeof(counter_t);
}

__attribute__((unused)) static const fl_behaviour_t counter_behaviour = {
    .name = "counter",
    .init = counter_init,
    .handle = counter_handle,
    .terminate = counter_terminate,
    .memory = counter_memory,
};

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to timeout_ms for cond to hold; returns whether it did. */
#define WAIT_FOR(cond, timeout_ms)                                                                                                 \
    ({                                                                                                                             \
        int64_t deadline_ = fl_now_mono_ms() + (timeout_ms);                                                                       \
        while (!(cond) && fl_now_mono_ms() < deadline_)                                                                            \
            sleep_ms(2);                                                                                                           \
        (bool)(cond);                                                                                                              \
    })

static inline long get_count(fl_actor_t *a)
{
    void *reply = NULL;
    int rc = fl_actor_call_wait(a, T_GET, NULL, NULL, 2000, &reply);
    if (rc != FL_OK)
        return -1000 + rc;
    long v = *(long *)reply;
    fl_free(reply);
    return v;
}

/* How an actor (or a supervisor) ended, for tests that watch it end. */
typedef struct {
    atomic_int calls;
    atomic_int kind;
    char reason[512];
} exit_seen_t;

static inline void on_exit_record(fl_actor_t *actor, int kind, const char *reason, void *arg)
{
    (void)actor;
    exit_seen_t *seen = arg;
    snprintf(seen->reason, sizeof(seen->reason), "%s", reason);
    atomic_store(&seen->kind, kind);
    atomic_fetch_add(&seen->calls, 1);
}

/* A started runtime of two shards for a test group. */
static fl_runtime_t *rt;

static inline int runtime_setup(fl_log_level_t level)
{
    fl_log_init(level, FL_LOG_JSON);
    return fl_runtime_new(2, &rt) == FL_OK && fl_runtime_start(rt) == FL_OK ? 0 : -1;
}

static inline int runtime_teardown(void **state)
{
    (void)state;
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
    return 0;
}

#endif
