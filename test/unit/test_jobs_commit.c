/* lib/jobs group commit against a real PostgreSQL: enqueues from both shards are committed
 * together (rows that share a transaction share xmin), unique keys (across flushes and within one),
 * scheduled jobs, and the bounded failures: a full queue (FL_EFULL at once), a database that does
 * not answer (FL_ETIMEDOUT within the commit timeout) and one that is unreachable (FL_EUNAVAIL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "jobs/jobs.h"

typedef struct {
    fl_db_service_t *dbs;
    fl_jobs_t *jobs;
    fl_actor_t *root;
    fl_child_spec_t kids[2];
    fl_sup_spec_t spec;
} node_t;

static char *db_url;
/* One node at a time; a test that fails half way leaves it to stop_left_node. */
static node_t node;
static bool node_up;

static int start_node(node_t *n, const char *conninfo, const fl_jobs_opts_t *extra)
{
    memset(n, 0, sizeof(*n));
    node_up = true;
    fl_db_options_t dbo = {.conninfo = conninfo, .health_interval_ms = 500, .connect_timeout_ms = 1000};
    fl_jobs_opts_t o = {.node = "test", .conninfo = conninfo, .commit_interval_ms = 20, .commit_max_jobs = 100};
    if (extra) {
        o.commit_timeout_ms = extra->commit_timeout_ms;
        o.max_pending = extra->max_pending;
        o.commit_max_jobs = extra->commit_max_jobs ? extra->commit_max_jobs : o.commit_max_jobs;
    }
    if (fl_db_service_new(rt, &dbo, &n->dbs) != FL_OK || fl_jobs_new(rt, n->dbs, &o, &n->jobs) != FL_OK)
        return -1;
    n->kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(n->dbs)};
    n->kids[1] = (fl_child_spec_t){.id = "jobs", .sup = fl_jobs_spec(n->jobs)};
    n->spec =
        (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 5000, .children = n->kids, .nchildren = 2};
    return fl_sup_start(fl_runtime_shard(rt, 0), "root", &n->spec, NULL, NULL, 10000, &n->root);
}

static void stop_node(node_t *n)
{
    node_up = false;
    if (n->root) {
        fl_sup_stop(n->root, 10000);
        fl_actor_unref(n->root);
    }
    fl_jobs_free(n->jobs);
    fl_db_service_free(n->dbs);
}

