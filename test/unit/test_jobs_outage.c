/* lib/jobs group commit while PostgreSQL goes away: enqueues keep coming, the server is stopped
 * (FLEETD_TEST_PG stop) in the middle, callers get errors within a bounded time and never a false
 * success, and after the server is back every job that was acknowledged is in the jobs table.
 * Stops the shared cluster: runs alone (RUN_SERIAL in test/CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "jobs/jobs.h"

#define MAX_OUTCOMES      20000
#define COMMIT_TIMEOUT_MS 1000

typedef struct {
    atomic_int used;
    int status[MAX_OUTCOMES];
    int64_t id[MAX_OUTCOMES];
    int64_t sent_ms[MAX_OUTCOMES];
    int64_t answered_ms[MAX_OUTCOMES];
    atomic_int answered;
} outcomes_t;

static outcomes_t out;
static fl_db_service_t *dbs;
static fl_jobs_t *jobs;
static fl_actor_t *root;
static char *db_url;
static const char *pg_ctl;

static int cluster(const char *action)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s >/dev/null 2>&1", pg_ctl, action);
    return system(cmd);
}

static int setup(void **state)
{
    (void)state;
    pg_ctl = getenv("FLEETD_TEST_PG");
    if (pg_ctl == NULL || pg_ctl[0] == '\0') {
        fprintf(stderr, "test_jobs_outage: FLEETD_TEST_PG is not set: this test stops and starts the database "
                        "(scripts/test sets it)\n");
        return -1;
    }
    if (pg_fixture_setup("jobs_outage") != 0 || runtime_setup(FL_LOG_OFF) != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK)
        return -1;
    fl_db_options_t dbo = {.conninfo = db_url, .health_interval_ms = 200, .reconnect_min_ms = 50, .reconnect_max_ms = 300};
    fl_jobs_opts_t o = {.node = "outage",
                        .conninfo = db_url,
                        .commit_interval_ms = 5,
                        .commit_max_jobs = 50,
                        .commit_timeout_ms = COMMIT_TIMEOUT_MS};
    if (fl_db_service_new(rt, &dbo, &dbs) != FL_OK || fl_jobs_new(rt, dbs, &o, &jobs) != FL_OK)
        return -1;
    static fl_child_spec_t kids[2];
    kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(dbs)};
    kids[1] = (fl_child_spec_t){.id = "jobs", .sup = fl_jobs_spec(jobs)};
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 5000, .children = kids, .nchildren = 2};
    if (fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) != FL_OK)
        return -1;
    return WAIT_FOR(fl_jobs_ready(jobs), 10000) ? 0 : -1;
}

static int teardown(void **state)
{
    cluster("start"); /* whatever happened, leave the cluster running for the other tests */
    if (root) {
        fl_sup_stop(root, 10000);
        fl_actor_unref(root);
    }
    runtime_teardown(state);
    fl_jobs_free(jobs);
    fl_db_service_free(dbs);
    return pg_fixture_teardown();
}

static void on_enqueued(int status, int64_t job_id, bool duplicate, void *arg)
{
    (void)duplicate;
    int i = (int)(intptr_t)arg;
    out.status[i] = status;
    out.id[i] = job_id;
    out.answered_ms[i] = fl_now_mono_ms();
    atomic_fetch_add(&out.answered, 1);
}

/* Five enqueues from the shard this runs on. */
static void enqueue_five(void *arg)
{
    (void)arg;
    for (int k = 0; k < 5; k++) {
        int i = atomic_fetch_add(&out.used, 1);
        if (i >= MAX_OUTCOMES)
            return;
        char args[64], key[64];
        snprintf(args, sizeof(args), "{\"i\":%d}", i);
        snprintf(key, sizeof(key), "outage:%d", i);
        fl_job_new_t job = {.queue = "audit", .kind = "audit", .args = args, .unique_key = key, .unique_period_s = -1};
        out.sent_ms[i] = fl_now_mono_ms();
        int rc = fl_jobs_enqueue(jobs, &job, on_enqueued, (void *)(intptr_t)i);
        if (rc != FL_OK) {
            out.status[i] = rc;
            out.answered_ms[i] = out.sent_ms[i];
            atomic_fetch_add(&out.answered, 1);
        }
    }
}

/* Posts enqueue_five to alternating shards every 10 ms for duration_ms. */
static void stream(int64_t duration_ms)
{
    int64_t end = fl_now_mono_ms() + duration_ms;
    for (int n = 0; fl_now_mono_ms() < end; n++) {
        fl_shard_post(fl_runtime_shard(rt, n % 2), enqueue_five, NULL);
        sleep_ms(10);
    }
}

static void acknowledged_jobs_survive_the_database_stopping(void **state)
{
    (void)state;
    stream(500); /* the database is up: these are acknowledged */
    assert_true(WAIT_FOR(atomic_load(&out.answered) == atomic_load(&out.used), 5000));
    int before = atomic_load(&out.used);
    for (int i = 0; i < before; i++)
        assert_int_equal(out.status[i], FL_OK);

    /* stop the server while enqueues keep coming */
    int64_t stopped_at = fl_now_mono_ms();
    assert_int_equal(cluster("stop"), 0);
    stopped_at = (stopped_at + fl_now_mono_ms()) / 2;
    stream(1500);
    int sent = atomic_load(&out.used);
    /* every caller hears something within the commit timeout, the database being down */
    assert_true(WAIT_FOR(atomic_load(&out.answered) == sent, COMMIT_TIMEOUT_MS + 3000));
    int errors = 0, late_ok = 0;
    int64_t slowest = 0;
    for (int i = before; i < sent; i++) {
        if (out.status[i] != FL_OK) {
            errors++;
            assert_true(out.status[i] == FL_EUNAVAIL || out.status[i] == FL_ETIMEDOUT || out.status[i] == FL_EFULL);
        } else if (out.sent_ms[i] > stopped_at + 1000) {
            late_ok++; /* a success for a job sent well after the server was gone would be false */
        }
        if (out.answered_ms[i] - out.sent_ms[i] > slowest)
            slowest = out.answered_ms[i] - out.sent_ms[i];
    }
    assert_true(errors > 0);
    assert_int_equal(late_ok, 0);
    assert_true(slowest <= COMMIT_TIMEOUT_MS + 1000);

    /* the server comes back; everything acknowledged is there, and enqueues work again */
    assert_int_equal(cluster("start"), 0);
    assert_true(WAIT_FOR(fl_jobs_ready(jobs), 15000));
    int acked = 0;
    for (int i = 0; i < sent; i++) {
        if (out.status[i] != FL_OK)
            continue;
        acked++;
        char id[24];
        snprintf(id, sizeof(id), "%lld", (long long)out.id[i]);
        char *found = value_of(db_url, "SELECT count(*) FROM jobs WHERE id = $1::bigint", id);
        if (strcmp(found, "1") != 0)
            fail_msg("acknowledged job %s (enqueue %d) is not in the jobs table", id, i);
        free(found);
    }
    assert_true(acked >= before);
    int again = atomic_load(&out.used);
    fl_shard_post(fl_runtime_shard(rt, 1), enqueue_five, NULL);
    assert_true(WAIT_FOR(atomic_load(&out.answered) == again + 5, 5000));
    for (int i = again; i < again + 5; i++)
        assert_int_equal(out.status[i], FL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(acknowledged_jobs_survive_the_database_stopping),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
