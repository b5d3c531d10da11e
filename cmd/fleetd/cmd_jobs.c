/* fleetd jobs: the job queue as an operator sees it (counts per queue and state, the failing jobs
 * with their last error), and retrying or cancelling one job. Blocking libpq: this is not an event
 * loop thread. */
#include "cli_db.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The states in their life order: the table's columns. */
static const char *const states[] = {"available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"};
#define NSTATES 7

static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *values, int *exit_code)
{
    return cli_db_query(pg, "jobs", sql, n, values, exit_code);
}

/* ---- fleetd jobs [--json] [--limit N] ---- */

static const char counts_sql[] = "SELECT queue, state::text, count(*) FROM jobs GROUP BY queue, state ORDER BY queue";

static const char failing_sql[] = "SELECT id, queue, kind, state::text, attempt, max_attempts,"
                                  " coalesce(errors->-1->>'at', to_char(coalesce(discarded_at, attempted_at) AT TIME ZONE 'UTC',"
                                  "          'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')),"
                                  " errors->-1->>'error',"
                                  " to_char(scheduled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
                                  " FROM jobs WHERE state IN ('retryable', 'discarded')"
                                  " ORDER BY coalesce(discarded_at, attempted_at, inserted_at) DESC, id DESC LIMIT $1";

typedef struct {
    char queue[65];
    long long n[NSTATES];
} row_t;

static int state_index(const char *s)
{
    for (int i = 0; i < NSTATES; i++)
        if (strcmp(states[i], s) == 0)
            return i;
    return -1;
}

/* Folds newlines and cuts long errors for one table line. */
static void one_line(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (const char *c = in ? in : ""; *c && o + 4 < outlen; c++)
        out[o++] = (*c == '\n' || *c == '\r' || *c == '\t') ? ' ' : *c;
    out[o] = '\0';
    if (in && strlen(in) > o)
        snprintf(out + o, outlen - o, "...");
}

static int list(PGconn *pg, bool json, int limit)
{
    int rc = EXIT_OK;
    PGresult *counts = query(pg, counts_sql, 0, NULL, &rc);
    if (counts == NULL)
        return rc;
    char limit_text[16];
    snprintf(limit_text, sizeof(limit_text), "%d", limit);
    const char *values[] = {limit_text};
    PGresult *failing = query(pg, failing_sql, 1, values, &rc);
    if (failing == NULL) {
        PQclear(counts);
        return rc;
    }

    int nrows = 0;
    row_t *rows = calloc((size_t)PQntuples(counts) + 1, sizeof(*rows));
    if (rows == NULL) {
        PQclear(counts);
        PQclear(failing);
        return runtime_error("out of memory");
    }
    for (int i = 0; i < PQntuples(counts); i++) {
        const char *q = PQgetvalue(counts, i, 0);
        if (nrows == 0 || strcmp(rows[nrows - 1].queue, q) != 0)
            snprintf(rows[nrows++].queue, sizeof(rows[0].queue), "%s", q);
        int s = state_index(PQgetvalue(counts, i, 1));
        if (s >= 0)
            rows[nrows - 1].n[s] = atoll(PQgetvalue(counts, i, 2));
    }

    if (json) {
        json_t *doc = json_object(), *queues = json_array(), *fail = json_array();
        for (int i = 0; i < nrows; i++) {
            json_t *q = json_pack("{s:s}", "queue", rows[i].queue);
            for (int s = 0; s < NSTATES; s++)
                json_object_set_new(q, states[s], json_integer(rows[i].n[s]));
            json_array_append_new(queues, q);
        }
        for (int i = 0; i < PQntuples(failing); i++) {
            json_t *f = json_pack("{s:I,s:s,s:s,s:s,s:i,s:i}", "id", (json_int_t)atoll(PQgetvalue(failing, i, 0)), "queue",
                                  PQgetvalue(failing, i, 1), "kind", PQgetvalue(failing, i, 2), "state", PQgetvalue(failing, i, 3),
                                  "attempt", atoi(PQgetvalue(failing, i, 4)), "max_attempts", atoi(PQgetvalue(failing, i, 5)));
            json_object_set_new(f, "at", PQgetisnull(failing, i, 6) ? json_null() : json_string(PQgetvalue(failing, i, 6)));
            json_object_set_new(f, "error", PQgetisnull(failing, i, 7) ? json_null() : json_string(PQgetvalue(failing, i, 7)));
            if (strcmp(PQgetvalue(failing, i, 3), "retryable") == 0)
                json_object_set_new(f, "retry_at", json_string(PQgetvalue(failing, i, 8)));
            json_array_append_new(fail, f);
        }
        json_object_set_new(doc, "queues", queues);
        json_object_set_new(doc, "failing", fail);
        char *text = json_dumps(doc, JSON_COMPACT);
        if (text == NULL) {
            rc = runtime_error("out of memory");
        } else {
            printf("%s\n", text);
            free(text);
        }
        json_decref(doc);
    } else if (nrows == 0) {
        printf("no jobs\n");
    } else {
        printf("%-20s", "QUEUE");
        for (int s = 0; s < NSTATES; s++) {
            char head[16];
            int k = 0;
            for (const char *c = states[s]; *c && k < 15; c++)
                head[k++] = (char)(*c - 'a' + 'A');
            head[k] = '\0';
            printf(" %10s", head);
        }
        printf("\n");
        for (int i = 0; i < nrows; i++) {
            printf("%-20s", rows[i].queue);
            for (int s = 0; s < NSTATES; s++)
                printf(" %10lld", rows[i].n[s]);
            printf("\n");
        }
        int nf = PQntuples(failing);
        if (nf == 0) {
            printf("\nno failing jobs\n");
        } else {
            printf("\nfailing jobs (retryable and discarded, newest first, at most %d):\n", limit);
            printf("%-10s %-16s %-16s %-10s %-8s %-24s %s\n", "ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "LAST ERROR AT",
                   "LAST ERROR");
            for (int i = 0; i < nf; i++) {
                char attempt[24], err[120];
                snprintf(attempt, sizeof(attempt), "%s/%s", PQgetvalue(failing, i, 4), PQgetvalue(failing, i, 5));
                one_line(PQgetisnull(failing, i, 7) ? "" : PQgetvalue(failing, i, 7), err, sizeof(err));
                printf("%-10s %-16s %-16s %-10s %-8s %-24s %s\n", PQgetvalue(failing, i, 0), PQgetvalue(failing, i, 1),
                       PQgetvalue(failing, i, 2), PQgetvalue(failing, i, 3), attempt,
                       PQgetisnull(failing, i, 6) ? "-" : PQgetvalue(failing, i, 6), err);
            }
        }
    }
    free(rows);
    PQclear(counts);
    PQclear(failing);
    return rc;
}

