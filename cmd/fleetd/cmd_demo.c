/* fleetd demo: a fleet to watch for someone who just started fleetd. It makes sure the demo fleet,
 * a partner allowed to write it and an operator token for it exist (the same writes as fleetd fleet,
 * partner and token), prints the live map's URL with that token, then plays the partner: a few
 * dozen simulated vehicles (demo_routes.c) whose fixes it signs and POSTs to the running daemon's
 * ingest route, like any partner. The token's plaintext is kept in a file (mode 0600) so that the
 * URL stays the same from one run to the next; only the demo does that. */
#include "cli_db.h"
#include "cli_http.h"
#include "demo_routes.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEMO_FLEET      "demo-harbor"
#define DEMO_FLEET_NAME "Demo: Stockholm harbour"
#define DEMO_PARTNER    "demo-gps"
#define DEMO_TOKEN_NAME "demo map"
#define TOKEN_FILE_NAME "demo-token"

enum {
    MAX_VEHICLES = 1000,
    HTTP_TIMEOUT_MS = 10000,
    BACKOFF_MIN_MS = 250,
    BACKOFF_MAX_MS = 2000,
    REFUSED_GIVE_UP_MS = 30000, /* a partner the daemon does not know yet: its cache reloads within a moment */
    RETRY_AFTER_MAX_S = 30,
    PROGRESS_EVERY_MS = 60000,
    QUIET_START_MS = 3000,
};

typedef struct {
    int vehicles;
    int interval_ms;
    long duration_s; /* 0: until a signal */
    const char *url;
    const char *token_file;
    bool setup_only;
    long parent_pid; /* 0: none */
} demo_opts_t;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* ---- arguments ---- */

static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int parse_args(demo_opts_t *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = NULL, *eq = strchr(arg, '=');
        char name[32];
        snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
        bool takes_value = strcmp(name, "--vehicles") == 0 || strcmp(name, "--interval-ms") == 0 ||
                           strcmp(name, "--duration") == 0 || strcmp(name, "--url") == 0 || strcmp(name, "--token-file") == 0 ||
                           strcmp(name, "--parent-pid") == 0;
        if (takes_value) {
            value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (value == NULL)
                return usage_error("demo: %s needs a value (see fleetd demo --help)", name);
        }
        long v = 0;
        if (strcmp(arg, "--setup-only") == 0) {
            o->setup_only = true;
        } else if (strcmp(name, "--vehicles") == 0) {
            if (!parse_long(value, 1, MAX_VEHICLES, &v))
                return usage_error("demo: --vehicles must be a whole number from 1 to %d, not \"%s\"", MAX_VEHICLES, value);
            o->vehicles = (int)v;
        } else if (strcmp(name, "--interval-ms") == 0) {
            if (!parse_long(value, 100, 60000, &v))
                return usage_error("demo: --interval-ms must be a whole number from 100 to 60000, not \"%s\"", value);
            o->interval_ms = (int)v;
        } else if (strcmp(name, "--duration") == 0) {
            if (!parse_long(value, 1, 365L * 86400, &v))
                return usage_error("demo: --duration must be a whole number of seconds from 1 to 31536000, not \"%s\"", value);
            o->duration_s = v;
        } else if (strcmp(name, "--parent-pid") == 0) {
            if (!parse_long(value, 2, INT_MAX, &v))
                return usage_error("demo: --parent-pid must be a process id, not \"%s\"", value);
            o->parent_pid = v;
        } else if (strcmp(name, "--url") == 0) {
            o->url = value;
        } else if (strcmp(name, "--token-file") == 0) {
            if (value[0] == '\0')
                return usage_error("demo: --token-file needs a path");
            o->token_file = value;
        } else {
            return usage_error("demo: unexpected argument \"%s\" (see fleetd demo --help)", arg);
        }
    }
    return EXIT_OK;
}

