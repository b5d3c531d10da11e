/* Actors: spawn, mailboxes, turns with a budget, crashes, stops. Calls are in call.c. */
#include "tree_internal.h"

#include <event2/event.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

static _Thread_local fl_actor_t *self_actor;
static _Thread_local jmp_buf *crash_jump;
static _Thread_local char crash_text[256];

fl_actor_t *fl_actor_self(void)
{
    return self_actor;
}

static void free_actor(fl_actor_t *a)
{
    fl_blob_unref(a->published);
    pthread_mutex_destroy(&a->lock);
    fl_free(a->id);
    fl_free(a->stop_reason);
    fl_free(a);
}

void fl_actor_ref(fl_actor_t *actor)
{
    atomic_fetch_add_explicit(&actor->refs, 1, memory_order_relaxed);
}

void fl_actor_unref(fl_actor_t *actor)
{
    if (actor != NULL && atomic_fetch_sub_explicit(&actor->refs, 1, memory_order_acq_rel) == 1)
        free_actor(actor);
}

/* A message that will not be handled: its data is freed and a waiting caller learns why. */
static void drop_msg(fl_msg_t *msg, int status)
{
    if (msg->data && msg->dtor)
        msg->dtor(msg->data);
    if (msg->call)
        fl_call_reply(msg->call, status, NULL, NULL);
    fl_free(msg);
}

int fl_actor_spawn(fl_shard_t *shard, const fl_behaviour_t *behaviour, void *arg, const fl_actor_opts_t *opts,
                   fl_actor_exit_fn on_exit, void *exit_arg, fl_actor_t **out)
{
    fl_actor_t *a = fl_calloc(1, sizeof(*a));
    if (a == NULL)
        return FL_ENOMEM;
    const char *id = opts && opts->id ? opts->id : behaviour->name;
    a->id = fl_strdup(id ? id : "actor");
    if (a->id == NULL) {
        fl_free(a);
        return FL_ENOMEM;
    }
    pthread_mutex_init(&a->lock, NULL);
    a->shard = shard;
    a->behaviour = behaviour;
    a->init_arg = arg;
    a->cap = opts && opts->mailbox_capacity > 0 ? opts->mailbox_capacity : FL_ACTOR_DEFAULT_MAILBOX;
    a->on_exit = on_exit;
    a->exit_arg = exit_arg;
    a->started_ms = fl_now_mono_ms();
    atomic_init(&a->alive, true);
    /* one reference for the caller, one for being alive, one for the run queue (init is due) */
    atomic_init(&a->refs, 3);
    a->scheduled = true;
    if (opts && opts->registered) {
        /* before it can run: a name taken by a live actor is a failed spawn */
        int rc = fl_registry_register(a->id, a);
        if (rc != FL_OK) {
            pthread_mutex_destroy(&a->lock);
            fl_free(a->id);
            fl_free(a);
            return rc;
        }
    }
    *out = a;
    fl_shard_schedule(shard, a);
    return FL_OK;
}

/* NORMAL respects the mailbox bound; UNBOUNDED is for the runtime's own notices, which must not be
 * lost; FRONT (stop requests) also jumps the queue. */
enum { NORMAL, UNBOUNDED, FRONT };

static int enqueue(fl_actor_t *to, fl_msg_t *msg, int mode)
{
    bool urgent = mode == FRONT;
    pthread_mutex_lock(&to->lock);
    if (to->closed) {
        pthread_mutex_unlock(&to->lock);
        return FL_ECLOSED;
    }
    if (to->len >= to->cap && mode == NORMAL) {
        pthread_mutex_unlock(&to->lock);
        return FL_EFULL;
    }
    msg->next = NULL;
    if (urgent) {
        msg->next = to->head;
        to->head = msg;
        if (to->tail == NULL)
            to->tail = msg;
    } else {
        if (to->tail)
            to->tail->next = msg;
        else
            to->head = msg;
        to->tail = msg;
    }
    to->len++;
    atomic_store_explicit(&to->mailbox_len, to->len, memory_order_relaxed);
    bool wake = !to->scheduled;
    to->scheduled = true;
    if (wake)
        fl_actor_ref(to); /* the run queue's reference */
    pthread_mutex_unlock(&to->lock);
    if (wake)
        fl_shard_schedule(to->shard, to);
    return FL_OK;
}

/* Sends msg; on failure the message is not consumed (the caller decides what to free). */
int fl_actor_send_msg(fl_actor_t *to, fl_msg_t *msg);
int fl_actor_send_msg(fl_actor_t *to, fl_msg_t *msg)
{
    return enqueue(to, msg, NORMAL);
}

