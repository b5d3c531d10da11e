/*
 * lib/db internals: shared by the module's files and its unit tests, nobody else.
 * The connection state machine (conn.c) is kept apart from the query queue (queue.c) and from
 * the fl_db_t that ties them together (db.c), so a pool of connections can slot in later without
 * touching the callers' contract.
 */
#ifndef FL_DB_INTERNAL_H
#define FL_DB_INTERNAL_H

#include "db.h"

#include <stdint.h>

struct event_base;

/* ---- migrate.c ---------------------------------------------------------------------------------- */

typedef struct {
    int applied; /* migrations applied by this run */
    int version; /* highest version recorded in schema_migrations afterwards */
} db_migrate_report_t;

/* fl_db_migrate over any list (terminated by {0, NULL, NULL}), printing nothing; report may be NULL. */
int fl_db_migrate_list(const char *conninfo, const fl_migration_t *list, int connect_timeout_ms, db_migrate_report_t *report,
                       char *err, size_t errlen);

/* SHA-256 of s (without its NUL), as 64 lower-case hex digits. */
void db_sha256_hex(const char *s, char out[65]);

/* ---- conninfo.c: connection parameters and messages --------------------------------------------- */

typedef struct {
    const char **keys; /* NULL-terminated, for PQconnectStartParams */
    const char **values;
    PQconninfoOption *parsed;
    char *options;      /* "options" with our statement_timeout appended */
    char *raw_password; /* as written in the conninfo, to scrub it from messages */
} db_params_t;

/* Parses conninfo (NULL: "") and adds fallback_application_name and, when statement_timeout_ms
 * > 0, "-c statement_timeout=N" to the options. FL_EINVAL (err says why) or FL_ENOMEM. */
int db_params_init(db_params_t *p, const char *conninfo, const char *app_name, int statement_timeout_ms, char *err, size_t errlen);
void db_params_free(db_params_t *p);

/* Copies a libpq message into out as one line (newlines folded into "; ") with any password of
 * p (may be NULL) or of conninfo (may be NULL) replaced by "***". */
void db_message(const db_params_t *p, const char *conninfo, const char *msg, char *out, size_t outlen);

/* printf into err when err is not NULL. */
void db_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* libpq notice processor: NOTICE and WARNING messages become db.notice log lines. */
void db_notice_processor(void *arg, const char *message);

/* Maps an error result to FL_EUNAVAIL (connection gone: class 08, 57P, or made by libpq itself),
 * FL_ETIMEDOUT (57014, statement_timeout) or FL_EIO. */
int db_error_status(const PGresult *res);

/* ---- connect.c: the blocking connect of the command line --------------------------------------------- */

/* Connects within timeout_ms. FL_EUNAVAIL (err: why, one line) or FL_ENOMEM. */
int db_connect_blocking(const db_params_t *p, int timeout_ms, PGconn **out, char *err, size_t errlen);

/* ---- queue.c: requests and their FIFO ------------------------------------------------------------- */

typedef enum {
    DB_REQ_QUERY,  /* fl_db_query / fl_db_query_stmt: one statement, cb */
    DB_REQ_TX,     /* fl_db_transaction: BEGIN, the statements, COMMIT in one pipeline, tx_cb */
    DB_REQ_HEALTH, /* the db's own health query: no callback */
    DB_REQ_LISTEN, /* the db's own LISTEN or UNLISTEN: no callback */
} db_request_kind_t;

typedef struct db_request db_request_t;
struct db_request {
    db_request_t *next;
    db_request_kind_t kind;
    fl_db_result_fn cb;
    fl_db_tx_fn tx_cb;
    void *arg;
    fl_db_stmt_t *stmts; /* copies, in the request's allocation; one unless kind is DB_REQ_TX */
    int nstmts;
    int64_t deadline_ms; /* monotonic; still queued by then: FL_ETIMEDOUT */
    int run_timeout_ms;  /* no answer for longer than this while in flight: the connection is presumed dead */
    /* The outcome, set once: status and res (FL_OK, or the error result) or err. A transaction
     * keeps its statements' results in results[] and its failure in res and failed_index. */
    bool finished;
    int status;
    PGresult *res;
    PGresult **results; /* DB_REQ_TX: nstmts entries, in the request's allocation */
    int failed_index;
    char err[256];
};

