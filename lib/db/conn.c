/* One PostgreSQL connection on an event loop, as a state machine:
 *   WAITING --retry timer--> CONNECTING --PQconnectPoll OK--> UP --lost--> WAITING
 * Connecting is PQconnectStart/PQconnectPoll under our own deadline; once up, the socket is in
 * nonblocking mode and one request at a time goes out with PQsendQueryParams/PQflush and comes
 * back through PQconsumeInput/PQisBusy/PQgetResult, so the loop thread never waits on the
 * database. A transaction is one request, sent as one pipeline:
 *   BEGIN, the statements, sync, COMMIT, sync
 * After a failure PostgreSQL skips the rest up to the first sync and leaves the session in an
 * aborted transaction block, where COMMIT means ROLLBACK: so the COMMIT behind the first sync
 * commits a good transaction and cleans up after a bad one, in the same round trip.
 * The socket is watched for reading for as long as the connection is up, so a NOTIFY is read
 * between requests as well as in the middle of one. What the connection learns goes to its owner
 * through db_conn_ops_t. */
#include "db_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

/* While the database stays unreachable, one db.reconnect_scheduled line per this interval. */
#define REPORT_EVERY_MS 30000

typedef enum { CONN_WAITING, CONN_CONNECTING, CONN_UP } conn_state_t;

struct db_conn {
    db_conn_config_t cfg;
    conn_state_t state;
    PGconn *pg;
    struct event *io_ev;         /* connecting: one wait on whichever socket libpq is using now */
    struct event *rd_ev, *wr_ev; /* up: readable (persistent); writable while output is pending */
    struct event *timer_ev;      /* waiting: the retry; connecting: the deadline; up: the in-flight watchdog */
    bool flushing;
    db_request_t *inflight;
    PGresult *res; /* a query: its result so far; a transaction: the result of its first failure */
    /* The transaction in flight: the slot its next result fills (0 BEGIN, 1..n the statements,
     * n+1 the first sync, n+2 COMMIT, n+3 the last sync), whether that slot's result came (its
     * NULL is next), and its first failure: res, or tx_why when there is no result to show. */
    int tx_slot;
    bool tx_answered;
    int tx_failed_index;
    const char *tx_why;
    char fatal[200]; /* a FATAL the server sent while we were idle: why it is about to close */
    int failures;    /* failed attempts since the connection was last up */
    int64_t down_since_ms;
    int64_t reported_ms; /* last db.reconnect_scheduled line of this outage, or -1 */
};

static void on_connect_io(evutil_socket_t fd, short what, void *arg);
static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

int db_backoff_delay_ms(int min_ms, int max_ms, int attempt)
{
    if (max_ms < min_ms)
        max_ms = min_ms;
    int64_t ceiling = min_ms;
    for (int i = 0; i < attempt && ceiling < max_ms; i++)
        ceiling *= 2;
    if (ceiling > max_ms)
        ceiling = max_ms;
    return min_ms + (int)fl_random_below((uint32_t)(ceiling - min_ms + 1));
}

static void arm_timer(db_conn_t *c, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(c->timer_ev, &tv);
}

static void free_event(struct event **ev)
{
    if (*ev != NULL) {
        event_free(*ev);
        *ev = NULL;
    }
}

static void tx_reset(db_conn_t *c)
{
    PQclear(c->res);
    c->res = NULL;
    c->tx_slot = 0;
    c->tx_answered = false;
    c->tx_failed_index = -1;
    c->tx_why = NULL;
}

/* Records the transaction's first failure (what follows is its consequence); takes res. */
static void tx_fail(db_conn_t *c, PGresult *res, int index, const char *why)
{
    if (c->res != NULL || c->tx_why != NULL) {
        PQclear(res);
        return;
    }
    c->res = res;
    c->tx_failed_index = index;
    c->tx_why = res != NULL ? NULL : why;
}

/* Finishes r, the transaction that was in flight, with its recorded outcome: the first failure,
 * else success. */
static void tx_finish(db_conn_t *c, db_request_t *r)
{
    if (c->res != NULL) {
        int status = db_error_status(c->res);
        r->failed_index = status == FL_EUNAVAIL ? -1 : c->tx_failed_index;
        db_request_finish(r, status, c->res, NULL);
        c->res = NULL;
    } else if (c->tx_why != NULL) {
        r->failed_index = c->tx_failed_index;
        db_request_finish(r, FL_EIO, NULL, c->tx_why);
    } else {
        db_request_finish(r, FL_OK, NULL, NULL);
    }
    tx_reset(c);
}

