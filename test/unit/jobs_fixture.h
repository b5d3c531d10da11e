/* Workers for the job queue's tests (test_jobs.c, test_jobs_nodes.c). Each leaves a trace in the
 * database the test can count, so a test asserts what happened there, not what the code thinks:
 *   effects(job_id, attempt, node, at)  one row per run, written by every worker before it answers
 *   runs(job_id PRIMARY KEY, node)      written by "once": a second run of a job fails on the key
 * Kinds: ok, flaky ({"succeed_on":N}: fails until attempt N, 0 never), discard, sleep ({"ms":N}:
 * answers complete after N ms; "sleepy" is the same with a 200 ms timeout), once (a runs row, then
 * {"ms":N} of work, then complete; never answers while jobs_fixture_hang is set), noop (completes
 * at once, no trace). */
#ifndef JOBS_FIXTURE_H
#define JOBS_FIXTURE_H

#include "jobs/jobs.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char jobs_fixture_schema[] = "CREATE TABLE effects (job_id bigint NOT NULL, attempt int NOT NULL, node text NOT NULL,"
                                          " at timestamptz NOT NULL DEFAULT clock_timestamp());"
                                          "CREATE TABLE runs (job_id bigint PRIMARY KEY, node text NOT NULL);";

/* When set, "once" never answers: the node holding it is to be killed. */
static atomic_bool jobs_fixture_hang;

typedef struct {
    fl_job_ctx_t *ctx;
    int what; /* 0 complete, 1 fail, 2 discard, 3 sleep then complete */
    char error[96];
    int sleep_ms;
} step_t;

static long args_int(const char *args, const char *key)
{
    json_t *doc = json_loads(args, 0, NULL);
    long v = (long)json_integer_value(json_object_get(doc, key));
    json_decref(doc);
    return v;
}

static void answer_step(step_t *s)
{
    if (s->what == 0)
        fl_job_complete(s->ctx);
    else if (s->what == 1)
        fl_job_fail(s->ctx, s->error);
    else
        fl_job_discard(s->ctx, s->error);
    free(s);
}

typedef struct {
    struct event *ev;
    step_t *step;
} sleeper_t;

static void on_sleep_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sleeper_t *z = arg;
    event_free(z->ev);
    z->step->what = 0;
    answer_step(z->step);
    free(z);
}

static void after_effect(const PGresult *res, int status, const char *err, void *arg)
{
    (void)res;
    step_t *s = arg;
    if (status != FL_OK) {
        snprintf(s->error, sizeof(s->error), "effect not written: %s", err ? err : fl_strerror(status));
        s->what = 1;
    }
    if (s->what == 3) {
        /* the sleep starts once the effect is written */
        sleeper_t *z = malloc(sizeof(*z));
        z->step = s;
        z->ev = evtimer_new(fl_shard_base(fl_shard_current()), on_sleep_done, z);
        struct timeval tv = {.tv_sec = s->sleep_ms / 1000, .tv_usec = (s->sleep_ms % 1000) * 1000};
        evtimer_add(z->ev, &tv);
        return;
    }
    answer_step(s);
}

static void write_effect(fl_db_t *db, const fl_job_t *job, const char *node, step_t *s, const char *sql)
{
    char id[24], attempt[16];
    snprintf(id, sizeof(id), "%lld", (long long)job->id);
    snprintf(attempt, sizeof(attempt), "%d", job->attempt);
    const char *values[] = {id, attempt, node};
    int rc = db ? fl_db_query(db, sql, 3, values, after_effect, s) : FL_EUNAVAIL;
    if (rc != FL_OK) {
        snprintf(s->error, sizeof(s->error), "no database: %s", fl_strerror(rc));
        s->what = 1;
        answer_step(s);
    }
}

#define EFFECT_SQL "INSERT INTO effects (job_id, attempt, node) VALUES ($1, $2, $3)"

static void perform_fixture(fl_job_ctx_t *ctx, const fl_job_t *job, fl_db_t *db, void *arg)
{
    const char *node = arg;
    step_t *s = calloc(1, sizeof(*s));
    s->ctx = ctx;
    if (strcmp(job->kind, "noop") == 0) {
        answer_step(s);
        return;
    }
    if (strcmp(job->kind, "flaky") == 0) {
        long on = args_int(job->args, "succeed_on");
        if (on == 0 || job->attempt < on) {
            s->what = 1;
            snprintf(s->error, sizeof(s->error), "flaky failure on attempt %d", job->attempt);
        }
    } else if (strcmp(job->kind, "discard") == 0) {
        s->what = 2;
        snprintf(s->error, sizeof(s->error), "not worth retrying");
    } else if (strcmp(job->kind, "sleep") == 0 || strcmp(job->kind, "sleepy") == 0) {
        s->what = 3;
        s->sleep_ms = (int)args_int(job->args, "ms");
    } else if (strcmp(job->kind, "once") == 0) {
        if (atomic_load(&jobs_fixture_hang)) {
            free(s); /* never answers: this node is about to die */
            return;
        }
        /* {"ms":N}: then N ms of work, so that jobs overlap and several nodes share them */
        if ((s->sleep_ms = (int)args_int(job->args, "ms")) > 0)
            s->what = 3;
        write_effect(db, job, node, s,
                     "WITH e AS (INSERT INTO effects (job_id, attempt, node) VALUES ($1, $2, $3))"
                     " INSERT INTO runs (job_id, node) VALUES ($1, $3)");
        return;
    }
    write_effect(db, job, node, s, EFFECT_SQL);
}

/* Registers every fixture kind on jobs, for node (kept: it must outlive jobs). "sleepy" is "sleep"
 * with a 200 ms timeout. */
static inline int jobs_fixture_register(fl_jobs_t *jobs, const char *node)
{
    static const char *const kinds[] = {"ok", "flaky", "discard", "sleep", "once", "noop"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        fl_worker_def_t w = {.kind = kinds[i], .perform = perform_fixture, .arg = (void *)(uintptr_t)node, .timeout_ms = 10000};
        if (fl_jobs_add_worker(jobs, &w) != FL_OK)
            return -1;
    }
    fl_worker_def_t sleepy = {.kind = "sleepy", .perform = perform_fixture, .arg = (void *)(uintptr_t)node, .timeout_ms = 200};
    return fl_jobs_add_worker(jobs, &sleepy) == FL_OK ? 0 : -1;
}

#endif
