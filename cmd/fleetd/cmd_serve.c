/* fleetd serve: the daemon. Builds the shards and the application tree
 *
 *   root (one_for_one)
 *    |- db        one connection per shard (db:N)
 *    |- pubsub    one actor per shard (pubsub:N)
 *    |- jobs      the job queue: committer, listener, queue:NAME producers, stager, cron, rescuer, pruner
 *    |- trackers  one dynamic supervisor per shard (trackers:N), tracker:{fleet} on demand
 *    |- partners  the partners' secrets and fleets, for ingest (only with a master key)
 *    `- endpoint  accepting HTTP connections
 *
 * then waits for signals on the main thread. SIGTERM and SIGINT drain and stop it; the root
 * failing (too many restarts) ends the process with status 1 so that systemd restarts it. */
#include "commands.h"

#include "api/api.h"
#include "http/ws.h"
#include "db/db.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "jobs/jobs.h"
#include "runtime/runtime.h"
#include "service.h"
#include "tracker/tracker.h"

#include <pthread.h>
#include <sodium.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    fl_config_t *cfg;
    fl_runtime_t *rt;
    fl_db_service_t *db;
    fl_pubsub_t *ps;
    fl_trackers_t *trackers;
    fl_jobs_t *jobs;
    fl_partners_t *partners;
    fl_api_t *api;
    fl_http_router_t *router;
    fl_http_server_t *http;
    fl_actor_t *root;
    fl_child_spec_t children[6];
    fl_sup_spec_t root_spec;
} daemon_t;

/* ---- the endpoint: an actor whose life is the HTTP listeners accepting ---- */

static int endpoint_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    fl_http_server_t *http = arg;
    fl_http_server_resume(http);
    *state = http;
    return FL_OK;
}

static int endpoint_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    (void)state;
    (void)msg;
    return FL_EINVAL; /* connections run on the shards' loops; the endpoint takes no messages */
}

static void endpoint_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    /* stop accepting; connections already open carry on */
    fl_http_server_pause(state);
}

static const fl_behaviour_t endpoint_behaviour = {
    .name = "endpoint",
    .init = endpoint_init,
    .handle = endpoint_handle,
    .terminate = endpoint_terminate,
};

static fl_db_t *tracker_db(int shard, void *arg)
{
    return fl_db_service_get(arg, shard);
}

/* The root ended on its own: too many restarts below it. The main thread takes it from here. */
static void root_exited(fl_actor_t *root, int kind, const char *reason, void *arg)
{
    (void)root;
    (void)arg;
    if (kind == FL_EXIT_SHUTDOWN || kind == FL_EXIT_NORMAL)
        return;
    fl_log(FL_LOG_ERROR, "fleetd.root_failed", FL_MSG("the supervision tree gave up; exiting for systemd to restart fleetd"),
           FL_STR("reason", reason));
    kill(getpid(), SIGUSR1);
}

static int parse_args(fl_config_t *cfg, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char err[512];
        const char *value = NULL;
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            value = argv[++i];
        else if (strncmp(argv[i], "--listen=", 9) == 0)
            value = argv[i] + 9;
        else
            return usage_error("serve: unexpected argument \"%s\" (see fleetd serve --help)", argv[i]);
        if (fl_config_set(cfg, "FLEETD_LISTEN", value, err, sizeof(err)) != FL_OK)
            return usage_error("%s", err);
    }
    return EXIT_OK;
}

/* The signals the main thread takes: blocked everywhere, then waited for with sigwait. */
static void daemon_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
#ifndef NDEBUG
    sigaddset(set, SIGUSR2); /* Debug builds: the watchdog drill (service.h) */
#endif
}

/* SIGHUP: forgets the cached bearer tokens (a revocation then takes effect at once, not within the
 * cache's 5 s), reloads the partners (new partners also arrive by themselves through a notification)
 * and applies FLEETD_LOG_LEVEL as the settings say now (the FLEETD_CONFIG file is read again; the
 * environment is the one fleetd started with). No connection is touched. */
static void reload(daemon_t *d)
{
    fl_api_tokens_forget(d->api); /* before the log line, which tests and operators wait for */
    if (d->partners)
        fl_partners_reload(d->partners);
    fl_config_t now;
    char err[512];
    fl_log_level_t old = fl_log_level(), level = old;
    if (fl_config_load(&now, err, sizeof(err)) == FL_OK)
        level = (fl_log_level_t)now.log_level;
    else
        fl_log(FL_LOG_WARN, "fleetd.reload_config", FL_MSG("the settings do not load; keeping the log level"),
               FL_STR("error", err));
    fl_config_free(&now);
    if (level < old) /* set first when more verbose, last when less, so that the line below shows */
        fl_log_set_level(level);
    fl_log(FL_LOG_INFO, "fleetd.reloaded", FL_MSG("SIGHUP: cached tokens forgotten, partners reloading, log level applied"),
           FL_STR("tokens", "forgotten"), FL_STR("partners", d->partners ? "reloading" : "none (no master key)"),
           FL_STR("log_level", fl_log_level_name(level)));
    fl_log_set_level(level);
}

