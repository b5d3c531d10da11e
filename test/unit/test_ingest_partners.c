/* lib/ingest's master key, partner secrets and partner cache, against a real PostgreSQL: secrets
 * seal and open only under their master key; the cache loads partners created with SQL, follows
 * NOTIFY fleetd_partners and fl_partners_reload without a restart, drops retired secrets, skips a
 * secret that does not open (logging it once, never its bytes), keeps serving its last snapshot
 * while the database is away and catches up when it is back, and serves readers on every shard
 * while it reloads (run under TSan too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "ingest/ingest.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>

static uint8_t master[FL_MASTER_KEY_BYTES];
static uint8_t other_master[FL_MASTER_KEY_BYTES];
static char *db_url;
static fl_partners_t *ps;
static fl_actor_t *root;
static char log_path[] = "/tmp/fleetd_test_partners_log_XXXXXX";
static int log_fd = -1;

/* ---- the master key and secrets (no database) ---- */

static void seal_and_open_round_trip(void **state)
{
    (void)state;
    uint8_t secret[FL_SECRET_BYTES], opened[FL_SECRET_BYTES], nonce[24], box[FL_SECRET_BYTES + 16];
    char text[64];
    fl_secret_generate(secret, text);
    fl_secret_seal(master, secret, nonce, box);
    assert_int_equal(fl_secret_open(master, nonce, box, sizeof(box), opened), FL_OK);
    assert_memory_equal(opened, secret, FL_SECRET_BYTES);
    /* the ciphertext is not the secret, and a second seal uses another nonce */
    assert_memory_not_equal(box, secret, FL_SECRET_BYTES);
    uint8_t nonce2[24], box2[sizeof(box)];
    fl_secret_seal(master, secret, nonce2, box2);
    assert_memory_not_equal(nonce, nonce2, 24);
    assert_memory_not_equal(box, box2, sizeof(box));

    /* another master key, a flipped bit, a short ciphertext: refused, nothing written */
    memset(opened, 0xAA, sizeof(opened));
    assert_int_equal(fl_secret_open(other_master, nonce, box, sizeof(box), opened), FL_EINVAL);
    for (size_t i = 0; i < sizeof(opened); i++)
        assert_int_equal(opened[i], 0xAA);
    box[5] ^= 1;
    assert_int_equal(fl_secret_open(master, nonce, box, sizeof(box), opened), FL_EINVAL);
    box[5] ^= 1;
    assert_int_equal(fl_secret_open(master, nonce, box, sizeof(box) - 1, opened), FL_EINVAL);
    nonce[0] ^= 1;
    assert_int_equal(fl_secret_open(master, nonce, box, sizeof(box), opened), FL_EINVAL);
}

