/* Supervisors (OTP's, in C): ordered start, reverse stop, restart strategies, restart intensity,
 * escalation, dynamic children, and the operator's drill. A supervisor is an actor; everything
 * it does happens in its handler, one step at a time: a step is "start child i" (spawn, then a
 * ping call that returns once the child's init has run) or "stop child i" (a stop request, then
 * its exit notice or the shutdown timeout). */
#include "runtime_internal.h"
#include "tree_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

enum { SUP_EXIT = 1, SUP_STEP_DONE, SUP_START_CHILD, SUP_RESTART_CHILD };
enum { OP_START, OP_STOP };

typedef struct {
    int kind;  /* OP_* */
    int index; /* child */
} op_t;

typedef struct {
    fl_actor_t *actor;
    int kind;
    char *reason;
} exit_note_t;

typedef struct sup_state sup_state_t;

typedef struct {
    sup_state_t *sup;
    fl_actor_t *child; /* the incarnation the step was about */
    int status;
} step_done_t;

struct sup_state {
    fl_actor_t *self;
    fl_sup_spec_t spec;
    fl_tree_node_t node; /* this supervisor as seen by fl_tree_json */

    op_t *ops;
    int nops, ops_cap;
    bool busy; /* a step is waiting for its completion */
    int busy_index;
    fl_actor_t *busy_actor;
    struct event *step_timer;

    int64_t *restart_times; /* ring of the last max_restarts + 1 restarts (monotonic ms) */
    int restart_head, restart_count;

    fl_call_t *start_waiter; /* our parent's ping: answered once every child has started */
    bool stopping;           /* stopping every child before ending */
    int stop_kind;
    char stop_reason[256];
};

static void exit_note_free(void *p)
{
    exit_note_t *n = p;
    fl_actor_unref(n->actor);
    fl_free(n->reason);
    fl_free(n);
}

/* A child's on_exit: runs on the child's shard; tells the supervisor by message. */
static void child_exited(fl_actor_t *child, int kind, const char *reason, void *arg)
{
    fl_actor_t *sup = arg;
    exit_note_t *n = fl_malloc(sizeof(*n));
    if (n == NULL) {
        fl_log(FL_LOG_ERROR, "sup.exit_lost", FL_MSG("no memory to report a child's exit"), FL_STR("child", child->id));
        fl_actor_unref(sup);
        return;
    }
    fl_actor_ref(child);
    n->actor = child;
    n->kind = kind;
    n->reason = fl_strdup(reason);
    /* The exit notice must not be refused for a full mailbox: it goes in as an urgent message. */
    if (fl_actor_notify(sup, SUP_EXIT, n, exit_note_free) != FL_OK)
        fl_log(FL_LOG_WARN, "sup.exit_after_stop", FL_MSG("a child ended after its supervisor"), FL_STR("child", child->id));
    fl_actor_unref(sup);
}

static int push_op(sup_state_t *s, int kind, int index)
{
    if (s->nops == s->ops_cap) {
        int cap = s->ops_cap ? s->ops_cap * 2 : 8;
        op_t *ops = fl_realloc(s->ops, (size_t)cap * sizeof(*ops));
        if (ops == NULL)
            return FL_ENOMEM;
        s->ops = ops;
        s->ops_cap = cap;
    }
    s->ops[s->nops++] = (op_t){kind, index};
    return FL_OK;
}

/* Queues a sequence of steps ahead of the steps already waiting: a restart comes before the rest
 * of a start sequence, so children still start in their order. */
static int push_ops_first(sup_state_t *s, const op_t *seq, int n)
{
    int cap = s->nops + n > s->ops_cap ? s->nops + n : s->ops_cap;
    op_t *ops = fl_malloc((size_t)(cap > 0 ? cap : 1) * sizeof(*ops));
    if (ops == NULL)
        return FL_ENOMEM;
    memcpy(ops, seq, (size_t)n * sizeof(*ops));
    memcpy(ops + n, s->ops, (size_t)s->nops * sizeof(*ops));
    fl_free(s->ops);
    s->ops = ops;
    s->ops_cap = cap;
    s->nops += n;
    return FL_OK;
}