/* http://HOST:PORT of the daemon, from --url or FLEETD_LISTEN; a wildcard address becomes loopback. */
static int daemon_base(const demo_opts_t *o, const fl_config_t *cfg, char *out, size_t outlen)
{
    char host[256], port[16];
    const char *from = o->url ? o->url : cfg->listen;
    if (o->url && strncmp(o->url, "http://", 7) != 0)
        return usage_error("demo: --url must be http://HOST:PORT (the demo speaks plain HTTP), not \"%s\"", o->url);
    if (cli_http_split_url(from, host, sizeof(host), port, sizeof(port)) != FL_OK)
        return usage_error("demo: \"%s\" is not an address (%s)", from, o->url ? "expected http://HOST:PORT" : "FLEETD_LISTEN");
    if (strcmp(port, "0") == 0)
        return usage_error("demo: FLEETD_LISTEN has port 0 (any free port): give the daemon's address with --url");
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '*')
        snprintf(host, sizeof(host), "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof(host), "::1");
    int n = snprintf(out, outlen, strchr(host, ':') ? "http://[%s]:%s" : "http://%s:%s", host, port);
    if (n < 0 || (size_t)n >= outlen)
        return usage_error("demo: the daemon's address is too long");
    return EXIT_OK;
}

/* ---- the token file ---- */

static int token_file_path(const demo_opts_t *o, const fl_config_t *cfg, char *out, size_t outlen)
{
    int n;
    if (o->token_file)
        n = snprintf(out, outlen, "%s", o->token_file);
    else if (cfg->data_dir && cfg->data_dir[0])
        n = snprintf(out, outlen, "%s/%s", cfg->data_dir, TOKEN_FILE_NAME);
    else
        return usage_error("demo: where should the demo keep its token? Set FLEETD_DATA_DIR (scripts/run does) or give "
                           "--token-file PATH");
    if (n < 0 || (size_t)n + 8 >= outlen) /* room for ".tmp" */
        return usage_error("demo: the token file's path is too long");
    return EXIT_OK;
}

/* The token kept by an earlier run, if the file holds one. */
static bool read_token_file(const char *path, char token[FL_API_TOKEN_LEN + 1])
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return false;
    char line[128] = "";
    bool read = fgets(line, sizeof(line), f) != NULL;
    struct stat st;
    if (read && fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
        fchmod(fileno(f), 0600); /* someone loosened it: the token is a credential */
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!read || !fl_api_token_well_formed(line))
        return false;
    memcpy(token, line, FL_API_TOKEN_LEN + 1);
    return true;
}

/* Replaces the file at once (a new file renamed over it), readable by its owner only. */
static int write_token_file(const char *what, const char *path, const char *token)
{
    char tmp[PATH_MAX + 8], line[FL_API_TOKEN_LEN + 2];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int len = snprintf(line, sizeof(line), "%s\n", token);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    bool ok = fd >= 0 && fchmod(fd, 0600) == 0 && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        saved = errno;
    }
    sodium_memzero(line, sizeof(line));
    if (ok)
        return EXIT_OK;
    if (fd >= 0)
        unlink(tmp);
    return runtime_error("%s: cannot write the demo token to %s: %s", what, path, strerror(saved));
}

/* ---- the demo fleet, partner and token ---- */

static const char lock_sql[] = "SELECT pg_advisory_xact_lock(hashtext('fleetd demo'))";
static const char secrets_sql[] = "SELECT nonce, secret_ciphertext FROM partner_secrets"
                                  " WHERE partner_id = $1 AND retired_at IS NULL ORDER BY id DESC LIMIT 20";
static const char token_valid_sql[] = "SELECT 1 FROM tokens t WHERE t.token_hash = $1::bytea AND t.revoked_at IS NULL AND (t.admin"
                                      " OR EXISTS (SELECT 1 FROM token_fleets f WHERE f.token_id = t.id AND f.fleet_id = $2))";
static const char revoke_others_sql[] = "UPDATE tokens SET revoked_at = greatest(now(), created_at)"
                                        " WHERE name = $1 AND revoked_at IS NULL AND token_hash <> $2::bytea";

