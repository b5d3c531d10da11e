/* A job in a worker's hands: its context, the worker's answer, the retry delay and the fenced
 * write of the outcome.
 *
 * The producer claims a job, makes its context and calls the worker; the worker answers through
 * fl_job_complete / fl_job_fail / fl_job_discard, which tells the producer by message; the
 * producer writes the outcome. If the producer has ended meanwhile (restarted, or the tree is
 * stopping), the answer is written here directly, so a job that did finish is not run again once
 * its lease runs out. */
#include "jobs_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

fl_job_ctx_t *jobs_ctx_new(fl_jobs_t *jobs, fl_actor_t *producer)
{
    fl_job_ctx_t *ctx = fl_calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    ctx->jobs = jobs;
    ctx->producer = producer;
    fl_actor_ref(producer);
    ctx->refs = 1;
    pthread_mutex_lock(&jobs->ctx_lock);
    ctx->next = jobs->ctxs;
    if (jobs->ctxs)
        jobs->ctxs->prev = ctx;
    jobs->ctxs = ctx;
    pthread_mutex_unlock(&jobs->ctx_lock);
    return ctx;
}

fl_job_ctx_t *jobs_ctx_ref(fl_job_ctx_t *ctx)
{
    ctx->refs++;
    return ctx;
}

void jobs_ctx_unref(fl_job_ctx_t *ctx)
{
    if (ctx == NULL || --ctx->refs > 0)
        return;
    fl_jobs_t *jobs = ctx->jobs;
    pthread_mutex_lock(&jobs->ctx_lock);
    if (ctx->prev)
        ctx->prev->next = ctx->next;
    else
        jobs->ctxs = ctx->next;
    if (ctx->next)
        ctx->next->prev = ctx->prev;
    pthread_mutex_unlock(&jobs->ctx_lock);
    if (ctx->timer)
        event_free(ctx->timer);
    fl_actor_unref(ctx->producer);
    fl_free(ctx->kind);
    fl_free(ctx->args);
    fl_free(ctx->error);
    fl_free(ctx);
}

void jobs_ctx_release(void *ctx)
{
    jobs_ctx_unref(ctx);
}

int64_t jobs_backoff_ms(const fl_jobs_opts_t *opts, int attempt)
{
    int64_t delay = opts->backoff_base_ms;
    for (int i = 1; i < attempt && delay < opts->backoff_max_ms; i++)
        delay *= 2;
    if (delay > opts->backoff_max_ms)
        delay = opts->backoff_max_ms;
    /* +-20%, so that jobs failing together do not all come back at the same instant */
    int64_t spread = delay * 2 / 5; /* < 2^31: delay is at most an int */
    if (spread > 0)
        delay += (int64_t)fl_random_below((uint32_t)spread + 1) - spread / 2;
    return delay > 0 ? delay : 0;
}

/* The error as PostgreSQL will take it: valid UTF-8 (invalid bytes become '?'), at most
 * JOBS_MAX_ERROR bytes, cut between characters. */
static char *clean_error(const char *error)
{
    if (error == NULL || error[0] == '\0')
        error = "failed";
    size_t len = strlen(error);
    char *out = fl_malloc((len < JOBS_MAX_ERROR ? len : JOBS_MAX_ERROR) + 1);
    if (out == NULL)
        return NULL;
    const unsigned char *s = (const unsigned char *)error;
    size_t o = 0;
    while (*s) {
        int n = *s < 0x80 ? 1 : (*s & 0xE0) == 0xC0 ? 2 : (*s & 0xF0) == 0xE0 ? 3 : (*s & 0xF8) == 0xF0 ? 4 : 0;
        for (int k = 1; k < n; k++)
            if ((s[k] & 0xC0) != 0x80)
                n = 0;
        if (n == 2 && *s < 0xC2)
            n = 0; /* overlong */
        if (o + (n ? (size_t)n : 1) > JOBS_MAX_ERROR)
            break;
        if (n == 0) {
            out[o++] = '?';
            s++;
            continue;
        }
        memcpy(out + o, s, (size_t)n);
        o += (size_t)n;
        s += n;
    }
    out[o] = '\0';
    return out;
}

/* ---- the outcome, written fenced on (id, attempt, executing) ---- */

static const char complete_sql[] = "UPDATE jobs SET state = 'completed', completed_at = now(), lease_until = NULL"
                                   " WHERE id = $1 AND attempt = $2 AND state = 'executing'";

static const char fail_sql[] =
    "UPDATE jobs SET"
    " state = CASE WHEN attempt < max_attempts THEN 'retryable' ELSE 'discarded' END::job_state,"
    " scheduled_at = CASE WHEN attempt < max_attempts THEN now() + $4::bigint * interval '1 millisecond'"
    "                ELSE scheduled_at END,"
    " discarded_at = CASE WHEN attempt < max_attempts THEN NULL ELSE now() END,"
    " errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', " JOBS_SQL_NOW_TEXT ", 'error', $3::text)),"
    " lease_until = NULL"
    " WHERE id = $1 AND attempt = $2 AND state = 'executing'";

