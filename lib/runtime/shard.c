#include "runtime_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct task {
    struct task *next;
    fl_task_fn fn;
    void *arg;
} task_t;

struct fl_shard {
    fl_runtime_t *rt;
    int index;
    struct event_base *base;
    pthread_t thread;
    bool started;

    /* Cross-shard task queue: producers append under the lock; the shard swaps the whole
     * list out and runs it. `wake_pending` makes a burst of posts cost one eventfd write. */
    pthread_mutex_t lock;
    task_t *head, *tail;
    bool wake_pending;
    bool closed;
    int wake_fd;
    struct event *wake_ev;
    /* actors made ready by other threads, under lock, moved to the run queue on wake-up */
    fl_actor_t *in_head, *in_tail;

    /* the run queue: owned by the shard thread */
    fl_actor_t *runq_head, *runq_tail;
    struct event *run_ev;
    bool run_pending;
};

struct fl_runtime {
    int nshards;
    fl_shard_t *shards;
};

static _Thread_local fl_shard_t *current_shard;

/* With the lock held: whether this post must write the eventfd, i.e. it is the first since the
 * shard last emptied its lists. A burst of posts costs the shard one wake-up. */
static bool needs_wake_locked(fl_shard_t *shard)
{
    bool wake = !shard->wake_pending;
    shard->wake_pending = true;
    return wake;
}

