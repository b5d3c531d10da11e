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

#endif