/* The partner's newest live secret that the master key opens, if any. */
static int open_secret(PGconn *pg, const char *what, const uint8_t master[FL_MASTER_KEY_BYTES], uint8_t key[FL_SECRET_BYTES],
                       bool *found)
{
    int rc = EXIT_OK;
    const char *values[] = {DEMO_PARTNER};
    PGresult *res = cli_db_query_ex(pg, what, secrets_sql, 1, values, NULL, NULL, 1, &rc);
    if (res == NULL)
        return rc;
    *found = false;
    for (int i = 0; i < PQntuples(res) && !*found; i++)
        *found = PQgetlength(res, i, 0) == 24 &&
                 fl_secret_open(master, (const uint8_t *)PQgetvalue(res, i, 0), (const uint8_t *)PQgetvalue(res, i, 1),
                                (size_t)PQgetlength(res, i, 1), key) == FL_OK;
    PQclear(res);
    return EXIT_OK;
}

/* The demo partner's signing key: a live secret it already has, or a new one when none opens with
 * this master key (and the key is the daemons', as far as the stored secrets can tell). */
static int partner_key(PGconn *pg, const char *what, const uint8_t master[FL_MASTER_KEY_BYTES], uint8_t key[FL_SECRET_BYTES])
{
    bool found = false;
    int rc = open_secret(pg, what, master, key, &found);
    if (rc != EXIT_OK || found)
        return rc;
    char text[64];
    if ((rc = partner_check_master(pg, what, NULL, master)) != EXIT_OK)
        return rc;
    if (!partner_add_secret(pg, what, DEMO_PARTNER, master, text, &rc))
        return rc;
    rc = fl_secret_parse(text, key) == FL_OK ? EXIT_OK : runtime_error("%s: a new secret does not parse", what);
    sodium_memzero(text, sizeof(text));
    return rc;
}

static void hash_hex(const char *token, char out[2 + 64 + 1])
{
    unsigned char hash[32];
    fl_api_token_hash(token, hash);
    memcpy(out, "\\x", 3);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", hash[i]);
}

/* The operator token of the demo: the one in the token file while it is valid for the fleet, else a
 * new one (written to the file; older demo tokens are revoked). */
static int demo_token(PGconn *pg, const char *what, const char *path, char token[FL_API_TOKEN_LEN + 1])
{
    int rc = EXIT_OK;
    char hex[2 + 64 + 1];
    if (read_token_file(path, token)) {
        hash_hex(token, hex);
        const char *values[] = {hex, DEMO_FLEET};
        PGresult *res = cli_db_query(pg, what, token_valid_sql, 2, values, &rc);
        if (res == NULL)
            return rc;
        bool valid = PQntuples(res) > 0;
        PQclear(res);
        if (valid)
            return EXIT_OK;
    }
    if ((rc = token_insert(pg, what, DEMO_TOKEN_NAME, false, "{\"" DEMO_FLEET "\"}", token)) != EXIT_OK)
        return rc;
    hash_hex(token, hex);
    const char *values[] = {DEMO_TOKEN_NAME, hex};
    if (!cli_db_exec(pg, what, revoke_others_sql, 2, values, &rc))
        return rc;
    return write_token_file(what, path, token);
}

/* Everything the demo needs, in one transaction, one demo at a time: any run after the first finds it
 * all and changes nothing but a token or secret that no longer works. */
