/* The supervision tree's records and its introspection (fl_tree_json, fl_tree_restart). */
#include "tree_internal.h"

#include <jansson.h>
#include <stdatomic.h>
#include <string.h>

static pthread_rwlock_t tree_lock = PTHREAD_RWLOCK_INITIALIZER;

static const char *status_name(fl_tree_status_t s)
{
    static const char *names[] = {"starting", "running", "stopping", "stopped", "restarting"};
    return (unsigned)s <= FL_TREE_RESTARTING ? names[s] : "unknown";
}

fl_child_spec_t *fl_tree_spec_copy(const fl_child_spec_t *spec)
{
    fl_child_spec_t *copy = fl_malloc(sizeof(*copy));
    char *id = fl_strdup(spec->id);
    if (copy == NULL || id == NULL) {
        fl_free(copy);
        fl_free(id);
        return NULL;
    }
    *copy = *spec;
    copy->id = id;
    return copy;
}

void fl_tree_spec_free(void *p)
{
    fl_child_spec_t *spec = p;
    if (spec->arg && spec->arg_dtor)
        spec->arg_dtor(spec->arg);
    fl_free((void *)(uintptr_t)spec->id); /* the copy owns its id */
    fl_free(spec);
}

static int grow(fl_tree_node_t *node)
{
    if (node->nchildren < node->cap)
        return FL_OK;
    int cap = node->cap ? node->cap * 2 : 4;
    fl_tree_child_t *c = fl_realloc(node->children, (size_t)cap * sizeof(*c));
    if (c == NULL)
        return FL_ENOMEM;
    node->children = c;
    node->cap = cap;
    return FL_OK;
}

int fl_tree_node_init(fl_tree_node_t *node, fl_actor_t *self, const fl_sup_spec_t *spec)
{
    memset(node, 0, sizeof(*node));
    node->self = self;
    node->strategy = spec->strategy;
    node->dynamic = spec->dynamic;
    for (int i = 0; i < spec->nchildren; i++) {
        if (grow(node) != FL_OK)
            goto fail;
        fl_tree_child_t *c = &node->children[node->nchildren];
        memset(c, 0, sizeof(*c));
        c->spec = spec->children[i];
        c->id = c->spec.id;
        c->status = FL_TREE_STOPPED;
        node->nchildren++;
    }
    return FL_OK;
fail:
    fl_free(node->children);
    node->children = NULL;
    node->nchildren = 0;
    return FL_ENOMEM;
}

static void answer_waiters(fl_tree_child_t *c, int status)
{
    if (c->restart_waiter) {
        fl_call_reply(c->restart_waiter, status, NULL, NULL);
        c->restart_waiter = NULL;
    }
    for (int i = 0; i < c->nstart_waiters; i++) {
        fl_actor_t *reply = NULL;
        if (status == FL_OK && c->actor) {
            fl_actor_ref(c->actor);
            reply = c->actor;
        }
        fl_call_reply(c->start_waiters[i], status, reply, (void (*)(void *))fl_actor_unref);
    }
    fl_free(c->start_waiters);
    c->start_waiters = NULL;
    c->nstart_waiters = 0;
}

static void child_release(fl_tree_child_t *c)
{
    answer_waiters(c, FL_ECLOSED);
    if (c->actor)
        fl_actor_unref(c->actor);
    fl_free(c->last_crash);
    if (c->owned_spec)
        fl_tree_spec_free(c->owned_spec);
}

void fl_tree_publish_state(void **slot, void *state)
{
    pthread_rwlock_wrlock(&tree_lock);
    *slot = state;
    pthread_rwlock_unlock(&tree_lock);
}

void fl_tree_node_destroy(fl_tree_node_t *node)
{
    pthread_rwlock_wrlock(&tree_lock);
    node->self->state = NULL;
    fl_tree_child_t *children = node->children;
    int n = node->nchildren;
    node->children = NULL;
    node->nchildren = 0;
    pthread_rwlock_unlock(&tree_lock);
    for (int i = 0; i < n; i++)
        child_release(&children[i]);
    fl_free(children);
}

size_t fl_tree_node_memory(const fl_tree_node_t *node)
{
    size_t bytes = (size_t)node->cap * sizeof(fl_tree_child_t);
    for (int i = 0; i < node->nchildren; i++)
        bytes += node->children[i].last_crash ? strlen(node->children[i].last_crash) + 1 : 0;
    return bytes;
}

void fl_tree_attach(fl_tree_node_t *node, int i, fl_actor_t *actor, fl_tree_status_t status)
{
    pthread_rwlock_wrlock(&tree_lock);
    fl_tree_child_t *c = &node->children[i];
    if (c->actor)
        fl_actor_unref(c->actor);
    c->actor = actor;
    c->status = status;
    c->started_at = fl_now_mono_ms();
    pthread_rwlock_unlock(&tree_lock);
}

