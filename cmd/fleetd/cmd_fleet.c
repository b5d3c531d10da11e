/* fleetd fleet create / list: the fleets partners write to and operators watch. Blocking libpq:
 * this is not an event-loop thread. */
#include "cli_db.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fleetd fleet create ID [--name NAME] ---- */

static const char create_sql[] = "INSERT INTO fleets (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id";

int fleet_insert(PGconn *pg, const char *what, const char *id, const char *name, bool *created)
{
    int rc = EXIT_OK;
    const char *values[] = {id, name};
    PGresult *res = cli_db_query(pg, what, create_sql, 2, values, &rc);
    if (res == NULL)
        return rc;
    *created = PQntuples(res) > 0;
    PQclear(res);
    return EXIT_OK;
}

static int create(fl_config_t *cfg, int argc, char **argv)
{
    const char *id = NULL, *name = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strncmp(argv[i], "--name=", 7) == 0)
            name = argv[i] + 7;
        else if (id == NULL && argv[i][0] != '-')
            id = argv[i];
        else
            return usage_error("fleet create: unexpected argument \"%s\" (see fleetd fleet --help)", argv[i]);
    }
    if (id == NULL)
        return usage_error("fleet create: which fleet? (fleetd fleet create ID [--name NAME])");
    if (!fl_id_valid(id))
        return usage_error("fleet create: \"%s\" is not a fleet id (1 to 64 characters of [A-Za-z0-9._-])", id);
    if (name && strlen(name) > 256)
        return usage_error("fleet create: --name is longer than 256 characters");

    int rc = EXIT_OK;
    PGconn *pg = cli_db_connect(cfg, "fleetd fleet", &rc);
    if (pg == NULL)
        return rc;
    bool created = false;
    rc = fleet_insert(pg, "fleet create", id, name, &created);
    if (rc == EXIT_OK && !created)
        rc = runtime_error("fleet create: fleet \"%s\" already exists", id);
    else if (rc == EXIT_OK)
        printf("fleet %s created\n", id);
    PQfinish(pg);
    return rc;
}

/* ---- fleetd fleet list [--json] ---- */

static const char list_sql[] = "SELECT f.id, f.name, (SELECT count(*) FROM vehicles v WHERE v.fleet_id = f.id),"
                               " to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
                               " FROM fleets f ORDER BY f.id COLLATE \"C\"";

static int list(fl_config_t *cfg, int argc, char **argv)
{
    bool json = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return usage_error("fleet list: unexpected argument \"%s\" (see fleetd fleet --help)", argv[i]);
    }
    int rc = EXIT_OK;
    PGconn *pg = cli_db_connect(cfg, "fleetd fleet", &rc);
    if (pg == NULL)
        return rc;
    PGresult *res = cli_db_query(pg, "fleet list", list_sql, 0, NULL, &rc);
    if (res == NULL) {
        PQfinish(pg);
        return rc;
    }
    int n = PQntuples(res);
    if (json) {
        json_t *fleets = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(fleets,
                                  json_pack("{s:s,s:o,s:I,s:s}", "id", PQgetvalue(res, i, 0), "name",
                                            PQgetisnull(res, i, 1) ? json_null() : json_string(PQgetvalue(res, i, 1)), "vehicles",
                                            (json_int_t)atoll(PQgetvalue(res, i, 2)), "created_at", PQgetvalue(res, i, 3)));
        json_t *doc = json_pack("{s:o}", "fleets", fleets);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text == NULL) {
            rc = runtime_error("fleet list: out of memory");
        } else {
            printf("%s\n", text);
            free(text);
        }
        json_decref(doc);
    } else if (n == 0) {
        printf("no fleets\n");
    } else {
        printf("%-24s %-30s %8s  %s\n", "ID", "NAME", "VEHICLES", "CREATED");
        for (int i = 0; i < n; i++)
            printf("%-24s %-30s %8s  %s\n", PQgetvalue(res, i, 0), PQgetisnull(res, i, 1) ? "-" : PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    }
    PQclear(res);
    PQfinish(pg);
    return rc;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    if (argc >= 2 && strcmp(argv[1], "create") == 0)
        return create(cfg, argc, argv);
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return list(cfg, argc, argv);
    if (argc < 2)
        return usage_error("fleet: expected \"create\" or \"list\" (see fleetd fleet --help)");
    return usage_error("fleet: unknown action \"%s\"; expected \"create\" or \"list\" (see fleetd fleet --help)", argv[1]);
}

const command_t cmd_fleet = {
    .name = "fleet",
    .summary = "create and list fleets",
    .usage = "Usage: fleetd fleet create ID [--name NAME]\n"
             "       fleetd fleet list [--json]\n\n"
             "fleetd fleet create ID   adds a fleet: the vehicles partners report are grouped by fleet, and\n"
             "                         partners and operator tokens are given fleets. ID is 1 to 64\n"
             "                         characters of [A-Za-z0-9._-] and cannot be changed later.\n"
             "  --name NAME            a display name (up to 256 characters)\n"
             "fleetd fleet list        every fleet with its name, how many vehicles it has and when it was\n"
             "                         created (UTC).\n"
             "  --json                 {\"fleets\":[{\"id\",\"name\",\"vehicles\",\"created_at\"}]}\n\n"
             "Settings: DATABASE_URL, FLEETD_DB_CONNECT_TIMEOUT.\n"
             "Exit status: 0 success, 1 the fleet already exists or the database failed, 2 usage error.\n",
    .run = run,
};
