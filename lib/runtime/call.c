/* Calls: a message that expects an answer within a deadline. The first of the reply and the
 * timeout wins; the loser is a no-op (a late reply is freed). An asynchronous caller gets its
 * callback on its own shard; a thread that is not a shard can wait on a condition variable. */
#include "runtime_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <time.h>

int fl_actor_send_msg(fl_actor_t *to, fl_msg_t *msg);

/* refs: an asynchronous call is released once, by deliver() on the caller's shard, which always
 * runs after the callee's side is done; a blocking call by both the waiter and the callee side. */
static fl_call_t *call_new(int refs)
{
    fl_call_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, refs);
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static void call_unref(fl_call_t *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->reply && c->reply_dtor)
        c->reply_dtor(c->reply);
    if (c->sync)
        pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    fl_free(c);
}

/* On the caller's shard, once the callee's side has let go: run the callback unless the timeout
 * already did, then free the timer (it belongs to this shard's base). */
static void deliver(void *arg)
{
    fl_call_t *c = arg;
    pthread_mutex_lock(&c->lock);
    bool mine = c->cb != NULL;
    fl_reply_fn cb = c->cb;
    void *reply = c->reply;
    c->cb = NULL;
    c->reply = NULL; /* the callback owns it now */
    pthread_mutex_unlock(&c->lock);
    if (c->timer) {
        event_free(c->timer);
        c->timer = NULL;
    }
    if (mine)
        cb(c->status, reply, c->cb_arg);
    call_unref(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_call_t *c = arg;
    pthread_mutex_lock(&c->lock);
    fl_reply_fn cb = NULL;
    if (!c->decided) {
        c->decided = true;
        c->status = FL_ETIMEDOUT;
        cb = c->cb;
        c->cb = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    if (cb)
        cb(FL_ETIMEDOUT, NULL, c->cb_arg);
    /* the timer itself is freed by deliver(), which the callee's side always posts */
}

void fl_call_reply(fl_call_t *c, int status, void *reply, void (*reply_dtor)(void *))
{
    pthread_mutex_lock(&c->lock);
    if (c->decided) {
        pthread_mutex_unlock(&c->lock);
        if (reply && reply_dtor)
            reply_dtor(reply); /* too late: the caller has gone on */
    } else {
        c->decided = true;
        c->status = status;
        c->reply = reply;
        c->reply_dtor = reply_dtor;
        if (c->sync)
            pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    if (!c->sync && fl_shard_post(c->caller, deliver, c) == FL_OK)
        return;
    if (!c->sync && c->timer) {
        /* the caller's shard has stopped: nothing will run there again */
        event_free(c->timer);
        c->timer = NULL;
    }
    call_unref(c);
}

void fl_actor_reply(fl_msg_t *msg, int status, void *reply, void (*reply_dtor)(void *))
{
    fl_call_t *c = msg->call;
    if (c == NULL) {
        if (reply && reply_dtor)
            reply_dtor(reply);
        return;
    }
    msg->call = NULL;
    fl_call_reply(c, status, reply, reply_dtor);
}

fl_call_t *fl_actor_keep_call(fl_msg_t *msg)
{
    fl_call_t *c = msg->call;
    msg->call = NULL;
    return c;
}

static int send_call(fl_actor_t *to, int type, void *data, void (*dtor)(void *), fl_call_t *c)
{
    fl_msg_t *msg = fl_malloc(sizeof(*msg));
    if (msg == NULL)
        return FL_ENOMEM;
    *msg = (fl_msg_t){.type = type, .data = data, .dtor = dtor, .call = c};
    int rc = fl_actor_send_msg(to, msg);
    if (rc != FL_OK)
        fl_free(msg);
    return rc;
}

int fl_actor_call(fl_actor_t *to, int type, void *data, void (*dtor)(void *), int timeout_ms, fl_reply_fn cb, void *arg)
{
    fl_shard_t *here = fl_shard_current();
    fl_assert(here != NULL); /* blocking waits belong to fl_actor_call_wait */
    fl_call_t *c = call_new(1);
    if (c == NULL)
        goto fail;
    c->caller = here;
    c->cb = cb;
    c->cb_arg = arg;
    c->timer = evtimer_new(fl_shard_base(here), on_timeout, c);
    if (c->timer == NULL)
        goto fail;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    int rc = send_call(to, type, data, dtor, c);
    if (rc != FL_OK) {
        event_free(c->timer);
        pthread_mutex_destroy(&c->lock);
        fl_free(c);
        if (data && dtor)
            dtor(data);
        return rc;
    }
    return FL_OK;
fail:
    if (c)
        pthread_mutex_destroy(&c->lock);
    fl_free(c);
    if (data && dtor)
        dtor(data);
    return FL_ENOMEM;
}

int fl_actor_call_wait(fl_actor_t *to, int type, void *data, void (*dtor)(void *), int timeout_ms, void **reply)
{
    fl_assert(fl_shard_current() == NULL); /* a shard must never block */
    *reply = NULL;
    fl_call_t *c = call_new(2);
    if (c == NULL) {
        if (data && dtor)
            dtor(data);
        return FL_ENOMEM;
    }
    c->sync = true;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &attr);
    pthread_condattr_destroy(&attr);

    int rc = send_call(to, type, data, dtor, c);
    if (rc != FL_OK) {
        if (data && dtor)
            dtor(data);
        atomic_store(&c->refs, 1);
        call_unref(c);
        return rc;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->decided) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT && !c->decided) {
            c->decided = true;
            c->status = FL_ETIMEDOUT;
        }
    }
    rc = c->status;
    if (rc == FL_OK) {
        *reply = c->reply;
        c->reply = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
    return rc;
}
