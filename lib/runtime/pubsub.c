/* PubSub: topic -> subscribers on each shard. A process-wide table (under a mutex) knows how many
 * subscribers each topic has on each shard; each shard's pubsub actor keeps that shard's
 * subscriber lists and delivers what is published to them. Subscribing and unsubscribing happen
 * on the subscriber's own shard, which is also the thread the actor runs on, so they edit the
 * actor's lists directly: no message, no lock, and an unsubscribe takes effect at once. */
#include "runtime_internal.h"

#include <stdio.h>
#include <string.h>

struct fl_sub {
    fl_sub_t *next;
    char *topic;
    fl_deliver_fn fn;
    void *ctx;
    bool dead;
};

typedef struct {
    fl_pubsub_t *ps;
    int shard;
    fl_map_t *topics; /* topic -> fl_sub_t * list */
    int delivering;   /* > 0 while callbacks run: removals are deferred */
    bool has_dead;
} local_t;

typedef struct {
    int *per_shard; /* subscribers on each shard */
    int total;
} counts_t;

typedef struct {
    fl_pubsub_t *ps;
    int shard;
} actor_arg_t;

struct fl_pubsub {
    fl_runtime_t *rt;
    int nshards;
    pthread_mutex_t lock;
    fl_map_t *counts;    /* topic -> counts_t *, under lock */
    fl_actor_t **actors; /* pubsub:N while running (a reference), under lock */
    local_t **locals;    /* touched only by shard N's thread */
    actor_arg_t *args;
    fl_child_spec_t *children;
    char (*ids)[32];
    fl_sup_spec_t spec;
};

enum { PS_DELIVER = 1 };

typedef struct {
    char *topic;
    fl_blob_t *payload;
} delivery_t;

static void delivery_free(void *p)
{
    delivery_t *d = p;
    fl_blob_unref(d->payload);
    fl_free(d->topic);
    fl_free(d);
}

static void count_change(fl_pubsub_t *ps, const char *topic, int shard, int delta)
{
    pthread_mutex_lock(&ps->lock);
    counts_t *c = fl_map_get(ps->counts, topic);
    if (c == NULL && delta > 0) {
        c = fl_calloc(1, sizeof(*c));
        if (c)
            c->per_shard = fl_calloc((size_t)ps->nshards, sizeof(int));
        if (c == NULL || c->per_shard == NULL || fl_map_put(ps->counts, topic, c, NULL) != FL_OK) {
            /* without the count, publishes skip this shard: log it, the subscriber stays valid */
            fl_log(FL_LOG_ERROR, "pubsub.no_memory", FL_MSG("no memory to count a subscription"), FL_STR("topic", topic));
            if (c)
                fl_free(c->per_shard);
            fl_free(c);
            pthread_mutex_unlock(&ps->lock);
            return;
        }
    }
    if (c) {
        c->per_shard[shard] += delta;
        c->total += delta;
        if (c->total <= 0) {
            fl_map_remove(ps->counts, topic);
            fl_free(c->per_shard);
            fl_free(c);
        }
    }
    pthread_mutex_unlock(&ps->lock);
}

static void free_sub(fl_sub_t *s)
{
    fl_free(s->topic);
    fl_free(s);
}

/* Drops the dead subscriptions of one topic's list. */
static void sweep_topic(local_t *l, const char *topic)
{
    fl_sub_t *head = fl_map_get(l->topics, topic), **p = &head;
    while (*p) {
        if ((*p)->dead) {
            fl_sub_t *gone = *p;
            *p = gone->next;
            free_sub(gone);
        } else {
            p = &(*p)->next;
        }
    }
    if (head)
        fl_map_put(l->topics, topic, head, NULL);
    else
        fl_map_remove(l->topics, topic);
}

typedef struct {
    char **topics;
    int n;
} topic_list_t;

static void collect_topic(const char *key, void *value, void *arg)
{
    (void)value;
    topic_list_t *t = arg;
    t->topics[t->n++] = (char *)(uintptr_t)key;
}

