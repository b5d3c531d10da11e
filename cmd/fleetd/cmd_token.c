/* fleetd token create: a new operator bearer token, printed once; only its hash is stored. */
#include "commands.h"

#include "api/api.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_FLEETS = 1000 };

typedef struct {
    const char *fleets[MAX_FLEETS];
    int nfleets;
    bool admin;
    const char *name;
} token_opts_t;

static int parse_args(token_opts_t *o, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "create") != 0)
        return usage_error("token: expected \"create\" (see fleetd token --help)");
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = NULL;
        if ((strcmp(arg, "--fleet") == 0 || strcmp(arg, "--name") == 0) && i + 1 < argc)
            value = argv[++i];
        else if (strncmp(arg, "--fleet=", 8) == 0)
            value = arg + 8, arg = "--fleet";
        else if (strncmp(arg, "--name=", 7) == 0)
            value = arg + 7, arg = "--name";
        if (strcmp(arg, "--admin") == 0) {
            o->admin = true;
        } else if (value && strcmp(arg, "--fleet") == 0) {
            if (!fl_id_valid(value))
                return usage_error("token create: \"%s\" is not a fleet id (1 to 64 characters of [A-Za-z0-9._-])", value);
            if (o->nfleets == MAX_FLEETS)
                return usage_error("token create: at most %d fleets per token", MAX_FLEETS);
            o->fleets[o->nfleets++] = value;
        } else if (value && strcmp(arg, "--name") == 0) {
            if (strlen(value) > 256)
                return usage_error("token create: --name is longer than 256 characters");
            o->name = value;
        } else {
            return usage_error("token create: unexpected argument \"%s\" (see fleetd token --help)", argv[i]);
        }
    }
    if (o->admin == (o->nfleets > 0))
        return usage_error("token create: give either --fleet FLEET (one or more) or --admin");
    return EXIT_OK;
}

/* One line from a libpq message. */
static const char *one_line(char *msg)
{
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = *(p + 1) ? ' ' : '\0';
    return msg;
}

/* {a,b}: fleet ids need no quoting. */
static char *array_literal(const token_opts_t *o)
{
    size_t len = 3;
    for (int i = 0; i < o->nfleets; i++)
        len += strlen(o->fleets[i]) + 3;
    char *s = fl_malloc(len);
    if (s == NULL)
        return NULL;
    strcpy(s, "{");
    for (int i = 0; i < o->nfleets; i++) {
        strcat(s, i ? ",\"" : "\"");
        strcat(s, o->fleets[i]);
        strcat(s, "\"");
    }
    strcat(s, "}");
    return s;
}

/* In one statement: the unknown fleets (if any, nothing is stored), else the new token's rows. */
static const char create_sql[] = "WITH wanted AS (SELECT DISTINCT unnest($4::text[]) AS fleet_id),"
                                 " missing AS (SELECT fleet_id FROM wanted WHERE fleet_id NOT IN (SELECT id FROM fleets)),"
                                 " token AS (INSERT INTO tokens (name, token_hash, admin)"
                                 "  SELECT $1, $2::bytea, $3::boolean WHERE NOT EXISTS (SELECT 1 FROM missing) RETURNING id),"
                                 " scoped AS (INSERT INTO token_fleets (token_id, fleet_id)"
                                 "  SELECT token.id, wanted.fleet_id FROM token, wanted RETURNING 1)"
                                 " SELECT (SELECT min(fleet_id) FROM missing), (SELECT count(*) FROM scoped)";

static int create(const token_opts_t *o, fl_config_t *cfg)
{
    char token[FL_API_TOKEN_LEN + 1];
    unsigned char hash[32];
    if (fl_api_token_new(token, hash) != FL_OK)
        return runtime_error("token create: libsodium cannot initialise");
    char hash_hex[2 + 64 + 1] = "\\x";
    for (int i = 0; i < 32; i++)
        snprintf(hash_hex + 2 + 2 * i, 3, "%02x", hash[i]);
    char *fleets = array_literal(o);
    if (fleets == NULL)
        return runtime_error("token create: out of memory");

    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", (cfg->db_connect_timeout_ms + 999) / 1000);
    const char *keys[] = {"dbname", "connect_timeout", "fallback_application_name", NULL};
    const char *values[] = {cfg->database_url ? cfg->database_url : "", timeout, "fleetd token", NULL};
    PGconn *pg = PQconnectdbParams(keys, values, 1);
    int rc = EXIT_OK;
    if (pg == NULL || PQstatus(pg) != CONNECTION_OK) {
        rc = runtime_error("token create: cannot connect to the database: %s", pg ? one_line(PQerrorMessage(pg)) : "out of memory");
        goto out;
    }
    const char *params[] = {o->name, hash_hex, o->admin ? "true" : "false", fleets};
    PGresult *res = PQexecParams(pg, create_sql, 4, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = runtime_error("token create: %s", one_line(PQerrorMessage(pg)));
    } else if (!PQgetisnull(res, 0, 0)) {
        rc = runtime_error("token create: no fleet \"%s\" (see fleetd fleet list)", PQgetvalue(res, 0, 0));
    } else {
        printf("%s\n", token);
        fflush(stdout);
    }
    PQclear(res);
out:
    PQfinish(pg);
    fl_free(fleets);
    return rc;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    token_opts_t o = {0};
    int rc = parse_args(&o, argc, argv);
    return rc == EXIT_OK ? create(&o, cfg) : rc;
}

const command_t cmd_token = {
    .name = "token",
    .summary = "create operator bearer tokens",
    .usage = "Usage: fleetd token create (--fleet FLEET [--fleet FLEET ...] | --admin) [--name NAME]\n\n"
             "Creates a bearer token for the operator routes (status, history, live) and prints it, alone\n"
             "on one line. It is shown this once: fleetd stores only its SHA-256. A token holds the fleets\n"
             "given with --fleet, or every fleet with --admin (which the admin routes also need).\n"
             "Use it as `Authorization: Bearer TOKEN`.\n\n"
             "  --fleet FLEET   a fleet the token may read (repeat for more); it must exist\n"
             "  --admin         every fleet, and the admin routes\n"
             "  --name NAME     who or what holds it (shown as presence on the live map)\n\n"
             "Settings: DATABASE_URL, FLEETD_DB_CONNECT_TIMEOUT.\n"
             "Exit status: 0 success, 1 an unknown fleet or the database failed (nothing stored), 2 usage.\n",
    .run = run,
};
