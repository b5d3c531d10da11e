/* lib/jobs with several fleetd nodes on one database. Each node is a separate process: this same
 * executable started with --node, running the jobs service alone (runtime, db service, jobs
 * supervisor), so the nodes share nothing but PostgreSQL, as real nodes do. The test process only
 * starts, stops and kills nodes and reads the database.
 *   - 500 jobs on two nodes: each runs exactly once (a unique key in `runs` catches a second run)
 *   - cron on two nodes: exactly one job per tick
 *   - a node killed mid-job: the job is rescued when its lease runs out and completes exactly once
 *     on another node (or is discarded when it had no attempts left)
 *   - a node stopped (SIGTERM) mid-job lets the job finish first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "jobs_fixture.h"
#include "pg_fixture.h"

#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

/* ---- node mode: `test_jobs_nodes --node NAME [--hang] [--cron] [--lease MS]`, database in
 * JOBS_NODE_URL; prints "ready" on stdout once its tree runs; SIGTERM stops it cleanly (exit 0) ---- */

static int run_node(int argc, char **argv)
{
    const char *name = argv[2], *url = getenv("JOBS_NODE_URL");
    bool cron = false;
    int lease = 600;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--hang") == 0)
            atomic_store(&jobs_fixture_hang, true);
        else if (strcmp(argv[i], "--cron") == 0)
            cron = true;
        else if (strcmp(argv[i], "--lease") == 0 && i + 1 < argc)
            lease = atoi(argv[++i]);
    }
    fl_log_init(FL_LOG_ERROR, FL_LOG_JSON);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread: only sigwait takes it */

    fl_db_service_t *dbs = NULL;
    fl_jobs_t *jobs = NULL;
    fl_actor_t *root = NULL;
    fl_db_options_t dbo = {.conninfo = url, .health_interval_ms = 500};
    fl_jobs_opts_t o = {.node = name,
                        .conninfo = url,
                        .poll_interval_ms = 100,
                        .lease_ms = lease,
                        .backoff_base_ms = 100,
                        .backoff_max_ms = 200,
                        .stop_grace_ms = 3000};
    fl_queue_def_t q = {.name = "default", .concurrency = 4};
    fl_cron_def_t tick = {.name = "tick", .every_s = 1, .queue = "default", .kind = "noop", .args = "{\"cron\":\"tick\"}"};
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_db_service_new(rt, &dbo, &dbs) != FL_OK ||
        fl_jobs_new(rt, dbs, &o, &jobs) != FL_OK || fl_jobs_add_queue(jobs, &q) != FL_OK ||
        jobs_fixture_register(jobs, name) != 0 || (cron && fl_jobs_add_cron(jobs, &tick) != FL_OK)) {
        fprintf(stderr, "node %s: cannot set up\n", name);
        return 3;
    }
    fl_child_spec_t kids[2] = {{.id = "db", .sup = fl_db_service_spec(dbs)},
                               {.id = "jobs", .sup = fl_jobs_spec(jobs), .shutdown_ms = fl_jobs_shutdown_ms(jobs)}};
    fl_sup_spec_t spec = {.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 2};
    if (fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) != FL_OK) {
        fprintf(stderr, "node %s: the tree did not start\n", name);
        return 3;
    }
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    int rc = fl_sup_stop(root, 30000) == FL_OK ? 0 : 4;
    fl_actor_unref(root);
    fl_runtime_stop(rt);
    fl_jobs_free(jobs);
    fl_db_service_free(dbs);
    fl_runtime_free(rt);
    return rc;
}

/* ---- the test process ---- */

static char *url;

typedef struct {
    pid_t pid;
    const char *name;
} node_t;