/* Waits for SIGTERM/SIGINT (returns EXIT_OK) or the root's failure (EXIT_RUNTIME); SIGHUP reloads. */
static int wait_for_stop(daemon_t *d)
{
    sigset_t set;
    daemon_signals(&set);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(d);
            continue;
        }
        if (sig == SIGUSR1)
            return EXIT_RUNTIME;
#ifndef NDEBUG
        if (sig == SIGUSR2) {
            svc_drill_stall(d->rt, 2000);
            continue;
        }
#endif
        fl_log(FL_LOG_INFO, "fleetd.stopping", FL_MSG("stopping"), FL_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
        return EXIT_OK;
    }
}

/* Drain: /ready turns 503, listeners close, requests in flight get up to the shutdown timeout. */
static void drain(daemon_t *d)
{
    fl_api_set_draining(d->api);
    fl_http_server_drain(d->http);
    fl_ws_close_all(1001, "fleetd is shutting down; reconnect"); /* the phoenix client reconnects elsewhere */
    fl_log(FL_LOG_INFO, "fleetd.draining", FL_MSG("not accepting; finishing requests in flight and closing WebSockets"),
           FL_INT("connections", fl_http_server_connections(d->http)), FL_INT("timeout_ms", d->cfg->shutdown_timeout_ms));
    int64_t deadline = fl_now_mono_ms() + d->cfg->shutdown_timeout_ms;
    for (int round = 1; fl_http_server_connections(d->http) > 0 && fl_now_mono_ms() < deadline; round++) {
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
        if (round % 25 == 0) /* an upgrade that was in flight at the first call is a WebSocket now */
            fl_ws_close_all(1001, "fleetd is shutting down; reconnect");
    }
    int left = fl_http_server_connections(d->http);
    if (left > 0)
        fl_log(FL_LOG_WARN, "fleetd.drain_timeout", FL_MSG("shutdown timeout passed with connections still open"),
               FL_INT("connections", left));
}