static int setup(const fl_config_t *cfg, const char *token_path, uint8_t key[FL_SECRET_BYTES], char token[FL_API_TOKEN_LEN + 1])
{
    const char *what = "demo";
    uint8_t master[FL_MASTER_KEY_BYTES];
    bool created = false;
    int rc = partner_load_master(cfg, what, master);
    if (rc != EXIT_OK)
        return rc;
    PGconn *pg = cli_db_connect(cfg, "fleetd demo", &rc);
    if (pg == NULL)
        goto out;
    if (!cli_db_exec(pg, what, "BEGIN", 0, NULL, &rc) || !cli_db_exec(pg, what, lock_sql, 0, NULL, &rc) ||
        (rc = fleet_insert(pg, what, DEMO_FLEET, DEMO_FLEET_NAME, &created)) != EXIT_OK ||
        (rc = partner_insert(pg, what, DEMO_PARTNER, "{\"" DEMO_FLEET "\"}", &created)) != EXIT_OK ||
        (rc = partner_key(pg, what, master, key)) != EXIT_OK || (rc = demo_token(pg, what, token_path, token)) != EXIT_OK)
        goto out;
    /* Running daemons reload their partners: the demo partner is known by the time batches come. */
    if (partner_notify(pg, what, DEMO_PARTNER, &rc))
        cli_db_exec(pg, what, "COMMIT", 0, NULL, &rc);
out:
    PQfinish(pg); /* without COMMIT nothing is stored */
    sodium_memzero(master, sizeof(master));
    return rc;
}

/* ---- the simulator ---- */

typedef struct {
    const demo_opts_t *o;
    const char *base;
    const uint8_t *key;
    demo_vehicle_t *vehicles;
    char path[128];
    long long batches, fixes, last_id_ms;
    fl_strbuf_t body;
} sim_t;

typedef enum { SENT, WAIT, FATAL } outcome_t;

typedef struct {
    outcome_t outcome;
    int status;        /* HTTP status, 0 when there was no answer */
    int wait_ms;       /* WAIT: how long before the next try (0: the client's backoff) */
    int client_error;  /* FL_* of the exchange when there was no answer */
    char problem[512]; /* what went wrong, one line */
} result_t;

static int build_batch(sim_t *s, int64_t now_ms)
{
    char recorded[32];
    fl_time_format_ms(now_ms, recorded);
    double t = (double)now_ms / 1000.0;
    fl_strbuf_t *b = &s->body;
    b->len = 0;
    fl_strbuf_str(b, "{\"fixes\":[");
    for (int i = 0; i < s->o->vehicles; i++) {
        demo_fix_t f;
        demo_vehicle_fix(&s->vehicles[i], t, &f);
        fl_strbuf_printf(b,
                         "%s{\"fleet_id\":\"" DEMO_FLEET
                         "\",\"vehicle_id\":\"%s\",\"lat\":%.6f,\"lng\":%.6f,\"recorded_at\":\"%s\","
                         "\"speed_kmh\":%.1f,\"heading_deg\":%.1f,\"accuracy_m\":%.1f}",
                         i ? "," : "", s->vehicles[i].id, f.lat, f.lng, recorded, f.speed_kmh, f.heading_deg, f.accuracy_m);
    }
    fl_strbuf_str(b, "]}");
    return b->failed ? FL_ENOMEM : FL_OK;
}

/* "STATUS CODE: MESSAGE" of a fleetd error body. */
static void error_of(const char *body, result_t *r)
{
    json_t *doc = json_loads(body ? body : "", 0, NULL);
    json_t *err = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *message = json_string_value(json_object_get(err, "message"));
    snprintf(r->problem, sizeof(r->problem), "%d %s: %.300s", r->status, code ? code : "", message ? message : body ? body : "");
    json_decref(doc);
}