static op_t pop_op(sup_state_t *s)
{
    op_t op = s->ops[0];
    memmove(s->ops, s->ops + 1, (size_t)(s->nops - 1) * sizeof(*s->ops));
    s->nops--;
    return op;
}

static void pump(sup_state_t *s);

/* A dynamic child that will not come back leaves the tree; queued steps keep pointing at the
 * children they were for. */
static void remove_child(sup_state_t *s, int index)
{
    int kept = 0;
    for (int i = 0; i < s->nops; i++) {
        if (s->ops[i].index == index)
            continue;
        if (s->ops[i].index > index)
            s->ops[i].index--;
        s->ops[kept++] = s->ops[i];
    }
    s->nops = kept;
    if (s->busy && s->busy_index > index)
        s->busy_index--;
    fl_tree_remove(&s->node, index);
}
static void child_failed(sup_state_t *s, int index, int kind, const char *reason);

static void step_reply(int status, void *reply, void *arg)
{
    (void)reply;
    step_done_t *d = arg;
    d->status = status;
    /* Delivered on our shard; hand it to the handler so it runs in the actor's turn. */
    if (fl_actor_notify(d->sup->self, SUP_STEP_DONE, d, fl_free) != FL_OK) {
        fl_actor_unref(d->child);
        fl_free(d);
    }
}

static void step_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sup_state_t *s = arg;
    if (!s->busy)
        return;
    fl_tree_child_t *c = &s->node.children[s->busy_index];
    fl_log(FL_LOG_WARN, "sup.stop_timeout", FL_MSG("a child did not stop within its shutdown time; moving on"),
           FL_STR("child", c->id), FL_STR("supervisor", s->self->id));
    fl_tree_detach(&s->node, s->busy_index, FL_TREE_STOPPED);
    fl_actor_unref(s->busy_actor);
    s->busy = false;
    s->busy_actor = NULL;
    pump(s);
}

static void answer_start_waiter(sup_state_t *s, int status)
{
    if (s->start_waiter) {
        fl_call_reply(s->start_waiter, status, NULL, NULL);
        s->start_waiter = NULL;
    }
}

/* Starts child i: spawn, then a ping that returns once init has run (or fails with it). */
static void start_child(sup_state_t *s, int i)
{
    fl_tree_child_t *c = &s->node.children[i];
    fl_actor_t *actor = NULL;
    int rc;
    fl_actor_ref(s->self); /* for child_exited */
    if (c->spec.sup) {
        rc = fl_sup_spawn(c->spec.shard ? c->spec.shard : s->self->shard, c->spec.id, c->spec.sup, c->spec.registered, child_exited,
                          s->self, &actor);
    } else {
        fl_actor_opts_t opts = {.id = c->spec.id, .mailbox_capacity = c->spec.mailbox_capacity, .registered = c->spec.registered};
        rc = fl_actor_spawn(c->spec.shard ? c->spec.shard : s->self->shard, c->spec.behaviour, c->spec.arg, &opts, child_exited,
                            s->self, &actor);
    }
    if (rc != FL_OK) {
        char why[128];
        snprintf(why, sizeof(why), "could not be spawned: %s%s", fl_strerror(rc),
                 rc == FL_EEXIST ? " (its name is registered to a live actor)" : "");
        fl_actor_unref(s->self);
        child_failed(s, i, FL_EXIT_CRASH, why);
        return;
    }
    fl_tree_attach(&s->node, i, actor, FL_TREE_STARTING);
    step_done_t *d = fl_malloc(sizeof(*d));
    if (d == NULL) {
        fl_actor_stop(actor, FL_EXIT_SHUTDOWN, "supervisor out of memory");
        return; /* its exit notice will arrive and be handled as a failure */
    }
    fl_actor_ref(actor);
    *d = (step_done_t){.sup = s, .child = actor};
    s->busy = true;
    s->busy_index = i;
    s->busy_actor = actor;
    fl_actor_ref(actor);
    int timeout = c->spec.start_timeout_ms > 0 ? c->spec.start_timeout_ms : 5000;
    if (c->spec.sup)
        timeout *= 4; /* a supervisor's start includes its children's */
    rc = fl_actor_call(actor, FL_MSG_PING, NULL, NULL, timeout, step_reply, d);
    if (rc != FL_OK) {
        /* Most likely its init already failed. Either way its exit notice settles this step, so
         * the supervisor stays busy until then and later children wait their turn. */
        fl_actor_unref(d->child);
        fl_free(d);
        fl_actor_stop(actor, FL_EXIT_CRASH, "could not be reached after spawning");
    }
}

