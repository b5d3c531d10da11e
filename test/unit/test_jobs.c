/* lib/jobs on one node against a real PostgreSQL: every state transition (available -> executing
 * -> completed; -> retryable -> ... -> discarded with each attempt's error; scheduled -> available
 * when due; discard; timeouts; cancelled while running), retry delays and their jitter, unique
 * jobs, leases kept alive by the heartbeat, jobs of an unknown kind, cron, pruning, the shape of
 * the tree, and wake-ups by LISTEN/NOTIFY rather than polling. Several nodes: test_jobs_nodes.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "jobs_fixture.h"
#include "pg_fixture.h"

#include "jobs/jobs_internal.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <sys/wait.h>

static fl_db_service_t *dbs;
static fl_jobs_t *jobs;
static fl_actor_t *root;
static char *db_url;
static char *listen_url; /* the second group's database */
static const char *const NODE = "node-a";

/* ---- the service under test ---- */

static int warm_up(void);

static int start_service(const char *url, const fl_jobs_opts_t *opts, bool with_cron)
{
    fl_db_options_t dbo = {.conninfo = url, .health_interval_ms = 500, .reconnect_max_ms = 300};
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_db_service_new(rt, &dbo, &dbs) != FL_OK)
        return -1;
    fl_jobs_opts_t o = *opts;
    o.node = NODE;
    o.conninfo = url;
    if (fl_jobs_new(rt, dbs, &o, &jobs) != FL_OK)
        return -1;
    fl_queue_def_t q1 = {.name = "default", .concurrency = 4}, q2 = {.name = "other", .concurrency = 2};
    if (fl_jobs_add_queue(jobs, &q1) != FL_OK || fl_jobs_add_queue(jobs, &q2) != FL_OK || jobs_fixture_register(jobs, NODE) != 0)
        return -1;
    fl_cron_def_t cron = {.name = "every_second", .every_s = 1, .queue = "other", .kind = "ok", .args = "{\"cron\":true}"};
    if (with_cron && fl_jobs_add_cron(jobs, &cron) != FL_OK)
        return -1;
    static fl_child_spec_t kids[2];
    kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(dbs)};
    kids[1] = (fl_child_spec_t){.id = "jobs", .sup = fl_jobs_spec(jobs), .shutdown_ms = fl_jobs_shutdown_ms(jobs)};
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 2};
    if (kids[1].sup == NULL || fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) != FL_OK)
        return -1;
    return WAIT_FOR(fl_db_service_up(dbs), 5000) ? 0 : -1;
}

static void stop_service(void)
{
    if (root) {
        fl_sup_stop(root, 20000);
        fl_actor_unref(root);
        root = NULL;
    }
    if (rt)
        fl_runtime_stop(rt);
    fl_jobs_free(jobs);
    fl_db_service_free(dbs);
    if (rt)
        fl_runtime_free(rt);
    jobs = NULL;
    dbs = NULL;
    rt = NULL;
}

static char *migrated_database(const char *suffix)
{
    char *url = new_database(suffix);
    char err[256];
    if (fl_db_migrate(url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return NULL;
    }
    exec_on(url, jobs_fixture_schema);
    return url;
}

static int setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_ERROR, FL_LOG_JSON);
    if ((db_url = migrated_database("main")) == NULL)
        return -1;
    fl_jobs_opts_t o = {.poll_interval_ms = 100,
                        .lease_ms = 600,
                        .backoff_base_ms = 200,
                        .backoff_max_ms = 1000,
                        .prune_interval_ms = 200,
                        .prune_completed_s = 3600,
                        .prune_discarded_s = 7200,
                        .prune_cancelled_s = 10800,
                        .stop_grace_ms = 1000};
    return start_service(db_url, &o, true) == 0 ? warm_up() : -1;
}

static int teardown(void **state)
{
    (void)state;
    stop_service();
    return 0;
}

/* ---- enqueueing from a shard, as callers do ---- */

typedef struct {
    fl_job_new_t job;
    atomic_int done;
    int status;
    int64_t id;
    bool duplicate;
} enqueue_t;

static void enqueued(int status, int64_t id, bool duplicate, void *arg)
{
    enqueue_t *e = arg;
    e->status = status;
    e->id = id;
    e->duplicate = duplicate;
    atomic_store(&e->done, 1);
}

