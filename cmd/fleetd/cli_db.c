/* Blocking libpq for the administration commands (cli_db.h). */
#include "cli_db.h"

#include <stdio.h>
#include <string.h>

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

const char *cli_db_first_line(const char *msg, char *out, size_t outlen)
{
    snprintf(out, outlen, "%.*s", (int)strcspn(msg ? msg : "", "\n"), msg ? msg : "");
    return out;
}

PGconn *cli_db_connect(const fl_config_t *cfg, const char *app, int *rc)
{
    const char *url = cfg->database_url ? cfg->database_url : "";
    char timeout[16], line[512];
    snprintf(timeout, sizeof(timeout), "%d", (cfg->db_connect_timeout_ms + 999) / 1000);
    /* Settings in DATABASE_URL win over these defaults: they come later, in the expansion of dbname. */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *values[] = {timeout, app, url, NULL};
    if (url[0]) {
        char *perr = NULL;
        PQconninfoOption *parsed = PQconninfoParse(url, &perr);
        if (parsed == NULL) {
            *rc = usage_error("DATABASE_URL: %s", cli_db_first_line(perr ? perr : "cannot be parsed", line, sizeof(line)));
            PQfreemem(perr);
            return NULL;
        }
        PQconninfoFree(parsed);
    }
    PGconn *pg = PQconnectdbParams(keys, values, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        *rc = runtime_error("cannot connect to the database: %s",
                            cli_db_first_line(pg ? PQerrorMessage(pg) : "out of memory", line, sizeof(line)));
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, quiet, NULL);
    return pg;
}

PGresult *cli_db_query_ex(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, const int *lengths,
                          const int *formats, int binary_result, int *rc)
{
    PGresult *res = PQexecParams(pg, sql, n, NULL, values, lengths, formats, binary_result);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    char line[512];
    if (state && strcmp(state, "42P01") == 0) /* undefined_table */
        *rc = runtime_error("%s: the database has no fleetd tables yet (%s): run fleetd migrate first", what, msg ? msg : "");
    else
        *rc = runtime_error("%s: %s", what, msg ? msg : cli_db_first_line(PQerrorMessage(pg), line, sizeof(line)));
    PQclear(res);
    return NULL;
}

PGresult *cli_db_query(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, int *rc)
{
    return cli_db_query_ex(pg, what, sql, n, values, NULL, NULL, 0, rc);
}

bool cli_db_exec(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, int *rc)
{
    PGresult *res = cli_db_query(pg, what, sql, n, values, rc);
    PQclear(res);
    return res != NULL;
}

/* Quoted, so that an id such as NULL stays a string. */
char *cli_db_array(const char *const *ids, int n)
{
    size_t len = 3;
    for (int i = 0; i < n; i++)
        len += strlen(ids[i]) + 3;
    char *s = fl_malloc(len);
    if (s == NULL)
        return NULL;
    strcpy(s, "{");
    for (int i = 0; i < n; i++) {
        strcat(s, i ? ",\"" : "\"");
        strcat(s, ids[i]);
        strcat(s, "\"");
    }
    strcat(s, "}");
    return s;
}