static void stop_child(sup_state_t *s, int i, int kind, const char *reason)
{
    fl_tree_child_t *c = &s->node.children[i];
    if (c->actor == NULL)
        return;
    fl_tree_set_status(&s->node, i, FL_TREE_STOPPING);
    s->busy = true;
    s->busy_index = i;
    s->busy_actor = c->actor;
    fl_actor_ref(c->actor);
    if (fl_actor_stop(c->actor, kind, reason) != FL_OK) {
        /* already ended: its exit notice is on its way */
    }
    int ms = c->spec.shutdown_ms > 0 ? c->spec.shutdown_ms : 5000;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(s->step_timer, &tv);
}

static void all_stopped(sup_state_t *s)
{
    answer_start_waiter(s, FL_EUNAVAIL);
    fl_actor_exit(s->self, s->stop_kind, s->stop_reason);
}

/* Runs queued steps until one has to wait. */
static void pump(sup_state_t *s)
{
    while (!s->busy && s->nops > 0) {
        op_t op = pop_op(s);
        if (op.index >= s->node.nchildren)
            continue;
        fl_tree_child_t *c = &s->node.children[op.index];
        if (op.kind == OP_START && c->actor == NULL && !s->stopping)
            start_child(s, op.index);
        else if (op.kind == OP_STOP && c->actor != NULL)
            stop_child(s, op.index, FL_EXIT_SHUTDOWN, s->stopping ? s->stop_reason : "stopped by its supervisor");
    }
    if (!s->busy && s->nops == 0) {
        if (s->stopping)
            all_stopped(s);
        else
            answer_start_waiter(s, FL_OK);
    }
}

/* Stops every child (reverse order) and then ends this supervisor with kind and reason. */
static void shut_down(sup_state_t *s, int kind, const char *reason)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->stop_kind = kind;
    snprintf(s->stop_reason, sizeof(s->stop_reason), "%s", reason);
    s->nops = 0;
    for (int i = s->node.nchildren - 1; i >= 0; i--)
        if (s->node.children[i].actor)
            push_op(s, OP_STOP, i);
    pump(s);
}

/* Too many restarts in the period? Records this one either way. */
static bool intensity_exceeded(sup_state_t *s)
{
    int max = s->spec.max_restarts;
    int64_t now = fl_now_mono_ms();
    s->restart_times[s->restart_head] = now;
    s->restart_head = (s->restart_head + 1) % (max + 1);
    if (s->restart_count < max + 1)
        s->restart_count++;
    if (s->restart_count <= max)
        return false;
    /* the oldest of the last max+1 restarts is where the ring's head now points */
    return now - s->restart_times[s->restart_head] <= s->spec.period_ms;
}

