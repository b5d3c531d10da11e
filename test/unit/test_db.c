/* lib/db against a real PostgreSQL (DATABASE_URL, a superuser URL): the migrations runner, the
 * initial schema, and the asynchronous connection on an event loop, including losing the server.
 * Every database this file makes is called fleetd_test_db_<pid>_* and dropped at the end.
 * With FLEETD_TEST_PG set, one test stops and starts the server (ctest RESOURCE_LOCK postgres). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "db/db_internal.h"
#include "pg_fixture.h"
#include "runtime/runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char *migrated; /* conninfo of a database holding the embedded migrations */

static bool table_exists(const char *conninfo, const char *table)
{
    char *v = value_of(conninfo, "SELECT to_regclass($1) IS NOT NULL", table);
    bool exists = v && strcmp(v, "t") == 0;
    free(v);
    return exists;
}

/* A TCP listener that never answers: connecting completes (the kernel's backlog) and libpq then
 * waits forever for the server's first byte. Returns the fd; *port gets its port. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 64), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* fl_db_migrate with stdout captured into out. */
static int migrate_captured(const char *conninfo, char *out, size_t outlen, char *err, size_t errlen)
{
    fflush(stdout);
    char path[] = "/tmp/fleetd_test_db_stdout_XXXXXX";
    int tmp = mkstemp(path);
    assert_true(tmp >= 0);
    unlink(path);
    int saved = dup(STDOUT_FILENO);
    dup2(tmp, STDOUT_FILENO);
    int rc = fl_db_migrate(conninfo, 5000, err, errlen);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    ssize_t n = pread(tmp, out, outlen - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(tmp);
    return rc;
}

static int count_migrations(const fl_migration_t *list)
{
    int n = 0;
    while (list[n].name != NULL)
        n++;
    return n;
}

/* ---- setup ---------------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (pg_fixture_setup("db") != 0)
        return -1;
    return sodium_init() < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return pg_fixture_teardown();
}

/* ---- the migrations runner ---------------------------------------------------------------------- */

static void migrate_empty_database_applies_everything(void **state)
{
    (void)state;
    char *db = new_database("fresh");
    char out[256], err[512];
    assert_int_equal(migrate_captured(db, out, sizeof(out), err, sizeof(err)), FL_OK);

    int n = count_migrations(fl_migrations), latest = fl_migrations_latest();
    assert_true(n >= 1);
    char want[128];
    snprintf(want, sizeof(want), "applied %d migration%s, schema at version %d\n", n, n == 1 ? "" : "s", latest);
    assert_string_equal(out, want);

    assert_int_equal(long_of(db, "SELECT count(*) FROM schema_migrations"), n);
    assert_int_equal(long_of(db, "SELECT max(version) FROM schema_migrations"), latest);
    for (const fl_migration_t *m = fl_migrations; m->name; m++) {
        /* the recorded checksum is the SHA-256 of the file, as PostgreSQL computes it too */
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT name || ' ' || checksum || ' ' || encode(sha256(convert_to($1, 'UTF8')), 'hex') || ' ' || "
                 "(applied_at <= now()) FROM schema_migrations WHERE version = %d",
                 m->version);
        char *row = value_of(db, sql, m->sql), expect[400], hex[65];
        db_sha256_hex(m->sql, hex);
        snprintf(expect, sizeof(expect), "%s %s %s true", m->name, hex, hex);
        assert_non_null(row);
        assert_string_equal(row, expect);
        free(row);
    }
    const char *tables[] = {"fleets", "partners", "partner_secrets", "partner_fleets", "tokens", "token_fleets", "vehicles"};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
        assert_true(table_exists(db, tables[i]));
    migrated = db;
}

static void migrate_twice_changes_nothing(void **state)
{
    (void)state;
    assert_non_null(migrated);
    char *before =
        value_of(migrated, "SELECT string_agg(version || name || checksum || applied_at, ',') FROM schema_migrations", NULL);
    char out[256], err[512], want[128];
    assert_int_equal(migrate_captured(migrated, out, sizeof(out), err, sizeof(err)), FL_OK);
    snprintf(want, sizeof(want), "schema up to date at version %d\n", fl_migrations_latest());
    assert_string_equal(out, want);
    char *after =
        value_of(migrated, "SELECT string_agg(version || name || checksum || applied_at, ',') FROM schema_migrations", NULL);
    assert_string_equal(before, after);
    free(before);
    free(after);
}

typedef struct {
    const char *conninfo;
    const fl_migration_t *list;
    int rc;
    db_migrate_report_t report;
    char err[512];
} migrate_job_t;

static void *migrate_thread(void *arg)
{
    migrate_job_t *job = arg;
    job->rc = fl_db_migrate_list(job->conninfo, job->list, 5000, &job->report, job->err, sizeof(job->err));
    return NULL;
}

static void migrate_concurrent_runs_apply_once(void **state)
{
    (void)state;
    char *db = new_database("concurrent");
    /* The first migration holds the lock long enough for the second runner to arrive; without
     * the lock both would create slow_one and one would fail. */
    const fl_migration_t list[] = {
        {1, "001_slow.sql", "SELECT pg_sleep(0.6);\nCREATE TABLE slow_one (a int);"},
        {2, "002_next.sql", "CREATE TABLE next_one (a int);"},
        {0, NULL, NULL},
    };
    migrate_job_t a = {.conninfo = db, .list = list}, b = {.conninfo = db, .list = list};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, migrate_thread, &a), 0);
    usleep(150 * 1000);
    /* While the first runner works, its advisory lock is the documented one. */
    char *holders = value_of(db,
                             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                             "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                             "AND (classid::bigint << 32 | objid::bigint) = $1::bigint",
                             FL_DB_MIGRATE_LOCK_KEY);
    assert_string_equal(holders, "1");
    free(holders);
    assert_int_equal(pthread_create(&tb, NULL, migrate_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);

    assert_int_equal(a.rc, FL_OK);
    assert_int_equal(b.rc, FL_OK);
    assert_int_equal(a.report.applied, 2);
    assert_int_equal(b.report.applied, 0);
    assert_int_equal(a.report.version, 2);
    assert_int_equal(b.report.version, 2);
    assert_int_equal(long_of(db, "SELECT count(*) FROM schema_migrations"), 2);
}

