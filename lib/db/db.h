/*
 * fleetd db: PostgreSQL through libpq, in two shapes.
 *  - fl_db_migrate: the blocking migrations runner behind `fleetd migrate` (command line only).
 *  - fl_db_t: an asynchronous connection owned by one shard and driven by that shard's event
 *    loop; the loop thread never blocks on the database.
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
 * before fl_runtime_free. Callbacks still pending run at once with FL_ECLOSED. NULL is a no-op. */
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
 * FL_EINVAL, FL_ENOMEM or FL_ECLOSED; on any of these cb never runs. */
int fl_db_query(fl_db_t *db, const char *sql, int nparams, const char *const *values, fl_db_result_fn cb, void *arg);

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

#endif