/* ---- fleetd jobs retry ID / cancel ID ---- */

/* A job back to available at once, keeping its attempts; one more attempt when it had used them
 * all. Its queue's producers are woken (channel fleetd_jobs: FL_JOBS_CHANNEL in lib/jobs). */
static const char retry_sql[] = "WITH retried AS ("
                                "  UPDATE jobs SET state = 'available', scheduled_at = now(),"
                                "   max_attempts = greatest(max_attempts, attempt + 1),"
                                "   discarded_at = NULL, cancelled_at = NULL"
                                "  WHERE id = $1 AND state IN ('discarded', 'retryable', 'cancelled')"
                                "  RETURNING id, queue, attempt, max_attempts"
                                ")"
                                " SELECT id, queue, attempt, max_attempts, pg_notify('fleetd_jobs', queue) FROM retried";

/* Any state but completed. A running job's worker is not interrupted: its outcome is ignored. */
static const char cancel_sql[] = "UPDATE jobs j SET state = 'cancelled', cancelled_at = now(), lease_until = NULL"
                                 " FROM jobs old WHERE j.id = $1 AND old.id = j.id AND j.state NOT IN ('completed', 'cancelled')"
                                 " RETURNING old.state::text, old.attempted_by";

static const char state_sql[] = "SELECT state::text FROM jobs WHERE id = $1";

static int parse_id(const char *s, long long *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1)
        return -1;
    *id = v;
    return 0;
}

/* Why a retry or cancel changed nothing: no such job (exit 1), or its state. */
static int explain(PGconn *pg, const char *id, const char *verb, const char *allowed)
{
    int rc = EXIT_OK;
    const char *values[] = {id};
    PGresult *res = query(pg, state_sql, 1, values, &rc);
    if (res == NULL)
        return rc;
    if (PQntuples(res) == 0)
        rc = runtime_error("jobs %s: no job %s", verb, id);
    else if (strcmp(verb, "cancel") == 0 && strcmp(PQgetvalue(res, 0, 0), "cancelled") == 0)
        printf("job %s was already cancelled\n", id);
    else
        rc = runtime_error("jobs %s: job %s is %s; only %s jobs can be %s", verb, id, PQgetvalue(res, 0, 0), allowed,
                           strcmp(verb, "retry") == 0 ? "retried" : "cancelled");
    PQclear(res);
    return rc;
}