/* The connection is going away with r in flight. A transaction whose outcome is already known
 * reports it: a statement was refused (the server rolls back whatever happens next), or COMMIT
 * answered (only the last sync is missing). Otherwise nobody knows whether its COMMIT got through:
 * FL_EUNAVAIL. A query gets `status`. */
static void fail_inflight(db_conn_t *c, db_request_t *r, int status, const char *why)
{
    int commit_slot = r->nstmts + 2;
    bool known = c->res != NULL || c->tx_why != NULL || c->tx_slot > commit_slot || (c->tx_slot == commit_slot && c->tx_answered);
    if (r->kind == DB_REQ_TX && known) {
        tx_finish(c, r);
    } else {
        if (r->kind == DB_REQ_TX)
            status = FL_EUNAVAIL;
        db_request_finish(r, status, NULL, why);
    }
    c->cfg.ops->done(c->cfg.owner, r);
}

/* Events first: the socket they watch closes with the PGconn. */
static void close_pg(db_conn_t *c)
{
    free_event(&c->io_ev);
    free_event(&c->rd_ev);
    free_event(&c->wr_ev);
    event_del(c->timer_ev);
    c->flushing = false;
    tx_reset(c);
    c->fatal[0] = '\0';
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
}

static void reason_of(db_conn_t *c, const char *why, char *out, size_t outlen)
{
    db_message(c->cfg.params, NULL, why != NULL && *why ? why : "the connection failed", out, outlen);
}

static void attempt_failed(db_conn_t *c, const char *why)
{
    char reason[256];
    reason_of(c, why, reason, sizeof(reason));
    close_pg(c);
    int delay = db_backoff_delay_ms(c->cfg.reconnect_min_ms, c->cfg.reconnect_max_ms, c->failures);
    c->failures++;
    c->state = CONN_WAITING;
    arm_timer(c, delay);
    /* Retries can come ten a second: say so on the first failure of an outage, then rarely. */
    int64_t now = fl_now_mono_ms();
    if (c->reported_ms < 0 || now - c->reported_ms >= REPORT_EVERY_MS) {
        c->reported_ms = now;
        fl_log(FL_LOG_WARN, "db.reconnect_scheduled", FL_MSG("cannot connect to PostgreSQL; will retry"), FL_INT("conn", c->cfg.id),
               FL_STR("reason", reason), FL_INT("attempts", c->failures), FL_INT("delay_ms", delay),
               FL_INT("down_ms", now - c->down_since_ms));
    }
}

/* The connection broke (or stopped answering) while up. */
static void lost(db_conn_t *c, const char *why)
{
    char reason[256], both[400];
    if (c->fatal[0] != '\0') {
        db_errf(both, sizeof(both), "%s; %s", c->fatal, why != NULL ? why : "");
        why = both;
    }
    reason_of(c, why, reason, sizeof(reason));
    db_request_t *r = c->inflight;
    c->inflight = NULL;
    if (r != NULL) {
        char err[sizeof(r->err)];
        db_errf(err, sizeof(err), "the connection dropped with the %s in flight: %s",
                r->kind == DB_REQ_TX ? "transaction" : "query", reason);
        fail_inflight(c, r, FL_EUNAVAIL, err);
    }
    close_pg(c);
    c->failures = 0;
    c->down_since_ms = fl_now_mono_ms();
    c->reported_ms = -1;
    int delay = db_backoff_delay_ms(c->cfg.reconnect_min_ms, c->cfg.reconnect_max_ms, 0);
    c->state = CONN_WAITING;
    arm_timer(c, delay);
    fl_log(FL_LOG_WARN, "db.disconnected", FL_MSG("lost the connection to PostgreSQL"), FL_INT("conn", c->cfg.id),
           FL_STR("reason", reason), FL_INT("reconnect_in_ms", delay));
    c->cfg.ops->state(c->cfg.owner, c, false);
}

static void wait_socket(db_conn_t *c, PostgresPollingStatusType st)
{
    free_event(&c->io_ev);
    int fd = PQsocket(c->pg);
    if (fd < 0) {
        attempt_failed(c, PQerrorMessage(c->pg));
        return;
    }
    c->io_ev = event_new(c->cfg.base, fd, st == PGRES_POLLING_READING ? EV_READ : EV_WRITE, on_connect_io, c);
    if (c->io_ev == NULL || event_add(c->io_ev, NULL) != 0)
        attempt_failed(c, "cannot watch the socket (out of memory)");
}