static void secret_text_is_whsec_and_padded_base64(void **state)
{
    (void)state;
    uint8_t secret[FL_SECRET_BYTES], back[FL_SECRET_BYTES];
    char text[64];
    fl_secret_generate(secret, text);
    assert_int_equal(strlen(text), 6 + 44);
    assert_memory_equal(text, "whsec_", 6);
    assert_int_equal(text[49], '=');
    assert_int_equal(strspn(text + 6, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), 44);
    assert_int_equal(fl_secret_parse(text, back), FL_OK);
    assert_memory_equal(back, secret, FL_SECRET_BYTES);

    /* a known value: 32 bytes 0x00..0x1f */
    for (int i = 0; i < FL_SECRET_BYTES; i++)
        secret[i] = (uint8_t)i;
    fl_secret_format(secret, text);
    assert_string_equal(text, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_int_equal(fl_secret_parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", back), FL_EINVAL); /* unpadded */
    assert_int_equal(fl_secret_parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", back), FL_EINVAL);
    assert_int_equal(fl_secret_parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd", back), FL_EINVAL); /* 30 bytes */
}

static void master_key_from_setting_or_file(void **state)
{
    (void)state;
    const char *hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    uint8_t key[FL_MASTER_KEY_BYTES];
    char err[256] = "";
    fl_config_t cfg = {0};

    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_ENOTFOUND);
    assert_non_null(strstr(err, "FLEETD_MASTER_KEY"));

    cfg.master_key = (char *)(uintptr_t)hex;
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_OK);
    assert_int_equal(key[0], 0x00);
    assert_int_equal(key[1], 0x11);
    assert_int_equal(key[31], 0xFF);

    cfg.master_key = (char *)(uintptr_t) "00112233";
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "FLEETD_MASTER_KEY"));
    assert_null(strstr(err, "00112233"));

    /* a file: 64 hex characters, whitespace around them ignored */
    char path[] = "/tmp/fleetd_test_master_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char content[80];
    snprintf(content, sizeof(content), "  %s\n\n", hex);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    cfg.master_key = NULL;
    cfg.master_key_file = path;
    uint8_t from_file[FL_MASTER_KEY_BYTES];
    assert_int_equal(fl_master_key_load(&cfg, from_file, err, sizeof(err)), FL_OK);
    cfg.master_key = (char *)(uintptr_t)hex;
    cfg.master_key_file = NULL;
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_OK);
    assert_memory_equal(key, from_file, FL_MASTER_KEY_BYTES);

    /* both set: ambiguous */
    cfg.master_key_file = path;
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "both"));
    cfg.master_key = NULL;

    /* a file that is not a key: the message names the setting and never shows the content */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 65), 65);
    close(fd);
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "FLEETD_MASTER_KEY_FILE"));
    assert_null(strstr(err, "112233"));
    unlink(path);
    assert_int_equal(fl_master_key_load(&cfg, key, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "FLEETD_MASTER_KEY_FILE"));
    assert_non_null(strstr(err, path));
}

/* ---- the cache ---- */

/* Stores a new live secret for partner (sealed under key) and returns its raw bytes. */
static void add_secret(const char *partner, const uint8_t key[FL_MASTER_KEY_BYTES], uint8_t secret[FL_SECRET_BYTES])
{
    char text[64];
    uint8_t nonce[24], box[FL_SECRET_BYTES + 16];
    fl_secret_generate(secret, text);
    fl_secret_seal(key, secret, nonce, box);
    PGconn *pg = connect_to(db_url);
    const char *values[] = {partner, (const char *)box, (const char *)nonce};
    const int lengths[] = {0, sizeof(box), sizeof(nonce)};
    const int formats[] = {0, 1, 1};
    PGresult *res = PQexecParams(pg, "INSERT INTO partner_secrets (partner_id, secret_ciphertext, nonce) VALUES ($1, $2, $3)", 3,
                                 NULL, values, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("insert secret: %s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

static uint8_t acme_old[FL_SECRET_BYTES], acme_new[FL_SECRET_BYTES];

static int cache_setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_WARN, FL_LOG_JSON);
    log_fd = mkstemp(log_path);
    if (log_fd < 0)
        return -1;
    fl_log_set_fd(log_fd);
    if (pg_fixture_setup("ingest_partners") != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    exec_on(db_url, "INSERT INTO fleets (id) VALUES ('harbor-1'), ('zeta'), ('alpha'), ('Mid'), ('other');"
                    "INSERT INTO partners (id) VALUES ('acme'), ('bare');"
                    "INSERT INTO partner_fleets VALUES ('acme', 'zeta'), ('acme', 'harbor-1'), ('acme', 'alpha'), ('acme', 'Mid')");
    add_secret("acme", master, acme_old);
    add_secret("acme", master, acme_new);

    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK)
        return -1;
    fl_db_options_t dbo = {.conninfo = db_url, .reconnect_min_ms = 50, .reconnect_max_ms = 300, .health_interval_ms = 200};
    if (fl_partners_new(rt, &dbo, master, &ps) != FL_OK)
        return -1;
    static fl_child_spec_t kids[1];
    kids[0] = *fl_partners_spec(ps);
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 1};
    return fl_sup_start(fl_runtime_shard(rt, 1), "root", &spec, NULL, NULL, 15000, &root) == FL_OK ? 0 : -1;
}