static int retry(PGconn *pg, const char *id)
{
    int rc = EXIT_OK;
    const char *values[] = {id};
    PGresult *res = query(pg, retry_sql, 1, values, &rc);
    if (res == NULL)
        return rc;
    if (PQntuples(res) == 0)
        rc = explain(pg, id, "retry", "discarded, retryable or cancelled");
    else
        printf("job %s is available again in queue %s (%s attempts made, up to %s allowed)\n", id, PQgetvalue(res, 0, 1),
               PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
    PQclear(res);
    return rc;
}

static int cancel(PGconn *pg, const char *id)
{
    int rc = EXIT_OK;
    const char *values[] = {id};
    PGresult *res = query(pg, cancel_sql, 1, values, &rc);
    if (res == NULL)
        return rc;
    if (PQntuples(res) == 0) {
        rc = explain(pg, id, "cancel", "not completed");
    } else if (strcmp(PQgetvalue(res, 0, 0), "executing") == 0) {
        printf("job %s cancelled; it was running on node %s, whose worker finishes but whose outcome is ignored\n", id,
               PQgetisnull(res, 0, 1) ? "?" : PQgetvalue(res, 0, 1));
    } else {
        printf("job %s cancelled (it was %s)\n", id, PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    bool json = false;
    int limit = 20;
    const char *action = NULL, *id_text = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--limit") == 0 || strncmp(argv[i], "--limit=", 8) == 0) {
            const char *v = argv[i][7] == '=' ? argv[i] + 8 : i + 1 < argc ? argv[++i] : "";
            char *end;
            long n = strtol(v, &end, 10);
            if (*v == '\0' || *end != '\0' || n < 0 || n > 10000)
                return usage_error("jobs: --limit takes a number from 0 to 10000, not \"%s\"", v);
            limit = (int)n;
        } else if (action == NULL && (strcmp(argv[i], "retry") == 0 || strcmp(argv[i], "cancel") == 0)) {
            action = argv[i];
        } else if (action != NULL && id_text == NULL && argv[i][0] != '-') {
            id_text = argv[i];
        } else {
            return usage_error("jobs: unexpected argument \"%s\" (see fleetd jobs --help)", argv[i]);
        }
    }
    long long id = 0;
    if (action && id_text == NULL)
        return usage_error("jobs %s: which job? (fleetd jobs %s ID)", action, action);
    if (action && parse_id(id_text, &id) != 0)
        return usage_error("jobs %s: \"%s\" is not a job id (a positive integer)", action, id_text);
    if (action && json)
        return usage_error("jobs %s: --json is for the listing only", action);

    int rc = EXIT_OK;
    PGconn *pg = cli_db_connect(cfg, "fleetd jobs", &rc);
    if (pg == NULL)
        return rc;
    if (action == NULL) {
        rc = list(pg, json, limit);
    } else {
        char idbuf[24];
        snprintf(idbuf, sizeof(idbuf), "%lld", id);
        rc = strcmp(action, "retry") == 0 ? retry(pg, idbuf) : cancel(pg, idbuf);
    }
    PQfinish(pg);
    return rc;
}

const command_t cmd_jobs = {
    .name = "jobs",
    .summary = "inspect the job queue; retry or cancel a job",
    .usage = "Usage: fleetd jobs [--json] [--limit N]\n"
             "       fleetd jobs retry ID\n"
             "       fleetd jobs cancel ID\n\n"
             "fleetd jobs        prints how many jobs each queue has in each state (available, scheduled,\n"
             "                   executing, retryable, completed, discarded, cancelled), then the failing\n"
             "                   jobs (retryable and discarded), newest first, with their last error.\n"
             "  --json           the same as one JSON object: {\"queues\":[{\"queue\",\"available\",...}],\n"
             "                   \"failing\":[{\"id\",\"queue\",\"kind\",\"state\",\"attempt\",\"max_attempts\",\"at\",\n"
             "                   \"error\",\"retry_at\"}]}\n"
             "  --limit N        at most N failing jobs (default 20)\n\n"
             "fleetd jobs retry ID\n"
             "                   puts a discarded, retryable or cancelled job back to available at once. Its\n"
             "                   attempts so far are kept; a job that had used all of them gets one more.\n"
             "fleetd jobs cancel ID\n"
             "                   cancels a job in any state but completed; it will not run (again). A job\n"
             "                   running right now is not interrupted, but its outcome is ignored.\n\n"
             "Settings: DATABASE_URL, FLEETD_DB_CONNECT_TIMEOUT.\n"
             "Exit status: 0 success, 1 the database is unreachable, no such job, or the job is in a\n"
             "state that does not allow it, 2 usage error.\n",
    .run = run,
};