static int build(daemon_t *d)
{
    fl_config_t *cfg = d->cfg;
    int rc;
    if ((rc = fl_runtime_new(cfg->shards, &d->rt)) != FL_OK)
        return rc;
    fl_db_options_t dbo = {.conninfo = cfg->database_url,
                           .connect_timeout_ms = cfg->db_connect_timeout_ms,
                           .reconnect_min_ms = cfg->db_reconnect_min_ms,
                           .reconnect_max_ms = cfg->db_reconnect_max_ms,
                           .health_interval_ms = cfg->db_health_interval_ms};
    if ((rc = fl_db_service_new(d->rt, &dbo, &d->db)) != FL_OK || (rc = fl_pubsub_new(d->rt, &d->ps)) != FL_OK)
        return rc;
    fl_trackers_opts_t to = {.idle_timeout_ms = cfg->tracker_idle_timeout_ms,
                             .replay = cfg->tracker_replay,
                             .mailbox = cfg->tracker_mailbox,
                             .snapshot_min_interval_ms = cfg->tracker_snapshot_interval_ms,
                             .db = tracker_db,
                             .db_arg = d->db};
    if ((rc = fl_trackers_new(d->rt, d->ps, &to, &d->trackers)) != FL_OK)
        return rc;
    fl_jobs_opts_t jo = {.node = cfg->node,
                         .conninfo = cfg->database_url,
                         .commit_interval_ms = cfg->jobs_commit_interval_ms,
                         .commit_max_jobs = cfg->jobs_commit_max,
                         .commit_timeout_ms = cfg->jobs_commit_timeout_ms,
                         .max_pending = cfg->jobs_max_pending,
                         .max_pending_bytes = cfg->jobs_max_pending_bytes,
                         .poll_interval_ms = cfg->jobs_poll_interval_ms,
                         .lease_ms = cfg->jobs_lease_ms,
                         .backoff_base_ms = cfg->jobs_backoff_base_ms,
                         .backoff_max_ms = cfg->jobs_backoff_max_ms,
                         /* 0 in the settings means "delete at once"; the engine's 0 means its default */
                         .prune_completed_s = cfg->jobs_keep_completed_s ? cfg->jobs_keep_completed_s : 1,
                         .prune_discarded_s = cfg->jobs_keep_discarded_s ? cfg->jobs_keep_discarded_s : 1,
                         .prune_cancelled_s = cfg->jobs_keep_cancelled_s ? cfg->jobs_keep_cancelled_s : 1};
    if ((rc = fl_jobs_new(d->rt, d->db, &jo, &d->jobs)) != FL_OK ||
        (rc = fl_audit_register(d->jobs, cfg->retention_s, cfg->retention_every_s)) != FL_OK)
        return rc;
    const fl_sup_spec_t *jobs_spec = fl_jobs_spec(d->jobs);
    if (jobs_spec == NULL)
        return FL_ENOMEM;
    /* Ingest needs the master key to read the partners' secrets; without one fleetd still serves,
     * and ingest answers 503 saying why. */
    uint8_t master[FL_MASTER_KEY_BYTES];
    char err[256];
    rc = fl_master_key_load(cfg, master, err, sizeof(err));
    if (rc == FL_EINVAL) {
        fl_log(FL_LOG_ERROR, "fleetd.master_key", FL_MSG(err));
        return FL_EINVAL;
    }
    if (rc == FL_OK) {
        rc = fl_partners_new(d->rt, &dbo, master, &d->partners);
        sodium_memzero(master, sizeof(master));
        if (rc != FL_OK)
            return rc;
    } else {
        fl_log(FL_LOG_WARN, "fleetd.no_master_key",
               FL_MSG("no master key (FLEETD_MASTER_KEY or FLEETD_MASTER_KEY_FILE): ingest answers 503 until one is set"));
    }
    fl_api_deps_t deps = {
        .cfg = cfg, .db = d->db, .rt = d->rt, .jobs = d->jobs, .partners = d->partners, .trackers = d->trackers, .pubsub = d->ps};
    if ((rc = fl_api_new(&deps, &d->api)) != FL_OK)
        return rc;
    if ((d->router = fl_http_router_new()) == NULL)
        return FL_ENOMEM;
    if ((rc = fl_api_routes(d->api, d->router)) != FL_OK || (rc = fl_http_server_new(cfg, d->router, &d->http)) != FL_OK)
        return rc;

    d->children[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(d->db), .restart = FL_RESTART_PERMANENT};
    d->children[1] = (fl_child_spec_t){.id = "pubsub", .sup = fl_pubsub_spec(d->ps), .restart = FL_RESTART_PERMANENT};
    d->children[2] = (fl_child_spec_t){
        .id = "jobs", .sup = jobs_spec, .restart = FL_RESTART_PERMANENT, .shutdown_ms = fl_jobs_shutdown_ms(d->jobs)};
    d->children[3] = (fl_child_spec_t){
        .id = "trackers", .sup = fl_trackers_spec(d->trackers), .restart = FL_RESTART_PERMANENT, .shutdown_ms = 15000};
    int n = 4;
    if (d->partners)
        d->children[n++] = *fl_partners_spec(d->partners);
    d->children[n++] =
        (fl_child_spec_t){.id = "endpoint", .behaviour = &endpoint_behaviour, .arg = d->http, .restart = FL_RESTART_PERMANENT};
    d->root_spec =
        (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 3, .period_ms = 5000, .children = d->children, .nchildren = n};
    return FL_OK;
}

