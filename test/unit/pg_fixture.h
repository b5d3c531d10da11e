/* Tests against the real PostgreSQL named by DATABASE_URL (a superuser URL; scripts/test starts a
 * throwaway server and sets it): databases made per test file, named fleetd_test_<file>_<pid>_*,
 * dropped at the end, and plain blocking libpq for the test's own checks. Include after cmocka.h. */
#ifndef PG_FIXTURE_H
#define PG_FIXTURE_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_FIXTURE_MAX_DATABASES 32

static const char *admin_url;
static const char *fixture_name;
static char *databases[PG_FIXTURE_MAX_DATABASES]; /* name, conninfo, name, conninfo, ... */
static int ndatabases;

static inline void quiet_notices(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static inline PGconn *connect_to(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", conninfo, PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, quiet_notices, NULL);
    return pg;
}

static inline void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
}

/* Runs sql (no parameters) on a fresh connection to conninfo. */
static inline void exec_on(const char *conninfo, const char *sql)
{
    PGconn *pg = connect_to(conninfo);
    exec_ok(pg, sql);
    PQfinish(pg);
}

/* The first value of the first row of sql (with up to one text parameter), or NULL. Caller frees. */
static inline char *value_of(const char *conninfo, const char *sql, const char *param)
{
    PGconn *pg = connect_to(conninfo);
    const char *values[] = {param};
    PGresult *res = PQexecParams(pg, sql, param ? 1 : 0, NULL, param ? values : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(pg));
    char *v = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    PQfinish(pg);
    return v;
}

static inline long long_of(const char *conninfo, const char *sql)
{
    char *v = value_of(conninfo, sql, NULL);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

/* ' and \ escaped for a key='value' conninfo. */
static inline void append_quoted(char *out, size_t outlen, const char *key, const char *value)
{
    size_t len = strlen(out);
    len += (size_t)snprintf(out + len, outlen - len, "%s%s='", len ? " " : "", key);
    for (const char *c = value; *c && len + 3 < outlen; c++) {
        if (*c == '\'' || *c == '\\')
            out[len++] = '\\';
        out[len++] = *c;
    }
    snprintf(out + len, outlen - len, "'");
}

/* DATABASE_URL with another database name, as a key=value conninfo. */
static inline char *conninfo_for(const char *dbname)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(admin_url, &perr);
    if (opts == NULL)
        fail_msg("DATABASE_URL cannot be parsed: %s", perr ? perr : "out of memory");
    char out[2048] = "";
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val != NULL && strcmp(o->keyword, "dbname") != 0)
            append_quoted(out, sizeof(out), o->keyword, o->val);
    append_quoted(out, sizeof(out), "dbname", dbname);
    PQconninfoFree(opts);
    return strdup(out);
}

/* A new empty database; returns its conninfo (freed by pg_fixture_teardown). */
static inline char *new_database(const char *suffix)
{
    assert_true(ndatabases + 2 <= PG_FIXTURE_MAX_DATABASES);
    char name[128], sql[256];
    snprintf(name, sizeof(name), "fleetd_test_%s_%d_%s", fixture_name, (int)getpid(), suffix);
    PGconn *pg = connect_to(admin_url);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    exec_ok(pg, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
    exec_ok(pg, sql);
    PQfinish(pg);
    databases[ndatabases++] = strdup(name);
    char *conninfo = conninfo_for(name);
    databases[ndatabases++] = conninfo;
    return conninfo;
}

/* Fails loudly (the group does not run) when DATABASE_URL is missing or unreachable. */
static inline int pg_fixture_setup(const char *name)
{
    fixture_name = name;
    admin_url = getenv("DATABASE_URL");
    if (admin_url == NULL || admin_url[0] == '\0') {
        fprintf(stderr,
                "%s: DATABASE_URL is not set. These tests need a PostgreSQL superuser URL, e.g.\n"
                "  DATABASE_URL='postgresql:///postgres?host=/tmp/pgdb&user=postgres'\n"
                "(scripts/test starts a throwaway server and sets it).\n",
                name);
        return -1;
    }
    PGconn *pg = PQconnectdb(admin_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "%s: cannot connect to DATABASE_URL: %s", name, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    PQfinish(pg);
    return 0;
}

/* Drops every database the file made; -1 (and a line on stderr) when one could not be dropped. */
static inline int pg_fixture_teardown(void)
{
    if (admin_url == NULL || admin_url[0] == '\0')
        return 0;
    PGconn *pg = PQconnectdb(admin_url);
    int rc = 0;
    for (int i = 0; i < ndatabases; i += 2) {
        char sql[256];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", databases[i]);
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "%s: cannot drop %s: %s", fixture_name, databases[i], PQerrorMessage(pg));
            rc = -1;
        }
        PQclear(res);
        free(databases[i]);
        free(databases[i + 1]);
    }
    ndatabases = 0;
    PQfinish(pg);
    return rc;
}

#endif
