/* fleetd migrate: applies the embedded migrations to DATABASE_URL, then exits. */
#include "commands.h"
#include "db/db.h"

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    if (argc > 1)
        return usage_error("migrate: unexpected argument \"%s\" (see fleetd migrate --help)", argv[1]);
    char err[1024];
    int rc = fl_db_migrate(cfg->database_url != NULL ? cfg->database_url : "", cfg->db_connect_timeout_ms, err, sizeof(err));
    switch (rc) {
    case FL_OK:
        return EXIT_OK;
    case FL_EINVAL:
        return usage_error("DATABASE_URL: %s", err);
    case FL_EUNAVAIL:
        return runtime_error("cannot connect to the database: %s", err);
    default:
        return runtime_error("%s", err);
    }
}

const command_t cmd_migrate = {
    .name = "migrate",
    .summary = "apply the database migrations, then exit",
    .usage = "Usage: fleetd migrate\n\n"
             "Applies the migrations built into this fleetd to the database named by DATABASE_URL, in\n"
             "order, each in one transaction with its row in schema_migrations, and prints one line:\n"
             "\"applied N migrations, schema at version V\" or \"schema up to date at version V\".\n"
             "Running it again changes nothing. Nodes running it at once take turns (a PostgreSQL\n"
             "advisory lock): the later ones wait, then find nothing to do.\n\n"
             "It refuses to run when an applied migration was edited since (its recorded SHA-256\n"
             "differs): restore the file and put the change in a new migration.\n\n"
             "Settings:\n"
             "  DATABASE_URL               libpq URI or key=value connection string\n"
             "  FLEETD_DB_CONNECT_TIMEOUT  how long to try to connect (default 5s)\n\n"
             "Exit status: 0 success, 1 the database is unreachable or a migration failed (it was\n"
             "rolled back; earlier ones stay), 2 usage or configuration error.\n",
    .run = run,
};