static void teardown(daemon_t *d)
{
    if (d->root) {
        fl_api_set_root(d->api, NULL);
        if (fl_sup_stop(d->root, d->cfg->shutdown_timeout_ms + 20000) != FL_OK)
            fl_log(FL_LOG_WARN, "fleetd.tree_stop_timeout", FL_MSG("the supervision tree did not stop in time"));
        fl_actor_unref(d->root);
    }
    if (d->rt)
        fl_runtime_stop(d->rt);
    if (d->http)
        fl_http_server_free(d->http);
    if (d->router)
        fl_http_router_free(d->router);
    fl_api_free(d->api);
    fl_partners_free(d->partners);
    fl_jobs_free(d->jobs);
    fl_trackers_free(d->trackers);
    fl_pubsub_free(d->ps);
    fl_db_service_free(d->db);
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
    daemon_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* a master key that is set but wrong is a configuration error: say so before starting */
    uint8_t probe[FL_MASTER_KEY_BYTES];
    char key_err[256];
    rc = fl_master_key_load(cfg, probe, key_err, sizeof(key_err));
    sodium_memzero(probe, sizeof(probe));
    if (rc == FL_EINVAL)
        return usage_error("%s", key_err);

    daemon_t d = {.cfg = cfg};
    svc_watchdog_t *watchdog = NULL;
    char bound[128];
    int exit_code = EXIT_RUNTIME;
    if ((rc = build(&d)) != FL_OK) {
        runtime_error("cannot set up the daemon: %s", fl_strerror(rc));
        goto out;
    }
    /* Paused before the listeners exist, so that no shard accepts before the endpoint (last in the
     * tree) opens them: connections already waiting (socket activation) wait for the tree too. */
    fl_http_server_pause(d.http);
    int inherited = svc_listen_fd();
    if (inherited == -2) {
        exit_code = usage_error("systemd passed more than one listening socket; fleetd listens on one (ListenStream=)");
        goto out;
    }
    if (inherited >= 0) {
        /* socket activation: the socket (and connections waiting in it) outlive this process, so a
         * restart refuses nobody; FLEETD_LISTEN is not used */
        if ((rc = fl_http_server_listen_fd(d.http, d.rt, inherited, bound, sizeof(bound))) != FL_OK) {
            if (rc == FL_EINVAL)
                exit_code = usage_error("the socket systemd passed is not a TCP stream socket (ListenStream=HOST:PORT)");
            else
                runtime_error("cannot listen on the socket systemd passed: %s", fl_strerror(rc));
            goto out;
        }
        close(inherited); /* every shard has its own copy */
    } else if ((rc = fl_http_server_listen(d.http, d.rt, cfg->listen, bound, sizeof(bound))) != FL_OK) {
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
    rc = fl_sup_start(fl_runtime_shard(d.rt, 0), "root", &d.root_spec, root_exited, NULL, 60000, &d.root);
    if (rc != FL_OK) {
        runtime_error("the supervision tree did not start: %s (see the log lines above)", fl_strerror(rc));
        goto out;
    }
    fl_api_set_root(d.api, d.root);
    fl_log(FL_LOG_INFO, "http.listening", FL_MSG("fleetd is serving"), FL_STR("addr", bound),
           FL_INT("shards", fl_runtime_nshards(d.rt)), FL_STR("version", FLEETD_VERSION),
           FL_STR("socket", inherited >= 0 ? "systemd" : "bound"));
    svc_notify("READY=1\nSTATUS=serving"); /* systemd (Type=notify): the tree is up and accepting */
    if (svc_watchdog_start(d.rt, &watchdog) != FL_OK)
        fl_log(FL_LOG_WARN, "watchdog.unavailable", FL_MSG("cannot start the watchdog thread; systemd's watchdog will fire"));

    exit_code = wait_for_stop(&d);
    svc_notify("STOPPING=1\nSTATUS=stopping");
    if (exit_code == EXIT_OK)
        drain(&d);
    fl_log(FL_LOG_INFO, "fleetd.stopped", FL_MSG(exit_code == EXIT_OK ? "stopped" : "stopped after a failure"));
out:
    svc_watchdog_stop(watchdog); /* stopping the tree may take longer than the interval; systemd stops timing now */
    teardown(&d);
    svc_watchdog_free(watchdog);
    return exit_code;
}

const command_t cmd_serve = {
    .name = "serve",
    .summary = "run the daemon (the default command)",
    .usage = "Usage: fleetd serve [--listen HOST:PORT]\n\n"
             "Runs fleetd in the foreground: one event loop per CPU, each with its own listening socket,\n"
             "and the supervision tree (db, pubsub, jobs, trackers, endpoint). It starts even while the\n"
             "database is down; /ready tells when it can work. `fleetd tree` shows the live tree.\n\n"
             "  --listen HOST:PORT   overrides FLEETD_LISTEN (default 127.0.0.1:4000; port 0 picks one)\n\n"
             "Started by systemd with a socket (fleetd.socket, LISTEN_FDS), it accepts on that socket\n"
             "instead: a restart then refuses no connection (docs/operations.md).\n\n"
             "Logs go to stderr, one JSON object per line (readable text on a terminal).\n"
             "SIGTERM or SIGINT: stop accepting, let requests in flight finish (FLEETD_SHUTDOWN_TIMEOUT),\n"
             "stop the tree in reverse order, exit 0. SIGHUP: forget cached tokens, reload the partners\n"
             "and the log level (FLEETD_CONFIG), log fleetd.reloaded. If the tree gives up after too\n"
             "many restarts, fleetd exits 1 so that its supervisor (systemd) restarts it.\n"
             "Exit status: 0 after a clean stop, 1 when it cannot start or the tree failed, 2 on a\n"
             "configuration error.\n",
    .run = run,
};
