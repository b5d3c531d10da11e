/*
 * fleetd db: PostgreSQL through libpq, in two shapes.
 *  - fl_db_migrate: the blocking migrations runner behind `fleetd migrate` (command line only).
 *  - fl_db_t: an asynchronous connection owned by one shard and driven by that shard's event
 *    loop; the loop thread never blocks on the database. Single queries, pipelined transactions
 *    (one round trip each) and LISTEN/NOTIFY.
 */
#ifndef FL_DB_H
#define FL_DB_H

#include "core/core.h"
#include "runtime/runtime.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* ---- migrations --------------------------------------------------------------------------------
 * migrations/NNN_name.sql are compiled in (cmake/embed_migrations.cmake) in version order. A
 * migration must not contain BEGIN/COMMIT: the runner wraps each one in a transaction together
 * with its schema_migrations row, so it is applied entirely or not at all. */

typedef struct {
    int version;      /* NNN, > 0, strictly increasing along the list */
    const char *name; /* the file name, e.g. "001_initial.sql" */
    const char *sql;
} fl_migration_t;

/* Generated; terminated by {0, NULL, NULL}. */
extern const fl_migration_t fl_migrations[];

/* The highest embedded version (0 when there is none). */
int fl_migrations_latest(void);

/* The session advisory lock every `fleetd migrate` holds while it works ("fleetd\0\1" as a
 * bigint), so that nodes migrating at once serialise; pg_locks shows it as classid 1718379877,
 * objid 1952710657. */
#define FL_DB_MIGRATE_LOCK_KEY "7380385375772213249"

/* Blocking; for the command line only, never on an event-loop thread.
 * Connects within connect_timeout_ms (0: 5000), takes the advisory lock (waiting for another
 * migrate to finish), creates schema_migrations(version, name, checksum, applied_at) if missing,
 * checks the recorded checksum (SHA-256 of the SQL, hex) of every applied migration, then
 * applies each missing one in version order, each in one transaction with its schema_migrations
 * row. Logs db.migration_applied per migration and prints one summary line on stdout ("applied
 * 1 migration, schema at version 1" or "schema up to date at version 1"). A version in the
 * database that this fleetd does not know (a newer fleetd migrated it) is logged and tolerated.
 * Returns FL_OK;
 *   FL_EINVAL    conninfo cannot be parsed;
 *   FL_EUNAVAIL  the database cannot be reached, or the connection was lost;
 *   FL_ESTATE    an applied migration's checksum differs from the embedded one (someone edited
 *                an applied migration; nothing is applied), or two migrations share a version;
 *   FL_EIO       a migration failed: it is rolled back, earlier ones stay.
 * err gets one line saying why (naming the migration and PostgreSQL's message), never the
 * password. */
int fl_db_migrate(const char *conninfo, int connect_timeout_ms, char *err, size_t errlen);

/* ---- the asynchronous connection ---------------------------------------------------------------- */

typedef struct fl_db fl_db_t;

typedef struct {
    const char *conninfo;   /* libpq URI or key=value string (copied); NULL or "": libpq's defaults */
    int connect_timeout_ms; /* one connection attempt; 0: 5000 */
    int reconnect_min_ms;   /* first delay before reconnecting; 0: 100 */
    int reconnect_max_ms;   /* longest delay; 0: 10000 */
    int health_interval_ms; /* schema version check and liveness; 0: 1000 */
    int query_timeout_ms;   /* 0: 30000; see fl_db_query */
    int max_queued;         /* queries waiting to be sent; 0: 1024 */
} fl_db_options_t;

/* Creates the connection object owned by `shard` and starts connecting. Call it on that shard's
 * thread, or before the runtime starts. The connection reconnects forever with exponential
 * backoff (each delay drawn uniformly between reconnect_min_ms and a ceiling that doubles per
 * failure up to reconnect_max_ms) and logs db.connected, db.disconnected (with the reason) and
 * db.reconnect_scheduled (first failure of an outage, then at most every 30 s). Every
 * health_interval_ms, and right after each connect, a health query reads the schema version; a
 * health query unanswered within connect_timeout_ms marks the connection dead.
 * Host names are resolved by libpq synchronously while connecting: use an address or a Unix
 * socket directory (or hostaddr=) when that matters.
 * Returns FL_EINVAL (conninfo cannot be parsed; logged) or FL_ENOMEM. */
