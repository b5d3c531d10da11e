/* Who is watching each fleet, for Phoenix Presence (presence_state, presence_diff): one table for
 * the node, behind a lock. Joins and leaves are rare next to positions, and a join needs the whole
 * state of its fleet at once, so a shared table is simpler than a per-shard one merged by messages.
 *
 * Diffs are batched per fleet (FL_PRESENCE_BATCH_MS): a diff goes to every watcher of the fleet,
 * so one per join would cost n² frames when n operators open the map at once (measured: 10,000
 * joins took 9 minutes and starved the loops); one per batch costs n per batch. */
#include "presence.h"

#include <event2/event.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct entry {
    struct entry *next;
    char ref[24];
    char *key;
    char online_at[32];
} entry_t;

typedef struct {
    entry_t *head;          /* who watches now */
    entry_t *joined, *left; /* changes since the last diff */
    bool flush_scheduled;
} watchers_t;

typedef struct flush flush_t;

/* A diff to send for one fleet, posted to shard 0 and armed there for the batch interval. */
struct flush {
    flush_t *prev, *next; /* in p->pending */
    struct fl_presence *p;
    char fleet_id[65];
};

struct fl_presence {
    pthread_mutex_t lock;
    flush_t *pending; /* flushes posted or armed: freed here if the loops stop before they run */
    fl_map_t *fleets; /* fleet id -> watchers_t * */
    unsigned long next_ref;
    fl_runtime_t *rt;
    fl_presence_publish_fn publish;
    void *publish_arg;
};

