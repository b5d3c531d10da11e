/* lib/db against a real PostgreSQL (DATABASE_URL, a superuser URL): pipelined transactions,
 * binary parameters and LISTEN/NOTIFY on the asynchronous connection, including losing the
 * backend with a transaction in flight, and the round trips a transaction saves (printed).
 * Every database this file makes is called fleetd_test_db_tx_<pid>_* and dropped at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "db/db_internal.h"
#include "pg_fixture.h"
#include "runtime/runtime.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- the database ---------------------------------------------------------------------------------- */

static char *txdb; /* conninfo of this file's database */

static const char *tx_database(void)
{
    if (txdb == NULL) {
        txdb = new_database("tx");
        exec_on(txdb, "CREATE TABLE items (id int PRIMARY KEY, note text);"
                      "CREATE TABLE bodies (id int PRIMARY KEY, body bytea NOT NULL);"
                      "CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree (id) DEFERRABLE INITIALLY DEFERRED)");
    }
    return txdb;
}

static long count_of(const char *sql)
{
    return long_of(tx_database(), sql);
}

static void terminate_backend(int pid)
{
    char v[16];
    snprintf(v, sizeof(v), "%d", pid);
    char *ok = value_of(admin_url, "SELECT pg_terminate_backend($1::int)", v);
    assert_string_equal(ok, "t");
    free(ok);
}

/* ---- one shard whose loop the test thread runs, a slice at a time ------------------------------------ */

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

/* ---- what callbacks saw ------------------------------------------------------------------------------ */

typedef struct {
    int calls;
    int status;
    bool had_res;
    char value[2][128]; /* the first row's first two values */
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
    for (int i = 0; res != NULL && i < 2 && PQntuples(res) > 0 && i < PQnfields(res); i++)
        snprintf(r->value[i], sizeof(r->value[i]), "%s", PQgetisnull(res, 0, i) ? "(null)" : PQgetvalue(res, 0, i));
}

static bool answered(void *arg)
{
    return ((result_t *)arg)->calls > 0;
}

/* The single-row, single-value answer of sql through db itself. */
static void query_value(loop_t *l, fl_db_t *db, const char *sql, char *out, size_t outlen)
{
    result_t r = {0};
    assert_int_equal(fl_db_query(db, sql, 0, NULL, on_result, &r), FL_OK);
    assert_true(run_until(l, answered, &r, 5000));
    if (r.status != FL_OK)
        fail_msg("%s: %s (%s)", sql, r.err, fl_strerror(r.status));
    snprintf(out, outlen, "%s", r.value[0]);
}

static int backend_pid(loop_t *l, fl_db_t *db)
{
    char pid[32];
    query_value(l, db, "SELECT pg_backend_pid()", pid, sizeof(pid));
    return atoi(pid);
}

#define TX_MAX 8

typedef struct {
    int calls;
    int status;
    int n;
    int failed_index;
    bool had_results;
    ExecStatusType st[TX_MAX];
    char tag[TX_MAX][32];
    char value[TX_MAX][64]; /* the first value of the first row, when there is one */
    char err[512];
    fl_shard_t *thread_shard;
} tx_t;

static void on_tx(PGresult *const *results, int n, int status, const char *err, int failed_index, void *arg)
{
    tx_t *t = arg;
    t->calls++;
    t->status = status;
    t->n = n;
    t->failed_index = failed_index;
    t->had_results = results != NULL;
    t->thread_shard = fl_shard_current();
    snprintf(t->err, sizeof(t->err), "%s", err ? err : "");
    for (int i = 0; results != NULL && i < n && i < TX_MAX; i++) {
        t->st[i] = PQresultStatus(results[i]);
        snprintf(t->tag[i], sizeof(t->tag[i]), "%s", PQcmdStatus(results[i]));
        if (PQntuples(results[i]) > 0 && PQnfields(results[i]) > 0)
            snprintf(t->value[i], sizeof(t->value[i]), "%s", PQgetvalue(results[i], 0, 0));
    }
}

static bool tx_answered(void *arg)
{
    return ((tx_t *)arg)->calls > 0;
}

static fl_db_stmt_t sql_stmt(const char *sql)
{
    return (fl_db_stmt_t){.sql = sql};
}

/* Not inside a transaction block (an aborted one fails the query): two queries, two transactions. */
static void assert_no_open_transaction(loop_t *l, fl_db_t *db)
{
    char first[32], second[32];
    query_value(l, db, "SELECT txid_current()", first, sizeof(first));
    query_value(l, db, "SELECT txid_current()", second, sizeof(second));
    assert_string_not_equal(first, second);
}

/* ---- setup -------------------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    return pg_fixture_setup("db_tx");
}

static int group_teardown(void **state)
{
    (void)state;
    return pg_fixture_teardown();
}

/* ---- transactions ----------------------------------------------------------------------------------------- */