static int cache_teardown(void **state)
{
    (void)state;
    if (root) {
        fl_sup_stop(root, 10000);
        fl_actor_unref(root);
    }
    fl_runtime_stop(rt);
    fl_partners_free(ps);
    fl_runtime_free(rt);
    fl_log_set_fd(-1);
    if (log_fd >= 0) {
        close(log_fd);
        unlink(log_path);
    }
    pg_fixture_teardown();
    return 0;
}

/* The partner's live secrets and fleets as the cache has them now: "n:fleet,fleet" or "-". */
static int nsecrets_of(const char *id)
{
    void *snap;
    const fl_partner_t *p = fl_partners_get(ps, id, &snap);
    int n = p ? p->nsecrets : -1;
    fl_partners_release(snap);
    return n;
}

static char *log_text(void)
{
    struct stat st;
    fstat(log_fd, &st);
    char *text = calloc(1, (size_t)st.st_size + 1);
    assert_int_equal(pread(log_fd, text, (size_t)st.st_size, 0), st.st_size);
    return text;
}

static int count_of(const char *haystack, const char *needle)
{
    int n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void loads_before_the_start_returns(void **state)
{
    (void)state;
    /* fl_sup_start returned: the cache is warm */
    assert_true(fl_partners_loaded(ps));
    void *snap = NULL;
    const fl_partner_t *p = fl_partners_get(ps, "acme", &snap);
    assert_non_null(p);
    assert_non_null(snap);
    assert_string_equal(p->id, "acme");
    assert_int_equal(p->nsecrets, 2);
    assert_memory_equal(p->secrets[0], acme_new, FL_SECRET_BYTES); /* newest first */
    assert_memory_equal(p->secrets[1], acme_old, FL_SECRET_BYTES);
    /* fleets sorted bytewise, for binary search */
    assert_int_equal(p->nfleets, 4);
    assert_string_equal(p->fleets[0], "Mid");
    assert_string_equal(p->fleets[1], "alpha");
    assert_string_equal(p->fleets[2], "harbor-1");
    assert_string_equal(p->fleets[3], "zeta");
    for (int i = 0; i < 4; i++)
        assert_true(fl_partner_may_write(p, p->fleets[i]));
    assert_false(fl_partner_may_write(p, "other"));
    assert_false(fl_partner_may_write(p, "mid"));
    assert_false(fl_partner_may_write(p, "harbor-"));
    assert_false(fl_partner_may_write(p, ""));
    fl_partners_release(snap);

    p = fl_partners_get(ps, "bare", &snap);
    assert_non_null(p);
    assert_int_equal(p->nsecrets, 0);
    assert_int_equal(p->nfleets, 0);
    assert_false(fl_partner_may_write(p, "harbor-1"));
    fl_partners_release(snap);

    assert_null(fl_partners_get(ps, "nobody", &snap));
    assert_null(snap);
    fl_partners_release(NULL);
}

static void a_notified_partner_appears_without_a_restart(void **state)
{
    (void)state;
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('newco'); INSERT INTO partner_fleets VALUES ('newco', 'other')");
    uint8_t secret[FL_SECRET_BYTES];
    add_secret("newco", master, secret);
    sleep_ms(300);
    assert_int_equal(nsecrets_of("newco"), -1); /* nobody said so yet */

    int64_t t0 = fl_now_mono_ms();
    exec_on(db_url, "SELECT pg_notify('fleetd_partners', 'newco')");
    assert_true(WAIT_FOR(nsecrets_of("newco") == 1, 1000));
    int64_t took = fl_now_mono_ms() - t0;
    void *snap;
    const fl_partner_t *p = fl_partners_get(ps, "newco", &snap);
    assert_memory_equal(p->secrets[0], secret, FL_SECRET_BYTES);
    assert_true(fl_partner_may_write(p, "other"));
    assert_false(fl_partner_may_write(p, "harbor-1"));
    fl_partners_release(snap);
    print_message("new partner visible %lld ms after NOTIFY\n", (long long)took);

    /* the same in one transaction, as the CLI does it */
    exec_on(db_url, "BEGIN; INSERT INTO partners (id) VALUES ('txco'); SELECT pg_notify('fleetd_partners', 'txco'); COMMIT");
    assert_true(WAIT_FOR(nsecrets_of("txco") == 0, 1000));
}

static void reload_on_request(void **state)
{
    (void)state;
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('quiet')");
    sleep_ms(200);
    assert_int_equal(nsecrets_of("quiet"), -1);
    fl_partners_reload(ps); /* as SIGHUP does */
    fl_partners_reload(ps); /* asks coalesce */
    assert_true(WAIT_FOR(nsecrets_of("quiet") == 0, 1000));
}

static void a_retired_secret_is_dropped(void **state)
{
    (void)state;
    /* a reference taken before the change stays valid after it */
    void *before;
    const fl_partner_t *old = fl_partners_get(ps, "acme", &before);
    assert_int_equal(old->nsecrets, 2);

    exec_on(db_url, "BEGIN; UPDATE partner_secrets SET retired_at = now()"
                    " WHERE partner_id = 'acme' AND id = (SELECT min(id) FROM partner_secrets WHERE partner_id = 'acme');"
                    "SELECT pg_notify('fleetd_partners', 'acme'); COMMIT");
    assert_true(WAIT_FOR(nsecrets_of("acme") == 1, 1000));
    void *snap;
    const fl_partner_t *p = fl_partners_get(ps, "acme", &snap);
    assert_memory_equal(p->secrets[0], acme_new, FL_SECRET_BYTES);
    assert_int_equal(p->nfleets, 4);
    fl_partners_release(snap);

    assert_int_equal(old->nsecrets, 2);
    assert_memory_equal(old->secrets[1], acme_old, FL_SECRET_BYTES);
    fl_partners_release(before);
}

static void an_undecryptable_secret_is_skipped_and_logged_once(void **state)
{
    (void)state;
    uint8_t good[FL_SECRET_BYTES], bad[FL_SECRET_BYTES];
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('mixed')");
    add_secret("mixed", master, good);
    add_secret("mixed", other_master, bad); /* the newest, sealed under another key */
    exec_on(db_url, "SELECT pg_notify('fleetd_partners', 'mixed')");
    assert_true(WAIT_FOR(nsecrets_of("mixed") == 1, 1000));
    void *snap;
    const fl_partner_t *p = fl_partners_get(ps, "mixed", &snap);
    assert_memory_equal(p->secrets[0], good, FL_SECRET_BYTES);
    fl_partners_release(snap);

    /* another load: still skipped, not logged again */
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('later'); SELECT pg_notify('fleetd_partners', 'later')");
    assert_true(WAIT_FOR(nsecrets_of("later") == 0, 1000));
    assert_int_equal(nsecrets_of("mixed"), 1);

    char *logs = log_text();
    assert_int_equal(count_of(logs, "\"partners.secret_undecryptable\""), 1);
    const char *line = strstr(logs, "\"partners.secret_undecryptable\"");
    assert_non_null(strstr(line, "\"partner\":\"mixed\""));
    /* never the secret, in any form */
    char text[64], hex[2 * FL_SECRET_BYTES + 1];
    fl_secret_format(bad, text);
    sodium_bin2hex(hex, sizeof(hex), bad, FL_SECRET_BYTES);
    assert_null(strstr(logs, text + 6));
    assert_null(strstr(logs, hex));
    free(logs);
}

static void set_connections(bool allowed)
{
    static char *name;
    if (name == NULL)
        name = value_of(db_url, "SELECT current_database()", NULL); /* while it can be read */
    char sql[256];
    snprintf(sql, sizeof(sql), "ALTER DATABASE %s WITH ALLOW_CONNECTIONS %s", name, allowed ? "true" : "false");
    exec_on(admin_url, sql);
    if (!allowed) {
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s'", name);
        exec_on(admin_url, sql);
    }
}

static void serves_the_last_snapshot_while_the_database_is_away(void **state)
{
    (void)state;
    /* a change whose notification is lost: it must show once the connection is back */
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('missed')");
    set_connections(false);
    sleep_ms(300);
    fl_partners_reload(ps); /* fails quietly: nothing to load from */
    for (int i = 0; i < 10; i++) {
        assert_true(fl_partners_loaded(ps));
        assert_int_equal(nsecrets_of("acme"), 1);
        assert_int_equal(nsecrets_of("newco"), 1);
        sleep_ms(50);
    }
    assert_int_equal(nsecrets_of("missed"), -1);
    set_connections(true);
    /* reconnect (backoff up to 300 ms here), then the load asked for meanwhile */
    assert_true(WAIT_FOR(nsecrets_of("missed") == 0, 5000));
    assert_int_equal(nsecrets_of("acme"), 1);

    /* nobody asks this time: coming back is reason enough to load (LISTEN went first) */
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('missed-2')");
    set_connections(false);
    sleep_ms(300);
    assert_int_equal(nsecrets_of("acme"), 1);
    set_connections(true);
    assert_true(WAIT_FOR(nsecrets_of("missed-2") == 0, 5000));
}

static void survives_its_actor_restarting(void **state)
{
    (void)state;
    assert_int_equal(fl_tree_restart_wait(root, "partners", 5000), FL_OK);
    assert_int_equal(nsecrets_of("acme"), 1); /* the cache outlives the actor */
    exec_on(db_url, "INSERT INTO partners (id) VALUES ('after-restart'); SELECT pg_notify('fleetd_partners', 'x')");
    assert_true(WAIT_FOR(nsecrets_of("after-restart") == 0, 2000));
}

/* ---- readers on every shard while it reloads ---- */

typedef struct {
    int shard;
    int64_t until_ms;
    atomic_long reads;
    atomic_int bad;
    atomic_int done;
} reader_t;

static void read_some(reader_t *r)
{
    for (int i = 0; i < 500; i++) {
        void *snap;
        const fl_partner_t *p = fl_partners_get(ps, "acme", &snap);
        if (p == NULL || p->nsecrets < 1 || p->nfleets != 4 || !fl_partner_may_write(p, "zeta") || fl_partner_may_write(p, "other"))
            atomic_fetch_add(&r->bad, 1);
        else {
            /* touch every secret byte, as a signature check would */
            unsigned x = 0;
            for (int s = 0; s < p->nsecrets; s++)
                for (int b = 0; b < FL_SECRET_BYTES; b++)
                    x += p->secrets[s][b];
            (void)x;
        }
        fl_partners_release(snap);
        atomic_fetch_add(&r->reads, 1);
    }
}

/* A few hundred reads per turn, then posts itself again, so the shard's other work (the partners
 * actor on shard 0) still runs in between. */
static void reader_task(void *arg)
{
    reader_t *r = arg;
    read_some(r);
    if (fl_now_mono_ms() < r->until_ms && fl_shard_post(fl_runtime_shard(rt, r->shard), reader_task, r) == FL_OK)
        return;
    atomic_store(&r->done, 1);
}

static void *reader_thread(void *arg)
{
    reader_t *r = arg;
    while (fl_now_mono_ms() < r->until_ms)
        read_some(r);
    atomic_store(&r->done, 1);
    return NULL;
}

static void readers_on_every_shard_while_it_reloads(void **state)
{
    (void)state;
    int64_t until = fl_now_mono_ms() + 1500;
    reader_t readers[3] = {{.shard = 0, .until_ms = until}, {.shard = 1, .until_ms = until}, {.shard = -1, .until_ms = until}};
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 0), reader_task, &readers[0]), FL_OK);
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 1), reader_task, &readers[1]), FL_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_thread, &readers[2]), 0);

    /* meanwhile: rotations with notifications (each a new snapshot) and reloads on request */
    int rotations = 0;
    while (fl_now_mono_ms() < until - 200) {
        uint8_t secret[FL_SECRET_BYTES];
        add_secret("acme", master, secret);
        exec_on(db_url, "SELECT pg_notify('fleetd_partners', 'acme')");
        fl_partners_reload(ps);
        rotations++;
        sleep_ms(20);
    }
    pthread_join(th, NULL);
    for (int i = 0; i < 3; i++) {
        assert_true(WAIT_FOR(atomic_load(&readers[i].done) == 1, 5000));
        assert_int_equal(atomic_load(&readers[i].bad), 0);
        assert_true(atomic_load(&readers[i].reads) > 1000);
    }
    /* and the last rotation is in */
    assert_true(WAIT_FOR(nsecrets_of("acme") == 1 + rotations, 2000));
    print_message("reads: shard 0 %ld, shard 1 %ld, thread %ld; %d rotations\n", atomic_load(&readers[0].reads),
                  atomic_load(&readers[1].reads), atomic_load(&readers[2].reads), rotations);
}

