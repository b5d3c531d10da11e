/* The migrations runner behind `fleetd migrate`: blocking libpq, one transaction per migration. */
#include "db_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CREATE_TABLE_SQL                                                                                                           \
    "CREATE TABLE IF NOT EXISTS schema_migrations ("                                                                               \
    " version integer PRIMARY KEY,"                                                                                                \
    " name text NOT NULL,"                                                                                                         \
    " checksum text NOT NULL,"                                                                                                     \
    " applied_at timestamptz NOT NULL DEFAULT now())"

typedef struct {
    PGconn *pg;
    const db_params_t *params;
    char *err;
    size_t errlen;
} runner_t;

int fl_migrations_latest(void)
{
    int latest = 0;
    for (const fl_migration_t *m = fl_migrations; m->name != NULL; m++)
        if (m->version > latest)
            latest = m->version;
    return latest;
}

void db_sha256_hex(const char *s, char out[65])
{
    unsigned char hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, (const unsigned char *)s, strlen(s));
    sodium_bin2hex(out, 65, hash, sizeof(hash));
}

/* The 1-based line of sql holding character `position` (PostgreSQL counts characters, not bytes). */
static long line_of(const char *sql, long position)
{
    long line = 1, chars = 0;
    for (const unsigned char *c = (const unsigned char *)sql; *c && chars < position - 1; c++) {
        if ((*c & 0xC0) != 0x80)
            chars++;
        if (*c == '\n')
            line++;
    }
    return line;
}

/* err = "<what>[ at line N]: <message>[ (<detail>)]", one line. */
static int fail(runner_t *r, const PGresult *res, const char *what, const char *sql)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *position = res != NULL ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
    char message[512], more[256] = "", where[32] = "";
    db_message(r->params, NULL, primary != NULL ? primary : PQerrorMessage(r->pg), message, sizeof(message));
    if (detail != NULL)
        db_message(r->params, NULL, detail, more, sizeof(more));
    if (sql != NULL && position != NULL)
        snprintf(where, sizeof(where), " at line %ld", line_of(sql, atol(position)));
    db_errf(r->err, r->errlen, "%s%s: %s%s%s%s", what, where, message, more[0] ? " (" : "", more, more[0] ? ")" : "");
    return PQstatus(r->pg) == CONNECTION_BAD ? FL_EUNAVAIL : FL_EIO;
}

/* Runs one statement; FL_OK when its result has status `want` (kept in *out when out is not NULL). */
static int run(runner_t *r, PGresult **out, ExecStatusType want, const char *what, const char *sql, int nparams,
               const char *const *values)
{
    PGresult *res = nparams > 0 ? PQexecParams(r->pg, sql, nparams, NULL, values, NULL, NULL, 0) : PQexec(r->pg, sql);
    if (res != NULL && PQresultStatus(res) == want) {
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return FL_OK;
    }
    int rc = fail(r, res, what, NULL);
    PQclear(res);
    return rc;
}

static int take_lock(runner_t *r)
{
    const char *key[] = {FL_DB_MIGRATE_LOCK_KEY};
    PGresult *res;
    int rc = run(r, &res, PGRES_TUPLES_OK, "cannot take the migration lock", "SELECT pg_try_advisory_lock($1::bigint)", 1, key);
    if (rc != FL_OK)
        return rc;
    bool taken = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (taken)
        return FL_OK;
    fl_log(FL_LOG_INFO, "db.migrate_waiting", FL_MSG("another fleetd migrate holds the migration lock; waiting for it"));
    return run(r, NULL, PGRES_TUPLES_OK, "cannot take the migration lock", "SELECT pg_advisory_lock($1::bigint)", 1, key);
}

static void release_lock(runner_t *r)
{
    const char *key[] = {FL_DB_MIGRATE_LOCK_KEY};
    if (PQstatus(r->pg) == CONNECTION_OK)
        PQclear(PQexecParams(r->pg, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, key, NULL, NULL, 0));
}

/* The row of `applied` recording version, or -1. */
static int applied_row(const PGresult *applied, int version)
{
    for (int i = 0; i < PQntuples(applied); i++)
        if (atoi(PQgetvalue(applied, i, 0)) == version)
            return i;
    return -1;
}

/* An applied migration whose SQL changed would leave databases that differ while claiming the
 * same version: refuse before applying anything. */
static int verify(runner_t *r, const fl_migration_t *list, const PGresult *applied)
{
    for (int i = 0; i < PQntuples(applied); i++) {
        int version = atoi(PQgetvalue(applied, i, 0));
        const char *name = PQgetvalue(applied, i, 1), *recorded = PQgetvalue(applied, i, 2);
        const fl_migration_t *m = list;
        while (m->name != NULL && m->version != version)
            m++;
        if (m->name == NULL) {
            /* A newer fleetd migrated this database; migrations are additive, so carry on. */
            fl_log(FL_LOG_WARN, "db.migration_unknown", FL_MSG("the database has a migration this fleetd does not know"),
                   FL_INT("version", version), FL_STR("name", name));
            continue;
        }
        char checksum[65];
        db_sha256_hex(m->sql, checksum);
        if (strcmp(checksum, recorded) != 0) {
            db_errf(r->err, r->errlen,
                    "migration %s was changed after it was applied (recorded checksum %.12s, now %.12s): restore it and put "
                    "the change in a new migration",
                    m->name, recorded, checksum);
            return FL_ESTATE;
        }
    }
    return FL_OK;
}

