/* The pruner: deletes finished jobs older than their state's age (completed, discarded and
 * cancelled each have their own), unique keys whose period is over, and cron ticks nobody needs
 * any more, JOBS_BATCH rows per statement so no statement holds many locks or runs long. A full
 * batch is followed at once (in a new turn) by the next; a round ends when every step found fewer
 * than a batch. */
#include "jobs_internal.h"

#include <stdio.h>

enum { PR_TICK = 1, PR_DONE };

/* The state is written into each statement, so the planner matches the partial index
 * jobs_finished (state, coalesce(completed_at, discarded_at, cancelled_at)). */
#define PRUNE_JOBS_SQL(state)                                                                                                      \
    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = '" state "'"                                                  \
    " AND coalesce(completed_at, discarded_at, cancelled_at) < now() - $2::bigint * interval '1 second'"                           \
    " LIMIT $1 FOR UPDATE SKIP LOCKED)"

static const struct {
    const char *what;
    const char *sql;
} steps[] = {
    {"completed", PRUNE_JOBS_SQL("completed")},
    {"discarded", PRUNE_JOBS_SQL("discarded")},
    {"cancelled", PRUNE_JOBS_SQL("cancelled")},
    /* a key whose period is over deduplicates nothing any more */
    {"unique_keys", "DELETE FROM job_uniques WHERE key IN (SELECT key FROM job_uniques WHERE until < now()"
                    " LIMIT $1 FOR UPDATE SKIP LOCKED)"},
    /* every entry's latest tick stays: it is what stops a node starting within that tick from
     * firing it again */
    {"cron_ticks", "DELETE FROM cron_ticks WHERE (name, tick) IN (SELECT c.name, c.tick FROM cron_ticks c"
                   " WHERE c.tick < now() - interval '1 hour'"
                   " AND c.tick < (SELECT max(m.tick) FROM cron_ticks m WHERE m.name = c.name) LIMIT $1)"},
};
#define NSTEPS ((int)(sizeof(steps) / sizeof(steps[0])))

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    jobs_timer_t timer;
    bool busy;
    int step;
    long deleted[NSTEPS]; /* this round */
} pruner_t;

static int age_s(const pruner_t *p, int step)
{
    const fl_jobs_opts_t *o = &p->jobs->opts;
    return step == 0 ? o->prune_completed_s : step == 1 ? o->prune_discarded_s : step == 2 ? o->prune_cancelled_s : 0;
}

static void end_round(pruner_t *p)
{
    long total = 0;
    for (int i = 0; i < NSTEPS; i++)
        total += p->deleted[i];
    if (total > 0)
        fl_log(FL_LOG_INFO, "jobs.pruned", FL_MSG("pruned finished jobs"), FL_INT("completed", p->deleted[0]),
               FL_INT("discarded", p->deleted[1]), FL_INT("cancelled", p->deleted[2]), FL_INT("unique_keys", p->deleted[3]),
               FL_INT("cron_ticks", p->deleted[4]));
    for (int i = 0; i < NSTEPS; i++)
        p->deleted[i] = 0;
    p->step = 0;
    jobs_timer_arm(&p->timer, p->jobs->opts.prune_interval_ms);
}

/* Runs the current step, skipping the job states that are never pruned (age < 0). */
static void prune(pruner_t *p)
{
    while (p->step < NSTEPS && p->step < 3 && age_s(p, p->step) < 0)
        p->step++;
    if (p->step >= NSTEPS) {
        end_round(p);
        return;
    }
    char limit[16], age[16];
    snprintf(limit, sizeof(limit), "%d", JOBS_BATCH);
    snprintf(age, sizeof(age), "%d", age_s(p, p->step));
    const char *values[] = {limit, age};
    int n = p->step < 3 ? 2 : 1;
    if (jobs_query(p->self, PR_DONE, jobs_db_here(p->jobs), steps[p->step].sql, n, values, NULL, NULL) == FL_OK) {
        p->busy = true;
        return;
    }
    end_round(p); /* the database is away: next round */
}

static void pruned(pruner_t *p, const jobs_rows_t *r)
{
    p->busy = false;
    if (r->status != FL_OK) {
        fl_log(FL_LOG_WARN, "jobs.prune_failed", FL_MSG("could not prune"), FL_STR("what", steps[p->step].what),
               FL_STR("error", r->err));
        end_round(p);
        return;
    }
    p->deleted[p->step] += r->affected;
    if (r->affected < JOBS_BATCH)
        p->step++;
    jobs_timer_arm(&p->timer, 0); /* the next batch in a new turn: other actors and I/O go first */
}

static int pruner_init(fl_actor_t *self, void *arg, void **state)
{
    pruner_t *p = fl_calloc(1, sizeof(*p));
    if (p == NULL)
        return FL_ENOMEM;
    p->jobs = arg;
    p->self = self;
    if (jobs_timer_init(&p->timer, self, PR_TICK) != FL_OK) {
        fl_free(p);
        return FL_ENOMEM;
    }
    jobs_timer_arm(&p->timer, 0);
    *state = p;
    return FL_OK;
}

static int pruner_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    pruner_t *p = state;
    switch (msg->type) {
    case PR_TICK:
        if (!p->busy)
            prune(p);
        return FL_OK;
    case PR_DONE:
        pruned(p, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void pruner_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    pruner_t *p = state;
    if (p == NULL)
        return;
    jobs_timer_free(&p->timer);
    fl_free(p);
}

const fl_behaviour_t jobs_pruner_behaviour = {
    .name = "pruner",
    .init = pruner_init,
    .handle = pruner_handle,
    .terminate = pruner_terminate,
};