static void tx_commits_every_statement(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE items");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);

    const char *one[] = {"1", "first"}, *two[] = {"2", NULL}, *three[] = {"3", "third"};
    fl_db_stmt_t stmts[] = {
        {"INSERT INTO items VALUES ($1::int, $2)", 2, one, NULL, NULL},
        {"INSERT INTO items VALUES ($1::int, $2)", 2, two, NULL, NULL},
        {"INSERT INTO items VALUES ($1::int, $2)", 2, three, NULL, NULL},
        sql_stmt("SELECT count(*) FROM items"), /* sees the transaction's own rows */
        sql_stmt("UPDATE items SET note = 'second' WHERE note IS NULL"),
        sql_stmt("-- only a comment"),
    };
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, stmts, 6, on_tx, &t), FL_OK);
    assert_int_equal(t.calls, 0); /* never from inside fl_db_transaction */
    assert_true(run_until(&l, tx_answered, &t, 5000));
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.status, FL_OK);
    assert_string_equal(t.err, "");
    assert_int_equal(t.failed_index, -1);
    assert_int_equal(t.n, 6);
    assert_true(t.had_results);
    assert_ptr_equal(t.thread_shard, NULL); /* the test thread runs the loop */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t.st[i], PGRES_COMMAND_OK);
        assert_string_equal(t.tag[i], "INSERT 0 1");
    }
    assert_int_equal(t.st[3], PGRES_TUPLES_OK);
    assert_string_equal(t.value[3], "3");
    assert_string_equal(t.tag[4], "UPDATE 1");
    assert_int_equal(t.st[5], PGRES_EMPTY_QUERY);

    /* Committed, as seen from another connection; and the session is out of the transaction. */
    char *notes = value_of(tx_database(), "SELECT string_agg(id || ':' || note, ',' ORDER BY id) FROM items", NULL);
    assert_string_equal(notes, "1:first,2:second,3:third");
    free(notes);
    assert_no_open_transaction(&l, db);
    fl_db_free(db);
    loop_close(&l);
}

static void tx_failing_statement_commits_nothing(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE items; INSERT INTO items VALUES (100, 'already there')");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);

    fl_db_stmt_t stmts[] = {
        sql_stmt("INSERT INTO items VALUES (101, 'a')"),
        sql_stmt("INSERT INTO items VALUES (102, 'b')"),
        sql_stmt("INSERT INTO items VALUES (100, 'duplicate')"),
        sql_stmt("INSERT INTO items VALUES (103, 'c')"),
    };
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, stmts, 4, on_tx, &t), FL_OK);
    assert_true(run_until(&l, tx_answered, &t, 5000));
    assert_int_equal(t.status, FL_EIO);
    assert_int_equal(t.failed_index, 2);
    assert_int_equal(t.n, 4);
    assert_false(t.had_results);
    assert_string_equal(t.err, "duplicate key value violates unique constraint \"items_pkey\"");
    assert_int_equal(count_of("SELECT count(*) FROM items"), 1);
    assert_true(fl_db_is_up(db));

    /* The connection is not left in the aborted transaction: a query and a transaction work. */
    assert_no_open_transaction(&l, db);
    fl_db_stmt_t good = sql_stmt("INSERT INTO items VALUES (104, 'd')");
    tx_t t2 = {0};
    assert_int_equal(fl_db_transaction(db, &good, 1, on_tx, &t2), FL_OK);
    assert_true(run_until(&l, tx_answered, &t2, 5000));
    assert_int_equal(t2.status, FL_OK);
    assert_int_equal(count_of("SELECT count(*) FROM items"), 2);

    /* A failure at COMMIT (a deferred foreign key) is failed_index -1, and nothing stays either. */
    fl_db_stmt_t orphan[] = {sql_stmt("INSERT INTO items VALUES (105, 'e')"), sql_stmt("INSERT INTO tree VALUES (1, 999)")};
    tx_t t3 = {0};
    assert_int_equal(fl_db_transaction(db, orphan, 2, on_tx, &t3), FL_OK);
    assert_true(run_until(&l, tx_answered, &t3, 5000));
    assert_int_equal(t3.status, FL_EIO);
    assert_int_equal(t3.failed_index, -1);
    assert_non_null(strstr(t3.err, "violates foreign key constraint"));
    assert_int_equal(count_of("SELECT count(*) FROM items WHERE id = 105"), 0);
    assert_int_equal(count_of("SELECT count(*) FROM tree"), 0);
    assert_no_open_transaction(&l, db);
    fl_db_free(db);
    loop_close(&l);
}

static void tx_statement_timeout_commits_nothing(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE items");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.query_timeout_ms = 300;
    fl_db_t *db = open_up(&l, &opts);
    fl_db_stmt_t stmts[] = {
        sql_stmt("INSERT INTO items VALUES (200, 'a')"),
        sql_stmt("SELECT pg_sleep(5)"),
        sql_stmt("INSERT INTO items VALUES (201, 'b')"),
    };
    tx_t t = {0};
    int64_t start = fl_now_mono_ms();
    assert_int_equal(fl_db_transaction(db, stmts, 3, on_tx, &t), FL_OK);
    assert_true(run_until(&l, tx_answered, &t, 4000));
    assert_true(fl_now_mono_ms() - start < 2000);
    assert_int_equal(t.status, FL_ETIMEDOUT);
    assert_int_equal(t.failed_index, 1);
    assert_non_null(strstr(t.err, "statement timeout"));
    assert_int_equal(count_of("SELECT count(*) FROM items"), 0);
    assert_true(fl_db_is_up(db));
    assert_no_open_transaction(&l, db);
    fl_db_free(db);
    loop_close(&l);
}

/* 0..255, then zeros, then 0xff: every byte value and runs of NUL, which text parameters cannot carry. */
static void binary_body(unsigned char *body, size_t len)
{
    for (size_t i = 0; i < len; i++)
        body[i] = i < 256 ? (unsigned char)i : i + 1 == len ? 0xff : 0;
}

static void hex_of(const unsigned char *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", bytes[i]);
    out[2 * len] = '\0';
}