/* Signs and posts one batch of every vehicle's position now. */
static void post_batch(sim_t *s, result_t *r)
{
    *r = (result_t){.outcome = WAIT};
    int64_t now_ms = fl_now_wall_ms();
    if (build_batch(s, now_ms) != FL_OK) {
        r->outcome = FATAL;
        snprintf(r->problem, sizeof(r->problem), "out of memory");
        return;
    }
    /* webhook-id is the batch's idempotency key: unique per process and millisecond */
    long long id_ms = now_ms > s->last_id_ms ? now_ms : s->last_id_ms + 1;
    s->last_id_ms = id_ms;
    char msg_id[64], ts[24], sig[64], headers[512];
    snprintf(msg_id, sizeof(msg_id), "demo-%ld-%lld", (long)getpid(), id_ms);
    snprintf(ts, sizeof(ts), "%lld", (long long)(now_ms / 1000));
    fl_webhook_sign(msg_id, ts, s->body.p, s->body.len, s->key, sig);
    snprintf(headers, sizeof(headers),
             "Content-Type: application/json\r\nwebhook-id: %s\r\nwebhook-timestamp: %s\r\nwebhook-signature: %s\r\n", msg_id, ts,
             sig);
    cli_http_response_t res;
    int st = cli_http_request(s->base, "POST", s->path, headers, s->body.p, s->body.len, HTTP_TIMEOUT_MS, &res, r->problem,
                              sizeof(r->problem));
    if (st != FL_OK) {
        r->client_error = st;
        r->outcome = st == FL_EUNAVAIL || st == FL_EIO ? WAIT : FATAL;
        return;
    }
    r->status = res.status;
    if (res.status >= 200 && res.status < 300) {
        r->outcome = SENT;
        s->batches++;
        s->fixes += s->o->vehicles;
    } else {
        error_of(res.body, r);
        if (res.status == 429 || res.status == 503) {
            int after = res.retry_after_s < 1 ? 1 : res.retry_after_s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : res.retry_after_s;
            r->wait_ms = after * 1000;
        } else if (res.status != 401 && res.status != 403 && res.status != 408 && res.status < 500) {
            r->outcome = FATAL; /* the batch itself is refused, or this is not fleetd: sending again changes nothing */
        }
    }
    cli_http_response_free(&res);
}

static bool parent_gone(const demo_opts_t *o)
{
    return o->parent_pid > 0 && getppid() != (pid_t)o->parent_pid;
}