int fl_presence_new(fl_runtime_t *rt, fl_presence_publish_fn publish, void *arg, fl_presence_t **out)
{
    fl_presence_t *p = fl_calloc(1, sizeof(*p));
    if (p == NULL || (p->fleets = fl_map_new()) == NULL) {
        fl_free(p);
        return FL_ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    p->rt = rt;
    p->publish = publish;
    p->publish_arg = arg;
    *out = p;
    return FL_OK;
}

static void list_free(entry_t *head)
{
    for (entry_t *e = head, *next; e; e = next) {
        next = e->next;
        fl_free(e->key);
        fl_free(e);
    }
}

static void watchers_free(void *p)
{
    watchers_t *w = p;
    list_free(w->head);
    list_free(w->joined);
    list_free(w->left);
    fl_free(w);
}

void fl_presence_free(fl_presence_t *p)
{
    if (p == NULL)
        return;
    for (flush_t *f = p->pending, *next; f; f = next) { /* the loops have stopped: these never run */
        next = f->next;
        fl_free(f);
    }
    fl_map_free(p->fleets, watchers_free);
    pthread_mutex_destroy(&p->lock);
    fl_free(p);
}

static entry_t *entry_copy(const entry_t *e)
{
    entry_t *c = fl_malloc(sizeof(*c));
    if (c == NULL)
        return NULL;
    *c = *e;
    c->next = NULL;
    if ((c->key = fl_strdup(e->key)) == NULL) {
        fl_free(c);
        return NULL;
    }
    return c;
}

/* {"KEY":{"metas":[{"phx_ref","online_at"}, ...]}, ...} of a list, at most max_metas per key
 * (0: all). NULL without memory. */
static json_t *presences_of(const entry_t *list, int max_metas)
{
    json_t *out = json_object();
    for (const entry_t *e = list; e && out; e = e->next) {
        json_t *p = json_object_get(out, e->key);
        if (p == NULL) {
            p = json_pack("{s:[]}", "metas");
            if (p == NULL || json_object_set_new(out, e->key, p) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        json_t *metas = json_object_get(p, "metas");
        if (max_metas > 0 && (int)json_array_size(metas) >= max_metas)
            continue;
        if (json_array_append_new(metas, json_pack("{s:s, s:s}", "phx_ref", e->ref, "online_at", e->online_at)) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ---- batched diffs ------------------------------------------------------------------------------ */

static void flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_t *f = arg;
    fl_presence_t *p = f->p;
    pthread_mutex_lock(&p->lock);
    if (f->prev)
        f->prev->next = f->next;
    else
        p->pending = f->next;
    if (f->next)
        f->next->prev = f->prev;
    watchers_t *w = fl_map_get(p->fleets, f->fleet_id);
    entry_t *joined = NULL, *left = NULL;
    if (w) {
        joined = w->joined;
        left = w->left;
        w->joined = w->left = NULL;
        w->flush_scheduled = false;
        if (w->head == NULL)
            watchers_free(fl_map_remove(p->fleets, f->fleet_id));
    }
    pthread_mutex_unlock(&p->lock);
    if (joined || left) {
        json_t *j = presences_of(joined, 0), *l = presences_of(left, 0);
        json_t *diff = j && l ? json_pack("{s:o, s:o}", "joins", j, "leaves", l) : NULL;
        if (diff == NULL) {
            json_decref(j);
            json_decref(l);
        }
        char *text = diff ? json_dumps(diff, JSON_COMPACT) : NULL;
        json_decref(diff);
        if (text)
            p->publish(f->fleet_id, text, strlen(text), p->publish_arg);
        else
            fl_log(FL_LOG_WARN, "live.presence_failed", FL_MSG("no memory for a presence diff; watcher lists may lag"),
                   FL_STR("fleet", f->fleet_id));
        free(text);
    }
    list_free(joined);
    list_free(left);
    fl_free(f);
}

static void arm(void *arg)
{
    flush_t *f = arg;
    fl_shard_t *here = fl_shard_current();
    struct timeval tv = {0, FL_PRESENCE_BATCH_MS * 1000};
    if (here == NULL || event_base_once(fl_shard_base(here), -1, EV_TIMEOUT, flush, f, &tv) != 0)
        flush(-1, 0, f);
}

/* With the lock held: a diff for this fleet will go out within the batch interval. */
static void schedule(fl_presence_t *p, watchers_t *w, const char *fleet_id)
{
    if (w->flush_scheduled)
        return;
    flush_t *f = fl_malloc(sizeof(*f));
    if (f == NULL)
        return; /* the next change tries again */
    f->p = p;
    snprintf(f->fleet_id, sizeof(f->fleet_id), "%s", fleet_id);
    if (p->rt == NULL || fl_shard_post(fl_runtime_shard(p->rt, 0), arm, f) != FL_OK) {
        fl_free(f);
        return;
    }
    f->prev = NULL;
    f->next = p->pending;
    if (p->pending)
        p->pending->prev = f;
    p->pending = f;
    w->flush_scheduled = true;
}

/* ---- joins and leaves --------------------------------------------------------------------------- */

int fl_presence_join(fl_presence_t *p, const char *fleet_id, const char *key, char ref[24], char **state)
{
    *state = NULL;
    entry_t *e = fl_calloc(1, sizeof(*e));
    if (e == NULL || (e->key = fl_strdup(key)) == NULL) {
        fl_free(e);
        return FL_ENOMEM;
    }
    fl_time_format_ms(fl_now_wall_ms(), e->online_at);
    pthread_mutex_lock(&p->lock);
    snprintf(e->ref, sizeof(e->ref), "p%lu", ++p->next_ref);
    int rc = FL_OK;
    watchers_t *w = fl_map_get(p->fleets, fleet_id);
    if (w == NULL && (w = fl_calloc(1, sizeof(*w))) != NULL && (rc = fl_map_put(p->fleets, fleet_id, w, NULL)) != FL_OK) {
        fl_free(w);
        w = NULL;
    }
    entry_t *news = w ? entry_copy(e) : NULL;
    json_t *all = NULL;
    if (news == NULL) {
        rc = FL_ENOMEM;
    } else {
        e->next = w->head;
        w->head = e;
        news->next = w->joined;
        w->joined = news;
        schedule(p, w, fleet_id);
        all = presences_of(w->head, FL_PRESENCE_STATE_METAS);
    }
    *state = all ? json_dumps(all, JSON_COMPACT) : NULL;
    pthread_mutex_unlock(&p->lock);
    json_decref(all);
    if (rc != FL_OK) {
        fl_free(e->key);
        fl_free(e);
        return rc;
    }
    memcpy(ref, e->ref, sizeof(e->ref));
    if (*state == NULL) {
        fl_presence_leave(p, fleet_id, ref);
        return FL_ENOMEM;
    }
    return FL_OK;
}

/* Unlinks the entry with ref from *list; NULL when absent. */
static entry_t *unlink_ref(entry_t **list, const char *ref)
{
    for (entry_t **link = list; *link; link = &(*link)->next) {
        if (strcmp((*link)->ref, ref) == 0) {
            entry_t *found = *link;
            *link = found->next;
            found->next = NULL;
            return found;
        }
    }
    return NULL;
}

int fl_presence_leave(fl_presence_t *p, const char *fleet_id, const char *ref)
{
    pthread_mutex_lock(&p->lock);
    watchers_t *w = fl_map_get(p->fleets, fleet_id);
    entry_t *found = w ? unlink_ref(&w->head, ref) : NULL;
    if (found) {
        /* Told even when its join is still in this batch: a watcher who joined meanwhile got a
         * presence_state that names it. A diff's joins apply before its leaves, so others net out. */
        found->next = w->left;
        w->left = found;
        schedule(p, w, fleet_id);
        if (w->head == NULL && w->joined == NULL && w->left == NULL && !w->flush_scheduled)
            watchers_free(fl_map_remove(p->fleets, fleet_id));
    }
    pthread_mutex_unlock(&p->lock);
    return found ? FL_OK : FL_ENOTFOUND;
}

int fl_presence_count(fl_presence_t *p, const char *fleet_id)
{
    int n = 0;
    pthread_mutex_lock(&p->lock);
    watchers_t *w = fl_map_get(p->fleets, fleet_id);
    for (entry_t *e = w ? w->head : NULL; e; e = e->next)
        n++;
    pthread_mutex_unlock(&p->lock);
    return n;
}