static void bytea_parameters_round_trip_byte_for_byte(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE bodies");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);

    enum { LEN = 300 };
    unsigned char body[LEN];
    char want[2 * LEN + 1];
    binary_body(body, LEN);
    hex_of(body, LEN, want);

    /* In a transaction, beside a text parameter; the copy is taken at once. */
    const char *values[] = {"7", (const char *)body};
    const int lengths[] = {0, LEN}, formats[] = {0, 1};
    fl_db_stmt_t insert = {"INSERT INTO bodies VALUES ($1::int, $2)", 2, values, lengths, formats};
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, &insert, 1, on_tx, &t), FL_OK);
    memset(body, 'x', LEN);
    assert_true(run_until(&l, tx_answered, &t, 5000));
    assert_int_equal(t.status, FL_OK);
    char *stored = value_of(tx_database(), "SELECT length(body) || ' ' || encode(body, 'hex') FROM bodies WHERE id = 7", NULL);
    char expect[2 * LEN + 16];
    snprintf(expect, sizeof(expect), "%d %s", LEN, want);
    assert_string_equal(stored, expect);
    free(stored);

    /* A single query: binary in, text (hex) out; an empty and a NULL binary value too. */
    binary_body(body, LEN);
    const char *three[] = {(const char *)body, "", NULL};
    const int lens3[] = {LEN, 0, 0}, fmts3[] = {1, 1, 1};
    fl_db_stmt_t select = {"SELECT encode($1::bytea, 'hex'), length($2::bytea)::text || coalesce($3::bytea::text, ' null')", 3,
                           three, lens3, fmts3};
    result_t r = {0};
    assert_int_equal(fl_db_query_stmt(db, &select, on_result, &r), FL_OK);
    assert_true(run_until(&l, answered, &r, 5000));
    assert_int_equal(r.status, FL_OK);
    assert_int_equal(strlen(r.value[0]), 127); /* value[] holds the first 127 hex digits */
    assert_memory_equal(r.value[0], want, 127);
    assert_string_equal(r.value[1], "0 null");

    /* Compared on the server, all of it. */
    const char *both[] = {(const char *)body, want};
    const int lens2[] = {LEN, 0}, fmts2[] = {1, 0};
    fl_db_stmt_t same = {"SELECT ($1::bytea = decode($2, 'hex'))::text", 2, both, lens2, fmts2};
    result_t eq = {0};
    assert_int_equal(fl_db_query_stmt(db, &same, on_result, &eq), FL_OK);
    assert_true(run_until(&l, answered, &eq, 5000));
    assert_int_equal(eq.status, FL_OK);
    assert_string_equal(eq.value[0], "true");
    fl_db_free(db);
    loop_close(&l);
}

/* More than the socket buffers hold in both directions: the server answers the first statements
 * while the last are still being written. */
static void tx_larger_than_the_socket_buffers(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE bodies");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);

    enum { N = 32, SIZE = 256 * 1024 };
    char *body = malloc(SIZE), ids[N][8];
    memset(body, 0, SIZE);
    const char *values[N][2];
    static const int lengths[2] = {0, SIZE}, formats[2] = {0, 1};
    fl_db_stmt_t stmts[N + 1];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%d", i);
        values[i][0] = ids[i];
        values[i][1] = body;
        stmts[i] = (fl_db_stmt_t){"INSERT INTO bodies VALUES ($1::int, $2) RETURNING length(body)", 2, values[i], lengths, formats};
    }
    stmts[N] = sql_stmt("SELECT sum(length(body)) FROM bodies");
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, stmts, N + 1, on_tx, &t), FL_OK);
    free(body);
    assert_true(run_until(&l, tx_answered, &t, 20000));
    assert_int_equal(t.status, FL_OK);
    assert_string_equal(t.value[0], "262144");
    assert_int_equal(count_of("SELECT sum(length(body)) FROM bodies"), (long)N * SIZE);
    fl_db_free(db);
    loop_close(&l);
}

static void tx_refusals_never_call_back(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.max_queued = 2;
    opts.health_interval_ms = 60000; /* keep the queue's count exact */
    fl_db_t *db;
    assert_int_equal(fl_db_new(l.shard, &opts, &db), FL_OK);
    fl_db_stmt_t one = sql_stmt("SELECT 1");
    tx_t t = {0};
    /* Not connected yet: refused at once. */
    assert_int_equal(fl_db_transaction(db, &one, 1, on_tx, &t), FL_EUNAVAIL);
    assert_true(run_until(&l, is_up, db, 5000));

    assert_int_equal(fl_db_transaction(db, &one, 0, on_tx, &t), FL_EINVAL);
    assert_int_equal(fl_db_transaction(db, NULL, 1, on_tx, &t), FL_EINVAL);
    fl_db_stmt_t bad[] = {
        {NULL, 0, NULL, NULL, NULL},
        {"SELECT $1", 1, NULL, NULL, NULL},
        {"SELECT $1", -1, NULL, NULL, NULL},
        {"SELECT $1::bytea", 1, (const char *[]){"x"}, NULL, (const int[]){1}},              /* binary without its length */
        {"SELECT $1::bytea", 1, (const char *[]){"x"}, (const int[]){-1}, (const int[]){1}}, /* negative length */
        {"SELECT $1", 1, (const char *[]){"x"}, NULL, (const int[]){2}},                     /* no such format */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fl_db_stmt_t pair[] = {one, bad[i]};
        assert_int_equal(fl_db_transaction(db, pair, 2, on_tx, &t), FL_EINVAL);
        if (bad[i].sql != NULL)
            assert_int_equal(fl_db_query_stmt(db, &bad[i], on_result, NULL), FL_EINVAL);
    }
    /* A binary NULL needs no length. */
    fl_db_stmt_t null_binary = {"SELECT $1::bytea IS NULL", 1, (const char *[]){NULL}, NULL, (const int[]){1}};
    result_t nb = {0};
    assert_int_equal(fl_db_query_stmt(db, &null_binary, on_result, &nb), FL_OK);

    fl_alloc_fail_after(0);
    assert_int_equal(fl_db_transaction(db, &one, 1, on_tx, &t), FL_ENOMEM);
    fl_alloc_fail_after(-1);

    /* max_queued counts a transaction as one request. */
    tx_t queued = {0};
    assert_int_equal(fl_db_transaction(db, (fl_db_stmt_t[]){one, one, one}, 3, on_tx, &queued), FL_OK);
    assert_int_equal(fl_db_transaction(db, &one, 1, on_tx, &t), FL_EFULL);
    assert_true(run_until(&l, tx_answered, &queued, 5000));
    assert_int_equal(queued.status, FL_OK);
    assert_true(run_until(&l, answered, &nb, 5000));
    assert_string_equal(nb.value[0], "t");

    /* fl_db_free with a transaction in flight and one queued: FL_ECLOSED, once each. */
    tx_t inflight = {0}, waiting = {0};
    fl_db_stmt_t slow = sql_stmt("SELECT pg_sleep(10)");
    assert_int_equal(fl_db_transaction(db, &slow, 1, on_tx, &inflight), FL_OK);
    run_for(&l, 50);
    assert_int_equal(fl_db_transaction(db, &one, 1, on_tx, &waiting), FL_OK);
    fl_db_free(db);
    assert_int_equal(inflight.calls, 1);
    assert_int_equal(inflight.status, FL_ECLOSED);
    assert_int_equal(waiting.calls, 1);
    assert_int_equal(waiting.status, FL_ECLOSED);
    assert_int_equal(t.calls, 0);
    loop_close(&l);
}