static void migrate_failure_rolls_back_only_that_migration(void **state)
{
    (void)state;
    char *db = new_database("failing");
    const fl_migration_t bad[] = {
        {1, "001_a.sql", "CREATE TABLE a (x int);"},
        {2, "002_b.sql", "CREATE TABLE b (x int);\nINSERT INTO no_such_table VALUES (1);"},
        {3, "003_c.sql", "CREATE TABLE c (x int);"},
        {0, NULL, NULL},
    };
    char err[512];
    db_migrate_report_t report;
    assert_int_equal(fl_db_migrate_list(db, bad, 5000, &report, err, sizeof(err)), FL_EIO);
    assert_non_null(strstr(err, "migration 002_b.sql failed at line 2"));
    assert_non_null(strstr(err, "\"no_such_table\" does not exist"));
    assert_null(strchr(err, '\n'));
    assert_int_equal(report.applied, 1);
    assert_true(table_exists(db, "a"));
    assert_false(table_exists(db, "b")); /* rolled back with its migration */
    assert_false(table_exists(db, "c")); /* never attempted */
    assert_int_equal(long_of(db, "SELECT count(*) FROM schema_migrations"), 1);
    assert_int_equal(long_of(db, "SELECT max(version) FROM schema_migrations"), 1);

    /* Fixed, the run picks up where it stopped. */
    const fl_migration_t fixed[] = {
        bad[0],
        {2, "002_b.sql", "CREATE TABLE b (x int);"},
        bad[2],
        {0, NULL, NULL},
    };
    assert_int_equal(fl_db_migrate_list(db, fixed, 5000, &report, err, sizeof(err)), FL_OK);
    assert_int_equal(report.applied, 2);
    assert_int_equal(report.version, 3);
    assert_true(table_exists(db, "b"));
    assert_true(table_exists(db, "c"));
}

/* The migration and its schema_migrations row commit together: when the row cannot be written,
 * the migration's own changes go too. */
static void migrate_commits_a_migration_with_its_row(void **state)
{
    (void)state;
    char *db = new_database("atomic");
    const fl_migration_t list[] = {
        {1, "001_ok.sql", "CREATE TABLE ok (x int);"},
        {2, "002_blocks_its_row.sql",
         "CREATE TABLE h (x int);\nALTER TABLE schema_migrations ADD CONSTRAINT no_two CHECK (version <> 2);"},
        {0, NULL, NULL},
    };
    char err[512];
    assert_int_equal(fl_db_migrate_list(db, list, 5000, NULL, err, sizeof(err)), FL_EIO);
    assert_non_null(strstr(err, "migration 002_blocks_its_row.sql failed"));
    assert_non_null(strstr(err, "no_two"));
    assert_false(table_exists(db, "h"));
    assert_int_equal(long_of(db, "SELECT count(*) FROM pg_constraint WHERE conname = 'no_two'"), 0);
    assert_int_equal(long_of(db, "SELECT max(version) FROM schema_migrations"), 1);
}

static void migrate_refuses_an_edited_migration(void **state)
{
    (void)state;
    char *db = new_database("edited");
    const fl_migration_t v1[] = {{1, "001_e.sql", "CREATE TABLE e (x int);"}, {0, NULL, NULL}};
    char err[512];
    assert_int_equal(fl_db_migrate_list(db, v1, 5000, NULL, err, sizeof(err)), FL_OK);

    const fl_migration_t edited[] = {
        {1, "001_e.sql", "CREATE TABLE e (x int, y int);"},
        {2, "002_f.sql", "CREATE TABLE f (x int);"},
        {0, NULL, NULL},
    };
    assert_int_equal(fl_db_migrate_list(db, edited, 5000, NULL, err, sizeof(err)), FL_ESTATE);
    assert_non_null(strstr(err, "migration 001_e.sql was changed after it was applied"));
    assert_false(table_exists(db, "f")); /* nothing applied */
    assert_int_equal(long_of(db, "SELECT count(*) FROM schema_migrations"), 1);
}

static void migrate_refuses_transaction_control(void **state)
{
    (void)state;
    char *db = new_database("txn");
    const fl_migration_t list[] = {{1, "001_commit.sql", "CREATE TABLE g (x int);\nCOMMIT;"}, {0, NULL, NULL}};
    char err[512];
    assert_int_equal(fl_db_migrate_list(db, list, 5000, NULL, err, sizeof(err)), FL_EIO);
    assert_non_null(strstr(err, "must not contain BEGIN, COMMIT or ROLLBACK"));
    assert_int_equal(long_of(db, "SELECT count(*) FROM schema_migrations"), 0);
}

static void migrate_unreachable_server_is_eunavail_quickly(void **state)
{
    (void)state;
    char err[512];
    int64_t start = fl_now_mono_ms();
    int rc = fl_db_migrate("host=/nonexistent-fleetd-test-dir port=5432 dbname=x", 5000, err, sizeof(err));
    assert_int_equal(rc, FL_EUNAVAIL);
    assert_true(fl_now_mono_ms() - start < 1000);
    assert_non_null(strstr(err, "/nonexistent-fleetd-test-dir"));
    assert_null(strchr(err, '\n'));
}

static void migrate_connect_timeout_is_honoured_without_leaking_the_password(void **state)
{
    (void)state;
    int port, fd = silent_listener(&port);
    char url[256], err[512];
    snprintf(url, sizeof(url), "postgresql://fleetd:hunter2-secret@127.0.0.1:%d/x", port);
    int64_t start = fl_now_mono_ms();
    assert_int_equal(fl_db_migrate(url, 300, err, sizeof(err)), FL_EUNAVAIL);
    int64_t took = fl_now_mono_ms() - start;
    assert_true(took >= 290 && took < 2000);
    assert_non_null(strstr(err, "timed out after 300 ms connecting to 127.0.0.1"));
    assert_null(strstr(err, "hunter2"));
    close(fd);
}

