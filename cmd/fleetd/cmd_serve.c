/* fleetd serve: the daemon. Builds the shards, the database connection and the HTTP endpoint,
 * then waits for signals on the main thread; SIGTERM and SIGINT drain and stop it. */
#include "commands.h"

#include "api/api.h"
#include "db/db.h"
#include "http/http.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    fl_config_t *cfg;
    fl_runtime_t *rt;
    fl_db_t *db;
    fl_api_t *api;
    fl_http_router_t *router;
    fl_http_server_t *http;
} daemon_t;

static int parse_args(fl_config_t *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char err[512];
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            if (fl_config_set(cfg, "FLEETD_LISTEN", argv[++i], err, sizeof(err)) != FL_OK)
                return usage_error("%s", err);
        } else if (strncmp(argv[i], "--listen=", 9) == 0) {
            if (fl_config_set(cfg, "FLEETD_LISTEN", argv[i] + 9, err, sizeof(err)) != FL_OK)
                return usage_error("%s", err);
        } else {
            return usage_error("serve: unexpected argument \"%s\" (see fleetd serve --help)", argv[i]);
        }
    }
    return EXIT_OK;
}

/* Waits for SIGTERM/SIGINT; SIGHUP is acknowledged (reloads arrive with the issues that need them). */
static void wait_for_stop(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            fl_log(FL_LOG_INFO, "fleetd.sighup", FL_MSG("SIGHUP received; nothing to reload yet"));
            continue;
        }
        fl_log(FL_LOG_INFO, "fleetd.stopping", FL_MSG("stopping"), FL_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
        return;
    }
}

/* Drain: /ready turns 503, listeners close, requests in flight get up to the shutdown timeout. */
static void drain(daemon_t *d)
{
    fl_api_set_draining(d->api);
    fl_http_server_drain(d->http);
    int64_t deadline = fl_now_mono_ms() + d->cfg->shutdown_timeout_ms;
    while (fl_http_server_connections(d->http) > 0 && fl_now_mono_ms() < deadline) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    int left = fl_http_server_connections(d->http);
    if (left > 0)
        fl_log(FL_LOG_WARN, "fleetd.drain_timeout", FL_MSG("shutdown timeout passed with connections still open"),
               FL_INT("connections", left));
}

static void teardown(daemon_t *d)
{
    if (d->http)
        fl_http_server_free(d->http);
    if (d->router)
        fl_http_router_free(d->router);
    if (d->api)
        fl_api_free(d->api);
    if (d->db)
        fl_db_free(d->db);
    if (d->rt)
        fl_runtime_free(d->rt);
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    int rc = parse_args(cfg, argc, argv);
    if (rc != EXIT_OK)
        return rc;

    /* Signals are taken by the main thread alone: block them before any shard thread exists. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    daemon_t d = {.cfg = cfg};
    char bound[128];
    int exit_code = EXIT_RUNTIME;
    if ((rc = fl_runtime_new(cfg->shards, &d.rt)) != FL_OK) {
        runtime_error("cannot create the event loops: %s", fl_strerror(rc));
        goto out;
    }
    fl_db_options_t dbo = {.conninfo = cfg->database_url,
                           .connect_timeout_ms = cfg->db_connect_timeout_ms,
                           .reconnect_min_ms = cfg->db_reconnect_min_ms,
                           .reconnect_max_ms = cfg->db_reconnect_max_ms,
                           .health_interval_ms = cfg->db_health_interval_ms};
    if ((rc = fl_db_new(fl_runtime_shard(d.rt, 0), &dbo, &d.db)) != FL_OK) {
        runtime_error("cannot set up the database connection: %s", fl_strerror(rc));
        goto out;
    }
    if ((rc = fl_api_new(cfg, d.db, &d.api)) != FL_OK || (d.router = fl_http_router_new()) == NULL ||
        (rc = fl_api_routes(d.api, d.router)) != FL_OK || (rc = fl_http_server_new(cfg, d.router, &d.http)) != FL_OK) {
        runtime_error("cannot set up the HTTP endpoint: %s", fl_strerror(rc ? rc : FL_ENOMEM));
        goto out;
    }
    if ((rc = fl_http_server_listen(d.http, d.rt, cfg->listen, bound, sizeof(bound))) != FL_OK) {
        if (rc == FL_EINVAL)
            exit_code = usage_error("FLEETD_LISTEN: \"%s\" is not a valid host:port", cfg->listen);
        else
            runtime_error("cannot listen on %s (see the log line above)", cfg->listen);
        goto out;
    }
    if ((rc = fl_runtime_start(d.rt)) != FL_OK) {
        runtime_error("cannot start the event loops: %s", fl_strerror(rc));
        goto out;
    }
    fl_log(FL_LOG_INFO, "http.listening", FL_MSG("fleetd is serving"), FL_STR("addr", bound),
           FL_INT("shards", fl_runtime_nshards(d.rt)), FL_STR("version", FLEETD_VERSION));

    wait_for_stop();
    drain(&d);
    fl_runtime_stop(d.rt);
    fl_log(FL_LOG_INFO, "fleetd.stopped", FL_MSG("stopped"));
    exit_code = EXIT_OK;
out:
    teardown(&d);
    return exit_code;
}

const command_t cmd_serve = {
    .name = "serve",
    .summary = "run the daemon (the default command)",
    .usage = "Usage: fleetd serve [--listen HOST:PORT]\n\n"
             "Runs fleetd in the foreground: one event loop per CPU, each with its own listening socket,\n"
             "a PostgreSQL connection (DATABASE_URL) kept up with reconnects, and the HTTP routes of\n"
             "CONTRACT.md. It starts even while the database is down; /ready tells when it can work.\n\n"
             "  --listen HOST:PORT   overrides FLEETD_LISTEN (default 127.0.0.1:4000; port 0 picks one)\n\n"
             "Logs go to stderr, one JSON object per line (readable text on a terminal).\n"
             "SIGTERM or SIGINT: stop accepting, let requests in flight finish (FLEETD_SHUTDOWN_TIMEOUT), exit 0.\n"
             "Exit status: 0 after a clean stop, 1 when it cannot start, 2 on a configuration error.\n",
    .run = run,
};