static void tx_in_flight_when_the_backend_is_killed(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE items");
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.reconnect_min_ms = 200; /* long enough to see it down */
    opts.reconnect_max_ms = 400;
    fl_db_t *db = open_up(&l, &opts);
    int pid = backend_pid(&l, db);

    fl_db_stmt_t stmts[] = {
        sql_stmt("INSERT INTO items VALUES (300, 'a')"),
        sql_stmt("SELECT pg_sleep(30)"),
        sql_stmt("INSERT INTO items VALUES (301, 'b')"),
    };
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, stmts, 3, on_tx, &t), FL_OK);
    run_for(&l, 150); /* in pg_sleep */
    terminate_backend(pid);
    assert_true(run_until(&l, tx_answered, &t, 5000));
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.status, FL_EUNAVAIL);
    assert_int_equal(t.failed_index, -1);
    assert_false(t.had_results);
    assert_non_null(strstr(t.err, "terminating connection due to administrator command"));

    /* Down: refused at once; then back, on a new backend, and nothing of the transaction stayed. */
    assert_true(run_until(&l, is_down, db, 5000));
    tx_t refused = {0};
    int64_t start = fl_now_mono_ms();
    assert_int_equal(fl_db_transaction(db, stmts, 1, on_tx, &refused), FL_EUNAVAIL);
    assert_true(fl_now_mono_ms() - start < 50);
    assert_true(run_until(&l, is_up, db, 5000));
    assert_int_not_equal(backend_pid(&l, db), pid);
    assert_int_equal(count_of("SELECT count(*) FROM items"), 0);
    tx_t again = {0};
    assert_int_equal(fl_db_transaction(db, stmts, 1, on_tx, &again), FL_OK);
    assert_true(run_until(&l, tx_answered, &again, 5000));
    assert_int_equal(again.status, FL_OK);
    assert_int_equal(count_of("SELECT count(*) FROM items"), 1);
    run_for(&l, 100);
    assert_int_equal(t.calls, 1);
    assert_int_equal(refused.calls, 0);
    fl_db_free(db);
    loop_close(&l);
}

/* ---- the round trips a transaction saves (printed, not asserted) ---------------------------------------- */

/* A TCP proxy in front of PostgreSQL's Unix socket that holds every chunk `delay_us` before passing
 * it on, in each direction: a network with a round trip of 2 * delay_us. One client at a time. */
typedef struct {
    int listen_fd, port;
    char target[108];
    int delay_us;
    atomic_bool stop;
    pthread_t thread;
} proxy_t;

#define PROXY_QUEUE 256

typedef struct {
    char *data;
    size_t len;
    int64_t due_us;
} chunk_t;

typedef struct {
    chunk_t q[PROXY_QUEUE];
    int head, count;
} chunks_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void proxy_pair(proxy_t *p, int client, int server)
{
    int fds[2] = {client, server};
    chunks_t queues[2] = {{.head = 0}};
    bool open = true;
    while (open && !atomic_load(&p->stop)) {
        int64_t now = now_us(), wait_us = 100000;
        for (int d = 0; d < 2; d++) {
            chunks_t *q = &queues[d];
            while (open && q->count > 0 && q->q[q->head].due_us <= now) {
                chunk_t *c = &q->q[q->head];
                open = write_all(fds[1 - d], c->data, c->len);
                free(c->data);
                q->head = (q->head + 1) % PROXY_QUEUE;
                q->count--;
            }
            if (q->count > 0 && q->q[q->head].due_us - now < wait_us)
                wait_us = q->q[q->head].due_us - now;
        }
        struct pollfd pfd[2];
        for (int d = 0; d < 2; d++)
            pfd[d] = (struct pollfd){.fd = fds[d], .events = queues[d].count < PROXY_QUEUE ? POLLIN : 0};
        struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
        if (!open || ppoll(pfd, 2, &ts, NULL) < 0)
            break;
        for (int d = 0; d < 2 && open; d++) {
            if (!(pfd[d].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char *buf = malloc(65536);
            ssize_t n = read(fds[d], buf, 65536);
            if (n <= 0) {
                free(buf);
                open = false;
                break;
            }
            chunks_t *q = &queues[d];
            q->q[(q->head + q->count) % PROXY_QUEUE] = (chunk_t){buf, (size_t)n, now_us() + p->delay_us};
            q->count++;
        }
    }
    for (int d = 0; d < 2; d++)
        for (; queues[d].count > 0; queues[d].count--, queues[d].head = (queues[d].head + 1) % PROXY_QUEUE)
            free(queues[d].q[queues[d].head].data);
    close(client);
    close(server);
}

static void *proxy_main(void *arg)
{
    proxy_t *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd pfd = {.fd = p->listen_fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int client = accept(p->listen_fd, NULL, NULL);
        if (client < 0)
            continue;
        int one = 1; /* as libpq does on its side: without it Nagle holds a second small answer for a delayed ACK */
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int server = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->target);
        if (connect(server, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(server);
            close(client);
            continue;
        }
        proxy_pair(p, client, server);
    }
    return NULL;
}

/* false when PostgreSQL is not on a Unix socket (then there is nothing to measure against). */
static bool proxy_start(proxy_t *p, int delay_us)
{
    PGconn *pg = connect_to(admin_url);
    const char *host = PQhost(pg), *port = PQport(pg);
    bool unix_socket = host != NULL && host[0] == '/';
    if (unix_socket)
        snprintf(p->target, sizeof(p->target), "%s/.s.PGSQL.%s", host, port);
    PQfinish(pg);
    if (!unix_socket)
        return false;
    p->delay_us = delay_us;
    atomic_init(&p->stop, false);
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p->listen_fd, 8), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(p->listen_fd, (struct sockaddr *)&sa, &len), 0);
    p->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&p->thread, NULL, proxy_main, p), 0);
    return true;
}