static void sweep_all(local_t *l)
{
    if (!l->has_dead || l->delivering)
        return;
    size_t n = fl_map_count(l->topics);
    topic_list_t t = {.topics = fl_malloc((n ? n : 1) * sizeof(char *))};
    if (t.topics == NULL)
        return; /* try again after the next delivery */
    fl_map_foreach(l->topics, collect_topic, &t);
    for (int i = 0; i < t.n; i++) {
        char *topic = fl_strdup(t.topics[i]); /* the key dies with its entry */
        if (topic) {
            sweep_topic(l, topic);
            fl_free(topic);
        }
    }
    fl_free(t.topics);
    l->has_dead = false;
}

int fl_pubsub_subscribe(fl_pubsub_t *ps, const char *topic, fl_deliver_fn fn, void *ctx, fl_sub_t **out)
{
    fl_shard_t *here = fl_shard_current();
    fl_assert(here != NULL);
    local_t *l = ps->locals[fl_shard_index(here)];
    if (l == NULL)
        return FL_EUNAVAIL;
    fl_sub_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL || (s->topic = fl_strdup(topic)) == NULL) {
        fl_free(s);
        return FL_ENOMEM;
    }
    s->fn = fn;
    s->ctx = ctx;
    s->next = fl_map_get(l->topics, topic);
    if (fl_map_put(l->topics, topic, s, NULL) != FL_OK) {
        free_sub(s);
        return FL_ENOMEM;
    }
    count_change(ps, topic, l->shard, +1);
    *out = s;
    return FL_OK;
}

void fl_pubsub_unsubscribe(fl_pubsub_t *ps, fl_sub_t *sub)
{
    fl_shard_t *here = fl_shard_current();
    fl_assert(here != NULL && !sub->dead);
    local_t *l = ps->locals[fl_shard_index(here)];
    sub->dead = true;
    count_change(ps, sub->topic, fl_shard_index(here), -1);
    if (l == NULL)
        return;
    l->has_dead = true;
    sweep_all(l);
}

int fl_pubsub_publish(fl_pubsub_t *ps, const char *topic, fl_blob_t *payload)
{
    int result = FL_OK;
    fl_actor_t *targets[256];
    int ntargets = 0;
    pthread_mutex_lock(&ps->lock);
    counts_t *c = fl_map_get(ps->counts, topic);
    for (int i = 0; c && i < ps->nshards && ntargets < 256; i++) {
        if (c->per_shard[i] > 0 && ps->actors[i]) {
            fl_actor_ref(ps->actors[i]);
            targets[ntargets++] = ps->actors[i];
        }
    }
    pthread_mutex_unlock(&ps->lock);
    for (int i = 0; i < ntargets; i++) {
        delivery_t *d = fl_malloc(sizeof(*d));
        if (d == NULL || (d->topic = fl_strdup(topic)) == NULL) {
            fl_free(d);
            result = FL_ENOMEM;
        } else {
            d->payload = fl_blob_ref(payload);
            int rc = fl_actor_cast(targets[i], PS_DELIVER, d, delivery_free);
            if (rc != FL_OK)
                result = rc;
        }
        fl_actor_unref(targets[i]);
    }
    return result;
}

int fl_pubsub_count(fl_pubsub_t *ps, const char *topic)
{
    pthread_mutex_lock(&ps->lock);
    counts_t *c = fl_map_get(ps->counts, topic);
    int n = c ? c->total : 0;
    pthread_mutex_unlock(&ps->lock);
    return n;
}

/* ---- the per-shard actor ---- */

static int local_init(fl_actor_t *self, void *arg, void **state)
{
    actor_arg_t *a = arg;
    local_t *l = fl_calloc(1, sizeof(*l));
    if (l == NULL || (l->topics = fl_map_new()) == NULL) {
        fl_free(l);
        return FL_ENOMEM;
    }
    l->ps = a->ps;
    l->shard = a->shard;
    a->ps->locals[a->shard] = l;
    pthread_mutex_lock(&a->ps->lock);
    fl_actor_ref(self);
    a->ps->actors[a->shard] = self;
    pthread_mutex_unlock(&a->ps->lock);
    *state = l;
    return FL_OK;
}

