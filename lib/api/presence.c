/* Who is watching each fleet, for Phoenix Presence (presence_state, presence_diff): one table for
 * the node, behind a lock. Joins and leaves are rare next to positions, and a join needs the whole
 * state of its fleet at once, so a shared table is simpler than a per-shard one merged by messages. */
#include "presence.h"

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
    entry_t *head;
} watchers_t;

struct fl_presence {
    pthread_mutex_t lock;
    fl_map_t *fleets; /* fleet id -> watchers_t * */
    unsigned long next_ref;
};

int fl_presence_new(fl_presence_t **out)
{
    fl_presence_t *p = fl_calloc(1, sizeof(*p));
    if (p == NULL || (p->fleets = fl_map_new()) == NULL) {
        fl_free(p);
        return FL_ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
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
    fl_free(w);
}

void fl_presence_free(fl_presence_t *p)
{
    if (p == NULL)
        return;
    fl_map_free(p->fleets, watchers_free);
    pthread_mutex_destroy(&p->lock);
    fl_free(p);
}

static json_t *meta_of(const entry_t *e)
{
    return json_pack("{s:s, s:s}", "phx_ref", e->ref, "online_at", e->online_at);
}

/* {"KEY":{"metas":[...]}, ...} of a list, or of one entry. */
static json_t *presences_of(const entry_t *list, const entry_t *only)
{
    json_t *out = json_object();
    for (const entry_t *e = only ? only : list; e && out; e = only ? NULL : e->next) {
        json_t *p = json_object_get(out, e->key);
        if (p == NULL) {
            p = json_pack("{s:[]}", "metas");
            if (p == NULL || json_object_set_new(out, e->key, p) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        if (json_array_append_new(json_object_get(p, "metas"), meta_of(e)) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static char *diff_of(const entry_t *e, bool join)
{
    json_t *one = presences_of(NULL, e);
    json_t *diff = one ? json_pack("{s:o, s:o}", join ? "joins" : "leaves", one, join ? "leaves" : "joins", json_object()) : NULL;
    char *text = diff ? json_dumps(diff, JSON_COMPACT) : NULL;
    json_decref(diff);
    return text;
}

int fl_presence_join(fl_presence_t *p, const char *fleet_id, const char *key, char ref[24], char **state, char **diff)
{
    *state = *diff = NULL;
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
    if (w == NULL) {
        rc = FL_ENOMEM;
    } else {
        e->next = w->head;
        w->head = e;
    }
    json_t *all = rc == FL_OK ? presences_of(w->head, NULL) : NULL;
    *state = all ? json_dumps(all, JSON_COMPACT) : NULL;
    pthread_mutex_unlock(&p->lock);
    json_decref(all);
    if (rc != FL_OK) {
        fl_free(e->key);
        fl_free(e);
        return rc;
    }
    *diff = diff_of(e, true);
    memcpy(ref, e->ref, sizeof(e->ref));
    if (*state == NULL || *diff == NULL) {
        char *leave = NULL;
        fl_presence_leave(p, fleet_id, ref, &leave);
        free(leave);
        free(*state);
        free(*diff);
        *state = *diff = NULL;
        return FL_ENOMEM;
    }
    return FL_OK;
}

int fl_presence_leave(fl_presence_t *p, const char *fleet_id, const char *ref, char **diff)
{
    *diff = NULL;
    pthread_mutex_lock(&p->lock);
    watchers_t *w = fl_map_get(p->fleets, fleet_id);
    entry_t *found = NULL;
    for (entry_t **link = w ? &w->head : NULL; link && *link; link = &(*link)->next) {
        if (strcmp((*link)->ref, ref) == 0) {
            found = *link;
            *link = found->next;
            break;
        }
    }
    if (w && w->head == NULL)
        fl_free(fl_map_remove(p->fleets, fleet_id));
    pthread_mutex_unlock(&p->lock);
    if (found == NULL)
        return FL_ENOTFOUND;
    found->next = NULL;
    *diff = diff_of(found, false);
    list_free(found);
    return *diff ? FL_OK : FL_ENOMEM;
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