static void migrate_bad_conninfo_is_einval_without_the_password(void **state)
{
    (void)state;
    char err[512];
    assert_int_equal(fl_db_migrate("postgresql://u:hunter2-secret@[::1/x", 300, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "invalid connection string"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(fl_db_migrate("host=x password=hunter2-secret bogus=1", 300, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "bogus"));
    assert_null(strstr(err, "hunter2"));
}

/* Runs sql on pg; asserts it fails with SQLSTATE state, or succeeds when state is NULL. */
static void expect_sqlstate(PGconn *pg, const char *sql, const char *state)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    const char *got = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (state == NULL && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    if (state != NULL && (got == NULL || strcmp(got, state) != 0))
        fail_msg("%s: expected SQLSTATE %s, got %s (%s)", sql, state, got ? got : "success", PQerrorMessage(pg));
    PQclear(res);
}

static void initial_schema_enforces_ids_and_ownership(void **state)
{
    (void)state;
    assert_non_null(migrated);
    PGconn *pg = connect_to(migrated);
    const char *check = "23514", *fk = "23503", *unique = "23505";
    expect_sqlstate(pg, "INSERT INTO fleets (id, name) VALUES ('harbor-1', 'Harbor'), ('A.b_c-9', NULL)", NULL);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES ('has space')", check);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES ('')", check);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES ('caf\u00e9')", check);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES ('harbor-1\n')", check);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES (repeat('x', 64))", NULL);
    expect_sqlstate(pg, "INSERT INTO fleets (id) VALUES (repeat('x', 65))", check);

    /* a vehicle belongs to one existing fleet, and holds that fleet in place */
    expect_sqlstate(pg, "INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'no-such-fleet')", fk);
    expect_sqlstate(pg, "INSERT INTO vehicles (id, fleet_id) VALUES ('truck/17', 'harbor-1')", check);
    expect_sqlstate(pg, "INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1')", NULL);
    expect_sqlstate(pg, "INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'A.b_c-9')", unique);
    expect_sqlstate(pg, "DELETE FROM fleets WHERE id = 'harbor-1'", fk);

    /* partners: secrets are ciphertext + a secretbox nonce, gone with their partner */
    expect_sqlstate(pg, "INSERT INTO partners (id) VALUES ('acme')", NULL);
    expect_sqlstate(pg, "INSERT INTO partner_fleets (partner_id, fleet_id) VALUES ('acme', 'harbor-1')", NULL);
    expect_sqlstate(pg, "INSERT INTO partner_fleets (partner_id, fleet_id) VALUES ('acme', 'harbor-1')", unique);
    expect_sqlstate(pg,
                    "INSERT INTO partner_secrets (partner_id, secret_ciphertext, nonce) "
                    "VALUES ('acme', decode(repeat('ab', 48), 'hex'), decode(repeat('01', 24), 'hex'))",
                    NULL);
    expect_sqlstate(pg,
                    "INSERT INTO partner_secrets (partner_id, secret_ciphertext, nonce) "
                    "VALUES ('acme', decode(repeat('ab', 48), 'hex'), decode(repeat('01', 23), 'hex'))",
                    check);
    expect_sqlstate(pg,
                    "INSERT INTO partner_secrets (partner_id, secret_ciphertext, nonce) "
                    "VALUES ('nobody', decode(repeat('ab', 48), 'hex'), decode(repeat('01', 24), 'hex'))",
                    fk);
    expect_sqlstate(pg, "DELETE FROM partners WHERE id = 'acme'", NULL);
    PGresult *res = PQexec(pg, "SELECT (SELECT count(*) FROM partner_secrets) + (SELECT count(*) FROM partner_fleets)");
    assert_string_equal(PQgetvalue(res, 0, 0), "0");
    PQclear(res);

    /* tokens: a unique hash of plausible length, fleets by reference */
    expect_sqlstate(pg, "INSERT INTO tokens (name, token_hash) VALUES ('ops', decode(repeat('aa', 32), 'hex'))", NULL);
    expect_sqlstate(pg, "INSERT INTO tokens (name, token_hash) VALUES ('dup', decode(repeat('aa', 32), 'hex'))", unique);
    expect_sqlstate(pg, "INSERT INTO tokens (name, token_hash) VALUES ('short', decode('aabb', 'hex'))", check);
    expect_sqlstate(pg, "INSERT INTO token_fleets (token_id, fleet_id) SELECT id, 'harbor-1' FROM tokens WHERE name = 'ops'", NULL);
    expect_sqlstate(pg, "INSERT INTO token_fleets (token_id, fleet_id) SELECT id, 'nope' FROM tokens WHERE name = 'ops'", fk);
    res = PQexec(pg, "SELECT admin, revoked_at IS NULL FROM tokens WHERE name = 'ops'");
    assert_string_equal(PQgetvalue(res, 0, 0), "f");
    assert_string_equal(PQgetvalue(res, 0, 1), "t");
    PQclear(res);
    PQfinish(pg);
}

/* ---- the asynchronous connection ------------------------------------------------------------------- */

typedef struct {
    fl_runtime_t *rt;
    fl_shard_t *shard;
    struct event_base *base;
    struct event *tick;
} loop_t;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* One shard whose loop the test thread runs itself, a slice at a time. */
static void loop_open(loop_t *l)
{
    assert_int_equal(fl_runtime_new(1, &l->rt), FL_OK);
    l->shard = fl_runtime_shard(l->rt, 0);
    l->base = fl_shard_base(l->shard);
    l->tick = event_new(l->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 5000};
    event_add(l->tick, &tv);
}

static void loop_close(loop_t *l)
{
    event_free(l->tick);
    fl_runtime_free(l->rt);
}

typedef bool (*pred_fn)(void *arg);

static bool run_until(loop_t *l, pred_fn pred, void *arg, int timeout_ms)
{
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    while (!pred(arg)) {
        if (fl_now_mono_ms() > deadline)
            return false;
        event_base_loop(l->base, EVLOOP_ONCE);
    }
    return true;
}