/* ---- a database that is not there at start ---- */

static void starts_cold_when_the_database_is_down(void **state)
{
    (void)state;
    fl_partners_t *cold;
    fl_db_options_t dbo = {.conninfo = "host=/nonexistent/fleetd-test dbname=x connect_timeout=1"};
    assert_int_equal(fl_partners_new(rt, &dbo, master, &cold), FL_OK);
    fl_child_spec_t kids[1] = {*fl_partners_spec(cold)};
    kids[0].id = "partners-cold";
    fl_sup_spec_t spec = {.strategy = FL_ONE_FOR_ONE, .max_restarts = 1, .period_ms = 1000, .children = kids, .nchildren = 1};
    fl_actor_t *sup;
    int64_t t0 = fl_now_mono_ms();
    assert_int_equal(fl_sup_start(fl_runtime_shard(rt, 0), "cold", &spec, NULL, NULL, 15000, &sup), FL_OK);
    int64_t took = fl_now_mono_ms() - t0;
    assert_true(took >= 1500 && took < 5000); /* it waited for a load, but not forever */
    assert_false(fl_partners_loaded(cold));
    void *snap;
    assert_null(fl_partners_get(cold, "acme", &snap));
    assert_null(snap);
    fl_partners_reload(cold);
    assert_int_equal(fl_sup_stop(sup, 10000), FL_OK);
    fl_actor_unref(sup);
    fl_partners_free(cold);
    char *logs = log_text();
    assert_non_null(strstr(logs, "\"partners.start_cold\""));
    free(logs);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(master, sizeof(master));
    randombytes_buf(other_master, sizeof(other_master));
    const struct CMUnitTest secrets[] = {
        cmocka_unit_test(seal_and_open_round_trip),
        cmocka_unit_test(secret_text_is_whsec_and_padded_base64),
        cmocka_unit_test(master_key_from_setting_or_file),
    };
    const struct CMUnitTest cache[] = {
        cmocka_unit_test(loads_before_the_start_returns),
        cmocka_unit_test(a_notified_partner_appears_without_a_restart),
        cmocka_unit_test(reload_on_request),
        cmocka_unit_test(a_retired_secret_is_dropped),
        cmocka_unit_test(an_undecryptable_secret_is_skipped_and_logged_once),
        cmocka_unit_test(serves_the_last_snapshot_while_the_database_is_away),
        cmocka_unit_test(survives_its_actor_restarting),
        cmocka_unit_test(readers_on_every_shard_while_it_reloads),
        cmocka_unit_test(starts_cold_when_the_database_is_down),
    };
    int failed = cmocka_run_group_tests_name("secrets", secrets, NULL, NULL);
    failed += cmocka_run_group_tests_name("partner cache", cache, cache_setup, cache_teardown);
    return failed;
}
