/* Phoenix Presence for the fleet channels: who is watching each fleet (presence.c). */
#ifndef FL_API_PRESENCE_H
#define FL_API_PRESENCE_H

#include "core/core.h"
#include "runtime/runtime.h"

/* Joins and leaves of a fleet within this long go out as one presence_diff. */
#define FL_PRESENCE_BATCH_MS 100
/* presence_state lists at most this many connections (metas) per key; diffs carry every change. */
#define FL_PRESENCE_STATE_METAS 100

typedef struct fl_presence fl_presence_t;

/* Sends a fleet's presence_diff ({"joins":...,"leaves":...}) to its watchers; runs on shard 0. */
typedef void (*fl_presence_publish_fn)(const char *fleet_id, const char *diff, size_t len, void *arg);

int fl_presence_new(fl_runtime_t *rt, fl_presence_publish_fn publish, void *arg, fl_presence_t **out);
/* After the shards have stopped. */
void fl_presence_free(fl_presence_t *p);
/* Adds a watcher of fleet_id under key (the token's name). ref gets its phx_ref; state the fleet's
 * presence_state after the join (JSON, the caller frees it with free()). The diff that tells the
 * others follows within FL_PRESENCE_BATCH_MS. Any thread. */
int fl_presence_join(fl_presence_t *p, const char *fleet_id, const char *key, char ref[24], char **state);
/* Removes the watcher ref (its leave goes out with the next diff). FL_ENOTFOUND if unknown. */
int fl_presence_leave(fl_presence_t *p, const char *fleet_id, const char *ref);
int fl_presence_count(fl_presence_t *p, const char *fleet_id);

#endif
