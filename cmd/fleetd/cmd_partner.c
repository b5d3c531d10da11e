/* fleetd partner create / rotate / retire / list: the partners that POST signed batches and their
 * signing secrets. A secret is printed once and stored only sealed under the master key
 * (lib/ingest/secrets.c). Every change commits together with NOTIFY fleetd_partners, so running
 * daemons reload their partner cache. Blocking libpq: this is not an event-loop thread. */
#include "cli_db.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_FLEETS = 1000 };

typedef struct {
    const char *action;
    const char *id;
    const char *fleets[MAX_FLEETS];
    int nfleets;
    bool json;
    bool force;
} partner_opts_t;

/* ---- the master key ---- */

/* Loads it; a missing key is a runtime failure (exit 1), a malformed one a configuration error. */
int partner_load_master(const fl_config_t *cfg, const char *what, uint8_t master[FL_MASTER_KEY_BYTES])
{
    char err[512];
    int st = fl_master_key_load(cfg, master, err, sizeof(err));
    if (st == FL_OK)
        return EXIT_OK;
    return st == FL_EINVAL ? usage_error("%s: %s", what, err) : runtime_error("%s: %s", what, err);
}

/* A new secret would be useless if the daemons hold another master key, so the key must open the
 * live secrets already stored (of the partner, or of anyone for a new partner), when there are
 * any: one that does proves it is the same key. --force skips this, e.g. after a lost master key
 * when every secret is being replaced. */
static const char sample_sql[] = "SELECT nonce, secret_ciphertext FROM partner_secrets"
                                 " WHERE retired_at IS NULL AND ($1::text IS NULL OR partner_id = $1) ORDER BY id DESC LIMIT 5";

int partner_check_master(PGconn *pg, const char *what, const char *partner, const uint8_t master[FL_MASTER_KEY_BYTES])
{
    int rc = EXIT_OK;
    const char *values[] = {partner};
    PGresult *res = cli_db_query_ex(pg, what, sample_sql, 1, values, NULL, NULL, 1, &rc);
    if (res == NULL)
        return rc;
    int n = PQntuples(res);
    bool opened = n == 0;
    for (int i = 0; i < n && !opened; i++) {
        uint8_t secret[FL_SECRET_BYTES];
        opened = PQgetlength(res, i, 0) == 24 &&
                 fl_secret_open(master, (const uint8_t *)PQgetvalue(res, i, 0), (const uint8_t *)PQgetvalue(res, i, 1),
                                (size_t)PQgetlength(res, i, 1), secret) == FL_OK;
        sodium_memzero(secret, sizeof(secret));
    }
    PQclear(res);
    if (!opened)
        return runtime_error("%s: the master key does not open the secrets already stored%s%s%s: it is not the key fleetd "
                             "serves with (check FLEETD_MASTER_KEY or FLEETD_MASTER_KEY_FILE; --force stores it anyway)",
                             what, partner ? " for partner \"" : "", partner ? partner : "", partner ? "\"" : "");
    return EXIT_OK;
}

/* ---- secrets ---- */

static const char insert_secret_sql[] = "INSERT INTO partner_secrets (partner_id, secret_ciphertext, nonce) VALUES ($1, $2, $3)";
static const char notify_sql[] = "SELECT pg_notify('fleetd_partners', $1)";

/* Generates a secret and stores it sealed; text gets its "whsec_..." form to print after COMMIT. */
bool partner_add_secret(PGconn *pg, const char *what, const char *partner, const uint8_t master[FL_MASTER_KEY_BYTES], char text[64],
                        int *rc)
{
    uint8_t secret[FL_SECRET_BYTES], nonce[24], box[FL_SECRET_BYTES + 16];
    fl_secret_generate(secret, text);
    fl_secret_seal(master, secret, nonce, box);
    sodium_memzero(secret, sizeof(secret));
    const char *values[] = {partner, (const char *)box, (const char *)nonce};
    const int lengths[] = {0, (int)sizeof(box), (int)sizeof(nonce)};
    const int formats[] = {0, 1, 1};
    PGresult *res = cli_db_query_ex(pg, what, insert_secret_sql, 3, values, lengths, formats, 0, rc);
    PQclear(res);
    return res != NULL;
}

/* Commits and prints the secret, alone on one line, only once it is stored. */
static int commit_and_print(PGconn *pg, const char *what, char text[64])
{
    int rc = EXIT_OK;
    if (cli_db_exec(pg, what, "COMMIT", 0, NULL, &rc)) {
        printf("%s\n", text);
        if (fflush(stdout) != 0)
            rc = runtime_error("%s: cannot write the secret to standard output", what);
    }
    sodium_memzero(text, 64);
    return rc;
}

/* ---- fleetd partner create ID --fleet FLEET ... ---- */

