/* Cron: every entry fires once per tick (ticks aligned to the epoch, the same instants on every
 * node), whatever the number of nodes. At each tick every node tries one statement that inserts
 * the tick into cron_ticks (primary key (name, tick)) and, only if that insert won, the tick's job,
 * in the same transaction (a data-modifying CTE), so a tick has one job or none, never two, even if
 * a node dies halfway. A node whose insert loses does nothing. */
#include "jobs_internal.h"

#include <stdio.h>
#include <stdlib.h>

enum { C_TICK = 1, C_DONE };

typedef struct {
    int64_t done;     /* last tick (epoch seconds) settled: fired here or by another node */
    int64_t inflight; /* the tick whose statement is in flight, 0: none */
} entry_t;

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    jobs_timer_t timer;
    entry_t *entries; /* one per jobs->crons */
    bool failing;     /* a statement could not be sent: try again within a second */
    int64_t wake_ms;  /* wall clock the timer is set for */
} cron_t;

/* A failed entry is tried again within a second, without delaying the next tick. */
static void wake_at(cron_t *c, int64_t at_ms)
{
    c->wake_ms = at_ms;
    jobs_timer_arm(&c->timer, at_ms - fl_now_wall_ms());
}

static const char fire_sql[] =
    "WITH tick AS ("
    "  INSERT INTO cron_ticks (name, tick, job_id) VALUES ($1, to_timestamp($2::bigint), nextval('jobs_id_seq'))"
    "  ON CONFLICT (name, tick) DO NOTHING RETURNING job_id"
    "), job AS ("
    "  INSERT INTO jobs (id, queue, kind, args) SELECT job_id, $3, $4, $5::jsonb FROM tick RETURNING id, queue"
    ")"
    " SELECT id, pg_notify('" FL_JOBS_CHANNEL "', queue) FROM job";

static void fire(cron_t *c, int i, int64_t tick)
{
    const jobs_cron_t *def = &c->jobs->crons[i];
    char ticktext[24];
    snprintf(ticktext, sizeof(ticktext), "%lld", (long long)tick);
    const char *values[] = {def->name, ticktext, def->queue, def->kind, def->args};
    int rc = jobs_query(c->self, C_DONE, jobs_db_here(c->jobs), fire_sql, 5, values, (void *)(intptr_t)i, NULL);
    if (rc == FL_OK)
        c->entries[i].inflight = tick;
    else
        c->failing = true;
}

/* Fires every entry whose current tick is not settled, then sleeps until the next tick of any. */
static void tick(cron_t *c)
{
    int64_t now_ms = fl_now_wall_ms(), now_s = now_ms / 1000;
    int64_t next_ms = INT64_MAX;
    c->failing = false;
    for (int i = 0; i < c->jobs->ncrons; i++) {
        int64_t every = c->jobs->crons[i].every_s;
        int64_t current = now_s - now_s % every;
        entry_t *e = &c->entries[i];
        if (current != e->done && e->inflight == 0)
            fire(c, i, current);
        int64_t next = (current + every) * 1000;
        if (next < next_ms)
            next_ms = next;
    }
    if (c->jobs->ncrons == 0)
        return;   /* nothing to do, ever */
    next_ms += 2; /* just past the boundary */
    wake_at(c, c->failing && next_ms - now_ms > 1000 ? now_ms + 1000 : next_ms);
}

static void fired(cron_t *c, const jobs_rows_t *r)
{
    int i = (int)(intptr_t)r->tag;
    entry_t *e = &c->entries[i];
    const jobs_cron_t *def = &c->jobs->crons[i];
    int64_t tick = e->inflight;
    e->inflight = 0;
    if (r->status != FL_OK) {
        fl_log(FL_LOG_WARN, "jobs.cron_failed", FL_MSG("could not fire a cron entry; trying again"), FL_STR("cron", def->name),
               FL_STR("error", r->err));
        int64_t retry = fl_now_wall_ms() + 1000;
        if (retry < c->wake_ms)
            wake_at(c, retry);
        return;
    }
    e->done = tick;
    if (r->nrows == 1) {
        fl_log(FL_LOG_INFO, "jobs.cron_fired", FL_MSG("cron entry fired"), FL_STR("cron", def->name), FL_INT("tick", tick),
               FL_STR("job", jobs_cell(r, 0, 0)));
        jobs_wake(c->jobs, def->queue);
    }
}

static int cron_init(fl_actor_t *self, void *arg, void **state)
{
    fl_jobs_t *jobs = arg;
    cron_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL || (c->entries = fl_calloc((size_t)jobs->ncrons + 1, sizeof(entry_t))) == NULL) {
        fl_free(c);
        return FL_ENOMEM;
    }
    c->jobs = jobs;
    c->self = self;
    if (jobs_timer_init(&c->timer, self, C_TICK) != FL_OK) {
        fl_free(c->entries);
        fl_free(c);
        return FL_ENOMEM;
    }
    /* the current tick at once: if nobody fired it yet (every node was down), this node does */
    jobs_timer_arm(&c->timer, 0);
    *state = c;
    return FL_OK;
}

static int cron_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    cron_t *c = state;
    switch (msg->type) {
    case C_TICK:
        tick(c);
        return FL_OK;
    case C_DONE:
        fired(c, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void cron_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    cron_t *c = state;
    if (c == NULL)
        return;
    jobs_timer_free(&c->timer);
    fl_free(c->entries);
    fl_free(c);
}

const fl_behaviour_t jobs_cron_behaviour = {
    .name = "cron",
    .init = cron_init,
    .handle = cron_handle,
    .terminate = cron_terminate,
};
