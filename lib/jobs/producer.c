/* The producer of one queue (queue:NAME): claims up to the free concurrency, hands each job to its
 * worker on this shard, keeps the leases of its running jobs alive, and writes the outcomes.
 *
 * A claim is one statement: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n), so
 * nodes claiming at once never take the same job and never wait for each other. Each claimed job
 * carries a lease (lease_until) that this producer renews every lease/3; if the node dies, the
 * lease runs out and the rescuer (on any node) makes the job available again. Every write about a
 * running job is fenced on (id, attempt, state executing): once a job was rescued, re-claimed or
 * cancelled, a late write from here changes nothing. While the database is away, answered jobs
 * keep their slot and their outcome is written again on each heartbeat, within the lease. */
#include "jobs_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_POLL = 1, P_BEAT, P_GRACE, P_CLAIMED, P_RECORDED, P_RENEWED };

typedef struct {
    jobs_queue_t *q;
    fl_jobs_t *jobs;
    fl_actor_t *self;
    fl_job_ctx_t *running; /* claimed and not yet recorded, newest first */
    int nrunning;
    bool claiming; /* a claim is in flight */
    bool more;     /* jobs may be waiting: claim when a slot is free */
    int asked;     /* jobs the claim in flight asked for */
    bool renewing; /* a heartbeat is in flight */
    unsigned beat; /* heartbeat number, to match its answer */
    jobs_timer_t poll_timer, beat_timer, grace_timer;
    bool stopping; /* the tree is stopping: no more claims */
    int stop_kind;
    char stop_reason[200];
    int64_t error_logged_ms; /* claims failing are logged once per 30 s */
} producer_t;

static const char claim_sql[] =
    "UPDATE jobs SET state = 'executing', attempt = attempt + 1, attempted_at = now(), attempted_by = $2,"
    " lease_until = now() + $3::int * interval '1 millisecond'"
    " WHERE id IN (SELECT id FROM jobs WHERE state = 'available' AND queue = $1 AND scheduled_at <= now()"
    "              ORDER BY scheduled_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, kind, args::text, attempt, max_attempts";

static const char renew_sql[] = "UPDATE jobs SET lease_until = now() + $3::int * interval '1 millisecond'"
                                " FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt)"
                                " WHERE jobs.id = r.id AND jobs.attempt = r.attempt AND jobs.state = 'executing'"
                                " RETURNING jobs.id";

static void on_job_timeout(evutil_socket_t fd, short what, void *arg);

static void note(producer_t *p, int type)
{
    fl_actor_notify(p->self, type, NULL, NULL);
}

static void log_claim_error(producer_t *p, const char *err)
{
    int64_t now = fl_now_mono_ms();
    if (now - p->error_logged_ms < 30000)
        return;
    p->error_logged_ms = now;
    fl_log(FL_LOG_WARN, "jobs.claim_failed", FL_MSG("could not claim jobs; trying again at the next poll"),
           FL_STR("queue", p->q->name), FL_STR("error", err));
}

/* The heartbeat's period, or a quick retry while the database is away, so that leases and
 * outcomes are written soon after it comes back (the lease has to cover the outage). */
static void beat_in(producer_t *p, bool soon)
{
    int ms = p->jobs->opts.lease_ms / 3;
    jobs_timer_arm(&p->beat_timer, soon && ms > 250 ? 250 : ms);
}

static void release(producer_t *p, fl_job_ctx_t *ctx)
{
    for (fl_job_ctx_t **c = &p->running; *c; c = &(*c)->run_next) {
        if (*c == ctx) {
            *c = ctx->run_next;
            ctx->run_next = NULL;
            p->nrunning--;
            if (ctx->timer) {
                event_free(ctx->timer);
                ctx->timer = NULL;
            }
            jobs_ctx_unref(ctx);
            return;
        }
    }
}

static void maybe_exit(producer_t *p)
{
    if (p->stopping && p->nrunning == 0 && !p->claiming)
        fl_actor_exit(p->self, p->stop_kind, p->stop_reason);
}

static void claim(producer_t *p)
{
    int free_slots = p->q->concurrency - p->nrunning;
    if (p->claiming || p->stopping || !p->more || free_slots <= 0)
        return;
    char lease[16], limit[16];
    snprintf(lease, sizeof(lease), "%d", p->jobs->opts.lease_ms);
    snprintf(limit, sizeof(limit), "%d", free_slots);
    const char *values[] = {p->q->name, p->jobs->node, lease, limit};
    int rc = jobs_query(p->self, P_CLAIMED, jobs_db_here(p->jobs), claim_sql, 4, values, NULL, NULL);
    if (rc != FL_OK) {
        /* more stays set: the next poll tries again. No connection yet (at start, or in an outage)
         * is the database service's to report; this would only repeat it for every queue. */
        if (rc != FL_EUNAVAIL)
            log_claim_error(p, fl_strerror(rc));
        return;
    }
    p->claiming = true;
    p->asked = free_slots;
}