static const char discard_sql[] =
    "UPDATE jobs SET state = 'discarded', discarded_at = now(), lease_until = NULL,"
    " errors = errors || jsonb_build_array(jsonb_build_object('attempt', attempt, 'at', " JOBS_SQL_NOW_TEXT ", 'error', $3::text))"
    " WHERE id = $1 AND attempt = $2 AND state = 'executing'";

/* Nobody waits for an orphan's write (its producer has ended): say what happened and let go. */
static void on_orphan_recorded(const PGresult *res, int status, const char *err, void *arg)
{
    fl_job_ctx_t *ctx = arg;
    if (status != FL_OK || jobs_affected(res) != 1)
        fl_log(FL_LOG_WARN, "jobs.outcome_lost",
               FL_MSG("a job answered after its producer ended and its outcome was not written; the job will be rescued"),
               FL_INT("job", ctx->job.id), FL_STR("error", status != FL_OK ? (err ? err : fl_strerror(status)) : "lease lost"));
    jobs_ctx_unref(ctx);
}

int jobs_record(fl_job_ctx_t *ctx, fl_actor_t *self, int type)
{
    char id[24], attempt[16], delay[24];
    snprintf(id, sizeof(id), "%lld", (long long)ctx->job.id);
    snprintf(attempt, sizeof(attempt), "%d", ctx->job.attempt);
    snprintf(delay, sizeof(delay), "%lld", (long long)ctx->backoff_ms);
    const char *values[] = {id, attempt, ctx->error ? ctx->error : "failed", delay};
    const char *sql = ctx->outcome == JOB_COMPLETE ? complete_sql : ctx->outcome == JOB_DISCARD ? discard_sql : fail_sql;
    int nparams = ctx->outcome == JOB_COMPLETE ? 2 : ctx->outcome == JOB_DISCARD ? 3 : 4;
    fl_db_t *db = jobs_db_here(ctx->jobs);
    int rc;
    if (self) {
        rc = jobs_query(self, type, db, sql, nparams, values, jobs_ctx_ref(ctx), jobs_ctx_release);
        if (rc != FL_OK)
            jobs_ctx_unref(ctx);
        return rc;
    }
    jobs_ctx_ref(ctx);
    rc = db ? fl_db_query(db, sql, nparams, values, on_orphan_recorded, ctx) : FL_EUNAVAIL;
    if (rc != FL_OK) {
        fl_log(FL_LOG_WARN, "jobs.outcome_lost",
               FL_MSG("a job answered after its producer ended and its outcome could not be written; the job will be rescued"),
               FL_INT("job", ctx->job.id), FL_STR("error", fl_strerror(rc)));
        jobs_ctx_unref(ctx);
    }
    return rc;
}

/* ---- the worker's answer ---- */

/* The answer's message carries the worker's reference. The producer takes it (and writes the
 * outcome); if it is dropped instead (the producer ended before reading it, or had ended already),
 * the outcome is written from here, so a job that did its work is not run again. */
static void answer_dropped(void *p)
{
    fl_job_ctx_t *ctx = p;
    jobs_record(ctx, NULL, 0);
    jobs_ctx_unref(ctx);
}

static void answer(fl_job_ctx_t *ctx, jobs_outcome_t outcome, const char *error)
{
    fl_assert(ctx != NULL && fl_shard_current() == fl_actor_shard(ctx->producer));
    if (ctx->answered) {
        /* it timed out first: the failure is recorded, this answer comes too late */
        fl_log(FL_LOG_INFO, "jobs.late_answer", FL_MSG("a worker answered after its job had timed out; answer ignored"),
               FL_INT("job", ctx->job.id), FL_STR("kind", ctx->job.kind));
        jobs_ctx_unref(ctx); /* the worker's reference */
        return;
    }
    ctx->answered = true;
    ctx->outcome = outcome;
    if (outcome != JOB_COMPLETE) {
        ctx->error = clean_error(error);
        if (outcome == JOB_FAIL)
            ctx->backoff_ms = jobs_backoff_ms(&ctx->jobs->opts, ctx->job.attempt);
    }
    fl_actor_notify(ctx->producer, JOBS_P_ANSWER, ctx, answer_dropped);
}

void fl_job_complete(fl_job_ctx_t *ctx)
{
    answer(ctx, JOB_COMPLETE, NULL);
}

void fl_job_fail(fl_job_ctx_t *ctx, const char *error)
{
    answer(ctx, JOB_FAIL, error);
}

void fl_job_discard(fl_job_ctx_t *ctx, const char *error)
{
    answer(ctx, JOB_DISCARD, error);
}
