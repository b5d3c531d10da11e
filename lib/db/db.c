/* fl_db_t: the query queue, the health check and the result callbacks, over one connection
 * (conn.c). Callbacks run from one place, settle(), at the end of every event handler, so a
 * callback may queue more queries or free the db without pulling the floor from under us. */
#include "db_internal.h"

#include <event2/event.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_RECONNECT_MIN_MS   100
#define DEFAULT_RECONNECT_MAX_MS   10000
#define DEFAULT_HEALTH_INTERVAL_MS 1000
#define DEFAULT_QUERY_TIMEOUT_MS   30000
#define DEFAULT_MAX_QUEUED         1024
/* The server's statement_timeout ends a slow query first; only a connection that stopped
 * answering altogether outlives this margin. */
#define WATCHDOG_MARGIN_MS 2000

#define HEALTH_SQL "SELECT coalesce(max(version), 0) FROM schema_migrations"

struct fl_db {
    fl_shard_t *shard;
    struct event_base *base;
    fl_db_options_t opts; /* defaults filled in; opts.conninfo points at conninfo */
    char *conninfo;
    db_params_t params;
    db_conn_t *conn;
    int nup;          /* connections up */
    db_queue_t queue; /* waiting for a connection */
    db_queue_t done;  /* finished, callback not run yet */
    struct event *dispatch_ev, *health_ev, *expire_ev;
    int64_t expire_at; /* when expire_ev fires; INT64_MAX: not armed */
    bool health_pending, health_failing;
    bool delivering, closing;
    atomic_bool up;
    atomic_int schema_version;
};

static void settle(fl_db_t *db);

static void set_timeout(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(ev, &tv);
}

static void arm_expire(fl_db_t *db, int64_t at)
{
    if (at >= db->expire_at)
        return;
    db->expire_at = at;
    set_timeout(db->expire_ev, at - fl_now_mono_ms());
}

static void finish_all(fl_db_t *db, db_queue_t *q, int status, const char *err)
{
    for (db_request_t *r; (r = db_queue_pop(q)) != NULL;) {
        db_request_finish(r, status, NULL, err);
        db_queue_push(&db->done, r);
    }
}

static void schedule_health(fl_db_t *db)
{
    if (db->health_pending || db->closing)
        return;
    db_request_t *r = db_request_new(HEALTH_SQL, 0, NULL);
    if (r == NULL)
        return; /* the next tick tries again */
    r->health = true;
    r->deadline_ms = fl_now_mono_ms() + db->opts.connect_timeout_ms;
    r->run_timeout_ms = db->opts.connect_timeout_ms;
    db_queue_push_front(&db->queue, r);
    arm_expire(db, r->deadline_ms);
    db->health_pending = true;
}

static void health_result(fl_db_t *db, const db_request_t *r)
{
    db->health_pending = false;
    int version = -1;
    if (r->status == FL_OK && PQntuples(r->res) == 1) {
        version = atoi(PQgetvalue(r->res, 0, 0));
    } else if (r->res != NULL) {
        const char *state = PQresultErrorField(r->res, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, "42P01") == 0)
            version = 0; /* undefined_table: not migrated yet */
    }
    if (version >= 0) {
        int previous = atomic_exchange(&db->schema_version, version);
        if (previous != version)
            fl_log(FL_LOG_INFO, "db.schema_version", FL_MSG("database schema version"), FL_INT("version", version),
                   FL_INT("previous", previous));
        db->health_failing = false;
        return;
    }
    if (r->status == FL_EUNAVAIL || r->status == FL_ECLOSED || db->health_failing)
        return; /* the connection's own log lines tell that story */
    db->health_failing = true;
    const char *err = r->err[0] || r->res == NULL ? r->err : PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY);
    fl_log(FL_LOG_WARN, "db.health_failed", FL_MSG("the health query failed"), FL_STR("status", fl_strerror(r->status)),
           FL_STR("reason", err ? err : ""));
}

static void run_callback(fl_db_t *db, db_request_t *r)
{
    if (r->health) {
        health_result(db, r);
        return;
    }
    if (r->status == FL_OK) {
        r->cb(r->res, FL_OK, NULL, r->arg);
        return;
    }
    const char *err = r->err;
    if (err[0] == '\0' && r->res != NULL) {
        err = PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY);
        if (err == NULL)
            err = PQresultErrorMessage(r->res);
    }
    r->cb(NULL, r->status, err, r->arg);
}