static int local_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    local_t *l = state;
    if (msg->type != PS_DELIVER)
        return FL_EINVAL;
    delivery_t *d = msg->data;
    l->delivering++;
    for (fl_sub_t *s = fl_map_get(l->topics, d->topic); s; s = s->next)
        if (!s->dead)
            s->fn(d->topic, d->payload, s->ctx);
    l->delivering--;
    sweep_all(l);
    return FL_OK;
}

static void lose_topic(const char *topic, void *value, void *arg)
{
    local_t *l = arg;
    for (fl_sub_t *s = value, *next; s; s = next) {
        next = s->next;
        if (!s->dead) {
            count_change(l->ps, topic, l->shard, -1);
            s->fn(topic, NULL, s->ctx);
        }
        free_sub(s);
    }
}

static void local_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)kind;
    local_t *l = state;
    if (l == NULL)
        return;
    fl_pubsub_t *ps = l->ps;
    pthread_mutex_lock(&ps->lock);
    if (ps->actors[l->shard] == self) {
        ps->actors[l->shard] = NULL;
        fl_actor_unref(self);
    }
    pthread_mutex_unlock(&ps->lock);
    ps->locals[l->shard] = NULL;
    /* every subscriber on this shard learns that its subscription is gone */
    fl_map_foreach(l->topics, lose_topic, l);
    fl_map_free(l->topics, NULL);
    fl_free(l);
}

static size_t local_memory(const void *state)
{
    const local_t *l = state;
    return sizeof(*l) + fl_map_memory(l->topics);
}

static const fl_behaviour_t local_behaviour = {
    .name = "pubsub",
    .init = local_init,
    .handle = local_handle,
    .terminate = local_terminate,
    .memory = local_memory,
};

int fl_pubsub_new(fl_runtime_t *rt, fl_pubsub_t **out)
{
    fl_pubsub_t *ps = fl_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return FL_ENOMEM;
    int n = fl_runtime_nshards(rt);
    ps->rt = rt;
    ps->nshards = n;
    pthread_mutex_init(&ps->lock, NULL);
    ps->counts = fl_map_new();
    ps->actors = fl_calloc((size_t)n, sizeof(*ps->actors));
    ps->locals = fl_calloc((size_t)n, sizeof(*ps->locals));
    ps->args = fl_calloc((size_t)n, sizeof(*ps->args));
    ps->children = fl_calloc((size_t)n, sizeof(*ps->children));
    ps->ids = fl_calloc((size_t)n, sizeof(*ps->ids));
    if (!ps->counts || !ps->actors || !ps->locals || !ps->args || !ps->children || !ps->ids) {
        fl_pubsub_free(ps);
        return FL_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        ps->args[i] = (actor_arg_t){.ps = ps, .shard = i};
        snprintf(ps->ids[i], sizeof(ps->ids[i]), "pubsub:%d", i);
        ps->children[i] = (fl_child_spec_t){.id = ps->ids[i],
                                            .behaviour = &local_behaviour,
                                            .arg = &ps->args[i],
                                            .mailbox_capacity = 65536,
                                            .shard = fl_runtime_shard(rt, i),
                                            .restart = FL_RESTART_PERMANENT};
    }
    ps->spec = (fl_sup_spec_t){
        .strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 10000, .children = ps->children, .nchildren = n};
    *out = ps;
    return FL_OK;
}

static void free_counts(void *p)
{
    counts_t *c = p;
    fl_free(c->per_shard);
    fl_free(c);
}

void fl_pubsub_free(fl_pubsub_t *ps)
{
    if (ps == NULL)
        return;
    fl_map_free(ps->counts, free_counts);
    for (int i = 0; ps->actors && i < ps->nshards; i++)
        fl_actor_unref(ps->actors[i]);
    fl_free(ps->actors);
    fl_free(ps->locals);
    fl_free(ps->args);
    fl_free(ps->children);
    fl_free(ps->ids);
    pthread_mutex_destroy(&ps->lock);
    fl_free(ps);
}

const fl_sup_spec_t *fl_pubsub_spec(fl_pubsub_t *ps)
{
    return &ps->spec;
}