static void run_for(loop_t *l, int ms)
{
    int64_t deadline = fl_now_mono_ms() + ms;
    while (fl_now_mono_ms() < deadline)
        event_base_loop(l->base, EVLOOP_ONCE);
}

static bool is_up(void *db)
{
    return fl_db_is_up(db);
}

static bool is_down(void *db)
{
    return !fl_db_is_up(db);
}

static bool has_latest_schema(void *db)
{
    return fl_db_schema_version(db) == fl_migrations_latest();
}

typedef struct {
    int calls;
    int status;
    bool had_res;
    int ntuples;
    char value[2][128];
    char err[512];
    fl_shard_t *thread_shard;
} result_t;

static void on_result(const PGresult *res, int status, const char *err, void *arg)
{
    result_t *r = arg;
    r->calls++;
    r->status = status;
    r->had_res = res != NULL;
    r->thread_shard = fl_shard_current();
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    if (res != NULL) {
        r->ntuples = PQntuples(res);
        for (int i = 0; i < 2 && r->ntuples > 0 && i < PQnfields(res); i++)
            snprintf(r->value[i], sizeof(r->value[i]), "%s", PQgetisnull(res, 0, i) ? "(null)" : PQgetvalue(res, 0, i));
    }
}

static bool answered(void *arg)
{
    return ((result_t *)arg)->calls > 0;
}

static fl_db_options_t options(const char *conninfo)
{
    return (fl_db_options_t){
        .conninfo = conninfo,
        .connect_timeout_ms = 2000,
        .reconnect_min_ms = 20,
        .reconnect_max_ms = 200,
        .health_interval_ms = 100,
    };
}

static fl_db_t *open_up(loop_t *l, const fl_db_options_t *opts)
{
    fl_db_t *db;
    assert_int_equal(fl_db_new(l->shard, opts, &db), FL_OK);
    assert_true(run_until(l, is_up, db, 5000));
    return db;
}

static void db_connects_queries_and_reads_the_schema_version(void **state)
{
    (void)state;
    assert_non_null(migrated);
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    fl_db_t *db;
    assert_int_equal(fl_db_new(l.shard, &opts, &db), FL_OK);
    assert_false(fl_db_is_up(db));
    assert_int_equal(fl_db_schema_version(db), -1);

    /* Not connected yet: refused at once, and the callback never runs. */
    result_t early = {0};
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &early), FL_EUNAVAIL);

    assert_true(run_until(&l, is_up, db, 5000));
    assert_true(run_until(&l, has_latest_schema, db, 5000));

    result_t r = {0};
    const char *params[] = {"40", "2", NULL, "caf\u00e9 'quoted'"};
    assert_int_equal(fl_db_query(db, "SELECT $1::int + $2::int, ($3::text IS NULL)::text || ' ' || $4", 4, params, on_result, &r),
                     FL_OK);
    assert_int_equal(r.calls, 0); /* never from inside fl_db_query */
    assert_true(run_until(&l, answered, &r, 5000));
    assert_int_equal(r.status, FL_OK);
    assert_true(r.had_res);
    assert_int_equal(r.ntuples, 1);
    assert_string_equal(r.value[0], "42");
    assert_string_equal(r.value[1], "true caf\u00e9 'quoted'");
    assert_ptr_equal(r.thread_shard, NULL); /* the test thread runs the loop: no shard is current */

    result_t bad = {0};
    assert_int_equal(fl_db_query(db, "SELECT * FROM no_such_table", 0, NULL, on_result, &bad), FL_OK);
    assert_true(run_until(&l, answered, &bad, 5000));
    assert_int_equal(bad.status, FL_EIO);
    assert_false(bad.had_res);
    assert_string_equal(bad.err, "relation \"no_such_table\" does not exist");

    /* 4 MiB of parameter: more than the socket takes at once, so the send waits for writability. */
    size_t big_len = 4u << 20;
    char *big = malloc(big_len + 1);
    memset(big, 'x', big_len);
    big[big_len] = '\0';
    const char *big_params[] = {big};
    result_t sized = {0};
    assert_int_equal(fl_db_query(db, "SELECT length($1)", 1, big_params, on_result, &sized), FL_OK);
    free(big); /* copied by fl_db_query */
    assert_true(run_until(&l, answered, &sized, 10000));
    assert_int_equal(sized.status, FL_OK);
    assert_string_equal(sized.value[0], "4194304");

    /* Refusals that never run the callback. */
    result_t refused = {0};
    assert_int_equal(fl_db_query(db, "SELECT 1", -1, NULL, on_result, &refused), FL_EINVAL);
    assert_int_equal(fl_db_query(db, "SELECT $1", 1, NULL, on_result, &refused), FL_EINVAL);
    fl_alloc_fail_after(0);
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &refused), FL_ENOMEM);
    fl_alloc_fail_after(-1);

    run_for(&l, 300); /* health queries keep running; nothing is called twice */
    assert_int_equal(r.calls, 1);
    assert_int_equal(bad.calls, 1);
    assert_int_equal(early.calls, 0);
    assert_int_equal(refused.calls, 0);
    assert_int_equal(sized.calls, 1);
    assert_true(fl_db_is_up(db));
    fl_db_free(db);
    loop_close(&l);
}

static bool has_schema_zero(void *db)
{
    return fl_db_schema_version(db) == 0;
}

static void db_schema_version_is_zero_before_any_migration(void **state)
{
    (void)state;
    char *empty = new_database("unmigrated");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(empty);
    fl_db_t *db = open_up(&l, &opts);
    assert_true(run_until(&l, has_schema_zero, db, 5000));
    fl_db_free(db);
    loop_close(&l);
}

static void db_query_timeout_keeps_the_connection(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    opts.query_timeout_ms = 300;
    fl_db_t *db = open_up(&l, &opts);

    result_t slow = {0};
    int64_t start = fl_now_mono_ms();
    assert_int_equal(fl_db_query(db, "SELECT pg_sleep(5)", 0, NULL, on_result, &slow), FL_OK);
    assert_true(run_until(&l, answered, &slow, 4000));
    int64_t took = fl_now_mono_ms() - start;
    assert_int_equal(slow.status, FL_ETIMEDOUT);
    assert_false(slow.had_res);
    assert_true(took >= 250 && took < 2000);
    assert_non_null(strstr(slow.err, "statement timeout"));
    assert_true(fl_db_is_up(db));

    result_t next = {0};
    assert_int_equal(fl_db_query(db, "SELECT 'still here'", 0, NULL, on_result, &next), FL_OK);
    assert_true(run_until(&l, answered, &next, 4000));
    assert_int_equal(next.status, FL_OK);
    assert_string_equal(next.value[0], "still here");
    fl_db_free(db);
    loop_close(&l);
}

