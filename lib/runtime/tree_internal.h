/* The supervision tree's bookkeeping, shared by supervisor.c (which changes it, on the
 * supervisor's shard) and tree.c (which reads it from any thread for fl_tree_json). Every change
 * and every read happens under one process-wide read-write lock: changes are rare (starts,
 * crashes, restarts), reads are an operator's request. */
#ifndef FL_TREE_INTERNAL_H
#define FL_TREE_INTERNAL_H

#include "runtime_internal.h"

typedef enum { FL_TREE_STARTING = 0, FL_TREE_RUNNING, FL_TREE_STOPPING, FL_TREE_STOPPED, FL_TREE_RESTARTING } fl_tree_status_t;

typedef struct {
    const char *id; /* = spec.id */
    fl_child_spec_t spec;
    fl_child_spec_t *owned_spec; /* dynamic children: the copy the supervisor owns (id, arg) */
    fl_actor_t *actor;           /* the running incarnation (a reference), or NULL */
    fl_tree_status_t status;
    fl_tree_status_t status_before_exit;
    int restarts;
    char *last_crash;          /* reason, or NULL */
    int64_t last_crash_at;     /* wall-clock ms */
    int64_t started_at;        /* monotonic ms of the current incarnation */
    fl_call_t *restart_waiter; /* an operator's drill waiting for the child to run again */
    fl_call_t **start_waiters; /* fl_sup_start_child callers waiting for it to run */
    int nstart_waiters;
} fl_tree_child_t;

typedef struct {
    fl_actor_t *self;
    fl_strategy_t strategy;
    bool dynamic;
    fl_tree_child_t *children;
    int nchildren, cap;
} fl_tree_node_t;

int fl_tree_node_init(fl_tree_node_t *node, fl_actor_t *self, const fl_sup_spec_t *spec);
/* Sets a supervisor's state pointer under the lock: readers find the actor in the tree before its
 * init has run. */
void fl_tree_publish_state(void **slot, void *state);
/* Frees the node; self->state is cleared under the lock so readers never see it half-freed. */
void fl_tree_node_destroy(fl_tree_node_t *node);
size_t fl_tree_node_memory(const fl_tree_node_t *node);

void fl_tree_attach(fl_tree_node_t *node, int i, fl_actor_t *actor, fl_tree_status_t status);
void fl_tree_detach(fl_tree_node_t *node, int i, fl_tree_status_t status);
void fl_tree_set_status(fl_tree_node_t *node, int i, fl_tree_status_t status);
void fl_tree_record_crash(fl_tree_node_t *node, int i, const char *reason);
void fl_tree_note_restart(fl_tree_node_t *node, int i);
/* Dynamic children: add takes ownership of spec (a copy made by fl_tree_spec_copy). */
int fl_tree_add(fl_tree_node_t *node, fl_child_spec_t *spec);
void fl_tree_remove(fl_tree_node_t *node, int i);
int fl_tree_find_actor(const fl_tree_node_t *node, const fl_actor_t *actor);
int fl_tree_find_id(const fl_tree_node_t *node, const char *id);

void fl_tree_set_restart_waiter(fl_tree_node_t *node, int i, fl_call_t *call);
void fl_tree_answer_restart_waiter(fl_tree_node_t *node, int i, int status);
void fl_tree_add_start_waiter(fl_tree_node_t *node, int i, fl_call_t *call);
void fl_tree_answer_start_waiters(fl_tree_node_t *node, int i, int status);

fl_child_spec_t *fl_tree_spec_copy(const fl_child_spec_t *spec);
void fl_tree_spec_free(void *spec);

/* supervisor.c */
int fl_sup_spawn(fl_shard_t *shard, const char *id, const fl_sup_spec_t *spec, bool registered, fl_actor_exit_fn on_exit,
                 void *exit_arg, fl_actor_t **out);
bool fl_actor_is_supervisor(const fl_actor_t *actor);
fl_tree_node_t *fl_sup_node(fl_actor_t *actor);
int fl_sup_restart_child(fl_actor_t *sup, const char *id, fl_reply_fn cb, void *arg);
int fl_sup_restart_child_wait(fl_actor_t *sup, const char *id, int timeout_ms);

#endif
