/* The stager: scheduled jobs whose time has come and retryable jobs whose backoff has passed
 * become available, JOBS_BATCH at a time, every poll interval. Their queues are notified (every
 * node's producers wake) and this node's producers are woken directly. Several nodes staging at
 * once skip each other's rows (SKIP LOCKED). */
#include "jobs_internal.h"

#include <stdio.h>
#include <stdlib.h>

enum { S_TICK = 1, S_DONE };

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    jobs_timer_t timer;
    bool busy;
} stager_t;

static const char stage_sql[] =
    "WITH due AS ("
    "  UPDATE jobs SET state = 'available'"
    "  WHERE id IN (SELECT id FROM jobs WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()"
    "               ORDER BY scheduled_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
    "  RETURNING queue"
    ")"
    " SELECT q.queue, q.n, pg_notify('" FL_JOBS_CHANNEL "', q.queue) FROM (SELECT queue, count(*) AS n FROM due GROUP BY queue) q";

static void stage(stager_t *s)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", JOBS_BATCH);
    const char *values[] = {limit};
    if (jobs_query(s->self, S_DONE, jobs_db_here(s->jobs), stage_sql, 1, values, NULL, NULL) == FL_OK)
        s->busy = true;
    else
        jobs_timer_arm(&s->timer, s->jobs->opts.poll_interval_ms);
}

static void staged(stager_t *s, const jobs_rows_t *r)
{
    s->busy = false;
    long moved = 0;
    for (int i = 0; r->status == FL_OK && i < r->nrows; i++) {
        moved += atol(jobs_cell(r, i, 1));
        jobs_wake(s->jobs, jobs_cell(r, i, 0));
    }
    if (r->status != FL_OK)
        fl_log(FL_LOG_DEBUG, "jobs.stage_failed", FL_MSG("could not stage due jobs"), FL_STR("error", r->err));
    /* a full batch: more are due, go on at once (in a new turn) */
    jobs_timer_arm(&s->timer, moved >= JOBS_BATCH ? 0 : s->jobs->opts.poll_interval_ms);
}

static int stager_init(fl_actor_t *self, void *arg, void **state)
{
    stager_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL)
        return FL_ENOMEM;
    s->jobs = arg;
    s->self = self;
    if (jobs_timer_init(&s->timer, self, S_TICK) != FL_OK) {
        fl_free(s);
        return FL_ENOMEM;
    }
    jobs_timer_arm(&s->timer, 0);
    *state = s;
    return FL_OK;
}

static int stager_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    stager_t *s = state;
    switch (msg->type) {
    case S_TICK:
        if (!s->busy)
            stage(s);
        return FL_OK;
    case S_DONE:
        staged(s, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void stager_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    stager_t *s = state;
    if (s == NULL)
        return;
    jobs_timer_free(&s->timer);
    fl_free(s);
}

const fl_behaviour_t jobs_stager_behaviour = {
    .name = "stager",
    .init = stager_init,
    .handle = stager_handle,
    .terminate = stager_terminate,
};