static void enqueue_on_shard(void *arg)
{
    enqueue_t *e = arg;
    int rc = fl_jobs_enqueue(jobs, &e->job, enqueued, e);
    if (rc != FL_OK)
        enqueued(rc, 0, false, e);
}

/* Enqueues until it is accepted (the committer's own connection may still be coming up: it
 * answers FL_EUNAVAIL meanwhile, and callers retry); the last outcome in e. */
static void enqueue_until_accepted(enqueue_t *e, int timeout_ms)
{
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    for (;;) {
        atomic_store(&e->done, 0);
        assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 1), enqueue_on_shard, e), FL_OK);
        assert_true(WAIT_FOR(atomic_load(&e->done) == 1, 10000));
        if (e->status != FL_EUNAVAIL || fl_now_mono_ms() > deadline)
            return;
        sleep_ms(50);
    }
}

/* Once the service runs: an enqueue goes through (the committer's connection is up). */
static int warm_up(void)
{
    enqueue_t e = {.job = {.queue = "other", .kind = "noop", .args = "{}"}};
    enqueue_until_accepted(&e, 10000);
    return e.status == FL_OK ? 0 : -1;
}

static int64_t enqueue_job(const fl_job_new_t *job, bool *duplicate)
{
    enqueue_t e = {.job = *job};
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 1), enqueue_on_shard, &e), FL_OK);
    assert_true(WAIT_FOR(atomic_load(&e.done) == 1, 10000));
    assert_int_equal(e.status, FL_OK);
    assert_true(e.id > 0);
    if (duplicate)
        *duplicate = e.duplicate;
    return e.id;
}

static int64_t enqueue(const char *queue, const char *kind, const char *args, int max_attempts)
{
    fl_job_new_t job = {.queue = queue, .kind = kind, .args = args, .max_attempts = max_attempts};
    return enqueue_job(&job, NULL);
}

/* ---- reading the database ---- */

static char *job_field(int64_t id, const char *expr)
{
    char sql[512], idtext[24];
    snprintf(sql, sizeof(sql), "SELECT (%s)::text FROM jobs WHERE id = $1", expr);
    snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
    return value_of(db_url, sql, idtext);
}

static bool job_is(int64_t id, const char *state)
{
    char *s = job_field(id, "state");
    bool is = s && strcmp(s, state) == 0;
    free(s);
    return is;
}

static long job_long(int64_t id, const char *expr)
{
    char *s = job_field(id, expr);
    long v = s ? atol(s) : -1;
    free(s);
    return v;
}

static void assert_job_field(int64_t id, const char *expr, const char *want)
{
    char *got = job_field(id, expr);
    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("job %lld: %s is %s, want %s", (long long)id, expr, got ? got : "NULL", want);
    free(got);
}

static long effects_of(int64_t id)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM effects WHERE job_id = %lld", (long long)id);
    return long_of(db_url, sql);
}

static json_t *job_errors(int64_t id)
{
    char *text = job_field(id, "errors");
    json_t *errors = json_loads(text, 0, NULL);
    free(text);
    assert_true(json_is_array(errors));
    return errors;
}

static bool rfc3339_ms(const char *s)
{
    int y, mo, d, h, mi, sec, ms;
    char z;
    return s && strlen(s) == 24 && sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &sec, &ms, &z) == 8 && z == 'Z';
}

/* ---- the tests ---- */

static void a_job_runs_once_and_completes(void **state)
{
    (void)state;
    int64_t id = enqueue("default", "ok", "{\"n\":1}", 0);
    assert_true(WAIT_FOR(job_is(id, "completed"), 5000));
    assert_job_field(id, "attempt", "1");
    assert_job_field(id, "attempted_by", NODE);
    assert_job_field(id, "completed_at IS NOT NULL AND attempted_at IS NOT NULL", "true");
    assert_job_field(id, "lease_until IS NULL", "true");
    assert_job_field(id, "errors", "[]");
    assert_int_equal(effects_of(id), 1);
}