static int cast(fl_actor_t *to, int type, void *data, void (*dtor)(void *), int mode)
{
    fl_msg_t *msg = fl_malloc(sizeof(*msg));
    if (msg == NULL) {
        if (data && dtor)
            dtor(data);
        return FL_ENOMEM;
    }
    *msg = (fl_msg_t){.type = type, .data = data, .dtor = dtor};
    int rc = enqueue(to, msg, mode);
    if (rc != FL_OK) {
        if (data && dtor)
            dtor(data);
        fl_free(msg);
    }
    return rc;
}

int fl_actor_cast(fl_actor_t *to, int type, void *data, void (*dtor)(void *))
{
    return cast(to, type, data, dtor, NORMAL);
}

int fl_actor_notify(fl_actor_t *to, int type, void *data, void (*dtor)(void *))
{
    return cast(to, type, data, dtor, UNBOUNDED);
}

int fl_actor_stop(fl_actor_t *actor, int exit_kind, const char *reason)
{
    if (reason == NULL)
        reason = "stopped";
    fl_msg_t *msg = fl_malloc(sizeof(*msg));
    fl_stop_req_t *req = fl_malloc(sizeof(*req) + strlen(reason) + 1);
    if (msg == NULL || req == NULL) {
        fl_free(msg);
        fl_free(req);
        return FL_ENOMEM;
    }
    req->kind = exit_kind;
    strcpy(req->reason, reason);
    *msg = (fl_msg_t){.type = FL_MSG_STOP, .data = req, .dtor = fl_free};
    /* stop messages go first and are never refused for a full mailbox */
    int rc = enqueue(actor, msg, FRONT);
    if (rc != FL_OK) {
        fl_free(req);
        fl_free(msg);
    }
    return rc;
}

/* fl_assert inside a handler: leave the handler and crash the actor, not the process. */
static void assert_in_actor(const char *expr, const char *file, int line)
{
    snprintf(crash_text, sizeof(crash_text), "assertion failed: %s at %s:%d", expr, file, line);
    if (crash_jump)
        longjmp(*crash_jump, 1);
}

/* Runs the actor's init (msg NULL) or handle, protected: an fl_assert failing inside becomes
 * FL_EPROTO with crash_text set, instead of ending the process. */
static int protected_call(fl_actor_t *a, fl_msg_t *msg)
{
    jmp_buf jump;
    crash_text[0] = '\0';
    if (setjmp(jump) != 0) {
        crash_jump = NULL;
        fl_assert_set_thread_handler(NULL);
        return FL_EPROTO;
    }
    crash_jump = &jump;
    fl_assert_set_thread_handler(assert_in_actor);
    int rc;
    if (msg)
        rc = a->behaviour->handle(a, a->state, msg);
    else
        rc = a->behaviour->init ? a->behaviour->init(a, a->init_arg, &a->state) : FL_OK;
    crash_jump = NULL;
    fl_assert_set_thread_handler(NULL);
    return rc;
}

static void set_stop(fl_actor_t *a, int kind, const char *reason)
{
    if (a->stopping)
        return;
    a->stopping = true;
    a->stop_kind = kind;
    a->stop_reason = fl_strdup(reason);
}

void fl_actor_exit(fl_actor_t *self, int exit_kind, const char *reason)
{
    fl_assert(self == self_actor);
    set_stop(self, exit_kind, reason ? reason : "normal");
}

static void crash(fl_actor_t *a, int rc, const char *during)
{
    char reason[320];
    if (crash_text[0])
        snprintf(reason, sizeof(reason), "%s", crash_text);
    else
        snprintf(reason, sizeof(reason), "%s returned %s", during, fl_strerror(rc));
    fl_log(FL_LOG_ERROR, "actor.crashed", FL_MSG("actor crashed"), FL_STR("actor", a->id), FL_STR("reason", reason));
    set_stop(a, FL_EXIT_CRASH, reason);
}

/* The actor ends: refuse new messages, drop the queued ones, terminate, report, release. */
static void finish(fl_actor_t *a)
{
    pthread_mutex_lock(&a->lock);
    a->closed = true;
    fl_msg_t *left = a->head;
    a->head = a->tail = NULL;
    a->len = 0;
    a->scheduled = false;
    pthread_mutex_unlock(&a->lock);
    atomic_store(&a->mailbox_len, 0);
    while (left) {
        fl_msg_t *next = left->next;
        drop_msg(left, FL_ECLOSED);
        left = next;
    }
    if (a->started && a->behaviour->terminate)
        a->behaviour->terminate(a, a->state, a->stop_kind);
    a->state = NULL;
    atomic_store(&a->alive, false);
    atomic_store(&a->state_memory, 0);
    if (a->on_exit)
        a->on_exit(a, a->stop_kind, a->stop_reason ? a->stop_reason : "", a->exit_arg);
    fl_actor_unref(a); /* the life reference */
}

