/* The registry: actors by name, from any shard. A hash table under a read-write lock: lookups
 * (every status read, every ingest) share the lock; registrations (a tracker starting) are rare.
 * A name whose actor has ended counts as free. */
#include "runtime_internal.h"

#include <string.h>

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    fl_actor_t *actor; /* a reference */
    char name[];
} entry_t;

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static entry_t **buckets;
static size_t nbuckets, count;

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static entry_t **slot_of(const char *name, uint64_t h)
{
    entry_t **p = &buckets[h & (nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->name, name) != 0))
        p = &(*p)->next;
    return p;
}

static int grow(void)
{
    size_t n = nbuckets ? nbuckets * 2 : 64;
    entry_t **b = fl_calloc(n, sizeof(*b));
    if (b == NULL)
        return FL_ENOMEM;
    for (size_t i = 0; i < nbuckets; i++) {
        for (entry_t *e = buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    fl_free(buckets);
    buckets = b;
    nbuckets = n;
    return FL_OK;
}

int fl_registry_register(const char *name, fl_actor_t *actor)
{
    uint64_t h = hash_name(name);
    size_t len = strlen(name);
    entry_t *fresh = fl_malloc(sizeof(*fresh) + len + 1);
    if (fresh == NULL)
        return FL_ENOMEM;
    memcpy(fresh->name, name, len + 1);
    fresh->hash = h;
    fresh->actor = actor;
    fresh->next = NULL;

    pthread_rwlock_wrlock(&lock);
    if (count >= nbuckets && grow() != FL_OK) {
        pthread_rwlock_unlock(&lock);
        fl_free(fresh);
        return FL_ENOMEM;
    }
    entry_t **p = slot_of(name, h);
    fl_actor_t *stale = NULL;
    if (*p) {
        if (fl_actor_alive((*p)->actor)) {
            pthread_rwlock_unlock(&lock);
            fl_free(fresh);
            return FL_EEXIST;
        }
        stale = (*p)->actor; /* the name's last holder has ended: take it over */
        entry_t *old = *p;
        *p = old->next;
        fl_free(old);
        count--;
    }
    fl_actor_ref(actor);
    fresh->next = buckets[h & (nbuckets - 1)];
    buckets[h & (nbuckets - 1)] = fresh;
    count++;
    pthread_rwlock_unlock(&lock);
    if (stale)
        fl_actor_unref(stale);
    return FL_OK;
}

void fl_registry_unregister(const char *name, fl_actor_t *actor)
{
    if (nbuckets == 0)
        return;
    fl_actor_t *gone = NULL;
    pthread_rwlock_wrlock(&lock);
    entry_t **p = slot_of(name, hash_name(name));
    if (*p && (*p)->actor == actor) {
        entry_t *old = *p;
        *p = old->next;
        gone = old->actor;
        fl_free(old);
        count--;
    }
    pthread_rwlock_unlock(&lock);
    if (gone)
        fl_actor_unref(gone);
}

fl_actor_t *fl_registry_lookup(const char *name)
{
    fl_actor_t *found = NULL;
    uint64_t h = hash_name(name);
    pthread_rwlock_rdlock(&lock);
    if (nbuckets) {
        entry_t *e = *slot_of(name, h);
        if (e && fl_actor_alive(e->actor)) {
            found = e->actor;
            fl_actor_ref(found);
        }
    }
    pthread_rwlock_unlock(&lock);
    return found;
}

int fl_registry_count(void)
{
    pthread_rwlock_rdlock(&lock);
    int n = (int)count;
    pthread_rwlock_unlock(&lock);
    return n;
}