static void proxy_stop(proxy_t *p)
{
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
}

#define ROUNDS 100

typedef struct {
    int done, ok;
} seq_t;

static void on_seq(const PGresult *res, int status, const char *err, void *arg)
{
    (void)res;
    (void)err;
    seq_t *s = arg;
    s->done++;
    s->ok += status == FL_OK;
}

static bool seq_done(void *arg)
{
    return ((seq_t *)arg)->done == ROUNDS;
}

/* Milliseconds for ROUNDS inserts: as ROUNDS queries (each its own round trip), then as one
 * transaction of ROUNDS statements. */
static void time_inserts(loop_t *l, fl_db_t *db, int base, double *queries_ms, double *tx_ms)
{
    char ids[ROUNDS][16];
    const char *values[ROUNDS][1];
    fl_db_stmt_t stmts[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(ids[i], sizeof(ids[i]), "%d", base + i);
        values[i][0] = ids[i];
        stmts[i] = (fl_db_stmt_t){"INSERT INTO items VALUES ($1::int, 'timed')", 1, values[i], NULL, NULL};
    }
    seq_t s = {0};
    int64_t start = now_us();
    for (int i = 0; i < ROUNDS; i++)
        assert_int_equal(fl_db_query(db, stmts[i].sql, 1, values[i], on_seq, &s), FL_OK);
    assert_true(run_until(l, seq_done, &s, 30000));
    *queries_ms = (double)(now_us() - start) / 1000.0;
    assert_int_equal(s.ok, ROUNDS);

    for (int i = 0; i < ROUNDS; i++)
        snprintf(ids[i], sizeof(ids[i]), "%d", base + ROUNDS + i);
    tx_t t = {0};
    start = now_us();
    assert_int_equal(fl_db_transaction(db, stmts, ROUNDS, on_tx, &t), FL_OK);
    assert_true(run_until(l, tx_answered, &t, 30000));
    *tx_ms = (double)(now_us() - start) / 1000.0;
    assert_int_equal(t.status, FL_OK);
}

/* Commits are asynchronous here (synchronous_commit=off), so that the times compare round trips
 * and not WAL flushes (which a transaction also saves: one instead of ROUNDS). */
static void tx_costs_one_round_trip(void **state)
{
    (void)state;
    exec_on(tx_database(), "TRUNCATE items");
    loop_t l;
    loop_open(&l);
    char conninfo[2600];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c synchronous_commit=off'", tx_database());
    fl_db_options_t opts = options(conninfo);
    opts.health_interval_ms = 60000; /* no health query in the way */
    fl_db_t *db = open_up(&l, &opts);
    run_for(&l, 50);
    double q_ms, t_ms;
    time_inserts(&l, db, 0, &q_ms, &t_ms);
    fprintf(stderr, "test_db_tx: %d inserts over the Unix socket: %d queries %.2f ms, one transaction %.2f ms\n", ROUNDS, ROUNDS,
            q_ms, t_ms);
    fl_db_free(db);

    proxy_t p = {.port = 0};
    bool proxied = proxy_start(&p, 1000);
    if (proxied) {
        snprintf(
            conninfo, sizeof(conninfo),
            "%s options='-c synchronous_commit=off' host=127.0.0.1 hostaddr=127.0.0.1 port=%d sslmode=disable gssencmode=disable",
            tx_database(), p.port);
        db = open_up(&l, &opts);
        run_for(&l, 50);
        int64_t start = now_us();
        backend_pid(&l, db);
        double rtt_ms = (double)(now_us() - start) / 1000.0;
        time_inserts(&l, db, 1000, &q_ms, &t_ms);
        fprintf(stderr,
                "test_db_tx: %d inserts through a proxy adding a 2 ms round trip (one query: %.2f ms): %d queries %.1f ms "
                "(%.1f query times), one transaction %.1f ms (%.1f query times)\n",
                ROUNDS, rtt_ms, ROUNDS, q_ms, q_ms / rtt_ms, t_ms, t_ms / rtt_ms);
        fl_db_free(db);
        proxy_stop(&p);
    } else {
        fprintf(stderr, "test_db_tx: PostgreSQL is not on a Unix socket: no measurement through the latency proxy\n");
    }
    assert_int_equal(count_of("SELECT count(*) FROM items WHERE note = 'timed'"), proxied ? 4 * ROUNDS : 2 * ROUNDS);
    loop_close(&l);
}