/* Starts a node and waits for its "ready". */
static node_t start_node(const char *name, const char *flag1, const char *flag2)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        setenv("JOBS_NODE_URL", url, 1);
        char self[] = "test_jobs_nodes", mode[] = "--node";
        char *args[] = {self, mode, (char *)(uintptr_t)name, (char *)(uintptr_t)flag1, (char *)(uintptr_t)flag2, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(out[1]);
    char buf[16] = "";
    struct pollfd pfd = {.fd = out[0], .events = POLLIN};
    size_t got = 0;
    while (got < 6 && poll(&pfd, 1, 20000) == 1) {
        ssize_t n = read(out[0], buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(out[0]);
    if (strncmp(buf, "ready", 5) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("node %s did not start", name);
    }
    return (node_t){pid, name};
}

/* SIGTERM, then its exit status (within 30 s, else it is killed and the test fails). */
static int stop_node(node_t n)
{
    kill(n.pid, SIGTERM);
    int status = 0;
    int64_t deadline = fl_now_mono_ms() + 30000;
    while (waitpid(n.pid, &status, WNOHANG) == 0) {
        if (fl_now_mono_ms() > deadline) {
            kill(n.pid, SIGKILL);
            waitpid(n.pid, &status, 0);
            fail_msg("node %s did not stop within 30 s", n.name);
        }
        sleep_ms(10);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void kill_node(node_t n)
{
    kill(n.pid, SIGKILL);
    waitpid(n.pid, NULL, 0);
}

static int setup_test(void **state)
{
    (void)state;
    static int n;
    char suffix[16];
    snprintf(suffix, sizeof(suffix), "t%d", n++);
    url = new_database(suffix);
    char err[256];
    if (fl_db_migrate(url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    exec_on(url, jobs_fixture_schema);
    return 0;
}

static long count(const char *sql)
{
    return long_of(url, sql);
}

static char *text(const char *sql)
{
    return value_of(url, sql, NULL);
}

static void two_nodes_never_run_a_job_twice(void **state)
{
    (void)state;
    node_t a = start_node("node-a", NULL, NULL), b = start_node("node-b", NULL, NULL);
    /* 500 jobs of 10 ms each, committed and announced at once */
    exec_on(url, "BEGIN; INSERT INTO jobs (queue, kind, args) SELECT 'default', 'once', '{\"ms\":10}' FROM generate_series(1, 500);"
                 "SELECT pg_notify('fleetd_jobs', 'default'); COMMIT;");
    bool done = WAIT_FOR(count("SELECT count(*) FROM jobs WHERE state = 'completed'") == 500, 60000);
    assert_int_equal(stop_node(a), 0);
    assert_int_equal(stop_node(b), 0);
    assert_true(done);
    assert_int_equal(count("SELECT count(*) FROM runs"), 500);
    assert_int_equal(count("SELECT count(*) FROM effects"), 500);
    assert_int_equal(count("SELECT count(*) FROM jobs WHERE attempt <> 1 OR errors <> '[]'"), 0);
    assert_int_equal(count("SELECT count(*) FROM runs r JOIN jobs j ON j.id = r.job_id AND j.attempted_by = r.node"), 500);
    /* both took part */
    assert_true(count("SELECT count(*) FROM runs WHERE node = 'node-a'") > 0);
    assert_true(count("SELECT count(*) FROM runs WHERE node = 'node-b'") > 0);
}

static void cron_fires_once_per_tick_on_two_nodes(void **state)
{
    (void)state;
    node_t a = start_node("node-a", "--cron", NULL), b = start_node("node-b", "--cron", NULL);
    sleep_ms(4300);
    assert_int_equal(stop_node(a), 0);
    assert_int_equal(stop_node(b), 0);
    long ticks = count("SELECT count(*) FROM cron_ticks WHERE name = 'tick'");
    assert_true(ticks >= 4 && ticks <= 6);
    /* one job per tick, every tick has its job, consecutive ticks one second apart */
    assert_int_equal(count("SELECT count(*) FROM jobs WHERE kind = 'noop' AND args @> '{\"cron\":\"tick\"}'"), ticks);
    assert_int_equal(count("SELECT count(DISTINCT j.id) FROM cron_ticks c JOIN jobs j ON j.id = c.job_id WHERE c.name = 'tick'"),
                     ticks);
    assert_int_equal(count("SELECT extract(epoch FROM max(tick) - min(tick))::int FROM cron_ticks WHERE name = 'tick'"), ticks - 1);
    assert_int_equal(count("SELECT count(*) FROM jobs WHERE kind = 'noop' AND state = 'completed'"), ticks);
}

static void a_job_on_a_killed_node_is_rescued_and_completes_once(void **state)
{
    (void)state;
    node_t a = start_node("node-a", "--hang", NULL);
    exec_on(url, "INSERT INTO jobs (queue, kind, max_attempts, args) VALUES ('default', 'once', 3, '{\"n\":1}'),"
                 " ('default', 'once', 1, '{\"n\":2}')");
    bool claimed = WAIT_FOR(count("SELECT count(*) FROM jobs WHERE state = 'executing' AND attempted_by = 'node-a'") == 2, 5000);
    if (!claimed)
        kill_node(a);
    assert_true(claimed);
    /* while node-a lives, its heartbeat pushes the leases forward */
    long lease1 = count("SELECT (extract(epoch FROM min(lease_until)) * 1000)::bigint FROM jobs");
    sleep_ms(500);
    long lease2 = count("SELECT (extract(epoch FROM min(lease_until)) * 1000)::bigint FROM jobs");
    kill_node(a);
    assert_true(lease2 > lease1);
    assert_int_equal(count("SELECT count(*) FROM jobs WHERE state = 'executing'"), 2);

    node_t b = start_node("node-b", NULL, NULL);
    bool settled = WAIT_FOR(count("SELECT count(*) FROM jobs WHERE args @> '{\"n\":1}' AND state = 'completed'") == 1 &&
                                count("SELECT count(*) FROM jobs WHERE args @> '{\"n\":2}' AND state = 'discarded'") == 1,
                            10000);
    assert_int_equal(stop_node(b), 0);
    assert_true(settled);

    /* the job with attempts left ran once more, on node-b, and only there */
    char *row = text("SELECT attempt || ' ' || attempted_by || ' ' || jsonb_array_length(errors) || ' ' ||"
                     " (errors->0->>'attempt') || ' ' || (errors->0->>'error') FROM jobs WHERE args @> '{\"n\":1}'");
    assert_string_equal(row, "2 node-b 1 1 lease expired: node node-a stopped renewing it");
    free(row);
    assert_int_equal(count("SELECT count(*) FROM runs"), 1);
    assert_int_equal(count("SELECT count(*) FROM runs r JOIN jobs j ON j.id = r.job_id WHERE j.args @> '{\"n\":1}'"), 1);
    /* the one without attempts left is discarded, not run again */
    row = text("SELECT attempt || ' ' || (errors->0->>'error') || ' ' || (discarded_at IS NOT NULL) FROM jobs"
               " WHERE args @> '{\"n\":2}'");
    assert_string_equal(row, "1 lease expired: node node-a stopped renewing it true");
    free(row);
}

static void a_stopping_node_lets_its_running_job_finish(void **state)
{
    (void)state;
    node_t a = start_node("node-a", NULL, NULL);
    exec_on(url, "INSERT INTO jobs (queue, kind, args) VALUES ('default', 'sleep', '{\"ms\":1200}')");
    bool running = WAIT_FOR(count("SELECT count(*) FROM effects") == 1, 5000);
    int64_t t0 = fl_now_mono_ms();
    int rc = stop_node(a);
    int64_t took = fl_now_mono_ms() - t0;
    assert_true(running);
    assert_int_equal(rc, 0);
    char *row = text("SELECT state || ' ' || attempt || ' ' || errors::text FROM jobs");
    assert_string_equal(row, "completed 1 []");
    free(row);
    assert_true(took >= 500); /* it waited for the job */
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--node") == 0)
        return run_node(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    fl_log_init(FL_LOG_ERROR, FL_LOG_JSON);
    if (pg_fixture_setup("jobs_nodes") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(two_nodes_never_run_a_job_twice, setup_test),
        cmocka_unit_test_setup(cron_fires_once_per_tick_on_two_nodes, setup_test),
        cmocka_unit_test_setup(a_job_on_a_killed_node_is_rescued_and_completes_once, setup_test),
        cmocka_unit_test_setup(a_stopping_node_lets_its_running_job_finish, setup_test),
    };
    int failed = cmocka_run_group_tests_name("jobs_nodes", tests, NULL, NULL);
    if (pg_fixture_teardown() != 0)
        failed++;
    return failed;
}