/* Fails everything still pending with FL_ECLOSED, runs the callbacks, frees the db. */
static void destroy(fl_db_t *db)
{
    db->closing = true;
    db->delivering = true;
    atomic_store(&db->up, false);
    if (db->conn != NULL) {
        db_request_t *r = db_conn_take_inflight(db->conn);
        if (r != NULL) {
            db_request_finish(r, FL_ECLOSED, NULL, "the database connection was closed");
            db_queue_push(&db->done, r);
        }
        db_conn_free(db->conn);
    }
    finish_all(db, &db->queue, FL_ECLOSED, "the database connection was closed");
    if (db->dispatch_ev != NULL)
        event_free(db->dispatch_ev);
    if (db->health_ev != NULL)
        event_free(db->health_ev);
    if (db->expire_ev != NULL)
        event_free(db->expire_ev);
    for (db_request_t *r; (r = db_queue_pop(&db->done)) != NULL;) {
        run_callback(db, r);
        db_request_free(r);
    }
    db_params_free(&db->params);
    fl_free(db->conninfo);
    fl_free(db);
}

static void dispatch(fl_db_t *db)
{
    while (db->queue.head != NULL && db->conn != NULL && db_conn_ready(db->conn))
        db_conn_send(db->conn, db_queue_pop(&db->queue));
}

static void deliver(fl_db_t *db)
{
    db->delivering = true;
    for (db_request_t *r; !db->closing && (r = db_queue_pop(&db->done)) != NULL;) {
        run_callback(db, r);
        db_request_free(r);
    }
    db->delivering = false;
}

/* The end of every event handler: send what can be sent, run the callbacks of what finished,
 * and free the db if a callback asked for that. */
static void settle(fl_db_t *db)
{
    if (db->delivering)
        return; /* called back from inside a callback: the outer settle carries on */
    for (;;) {
        dispatch(db);
        if (db->done.head == NULL)
            return;
        deliver(db);
        if (db->closing) {
            destroy(db);
            return;
        }
    }
}

/* ---- what the connection tells us (no callbacks run here) ---- */

static void conn_state(void *owner, db_conn_t *c, bool up)
{
    (void)c;
    fl_db_t *db = owner;
    db->nup += up ? 1 : -1;
    atomic_store(&db->up, db->nup > 0);
    if (up)
        schedule_health(db); /* the schema version is known right after each connect */
    else if (db->nup == 0)
        finish_all(db, &db->queue, FL_EUNAVAIL, "the connection to the database was lost");
}

static void conn_done(void *owner, db_request_t *r)
{
    fl_db_t *db = owner;
    db_queue_push(&db->done, r);
}

static void conn_settle(void *owner)
{
    settle(owner);
}

static const db_conn_ops_t conn_ops = {.state = conn_state, .done = conn_done, .settle = conn_settle};

/* ---- timers ---- */

static void on_dispatch(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    settle(arg);
}

static void on_health_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_db_t *db = arg;
    if (db->nup > 0)
        schedule_health(db);
    settle(db);
}

static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_db_t *db = arg;
    db->expire_at = INT64_MAX;
    db_queue_t expired = {0};
    int64_t next = db_queue_expire(&db->queue, fl_now_mono_ms(), &expired);
    finish_all(db, &expired, FL_ETIMEDOUT, "waited longer than the query timeout for a database connection");
    if (next != INT64_MAX)
        arm_expire(db, next);
    settle(db);
}

/* ---- the API ---- */

static int or_default(int value, int def)
{
    return value > 0 ? value : def;
}