static void child_failed(sup_state_t *s, int index, int kind, const char *reason)
{
    fl_tree_child_t *c = &s->node.children[index];
    bool abnormal = kind == FL_EXIT_CRASH || kind == FL_EXIT_KILLED;
    if (abnormal)
        fl_tree_record_crash(&s->node, index, reason);
    /* someone asked for this child while it was ending (a tracker stopping for idleness just as
     * a fix arrives): it comes back for them */
    bool wanted = c->nstart_waiters > 0;
    bool restart = !s->stopping &&
                   (c->spec.restart == FL_RESTART_PERMANENT || (c->spec.restart == FL_RESTART_TRANSIENT && abnormal) || wanted);
    if (!restart) {
        fl_tree_set_status(&s->node, index, FL_TREE_STOPPED);
        if (s->spec.dynamic)
            remove_child(s, index);
        pump(s);
        return;
    }
    if (intensity_exceeded(s)) {
        char why[300];
        snprintf(why, sizeof(why), "reached max restart intensity (%d in %d ms); last: %s: %s", s->spec.max_restarts,
                 s->spec.period_ms, c->id, reason);
        fl_log(FL_LOG_ERROR, "sup.intensity", FL_MSG("too many restarts: the supervisor gives up"),
               FL_STR("supervisor", s->self->id), FL_STR("reason", why));
        fl_tree_answer_restart_waiter(&s->node, index, FL_EUNAVAIL);
        shut_down(s, FL_EXIT_CRASH, why);
        return;
    }
    fl_tree_note_restart(&s->node, index);
    fl_log(FL_LOG_WARN, "sup.restarting", FL_MSG("restarting a child"), FL_STR("supervisor", s->self->id), FL_STR("child", c->id),
           FL_STR("reason", reason));
    int n = s->node.nchildren, k = 0;
    op_t *seq = fl_malloc((size_t)(2 * n + 1) * sizeof(*seq));
    if (seq == NULL) {
        shut_down(s, FL_EXIT_CRASH, "out of memory while restarting a child");
        return;
    }
    switch (s->spec.strategy) {
    case FL_ONE_FOR_ONE:
        seq[k++] = (op_t){OP_START, index};
        break;
    case FL_ONE_FOR_ALL:
        for (int i = n - 1; i >= 0; i--)
            if (i != index && s->node.children[i].actor)
                seq[k++] = (op_t){OP_STOP, i};
        for (int i = 0; i < n; i++)
            seq[k++] = (op_t){OP_START, i};
        break;
    case FL_REST_FOR_ONE:
        for (int i = n - 1; i > index; i--)
            if (s->node.children[i].actor)
                seq[k++] = (op_t){OP_STOP, i};
        for (int i = index; i < n; i++)
            seq[k++] = (op_t){OP_START, i};
        break;
    }
    int rc = push_ops_first(s, seq, k);
    fl_free(seq);
    if (rc != FL_OK) {
        shut_down(s, FL_EXIT_CRASH, "out of memory while restarting a child");
        return;
    }
    pump(s);
}

static void on_exit_note(sup_state_t *s, exit_note_t *n)
{
    int index = fl_tree_find_actor(&s->node, n->actor);
    if (index < 0)
        return; /* an incarnation we had already let go of */
    bool awaited = s->busy && s->busy_actor == n->actor;
    if (awaited) {
        evtimer_del(s->step_timer);
        fl_actor_unref(s->busy_actor);
        s->busy = false;
        s->busy_actor = NULL;
    }
    fl_tree_detach(&s->node, index, FL_TREE_STOPPED);
    bool asked = awaited && s->node.children[index].status_before_exit == FL_TREE_STOPPING;
    if (asked && n->kind == FL_EXIT_SHUTDOWN) {
        pump(s); /* a stop we asked for */
        return;
    }
    child_failed(s, index, n->kind, n->reason ? n->reason : "unknown");
}

static void on_step_done(sup_state_t *s, step_done_t *d)
{
    bool current = s->busy && s->busy_actor == d->child;
    int index = fl_tree_find_actor(&s->node, d->child);
    fl_actor_unref(d->child);
    if (!current)
        return;
    if (d->status != FL_OK && d->status != FL_ETIMEDOUT)
        return; /* init failed: the child's exit notice is on its way and settles this step */
    fl_actor_unref(s->busy_actor);
    s->busy = false;
    s->busy_actor = NULL;
    if (d->status == FL_OK) {
        if (index >= 0) {
            fl_tree_set_status(&s->node, index, FL_TREE_RUNNING);
            fl_tree_answer_restart_waiter(&s->node, index, FL_OK);
            fl_tree_answer_start_waiters(&s->node, index, FL_OK);
        }
        pump(s);
        return;
    }
    /* init did not finish in time */
    if (index >= 0) {
        fl_log(FL_LOG_ERROR, "sup.start_timeout", FL_MSG("a child's init did not finish in time"),
               FL_STR("child", s->node.children[index].id));
        fl_actor_t *late = s->node.children[index].actor;
        fl_tree_detach(&s->node, index, FL_TREE_STOPPED);
        fl_actor_stop(late, FL_EXIT_SHUTDOWN, "start timed out");
        child_failed(s, index, FL_EXIT_CRASH, "init did not finish within its start timeout");
        return;
    }
    pump(s);
}