#define BURST 1024

typedef struct {
    int done, ok, in_order;
    int last;
} burst_t;

typedef struct {
    burst_t *b;
    int index;
} burst_item_t;

static void on_burst(const PGresult *res, int status, const char *err, void *arg)
{
    (void)err;
    burst_item_t *it = arg;
    it->b->done++;
    if (status == FL_OK && res != NULL && atoi(PQgetvalue(res, 0, 0)) == it->index)
        it->b->ok++;
    if (it->index == it->b->last + 1)
        it->b->in_order++;
    it->b->last = it->index;
}

static bool burst_done(void *arg)
{
    return ((burst_t *)arg)->done == BURST;
}

static void db_queue_is_bounded_and_fifo(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    opts.health_interval_ms = 60000; /* keep the count exact */
    fl_db_t *db = open_up(&l, &opts);
    run_for(&l, 100); /* let the connect-time health query finish */

    static burst_item_t items[BURST];
    burst_t b = {.last = -1};
    for (int i = 0; i < BURST; i++) {
        items[i] = (burst_item_t){.b = &b, .index = i};
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *params[] = {v};
        assert_int_equal(fl_db_query(db, "SELECT $1::int", 1, params, on_burst, &items[i]), FL_OK);
    }
    result_t over = {0};
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &over), FL_EFULL);
    assert_true(run_until(&l, burst_done, &b, 20000));
    assert_int_equal(b.ok, BURST);
    assert_int_equal(b.in_order, BURST);
    assert_int_equal(over.calls, 0);
    fl_db_free(db);
    loop_close(&l);
}

static void terminate_backend(const char *pid)
{
    char *v = value_of(admin_url, "SELECT pg_terminate_backend($1::int)", pid);
    assert_string_equal(v, "t");
    free(v);
}

static void db_reconnects_after_its_backend_is_killed(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    opts.reconnect_min_ms = 200; /* long enough to see it down */
    opts.reconnect_max_ms = 400;
    fl_db_t *db = open_up(&l, &opts);

    result_t pid = {0};
    assert_int_equal(fl_db_query(db, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid), FL_OK);
    assert_true(run_until(&l, answered, &pid, 5000));
    assert_int_equal(pid.status, FL_OK);

    /* A query in flight when the connection dies gets FL_EUNAVAIL, exactly once. */
    result_t inflight = {0};
    assert_int_equal(fl_db_query(db, "SELECT pg_sleep(30)", 0, NULL, on_result, &inflight), FL_OK);
    run_for(&l, 100);
    terminate_backend(pid.value[0]);
    assert_true(run_until(&l, answered, &inflight, 5000));
    assert_int_equal(inflight.status, FL_EUNAVAIL);
    assert_false(inflight.had_res);
    assert_true(inflight.err[0] != '\0');

    assert_true(run_until(&l, is_down, db, 5000));
    result_t refused = {0};
    int64_t start = fl_now_mono_ms();
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &refused), FL_EUNAVAIL);
    assert_true(fl_now_mono_ms() - start < 50);

    assert_true(run_until(&l, is_up, db, 5000));
    result_t again = {0};
    assert_int_equal(fl_db_query(db, "SELECT pg_backend_pid()", 0, NULL, on_result, &again), FL_OK);
    assert_true(run_until(&l, answered, &again, 5000));
    assert_int_equal(again.status, FL_OK);
    assert_string_not_equal(again.value[0], pid.value[0]);
    assert_int_equal(inflight.calls, 1);
    assert_int_equal(refused.calls, 0);
    fl_db_free(db);
    loop_close(&l);
}

/* pid of db's backend, through db itself. */
static int backend_pid(loop_t *l, fl_db_t *db)
{
    result_t pid = {0};
    assert_int_equal(fl_db_query(db, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid), FL_OK);
    assert_true(run_until(l, answered, &pid, 5000));
    assert_int_equal(pid.status, FL_OK);
    return atoi(pid.value[0]);
}

/* A backend frozen with SIGSTOP keeps its socket open and never answers, like a server behind a
 * dead network path: the health query, then a query's own watchdog, must notice. */
static void db_detects_a_server_that_stops_answering(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    opts.connect_timeout_ms = 500; /* also the health query's patience */
    fl_db_t *db = open_up(&l, &opts);
    int pid = backend_pid(&l, db);
    if (kill(pid, 0) != 0) {
        fprintf(stderr, "test_db: cannot signal backend %d (%s): is the server on another host? skipped\n", pid, strerror(errno));
        fl_db_free(db);
        loop_close(&l);
        skip();
    }
    int64_t start = fl_now_mono_ms();
    assert_int_equal(kill(pid, SIGSTOP), 0);
    bool noticed = run_until(&l, is_down, db, 3000);
    int64_t took = fl_now_mono_ms() - start;
    kill(pid, SIGCONT);
    assert_true(noticed);
    assert_true(took < 1500);
    assert_true(run_until(&l, is_up, db, 5000));
    assert_int_not_equal(backend_pid(&l, db), pid);
    fl_db_free(db);

    /* Without health queries in the way, the query in flight times out on its own watchdog. */
    opts.health_interval_ms = 60000;
    opts.query_timeout_ms = 300;
    db = open_up(&l, &opts);
    assert_true(run_until(&l, has_latest_schema, db, 5000));
    pid = backend_pid(&l, db);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    result_t r = {0};
    start = fl_now_mono_ms();
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &r), FL_OK);
    bool answered_in_time = run_until(&l, answered, &r, 5000);
    took = fl_now_mono_ms() - start;
    kill(pid, SIGCONT);
    assert_true(answered_in_time);
    assert_int_equal(r.status, FL_ETIMEDOUT);
    assert_non_null(strstr(r.err, "no answer from the database"));
    assert_true(took >= 300 && took < 4000);
    assert_false(fl_db_is_up(db));
    assert_true(run_until(&l, is_up, db, 5000));
    fl_db_free(db);
    loop_close(&l);
}

