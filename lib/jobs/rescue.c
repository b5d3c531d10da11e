/* The rescuer: a job left executing by a node that stopped renewing its lease (it died, froze, or
 * lost the database for longer than the lease) goes back to available, or to discarded when it has
 * no attempts left, with the error "lease expired: node NAME stopped renewing it" recorded for that
 * attempt. Runs every lease/2 on every node; nodes rescuing at once skip each other's rows. A late
 * write from the old node is fenced out (producer.c), so the job's next run is the only one that
 * counts. */
#include "jobs_internal.h"

#include <stdio.h>
#include <stdlib.h>

enum { R_TICK = 1, R_DONE };

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    jobs_timer_t timer;
    bool busy;
} rescuer_t;

static const char rescue_sql[] =
    "WITH expired AS ("
    "  UPDATE jobs SET"
    "   state = CASE WHEN attempt < max_attempts THEN 'available' ELSE 'discarded' END::job_state,"
    "   discarded_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,"
    "   lease_until = NULL,"
    "   errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', " JOBS_SQL_NOW_TEXT ","
    "            'error', 'lease expired: node ' || coalesce(attempted_by, 'unknown') || ' stopped renewing it'))"
    "  WHERE id IN (SELECT id FROM jobs WHERE state = 'executing' AND lease_until < now()"
    "               ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)"
    "  RETURNING id, queue, state, attempted_by, attempt"
    ")"
    " SELECT e.id, e.queue, e.state, e.attempted_by, e.attempt FROM expired e CROSS JOIN"
    "  (SELECT count(pg_notify('" FL_JOBS_CHANNEL "', q.queue))"
    "   FROM (SELECT DISTINCT queue FROM expired WHERE state = 'available') q) n";

static int interval_ms(const rescuer_t *r)
{
    int ms = r->jobs->opts.lease_ms / 2;
    return ms > 10 ? ms : 10;
}

static void rescue(rescuer_t *r)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", JOBS_BATCH);
    const char *values[] = {limit};
    if (jobs_query(r->self, R_DONE, jobs_db_here(r->jobs), rescue_sql, 1, values, NULL, NULL) == FL_OK)
        r->busy = true;
    else
        jobs_timer_arm(&r->timer, interval_ms(r));
}

static void rescued(rescuer_t *r, const jobs_rows_t *rows)
{
    r->busy = false;
    if (rows->status != FL_OK)
        fl_log(FL_LOG_DEBUG, "jobs.rescue_failed", FL_MSG("could not look for expired leases"), FL_STR("error", rows->err));
    for (int i = 0; rows->status == FL_OK && i < rows->nrows; i++) {
        const char *state = jobs_cell(rows, i, 2);
        fl_log(FL_LOG_WARN, "jobs.rescued", FL_MSG("a job's lease expired: its node stopped renewing it"),
               FL_STR("job", jobs_cell(rows, i, 0)), FL_STR("queue", jobs_cell(rows, i, 1)),
               FL_STR("node", jobs_cell(rows, i, 3) ? jobs_cell(rows, i, 3) : "unknown"), FL_STR("attempt", jobs_cell(rows, i, 4)),
               FL_STR("state", state));
        if (state && state[0] == 'a')
            jobs_wake(r->jobs, jobs_cell(rows, i, 1));
    }
    jobs_timer_arm(&r->timer, rows->status == FL_OK && rows->nrows >= JOBS_BATCH ? 0 : interval_ms(r));
}

static int rescuer_init(fl_actor_t *self, void *arg, void **state)
{
    rescuer_t *r = fl_calloc(1, sizeof(*r));
    if (r == NULL)
        return FL_ENOMEM;
    r->jobs = arg;
    r->self = self;
    if (jobs_timer_init(&r->timer, self, R_TICK) != FL_OK) {
        fl_free(r);
        return FL_ENOMEM;
    }
    jobs_timer_arm(&r->timer, 0);
    *state = r;
    return FL_OK;
}

static int rescuer_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    rescuer_t *r = state;
    switch (msg->type) {
    case R_TICK:
        if (!r->busy)
            rescue(r);
        return FL_OK;
    case R_DONE:
        rescued(r, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void rescuer_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    rescuer_t *r = state;
    if (r == NULL)
        return;
    jobs_timer_free(&r->timer);
    fl_free(r);
}

const fl_behaviour_t jobs_rescuer_behaviour = {
    .name = "rescuer",
    .init = rescuer_init,
    .handle = rescuer_handle,
    .terminate = rescuer_terminate,
};
