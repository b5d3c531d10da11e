/* fl_db_t: the query queue, the health check, the listeners and the callbacks, over one
 * connection (conn.c). Callbacks (results and notifications) run from one place, settle(), at the
 * end of every event handler, so a callback may queue more queries or free the db without pulling
 * the floor from under us. */
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

#define MAX_TX_STMTS 65535
#define MAX_CHANNEL  63 /* NAMEDATALEN - 1: a longer identifier is cut short by the server */

typedef struct {
    char channel[MAX_CHANNEL + 1];
    fl_db_notify_fn fn; /* NULL: a free slot */
    void *arg;
    uint64_t id; /* registration order: a notification only goes to listeners older than itself */
} listener_t;

/* A notification received, waiting for settle() to hand it to the listeners. One allocation. */
typedef struct note note_t;
struct note {
    note_t *next;
    uint64_t upto; /* the newest listener id when it arrived */
    const char *channel, *payload;
};

struct fl_db {
    fl_shard_t *shard;
    struct event_base *base;
    fl_db_options_t opts; /* defaults filled in; opts.conninfo points at conninfo */
    char *conninfo;
    db_params_t params;
    db_conn_t *conn;
    int nup;            /* connections up */
    db_queue_t control; /* the db's own LISTEN/UNLISTEN, sent before anything of queue */
    db_queue_t queue;   /* waiting for a connection */
    db_queue_t done;    /* finished, callback not run yet */
    listener_t listeners[FL_DB_MAX_LISTENERS];
    uint64_t listener_seq;
    note_t *notes, **notes_tail; /* received, not delivered yet */
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
    db_request_t *r = db_request_sql(DB_REQ_HEALTH, HEALTH_SQL);
    if (r == NULL)
        return; /* the next tick tries again */
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

/* ---- LISTEN ---- */

static bool channel_listened(const fl_db_t *db, const char *channel)
{
    for (int i = 0; i < FL_DB_MAX_LISTENERS; i++)
        if (db->listeners[i].fn != NULL && strcmp(db->listeners[i].channel, channel) == 0)
            return true;
    return false;
}

/* Queues "LISTEN channel" or "UNLISTEN channel" (command), the channel quoted as an identifier. */
static int queue_listen(fl_db_t *db, const char *command, const char *channel)
{
    char sql[16 + 2 * MAX_CHANNEL + 3], *out = sql + snprintf(sql, 16, "%s \"", command);
    for (const char *c = channel; *c; c++) {
        if (*c == '"')
            *out++ = '"';
        *out++ = *c;
    }
    *out++ = '"';
    *out = '\0';
    db_request_t *r = db_request_sql(DB_REQ_LISTEN, sql);
    if (r == NULL)
        return FL_ENOMEM;
    r->deadline_ms = fl_now_mono_ms() + db->opts.connect_timeout_ms;
    r->run_timeout_ms = db->opts.connect_timeout_ms;
    db_queue_push(&db->control, r);
    arm_expire(db, r->deadline_ms);
    event_active(db->dispatch_ev, EV_TIMEOUT, 0);
    return FL_OK;
}

/* After each connect: LISTEN again on every channel, once each. */
static void relisten(fl_db_t *db)
{
    for (int i = 0; i < FL_DB_MAX_LISTENERS; i++) {
        const listener_t *l = &db->listeners[i];
        bool first = l->fn != NULL;
        for (int j = 0; first && j < i; j++)
            first = db->listeners[j].fn == NULL || strcmp(db->listeners[j].channel, l->channel) != 0;
        if (first && queue_listen(db, "LISTEN", l->channel) != FL_OK)
            fl_log(FL_LOG_WARN, "db.listen_failed", FL_MSG("cannot LISTEN again after reconnecting; notifications will not come"),
                   FL_STR("channel", l->channel), FL_STR("reason", "out of memory"));
    }
}

static void listen_result(const db_request_t *r)
{
    if (r->status == FL_OK || r->status == FL_EUNAVAIL || r->status == FL_ECLOSED)
        return; /* a lost connection LISTENs again when it comes back */
    const char *err = r->err[0] || r->res == NULL ? r->err : PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY);
    fl_log(FL_LOG_WARN, "db.listen_failed", FL_MSG("PostgreSQL refused a LISTEN; notifications will not come"),
           FL_STR("statement", r->stmts[0].sql), FL_STR("status", fl_strerror(r->status)), FL_STR("reason", err ? err : ""));
}