static const char missing_fleet_sql[] = "SELECT f FROM unnest($1::text[]) f WHERE NOT EXISTS (SELECT 1 FROM fleets WHERE id = f)"
                                        " ORDER BY f COLLATE \"C\" LIMIT 1";
static const char insert_partner_sql[] = "INSERT INTO partners (id) VALUES ($1) ON CONFLICT (id) DO NOTHING RETURNING id";
static const char insert_fleets_sql[] = "INSERT INTO partner_fleets (partner_id, fleet_id)"
                                        " SELECT $1, f FROM (SELECT DISTINCT unnest($2::text[]) AS f) wanted"
                                        " ON CONFLICT DO NOTHING";

bool partner_notify(PGconn *pg, const char *what, const char *partner, int *rc)
{
    const char *values[] = {partner};
    return cli_db_exec(pg, what, notify_sql, 1, values, rc);
}

int partner_insert(PGconn *pg, const char *what, const char *id, const char *fleets, bool *created)
{
    int rc = EXIT_OK;
    const char *id_only[] = {id};
    const char *fleet_param[] = {fleets};
    const char *id_fleets[] = {id, fleets};
    PGresult *res = cli_db_query(pg, what, missing_fleet_sql, 1, fleet_param, &rc);
    if (res == NULL)
        return rc;
    if (PQntuples(res) > 0)
        rc = runtime_error("%s: no fleet \"%s\" (see fleetd fleet list)", what, PQgetvalue(res, 0, 0));
    PQclear(res);
    if (rc != EXIT_OK || (res = cli_db_query(pg, what, insert_partner_sql, 1, id_only, &rc)) == NULL)
        return rc;
    *created = PQntuples(res) > 0;
    PQclear(res);
    cli_db_exec(pg, what, insert_fleets_sql, 2, id_fleets, &rc);
    return rc;
}

static int create(PGconn *pg, const partner_opts_t *o, const uint8_t master[FL_MASTER_KEY_BYTES])
{
    const char *what = "partner create";
    int rc = EXIT_OK;
    char *fleets = cli_db_array(o->fleets, o->nfleets);
    if (fleets == NULL)
        return runtime_error("%s: out of memory", what);
    char text[64] = "";
    bool created = false;
    if (!cli_db_exec(pg, what, "BEGIN", 0, NULL, &rc))
        goto out;
    if (!o->force && (rc = partner_check_master(pg, what, NULL, master)) != EXIT_OK)
        goto out;
    if ((rc = partner_insert(pg, what, o->id, fleets, &created)) != EXIT_OK)
        goto out;
    if (!created) {
        rc = runtime_error("%s: partner \"%s\" already exists (fleetd partner rotate %s adds a secret)", what, o->id, o->id);
        goto out;
    }
    if (!partner_add_secret(pg, what, o->id, master, text, &rc) || !partner_notify(pg, what, o->id, &rc))
        goto out;
    rc = commit_and_print(pg, what, text);
out:
    sodium_memzero(text, sizeof(text));
    fl_free(fleets);
    return rc; /* on an error the session ends without COMMIT: nothing is stored */
}

/* ---- fleetd partner rotate ID / retire ID ---- */

static const char lock_partner_sql[] = "SELECT id FROM partners WHERE id = $1 FOR UPDATE";

/* BEGIN and lock the partner, so that rotations and retirements of one partner serialise. */
static bool begin_on_partner(PGconn *pg, const char *what, const char *id, int *rc)
{
    const char *values[] = {id};
    if (!cli_db_exec(pg, what, "BEGIN", 0, NULL, rc))
        return false;
    PGresult *res = cli_db_query(pg, what, lock_partner_sql, 1, values, rc);
    if (res == NULL)
        return false;
    bool found = PQntuples(res) > 0;
    PQclear(res);
    if (!found)
        *rc = runtime_error("%s: no partner \"%s\" (see fleetd partner list)", what, id);
    return found;
}

static int rotate(PGconn *pg, const partner_opts_t *o, const uint8_t master[FL_MASTER_KEY_BYTES])
{
    const char *what = "partner rotate";
    int rc = EXIT_OK;
    char text[64] = "";
    if (!begin_on_partner(pg, what, o->id, &rc))
        return rc;
    if (!o->force && (rc = partner_check_master(pg, what, o->id, master)) != EXIT_OK)
        return rc;
    if (partner_add_secret(pg, what, o->id, master, text, &rc) && partner_notify(pg, what, o->id, &rc))
        rc = commit_and_print(pg, what, text);
    sodium_memzero(text, sizeof(text));
    return rc;
}

