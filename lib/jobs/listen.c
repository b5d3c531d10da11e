/* The listener: LISTEN on FL_JOBS_CHANNEL over its own connection, so producers wake as soon as a
 * job of their queue becomes available (the payload is the queue name) instead of at their next
 * poll. Notifications are at most once: those sent while the connection is down, or before its
 * LISTEN has run again after a reconnect, are lost. So each time the connection comes (back) up,
 * the listener sends a query behind the LISTEN (the db module sends LISTEN first) and, once it
 * returns, wakes every producer: anything committed before the LISTEN took effect is found by
 * their claims, anything after it is notified. Polling stays the fallback. */
#include "jobs_internal.h"

enum { L_CHECK = 1, L_SYNCED };

#define CHECK_MS 100

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    fl_db_t *db;
    jobs_timer_t timer;
    bool listening; /* synced since the connection last came up */
    bool syncing;
} listener_t;

static void on_notification(const char *channel, const char *payload, void *arg)
{
    (void)channel;
    listener_t *l = arg;
    if (payload != NULL && payload[0] != '\0')
        jobs_wake(l->jobs, payload);
}

static void check(listener_t *l)
{
    jobs_timer_arm(&l->timer, CHECK_MS);
    if (!fl_db_is_up(l->db)) {
        l->listening = false;
        return;
    }
    if (l->listening || l->syncing)
        return;
    if (jobs_query(l->self, L_SYNCED, l->db, "SELECT 1", 0, NULL, NULL, NULL) == FL_OK)
        l->syncing = true;
}

static void synced(listener_t *l, const jobs_rows_t *r)
{
    l->syncing = false;
    if (r->status != FL_OK)
        return; /* the next check tries again */
    l->listening = true;
    for (int i = 0; i < l->jobs->nqueues; i++)
        jobs_wake(l->jobs, l->jobs->queues[i]->name);
}

static void listener_free(listener_t *l)
{
    jobs_timer_free(&l->timer);
    fl_db_free(l->db); /* the notification callback is not called again */
    fl_free(l);
}

static int listener_init(fl_actor_t *self, void *arg, void **state)
{
    listener_t *l = fl_calloc(1, sizeof(*l));
    if (l == NULL)
        return FL_ENOMEM;
    l->jobs = arg;
    l->self = self;
    int rc = jobs_timer_init(&l->timer, self, L_CHECK);
    if (rc == FL_OK)
        rc = fl_db_new(fl_actor_shard(self), &l->jobs->db_opts, &l->db);
    if (rc == FL_OK)
        rc = fl_db_listen(l->db, FL_JOBS_CHANNEL, on_notification, l);
    if (rc != FL_OK) {
        listener_free(l);
        return rc;
    }
    jobs_timer_arm(&l->timer, CHECK_MS);
    *state = l;
    return FL_OK;
}

static int listener_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    listener_t *l = state;
    switch (msg->type) {
    case L_CHECK:
        check(l);
        return FL_OK;
    case L_SYNCED:
        synced(l, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void listener_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    if (state)
        listener_free(state);
}

const fl_behaviour_t jobs_listener_behaviour = {
    .name = "listener",
    .init = listener_init,
    .handle = listener_handle,
    .terminate = listener_terminate,
};
