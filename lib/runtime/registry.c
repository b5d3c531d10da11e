/* The registry: actors by name, from any shard. One map under a read-write lock: lookups (every
 * status read, every ingest) share the lock; registrations (a tracker starting) are rare. A name
 * whose actor has ended counts as free. */
#include "runtime_internal.h"

static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static fl_map_t *names; /* name -> fl_actor_t * (a reference) */

int fl_registry_register(const char *name, fl_actor_t *actor)
{
    pthread_rwlock_wrlock(&lock);
    if (names == NULL && (names = fl_map_new()) == NULL) {
        pthread_rwlock_unlock(&lock);
        return FL_ENOMEM;
    }
    fl_actor_t *holder = fl_map_get(names, name);
    if (holder && fl_actor_alive(holder)) {
        pthread_rwlock_unlock(&lock);
        return FL_EEXIST;
    }
    /* a name whose last holder has ended is taken over */
    int rc = fl_map_put(names, name, actor, NULL);
    if (rc == FL_OK)
        fl_actor_ref(actor);
    pthread_rwlock_unlock(&lock);
    if (rc == FL_OK && holder)
        fl_actor_unref(holder);
    return rc;
}

void fl_registry_unregister(const char *name, fl_actor_t *actor)
{
    fl_actor_t *gone = NULL;
    pthread_rwlock_wrlock(&lock);
    if (names && fl_map_get(names, name) == actor)
        gone = fl_map_remove(names, name);
    pthread_rwlock_unlock(&lock);
    if (gone)
        fl_actor_unref(gone);
}

fl_actor_t *fl_registry_lookup(const char *name)
{
    fl_actor_t *found = NULL;
    pthread_rwlock_rdlock(&lock);
    if (names) {
        found = fl_map_get(names, name);
        if (found && fl_actor_alive(found))
            fl_actor_ref(found);
        else
            found = NULL;
    }
    pthread_rwlock_unlock(&lock);
    return found;
}

int fl_registry_count(void)
{
    pthread_rwlock_rdlock(&lock);
    int n = names ? (int)fl_map_count(names) : 0;
    pthread_rwlock_unlock(&lock);
    return n;
}