/* An outcome that could not be written (the database is away): the heartbeat writes it again soon,
 * within the lease. Logged once per job. */
static void deferred(producer_t *p, fl_job_ctx_t *ctx, const char *error)
{
    if (!ctx->deferred)
        fl_log(FL_LOG_INFO, "jobs.outcome_deferred", FL_MSG("could not write a job's outcome yet; trying again"),
               FL_INT("job", ctx->job.id), FL_STR("queue", p->q->name), FL_STR("error", error));
    ctx->deferred = true;
    beat_in(p, true);
}

static void record(producer_t *p, fl_job_ctx_t *ctx)
{
    if (ctx->recording)
        return;
    int rc = jobs_record(ctx, p->self, P_RECORDED);
    if (rc == FL_OK) {
        ctx->recording = true;
        ctx->writes++;
        return;
    }
    deferred(p, ctx, fl_strerror(rc));
}

/* The job failed before reaching a worker (no worker for its kind, no memory): recorded as a
 * failure like any other. */
static void fail_now(producer_t *p, fl_job_ctx_t *ctx, const char *error)
{
    ctx->answered = true;
    ctx->outcome = JOB_FAIL;
    ctx->error = fl_strdup(error);
    ctx->backoff_ms = jobs_backoff_ms(&p->jobs->opts, ctx->job.attempt);
    record(p, ctx);
}

static void start_job(producer_t *p, const jobs_rows_t *r, int row)
{
    fl_job_ctx_t *ctx = jobs_ctx_new(p->jobs, p->self);
    if (ctx == NULL) {
        /* its lease runs out and the rescuer gives it back: nothing is lost */
        fl_log(FL_LOG_ERROR, "jobs.no_memory", FL_MSG("no memory to run a claimed job; it will be rescued"),
               FL_STR("queue", p->q->name), FL_STR("job", jobs_cell(r, row, 0)));
        return;
    }
    ctx->job.id = strtoll(jobs_cell(r, row, 0), NULL, 10);
    ctx->kind = fl_strdup(jobs_cell(r, row, 1));
    ctx->args = fl_strdup(jobs_cell(r, row, 2) ? jobs_cell(r, row, 2) : "{}");
    ctx->job.queue = p->q->name;
    ctx->job.kind = ctx->kind;
    ctx->job.args = ctx->args;
    ctx->job.attempt = atoi(jobs_cell(r, row, 3));
    ctx->job.max_attempts = atoi(jobs_cell(r, row, 4));
    ctx->run_next = p->running;
    p->running = ctx;
    p->nrunning++;

    const jobs_worker_t *w = ctx->kind ? jobs_worker(p->jobs, ctx->kind) : NULL;
    ctx->timer = w ? evtimer_new(fl_shard_base(fl_actor_shard(p->self)), on_job_timeout, ctx) : NULL;
    if (ctx->kind == NULL || ctx->args == NULL || (w && ctx->timer == NULL)) {
        fail_now(p, ctx, "no memory to start the job");
        return;
    }
    if (w == NULL) {
        char why[160];
        snprintf(why, sizeof(why), "no worker for kind %s on node %s", ctx->kind, p->jobs->node);
        fail_now(p, ctx, why);
        return;
    }
    ctx->timeout_ms = w->timeout_ms;
    jobs_timer_in(ctx->timer, w->timeout_ms);
    jobs_ctx_ref(ctx); /* the worker's, until it answers */
    w->perform(ctx, &ctx->job, jobs_db_here(p->jobs), w->arg);
}

static void on_claimed(producer_t *p, const jobs_rows_t *r)
{
    p->claiming = false;
    if (r->status != FL_OK) {
        log_claim_error(p, r->err);
        maybe_exit(p);
        return;
    }
    for (int i = 0; i < r->nrows; i++)
        start_job(p, r, i);
    /* a full batch: there may be more behind it */
    p->more = r->nrows >= p->asked;
    maybe_exit(p);
    claim(p);
}