/* libpq hands an ErrorResponse that arrives between queries (pg_terminate_backend, shutdown) to
 * the notice hook: keep its text, it is the best reason for the disconnection that follows. */
static void on_notice(void *arg, const PGresult *res)
{
    db_conn_t *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    if (severity != NULL && primary != NULL && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0))
        snprintf(c->fatal, sizeof(c->fatal), "%s", primary);
    db_notice_processor(NULL, PQresultErrorMessage(res));
}

static void start_attempt(db_conn_t *c)
{
    c->pg = PQconnectStartParams(c->cfg.params->keys, c->cfg.params->values, 0);
    if (c->pg == NULL) {
        attempt_failed(c, "out of memory");
        return;
    }
    PQsetNoticeReceiver(c->pg, on_notice, c);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        attempt_failed(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = CONN_CONNECTING;
    arm_timer(c, c->cfg.connect_timeout_ms);
    wait_socket(c, PGRES_POLLING_WRITING); /* what libpq wants first after PQconnectStart */
}

static void become_up(db_conn_t *c)
{
    free_event(&c->io_ev);
    event_del(c->timer_ev);
    int fd = PQsocket(c->pg);
    if (PQsetnonblocking(c->pg, 1) != 0) {
        attempt_failed(c, PQerrorMessage(c->pg));
        return;
    }
    c->rd_ev = event_new(c->cfg.base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wr_ev = event_new(c->cfg.base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    if (c->rd_ev == NULL || c->wr_ev == NULL || event_add(c->rd_ev, NULL) != 0) {
        attempt_failed(c, "cannot watch the socket (out of memory)");
        return;
    }
    c->state = CONN_UP;
    fl_log(FL_LOG_INFO, "db.connected", FL_MSG("connected to PostgreSQL"), FL_INT("conn", c->cfg.id),
           FL_INT("server_version", PQserverVersion(c->pg)), FL_INT("backend_pid", PQbackendPID(c->pg)),
           FL_INT("attempts", c->failures + 1), FL_INT("down_ms", fl_now_mono_ms() - c->down_since_ms));
    c->failures = 0;
    c->reported_ms = -1;
    c->cfg.ops->state(c->cfg.owner, c, true);
}

static void on_connect_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    db_conn_t *c = arg;
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    if (st == PGRES_POLLING_OK)
        become_up(c);
    else if (st == PGRES_POLLING_FAILED)
        attempt_failed(c, PQerrorMessage(c->pg));
    else
        wait_socket(c, st);
    c->cfg.ops->settle(c->cfg.owner);
}

/* ---- a query's results ---- */

/* Finishes the in-flight query with what PQgetResult gave. */
static void complete(db_conn_t *c)
{
    db_request_t *r = c->inflight;
    PGresult *res = c->res;
    c->inflight = NULL;
    c->res = NULL;
    event_del(c->timer_ev);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        db_request_finish(r, FL_OK, res, NULL);
    else if (res != NULL && (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR))
        db_request_finish(r, db_error_status(res), res, NULL);
    else if (res == NULL)
        db_request_finish(r, FL_EUNAVAIL, NULL, "no result from the database");
    else
        db_request_finish(r, FL_EIO, res, st == PGRES_EMPTY_QUERY ? "empty query" : "unexpected result status");
    c->cfg.ops->done(c->cfg.owner, r);
}

static bool is_copy(ExecStatusType st)
{
    return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

/* Reads what results of the in-flight query are complete. COPY would leave the connection waiting
 * for data we never send, so it costs the connection. */
static void collect_query(db_conn_t *c)
{
    while (c->state == CONN_UP && c->inflight != NULL && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            complete(c);
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (is_copy(st)) {
            PQclear(res);
            db_request_t *r = c->inflight;
            c->inflight = NULL;
            db_request_finish(r, FL_EIO, NULL, "COPY is not supported by fl_db_query");
            c->cfg.ops->done(c->cfg.owner, r);
            lost(c, "a COPY left the connection unusable");
            return;
        }
        /* One statement gives one result; should there be more, keep the first error. */
        if (c->res == NULL) {
            c->res = res;
        } else if (st == PGRES_FATAL_ERROR && PQresultStatus(c->res) != PGRES_FATAL_ERROR) {
            PQclear(c->res);
            c->res = res;
        } else {
            PQclear(res);
        }
    }
}

/* ---- a transaction's results ---- */

/* Its last sync came: the transaction is over, and the connection leaves pipeline mode. */
static void complete_tx(db_conn_t *c)
{
    db_request_t *r = c->inflight;
    c->inflight = NULL;
    event_del(c->timer_ev);
    tx_finish(c, r);
    c->cfg.ops->done(c->cfg.owner, r);
    if (PQexitPipelineMode(c->pg) != 1)
        lost(c, PQerrorMessage(c->pg));
}

/* Files one result of the in-flight transaction into its slot; false when it makes no sense there. */
static bool file_tx_result(db_conn_t *c, db_request_t *r, PGresult *res)
{
    int n = r->nstmts, slot = c->tx_slot;
    ExecStatusType st = PQresultStatus(res);
    bool sync_slot = slot == n + 1 || slot == n + 3;
    if (st == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        if (!sync_slot)
            return false;
        c->tx_slot++; /* no NULL follows a sync */
        return true;
    }
    if (sync_slot || c->tx_answered) {
        PQclear(res);
        return false;
    }
    c->tx_answered = true;
    int index = slot >= 1 && slot <= n ? slot - 1 : -1;
    switch (st) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
        if (slot == n + 2 && strcmp(PQcmdStatus(res), "COMMIT") != 0)
            tx_fail(c, NULL, -1, "the transaction was rolled back"); /* "ROLLBACK": after a failure, as expected */
        if (index >= 0)
            r->results[index] = res;
        else
            PQclear(res);
        return true;
    case PGRES_PIPELINE_ABORTED: /* skipped after the failure already recorded */
        PQclear(res);
        tx_fail(c, NULL, index, "skipped after an earlier failure");
        return true;
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR:
        tx_fail(c, res, index, NULL);
        return true;
    default:
        PQclear(res);
        if (is_copy(st)) /* the connection is dropped at once: COMMIT never runs */
            tx_fail(c, NULL, index, "COPY is not supported by fl_db_transaction");
        return false;
    }
}

/* Reads the in-flight transaction's results that are complete, in order. */
static void collect_tx(db_conn_t *c)
{
    db_request_t *r = c->inflight;
    bool stray_null = false; /* a NULL that ends no result: tolerated once, never in a loop */
    while (c->state == CONN_UP && c->inflight == r && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            if (c->tx_answered) {
                c->tx_answered = false;
                c->tx_slot++;
                continue;
            }
            if (stray_null) {
                lost(c, "lost track of the transaction's results");
                return;
            }
            stray_null = true;
            continue;
        }
        stray_null = false;
        arm_timer(c, r->run_timeout_ms); /* an answer: the server is alive, however long the rest takes */
        if (!file_tx_result(c, r, res)) {
            lost(c, "an unexpected result in the transaction's pipeline");
            return;
        }
        if (c->tx_slot == r->nstmts + 4) {
            complete_tx(c);
            return;
        }
    }
}

static void collect(db_conn_t *c)
{
    if (c->inflight != NULL && c->inflight->kind == DB_REQ_TX)
        collect_tx(c);
    else
        collect_query(c);
}

/* ---- events ---- */

/* Writes what libpq has buffered; false when the connection was lost. */
static bool flush(db_conn_t *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0) {
        lost(c, PQerrorMessage(c->pg));
        return false;
    }
    if (rc == 1 && !c->flushing) {
        c->flushing = event_add(c->wr_ev, NULL) == 0;
        if (!c->flushing) {
            lost(c, "cannot watch the socket (out of memory)");
            return false;
        }
    } else if (rc == 0 && c->flushing) {
        event_del(c->wr_ev);
        c->flushing = false;
    }
    return true;
}

