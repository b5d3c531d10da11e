/* fleetd token create / revoke / list: operator bearer tokens. A new token is printed once; only
 * its hash is stored. Revocation sets revoked_at: daemons stop taking the token within their
 * cache's lifetime (FL_API_TOKEN_TTL_MS), or at once after SIGHUP. Blocking libpq: this is not an
 * event-loop thread. */
#include "cli_db.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_FLEETS = 1000, MAX_NAME = 256 };

typedef enum { T_CREATE, T_REVOKE, T_LIST } action_t;

typedef struct {
    action_t action;
    const char *fleets[MAX_FLEETS];
    int nfleets;
    bool admin;
    const char *name;
    const char *target; /* revoke: an id or a name */
    bool json;          /* list */
} token_opts_t;

static int parse_create(token_opts_t *o, int argc, char **argv)
{
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
            if (strlen(value) > MAX_NAME)
                return usage_error("token create: --name is longer than %d characters", MAX_NAME);
            o->name = value;
        } else {
            return usage_error("token create: unexpected argument \"%s\" (see fleetd token --help)", argv[i]);
        }
    }
    if (o->admin == (o->nfleets > 0))
        return usage_error("token create: give either --fleet FLEET (one or more) or --admin");
    return EXIT_OK;
}

static int parse_args(token_opts_t *o, int argc, char **argv)
{
    const char *action = argc < 2 ? "" : argv[1];
    if (strcmp(action, "create") == 0) {
        o->action = T_CREATE;
        return parse_create(o, argc, argv);
    }
    if (strcmp(action, "revoke") == 0) {
        o->action = T_REVOKE;
        if (argc != 3 || argv[2][0] == '-' || argv[2][0] == '\0')
            return usage_error("token revoke: give one token id or name (fleetd token revoke ID_OR_NAME; see fleetd token list)");
        if (strlen(argv[2]) > MAX_NAME)
            return usage_error("token revoke: \"%.32s...\" is longer than any token name (%d characters)", argv[2], MAX_NAME);
        o->target = argv[2];
        return EXIT_OK;
    }
    if (strcmp(action, "list") == 0) {
        o->action = T_LIST;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") != 0)
                return usage_error("token list: unexpected argument \"%s\" (see fleetd token --help)", argv[i]);
            o->json = true;
        }
        return EXIT_OK;
    }
    if (argc < 2)
        return usage_error("token: expected create, revoke or list (see fleetd token --help)");
    return usage_error("token: unknown action \"%s\"; expected create, revoke or list (see fleetd token --help)", action);
}

/* ---- fleetd token create ---- */

/* In one statement: the unknown fleets (if any, nothing is stored), else the new token's rows. */
static const char create_sql[] = "WITH wanted AS (SELECT DISTINCT unnest($4::text[]) AS fleet_id),"
                                 " missing AS (SELECT fleet_id FROM wanted WHERE fleet_id NOT IN (SELECT id FROM fleets)),"
                                 " token AS (INSERT INTO tokens (name, token_hash, admin)"
                                 "  SELECT $1, $2::bytea, $3::boolean WHERE NOT EXISTS (SELECT 1 FROM missing) RETURNING id),"
                                 " scoped AS (INSERT INTO token_fleets (token_id, fleet_id)"
                                 "  SELECT token.id, wanted.fleet_id FROM token, wanted RETURNING 1)"
                                 " SELECT (SELECT min(fleet_id) FROM missing), (SELECT count(*) FROM scoped)";