int fl_db_new(fl_shard_t *shard, const fl_db_options_t *opts, fl_db_t **out);

/* On the shard's thread (a result callback may call it) or after the runtime has stopped, and
 * before fl_runtime_free. Callbacks still pending (queries, transactions) run at once with
 * FL_ECLOSED; listeners are not called again. NULL is a no-op. */
void fl_db_free(fl_db_t *db);

/* Result callback: runs on the owning shard's thread exactly once per accepted query.
 * status FL_OK: res is PGRES_COMMAND_OK or PGRES_TUPLES_OK (text results); it is the db's: do
 *   not PQclear it, do not keep it after returning.
 * Otherwise res is NULL and err says why (valid only during the call):
 *   FL_EUNAVAIL  not connected, or the connection dropped with the query in flight (it may or
 *                may not have been committed);
 *   FL_EIO       PostgreSQL refused the query (err is its message);
 *   FL_ETIMEDOUT it waited longer than query_timeout_ms to be sent, or ran longer than that on
 *                the server (statement_timeout; the connection stays up);
 *   FL_ECLOSED   fl_db_free was called. */
typedef void (*fl_db_result_fn)(const PGresult *res, int status, const char *err, void *arg);

/* Queues a parameterised query (text parameters, NULL meaning SQL NULL; sql and values are
 * copied). Only on the owning shard's thread. Returns at once, never running cb itself:
 * FL_OK (cb will run), FL_EUNAVAIL (not connected now), FL_EFULL (max_queued waiting),
 * FL_EINVAL, FL_ENOMEM or FL_ECLOSED; on any of these cb never runs.
 * Queries from different callers interleave on the connection: never BEGIN/COMMIT through it,
 * use fl_db_transaction. */
int fl_db_query(fl_db_t *db, const char *sql, int nparams, const char *const *values, fl_db_result_fn cb, void *arg);

/* One statement and its parameters. Parameters are text unless formats says otherwise; a binary
 * parameter (format 1) is lengths[i] bytes taken as they are, zero bytes included, so a raw body
 * goes into a bytea without hex (the server infers each parameter's type from the statement:
 * write $1::bytea where the context does not say). Results always come back as text. */
typedef struct {
    const char *sql;
    int nparams;               /* 0 to 65535 */
    const char *const *values; /* nparams entries; a NULL entry is SQL NULL */
    const int *lengths;        /* NULL: all text; else per parameter, read for the binary ones (>= 0) */
    const int *formats;        /* NULL: all text; else per parameter, 0 text or 1 binary */
} fl_db_stmt_t;

/* fl_db_query for one fl_db_stmt_t: same queueing, callback and return codes (FL_EINVAL also for
 * a format other than 0 or 1, or a binary parameter without its length). Everything is copied. */
int fl_db_query_stmt(fl_db_t *db, const fl_db_stmt_t *stmt, fl_db_result_fn cb, void *arg);

/* Transaction callback: runs once on the owning shard's thread.
 * status FL_OK: committed; results[i] is statement i's result (PGRES_COMMAND_OK, PGRES_TUPLES_OK,
 *   or PGRES_EMPTY_QUERY for a statement that is only a comment), the db's, valid during the call.
 * Otherwise results is NULL, err says why and failed_index is the statement that failed (-1 for
 * BEGIN, COMMIT or the connection). What was committed then:
 *   FL_EUNAVAIL  the connection dropped (or stopped answering) before COMMIT's answer: it may or
 *                may not have committed (make a retry safe with unique keys);
 *   FL_ECLOSED   fl_db_free was called: the same, if it was already sent;
 *   FL_EIO       a statement (failed_index) or COMMIT (-1: a deferred constraint, a serialization
 *                failure) was refused: nothing was committed;
 *   FL_ETIMEDOUT a statement ran past statement_timeout (failed_index), or it waited longer than
 *                query_timeout_ms to be sent (-1): nothing was committed. */
typedef void (*fl_db_tx_fn)(PGresult *const *results, int n, int status, const char *err, int failed_index, void *arg);