/* Every live secret but the newest (by id: the order they were added in). */
static const char retire_sql[] = "UPDATE partner_secrets SET retired_at = greatest(now(), created_at)"
                                 " WHERE partner_id = $1 AND retired_at IS NULL"
                                 " AND id < (SELECT max(id) FROM partner_secrets WHERE partner_id = $1 AND retired_at IS NULL)"
                                 " RETURNING id";

static int retire(PGconn *pg, const partner_opts_t *o)
{
    const char *what = "partner retire";
    int rc = EXIT_OK;
    const char *id_only[] = {o->id};
    if (!begin_on_partner(pg, what, o->id, &rc))
        return rc;
    PGresult *res = cli_db_query(pg, what, retire_sql, 1, id_only, &rc);
    if (res == NULL)
        return rc;
    int n = PQntuples(res);
    PQclear(res);
    if ((n > 0 && !partner_notify(pg, what, o->id, &rc)) || !cli_db_exec(pg, what, "COMMIT", 0, NULL, &rc))
        return rc;
    if (n == 0)
        printf("partner %s: nothing to retire; its newest secret is its only live one\n", o->id);
    else
        printf("partner %s: retired %d older secret%s; only the newest is valid now\n", o->id, n, n == 1 ? "" : "s");
    return EXIT_OK;
}

/* ---- fleetd partner list [--json] ---- */