static int pg_control(const char *what)
{
    const char *script = getenv("FLEETD_TEST_PG");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "\"%s\" %s", script, what);
    return system(cmd);
}

static void db_reconnects_after_the_server_restarts(void **state)
{
    (void)state;
    const char *script = getenv("FLEETD_TEST_PG");
    if (script == NULL || script[0] == '\0') {
        fprintf(stderr, "test_db: FLEETD_TEST_PG is not set: server stop/start not tested here "
                        "(reconnection is still tested with pg_terminate_backend)\n");
        skip();
    }
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    fl_db_t *db = open_up(&l, &opts);

    assert_int_equal(pg_control("stop"), 0);
    assert_true(run_until(&l, is_down, db, 10000));
    result_t refused = {0};
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &refused), FL_EUNAVAIL);
    run_for(&l, 500); /* a few failed attempts while the server is away */
    assert_false(fl_db_is_up(db));

    assert_int_equal(pg_control("start"), 0);
    assert_true(run_until(&l, is_up, db, 15000));
    assert_true(run_until(&l, has_latest_schema, db, 5000));
    result_t r = {0};
    assert_int_equal(fl_db_query(db, "SELECT 'back'", 0, NULL, on_result, &r), FL_OK);
    assert_true(run_until(&l, answered, &r, 5000));
    assert_int_equal(r.status, FL_OK);
    assert_string_equal(r.value[0], "back");
    fl_db_free(db);
    loop_close(&l);
}

/* Connection attempts the silent listener has seen (accepted and left unanswered). */
typedef struct {
    int fd;
    int accepted[256];
    int naccepted;
    struct event *ev;
} silent_t;

static void on_silent_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    silent_t *s = arg;
    int c;
    while ((c = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        if (s->naccepted < 256)
            s->accepted[s->naccepted++] = c;
        else
            close(c);
    }
}

static int count_lines_with(int fd, const char *needle)
{
    char buf[65536];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    int count = 0;
    for (char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        count++;
    return count;
}

static void db_unreachable_stays_down_and_logs_once(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    silent_t s = {0};
    int port;
    s.fd = silent_listener(&port);
    s.ev = event_new(l.base, s.fd, EV_READ | EV_PERSIST, on_silent_accept, &s);
    event_add(s.ev, NULL);

    char log_path[] = "/tmp/fleetd_test_db_log_XXXXXX";
    int log_fd = mkstemp(log_path);
    assert_true(log_fd >= 0);
    unlink(log_path);
    fl_log_set_fd(log_fd);

    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=x user=x password=hunter2-secret", port);
    fl_db_options_t opts = {
        .conninfo = conninfo, .connect_timeout_ms = 50, .reconnect_min_ms = 10, .reconnect_max_ms = 20, .health_interval_ms = 50};
    fl_db_t *db;
    assert_int_equal(fl_db_new(l.shard, &opts, &db), FL_OK);
    run_for(&l, 1200);
    result_t r = {0};
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &r), FL_EUNAVAIL);
    assert_false(fl_db_is_up(db));
    assert_int_equal(fl_db_schema_version(db), -1);
    fl_db_free(db);
    fl_log_set_fd(-1);

    /* About one attempt per 70 ms for 1.2 s, and still a single line in the log. */
    assert_true(s.naccepted >= 8);
    assert_int_equal(count_lines_with(log_fd, "db.reconnect_scheduled"), 1);
    assert_int_equal(count_lines_with(log_fd, "timed out after 50 ms connecting to 127.0.0.1"), 1);
    assert_int_equal(count_lines_with(log_fd, "db.connected"), 0);
    assert_int_equal(count_lines_with(log_fd, "hunter2"), 0);
    close(log_fd);
    for (int i = 0; i < s.naccepted; i++)
        close(s.accepted[i]);
    event_free(s.ev);
    close(s.fd);
    loop_close(&l);
}

static void db_free_fails_pending_queries_with_eclosed(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    fl_db_t *db = open_up(&l, &opts);
    result_t r[3] = {{0}};
    assert_int_equal(fl_db_query(db, "SELECT pg_sleep(10)", 0, NULL, on_result, &r[0]), FL_OK);
    run_for(&l, 50); /* r[0] in flight */
    assert_int_equal(fl_db_query(db, "SELECT 1", 0, NULL, on_result, &r[1]), FL_OK);
    assert_int_equal(fl_db_query(db, "SELECT 2", 0, NULL, on_result, &r[2]), FL_OK);
    fl_db_free(db);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, FL_ECLOSED);
        assert_false(r[i].had_res);
    }
    loop_close(&l);
}

typedef struct {
    fl_db_t *db;
    result_t result;
    int query_rc_after_free;
} freeing_t;

static void on_result_then_free(const PGresult *res, int status, const char *err, void *arg)
{
    freeing_t *f = arg;
    on_result(res, status, err, &f->result);
    fl_db_free(f->db);
    f->query_rc_after_free = fl_db_query(f->db, "SELECT 1", 0, NULL, on_result, &f->result);
    fl_db_free(f->db); /* twice from inside a callback is harmless */
}

static void db_free_from_inside_a_callback(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    fl_db_t *db = open_up(&l, &opts);
    freeing_t f = {.db = db};
    result_t later[2] = {{0}};
    assert_int_equal(fl_db_query(db, "SELECT 'first'", 0, NULL, on_result_then_free, &f), FL_OK);
    assert_int_equal(fl_db_query(db, "SELECT 'second'", 0, NULL, on_result, &later[0]), FL_OK);
    assert_int_equal(fl_db_query(db, "SELECT 'third'", 0, NULL, on_result, &later[1]), FL_OK);
    assert_true(run_until(&l, answered, &later[1], 5000));
    assert_int_equal(f.result.calls, 1);
    assert_int_equal(f.result.status, FL_OK);
    assert_string_equal(f.result.value[0], "first");
    assert_int_equal(f.query_rc_after_free, FL_ECLOSED);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(later[i].calls, 1);
        assert_int_equal(later[i].status, FL_ECLOSED);
    }
    run_for(&l, 100); /* no event of the freed db fires */
    loop_close(&l);
}