static void on_recorded(producer_t *p, jobs_rows_t *r)
{
    fl_job_ctx_t *ctx = r->tag;
    ctx->recording = false;
    if (r->status == FL_OK && r->affected == 0 && ctx->writes == 1)
        fl_log(FL_LOG_WARN, "jobs.outcome_fenced",
               FL_MSG("a job's outcome was not written: it was rescued or cancelled while it ran"), FL_INT("job", ctx->job.id),
               FL_STR("queue", p->q->name));
    if (r->status == FL_EIO)
        fl_log(FL_LOG_ERROR, "jobs.outcome_refused",
               FL_MSG("PostgreSQL refused a job's outcome; the job will be rescued when its lease runs out"),
               FL_INT("job", ctx->job.id), FL_STR("error", r->err));
    if (r->status != FL_OK && r->status != FL_EIO) {
        deferred(p, ctx, r->err);
        return;
    }
    release(p, ctx);
    maybe_exit(p);
    claim(p);
}

static void on_timeout(producer_t *p, fl_job_ctx_t *ctx)
{
    if (ctx->answered || ctx->timer == NULL)
        return;
    char why[64];
    snprintf(why, sizeof(why), "timed out after %d ms", ctx->timeout_ms);
    fl_log(FL_LOG_WARN, "jobs.timeout", FL_MSG("a worker did not answer in time; the job failed"), FL_INT("job", ctx->job.id),
           FL_STR("kind", ctx->job.kind), FL_INT("timeout_ms", ctx->timeout_ms));
    ctx->timed_out = true;
    fail_now(p, ctx, why);
}

/* Every lease/3: push the leases of the running jobs forward, and write again the outcomes that
 * could not be written. False when something could not be sent. */
static bool heartbeat(producer_t *p)
{
    bool sent = true;
    if (p->nrunning == 0)
        return true;
    for (fl_job_ctx_t *c = p->running; c; c = c->run_next) {
        if (c->answered && !c->recording) {
            record(p, c);
            sent = sent && c->recording;
        }
    }
    if (p->renewing)
        return sent;
    size_t cap = (size_t)p->nrunning * 24 + 3;
    char *ids = fl_malloc(cap), *attempts = fl_malloc(cap);
    if (ids == NULL || attempts == NULL) {
        fl_free(ids);
        fl_free(attempts);
        return false;
    }
    size_t il = 0, al = 0;
    ids[il++] = '{';
    attempts[al++] = '{';
    for (fl_job_ctx_t *c = p->running; c; c = c->run_next) {
        il += (size_t)snprintf(ids + il, cap - il, "%s%lld", il > 1 ? "," : "", (long long)c->job.id);
        al += (size_t)snprintf(attempts + al, cap - al, "%s%d", al > 1 ? "," : "", c->job.attempt);
    }
    snprintf(ids + il, cap - il, "}");
    snprintf(attempts + al, cap - al, "}");
    char lease[16];
    snprintf(lease, sizeof(lease), "%d", p->jobs->opts.lease_ms);
    const char *values[] = {ids, attempts, lease};
    p->beat++;
    if (jobs_query(p->self, P_RENEWED, jobs_db_here(p->jobs), renew_sql, 3, values, (void *)(uintptr_t)p->beat, NULL) == FL_OK)
        p->renewing = true;
    fl_free(ids);
    fl_free(attempts);
    return sent && p->renewing;
}

static void on_renewed(producer_t *p, const jobs_rows_t *r)
{
    p->renewing = false;
    if (r->status != FL_OK)
        beat_in(p, true);
    if (r->status != FL_OK || (uintptr_t)r->tag != p->beat)
        return;
    for (fl_job_ctx_t *c = p->running; c; c = c->run_next) {
        if (c->lease_lost || c->recording)
            continue;
        bool kept = false;
        for (int i = 0; i < r->nrows && !kept; i++)
            kept = strtoll(jobs_cell(r, i, 0), NULL, 10) == c->job.id;
        /* not renewed: rescued (this node looked dead) or cancelled; its outcome will be fenced */
        if (!kept) {
            c->lease_lost = true;
            fl_log(FL_LOG_WARN, "jobs.lease_lost", FL_MSG("a running job's lease was lost; its outcome will not be written"),
                   FL_INT("job", c->job.id), FL_STR("queue", p->q->name));
        }
    }
}

static void on_stop(producer_t *p, const fl_stop_req_t *req)
{
    p->stopping = true;
    p->stop_kind = req->kind;
    snprintf(p->stop_reason, sizeof(p->stop_reason), "%s", req->reason);
    /* a drill or a crash ends it at once; a shutdown lets running jobs (and those of a claim in
     * flight) finish first */
    if (req->kind == FL_EXIT_KILLED || req->kind == FL_EXIT_CRASH) {
        fl_actor_exit(p->self, p->stop_kind, p->stop_reason);
        return;
    }
    jobs_timer_arm(&p->grace_timer, p->jobs->opts.stop_grace_ms);
    maybe_exit(p);
}