static const char list_sql[] =
    "SELECT p.id,"
    " (SELECT count(*) FROM partner_secrets s WHERE s.partner_id = p.id AND s.retired_at IS NULL),"
    " (SELECT count(*) FROM partner_secrets s WHERE s.partner_id = p.id AND s.retired_at IS NOT NULL),"
    " coalesce((SELECT string_agg(f.fleet_id, ',' ORDER BY f.fleet_id COLLATE \"C\") FROM partner_fleets f"
    "  WHERE f.partner_id = p.id), ''),"
    " to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " (SELECT to_char(max(s.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM partner_secrets s"
    "  WHERE s.partner_id = p.id AND s.retired_at IS NULL)"
    " FROM partners p ORDER BY p.id COLLATE \"C\"";

static int list(PGconn *pg, const partner_opts_t *o)
{
    int rc = EXIT_OK;
    PGresult *res = cli_db_query(pg, "partner list", list_sql, 0, NULL, &rc);
    if (res == NULL)
        return rc;
    int n = PQntuples(res);
    if (o->json) {
        json_t *partners = json_array();
        for (int i = 0; i < n; i++) {
            json_t *fleets = json_array();
            char *all = fl_strdup(PQgetvalue(res, i, 3)), *save = NULL;
            for (char *f = all ? strtok_r(all, ",", &save) : NULL; f; f = strtok_r(NULL, ",", &save))
                json_array_append_new(fleets, json_string(f));
            fl_free(all);
            json_array_append_new(partners, json_pack("{s:s,s:I,s:I,s:o,s:s,s:o}", "id", PQgetvalue(res, i, 0), "secrets",
                                                      (json_int_t)atoll(PQgetvalue(res, i, 1)), "retired_secrets",
                                                      (json_int_t)atoll(PQgetvalue(res, i, 2)), "fleets", fleets, "created_at",
                                                      PQgetvalue(res, i, 4), "last_secret_at",
                                                      PQgetisnull(res, i, 5) ? json_null() : json_string(PQgetvalue(res, i, 5))));
        }
        json_t *doc = json_pack("{s:o}", "partners", partners);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        if (text == NULL) {
            rc = runtime_error("partner list: out of memory");
        } else {
            printf("%s\n", text);
            free(text);
        }
        json_decref(doc);
    } else if (n == 0) {
        printf("no partners\n");
    } else {
        printf("%-24s %7s %7s  %-24s  %-24s  %s\n", "ID", "SECRETS", "RETIRED", "CREATED", "NEWEST SECRET", "FLEETS");
        for (int i = 0; i < n; i++)
            printf("%-24s %7s %7s  %-24s  %-24s  %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                   PQgetvalue(res, i, 4), PQgetisnull(res, i, 5) ? "-" : PQgetvalue(res, i, 5), PQgetvalue(res, i, 3));
    }
    PQclear(res);
    return rc;
}

/* ---- arguments ---- */

static int parse_args(partner_opts_t *o, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("partner: expected create, rotate, retire or list (see fleetd partner --help)");
    o->action = argv[1];
    bool create = strcmp(o->action, "create") == 0, list = strcmp(o->action, "list") == 0;
    bool rotate = strcmp(o->action, "rotate") == 0;
    if (!create && !list && !rotate && strcmp(o->action, "retire") != 0)
        return usage_error("partner: unknown action \"%s\"; expected create, rotate, retire or list (see fleetd partner --help)",
                           o->action);
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (create && (strcmp(arg, "--fleet") == 0 || strncmp(arg, "--fleet=", 8) == 0)) {
            const char *value = arg[7] == '=' ? arg + 8 : i + 1 < argc ? argv[++i] : NULL;
            if (value == NULL)
                return usage_error("partner create: --fleet needs a fleet id");
            if (!fl_id_valid(value))
                return usage_error("partner create: \"%s\" is not a fleet id (1 to 64 characters of [A-Za-z0-9._-])", value);
            if (o->nfleets == MAX_FLEETS)
                return usage_error("partner create: at most %d fleets per partner", MAX_FLEETS);
            o->fleets[o->nfleets++] = value;
        } else if (list && strcmp(arg, "--json") == 0) {
            o->json = true;
        } else if ((create || rotate) && strcmp(arg, "--force") == 0) {
            o->force = true;
        } else if (!list && o->id == NULL && arg[0] != '-') {
            o->id = arg;
        } else {
            return usage_error("partner %s: unexpected argument \"%s\" (see fleetd partner --help)", o->action, arg);
        }
    }
    if (!list && o->id == NULL)
        return usage_error("partner %s: which partner? (fleetd partner %s ID%s)", o->action, o->action,
                           create ? " --fleet FLEET" : "");
    if (o->id && !fl_id_valid(o->id))
        return usage_error("partner %s: \"%s\" is not a partner id (1 to 64 characters of [A-Za-z0-9._-])", o->action, o->id);
    if (create && o->nfleets == 0)
        return usage_error("partner create: give the fleets it may write with --fleet FLEET (one or more)");
    return EXIT_OK;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    partner_opts_t o = {0};
    int rc = parse_args(&o, argc, argv);
    if (rc != EXIT_OK)
        return rc;
    bool seals = strcmp(o.action, "create") == 0 || strcmp(o.action, "rotate") == 0;
    uint8_t master[FL_MASTER_KEY_BYTES];
    char what[32];
    snprintf(what, sizeof(what), "partner %s", o.action);
    if (seals && (rc = partner_load_master(cfg, what, master)) != EXIT_OK)
        return rc;
    PGconn *pg = cli_db_connect(cfg, "fleetd partner", &rc);
    if (pg != NULL) {
        if (strcmp(o.action, "create") == 0)
            rc = create(pg, &o, master);
        else if (strcmp(o.action, "rotate") == 0)
            rc = rotate(pg, &o, master);
        else if (strcmp(o.action, "retire") == 0)
            rc = retire(pg, &o);
        else
            rc = list(pg, &o);
        PQfinish(pg);
    }
    sodium_memzero(master, sizeof(master));
    return rc;
}

const command_t cmd_partner = {
    .name = "partner",
    .summary = "create partners; rotate and retire their signing secrets",
    .usage = "Usage: fleetd partner create ID --fleet FLEET [--fleet FLEET ...]\n"
             "       fleetd partner rotate ID\n"
             "       fleetd partner retire ID\n"
             "       fleetd partner list [--json]\n\n"
             "Partners POST signed batches of fixes to /api/v1/ingest/ID (Standard Webhooks signatures).\n"
             "A signing secret is \"whsec_\" + base64 of 32 random bytes; it is printed once, alone on one\n"
             "line, and stored only encrypted with the master key. Every change is seen by running fleetd\n"
             "daemons at once (NOTIFY fleetd_partners); no restart is needed.\n\n"
             "fleetd partner create ID   adds a partner allowed to write the given fleets (each must exist)\n"
             "                           and prints its first secret.\n"
             "  --fleet FLEET            a fleet it may write (repeat for more)\n"
             "fleetd partner rotate ID   adds a secret and prints it; the older ones stay valid, so the\n"
             "                           partner can switch over without a gap.\n"
             "fleetd partner retire ID   retires every secret of ID but the newest: run it once the partner\n"
             "                           signs with the new one.\n"
             "fleetd partner list        every partner with its live and retired secret counts, when its\n"
             "                           newest secret was made, and its fleets. Never a secret.\n"
             "  --json                   {\"partners\":[{\"id\",\"secrets\",\"retired_secrets\",\"fleets\",\n"
             "                           \"created_at\",\"last_secret_at\"}]}\n\n"
             "create and rotate need the master key (FLEETD_MASTER_KEY, or FLEETD_MASTER_KEY_FILE), the\n"
             "same the daemons use: they refuse a key that does not open the secrets already stored, unless\n"
             "--force is given (only when replacing every secret after changing the master key).\n\n"
             "Settings: DATABASE_URL, FLEETD_DB_CONNECT_TIMEOUT, FLEETD_MASTER_KEY, FLEETD_MASTER_KEY_FILE.\n"
             "Exit status: 0 success; 1 an unknown partner or fleet, a partner that already exists, no master\n"
             "key or the wrong one, or the database failed (nothing stored); 2 usage or a malformed master key.\n",
    .run = run,
};