/* Sleeps until the monotonic time until_ms, or less when asked to stop. */
static void sleep_until(const demo_opts_t *o, int64_t until_ms)
{
    for (;;) {
        int64_t left = until_ms - fl_now_mono_ms();
        if (left <= 0 || stop_signal || parent_gone(o))
            return;
        if (left > 200) /* short naps: a signal that lands just before one is seen soon after */
            left = 200;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (long)(left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* What the last try ran into: logged when it changes, not on every try. */
typedef struct {
    bool posting, ever_posted;
    int status, client_error;
    int64_t quiet_until;   /* before the first batch goes through, waits this early are normal: no warning */
    int64_t refused_since; /* when 401/403 answers began, 0 when the last answer was another */
} state_t;

static void report(sim_t *s, state_t *st, const result_t *r, int64_t now)
{
    if (r->outcome == SENT) {
        if (!st->posting)
            fl_log(FL_LOG_INFO, "demo.posting", FL_MSG("the daemon takes the demo's batches: the vehicles move on the map"),
                   FL_STR("url", s->base), FL_INT("vehicles", s->o->vehicles), FL_INT("interval_ms", s->o->interval_ms));
        *st = (state_t){.posting = true, .ever_posted = true};
        return;
    }
    bool refused = r->status == 401 || r->status == 403;
    if (!refused)
        st->refused_since = 0;
    else if (st->refused_since == 0)
        st->refused_since = now;
    /* a daemon started beside the demo takes a moment to listen and a new partner a moment to be
     * loaded: only a wait that lasts is worth a warning */
    if ((!st->ever_posted && now < st->quiet_until) ||
        (!st->posting && st->status == r->status && st->client_error == r->client_error))
        return;
    st->posting = false;
    st->status = r->status;
    st->client_error = r->client_error;
    if (r->status == 0)
        fl_log(FL_LOG_WARN, "demo.waiting",
               FL_MSG(r->client_error == FL_EUNAVAIL ? "the daemon is not answering yet; retrying with backoff"
                                                     : "posting to the daemon failed; retrying with backoff"),
               FL_STR("url", s->base), FL_STR("error", r->problem));
    else
        fl_log(FL_LOG_WARN, "demo.waiting",
               FL_MSG(refused ? "the daemon does not know the demo partner yet (it reloads its partners); retrying"
                              : "the daemon asks the demo to wait; retrying"),
               FL_STR("url", s->base), FL_INT("status", r->status), FL_STR("error", r->problem));
}

static int simulate(const demo_opts_t *o, const char *base, const uint8_t key[FL_SECRET_BYTES])
{
    sim_t s = {.o = o, .base = base, .key = key};
    snprintf(s.path, sizeof(s.path), "/api/v1/ingest/%s", DEMO_PARTNER);
    s.vehicles = fl_calloc((size_t)o->vehicles, sizeof(*s.vehicles));
    if (s.vehicles == NULL)
        return runtime_error("demo: out of memory");
    for (int i = 0; i < o->vehicles; i++)
        demo_vehicle_make(&s.vehicles[i], i);

    int64_t start = fl_now_mono_ms(), deadline = o->duration_s ? start + o->duration_s * 1000 : INT64_MAX;
    int64_t next = start, progress_at = start + PROGRESS_EVERY_MS;
    int backoff = BACKOFF_MIN_MS, rc = EXIT_OK;
    state_t state = {.quiet_until = start + QUIET_START_MS};
    result_t r = {0};
    fl_log(FL_LOG_INFO, "demo.started", FL_MSG("simulating vehicles; stop with Ctrl-C"), FL_STR("fleet", DEMO_FLEET),
           FL_STR("partner", DEMO_PARTNER), FL_STR("url", base), FL_INT("vehicles", o->vehicles),
           FL_INT("interval_ms", o->interval_ms), FL_INT("duration_s", o->duration_s));
    while (!stop_signal && !parent_gone(o) && fl_now_mono_ms() < deadline) {
        post_batch(&s, &r);
        int64_t now = fl_now_mono_ms();
        if (r.outcome == FATAL) {
            rc = runtime_error("demo: the daemon at %s refuses the demo's batches: %s", base, r.problem);
            break;
        }
        report(&s, &state, &r, now);
        if (state.refused_since && now - state.refused_since > REFUSED_GIVE_UP_MS) {
            rc = runtime_error("demo: the daemon at %s has refused the demo partner for %d s (%s): does it use the same "
                               "database and master key (FLEETD_MASTER_KEY or FLEETD_MASTER_KEY_FILE) as this command?",
                               base, REFUSED_GIVE_UP_MS / 1000, r.problem);
            break;
        }
        if (r.outcome == SENT) {
            backoff = BACKOFF_MIN_MS;
            next += o->interval_ms;
            if (next < now) /* fell behind (a slow answer): carry on from now, no burst to catch up */
                next = now;
        } else {
            next = now + (r.wait_ms > 0 ? r.wait_ms : backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
        if (now >= progress_at) {
            fl_log(FL_LOG_INFO, "demo.progress", FL_MSG("batches the daemon accepted so far"), FL_INT("batches", s.batches),
                   FL_INT("fixes", s.fixes));
            progress_at = now + PROGRESS_EVERY_MS;
        }
        sleep_until(o, next < deadline ? next : deadline);
    }
    if (rc == EXIT_OK && o->duration_s && !stop_signal && s.batches == 0)
        rc = runtime_error("demo: no batch was accepted in %ld s (%s)", o->duration_s, r.problem[0] ? r.problem : "no answer");
    fl_log(FL_LOG_INFO, "demo.stopped",
           FL_MSG(stop_signal      ? "stopped by a signal"
                  : parent_gone(o) ? "its parent process ended"
                                   : "finished"),
           FL_INT("batches", s.batches), FL_INT("fixes", s.fixes));
    fl_strbuf_free(&s.body);
    fl_free(s.vehicles);
    return rc;
}

static int run(const command_t *cmd, fl_config_t *cfg, int argc, char **argv)
{
    (void)cmd;
    demo_opts_t o = {.vehicles = 36, .interval_ms = 1000};
    char base[300], token_path[PATH_MAX];
    int rc = parse_args(&o, argc, argv);
    if (rc != EXIT_OK || (rc = daemon_base(&o, cfg, base, sizeof(base))) != EXIT_OK ||
        (rc = token_file_path(&o, cfg, token_path, sizeof(token_path))) != EXIT_OK)
        return rc;
    if (o.parent_pid) {
        /* started beside a daemon (scripts/run): end with it, even when it is killed */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (parent_gone(&o))
            return EXIT_OK;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: a blocking call returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint8_t key[FL_SECRET_BYTES];
    char token[FL_API_TOKEN_LEN + 1];
    if ((rc = setup(cfg, token_path, key, token)) != EXIT_OK)
        return rc;
    printf("%s/#token=%s&fleet=%s\n", base, token, DEMO_FLEET);
    if (fflush(stdout) != 0)
        rc = runtime_error("demo: cannot write the map's URL to standard output");
    sodium_memzero(token, sizeof(token));
    if (rc == EXIT_OK && !o.setup_only)
        rc = simulate(&o, base, key);
    sodium_memzero(key, sizeof(key));
    return rc;
}

const command_t cmd_demo = {
    .name = "demo",
    .summary = "a demo fleet of simulated vehicles that move on the live map",
    .usage = "Usage: fleetd demo [--vehicles N] [--interval-ms MS] [--duration S] [--url http://HOST:PORT]\n"
             "                   [--token-file PATH] [--setup-only]\n\n"
             "Something to watch right after starting fleetd. The demo makes sure the fleet " DEMO_FLEET ", the\n"
             "partner " DEMO_PARTNER " (allowed to write it, with a signing secret) and an operator token for the\n"
             "fleet exist, creating what is missing, and prints the live map's URL with that token, alone on\n"
             "one line:\n"
             "    http://127.0.0.1:4000/#token=fl_...&fleet=" DEMO_FLEET "\n"
             "Then it plays the partner: N vehicles drive loops through the streets around Stockholm's\n"
             "harbour at 20 to 60 km/h, and every interval their positions (with speed, heading and\n"
             "accuracy) go to the daemon as one batch signed like any partner's (POST\n"
             "/api/v1/ingest/" DEMO_PARTNER "). It waits for a daemon that is not up yet, honours Retry-After,\n"
             "and runs until Ctrl-C (SIGINT), SIGTERM or --duration. Running it again is safe: it reuses what\n"
             "exists, and the vehicles carry on from where they would be.\n\n"
             "The token is printed by no other command again, so the demo keeps it in a file, readable by\n"
             "its owner only (mode 0600): $FLEETD_DATA_DIR/" TOKEN_FILE_NAME " (scripts/run sets FLEETD_DATA_DIR to\n"
             ".data), or --token-file. While that token is valid the URL stays the same; otherwise the demo\n"
             "makes a new token, revokes the older demo tokens (named \"" DEMO_TOKEN_NAME "\") and rewrites the file.\n\n"
             "  --vehicles N        simulated vehicles, 1 to 1000 (default 36)\n"
             "  --interval-ms MS    time between batches, 100 to 60000 (default 1000)\n"
             "  --duration S        stop after S seconds (default: run until stopped)\n"
             "  --url URL           the daemon (default http://$FLEETD_LISTEN; 0.0.0.0 becomes 127.0.0.1)\n"
             "  --token-file PATH   where the token is kept (default $FLEETD_DATA_DIR/" TOKEN_FILE_NAME ")\n"
             "  --setup-only        make sure the fleet, partner and token exist, print the URL and exit\n"
             "  --parent-pid PID    stop when process PID, the parent, ends (scripts/run passes its daemon)\n\n"
             "Settings: DATABASE_URL, FLEETD_MASTER_KEY or FLEETD_MASTER_KEY_FILE (the daemon's: it signs with\n"
             "the partner's secret), FLEETD_LISTEN, FLEETD_DATA_DIR.\n"
             "Exit status: 0 stopped or done; 1 the database, master key or token file failed, the daemon\n"
             "refused the batches, or with --duration none was accepted; 2 usage.\n",
    .run = run,
};