int fl_db_new(fl_shard_t *shard, const fl_db_options_t *opts, fl_db_t **out)
{
    fl_assert(shard != NULL && opts != NULL && out != NULL);
    *out = NULL;
    fl_db_t *db = fl_calloc(1, sizeof(*db));
    if (db == NULL)
        return FL_ENOMEM;
    db->shard = shard;
    db->base = fl_shard_base(shard);
    db->opts = *opts;
    db->opts.connect_timeout_ms = or_default(opts->connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    db->opts.reconnect_min_ms = or_default(opts->reconnect_min_ms, DEFAULT_RECONNECT_MIN_MS);
    db->opts.reconnect_max_ms = or_default(opts->reconnect_max_ms, DEFAULT_RECONNECT_MAX_MS);
    if (db->opts.reconnect_max_ms < db->opts.reconnect_min_ms)
        db->opts.reconnect_max_ms = db->opts.reconnect_min_ms;
    db->opts.health_interval_ms = or_default(opts->health_interval_ms, DEFAULT_HEALTH_INTERVAL_MS);
    db->opts.query_timeout_ms = or_default(opts->query_timeout_ms, DEFAULT_QUERY_TIMEOUT_MS);
    db->opts.max_queued = or_default(opts->max_queued, DEFAULT_MAX_QUEUED);
    db->expire_at = INT64_MAX;
    atomic_init(&db->up, false);
    atomic_init(&db->schema_version, -1);

    db->conninfo = fl_strdup(opts->conninfo != NULL ? opts->conninfo : "");
    db->opts.conninfo = db->conninfo;
    if (db->conninfo == NULL) {
        fl_free(db);
        return FL_ENOMEM;
    }
    char err[300];
    int rc = db_params_init(&db->params, db->opts.conninfo, "fleetd", db->opts.query_timeout_ms, err, sizeof(err));
    if (rc != FL_OK) {
        if (rc == FL_EINVAL)
            fl_log(FL_LOG_ERROR, "db.bad_conninfo", FL_MSG(err));
        fl_free(db->conninfo);
        fl_free(db);
        return rc;
    }

    db->dispatch_ev = event_new(db->base, -1, 0, on_dispatch, db);
    db->health_ev = event_new(db->base, -1, EV_PERSIST, on_health_tick, db);
    db->expire_ev = evtimer_new(db->base, on_expire, db);
    if (db->dispatch_ev == NULL || db->health_ev == NULL || db->expire_ev == NULL)
        goto nomem;
    set_timeout(db->health_ev, db->opts.health_interval_ms);
    db_conn_config_t cc = {
        .base = db->base,
        .params = &db->params,
        .id = 0,
        .connect_timeout_ms = db->opts.connect_timeout_ms,
        .reconnect_min_ms = db->opts.reconnect_min_ms,
        .reconnect_max_ms = db->opts.reconnect_max_ms,
        .ops = &conn_ops,
        .owner = db,
    };
    if (db_conn_new(&cc, &db->conn) != FL_OK)
        goto nomem;
    *out = db;
    return FL_OK;

nomem:
    destroy(db);
    return FL_ENOMEM;
}

void fl_db_free(fl_db_t *db)
{
    if (db == NULL || db->closing)
        return;
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    if (db->delivering) {
        db->closing = true; /* inside a callback: settle() frees it when the callback returns */
        return;
    }
    destroy(db);
}

int fl_db_query(fl_db_t *db, const char *sql, int nparams, const char *const *values, fl_db_result_fn cb, void *arg)
{
    fl_assert(db != NULL && sql != NULL && cb != NULL);
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    if (db->closing)
        return FL_ECLOSED;
    if (nparams < 0 || nparams > 65535 || (nparams > 0 && values == NULL))
        return FL_EINVAL;
    if (db->nup == 0)
        return FL_EUNAVAIL;
    if (db->queue.count >= db->opts.max_queued)
        return FL_EFULL;
    db_request_t *r = db_request_new(sql, nparams, values);
    if (r == NULL)
        return FL_ENOMEM;
    r->cb = cb;
    r->arg = arg;
    r->deadline_ms = fl_now_mono_ms() + db->opts.query_timeout_ms;
    r->run_timeout_ms = db->opts.query_timeout_ms + WATCHDOG_MARGIN_MS;
    db_queue_push(&db->queue, r);
    arm_expire(db, r->deadline_ms);
    /* Sent from the loop, never from here: cb must not run before fl_db_query returns. */
    event_active(db->dispatch_ev, EV_TIMEOUT, 0);
    return FL_OK;
}

bool fl_db_is_up(const fl_db_t *db)
{
    return atomic_load(&db->up);
}

int fl_db_schema_version(const fl_db_t *db)
{
    return atomic_load(&db->schema_version);
}