bool fl_actor_run_turn(fl_actor_t *a)
{
    self_actor = a;
    if (!a->started && !a->stopping) {
        int rc = protected_call(a, NULL);
        if (rc != FL_OK) {
            crash(a, rc, "init");
            a->state = NULL;
        } else {
            a->started = true;
        }
    }

    fl_msg_t *batch = NULL;
    if (!a->stopping) {
        pthread_mutex_lock(&a->lock);
        batch = a->head;
        fl_msg_t *last = NULL;
        int n = 0;
        for (fl_msg_t *m = a->head; m && n < FL_ACTOR_BUDGET; m = m->next) {
            last = m;
            n++;
        }
        if (last) {
            a->head = last->next;
            if (a->head == NULL)
                a->tail = NULL;
            last->next = NULL;
        }
        a->len -= n;
        atomic_store_explicit(&a->mailbox_len, a->len, memory_order_relaxed);
        pthread_mutex_unlock(&a->lock);
    }

    while (batch) {
        fl_msg_t *msg = batch;
        batch = msg->next;
        if (a->stopping) {
            drop_msg(msg, FL_ECLOSED);
            continue;
        }
        if (msg->type == FL_MSG_PING && !(a->behaviour->flags & FL_BEHAVIOUR_OWN_PING)) {
            fl_actor_reply(msg, FL_OK, NULL, NULL);
            drop_msg(msg, FL_OK);
            continue;
        }
        if (msg->type == FL_MSG_STOP && !(a->behaviour->flags & FL_BEHAVIOUR_TRAP_STOP)) {
            const fl_stop_req_t *req = msg->data;
            set_stop(a, req->kind, req->reason);
            drop_msg(msg, FL_ECLOSED);
            continue;
        }
        int rc = protected_call(a, msg);
        atomic_fetch_add_explicit(&a->handled, 1, memory_order_relaxed);
        if (rc == FL_STOP_NORMAL)
            set_stop(a, FL_EXIT_NORMAL, "normal");
        else if (rc != FL_OK)
            crash(a, rc, "handler");
        if (msg->call) {
            fl_log(FL_LOG_WARN, "actor.unanswered_call", FL_MSG("a call was not answered by its handler"), FL_STR("actor", a->id),
                   FL_INT("type", msg->type));
            fl_call_reply(msg->call, FL_EPROTO, NULL, NULL);
            msg->call = NULL;
        }
        drop_msg(msg, FL_OK);
    }
    if (a->started && a->behaviour->memory && !a->stopping)
        atomic_store_explicit(&a->state_memory, a->behaviour->memory(a->state), memory_order_relaxed);
    self_actor = NULL;

    if (a->stopping) {
        finish(a);
        return false;
    }
    pthread_mutex_lock(&a->lock);
    bool more = a->head != NULL;
    if (!more)
        a->scheduled = false;
    pthread_mutex_unlock(&a->lock);
    return more;
}

void fl_actor_publish(fl_actor_t *self, fl_blob_t *blob, uint64_t tag)
{
    pthread_mutex_lock(&self->lock);
    fl_blob_t *old = self->published;
    self->published = blob;
    self->published_tag = tag;
    pthread_mutex_unlock(&self->lock);
    fl_blob_unref(old);
}

fl_blob_t *fl_actor_snapshot(fl_actor_t *actor, uint64_t *tag)
{
    pthread_mutex_lock(&actor->lock);
    fl_blob_t *blob = actor->published ? fl_blob_ref(actor->published) : NULL;
    if (tag)
        *tag = actor->published_tag;
    pthread_mutex_unlock(&actor->lock);
    return blob;
}

fl_shard_t *fl_actor_shard(const fl_actor_t *actor)
{
    return actor->shard;
}

const char *fl_actor_id(const fl_actor_t *actor)
{
    return actor->id;
}

bool fl_actor_alive(const fl_actor_t *actor)
{
    return atomic_load(&actor->alive);
}

void fl_actor_stats(const fl_actor_t *a, fl_actor_stats_t *out)
{
    out->mailbox = atomic_load_explicit(&a->mailbox_len, memory_order_relaxed);
    out->handled = atomic_load_explicit(&a->handled, memory_order_relaxed);
    out->memory = sizeof(*a) + strlen(a->id) + 1 + (size_t)out->mailbox * sizeof(fl_msg_t) +
                  atomic_load_explicit(&a->state_memory, memory_order_relaxed);
    out->started_ms = a->started_ms;
    out->alive = atomic_load(&a->alive);
}