typedef struct {
    db_request_t *head, *tail;
    int count;
} db_queue_t;

/* FL_OK when stmt can be sent as it is (sql set, 0 to 65535 parameters with their values, formats
 * 0 or 1, a length >= 0 for every binary value); FL_EINVAL otherwise. */
int db_stmt_check(const fl_db_stmt_t *stmt);
/* One allocation holding the request, its statements (checked) and their parameters, copied;
 * failed_index is -1. NULL on allocation failure. */
db_request_t *db_request_new(db_request_kind_t kind, const fl_db_stmt_t *stmts, int n);
/* A request of one statement without parameters. */
db_request_t *db_request_sql(db_request_kind_t kind, const char *sql);
/* Frees r and its result. */
void db_request_free(db_request_t *r);
/* Records the outcome (err NULL when res says it all); the request keeps res. */
void db_request_finish(db_request_t *r, int status, PGresult *res, const char *err);

void db_queue_push(db_queue_t *q, db_request_t *r);
void db_queue_push_front(db_queue_t *q, db_request_t *r);
db_request_t *db_queue_pop(db_queue_t *q);
/* Moves every request of from to the end of to. */
void db_queue_splice(db_queue_t *to, db_queue_t *from);
/* Moves the requests whose deadline is <= now from q to expired; returns the earliest deadline
 * left in q (INT64_MAX when none). */
int64_t db_queue_expire(db_queue_t *q, int64_t now, db_queue_t *expired);

/* ---- conn.c: one PostgreSQL connection as a state machine ---------------------------------------- */

typedef struct db_conn db_conn_t;

/* What a connection tells its owner. state, done and notify never run caller code (no result
 * callback), so the connection may keep working after them; settle is the last thing each of the
 * connection's event handlers does, and the connection may be freed inside it. */
typedef struct {
    void (*state)(void *owner, db_conn_t *c, bool up);
    void (*done)(void *owner, db_request_t *r);  /* r is finished; the owner owns it again */
    void (*notify)(void *owner, PGnotify *note); /* a NOTIFY arrived; the owner PQfreemem()s it */
    void (*settle)(void *owner);
} db_conn_ops_t;

typedef struct {
    struct event_base *base;
    const db_params_t *params; /* kept by reference */
    int id;                    /* for the log */
    int connect_timeout_ms, reconnect_min_ms, reconnect_max_ms;
    const db_conn_ops_t *ops;
    void *owner;
} db_conn_config_t;

/* Creates the connection and starts the first attempt. */
int db_conn_new(const db_conn_config_t *cfg, db_conn_t **out);
/* Closes at once; an in-flight request must have been taken back first. */
void db_conn_free(db_conn_t *c);
/* Connected and nothing in flight. */
bool db_conn_ready(const db_conn_t *c);
bool db_conn_up(const db_conn_t *c);
/* Sends r (db_conn_ready must hold): one statement, or a transaction as one pipeline. Any failure
 * finishes r through ops->done. */
void db_conn_send(db_conn_t *c, db_request_t *r);
/* The request in flight, which the connection forgets (NULL when none); only right before
 * db_conn_free, since the connection is still in the middle of that query. */
db_request_t *db_conn_take_inflight(db_conn_t *c);

/* The delay before reconnection attempt `attempt` (0 for the first): uniform in
 * [min_ms, min(max_ms, min_ms * 2^attempt)]. */
int db_backoff_delay_ms(int min_ms, int max_ms, int attempt);

#endif