/* The real arrangement: the db lives on a running shard; other threads only read its state. */
typedef struct {
    fl_shard_t *shard;
    fl_db_options_t opts;
    fl_db_t *db;
    atomic_int phase; /* 1 created, 2 answered, 3 freed */
    int create_rc, query_rc;
    result_t result;
} on_shard_t;

static void shard_create(void *arg)
{
    on_shard_t *t = arg;
    t->create_rc = fl_db_new(t->shard, &t->opts, &t->db);
    atomic_store(&t->phase, 1);
}

static void shard_answered(const PGresult *res, int status, const char *err, void *arg)
{
    on_shard_t *t = arg;
    on_result(res, status, err, &t->result);
    atomic_store(&t->phase, 2);
}

static void shard_query(void *arg)
{
    on_shard_t *t = arg;
    t->query_rc = fl_db_query(t->db, "SELECT 'on the shard'", 0, NULL, shard_answered, t);
    if (t->query_rc != FL_OK)
        atomic_store(&t->phase, 2);
}

static void shard_free(void *arg)
{
    on_shard_t *t = arg;
    fl_db_free(t->db);
    atomic_store(&t->phase, 3);
}

static bool wait_phase(on_shard_t *t, int phase, int timeout_ms)
{
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    while (atomic_load(&t->phase) < phase) {
        if (fl_now_mono_ms() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

static void db_on_a_running_shard(void **state)
{
    (void)state;
    fl_runtime_t *rt;
    assert_int_equal(fl_runtime_new(1, &rt), FL_OK);
    on_shard_t t = {.shard = fl_runtime_shard(rt, 0), .opts = options(migrated)};
    atomic_init(&t.phase, 0);
    assert_int_equal(fl_runtime_start(rt), FL_OK);
    assert_int_equal(fl_shard_post(t.shard, shard_create, &t), FL_OK);
    assert_true(wait_phase(&t, 1, 5000));
    assert_int_equal(t.create_rc, FL_OK);
    int64_t deadline = fl_now_mono_ms() + 5000;
    while ((!fl_db_is_up(t.db) || fl_db_schema_version(t.db) != fl_migrations_latest()) && fl_now_mono_ms() < deadline)
        usleep(1000);
    assert_true(fl_db_is_up(t.db));
    assert_int_equal(fl_db_schema_version(t.db), fl_migrations_latest());
    assert_int_equal(fl_shard_post(t.shard, shard_query, &t), FL_OK);
    assert_true(wait_phase(&t, 2, 5000));
    assert_int_equal(t.query_rc, FL_OK);
    assert_int_equal(t.result.status, FL_OK);
    assert_string_equal(t.result.value[0], "on the shard");
    assert_ptr_equal(t.result.thread_shard, t.shard);
    assert_int_equal(fl_shard_post(t.shard, shard_free, &t), FL_OK);
    assert_true(wait_phase(&t, 3, 5000));
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
}

/* Every allocation fl_db_new makes may fail: it then returns FL_ENOMEM and leaks nothing (ASan). */
static void db_new_survives_allocation_failures(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(migrated);
    int rc = FL_ENOMEM, n;
    for (n = 0; n < 100 && rc == FL_ENOMEM; n++) {
        fl_db_t *db = NULL;
        fl_alloc_fail_after(n);
        rc = fl_db_new(l.shard, &opts, &db);
        fl_alloc_fail_after(-1);
        if (rc == FL_OK) {
            assert_true(run_until(&l, is_up, db, 5000));
            fl_db_free(db);
        } else {
            assert_int_equal(rc, FL_ENOMEM);
            assert_null(db);
        }
    }
    assert_int_equal(rc, FL_OK);
    assert_true(n > 3); /* several allocations were failed on the way */
    loop_close(&l);
}

static void db_bad_conninfo_is_refused(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = {.conninfo = "host=x bogus=1"};
    fl_db_t *db = (fl_db_t *)(uintptr_t)1; /* must be reset */
    assert_int_equal(fl_db_new(l.shard, &opts, &db), FL_EINVAL);
    assert_null(db);
    loop_close(&l);
}

/* ---- pure functions -------------------------------------------------------------------------------- */

static void backoff_stays_between_min_and_a_doubling_ceiling(void **state)
{
    (void)state;
    for (int attempt = 0; attempt < 12; attempt++) {
        long ceiling = 100L << attempt;
        if (ceiling > 10000)
            ceiling = 10000;
        int lowest = 1 << 30, highest = 0;
        for (int i = 0; i < 200; i++) {
            int d = db_backoff_delay_ms(100, 10000, attempt);
            assert_in_range(d, 100, ceiling);
            lowest = d < lowest ? d : lowest;
            highest = d > highest ? d : highest;
        }
        if (attempt >= 3) /* jittered: spread over the range, not one value */
            assert_true(highest - lowest > (ceiling - 100) / 4);
    }
    assert_int_equal(db_backoff_delay_ms(100, 10000, 0), 100);
    assert_in_range(db_backoff_delay_ms(100, 50, 5), 100, 100); /* max below min: min */
}

static void messages_are_one_line_without_the_password(void **state)
{
    (void)state;
    char out[256];
    db_message(NULL, "postgresql://fleetd:s3cr%40t@db.example:5432/fleetd",
               "connection failed: password s3cr%40t rejected\n\tIs the server running?\n", out, sizeof(out));
    assert_string_equal(out, "connection failed: password *** rejected; Is the server running?");

    db_params_t p;
    char err[256];
    assert_int_equal(db_params_init(&p, "host=h password='two words'", "t", 0, err, sizeof(err)), FL_OK);
    db_message(&p, NULL, "FATAL:  two words\nserver closed the connection", out, sizeof(out));
    assert_string_equal(out, "FATAL: ***; server closed the connection");
    db_message(NULL, NULL,
               "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n"
               "\tbefore or while processing the request.\n",
               out, sizeof(out));
    assert_string_equal(out, "server closed the connection unexpectedly; This probably means the server terminated abnormally "
                             "before or while processing the request.");
    db_params_free(&p);

    /* statement_timeout rides along with options the URL already has */
    assert_int_equal(db_params_init(&p, "postgresql:///x?options=-c%20search_path%3Dfoo", "t", 1500, err, sizeof(err)), FL_OK);
    const char *options = NULL, *app = NULL;
    for (int i = 0; p.keys[i]; i++) {
        if (strcmp(p.keys[i], "options") == 0)
            options = p.values[i];
        if (strcmp(p.keys[i], "fallback_application_name") == 0)
            app = p.values[i];
    }
    assert_string_equal(options, "-c search_path=foo -c statement_timeout=1500");
    assert_string_equal(app, "t");
    db_params_free(&p);
}

/* ---- the command ------------------------------------------------------------------------------------- */

/* Runs $FLEETD_BIN with args and DATABASE_URL=url; stdout/stderr into out/err; returns the exit code. */
static int run_fleetd(const char *bin, const char *url, const char *arg1, const char *arg2, char *out, char *err, size_t len)
{
    char out_path[] = "/tmp/fleetd_test_db_out_XXXXXX", err_path[] = "/tmp/fleetd_test_db_err_XXXXXX";
    int ofd = mkstemp(out_path), efd = mkstemp(err_path);
    assert_true(ofd >= 0 && efd >= 0);
    unlink(out_path);
    unlink(err_path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(ofd, STDOUT_FILENO);
        dup2(efd, STDERR_FILENO);
        setenv("DATABASE_URL", url, 1);
        setenv("FLEETD_LOG_FORMAT", "json", 1);
        unsetenv("FLEETD_CONFIG");
        execl(bin, bin, arg1, arg2, (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    ssize_t n = pread(ofd, out, len - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    n = pread(efd, err, len - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(ofd);
    close(efd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void cli_migrate(void **state)
{
    (void)state;
    const char *bin = getenv("FLEETD_BIN");
    if (bin == NULL || access(bin, X_OK) != 0) {
        fprintf(stderr, "test_db: FLEETD_BIN is not an executable fleetd (%s): `fleetd migrate` not tested here\n",
                bin ? bin : "unset");
        skip();
    }
    char *db = new_database("cli");
    char out[4096], err[4096], want[128];
    int latest = fl_migrations_latest(), n = count_migrations(fl_migrations);
    assert_int_equal(run_fleetd(bin, db, "migrate", NULL, out, err, sizeof(out)), 0);
    snprintf(want, sizeof(want), "applied %d migration%s, schema at version %d\n", n, n == 1 ? "" : "s", latest);
    assert_string_equal(out, want);
    assert_non_null(strstr(err, "db.migration_applied"));

    assert_int_equal(run_fleetd(bin, db, "migrate", NULL, out, err, sizeof(out)), 0);
    snprintf(want, sizeof(want), "schema up to date at version %d\n", latest);
    assert_string_equal(out, want);

    assert_int_equal(run_fleetd(bin, "host=/nonexistent-fleetd-test-dir dbname=x", "migrate", NULL, out, err, sizeof(out)), 1);
    assert_string_equal(out, "");
    assert_true(strncmp(err, "fleetd: cannot connect to the database: ", 40) == 0);
    assert_ptr_equal(strchr(err, '\n'), err + strlen(err) - 1); /* one line */

    assert_int_equal(run_fleetd(bin, db, "migrate", "extra", out, err, sizeof(out)), 2);
    assert_int_equal(run_fleetd(bin, "postgresql://u:hunter2@[::1/x", "migrate", NULL, out, err, sizeof(out)), 2);
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(run_fleetd(bin, db, "migrate", "--help", out, err, sizeof(out)), 0);
    assert_non_null(strstr(out, "Usage: fleetd migrate"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* order matters for the first two: they make `migrated`, which later tests use */
        cmocka_unit_test(migrate_empty_database_applies_everything),
        cmocka_unit_test(migrate_twice_changes_nothing),
        cmocka_unit_test(migrate_concurrent_runs_apply_once),
        cmocka_unit_test(migrate_failure_rolls_back_only_that_migration),
        cmocka_unit_test(migrate_commits_a_migration_with_its_row),
        cmocka_unit_test(migrate_refuses_an_edited_migration),
        cmocka_unit_test(migrate_refuses_transaction_control),
        cmocka_unit_test(migrate_unreachable_server_is_eunavail_quickly),
        cmocka_unit_test(migrate_connect_timeout_is_honoured_without_leaking_the_password),
        cmocka_unit_test(migrate_bad_conninfo_is_einval_without_the_password),
        cmocka_unit_test(initial_schema_enforces_ids_and_ownership),
        cmocka_unit_test(db_connects_queries_and_reads_the_schema_version),
        cmocka_unit_test(db_schema_version_is_zero_before_any_migration),
        cmocka_unit_test(db_query_timeout_keeps_the_connection),
        cmocka_unit_test(db_queue_is_bounded_and_fifo),
        cmocka_unit_test(db_reconnects_after_its_backend_is_killed),
        cmocka_unit_test(db_detects_a_server_that_stops_answering),
        cmocka_unit_test(db_reconnects_after_the_server_restarts),
        cmocka_unit_test(db_unreachable_stays_down_and_logs_once),
        cmocka_unit_test(db_free_fails_pending_queries_with_eclosed),
        cmocka_unit_test(db_free_from_inside_a_callback),
        cmocka_unit_test(db_on_a_running_shard),
        cmocka_unit_test(db_new_survives_allocation_failures),
        cmocka_unit_test(db_bad_conninfo_is_refused),
        cmocka_unit_test(backoff_stays_between_min_and_a_doubling_ceiling),
        cmocka_unit_test(messages_are_one_line_without_the_password),
        cmocka_unit_test(cli_migrate),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