static void many_jobs_respect_the_queue_concurrency(void **state)
{
    (void)state;
    /* 12 jobs of 300 ms on a queue of concurrency 4: never more than 4 at once, all done */
    int64_t ids[12];
    for (int i = 0; i < 12; i++)
        ids[i] = enqueue("default", "sleep", "{\"ms\":300}", 0);
    int most = 0;
    int64_t deadline = fl_now_mono_ms() + 10000;
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM jobs WHERE state = 'executing' AND queue = 'default' AND kind = 'sleep'");
    while (fl_now_mono_ms() < deadline) {
        long n = long_of(db_url, sql);
        if (n > most)
            most = (int)n;
        if (job_is(ids[11], "completed") && long_of(db_url, sql) == 0)
            break;
        sleep_ms(20);
    }
    for (int i = 0; i < 12; i++)
        assert_true(WAIT_FOR(job_is(ids[i], "completed"), 5000));
    assert_true(most >= 2);
    assert_true(most <= 4);
}

static void a_failing_job_is_retried_with_backoff_then_discarded(void **state)
{
    (void)state;
    int64_t id = enqueue("default", "flaky", "{\"succeed_on\":0}", 4);
    assert_true(WAIT_FOR(job_is(id, "retryable"), 5000));
    assert_job_field(id, "scheduled_at > now()", "true");
    assert_true(WAIT_FOR(job_is(id, "discarded"), 15000));
    assert_job_field(id, "attempt", "4");
    assert_job_field(id, "discarded_at IS NOT NULL AND lease_until IS NULL", "true");
    json_t *errors = job_errors(id);
    assert_int_equal(json_array_size(errors), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(errors, i);
        assert_int_equal(json_integer_value(json_object_get(e, "attempt")), (json_int_t)i + 1);
        char want[64];
        snprintf(want, sizeof(want), "flaky failure on attempt %zu", i + 1);
        assert_string_equal(json_string_value(json_object_get(e, "error")), want);
        assert_true(rfc3339_ms(json_string_value(json_object_get(e, "at"))));
    }
    json_decref(errors);
    assert_int_equal(effects_of(id), 4);

    /* the delays between runs grow: 200, 400, 800 ms (base 200, +-20%), plus up to a poll
     * interval to be staged and claimed */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT string_agg((extract(epoch FROM at - lag) * 1000)::int::text, ',' ORDER BY attempt) FROM"
             " (SELECT attempt, at, lag(at) OVER (ORDER BY attempt) FROM effects WHERE job_id = %lld) d WHERE lag IS NOT NULL",
             (long long)id);
    char *gaps = value_of(db_url, sql, NULL);
    int g[3];
    assert_int_equal(sscanf(gaps, "%d,%d,%d", &g[0], &g[1], &g[2]), 3);
    for (int k = 0; k < 3; k++) {
        int nominal = 200 << k;
        if (g[k] < nominal * 8 / 10 || g[k] > nominal * 12 / 10 + 400)
            fail_msg("delay before attempt %d: %d ms, expected %d ms +-20%% (+ staging); all: %s", k + 2, g[k], nominal, gaps);
    }
    free(gaps);
}

static void a_flaky_job_completes_on_a_later_attempt(void **state)
{
    (void)state;
    int64_t id = enqueue("default", "flaky", "{\"succeed_on\":3}", 5);
    assert_true(WAIT_FOR(job_is(id, "completed"), 10000));
    assert_job_field(id, "attempt", "3");
    assert_job_field(id, "jsonb_array_length(errors)", "2");
    assert_job_field(id, "errors->1->>'error'", "flaky failure on attempt 2");
    assert_int_equal(effects_of(id), 3);
}

static void a_discarded_job_is_not_retried(void **state)
{
    (void)state;
    int64_t id = enqueue("default", "discard", "{}", 5);
    assert_true(WAIT_FOR(job_is(id, "discarded"), 5000));
    sleep_ms(500);
    assert_true(job_is(id, "discarded"));
    assert_job_field(id, "attempt", "1");
    assert_job_field(id, "errors->0->>'error'", "not worth retrying");
    assert_int_equal(effects_of(id), 1);
}

static void a_scheduled_job_waits_until_due(void **state)
{
    (void)state;
    int64_t at_us = (fl_now_wall_ms() + 800) * 1000;
    fl_job_new_t job = {.queue = "default", .kind = "ok", .args = "{}", .scheduled_at_us = at_us};
    int64_t id = enqueue_job(&job, NULL);
    assert_true(job_is(id, "scheduled"));
    sleep_ms(400);
    assert_true(job_is(id, "scheduled"));
    assert_true(WAIT_FOR(job_is(id, "completed"), 5000));
    char sql[128];
    snprintf(sql, sizeof(sql), "(extract(epoch FROM attempted_at) * 1000000)::bigint >= %lld", (long long)at_us);
    assert_job_field(id, sql, "true");
}