/* ---- LISTEN/NOTIFY ---------------------------------------------------------------------------------------- */

typedef struct {
    int calls;
    char channel[80];
    char payload[128];
    fl_shard_t *thread_shard;
    fl_db_t *free_db;     /* fl_db_free it from the callback */
    fl_db_t *unlisten_db; /* or unlisten `other` from the callback */
    void *other;
} heard_t;

static void on_note(const char *channel, const char *payload, void *arg)
{
    heard_t *h = arg;
    h->calls++;
    snprintf(h->channel, sizeof(h->channel), "%s", channel);
    snprintf(h->payload, sizeof(h->payload), "%s", payload);
    h->thread_shard = fl_shard_current();
    if (h->unlisten_db != NULL)
        assert_int_equal(fl_db_unlisten(h->unlisten_db, channel, on_note, h->other), FL_OK);
    if (h->free_db != NULL)
        fl_db_free(h->free_db);
}

static bool heard(void *arg)
{
    return ((heard_t *)arg)->calls > 0;
}

static void notify(const char *channel, const char *payload)
{
    PGconn *pg = connect_to(tx_database());
    const char *values[] = {channel, payload};
    PGresult *res = PQexecParams(pg, "SELECT pg_notify($1, $2)", 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("pg_notify: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

static void listening_channels(loop_t *l, fl_db_t *db, char *out, size_t outlen)
{
    query_value(l, db, "SELECT coalesce(string_agg(c, ',' ORDER BY c COLLATE \"C\"), '') FROM pg_listening_channels() c", out,
                outlen);
}

static void listener_hears_notifications_while_idle(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.health_interval_ms = 60000; /* nothing in flight but what the test sends */
    fl_db_t *db = open_up(&l, &opts);
    heard_t h = {0}, odd = {0};
    assert_int_equal(fl_db_listen(db, "jobs_audit", on_note, &h), FL_OK);
    assert_int_equal(fl_db_listen(db, "Odd \"Name\"", on_note, &odd), FL_OK); /* quoted, case kept */

    /* The LISTENs run before any query queued after them. */
    char channels[256];
    listening_channels(&l, db, channels, sizeof(channels));
    assert_string_equal(channels, "Odd \"Name\",jobs_audit");

    run_for(&l, 50);
    notify("jobs_audit", "audit:42");
    assert_true(run_until(&l, heard, &h, 5000));
    assert_int_equal(h.calls, 1);
    assert_string_equal(h.channel, "jobs_audit");
    assert_string_equal(h.payload, "audit:42");
    assert_ptr_equal(h.thread_shard, NULL);

    notify("Odd \"Name\"", "");
    notify("someone_else", "not for us");
    assert_true(run_until(&l, heard, &odd, 5000));
    assert_string_equal(odd.channel, "Odd \"Name\"");
    assert_string_equal(odd.payload, "");
    run_for(&l, 100);
    assert_int_equal(h.calls, 1);
    assert_int_equal(odd.calls, 1);

    /* After fl_db_unlisten: UNLISTEN, and no more calls. */
    assert_int_equal(fl_db_unlisten(db, "jobs_audit", on_note, &odd), FL_ENOTFOUND);
    assert_int_equal(fl_db_unlisten(db, "jobs_audit", on_note, &h), FL_OK);
    listening_channels(&l, db, channels, sizeof(channels));
    assert_string_equal(channels, "Odd \"Name\"");
    notify("jobs_audit", "late");
    run_for(&l, 200);
    assert_int_equal(h.calls, 1);
    fl_db_free(db);
    loop_close(&l);
}

static void listener_limits(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);
    heard_t h[FL_DB_MAX_LISTENERS + 1];
    memset(h, 0, sizeof(h));
    char longest[64], too_long[65];
    memset(longest, 'c', 63);
    longest[63] = '\0';
    memset(too_long, 'c', 64);
    too_long[64] = '\0';
    assert_int_equal(fl_db_listen(db, "", on_note, &h[0]), FL_EINVAL);
    assert_int_equal(fl_db_listen(db, too_long, on_note, &h[0]), FL_EINVAL);
    assert_int_equal(fl_db_listen(db, longest, on_note, &h[0]), FL_OK);
    for (int i = 1; i < FL_DB_MAX_LISTENERS; i++)
        assert_int_equal(fl_db_listen(db, "shared", on_note, &h[i]), FL_OK);
    assert_int_equal(fl_db_listen(db, "one_more", on_note, &h[FL_DB_MAX_LISTENERS]), FL_EFULL);
    fl_alloc_fail_after(0);
    assert_int_equal(fl_db_unlisten(db, longest, on_note, &h[0]), FL_OK); /* the UNLISTEN cannot be queued: logged */
    fl_alloc_fail_after(0);
    assert_int_equal(fl_db_listen(db, "fresh", on_note, &h[0]), FL_ENOMEM);
    fl_alloc_fail_after(-1);

    /* Every registration on a channel hears each notification once. */
    char channels[256];
    listening_channels(&l, db, channels, sizeof(channels));
    assert_non_null(strstr(channels, "shared"));
    notify("shared", "all");
    for (int i = 1; i < FL_DB_MAX_LISTENERS; i++)
        assert_true(run_until(&l, heard, &h[i], 5000));
    run_for(&l, 100);
    for (int i = 1; i < FL_DB_MAX_LISTENERS; i++)
        assert_int_equal(h[i].calls, 1);
    /* A notification on a channel nobody listens to any more (its UNLISTEN was lost) is dropped. */
    notify(longest, "dropped");
    run_for(&l, 100);
    assert_int_equal(h[0].calls, 0);
    fl_db_free(db);
    loop_close(&l);
}

/* The server sends a notification that arrives during a query right after the query's result,
 * in the same read: both are delivered. */
static void notification_during_a_long_query_is_delivered(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.health_interval_ms = 60000;
    fl_db_t *db = open_up(&l, &opts);
    heard_t h = {0};
    assert_int_equal(fl_db_listen(db, "busy", on_note, &h), FL_OK);

    result_t slow = {0};
    assert_int_equal(fl_db_query(db, "SELECT pg_sleep(0.5)", 0, NULL, on_result, &slow), FL_OK);
    run_for(&l, 150);
    assert_int_equal(slow.calls, 0);
    notify("busy", "during a query");
    assert_true(run_until(&l, answered, &slow, 5000));
    assert_int_equal(slow.status, FL_OK);
    assert_true(run_until(&l, heard, &h, 1000));
    assert_string_equal(h.payload, "during a query");

    /* The same during a transaction. */
    h.calls = 0;
    fl_db_stmt_t stmts[] = {sql_stmt("SELECT 1"), sql_stmt("SELECT pg_sleep(0.5)"), sql_stmt("SELECT 2")};
    tx_t t = {0};
    assert_int_equal(fl_db_transaction(db, stmts, 3, on_tx, &t), FL_OK);
    run_for(&l, 150);
    notify("busy", "during a transaction");
    assert_true(run_until(&l, tx_answered, &t, 5000));
    assert_int_equal(t.status, FL_OK);
    assert_true(run_until(&l, heard, &h, 1000));
    assert_string_equal(h.payload, "during a transaction");

    /* A notification sent by a transaction reaches a listener on the same connection once it
     * commits, and never when it fails. */
    h.calls = 0;
    fl_db_stmt_t sends[] = {sql_stmt("SELECT pg_notify('busy', 'committed')")};
    tx_t t2 = {0};
    assert_int_equal(fl_db_transaction(db, sends, 1, on_tx, &t2), FL_OK);
    assert_true(run_until(&l, heard, &h, 5000));
    assert_int_equal(t2.status, FL_OK);
    assert_string_equal(h.payload, "committed");
    h.calls = 0;
    fl_db_stmt_t fails[] = {sql_stmt("SELECT pg_notify('busy', 'rolled back')"), sql_stmt("SELECT 1/0")};
    tx_t t3 = {0};
    assert_int_equal(fl_db_transaction(db, fails, 2, on_tx, &t3), FL_OK);
    assert_true(run_until(&l, tx_answered, &t3, 5000));
    assert_int_equal(t3.status, FL_EIO);
    assert_int_equal(t3.failed_index, 1);
    assert_string_equal(t3.err, "division by zero");
    run_for(&l, 200);
    assert_int_equal(h.calls, 0);
    fl_db_free(db);
    loop_close(&l);
}

static void listener_survives_a_reconnect(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    opts.reconnect_min_ms = 200;
    opts.reconnect_max_ms = 400;
    fl_db_t *db;
    assert_int_equal(fl_db_new(l.shard, &opts, &db), FL_OK);
    heard_t h = {0};
    assert_int_equal(fl_db_listen(db, "again", on_note, &h), FL_OK); /* not connected yet: LISTEN on connect */
    assert_true(run_until(&l, is_up, db, 5000));
    char channels[256];
    listening_channels(&l, db, channels, sizeof(channels));
    assert_string_equal(channels, "again");
    notify("again", "first");
    assert_true(run_until(&l, heard, &h, 5000));
    assert_string_equal(h.payload, "first");

    int pid = backend_pid(&l, db);
    terminate_backend(pid);
    assert_true(run_until(&l, is_down, db, 5000));
    assert_true(run_until(&l, is_up, db, 5000));
    assert_int_not_equal(backend_pid(&l, db), pid);
    listening_channels(&l, db, channels, sizeof(channels));
    assert_string_equal(channels, "again");
    h.calls = 0;
    notify("again", "after the reconnect");
    assert_true(run_until(&l, heard, &h, 5000));
    assert_int_equal(h.calls, 1);
    assert_string_equal(h.payload, "after the reconnect");
    fl_db_free(db);
    loop_close(&l);
}

static void listener_callbacks_may_unlisten_or_free(void **state)
{
    (void)state;
    loop_t l;
    loop_open(&l);
    fl_db_options_t opts = options(tx_database());
    fl_db_t *db = open_up(&l, &opts);
    /* a and b on one channel; whichever runs first removes the other, which is then not called. */
    heard_t a = {0}, b = {0};
    a.unlisten_db = db;
    a.other = &b;
    b.unlisten_db = db;
    b.other = &a;
    assert_int_equal(fl_db_listen(db, "pair", on_note, &a), FL_OK);
    assert_int_equal(fl_db_listen(db, "pair", on_note, &b), FL_OK);
    char channels[64];
    listening_channels(&l, db, channels, sizeof(channels));
    notify("pair", "x");
    run_for(&l, 300);
    assert_int_equal(a.calls + b.calls, 1);
    listening_channels(&l, db, channels, sizeof(channels));
    assert_string_equal(channels, "pair"); /* the survivor still listens */

    /* Freeing the db from a listener: two notifications arrive, the second is never delivered. */
    heard_t f = {.free_db = db};
    assert_int_equal(fl_db_listen(db, "last", on_note, &f), FL_OK);
    listening_channels(&l, db, channels, sizeof(channels));
    PGconn *pg = connect_to(tx_database());
    exec_ok(pg, "BEGIN; SELECT pg_notify('last', '1'); SELECT pg_notify('last', '2'); COMMIT");
    PQfinish(pg);
    assert_true(run_until(&l, heard, &f, 5000));
    run_for(&l, 100); /* nothing of the freed db runs (ASan) */
    assert_int_equal(f.calls, 1);
    loop_close(&l);
}

/* The real arrangement: the db on a running shard; the test thread only posts and waits. */
typedef struct {
    fl_shard_t *shard;
    fl_db_options_t opts;
    fl_db_t *db;
    atomic_int phase; /* 1 created, 2 listening, 3 committed, 4 freed */
    atomic_int heard_calls;
    int create_rc, listen_rc, tx_rc;
    heard_t heard;
    tx_t tx;
} on_shard_t;

static void shard_heard(const char *channel, const char *payload, void *arg)
{
    on_shard_t *t = arg;
    on_note(channel, payload, &t->heard);
    atomic_fetch_add(&t->heard_calls, 1);
}

static void shard_create(void *arg)
{
    on_shard_t *t = arg;
    t->create_rc = fl_db_new(t->shard, &t->opts, &t->db);
    atomic_store(&t->phase, 1);
}

static void shard_listened(const PGresult *res, int status, const char *err, void *arg)
{
    (void)res;
    (void)status;
    (void)err;
    atomic_store(&((on_shard_t *)arg)->phase, 2);
}

static void shard_listen(void *arg)
{
    on_shard_t *t = arg;
    t->listen_rc = fl_db_listen(t->db, "on_shard", shard_heard, t);
    /* answered once the LISTEN has run */
    if (t->listen_rc != FL_OK || fl_db_query(t->db, "SELECT 1", 0, NULL, shard_listened, t) != FL_OK)
        atomic_store(&t->phase, 2);
}

static void shard_committed(PGresult *const *results, int n, int status, const char *err, int failed_index, void *arg)
{
    on_shard_t *t = arg;
    on_tx(results, n, status, err, failed_index, &t->tx);
    atomic_store(&t->phase, 3);
}

static void shard_transaction(void *arg)
{
    on_shard_t *t = arg;
    static const fl_db_stmt_t stmts[] = {{"SELECT pg_notify('on_shard', 'from the shard')", 0, NULL, NULL, NULL},
                                         {"SELECT 40 + 2", 0, NULL, NULL, NULL}};
    t->tx_rc = fl_db_transaction(t->db, stmts, 2, shard_committed, t);
    if (t->tx_rc != FL_OK)
        atomic_store(&t->phase, 3);
}

static void shard_free(void *arg)
{
    on_shard_t *t = arg;
    fl_db_free(t->db);
    atomic_store(&t->phase, 4);
}

static bool wait_for(atomic_int *v, int at_least, int timeout_ms)
{
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    while (atomic_load(v) < at_least) {
        if (fl_now_mono_ms() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

static void tx_and_listen_on_a_running_shard(void **state)
{
    (void)state;
    fl_runtime_t *rt;
    assert_int_equal(fl_runtime_new(1, &rt), FL_OK);
    on_shard_t t = {.shard = fl_runtime_shard(rt, 0), .opts = options(tx_database())};
    atomic_init(&t.phase, 0);
    atomic_init(&t.heard_calls, 0);
    assert_int_equal(fl_runtime_start(rt), FL_OK);
    assert_int_equal(fl_shard_post(t.shard, shard_create, &t), FL_OK);
    assert_true(wait_for(&t.phase, 1, 5000));
    assert_int_equal(t.create_rc, FL_OK);
    int64_t deadline = fl_now_mono_ms() + 5000;
    while (!fl_db_is_up(t.db) && fl_now_mono_ms() < deadline)
        usleep(1000);
    assert_int_equal(fl_shard_post(t.shard, shard_listen, &t), FL_OK);
    assert_true(wait_for(&t.phase, 2, 5000));
    assert_int_equal(t.listen_rc, FL_OK);
    assert_int_equal(fl_shard_post(t.shard, shard_transaction, &t), FL_OK);
    assert_true(wait_for(&t.phase, 3, 5000));
    assert_int_equal(t.tx_rc, FL_OK);
    assert_int_equal(t.tx.status, FL_OK);
    assert_string_equal(t.tx.value[1], "42");
    assert_ptr_equal(t.tx.thread_shard, t.shard);
    assert_true(wait_for(&t.heard_calls, 1, 5000));
    assert_int_equal(fl_shard_post(t.shard, shard_free, &t), FL_OK);
    assert_true(wait_for(&t.phase, 4, 5000));
    assert_int_equal(atomic_load(&t.heard_calls), 1);
    assert_string_equal(t.heard.payload, "from the shard");
    assert_ptr_equal(t.heard.thread_shard, t.shard);
    fl_runtime_stop(rt);
    fl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tx_commits_every_statement),
        cmocka_unit_test(tx_failing_statement_commits_nothing),
        cmocka_unit_test(tx_statement_timeout_commits_nothing),
        cmocka_unit_test(bytea_parameters_round_trip_byte_for_byte),
        cmocka_unit_test(tx_larger_than_the_socket_buffers),
        cmocka_unit_test(tx_refusals_never_call_back),
        cmocka_unit_test(tx_in_flight_when_the_backend_is_killed),
        cmocka_unit_test(tx_costs_one_round_trip),
        cmocka_unit_test(listener_hears_notifications_while_idle),
        cmocka_unit_test(listener_limits),
        cmocka_unit_test(notification_during_a_long_query_is_delivered),
        cmocka_unit_test(listener_survives_a_reconnect),
        cmocka_unit_test(listener_callbacks_may_unlisten_or_free),
        cmocka_unit_test(tx_and_listen_on_a_running_shard),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