/* A notification from the connection: kept for settle() when someone listens on its channel. */
static void conn_notify(void *owner, PGnotify *pn)
{
    fl_db_t *db = owner;
    const char *payload = pn->extra != NULL ? pn->extra : "";
    size_t clen = strlen(pn->relname) + 1, plen = strlen(payload) + 1;
    note_t *n = channel_listened(db, pn->relname) ? fl_malloc(sizeof(*n) + clen + plen) : NULL;
    if (n != NULL) {
        char *text = (char *)(n + 1);
        memcpy(text, pn->relname, clen);
        memcpy(text + clen, payload, plen);
        *n = (note_t){.upto = db->listener_seq, .channel = text, .payload = text + clen};
        *db->notes_tail = n;
        db->notes_tail = &n->next;
    } else if (channel_listened(db, pn->relname)) {
        fl_log(FL_LOG_WARN, "db.notify_dropped", FL_MSG("a notification was dropped (out of memory)"),
               FL_STR("channel", pn->relname));
    }
    PQfreemem(pn);
}

static note_t *pop_note(fl_db_t *db)
{
    note_t *n = db->notes;
    if (n != NULL) {
        db->notes = n->next;
        if (db->notes == NULL)
            db->notes_tail = &db->notes;
    }
    return n;
}

/* Runs the listeners of n's channel that were registered before it arrived and still are. */
static void notify_listeners(fl_db_t *db, const note_t *n)
{
    for (int i = 0; i < FL_DB_MAX_LISTENERS && !db->closing; i++) {
        const listener_t *l = &db->listeners[i];
        if (l->fn != NULL && l->id <= n->upto && strcmp(l->channel, n->channel) == 0)
            l->fn(n->channel, n->payload, l->arg);
    }
}

/* ---- callbacks ---- */

static const char *error_text(const db_request_t *r)
{
    const char *err = r->err;
    if (err[0] == '\0' && r->res != NULL) {
        err = PQresultErrorField(r->res, PG_DIAG_MESSAGE_PRIMARY);
        if (err == NULL)
            err = PQresultErrorMessage(r->res);
    }
    return err;
}

static void run_callback(fl_db_t *db, db_request_t *r)
{
    switch (r->kind) {
    case DB_REQ_HEALTH:
        health_result(db, r);
        return;
    case DB_REQ_LISTEN:
        listen_result(r);
        return;
    case DB_REQ_TX:
        if (r->status == FL_OK)
            r->tx_cb(r->results, r->nstmts, FL_OK, NULL, -1, r->arg);
        else
            r->tx_cb(NULL, r->nstmts, r->status, error_text(r), r->failed_index, r->arg);
        return;
    case DB_REQ_QUERY:
        if (r->status == FL_OK)
            r->cb(r->res, FL_OK, NULL, r->arg);
        else
            r->cb(NULL, r->status, error_text(r), r->arg);
        return;
    }
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
    finish_all(db, &db->control, FL_ECLOSED, "the database connection was closed");
    finish_all(db, &db->queue, FL_ECLOSED, "the database connection was closed");
    for (note_t *n; (n = pop_note(db)) != NULL;)
        fl_free(n);
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
    while (db->conn != NULL && db_conn_ready(db->conn)) {
        db_request_t *r = db_queue_pop(&db->control);
        if (r == NULL)
            r = db_queue_pop(&db->queue);
        if (r == NULL)
            return;
        db_conn_send(db->conn, r);
    }
}