/* ---- the behaviour ---- */

static void on_job_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_job_ctx_t *ctx = arg;
    fl_actor_notify(ctx->producer, JOBS_P_TIMEOUT, jobs_ctx_ref(ctx), jobs_ctx_release);
}

static void producer_free(producer_t *p)
{
    jobs_timer_free(&p->poll_timer);
    jobs_timer_free(&p->beat_timer);
    jobs_timer_free(&p->grace_timer);
    fl_free(p);
}

static int producer_init(fl_actor_t *self, void *arg, void **state)
{
    jobs_queue_t *q = arg;
    producer_t *p = fl_calloc(1, sizeof(*p));
    if (p == NULL)
        return FL_ENOMEM;
    p->q = q;
    p->jobs = q->jobs;
    p->self = self;
    p->more = true;
    if (jobs_timer_init(&p->poll_timer, self, P_POLL) != FL_OK || jobs_timer_init(&p->beat_timer, self, P_BEAT) != FL_OK ||
        jobs_timer_init(&p->grace_timer, self, P_GRACE) != FL_OK) {
        producer_free(p);
        return FL_ENOMEM;
    }
    beat_in(p, false);
    pthread_mutex_lock(&q->lock);
    fl_actor_ref(self);
    q->producer = self;
    pthread_mutex_unlock(&q->lock);
    atomic_store(&q->wake_pending, false);
    note(p, P_POLL); /* claim at once: jobs may have waited while no producer ran */
    *state = p;
    return FL_OK;
}

static int producer_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    producer_t *p = state;
    switch (msg->type) {
    case JOBS_P_WAKE:
        atomic_store(&p->q->wake_pending, false);
        /* fall through */
    case P_POLL:
        jobs_timer_arm(&p->poll_timer, p->jobs->opts.poll_interval_ms);
        p->more = true;
        claim(p);
        return FL_OK;
    case P_CLAIMED:
        on_claimed(p, msg->data);
        return FL_OK;
    case JOBS_P_ANSWER: {
        fl_job_ctx_t *ctx = msg->data;
        msg->data = NULL; /* taken: the message's dtor is for answers dropped unread */
        if (ctx->timer)
            evtimer_del(ctx->timer);
        record(p, ctx);
        jobs_ctx_unref(ctx); /* the worker's */
        return FL_OK;
    }
    case JOBS_P_TIMEOUT:
        on_timeout(p, msg->data);
        return FL_OK;
    case P_RECORDED:
        on_recorded(p, msg->data);
        return FL_OK;
    case P_BEAT:
        beat_in(p, !heartbeat(p));
        return FL_OK;
    case P_RENEWED:
        on_renewed(p, msg->data);
        return FL_OK;
    case P_GRACE:
        fl_log(FL_LOG_WARN, "jobs.stopped_running", FL_MSG("stopped with jobs still running; they will be rescued"),
               FL_STR("queue", p->q->name), FL_INT("jobs", p->nrunning));
        fl_actor_exit(p->self, p->stop_kind, p->stop_reason);
        return FL_OK;
    case FL_MSG_STOP:
        on_stop(p, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void producer_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)kind;
    producer_t *p = state;
    if (p == NULL)
        return;
    jobs_queue_t *q = p->q;
    pthread_mutex_lock(&q->lock);
    if (q->producer == self) {
        q->producer = NULL;
        fl_actor_unref(self);
    }
    pthread_mutex_unlock(&q->lock);
    /* Answered jobs whose outcome is not written yet are written now, without waiting for the
     * result; jobs still running: their workers write their own answers (worker.c); those that
     * never answer are rescued once their lease runs out. */
    while (p->running) {
        fl_job_ctx_t *ctx = p->running;
        if (ctx->answered && !ctx->recording)
            jobs_record(ctx, NULL, 0);
        release(p, ctx);
    }
    producer_free(p);
}

static size_t producer_memory(const void *state)
{
    const producer_t *p = state;
    size_t bytes = sizeof(*p);
    for (const fl_job_ctx_t *c = p->running; c; c = c->run_next)
        bytes += sizeof(*c) + (c->args ? strlen(c->args) : 0);
    return bytes;
}

const fl_behaviour_t jobs_producer_behaviour = {
    .name = "producer",
    .init = producer_init,
    .handle = producer_handle,
    .terminate = producer_terminate,
    .memory = producer_memory,
    .flags = FL_BEHAVIOUR_TRAP_STOP,
};