static void a_worker_that_does_not_answer_in_time_fails_the_job(void **state)
{
    (void)state;
    /* "sleepy" has a 200 ms timeout; this one answers "complete" after 600 ms: too late */
    int64_t id = enqueue("default", "sleepy", "{\"ms\":600}", 1);
    assert_true(WAIT_FOR(job_is(id, "discarded"), 5000));
    assert_job_field(id, "errors->0->>'error'", "timed out after 200 ms");
    sleep_ms(800); /* the late answer arrives and changes nothing */
    assert_true(job_is(id, "discarded"));
    assert_int_equal(effects_of(id), 1);
}

static void a_job_of_an_unknown_kind_fails_and_says_why(void **state)
{
    (void)state;
    int64_t id = enqueue("other", "nobody", "{}", 1);
    assert_true(WAIT_FOR(job_is(id, "discarded"), 5000));
    assert_job_field(id, "errors->0->>'error'", "no worker for kind nobody on node node-a");
}

static void a_long_job_keeps_its_lease_and_is_not_rescued(void **state)
{
    (void)state;
    /* 2 s of work against a 600 ms lease: the heartbeat (every 200 ms) keeps it */
    int64_t id = enqueue("default", "sleep", "{\"ms\":2000}", 3);
    assert_true(WAIT_FOR(job_is(id, "executing"), 5000));
    long first = job_long(id, "(extract(epoch FROM lease_until) * 1000)::bigint");
    sleep_ms(700);
    long later = job_long(id, "(extract(epoch FROM lease_until) * 1000)::bigint");
    assert_true(first > 0);
    assert_true(later > first);
    assert_true(job_is(id, "executing"));
    assert_true(WAIT_FOR(job_is(id, "completed"), 5000));
    assert_job_field(id, "attempt", "1");
    assert_job_field(id, "errors", "[]");
    assert_int_equal(effects_of(id), 1);
}

static void a_job_cancelled_while_running_stays_cancelled(void **state)
{
    (void)state;
    int64_t id = enqueue("default", "sleep", "{\"ms\":600}", 3);
    assert_true(WAIT_FOR(job_is(id, "executing"), 5000));
    char sql[160];
    snprintf(sql, sizeof(sql), "UPDATE jobs SET state = 'cancelled', cancelled_at = now(), lease_until = NULL WHERE id = %lld",
             (long long)id);
    exec_on(db_url, sql);
    sleep_ms(1200); /* its worker answers "complete"; the fenced write leaves the job alone */
    assert_true(job_is(id, "cancelled"));
    assert_job_field(id, "completed_at IS NULL", "true");
}

static void a_unique_job_is_enqueued_once_within_its_period(void **state)
{
    (void)state;
    bool dup = true;
    fl_job_new_t job = {.queue = "other", .kind = "noop", .args = "{}", .unique_key = "report:1", .unique_period_s = 1};
    int64_t first = enqueue_job(&job, &dup);
    assert_false(dup);
    int64_t second = enqueue_job(&job, &dup);
    assert_true(dup);
    assert_int_equal(second, first);
    sleep_ms(1300); /* the period is over: a new job */
    int64_t third = enqueue_job(&job, &dup);
    assert_false(dup);
    assert_true(third != first);

    fl_job_new_t forever = {.queue = "other", .kind = "noop", .args = "{}", .unique_key = "webhook:1", .unique_period_s = -1};
    int64_t a = enqueue_job(&forever, &dup);
    assert_false(dup);
    int64_t b = enqueue_job(&forever, &dup);
    assert_true(dup);
    assert_int_equal(a, b);
    assert_true(WAIT_FOR(job_is(a, "completed"), 5000));
    int64_t c = enqueue_job(&forever, &dup); /* still held after the job completed */
    assert_true(dup);
    assert_int_equal(c, a);
}