/* Results first, then notifications, each in the order they came. */
static void deliver(fl_db_t *db)
{
    db->delivering = true;
    for (db_request_t *r; !db->closing && (r = db_queue_pop(&db->done)) != NULL;) {
        run_callback(db, r);
        db_request_free(r);
    }
    for (note_t *n; !db->closing && (n = pop_note(db)) != NULL;) {
        notify_listeners(db, n);
        fl_free(n);
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
        if (db->done.head == NULL && db->notes == NULL)
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
    if (up) {
        relisten(db);
        schedule_health(db); /* the schema version is known right after each connect */
    } else if (db->nup == 0) {
        finish_all(db, &db->control, FL_EUNAVAIL, "the connection to the database was lost");
        finish_all(db, &db->queue, FL_EUNAVAIL, "the connection to the database was lost");
    }
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

static const db_conn_ops_t conn_ops = {.state = conn_state, .done = conn_done, .notify = conn_notify, .settle = conn_settle};

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
    int64_t now = fl_now_mono_ms(), next = db_queue_expire(&db->queue, now, &expired),
            control = db_queue_expire(&db->control, now, &expired);
    finish_all(db, &expired, FL_ETIMEDOUT, "waited longer than the query timeout for a database connection");
    if (control < next)
        next = control;
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
    db->notes_tail = &db->notes;
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

/* The refusals every request gets, in fl_db_query's order: closed, bad arguments (invalid), down,
 * queue full. */
static int admissible(const fl_db_t *db, bool invalid)
{
    if (db->closing)
        return FL_ECLOSED;
    if (invalid)
        return FL_EINVAL;
    if (db->nup == 0)
        return FL_EUNAVAIL;
    if (db->queue.count >= db->opts.max_queued)
        return FL_EFULL;
    return FL_OK;
}

static void submit(fl_db_t *db, db_request_t *r)
{
    r->deadline_ms = fl_now_mono_ms() + db->opts.query_timeout_ms;
    r->run_timeout_ms = db->opts.query_timeout_ms + WATCHDOG_MARGIN_MS;
    db_queue_push(&db->queue, r);
    arm_expire(db, r->deadline_ms);
    /* Sent from the loop, never from here: the callback must not run before the caller has FL_OK. */
    event_active(db->dispatch_ev, EV_TIMEOUT, 0);
}

int fl_db_query_stmt(fl_db_t *db, const fl_db_stmt_t *stmt, fl_db_result_fn cb, void *arg)
{
    fl_assert(db != NULL && stmt != NULL && stmt->sql != NULL && cb != NULL);
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    int rc = admissible(db, db_stmt_check(stmt) != FL_OK);
    if (rc != FL_OK)
        return rc;
    db_request_t *r = db_request_new(DB_REQ_QUERY, stmt, 1);
    if (r == NULL)
        return FL_ENOMEM;
    r->cb = cb;
    r->arg = arg;
    submit(db, r);
    return FL_OK;
}

int fl_db_query(fl_db_t *db, const char *sql, int nparams, const char *const *values, fl_db_result_fn cb, void *arg)
{
    fl_assert(sql != NULL);
    fl_db_stmt_t stmt = {.sql = sql, .nparams = nparams, .values = values};
    return fl_db_query_stmt(db, &stmt, cb, arg);
}

int fl_db_transaction(fl_db_t *db, const fl_db_stmt_t *stmts, int n, fl_db_tx_fn cb, void *arg)
{
    fl_assert(db != NULL && cb != NULL);
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    bool invalid = stmts == NULL || n < 1 || n > MAX_TX_STMTS;
    for (int i = 0; !invalid && i < n; i++)
        invalid = db_stmt_check(&stmts[i]) != FL_OK;
    int rc = admissible(db, invalid);
    if (rc != FL_OK)
        return rc;
    db_request_t *r = db_request_new(DB_REQ_TX, stmts, n);
    if (r == NULL)
        return FL_ENOMEM;
    r->tx_cb = cb;
    r->arg = arg;
    submit(db, r);
    return FL_OK;
}

int fl_db_listen(fl_db_t *db, const char *channel, fl_db_notify_fn fn, void *arg)
{
    fl_assert(db != NULL && channel != NULL && fn != NULL);
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    if (db->closing)
        return FL_ECLOSED;
    size_t len = strlen(channel);
    if (len == 0 || len > MAX_CHANNEL)
        return FL_EINVAL;
    listener_t *slot = NULL;
    for (int i = 0; i < FL_DB_MAX_LISTENERS && slot == NULL; i++)
        if (db->listeners[i].fn == NULL)
            slot = &db->listeners[i];
    if (slot == NULL)
        return FL_EFULL;
    /* Down: the LISTEN goes out when the connection comes up (relisten). */
    if (db->nup > 0 && !channel_listened(db, channel)) {
        int rc = queue_listen(db, "LISTEN", channel);
        if (rc != FL_OK)
            return rc;
    }
    memcpy(slot->channel, channel, len + 1);
    slot->fn = fn;
    slot->arg = arg;
    slot->id = ++db->listener_seq;
    return FL_OK;
}

int fl_db_unlisten(fl_db_t *db, const char *channel, fl_db_notify_fn fn, void *arg)
{
    fl_assert(db != NULL && channel != NULL && fn != NULL);
    fl_assert(fl_shard_current() == NULL || fl_shard_current() == db->shard);
    for (int i = 0; i < FL_DB_MAX_LISTENERS; i++) {
        listener_t *l = &db->listeners[i];
        if (l->fn != fn || l->arg != arg || strcmp(l->channel, channel) != 0)
            continue;
        *l = (listener_t){0};
        /* Should the UNLISTEN not go out, notifications on the channel are dropped on arrival. */
        if (db->nup > 0 && !db->closing && !channel_listened(db, channel) && queue_listen(db, "UNLISTEN", channel) != FL_OK)
            fl_log(FL_LOG_WARN, "db.listen_failed", FL_MSG("cannot UNLISTEN (out of memory)"), FL_STR("channel", channel));
        return FL_OK;
    }
    return FL_ENOTFOUND;
}

bool fl_db_is_up(const fl_db_t *db)
{
    return atomic_load(&db->up);
}

int fl_db_schema_version(const fl_db_t *db)
{
    return atomic_load(&db->schema_version);
}