static void wake_up(fl_shard_t *shard)
{
    uint64_t one = 1;
    while (write(shard->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void arm_run(fl_shard_t *shard)
{
    /* A zero timeout rather than event_active: the loop polls for I/O before the next round, so a
     * busy run queue cannot starve the shard's connections. */
    static const struct timeval now = {0, 0};
    if (!shard->run_pending) {
        shard->run_pending = true;
        evtimer_add(shard->run_ev, &now);
    }
}

static void runq_push(fl_shard_t *shard, fl_actor_t *actor)
{
    actor->next_ready = NULL;
    if (shard->runq_tail)
        shard->runq_tail->next_ready = actor;
    else
        shard->runq_head = actor;
    shard->runq_tail = actor;
    arm_run(shard);
}

/* One round: every actor ready at its start gets one turn of at most FL_ACTOR_BUDGET messages. */
static void run_actors(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_shard_t *shard = arg;
    shard->run_pending = false;
    fl_actor_t *round = shard->runq_head;
    shard->runq_head = shard->runq_tail = NULL;
    while (round) {
        fl_actor_t *actor = round;
        round = actor->next_ready;
        if (fl_actor_run_turn(actor))
            runq_push(shard, actor); /* stays scheduled: the queue keeps its reference */
        else
            fl_actor_unref(actor);
    }
}

void fl_shard_schedule(fl_shard_t *shard, fl_actor_t *actor)
{
    if (current_shard == shard) {
        runq_push(shard, actor);
        return;
    }
    actor->next_ready = NULL;
    pthread_mutex_lock(&shard->lock);
    if (shard->in_tail)
        shard->in_tail->next_ready = actor;
    else
        shard->in_head = actor;
    shard->in_tail = actor;
    bool wake = needs_wake_locked(shard);
    pthread_mutex_unlock(&shard->lock);
    if (wake)
        wake_up(shard);
}

static void run_tasks(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fl_shard_t *shard = arg;
    uint64_t count;
    if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        fl_log(FL_LOG_WARN, "runtime.wake_read", FL_MSG("reading the shard's wake-up eventfd failed"),
               FL_STR("error", strerror(errno)));

    pthread_mutex_lock(&shard->lock);
    task_t *list = shard->head;
    shard->head = shard->tail = NULL;
    fl_actor_t *ready = shard->in_head;
    shard->in_head = shard->in_tail = NULL;
    shard->wake_pending = false;
    pthread_mutex_unlock(&shard->lock);

    while (ready) {
        fl_actor_t *next = ready->next_ready;
        runq_push(shard, ready);
        ready = next;
    }
    while (list) {
        task_t *next = list->next;
        list->fn(list->arg);
        fl_free(list);
        list = next;
    }
}

int fl_runtime_new(int nshards, fl_runtime_t **out)
{
    if (nshards <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nshards = cpus > 0 ? (int)cpus : 1;
    }
    fl_runtime_t *rt = fl_calloc(1, sizeof(*rt));
    if (rt == NULL)
        return FL_ENOMEM;
    rt->shards = fl_calloc((size_t)nshards, sizeof(fl_shard_t));
    if (rt->shards == NULL) {
        fl_free(rt);
        return FL_ENOMEM;
    }
    rt->nshards = nshards;
    for (int i = 0; i < nshards; i++) {
        fl_shard_t *s = &rt->shards[i];
        s->rt = rt;
        s->index = i;
        s->wake_fd = -1;
        pthread_mutex_init(&s->lock, NULL);
        struct event_config *ec = event_config_new();
        if (ec == NULL)
            goto fail;
        /* A base is only ever touched by its own thread, so it needs no lock. */
        event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
        s->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (s->base == NULL)
            goto fail;
        s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->wake_fd < 0)
            goto fail;
        s->wake_ev = event_new(s->base, s->wake_fd, EV_READ | EV_PERSIST, run_tasks, s);
        if (s->wake_ev == NULL || event_add(s->wake_ev, NULL) != 0)
            goto fail;
        s->run_ev = evtimer_new(s->base, run_actors, s);
        if (s->run_ev == NULL)
            goto fail;
    }
    *out = rt;
    return FL_OK;
fail:
    fl_runtime_free(rt);
    return FL_ENOMEM;
}

static void *shard_main(void *arg)
{
    fl_shard_t *shard = arg;
    current_shard = shard;
    event_base_loop(shard->base, EVLOOP_NO_EXIT_ON_EMPTY);
    /* Refuse new posts, then run what was posted before: nothing is left queued and unrun. */
    pthread_mutex_lock(&shard->lock);
    shard->closed = true;
    pthread_mutex_unlock(&shard->lock);
    run_tasks(shard->wake_fd, EV_READ, shard);
    current_shard = NULL;
    return NULL;
}

int fl_runtime_start(fl_runtime_t *rt)
{
    for (int i = 0; i < rt->nshards; i++) {
        fl_shard_t *s = &rt->shards[i];
        int rc = pthread_create(&s->thread, NULL, shard_main, s);
        if (rc != 0) {
            fl_log(FL_LOG_ERROR, "runtime.thread", FL_MSG("cannot start a shard thread"), FL_STR("error", strerror(rc)));
            fl_runtime_stop(rt);
            return FL_EIO;
        }
        s->started = true;
    }
    return FL_OK;
}

static void exit_loop(void *arg)
{
    fl_shard_t *shard = arg;
    event_base_loopbreak(shard->base);
}

void fl_runtime_stop(fl_runtime_t *rt)
{
    for (int i = 0; i < rt->nshards; i++) {
        fl_shard_t *s = &rt->shards[i];
        if (s->started && fl_shard_post(s, exit_loop, s) != FL_OK)
            fl_log(FL_LOG_ERROR, "runtime.stop", FL_MSG("cannot ask a shard to stop"), FL_INT("shard", i));
    }
    for (int i = 0; i < rt->nshards; i++) {
        fl_shard_t *s = &rt->shards[i];
        if (!s->started)
            continue;
        pthread_join(s->thread, NULL);
        s->started = false;
    }
}

void fl_runtime_free(fl_runtime_t *rt)
{
    if (rt == NULL)
        return;
    for (int i = 0; i < rt->nshards; i++) {
        fl_shard_t *s = &rt->shards[i];
        for (task_t *t = s->head, *next; t; t = next) {
            next = t->next;
            fl_free(t);
        }
        if (s->wake_ev)
            event_free(s->wake_ev);
        if (s->run_ev)
            event_free(s->run_ev);
        if (s->wake_fd >= 0)
            close(s->wake_fd);
        if (s->base)
            event_base_free(s->base);
        pthread_mutex_destroy(&s->lock);
    }
    fl_free(rt->shards);
    fl_free(rt);
}

int fl_runtime_nshards(const fl_runtime_t *rt)
{
    return rt->nshards;
}

fl_shard_t *fl_runtime_shard(fl_runtime_t *rt, int index)
{
    fl_assert(index >= 0 && index < rt->nshards);
    return &rt->shards[index];
}

struct event_base *fl_shard_base(fl_shard_t *shard)
{
    return shard->base;
}

int fl_shard_index(const fl_shard_t *shard)
{
    return shard->index;
}

fl_runtime_t *fl_shard_runtime(fl_shard_t *shard)
{
    return shard->rt;
}

fl_shard_t *fl_shard_current(void)
{
    return current_shard;
}

int fl_shard_post(fl_shard_t *shard, fl_task_fn fn, void *arg)
{
    task_t *t = fl_malloc(sizeof(*t));
    if (t == NULL)
        return FL_ENOMEM;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;

    pthread_mutex_lock(&shard->lock);
    if (shard->closed) {
        pthread_mutex_unlock(&shard->lock);
        fl_free(t);
        return FL_ECLOSED;
    }
    if (shard->tail)
        shard->tail->next = t;
    else
        shard->head = t;
    shard->tail = t;
    bool wake = needs_wake_locked(shard);
    pthread_mutex_unlock(&shard->lock);
    if (wake)
        wake_up(shard);
    return FL_OK;
}