static void backoff_grows_and_its_jitter_stays_within_20_percent(void **state)
{
    (void)state;
    fl_jobs_opts_t o = {.backoff_base_ms = 1000, .backoff_max_ms = 60000};
    for (int attempt = 1; attempt <= 12; attempt++) {
        int64_t nominal = 1000LL << (attempt - 1);
        if (nominal > 60000)
            nominal = 60000;
        int64_t lo = INT64_MAX, hi = 0;
        double sum = 0;
        for (int i = 0; i < 5000; i++) {
            int64_t d = jobs_backoff_ms(&o, attempt);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += (double)d;
        }
        assert_true(lo >= nominal * 8 / 10);
        assert_true(hi <= nominal * 12 / 10 + 1);
        assert_true(hi - lo > nominal / 4); /* it is jittered, across most of the range */
        assert_true(fabs(sum / 5000 - (double)nominal) < (double)nominal * 0.02);
    }
    /* no overflow for absurd attempts */
    assert_true(jobs_backoff_ms(&o, 1000000) <= 72000);
}

static void cron_fires_once_per_tick(void **state)
{
    (void)state;
    sleep_ms(2500);
    long ticks = long_of(db_url, "SELECT count(*) FROM cron_ticks WHERE name = 'every_second'");
    assert_true(ticks >= 2);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM cron_ticks WHERE name = 'every_second' AND job_id IS NULL"), 0);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs WHERE args @> '{\"cron\":true}'"),
                     long_of(db_url, "SELECT count(*) FROM cron_ticks WHERE name = 'every_second'"));
    /* ticks are whole seconds, and their jobs run */
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM cron_ticks WHERE extract(microseconds FROM tick) % 1000000 <> 0"), 0);
    assert_true(WAIT_FOR(long_of(db_url, "SELECT count(*) FROM jobs j JOIN cron_ticks c ON c.job_id = j.id"
                                         " WHERE j.state = 'completed'") >= 2,
                         3000));
}

static void pruning_deletes_old_finished_jobs_only(void **state)
{
    (void)state;
    /* ages: completed 1 h, discarded 2 h, cancelled 3 h; 2500 old completed jobs take several
     * batches */
    exec_on(db_url,
            "INSERT INTO jobs (queue, kind, state, completed_at, args)"
            " SELECT 'prune', 'x', 'completed', now() - interval '90 minutes', '{\"old\":true}' FROM generate_series(1, 2500);"
            "INSERT INTO jobs (queue, kind, state, completed_at, args) VALUES"
            " ('prune', 'x', 'completed', now() - interval '30 minutes', '{\"keep\":true}');"
            "INSERT INTO jobs (queue, kind, state, discarded_at, args) VALUES"
            " ('prune', 'x', 'discarded', now() - interval '150 minutes', '{\"old\":true}'),"
            " ('prune', 'x', 'discarded', now() - interval '90 minutes', '{\"keep\":true}');"
            "INSERT INTO jobs (queue, kind, state, cancelled_at, args) VALUES"
            " ('prune', 'x', 'cancelled', now() - interval '210 minutes', '{\"old\":true}'),"
            " ('prune', 'x', 'cancelled', now() - interval '150 minutes', '{\"keep\":true}');"
            /* old but not finished: never pruned */
            "INSERT INTO jobs (queue, kind, state, scheduled_at, inserted_at, args) VALUES"
            " ('prune', 'x', 'scheduled', now() + interval '1 day', now() - interval '10 days', '{\"keep\":true}'),"
            " ('prune', 'x', 'retryable', now() + interval '1 day', now() - interval '10 days', '{\"keep\":true}');"
            "INSERT INTO job_uniques (key, job_id, until) VALUES ('expired', 1, now() - interval '1 second'),"
            " ('held', 1, now() + interval '1 hour'), ('forever', 1, 'infinity');");
    assert_true(
        WAIT_FOR(long_of(db_url, "SELECT count(*) FROM jobs WHERE queue = 'prune' AND args @> '{\"old\":true}'") == 0, 10000));
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs WHERE queue = 'prune' AND args @> '{\"keep\":true}'"), 5);
    assert_true(WAIT_FOR(long_of(db_url, "SELECT count(*) FROM job_uniques WHERE key = 'expired'") == 0, 5000));
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM job_uniques WHERE key IN ('held', 'forever')"), 2);
}

static json_t *find_child(json_t *node, const char *id)
{
    json_t *kids = json_object_get(node, "children");
    for (size_t i = 0; i < json_array_size(kids); i++) {
        json_t *k = json_array_get(kids, i);
        if (strcmp(json_string_value(json_object_get(k, "id")), id) == 0)
            return k;
    }
    return NULL;
}