void fl_tree_detach(fl_tree_node_t *node, int i, fl_tree_status_t status)
{
    pthread_rwlock_wrlock(&tree_lock);
    fl_tree_child_t *c = &node->children[i];
    fl_actor_t *old = c->actor;
    c->actor = NULL;
    c->status_before_exit = c->status;
    c->status = status;
    pthread_rwlock_unlock(&tree_lock);
    if (old)
        fl_actor_unref(old);
}

void fl_tree_set_status(fl_tree_node_t *node, int i, fl_tree_status_t status)
{
    pthread_rwlock_wrlock(&tree_lock);
    node->children[i].status = status;
    pthread_rwlock_unlock(&tree_lock);
}

void fl_tree_record_crash(fl_tree_node_t *node, int i, const char *reason)
{
    char *copy = fl_strdup(reason);
    pthread_rwlock_wrlock(&tree_lock);
    fl_tree_child_t *c = &node->children[i];
    fl_free(c->last_crash);
    c->last_crash = copy;
    c->last_crash_at = fl_now_wall_ms();
    pthread_rwlock_unlock(&tree_lock);
}

/* Every restart since the process started, for /metrics: a counter must never go down, and the
 * per-child counts go away with their children (a tracker that stops). */
static atomic_uint_fast64_t restarts_total;

uint64_t fl_tree_restarts_total(void)
{
    return atomic_load_explicit(&restarts_total, memory_order_relaxed);
}

void fl_tree_note_restart(fl_tree_node_t *node, int i)
{
    atomic_fetch_add_explicit(&restarts_total, 1, memory_order_relaxed);
    pthread_rwlock_wrlock(&tree_lock);
    node->children[i].restarts++;
    node->children[i].status = FL_TREE_RESTARTING;
    pthread_rwlock_unlock(&tree_lock);
}

int fl_tree_add(fl_tree_node_t *node, fl_child_spec_t *spec)
{
    pthread_rwlock_wrlock(&tree_lock);
    int index = -1;
    if (grow(node) == FL_OK) {
        index = node->nchildren++;
        fl_tree_child_t *c = &node->children[index];
        memset(c, 0, sizeof(*c));
        c->spec = *spec;
        c->owned_spec = spec;
        c->id = spec->id;
        c->status = FL_TREE_STOPPED;
    }
    pthread_rwlock_unlock(&tree_lock);
    return index;
}

void fl_tree_remove(fl_tree_node_t *node, int i)
{
    pthread_rwlock_wrlock(&tree_lock);
    fl_tree_child_t gone = node->children[i];
    memmove(&node->children[i], &node->children[i + 1], (size_t)(node->nchildren - i - 1) * sizeof(gone));
    node->nchildren--;
    pthread_rwlock_unlock(&tree_lock);
    child_release(&gone);
}

int fl_tree_find_actor(const fl_tree_node_t *node, const fl_actor_t *actor)
{
    for (int i = 0; i < node->nchildren; i++)
        if (node->children[i].actor == actor)
            return i;
    return -1;
}

int fl_tree_find_id(const fl_tree_node_t *node, const char *id)
{
    for (int i = 0; i < node->nchildren; i++)
        if (strcmp(node->children[i].id, id) == 0)
            return i;
    return -1;
}

void fl_tree_set_restart_waiter(fl_tree_node_t *node, int i, fl_call_t *call)
{
    fl_tree_child_t *c = &node->children[i];
    if (c->restart_waiter)
        fl_call_reply(c->restart_waiter, FL_ESTATE, NULL, NULL); /* a newer drill supersedes it */
    c->restart_waiter = call;
}

void fl_tree_answer_restart_waiter(fl_tree_node_t *node, int i, int status)
{
    fl_tree_child_t *c = &node->children[i];
    if (c->restart_waiter) {
        fl_call_reply(c->restart_waiter, status, NULL, NULL);
        c->restart_waiter = NULL;
    }
}

void fl_tree_add_start_waiter(fl_tree_node_t *node, int i, fl_call_t *call)
{
    fl_tree_child_t *c = &node->children[i];
    fl_call_t **w = fl_realloc(c->start_waiters, (size_t)(c->nstart_waiters + 1) * sizeof(*w));
    if (w == NULL) {
        fl_call_reply(call, FL_ENOMEM, NULL, NULL);
        return;
    }
    c->start_waiters = w;
    c->start_waiters[c->nstart_waiters++] = call;
    if (c->status == FL_TREE_RUNNING && c->actor)
        fl_tree_answer_start_waiters(node, i, FL_OK);
}