/* Everything libpq has read: results, then notifications (they come between requests as well as
 * in the middle of one), then a connection gone bad. */
static void process_input(db_conn_t *c)
{
    collect(c);
    if (c->state != CONN_UP)
        return;
    for (PGnotify *n; (n = PQnotifies(c->pg)) != NULL;)
        c->cfg.ops->notify(c->cfg.owner, n);
    if (PQstatus(c->pg) == CONNECTION_BAD)
        lost(c, PQerrorMessage(c->pg));
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    db_conn_t *c = arg;
    if (!PQconsumeInput(c->pg)) {
        lost(c, PQerrorMessage(c->pg));
        goto out;
    }
    if (c->flushing && !flush(c))
        goto out;
    process_input(c);
out:
    c->cfg.ops->settle(c->cfg.owner);
}

/* When a write would block libpq reads what has arrived (so a server answering a long pipeline
 * cannot deadlock with us): no readable event will announce those bytes, so look at them here. */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    db_conn_t *c = arg;
    if (flush(c))
        process_input(c);
    c->cfg.ops->settle(c->cfg.owner);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    db_conn_t *c = arg;
    char why[160];
    switch (c->state) {
    case CONN_WAITING:
        start_attempt(c);
        break;
    case CONN_CONNECTING: {
        const char *host = PQhost(c->pg), *port = PQport(c->pg);
        snprintf(why, sizeof(why), "timed out after %d ms connecting to %s%s%s", c->cfg.connect_timeout_ms,
                 host && *host ? host : "the server", port && *port ? " port " : "", port && *port ? port : "");
        attempt_failed(c, why);
        break;
    }
    case CONN_UP: {
        /* No answer at all: a half-open TCP connection looks like this. */
        db_request_t *r = c->inflight;
        c->inflight = NULL;
        snprintf(why, sizeof(why), "no answer from the database within %d ms", r != NULL ? r->run_timeout_ms : 0);
        if (r != NULL)
            fail_inflight(c, r, FL_ETIMEDOUT, why);
        lost(c, why);
        break;
    }
    }
    c->cfg.ops->settle(c->cfg.owner);
}

