/* What the administration commands share for PostgreSQL: a blocking connection (no command but serve
 * runs an event loop), statements whose failure is one line on stderr, and the writes that more than
 * one command makes. Every function that can fail prints why and returns the exit status to use
 * (commands.h), or sets *rc to it. */
#ifndef FLEETD_CLI_DB_H
#define FLEETD_CLI_DB_H

#include "commands.h"

#include "api/api.h"
#include "ingest/ingest.h"

#include <libpq-fe.h>

/* ---- connections and statements (cli_db.c) ---- */

/* Connects within FLEETD_DB_CONNECT_TIMEOUT (settings in DATABASE_URL win); app names the session in
 * pg_stat_activity. NULL after printing why (exit code in *rc). PQfinish it. */
PGconn *cli_db_connect(const fl_config_t *cfg, const char *app, int *rc);
/* Runs one statement (text parameters unless formats says otherwise; binary results when
 * binary_result). NULL after printing "WHAT: reason" (exit code in *rc). PQclear the result. */
PGresult *cli_db_query_ex(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, const int *lengths,
                          const int *formats, int binary_result, int *rc);
PGresult *cli_db_query(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, int *rc);
/* A statement whose result is not needed; false after printing why. */
bool cli_db_exec(PGconn *pg, const char *what, const char *sql, int n, const char *const *values, int *rc);
/* The text[] literal {"a","b"} of ids (contract ids need no escaping); NULL without memory. fl_free it. */
char *cli_db_array(const char *const *ids, int n);
/* The first line of a libpq message, into out. */
const char *cli_db_first_line(const char *msg, char *out, size_t outlen);

/* ---- fleets (cmd_fleet.c) ---- */

/* Adds fleet id (name may be NULL) unless it exists; *created says which. */
int fleet_insert(PGconn *pg, const char *what, const char *id, const char *name, bool *created);

/* ---- partners (cmd_partner.c) ---- */

/* Loads the master key: a missing one is a runtime failure, a malformed one a usage error. */
int partner_load_master(const fl_config_t *cfg, const char *what, uint8_t master[FL_MASTER_KEY_BYTES]);
/* Refuses a master key that opens none of the live secrets stored (of partner, or of anyone when
 * partner is NULL), when there are any: it would not be the key the daemons serve with. */
int partner_check_master(PGconn *pg, const char *what, const char *partner, const uint8_t master[FL_MASTER_KEY_BYTES]);
/* Inside a transaction: adds partner id unless it exists (*created says which) and lets it write
 * the fleets of the text[] literal fleets (already allowed ones stay). The fleets must exist. */
int partner_insert(PGconn *pg, const char *what, const char *id, const char *fleets, bool *created);
/* Generates a secret for partner and stores it sealed; text gets its "whsec_..." form. */
bool partner_add_secret(PGconn *pg, const char *what, const char *partner, const uint8_t master[FL_MASTER_KEY_BYTES], char text[64],
                        int *rc);
/* Tells running daemons to reload their partner cache (delivered at COMMIT). */
bool partner_notify(PGconn *pg, const char *what, const char *partner, int *rc);

/* ---- tokens (cmd_token.c) ---- */

/* Stores a new bearer token (its hash) named name (may be NULL), admin or for the fleets of the
 * text[] literal fleets, and writes it to token. A fleet that does not exist stores nothing and
 * fails. */
int token_insert(PGconn *pg, const char *what, const char *name, bool admin, const char *fleets, char token[FL_API_TOKEN_LEN + 1]);

#endif