int token_insert(PGconn *pg, const char *what, const char *name, bool admin, const char *fleets, char token[FL_API_TOKEN_LEN + 1])
{
    unsigned char hash[32];
    if (fl_api_token_new(token, hash) != FL_OK)
        return runtime_error("%s: libsodium cannot initialise", what);
    char hash_hex[2 + 64 + 1] = "\\x";
    for (int i = 0; i < 32; i++)
        snprintf(hash_hex + 2 + 2 * i, 3, "%02x", hash[i]);
    int rc = EXIT_OK;
    const char *params[] = {name, hash_hex, admin ? "true" : "false", fleets};
    PGresult *res = cli_db_query(pg, what, create_sql, 4, params, &rc);
    if (res == NULL)
        return rc;
    if (!PQgetisnull(res, 0, 0))
        rc = runtime_error("%s: no fleet \"%s\" (see fleetd fleet list)", what, PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

static int create(PGconn *pg, const token_opts_t *o)
{
    char *fleets = cli_db_array(o->fleets, o->nfleets);
    if (fleets == NULL)
        return runtime_error("token create: out of memory");
    char token[FL_API_TOKEN_LEN + 1];
    int rc = token_insert(pg, "token create", o->name, o->admin, fleets, token);
    fl_free(fleets);
    if (rc == EXIT_OK) {
        printf("%s\n", token);
        fflush(stdout);
    }
    return rc;
}

/* ---- fleetd token revoke ID_OR_NAME ---- */

#define UTC_MS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* In one statement: the tokens the argument names ($1 an id when it is a number, $2 a name), and
 * the revocation when exactly one of them is live. A revoked token keeps its first revoked_at. */
static const char revoke_sql[] = "WITH matches AS (SELECT id, revoked_at FROM tokens WHERE id = $1::bigint OR name = $2),"
                                 " live AS (SELECT id FROM matches WHERE revoked_at IS NULL),"
                                 " done AS (UPDATE tokens t SET revoked_at = now() FROM live"
                                 "  WHERE t.id = live.id AND (SELECT count(*) FROM live) = 1 RETURNING t.id)"
                                 " SELECT (SELECT count(*) FROM matches), (SELECT count(*) FROM live),"
                                 " (SELECT string_agg(id::text, ', ' ORDER BY id) FROM live), (SELECT id FROM done),"
                                 " (SELECT " UTC_MS("max(revoked_at)") " FROM matches), (SELECT min(id) FROM matches)";

static int revoke(PGconn *pg, const token_opts_t *o)
{
    const char *t = o->target;
    bool numeric = strspn(t, "0123456789") == strlen(t) && strlen(t) <= 18;
    const char *params[] = {numeric ? t : NULL, t};
    int rc = EXIT_OK;
    PGresult *res = cli_db_query(pg, "token revoke", revoke_sql, 2, params, &rc);
    if (res == NULL)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
        rc = runtime_error("token revoke: no token with the id or name \"%s\" (see fleetd token list)", t);
    } else if (!PQgetisnull(res, 0, 3)) {
        printf("token %s revoked; running daemons refuse it within 5 s (at once after SIGHUP)\n", PQgetvalue(res, 0, 3));
    } else if (strcmp(PQgetvalue(res, 0, 1), "0") == 0) {
        printf("token %s was already revoked at %s\n", PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 4));
    } else {
        rc = runtime_error("token revoke: \"%s\" names %s live tokens (ids %s); give the id", t, PQgetvalue(res, 0, 1),
                           PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return rc;
}

/* ---- fleetd token list [--json] ---- */

static const char list_sql[] = "SELECT t.id, t.name, t.admin,"
                               " coalesce((SELECT string_agg(f.fleet_id, ',' ORDER BY f.fleet_id COLLATE \"C\") FROM token_fleets f"
                               "  WHERE f.token_id = t.id), ''),"
                               " " UTC_MS("t.created_at") ", " UTC_MS("t.revoked_at") " FROM tokens t ORDER BY t.id";

/* A name is free text: control characters would break the table's lines. */
static const char *printable(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    for (; *s && n + 1 < outlen; s++)
        out[n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    out[n] = '\0';
    return out;
}

static int list_json(PGresult *res)
{
    json_t *tokens = json_array();
    for (int i = 0; tokens && i < PQntuples(res); i++) {
        json_t *fleets = json_array();
        char *all = fl_strdup(PQgetvalue(res, i, 3)), *save = NULL;
        for (char *f = all ? strtok_r(all, ",", &save) : NULL; f; f = strtok_r(NULL, ",", &save))
            json_array_append_new(fleets, json_string(f));
        fl_free(all);
        json_array_append_new(tokens,
                              json_pack("{s:I,s:o,s:b,s:o,s:s,s:o}", "id", (json_int_t)atoll(PQgetvalue(res, i, 0)), "name",
                                        PQgetisnull(res, i, 1) ? json_null() : json_string(PQgetvalue(res, i, 1)), "admin",
                                        PQgetvalue(res, i, 2)[0] == 't', "fleets", fleets, "created_at", PQgetvalue(res, i, 4),
                                        "revoked_at", PQgetisnull(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5))));
    }
    json_t *doc = json_pack("{s:o}", "tokens", tokens);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL)
        return runtime_error("token list: out of memory");
    printf("%s\n", text);
    free(text);
    return EXIT_OK;
}

static int list(PGconn *pg, const token_opts_t *o)
{
    int rc = EXIT_OK;
    PGresult *res = cli_db_query(pg, "token list", list_sql, 0, NULL, &rc);
    if (res == NULL)
        return rc;
    if (o->json) {
        rc = list_json(res);
    } else if (PQntuples(res) == 0) {
        printf("no tokens\n");
    } else {
        printf("%-6s %-5s  %-24s  %-24s  %-24s  %s\n", "ID", "ADMIN", "CREATED", "REVOKED", "FLEETS", "NAME");
        for (int i = 0; i < PQntuples(res); i++) {
            char name[MAX_NAME * 4 + 1];
            bool admin = PQgetvalue(res, i, 2)[0] == 't';
            printf("%-6s %-5s  %-24s  %-24s  %-24s  %s\n", PQgetvalue(res, i, 0), admin ? "yes" : "no", PQgetvalue(res, i, 4),
                   PQgetisnull(res, i, 5) ? "-" : PQgetvalue(res, i, 5), admin ? "(all)" : PQgetvalue(res, i, 3),
                   PQgetisnull(res, i, 1) ? "-" : printable(PQgetvalue(res, i, 1), name, sizeof(name)));
        }
    }
    PQclear(res);
    return rc;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    token_opts_t o = {0};
    int rc = parse_args(&o, argc, argv);
    if (rc != EXIT_OK)
        return rc;
    PGconn *pg = cli_db_connect(cfg, "fleetd token", &rc);
    if (pg == NULL)
        return rc;
    if (o.action == T_CREATE)
        rc = create(pg, &o);
    else if (o.action == T_REVOKE)
        rc = revoke(pg, &o);
    else
        rc = list(pg, &o);
    PQfinish(pg);
    return rc;
}

const command_t cmd_token = {
    .name = "token",
    .summary = "create, revoke and list operator bearer tokens",
    .usage = "Usage: fleetd token create (--fleet FLEET [--fleet FLEET ...] | --admin) [--name NAME]\n"
             "       fleetd token revoke ID_OR_NAME\n"
             "       fleetd token list [--json]\n\n"
             "Bearer tokens for the operator routes (status, history, live) and, with --admin, the admin\n"
             "routes (/admin/tree, fleetd tree). Use one as `Authorization: Bearer TOKEN`.\n\n"
             "fleetd token create       makes a token and prints it, alone on one line. It is shown this\n"
             "                          once: fleetd stores only its SHA-256.\n"
             "  --fleet FLEET           a fleet the token may read (repeat for more); it must exist\n"
             "  --admin                 every fleet, and the admin routes\n"
             "  --name NAME             who or what holds it (shown as presence on the live map)\n"
             "fleetd token revoke X     revokes the token whose id is X, or the one live token named X.\n"
             "                          Running daemons refuse it within 5 s (their token cache), or at\n"
             "                          once after SIGHUP. Revoking a revoked token changes nothing.\n"
             "fleetd token list         every token: id, admin, created, revoked, fleets and name. Never a\n"
             "                          token or its hash.\n"
             "  --json                  {\"tokens\":[{\"id\",\"name\",\"admin\",\"fleets\",\"created_at\",\"revoked_at\"}]}\n\n"
             "Settings: DATABASE_URL, FLEETD_DB_CONNECT_TIMEOUT.\n"
             "Exit status: 0 success; 1 an unknown fleet (nothing stored), no such token, a name shared by\n"
             "several live tokens, or the database failed; 2 usage.\n",
    .run = run,
};