/* Runs BEGIN, stmts[0..n-1] in order and COMMIT as one transaction in libpq's pipeline mode: all
 * sent before any answer is read, so the whole transaction costs one round trip; results are read
 * in order. When a statement fails PostgreSQL skips the rest and the COMMIT becomes a rollback,
 * still within that round trip, and the connection is ready for the next request.
 * n is 1 to 65535; statements must not control the transaction themselves (BEGIN, COMMIT,
 * SAVEPOINT, ...). Same queueing, bounds, timeouts and return codes as fl_db_query (one transaction
 * counts as one queued query; the in-flight watchdog restarts with every answer); sql and values
 * are copied. Only on the owning shard's thread; cb never runs from inside this call. */
int fl_db_transaction(fl_db_t *db, const fl_db_stmt_t *stmts, int n, fl_db_tx_fn cb, void *arg);

/* ---- LISTEN/NOTIFY ------------------------------------------------------------------------------ */

/* Runs on the owning shard's thread for each notification on channel (payload "" when none);
 * both strings are valid during the call only. It may call any fl_db_* function, fl_db_free too. */
typedef void (*fl_db_notify_fn)(const char *channel, const char *payload, void *arg);

#define FL_DB_MAX_LISTENERS 16

/* Listens on channel (1 to 63 bytes, used exactly as given: send with pg_notify('channel', ...)
 * or NOTIFY "channel"): LISTEN now when connected and again after every reconnect, before any
 * query queued after this call. fn runs for every notification on channel, whether a query is in
 * flight or not, until fl_db_unlisten or fl_db_free; arg must live that long.
 * Notifications are at most once: those sent while the connection is down, or before its LISTEN
 * has run after a reconnect, are lost and not replayed. Callers must poll as a fallback: once
 * after fl_db_listen (a query queued after it sees everything a missed notification was about),
 * then periodically.
 * Up to FL_DB_MAX_LISTENERS registrations per connection (two for one channel count twice).
 * Only on the owning shard's thread. FL_OK; FL_EINVAL (channel empty or too long), FL_EFULL,
 * FL_ENOMEM or FL_ECLOSED. A LISTEN the server refuses is logged (db.listen_failed). */
int fl_db_listen(fl_db_t *db, const char *channel, fl_db_notify_fn fn, void *arg);

/* Removes the registration (channel, fn, arg) made by fl_db_listen; fn is not called for it
 * again, even for a notification already received. UNLISTENs when it was the channel's last.
 * FL_OK or FL_ENOTFOUND. */
int fl_db_unlisten(fl_db_t *db, const char *channel, fl_db_notify_fn fn, void *arg);

/* Any thread. True while connected. */
bool fl_db_is_up(const fl_db_t *db);

/* Any thread. The schema version the last health query read (0: no schema_migrations table);
 * -1 until one has succeeded. */
int fl_db_schema_version(const fl_db_t *db);

/* ---- the service: one connection per shard, in the supervision tree ------------------------------ */

typedef struct fl_db_service fl_db_service_t;

/* opts is copied (conninfo too). The connections open when the "db" supervisor (fl_db_service_spec)
 * starts its db:N actors, and close when they stop. */
int fl_db_service_new(fl_runtime_t *rt, const fl_db_options_t *opts, fl_db_service_t **out);
/* After the db supervisor has stopped. */
void fl_db_service_free(fl_db_service_t *svc);
const fl_sup_spec_t *fl_db_service_spec(fl_db_service_t *svc);
/* On shard's own thread: its connection, or NULL while db:shard is restarting. */
fl_db_t *fl_db_service_get(fl_db_service_t *svc, int shard);
/* Any thread: every shard's connection is up. */
bool fl_db_service_up(fl_db_service_t *svc);
/* Any thread: the schema version the connections last read (-1 until one has). */
int fl_db_service_schema_version(fl_db_service_t *svc);
/* Any thread: how many connections the service keeps (one per shard); *up gets how many are up. */
int fl_db_service_connections(fl_db_service_t *svc, int *up);

/* Queries and transactions that failed since the process started, process-wide (for /metrics):
 * not connected or the connection dropped (FL_EUNAVAIL), refused by PostgreSQL (FL_EIO), timed out. */
typedef struct {
    long unavailable, refused, timeout;
} fl_db_failures_t;
void fl_db_failure_counts(fl_db_failures_t *out);

#endif