static void on_start_child(sup_state_t *s, fl_msg_t *msg)
{
    fl_child_spec_t *spec = msg->data;
    int index = fl_tree_find_id(&s->node, spec->id);
    if (index >= 0 && s->node.children[index].actor && s->node.children[index].status == FL_TREE_RUNNING &&
        fl_actor_alive(s->node.children[index].actor)) {
        fl_actor_t *a = s->node.children[index].actor;
        fl_actor_ref(a);
        fl_actor_reply(msg, FL_OK, a, (void (*)(void *))fl_actor_unref);
        return;
    }
    if (s->stopping) {
        fl_actor_reply(msg, FL_ESTATE, NULL, NULL);
        return;
    }
    if (index < 0) {
        index = fl_tree_add(&s->node, spec);
        if (index < 0) {
            fl_actor_reply(msg, FL_ENOMEM, NULL, NULL);
            return;
        }
        msg->data = NULL; /* the tree owns the spec's arg now (freed with arg_dtor) */
        push_op(s, OP_START, index);
    }
    fl_tree_add_start_waiter(&s->node, index, fl_actor_keep_call(msg));
    pump(s);
}

static void on_restart_child(sup_state_t *s, fl_msg_t *msg)
{
    int index = fl_tree_find_id(&s->node, msg->data);
    if (index < 0 || s->node.children[index].actor == NULL) {
        fl_actor_reply(msg, FL_ENOTFOUND, NULL, NULL);
        return;
    }
    fl_tree_set_restart_waiter(&s->node, index, fl_actor_keep_call(msg));
    fl_actor_stop(s->node.children[index].actor, FL_EXIT_KILLED, "killed by an operator (drill)");
}

static int sup_init(fl_actor_t *self, void *arg, void **state)
{
    const fl_sup_spec_t *spec = arg;
    sup_state_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL)
        return FL_ENOMEM;
    s->self = self;
    s->spec = *spec;
    if (s->spec.max_restarts < 0)
        s->spec.max_restarts = 0;
    s->restart_times = fl_calloc((size_t)s->spec.max_restarts + 1, sizeof(int64_t));
    s->step_timer = evtimer_new(fl_shard_base(self->shard), step_timeout, s);
    if (s->restart_times == NULL || s->step_timer == NULL || fl_tree_node_init(&s->node, self, spec) != FL_OK) {
        if (s->step_timer)
            event_free(s->step_timer);
        fl_free(s->restart_times);
        fl_free(s);
        return FL_ENOMEM;
    }
    for (int i = 0; i < s->node.nchildren; i++)
        push_op(s, OP_START, i);
    fl_tree_publish_state(state, s);
    return FL_OK;
}

static int sup_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    sup_state_t *s = state;
    switch (msg->type) {
    case FL_MSG_PING:
        /* our parent waits for this: answer once every child has started */
        s->start_waiter = fl_actor_keep_call(msg);
        pump(s);
        return FL_OK;
    case FL_MSG_STOP: {
        const fl_stop_req_t *req = msg->data;
        shut_down(s, req->kind, req->reason);
        return FL_OK;
    }
    case SUP_EXIT:
        on_exit_note(s, msg->data);
        return FL_OK;
    case SUP_STEP_DONE:
        on_step_done(s, msg->data);
        return FL_OK;
    case SUP_START_CHILD:
        on_start_child(s, msg);
        return FL_OK;
    case SUP_RESTART_CHILD:
        on_restart_child(s, msg);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void sup_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    sup_state_t *s = state;
    if (s == NULL)
        return;
    answer_start_waiter(s, FL_EUNAVAIL);
    if (s->busy_actor)
        fl_actor_unref(s->busy_actor);
    event_free(s->step_timer);
    fl_tree_node_destroy(&s->node);
    fl_free(s->ops);
    fl_free(s->restart_times);
    fl_free(s);
}

static size_t sup_memory(const void *state)
{
    const sup_state_t *s = state;
    return sizeof(*s) + (size_t)s->ops_cap * sizeof(op_t) + fl_tree_node_memory(&s->node);
}