/* ---- the interface ---- */

int db_conn_new(const db_conn_config_t *cfg, db_conn_t **out)
{
    db_conn_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        return FL_ENOMEM;
    c->cfg = *cfg;
    c->timer_ev = evtimer_new(cfg->base, on_timer, c);
    if (c->timer_ev == NULL) {
        fl_free(c);
        return FL_ENOMEM;
    }
    c->state = CONN_WAITING;
    c->tx_failed_index = -1;
    c->down_since_ms = fl_now_mono_ms();
    c->reported_ms = -1;
    start_attempt(c);
    *out = c;
    return FL_OK;
}

void db_conn_free(db_conn_t *c)
{
    if (c == NULL)
        return;
    fl_assert(c->inflight == NULL);
    close_pg(c);
    event_free(c->timer_ev);
    fl_free(c);
}

bool db_conn_up(const db_conn_t *c)
{
    return c->state == CONN_UP;
}

bool db_conn_ready(const db_conn_t *c)
{
    return c->state == CONN_UP && c->inflight == NULL;
}

static int send_stmt(PGconn *pg, const fl_db_stmt_t *s)
{
    return PQsendQueryParams(pg, s->sql, s->nparams, NULL, s->values, s->lengths, s->formats, 0);
}

/* Queues the whole transaction in libpq's output buffer (libpq writes it out past 64 KiB, flush()
 * the rest); false when libpq refused some of it. */
static bool send_tx(db_conn_t *c, const db_request_t *r)
{
    static const fl_db_stmt_t begin = {.sql = "BEGIN"}, commit = {.sql = "COMMIT"};
    if (PQenterPipelineMode(c->pg) != 1 || !send_stmt(c->pg, &begin))
        return false;
    for (int i = 0; i < r->nstmts; i++)
        if (!send_stmt(c->pg, &r->stmts[i]))
            return false;
    return PQpipelineSync(c->pg) == 1 && send_stmt(c->pg, &commit) && PQpipelineSync(c->pg) == 1;
}

void db_conn_send(db_conn_t *c, db_request_t *r)
{
    fl_assert(db_conn_ready(c));
    c->inflight = r;
    if (r->kind == DB_REQ_TX) {
        tx_reset(c);
        if (!send_tx(c, r)) {
            /* Part of it may be on its way already: only a new connection is in a known state. */
            const char *why = PQerrorMessage(c->pg);
            lost(c, why != NULL && *why ? why : "libpq refused to queue the transaction");
            return;
        }
    } else if (!send_stmt(c->pg, &r->stmts[0])) {
        if (PQstatus(c->pg) == CONNECTION_OK) {
            /* Refused by libpq before anything was sent: the request's fault, not the connection's. */
            char err[160];
            db_message(c->cfg.params, NULL, PQerrorMessage(c->pg), err, sizeof(err));
            c->inflight = NULL;
            db_request_finish(r, FL_EIO, NULL, err);
            c->cfg.ops->done(c->cfg.owner, r);
            return;
        }
        lost(c, PQerrorMessage(c->pg));
        return;
    }
    arm_timer(c, r->run_timeout_ms);
    flush(c);
}

db_request_t *db_conn_take_inflight(db_conn_t *c)
{
    db_request_t *r = c->inflight;
    c->inflight = NULL;
    tx_reset(c);
    if (c->state == CONN_UP)
        event_del(c->timer_ev);
    return r;
}