static int stop_left_node(void **state)
{
    (void)state;
    if (node_up)
        stop_node(&node);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (pg_fixture_setup("jobs_commit") != 0 || runtime_setup(FL_LOG_ERROR) != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    runtime_teardown(state);
    return pg_fixture_teardown();
}

/* ---- enqueueing from a shard and collecting the outcomes ---- */

#define MAX_JOBS 400

typedef struct {
    fl_jobs_t *jobs;
    int n;
    const char *unique_key[MAX_JOBS];
    int unique_period_s;
    int64_t scheduled_at_us;
    /* outcomes */
    atomic_int answered;
    int status[MAX_JOBS];
    int64_t id[MAX_JOBS];
    bool duplicate[MAX_JOBS];
    int refused[MAX_JOBS]; /* fl_jobs_enqueue's own return, when not FL_OK */
    int64_t answered_at_ms[MAX_JOBS];
} batch_t;

typedef struct {
    batch_t *b;
    int i;
} slot_t;

static slot_t slots[2][MAX_JOBS];

static void on_enqueued(int status, int64_t job_id, bool duplicate, void *arg)
{
    slot_t *s = arg;
    s->b->status[s->i] = status;
    s->b->id[s->i] = job_id;
    s->b->duplicate[s->i] = duplicate;
    s->b->answered_at_ms[s->i] = fl_now_mono_ms();
    atomic_fetch_add(&s->b->answered, 1);
}

typedef struct {
    batch_t *b;
    int from, to, which;
} range_t;

static void enqueue_range(void *arg)
{
    range_t *r = arg;
    batch_t *b = r->b;
    for (int i = r->from; i < r->to; i++) {
        char args[64];
        snprintf(args, sizeof(args), "{\"n\":%d}", i);
        fl_job_new_t job = {.queue = "audit",
                            .kind = "audit",
                            .args = args,
                            .unique_key = b->unique_key[i],
                            .unique_period_s = b->unique_period_s,
                            .scheduled_at_us = b->scheduled_at_us};
        slots[r->which][i] = (slot_t){b, i};
        int rc = fl_jobs_enqueue(b->jobs, &job, on_enqueued, &slots[r->which][i]);
        if (rc != FL_OK) {
            b->refused[i] = rc;
            atomic_fetch_add(&b->answered, 1);
        }
    }
    free(r);
}

/* Half the jobs from shard 0, half from shard 1; waits until every one is answered. */
static void enqueue_all(batch_t *b, int which)
{
    int half = b->n / 2;
    for (int s = 0; s < 2; s++) {
        range_t *r = malloc(sizeof(*r));
        *r = (range_t){b, s ? half : 0, s ? b->n : half, which};
        assert_int_equal(fl_shard_post(fl_runtime_shard(rt, s), enqueue_range, r), FL_OK);
    }
    assert_true(WAIT_FOR(atomic_load(&b->answered) == b->n, 15000));
}

/* ---- tests ---- */

static void many_enqueues_share_few_transactions(void **state)
{
    (void)state;
    assert_int_equal(start_node(&node, db_url, NULL), FL_OK);
    exec_on(db_url, "TRUNCATE jobs, job_uniques");
    static batch_t b;
    memset(&b, 0, sizeof(b));
    b.jobs = node.jobs;
    b.n = 300;
    enqueue_all(&b, 0);
    for (int i = 0; i < b.n; i++) {
        assert_int_equal(b.refused[i], 0);
        assert_int_equal(b.status[i], FL_OK);
        assert_true(b.id[i] > 0);
        assert_false(b.duplicate[i]);
    }
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs WHERE state = 'available' AND queue = 'audit'"), 300);
    /* every job's args made it: the n values are 0..299, each once */
    assert_int_equal(
        long_of(db_url, "SELECT count(DISTINCT (args->>'n')::int) FROM jobs WHERE (args->>'n')::int BETWEEN 0 AND 299"), 300);
    /* rows committed in one transaction share xmin: 300 jobs took a handful of flushes, not 300 */
    long txs = long_of(db_url, "SELECT count(DISTINCT xmin::text) FROM jobs");
    assert_true(txs >= 3 && txs <= 60); /* at most 100 per flush */
    stop_node(&node);
}

static void unique_keys_make_duplicates(void **state)
{
    (void)state;
    assert_int_equal(start_node(&node, db_url, NULL), FL_OK);
    exec_on(db_url, "TRUNCATE jobs, job_uniques");
    static batch_t first, again;
    memset(&first, 0, sizeof(first));
    first.jobs = node.jobs;
    first.n = 4;
    first.unique_period_s = -1;
    const char *keys[] = {"ingest:acme:msg-1", "ingest:acme:msg-2", "ingest:acme:msg-1", NULL};
    for (int i = 0; i < 4; i++)
        first.unique_key[i] = keys[i];
    enqueue_all(&first, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(first.status[i], FL_OK);
    /* msg-1 twice in the same flush or in the same burst: the second is a duplicate of the first */
    int a = first.duplicate[0] ? 2 : 0, dup = first.duplicate[0] ? 0 : 2;
    assert_false(first.duplicate[a]);
    assert_true(first.duplicate[dup]);
    assert_int_equal(first.id[dup], first.id[a]);
    assert_false(first.duplicate[1]);
    assert_false(first.duplicate[3]);

    memset(&again, 0, sizeof(again));
    again.jobs = node.jobs;
    again.n = 2;
    again.unique_period_s = -1;
    again.unique_key[0] = "ingest:acme:msg-2";
    again.unique_key[1] = "ingest:acme:msg-3";
    enqueue_all(&again, 1);
    assert_true(again.duplicate[0]);
    assert_int_equal(again.id[0], first.id[1]); /* a later flush: still the first job */
    assert_false(again.duplicate[1]);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs"), 4); /* msg-1, msg-2, NULL key, msg-3 */

    /* a key held for a period is free again after it */
    exec_on(db_url, "UPDATE job_uniques SET until = now() - interval '1 second' WHERE key = 'ingest:acme:msg-3'");
    memset(&again, 0, sizeof(again));
    again.jobs = node.jobs;
    again.n = 2;
    again.unique_period_s = 60;
    again.unique_key[0] = "ingest:acme:msg-3";
    again.unique_key[1] = "periodic";
    enqueue_all(&again, 1);
    assert_false(again.duplicate[0]);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs WHERE unique_key = 'ingest:acme:msg-3'"), 2);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM job_uniques WHERE key = 'periodic'"
                                     " AND until BETWEEN now() + interval '50 seconds' AND now() + interval '70 seconds'"),
                     1);
    stop_node(&node);
}