void fl_tree_answer_start_waiters(fl_tree_node_t *node, int i, int status)
{
    fl_tree_child_t *c = &node->children[i];
    fl_call_t *restart = c->restart_waiter;
    c->restart_waiter = NULL;
    answer_waiters(c, status);
    c->restart_waiter = restart;
}

/* ---- introspection ---- */

static const char *strategy_name(fl_strategy_t s)
{
    return s == FL_ONE_FOR_ALL ? "one_for_all" : s == FL_REST_FOR_ONE ? "rest_for_one" : "one_for_one";
}

static json_t *node_json(fl_actor_t *actor, const fl_tree_child_t *rec, int64_t now);

static void add_children(json_t *obj, fl_actor_t *sup, int64_t now)
{
    json_t *list = json_array();
    fl_tree_node_t *node = sup ? fl_sup_node(sup) : NULL;
    if (node) {
        json_object_set_new(obj, "strategy", json_string(node->dynamic ? "one_for_one" : strategy_name(node->strategy)));
        if (node->dynamic)
            json_object_set_new(obj, "dynamic", json_true());
        for (int i = 0; i < node->nchildren; i++)
            json_array_append_new(list, node_json(node->children[i].actor, &node->children[i], now));
    }
    json_object_set_new(obj, "children", list);
}

static json_t *node_json(fl_actor_t *actor, const fl_tree_child_t *rec, int64_t now)
{
    json_t *obj = json_object();
    bool sup = rec ? rec->spec.sup != NULL : actor && fl_actor_is_supervisor(actor);
    json_object_set_new(obj, "id", json_string(rec ? rec->id : fl_actor_id(actor)));
    json_object_set_new(obj, "kind", json_string(sup ? "supervisor" : "actor"));
    const char *status = rec ? status_name(rec->status) : actor && fl_actor_alive(actor) ? "running" : "stopped";
    json_object_set_new(obj, "status", json_string(status));
    json_object_set_new(obj, "restarts", json_integer(rec ? rec->restarts : 0));
    if (rec && rec->last_crash) {
        char at[32];
        fl_time_format_ms(rec->last_crash_at, at);
        json_object_set_new(obj, "last_crash", json_pack("{s:s, s:s}", "reason", rec->last_crash, "at", at));
    } else {
        json_object_set_new(obj, "last_crash", json_null());
    }
    fl_actor_stats_t st = {0};
    if (actor)
        fl_actor_stats(actor, &st);
    int64_t since = rec ? rec->started_at : st.started_ms;
    json_object_set_new(obj, "uptime_s", json_integer(actor && since ? (now - since) / 1000 : 0));
    json_object_set_new(obj, "memory", json_integer((json_int_t)st.memory));
    if (sup) {
        add_children(obj, actor, now);
    } else {
        json_object_set_new(obj, "mailbox", json_integer(st.mailbox));
        json_object_set_new(obj, "handled", json_integer(st.handled));
    }
    return obj;
}

struct json_t *fl_tree_json(fl_actor_t *root)
{
    pthread_rwlock_rdlock(&tree_lock);
    json_t *obj = node_json(root, NULL, fl_now_mono_ms());
    pthread_rwlock_unlock(&tree_lock);
    return obj;
}

/* The supervisor whose child has this id (a reference), searching depth first. */
static fl_actor_t *find_parent(fl_actor_t *sup, const char *id)
{
    fl_tree_node_t *node = fl_sup_node(sup);
    if (node == NULL)
        return NULL;
    for (int i = 0; i < node->nchildren; i++) {
        if (strcmp(node->children[i].id, id) == 0) {
            fl_actor_ref(sup);
            return sup;
        }
    }
    for (int i = 0; i < node->nchildren; i++) {
        if (node->children[i].spec.sup && node->children[i].actor) {
            fl_actor_t *found = find_parent(node->children[i].actor, id);
            if (found)
                return found;
        }
    }
    return NULL;
}

int fl_tree_restart(fl_actor_t *root, const char *id, fl_reply_fn cb, void *arg)
{
    pthread_rwlock_rdlock(&tree_lock);
    fl_actor_t *parent = find_parent(root, id);
    pthread_rwlock_unlock(&tree_lock);
    if (parent == NULL)
        return FL_ENOTFOUND;
    int rc = fl_sup_restart_child(parent, id, cb, arg);
    fl_actor_unref(parent);
    return rc;
}

int fl_tree_restart_wait(fl_actor_t *root, const char *id, int timeout_ms)
{
    pthread_rwlock_rdlock(&tree_lock);
    fl_actor_t *parent = find_parent(root, id);
    pthread_rwlock_unlock(&tree_lock);
    if (parent == NULL)
        return FL_ENOTFOUND;
    int rc = fl_sup_restart_child_wait(parent, id, timeout_ms);
    fl_actor_unref(parent);
    return rc;
}