static void the_jobs_supervisor_holds_the_queue_actors(void **state)
{
    (void)state;
    json_t *tree = fl_tree_json(root);
    json_t *sup = find_child(tree, "jobs");
    assert_non_null(sup);
    static const char *const ids[] = {"committer", "listener", "queue:default", "queue:other",
                                      "stager",    "cron",     "rescuer",       "pruner"};
    json_t *kids = json_object_get(sup, "children");
    assert_int_equal(json_array_size(kids), sizeof(ids) / sizeof(ids[0]));
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        json_t *k = json_array_get(kids, i);
        assert_string_equal(json_string_value(json_object_get(k, "id")), ids[i]);
        assert_string_equal(json_string_value(json_object_get(k, "status")), "running");
    }
    json_decref(tree);
}

static void a_restarted_producer_picks_up_where_it_left(void **state)
{
    (void)state;
    /* a drill on queue:default while jobs wait; its successor claims them */
    assert_int_equal(fl_tree_restart_wait(root, "queue:default", 5000), FL_OK);
    int64_t id = enqueue("default", "ok", "{}", 0);
    assert_true(WAIT_FOR(job_is(id, "completed"), 5000));
    assert_int_equal(effects_of(id), 1);
}

/* `fleetd jobs ARGS` against the test's database; its exit status. */
static int fleetd_cli(const char *a1, const char *a2)
{
    const char *bin = getenv("FLEETD_BIN");
    if (bin == NULL)
        fail_msg("FLEETD_BIN is not set (run through ctest)");
    /* everything the child needs is built before fork: the parent has threads */
    char dburl[1024], level[] = "FLEETD_LOG_LEVEL=error", jobs_word[] = "jobs";
    snprintf(dburl, sizeof(dburl), "DATABASE_URL=%s", db_url);
    char *envp[] = {dburl, level, NULL};
    char *args[] = {(char *)(uintptr_t)bin, jobs_word, (char *)(uintptr_t)a1, (char *)(uintptr_t)a2, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDOUT_FILENO);
        execve(bin, args, envp);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void a_discarded_job_retried_from_the_cli_runs_again(void **state)
{
    (void)state;
    /* one attempt only, and it fails: discarded; `fleetd jobs retry` grants one more, which works */
    int64_t id = enqueue("default", "flaky", "{\"succeed_on\":2}", 1);
    assert_true(WAIT_FOR(job_is(id, "discarded"), 5000));
    char idtext[24];
    snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
    assert_int_equal(fleetd_cli("retry", idtext), 0);
    assert_true(WAIT_FOR(job_is(id, "completed"), 5000));
    assert_job_field(id, "attempt || '/' || max_attempts", "2/2");
    assert_job_field(id, "errors->0->>'error'", "flaky failure on attempt 1");
    assert_int_equal(effects_of(id), 2);
    /* and a completed job cannot be cancelled */
    assert_int_equal(fleetd_cli("cancel", idtext), 1);
    assert_true(job_is(id, "completed"));
}

static void a_job_cancelled_from_the_cli_does_not_run(void **state)
{
    (void)state;
    int64_t at_us = (fl_now_wall_ms() + 600) * 1000;
    fl_job_new_t job = {.queue = "default", .kind = "ok", .args = "{}", .scheduled_at_us = at_us};
    int64_t id = enqueue_job(&job, NULL);
    char idtext[24];
    snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
    assert_int_equal(fleetd_cli("cancel", idtext), 0);
    sleep_ms(1000);
    assert_true(job_is(id, "cancelled"));
    assert_int_equal(effects_of(id), 0);
}

/* ---- the second group: wake-ups come by NOTIFY, not by polling ---- */

static int listen_setup(void **state)
{
    (void)state;
    if ((listen_url = migrated_database("listen")) == NULL)
        return -1;
    db_url = listen_url;
    /* a poll every 20 s: anything quicker than that was woken by a notification */
    fl_jobs_opts_t o = {.poll_interval_ms = 20000, .lease_ms = 6000, .backoff_base_ms = 100, .backoff_max_ms = 100};
    if (start_service(listen_url, &o, false) != 0 || warm_up() != 0)
        return -1;
    sleep_ms(500); /* the listener's LISTEN is in */
    return 0;
}

static void an_enqueued_job_wakes_its_producer_at_once(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = fl_now_mono_ms();
        int64_t id = enqueue(i % 2 ? "other" : "default", "ok", "{}", 0);
        assert_true(WAIT_FOR(job_is(id, "completed"), 3000));
        assert_true(fl_now_mono_ms() - t0 < 3000);
    }
}

