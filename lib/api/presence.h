/* Phoenix Presence for the fleet channels: who is watching each fleet (presence.c). */
#ifndef FL_API_PRESENCE_H
#define FL_API_PRESENCE_H

#include "core/core.h"

typedef struct fl_presence fl_presence_t;

int fl_presence_new(fl_presence_t **out);
void fl_presence_free(fl_presence_t *p);
/* Adds a watcher of fleet_id under key (the token's name). ref gets its phx_ref; state the whole
 * presence_state of the fleet after the join and diff the presence_diff to broadcast (both JSON,
 * NUL-terminated, the caller frees them with free()). Any thread. */
int fl_presence_join(fl_presence_t *p, const char *fleet_id, const char *key, char ref[24], char **state, char **diff);
/* Removes the watcher ref; diff the presence_diff to broadcast (free()). FL_ENOTFOUND if unknown. */
int fl_presence_leave(fl_presence_t *p, const char *fleet_id, const char *ref, char **diff);
int fl_presence_count(fl_presence_t *p, const char *fleet_id);

#endif