static const fl_behaviour_t sup_behaviour = {
    .name = "supervisor",
    .init = sup_init,
    .handle = sup_handle,
    .terminate = sup_terminate,
    .memory = sup_memory,
    .flags = FL_BEHAVIOUR_TRAP_STOP | FL_BEHAVIOUR_OWN_PING,
};

bool fl_actor_is_supervisor(const fl_actor_t *actor)
{
    return actor->behaviour == &sup_behaviour;
}

fl_tree_node_t *fl_sup_node(fl_actor_t *actor)
{
    return actor->behaviour == &sup_behaviour && actor->state ? &((sup_state_t *)actor->state)->node : NULL;
}

int fl_sup_spawn(fl_shard_t *shard, const char *id, const fl_sup_spec_t *spec, bool registered, fl_actor_exit_fn on_exit,
                 void *exit_arg, fl_actor_t **out)
{
    fl_actor_opts_t opts = {.id = id, .mailbox_capacity = 4096, .registered = registered};
    /* init only reads the spec; the cast through uintptr_t drops const for the generic void * */
    return fl_actor_spawn(shard, &sup_behaviour, (void *)(uintptr_t)spec, &opts, on_exit, exit_arg, out);
}

int fl_sup_start(fl_shard_t *shard, const char *id, const fl_sup_spec_t *spec, fl_actor_exit_fn on_exit, void *exit_arg,
                 int timeout_ms, fl_actor_t **out)
{
    fl_actor_t *sup;
    int rc = fl_sup_spawn(shard, id, spec, false, on_exit, exit_arg, &sup);
    if (rc != FL_OK)
        return rc;
    void *reply;
    rc = fl_actor_call_wait(sup, FL_MSG_PING, NULL, NULL, timeout_ms, &reply);
    if (rc != FL_OK) {
        fl_sup_stop(sup, timeout_ms);
        fl_actor_unref(sup);
        return rc == FL_ECLOSED ? FL_EUNAVAIL : rc;
    }
    *out = sup;
    return FL_OK;
}

int fl_sup_stop(fl_actor_t *sup, int timeout_ms)
{
    int rc = fl_actor_stop(sup, FL_EXIT_SHUTDOWN, "shutdown");
    if (rc == FL_ECLOSED)
        return FL_OK;
    if (rc != FL_OK)
        return rc;
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    while (fl_actor_alive(sup)) {
        if (fl_now_mono_ms() > deadline)
            return FL_ETIMEDOUT;
        struct timespec pause = {0, 2 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return FL_OK;
}

int fl_sup_start_child(fl_actor_t *sup, const fl_child_spec_t *spec, fl_reply_fn cb, void *arg)
{
    fl_child_spec_t *copy = fl_tree_spec_copy(spec);
    if (copy == NULL)
        return FL_ENOMEM;
    return fl_actor_call(sup, SUP_START_CHILD, copy, fl_tree_spec_free, 10000, cb, arg);
}

int fl_sup_start_child_wait(fl_actor_t *sup, const fl_child_spec_t *spec, int timeout_ms, fl_actor_t **child)
{
    fl_child_spec_t *copy = fl_tree_spec_copy(spec);
    if (copy == NULL)
        return FL_ENOMEM;
    void *reply = NULL;
    int rc = fl_actor_call_wait(sup, SUP_START_CHILD, copy, fl_tree_spec_free, timeout_ms, &reply);
    *child = rc == FL_OK ? reply : NULL;
    return rc;
}

int fl_sup_restart_child(fl_actor_t *sup, const char *id, fl_reply_fn cb, void *arg)
{
    char *copy = fl_strdup(id);
    if (copy == NULL)
        return FL_ENOMEM;
    return fl_actor_call(sup, SUP_RESTART_CHILD, copy, fl_free, 30000, cb, arg);
}

int fl_sup_restart_child_wait(fl_actor_t *sup, const char *id, int timeout_ms)
{
    char *copy = fl_strdup(id);
    if (copy == NULL)
        return FL_ENOMEM;
    void *reply = NULL;
    return fl_actor_call_wait(sup, SUP_RESTART_CHILD, copy, fl_free, timeout_ms, &reply);
}
