/* Retention: a cron-enqueued job deletes what is older than the retention age, a few thousand rows
 * per statement. Each statement commits on its own, so no lock is held for long, and other queries
 * on the shard's connection (which runs one at a time) wait for at most one of them. */
#include "audit_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    RETENTION_TIMEOUT_MS = 3600 * 1000, /* the worker's limit for one run */
    RETENTION_BUDGET_MS = 3000 * 1000,  /* a run stops starting statements after this; the next tick goes on */
    DEFAULT_EVERY_S = 86400,
};

/* Each step repeats its statement while it deletes a full batch. $1: the cutoff in Unix
 * microseconds; $2: the batch size. */
static const struct {
    const char *what;
    int batch;
    const char *sql;
} steps[] = {
    /* positions by age, oldest first (index positions_recorded_at) */
    {"positions", 5000,
     "WITH gone AS (DELETE FROM positions WHERE ctid = ANY (ARRAY("
     "  SELECT ctid FROM positions WHERE recorded_at < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'"
     "  LIMIT $2::int)) RETURNING 1) SELECT count(*) FROM gone"},
    /* batches with no position left (positions_batch answers each NOT EXISTS); bodies are up to
     * 1 MiB each, hence the smaller batch */
    {"ingest_batches", 200,
     "WITH gone AS (DELETE FROM ingest_batches WHERE id = ANY (ARRAY("
     "  SELECT b.id FROM ingest_batches b"
     "   WHERE b.received_at < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'"
     "     AND NOT EXISTS (SELECT 1 FROM positions p WHERE p.batch_id = b.id)"
     "  LIMIT $2::int)) RETURNING 1) SELECT count(*) FROM gone"},
    /* the partners' webhook-ids of those batches */
    {"webhook_ids", 5000,
     "WITH gone AS (DELETE FROM job_uniques WHERE key = ANY (ARRAY("
     "  SELECT key FROM job_uniques"
     "   WHERE key LIKE 'ingest:%' AND inserted_at < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond'"
     "  LIMIT $2::int)) RETURNING 1) SELECT count(*) FROM gone"},
};
enum { NSTEPS = sizeof(steps) / sizeof(steps[0]) };

typedef struct {
    fl_job_ctx_t *ctx;
    fl_db_t *db;
    int64_t job_id;
    char cutoff[24];
    int step;
    long deleted[NSTEPS];
    int statements;
    int64_t started_ms;
} run_t;

static void run_finish(run_t *r, bool finished)
{
    fl_log(finished ? FL_LOG_INFO : FL_LOG_WARN, finished ? "retention.done" : "retention.unfinished",
           FL_MSG(finished ? "retention run done" : "retention stopped at its time budget; the next run goes on"),
           FL_INT("job", r->job_id), FL_INT("positions", r->deleted[0]), FL_INT("ingest_batches", r->deleted[1]),
           FL_INT("webhook_ids", r->deleted[2]), FL_INT("statements", r->statements),
           FL_INT("ms", fl_now_mono_ms() - r->started_ms));
    fl_job_complete(r->ctx);
    fl_free(r);
}

static void run_fail(run_t *r, const char *why)
{
    char err[512];
    snprintf(err, sizeof(err), "deleting old %s failed: %s", steps[r->step].what, why);
    fl_job_fail(r->ctx, err);
    fl_free(r);
}

static void on_deleted(const PGresult *res, int status, const char *err, void *arg);

static void run_next(run_t *r)
{
    if (r->step == NSTEPS) {
        run_finish(r, true);
        return;
    }
    if (fl_now_mono_ms() - r->started_ms > RETENTION_BUDGET_MS) {
        run_finish(r, false);
        return;
    }
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", steps[r->step].batch);
    const char *params[] = {r->cutoff, batch};
    int rc = fl_db_query(r->db, steps[r->step].sql, 2, params, on_deleted, r);
    if (rc != FL_OK)
        run_fail(r, fl_strerror(rc));
}

static void on_deleted(const PGresult *res, int status, const char *err, void *arg)
{
    run_t *r = arg;
    if (status != FL_OK) {
        run_fail(r, err ? err : fl_strerror(status));
        return;
    }
    long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    r->deleted[r->step] += n;
    r->statements++;
    if (n < steps[r->step].batch)
        r->step++;
    run_next(r);
}

static void retention_perform(fl_job_ctx_t *ctx, const fl_job_t *job, fl_db_t *db, void *arg)
{
    (void)arg;
    json_t *args = json_loads(job->args ? job->args : "", 0, NULL);
    json_t *age = json_object_get(args, "retention_s");
    if (!json_is_integer(age) || json_integer_value(age) <= 0) {
        json_decref(args);
        fl_job_discard(ctx, "args need \"retention_s\", a positive number of seconds");
        return;
    }
    int64_t cutoff_us = (fl_now_wall_ms() - (int64_t)json_integer_value(age) * 1000) * 1000;
    json_decref(args);
    if (db == NULL) {
        fl_job_fail(ctx, "no database connection on this shard now");
        return;
    }
    run_t *r = fl_calloc(1, sizeof(*r));
    if (r == NULL) {
        fl_job_fail(ctx, "out of memory");
        return;
    }
    *r = (run_t){.ctx = ctx, .db = db, .job_id = job->id, .started_ms = fl_now_mono_ms()};
    snprintf(r->cutoff, sizeof(r->cutoff), "%lld", (long long)cutoff_us);
    run_next(r);
}

int fl_retention_register(fl_jobs_t *jobs, int retention_s, int every_s)
{
    char args[64];
    snprintf(args, sizeof(args), "{\"retention_s\":%d}", retention_s);
    fl_queue_def_t queue = {.name = FL_RETENTION_QUEUE, .concurrency = 1};
    fl_worker_def_t worker = {.kind = FL_RETENTION_KIND, .perform = retention_perform, .timeout_ms = RETENTION_TIMEOUT_MS};
    fl_cron_def_t cron = {.name = "retention",
                          .every_s = every_s > 0 ? every_s : DEFAULT_EVERY_S,
                          .queue = FL_RETENTION_QUEUE,
                          .kind = FL_RETENTION_KIND,
                          .args = args};
    int rc = fl_jobs_add_queue(jobs, &queue);
    if (rc == FL_OK)
        rc = fl_jobs_add_worker(jobs, &worker);
    if (rc == FL_OK)
        rc = fl_jobs_add_cron(jobs, &cron);
    return rc;
}