static int apply(runner_t *r, const fl_migration_t *m)
{
    char what[300], checksum[65], version[16];
    snprintf(what, sizeof(what), "migration %s failed", m->name);
    db_sha256_hex(m->sql, checksum);
    snprintf(version, sizeof(version), "%d", m->version);
    int64_t start = fl_now_mono_ms();

    int rc = run(r, NULL, PGRES_COMMAND_OK, what, "BEGIN", 0, NULL);
    if (rc != FL_OK)
        return rc;
    PGresult *res = PQexec(r->pg, m->sql);
    ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        rc = fail(r, res, what, m->sql);
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    if (PQtransactionStatus(r->pg) != PQTRANS_INTRANS) {
        db_errf(r->err, r->errlen, "migration %s ended the runner's transaction: it must not contain BEGIN, COMMIT or ROLLBACK",
                m->name);
        rc = FL_EIO;
        goto rollback;
    }
    const char *values[] = {version, m->name, checksum};
    rc = run(r, NULL, PGRES_COMMAND_OK, what, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", 3,
             values);
    if (rc != FL_OK)
        goto rollback;
    rc = run(r, NULL, PGRES_COMMAND_OK, what, "COMMIT", 0, NULL);
    if (rc != FL_OK)
        return rc; /* a COMMIT that fails has rolled back */
    fl_log(FL_LOG_INFO, "db.migration_applied", FL_MSG("migration applied"), FL_INT("version", m->version), FL_STR("name", m->name),
           FL_STR("checksum", checksum), FL_INT("duration_ms", fl_now_mono_ms() - start));
    return FL_OK;

rollback:
    if (PQstatus(r->pg) == CONNECTION_OK)
        PQclear(PQexec(r->pg, "ROLLBACK"));
    return rc;
}

static int check_list(const fl_migration_t *list, char *err, size_t errlen)
{
    int previous = 0;
    for (const fl_migration_t *m = list; m->name != NULL; m++) {
        if (m->version <= previous || m->sql == NULL) {
            db_errf(err, errlen, "migration %s: versions must be positive and strictly increasing (two files share a number?)",
                    m->name);
            return FL_ESTATE;
        }
        previous = m->version;
    }
    return FL_OK;
}

int fl_db_migrate_list(const char *conninfo, const fl_migration_t *list, int connect_timeout_ms, db_migrate_report_t *report,
                       char *err, size_t errlen)
{
    db_migrate_report_t done = {0, 0};
    if (report != NULL)
        *report = done;
    int rc = check_list(list, err, errlen);
    if (rc != FL_OK)
        return rc;
    if (sodium_init() < 0) {
        db_errf(err, errlen, "libsodium cannot initialise");
        return FL_EIO;
    }
    db_params_t params;
    rc = db_params_init(&params, conninfo, "fleetd-migrate", 0, err, errlen);
    if (rc != FL_OK)
        return rc;
    runner_t r = {.params = &params, .err = err, .errlen = errlen};
    PGresult *applied = NULL;
    rc = db_connect_blocking(&params, connect_timeout_ms, &r.pg, err, errlen);
    if (rc != FL_OK)
        goto out_params;

    /* Under the lock, CREATE TABLE IF NOT EXISTS cannot race with another node's. */
    rc = take_lock(&r);
    if (rc != FL_OK)
        goto out_conn;
    rc = run(&r, NULL, PGRES_COMMAND_OK, "cannot create schema_migrations", CREATE_TABLE_SQL, 0, NULL);
    if (rc != FL_OK)
        goto out_unlock;
    rc = run(&r, &applied, PGRES_TUPLES_OK, "cannot read schema_migrations",
             "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0, NULL);
    if (rc != FL_OK)
        goto out_unlock;
    rc = verify(&r, list, applied);
    if (rc != FL_OK)
        goto out_applied;

    for (int i = 0; i < PQntuples(applied); i++)
        if (atoi(PQgetvalue(applied, i, 0)) > done.version)
            done.version = atoi(PQgetvalue(applied, i, 0));
    for (const fl_migration_t *m = list; m->name != NULL; m++) {
        if (applied_row(applied, m->version) >= 0)
            continue;
        rc = apply(&r, m);
        if (rc != FL_OK)
            break;
        done.applied++;
        if (m->version > done.version)
            done.version = m->version;
    }
    if (report != NULL)
        *report = done;

out_applied:
    PQclear(applied);
out_unlock:
    release_lock(&r);
out_conn:
    PQfinish(r.pg);
out_params:
    db_params_free(&params);
    return rc;
}

int fl_db_migrate(const char *conninfo, int connect_timeout_ms, char *err, size_t errlen)
{
    db_migrate_report_t report;
    int rc = fl_db_migrate_list(conninfo, fl_migrations, connect_timeout_ms, &report, err, errlen);
    if (rc != FL_OK)
        return rc;
    if (report.applied == 0)
        printf("schema up to date at version %d\n", report.version);
    else
        printf("applied %d migration%s, schema at version %d\n", report.applied, report.applied == 1 ? "" : "s", report.version);
    fflush(stdout);
    return FL_OK;
}