static void a_job_inserted_by_another_process_is_noticed(void **state)
{
    (void)state;
    /* as another node's commit would: insert and notify in one transaction */
    exec_on(listen_url, "BEGIN; INSERT INTO jobs (queue, kind, args) VALUES ('default', 'ok', '{\"outside\":true}');"
                        "SELECT pg_notify('fleetd_jobs', 'default'); COMMIT;");
    assert_true(WAIT_FOR(
        long_of(listen_url, "SELECT count(*) FROM jobs WHERE args @> '{\"outside\":true}' AND state = 'completed'") == 1, 3000));
}

static void set_connections(const char *url, bool allowed)
{
    static char *name;
    if (name == NULL)
        name = value_of(url, "SELECT current_database()", NULL); /* while it can be read */
    char sql[256];
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s WITH ALLOW_CONNECTIONS %s", name, allowed ? "true" : "false");
    exec_on(admin_url, sql);
    if (!allowed) {
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", name);
        exec_on(admin_url, sql);
    }
}

static void a_job_survives_its_node_losing_the_database(void **state)
{
    (void)state;
    /* The worker answers while the node cannot reach the database (every connection cut, new
     * ones refused): the outcome is written once it is back, within the lease (6 s here), so the
     * job is neither lost nor run twice. */
    int64_t id = enqueue("default", "sleep", "{\"ms\":700}", 5);
    assert_true(WAIT_FOR(effects_of(id) == 1, 5000));
    set_connections(listen_url, false);
    sleep_ms(1500); /* the worker answers meanwhile */
    set_connections(listen_url, true);
    assert_true(WAIT_FOR(job_is(id, "completed"), 10000));
    assert_job_field(id, "attempt", "1");
    assert_job_field(id, "errors", "[]");
    assert_int_equal(effects_of(id), 1);
    /* and the node works on, once its connections are back (an enqueue meanwhile is refused:
     * FL_EUNAVAIL, callers retry) */
    enqueue_t e = {.job = {.queue = "default", .kind = "ok", .args = "{\"after\":true}"}};
    enqueue_until_accepted(&e, 10000);
    assert_int_equal(e.status, FL_OK);
    assert_true(WAIT_FOR(job_is(e.id, "completed"), 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_jobs_supervisor_holds_the_queue_actors),
        cmocka_unit_test(a_job_runs_once_and_completes),
        cmocka_unit_test(many_jobs_respect_the_queue_concurrency),
        cmocka_unit_test(a_failing_job_is_retried_with_backoff_then_discarded),
        cmocka_unit_test(a_flaky_job_completes_on_a_later_attempt),
        cmocka_unit_test(a_discarded_job_is_not_retried),
        cmocka_unit_test(a_scheduled_job_waits_until_due),
        cmocka_unit_test(a_worker_that_does_not_answer_in_time_fails_the_job),
        cmocka_unit_test(a_job_of_an_unknown_kind_fails_and_says_why),
        cmocka_unit_test(a_long_job_keeps_its_lease_and_is_not_rescued),
        cmocka_unit_test(a_job_cancelled_while_running_stays_cancelled),
        cmocka_unit_test(a_discarded_job_retried_from_the_cli_runs_again),
        cmocka_unit_test(a_job_cancelled_from_the_cli_does_not_run),
        cmocka_unit_test(a_unique_job_is_enqueued_once_within_its_period),
        cmocka_unit_test(backoff_grows_and_its_jitter_stays_within_20_percent),
        cmocka_unit_test(cron_fires_once_per_tick),
        cmocka_unit_test(pruning_deletes_old_finished_jobs_only),
        cmocka_unit_test(a_restarted_producer_picks_up_where_it_left),
    };
    const struct CMUnitTest listen_tests[] = {
        cmocka_unit_test(an_enqueued_job_wakes_its_producer_at_once),
        cmocka_unit_test(a_job_inserted_by_another_process_is_noticed),
        cmocka_unit_test(a_job_survives_its_node_losing_the_database),
    };
    if (pg_fixture_setup("jobs") != 0)
        return 1;
    int failed = cmocka_run_group_tests_name("jobs", tests, setup, teardown);
    failed += cmocka_run_group_tests_name("jobs_listen", listen_tests, listen_setup, teardown);
    if (pg_fixture_teardown() != 0)
        failed++;
    return failed;
}