static void scheduled_jobs_wait_for_their_time(void **state)
{
    (void)state;
    assert_int_equal(start_node(&node, db_url, NULL), FL_OK);
    exec_on(db_url, "TRUNCATE jobs, job_uniques");
    static batch_t b;
    memset(&b, 0, sizeof(b));
    b.jobs = node.jobs;
    b.n = 2;
    b.scheduled_at_us = (fl_now_wall_ms() + 3600 * 1000) * 1000;
    enqueue_all(&b, 0);
    assert_int_equal(b.status[0], FL_OK);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM jobs WHERE state = 'scheduled'"
                                     " AND scheduled_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes'"),
                     2);
    stop_node(&node);
}

static void stuck_database_gives_timeouts_and_full_queue_refuses(void **state)
{
    (void)state;
    fl_jobs_opts_t extra = {.commit_timeout_ms = 400, .max_pending = 50, .commit_max_jobs = 10};
    assert_int_equal(start_node(&node, db_url, &extra), FL_OK);
    /* hold a lock that every flush needs: the first flush blocks, the rest pile up behind it */
    PGconn *locker = connect_to(db_url);
    exec_ok(locker, "BEGIN");
    exec_ok(locker, "LOCK TABLE job_uniques IN ACCESS EXCLUSIVE MODE");
    static batch_t b;
    memset(&b, 0, sizeof(b));
    b.jobs = node.jobs;
    b.n = 200;
    for (int i = 0; i < b.n; i++)
        b.unique_key[i] = "stuck"; /* every flush touches job_uniques */
    b.unique_period_s = 1;
    int64_t start = fl_now_mono_ms();
    enqueue_all(&b, 0);
    int full = 0, timedout = 0, ok = 0;
    int64_t slowest = 0;
    for (int i = 0; i < b.n; i++) {
        if (b.refused[i] == FL_EFULL)
            full++;
        else if (b.status[i] == FL_ETIMEDOUT)
            timedout++;
        else if (b.status[i] == FL_OK)
            ok++;
        if (!b.refused[i] && b.answered_at_ms[i] - start > slowest)
            slowest = b.answered_at_ms[i] - start;
    }
    assert_true(full > 0);     /* past max_pending the caller hears it at once */
    assert_true(timedout > 0); /* the others hear within the commit timeout */
    assert_int_equal(ok, 0);   /* never a success that was not committed */
    assert_true(slowest < 400 + 1000);
    exec_ok(locker, "ROLLBACK");
    PQfinish(locker);
    stop_node(&node);
}

static void unreachable_database_fails_at_once(void **state)
{
    (void)state;
    const char *nowhere = "host=/nonexistent/fleetd-test dbname=x connect_timeout=1";
    assert_int_equal(start_node(&node, nowhere, NULL), FL_OK);
    static batch_t b;
    memset(&b, 0, sizeof(b));
    b.jobs = node.jobs;
    b.n = 10;
    int64_t start = fl_now_mono_ms();
    enqueue_all(&b, 1);
    for (int i = 0; i < b.n; i++)
        assert_int_equal(b.status[i], FL_EUNAVAIL);
    assert_true(fl_now_mono_ms() - start < 1000);
    stop_node(&node);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(many_enqueues_share_few_transactions, stop_left_node),
        cmocka_unit_test_teardown(unique_keys_make_duplicates, stop_left_node),
        cmocka_unit_test_teardown(scheduled_jobs_wait_for_their_time, stop_left_node),
        cmocka_unit_test_teardown(stuck_database_gives_timeouts_and_full_queue_refuses, stop_left_node),
        cmocka_unit_test_teardown(unreachable_database_fails_at_once, stop_left_node),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
