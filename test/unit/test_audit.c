/* lib/jobs audit trail against a real PostgreSQL and the real job queue: an audit job becomes the
 * request in ingest_batches (byte for byte), its fixes in positions, new vehicles, and
 * vehicle_latest moved forward only; a duplicate fix is ignored; the same batch run twice adds
 * nothing and fails nothing; an unreadable body is discarded with the reason; retention deletes
 * old rows in batches and keeps recent ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "jobs/jobs.h"

#include <fcntl.h>
#include <jansson.h>

static fl_db_service_t *dbs;
static fl_jobs_t *jobs;
static fl_actor_t *root;
static char *db_url;
static char log_path[] = "/tmp/fleetd_test_audit_XXXXXX";
static int log_fd = -1;

#define RETENTION_S (30 * 86400)

static int setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
    /* the log goes to a file: the retention test reads its report */
    log_fd = mkstemp(log_path);
    if (log_fd < 0)
        return -1;
    fl_log_set_fd(log_fd);
    if (pg_fixture_setup("audit") != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    exec_on(db_url, "INSERT INTO fleets (id) VALUES ('harbor-1'), ('other');"
                    "INSERT INTO partners (id) VALUES ('acme');"
                    "INSERT INTO vehicles (id, fleet_id) VALUES ('van-9', 'other')");

    fl_db_options_t dbo = {.conninfo = db_url, .health_interval_ms = 500};
    fl_jobs_opts_t jo = {.node = "test", .conninfo = db_url, .poll_interval_ms = 50, .backoff_base_ms = 50, .backoff_max_ms = 200};
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_db_service_new(rt, &dbo, &dbs) != FL_OK ||
        fl_jobs_new(rt, dbs, &jo, &jobs) != FL_OK || fl_audit_register(jobs, RETENTION_S, 0) != FL_OK)
        return -1;
    static fl_child_spec_t kids[2];
    kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(dbs)};
    kids[1] = (fl_child_spec_t){.id = "jobs", .sup = fl_jobs_spec(jobs)};
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 2};
    return fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) == FL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (root) {
        fl_sup_stop(root, 10000);
        fl_actor_unref(root);
    }
    fl_runtime_stop(rt);
    fl_jobs_free(jobs);
    fl_db_service_free(dbs);
    fl_runtime_free(rt);
    fl_log_set_fd(-1);
    if (log_fd >= 0) {
        close(log_fd);
        unlink(log_path);
    }
    pg_fixture_teardown();
    return 0;
}

/* ---- helpers ---- */

/* The args of a batch from partner acme; fleets lists harbor-1. Caller fl_frees. */
static char *args_of(const char *webhook_id, const char *body)
{
    const char *fleets[] = {"harbor-1"};
    char *args = NULL;
    assert_int_equal(fl_audit_args("acme", webhook_id, 1795428000, "v1,c2lnbmF0dXJl v1,b2xk", 1795428000200123LL, fleets, 1, body,
                                   strlen(body), &args, NULL),
                     FL_OK);
    return args;
}

/* Inserts an audit job as the committer would; returns its id. */
static long insert_job(const char *queue, const char *args)
{
    PGconn *pg = connect_to(db_url);
    const char *values[] = {queue, args};
    PGresult *res = PQexecParams(pg, "INSERT INTO jobs (queue, kind, args) VALUES ($1, $1, $2::jsonb) RETURNING id", 2, NULL,
                                 values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("insert job: %s", PQerrorMessage(pg));
    long id = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(pg);
    return id;
}

/* Waits for the job to end; returns its state (caller frees). */
static char *finished_state(long id)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT state FROM jobs WHERE id = %ld AND state IN ('completed', 'discarded', 'cancelled')", id);
    char *state = NULL;
    int64_t deadline = fl_now_mono_ms() + 15000;
    while ((state = value_of(db_url, sql, NULL)) == NULL && fl_now_mono_ms() < deadline)
        sleep_ms(20);
    if (state == NULL) {
        snprintf(sql, sizeof(sql), "SELECT state || ' ' || errors::text FROM jobs WHERE id = %ld", id);
        fail_msg("job %ld did not finish: %s", id, value_of(db_url, sql, NULL));
    }
    return state;
}

static long run_batch(const char *webhook_id, const char *body)
{
    char *args = args_of(webhook_id, body);
    long id = insert_job("audit", args);
    fl_free(args);
    char *state = finished_state(id);
    assert_string_equal(state, "completed");
    free(state);
    return id;
}

static long count(const char *sql)
{
    return long_of(db_url, sql);
}

/* ---- pure functions ---- */

static void times_are_read_as_rfc3339(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(fl_audit_parse_time("2026-11-23T10:00:00Z", 20, &us), FL_OK);
    assert_int_equal(us, 1795428000000000LL);
    assert_int_equal(fl_audit_parse_time("2026-11-23T12:00:00.5+02:00", 27, &us), FL_OK);
    assert_int_equal(us, 1795428000500000LL);
    assert_int_equal(fl_audit_parse_time("2026-11-23t09:30:00.1234565-00:30", 33, &us), FL_OK);
    assert_int_equal(us, 1795428000123457LL); /* rounded to the microsecond */
    assert_int_equal(fl_audit_parse_time("2024-02-29T00:00:00z", 20, &us), FL_OK);
    const char *bad[] = {"2026-11-23 10:00:00Z",
                         "2026-11-23T10:00:00",
                         "2026-02-29T10:00:00Z",
                         "2026-11-23T24:00:00Z",
                         "2026-11-23T10:00:00.Z",
                         "2026-11-23T10:00:00+0200",
                         "yesterday",
                         "2026-13-01T00:00:00Z",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (fl_audit_parse_time(bad[i], strlen(bad[i]), &us) != FL_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void args_carry_the_body_as_a_string(void **state)
{
    (void)state;
    const char body[] = "{\"fixes\": [ ]}\n";
    char *args = args_of("msg_1", body);
    json_t *doc = json_loads(args, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "body")), body);
    assert_string_equal(json_string_value(json_object_get(doc, "received_at")), "2026-11-23T10:00:00.200123Z");
    assert_int_equal(json_integer_value(json_object_get(doc, "webhook_timestamp")), 1795428000);
    assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "fleets"), 0)), "harbor-1");
    json_decref(doc);
    fl_free(args);
    char *none = NULL;
    const char bad_utf8[] = "{\"fixes\":[\"\xff\"]}";
    assert_int_equal(fl_audit_args("acme", "m", 1, "v1,x", 0, NULL, 0, bad_utf8, strlen(bad_utf8), &none, NULL), FL_EINVAL);
    assert_null(none);
}

/* ---- the worker ---- */

/* Odd but valid JSON: spacing, an escaped and a raw non-ASCII character, offsets, fractions. */
static const char first_body[] =
    "{ \"fixes\" : [\n"
    "  {\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":59.3293,\"lng\":18.0686,"
    "\"recorded_at\":\"2026-11-23T12:00:00.123456+02:00\",\"speed_kmh\":42.5,\"heading_deg\":270,\"accuracy_m\":5,\"note\":"
    "\"caf\\u00e9 \xc3\xa9\"},\n"
    "  "
    "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":59.33,\"lng\":18.07,\"recorded_at\":\"2026-11-23T10:00:05Z\"},"
    "\n"
    "  {\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"van-2\",\"lat\":-33.5,\"lng\":-70.25,\"recorded_at\":\"2026-11-23T09:59:59.9Z\","
    "\"speed_kmh\":null}\n"
    "] }\n";

static void a_batch_becomes_rows(void **state)
{
    (void)state;
    long job = run_batch("msg_first", first_body);

    /* the request, byte for byte, with its signature and times */
    char *hex = value_of(
        db_url, "SELECT encode(body, 'hex') FROM ingest_batches WHERE partner_id = 'acme' AND webhook_id = 'msg_first'", NULL);
    assert_non_null(hex);
    assert_int_equal(strlen(hex), 2 * strlen(first_body));
    for (size_t i = 0; i < strlen(first_body); i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        if (v != (unsigned char)first_body[i])
            fail_msg("body byte %zu differs", i);
    }
    free(hex);
    char *row = value_of(db_url,
                         "SELECT webhook_timestamp || '|' || signature || '|' || to_char(received_at AT TIME ZONE 'UTC',"
                         " 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '|' || job_id FROM ingest_batches WHERE webhook_id = 'msg_first'",
                         NULL);
    char want[128];
    snprintf(want, sizeof(want), "1795428000|v1,c2lnbmF0dXJl v1,b2xk|2026-11-23T10:00:00.200123|%ld", job);
    assert_string_equal(row, want);
    free(row);

    /* the new vehicle is registered in the fix's fleet */
    assert_int_equal(count("SELECT count(*) FROM vehicles WHERE fleet_id = 'harbor-1' AND id IN ('truck-17', 'van-2')"), 2);
    /* every fix, with its values exactly, tied to the batch */
    assert_int_equal(count("SELECT count(*) FROM positions p JOIN ingest_batches b ON b.id = p.batch_id"
                           " WHERE b.webhook_id = 'msg_first' AND p.received_at = b.received_at"),
                     3);
    row = value_of(db_url,
                   "SELECT lat || ' ' || lng || ' ' || speed_kmh || ' ' || heading_deg || ' ' || accuracy_m FROM positions"
                   " WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:00:00.123456Z'",
                   NULL);
    assert_string_equal(row, "59.3293 18.0686 42.5 270 5");
    free(row);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id = 'van-2' AND recorded_at = '2026-11-23T09:59:59.9Z'"
                           " AND speed_kmh IS NULL AND heading_deg IS NULL AND lat = -33.5"),
                     1);
    /* the newest fix of each vehicle is its latest */
    assert_int_equal(count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'truck-17'"
                           " AND recorded_at = '2026-11-23T10:00:05Z' AND lat = 59.33 AND speed_kmh IS NULL"
                           " AND received_at = '2026-11-23T10:00:00.200123Z'"),
                     1);
    assert_int_equal(count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'van-2' AND fleet_id = 'harbor-1'"), 1);
}

static void latest_only_moves_forward(void **state)
{
    (void)state;
    /* older than truck-17's latest (10:00:05): kept in history, the latest stays */
    run_batch("msg_older", "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":1,\"lng\":2,"
                           "\"recorded_at\":\"2026-11-23T10:00:01Z\"}]}");
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:00:01Z'"),
                     1);
    assert_int_equal(
        count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:00:05Z'"), 1);
    /* newer: it moves */
    run_batch("msg_newer", "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":3,\"lng\":4,"
                           "\"recorded_at\":\"2026-11-23T10:01:00Z\",\"heading_deg\":90}]}");
    assert_int_equal(
        count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:01:00Z'"
              " AND lat = 3 AND heading_deg = 90"),
        1);
}

static void a_duplicate_fix_is_ignored(void **state)
{
    (void)state;
    long before = count("SELECT count(*) FROM positions");
    /* the same vehicle and recorded_at as an earlier fix (another offset, other values), twice in one batch */
    run_batch("msg_dup", "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":9,\"lng\":9,"
                         "\"recorded_at\":\"2026-11-23T11:00:05+01:00\"},"
                         "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":8,\"lng\":8,"
                         "\"recorded_at\":\"2026-11-23T10:00:05.000Z\"}]}");
    assert_int_equal(count("SELECT count(*) FROM positions"), before);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:00:05Z'"
                           " AND lat = 59.33"),
                     1);
}

static void the_same_batch_twice_adds_nothing(void **state)
{
    (void)state;
    long positions = count("SELECT count(*) FROM positions"), batches = count("SELECT count(*) FROM ingest_batches");
    /* a second job for a batch already stored (an enqueue retried past its unique key, say) */
    long again = run_batch("msg_first", first_body);
    /* and a finished job run once more (a rescue after the node died just before recording it) */
    char sql[200];
    snprintf(sql, sizeof(sql), "UPDATE jobs SET state = 'available', completed_at = NULL WHERE id = %ld", again);
    exec_on(db_url, sql);
    char *state_after = finished_state(again);
    assert_string_equal(state_after, "completed");
    free(state_after);
    assert_int_equal(count("SELECT count(*) FROM positions"), positions);
    assert_int_equal(count("SELECT count(*) FROM ingest_batches"), batches);
    snprintf(sql, sizeof(sql), "SELECT jsonb_array_length(errors) FROM jobs WHERE id = %ld", again);
    assert_int_equal(count(sql), 0); /* no error on any attempt */
}

static void discarded_with(const char *webhook_id, const char *body, const char *reason)
{
    char *args = args_of(webhook_id, body);
    long id = insert_job("audit", args);
    fl_free(args);
    char *state = finished_state(id);
    assert_string_equal(state, "discarded");
    free(state);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT errors -> -1 ->> 'error' FROM jobs WHERE id = %ld", id);
    char *error = value_of(db_url, sql, NULL);
    if (error == NULL || strstr(error, reason) == NULL)
        fail_msg("error \"%s\" does not say \"%s\"", error ? error : "(none)", reason);
    free(error);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM ingest_batches WHERE webhook_id = '%s'", webhook_id);
    assert_int_equal(count(sql), 0);
}

static void an_unreadable_body_is_discarded(void **state)
{
    (void)state;
    discarded_with("msg_bad1", "{\"fixes\": [", "body is not JSON");
    discarded_with("msg_bad2", "{\"fix\": []}", "no \"fixes\" array");
    discarded_with("msg_bad3",
                   "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"t\",\"lat\":91,\"lng\":0,\"recorded_at\":\"2026-11-"
                   "23T10:00:00Z\"}]}",
                   "fix 0: lat");
    discarded_with(
        "msg_bad4",
        "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"t\",\"lat\":1,\"lng\":0,\"recorded_at\":\"2026-11-23T10:00:00Z\"},"
        "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"t\",\"lat\":1,\"lng\":0,\"recorded_at\":\"yesterday\"}]}",
        "fix 1: recorded_at");
    discarded_with("msg_bad5",
                   "{\"fixes\":[{\"fleet_id\":\"harbor "
                   "1\",\"vehicle_id\":\"t\",\"lat\":1,\"lng\":0,\"recorded_at\":\"2026-11-23T10:00:00Z\"}]}",
                   "fix 0: fleet_id");
    assert_int_equal(count("SELECT count(*) FROM vehicles WHERE id = 't'"), 0);
}

static void a_fix_for_another_fleets_vehicle_is_not_stored(void **state)
{
    (void)state;
    /* van-9 belongs to fleet other */
    run_batch("msg_foreign", "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"van-9\",\"lat\":1,\"lng\":2,"
                             "\"recorded_at\":\"2026-11-23T10:00:00Z\"},"
                             "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":1,\"lng\":2,"
                             "\"recorded_at\":\"2026-11-23T10:02:00Z\"}]}");
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id = 'van-9'"), 0);
    assert_int_equal(count("SELECT count(*) FROM vehicles WHERE id = 'van-9' AND fleet_id = 'other'"), 1);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id = 'truck-17' AND recorded_at = '2026-11-23T10:02:00Z'"),
                     1);
}

static void a_thousand_fixes_in_one_batch(void **state)
{
    (void)state;
    size_t cap = 1000 * 200 + 64, len = 0;
    char *body = malloc(cap);
    len += (size_t)snprintf(body + len, cap - len, "{\"fixes\":[");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(body + len, cap - len,
                                "%s{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"bus-%d\",\"lat\":%d.5,\"lng\":10.25,"
                                "\"recorded_at\":\"2026-11-24T10:%02d:%02d.%03dZ\",\"speed_kmh\":%d}",
                                i ? "," : "", i % 50, i % 90 - 45, i / 60 % 60, i % 60, i, i % 100);
    snprintf(body + len, cap - len, "]}");
    int64_t t0 = fl_now_mono_ms();
    run_batch("msg_thousand", body);
    int64_t ms = fl_now_mono_ms() - t0;
    free(body);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE vehicle_id LIKE 'bus-%'"), 1000);
    assert_int_equal(count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id LIKE 'bus-%'"), 50);
    /* bus-0's newest fix is i = 950 */
    assert_int_equal(count("SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'bus-0' AND speed_kmh = 50"), 1);
    print_message("1000 fixes: enqueued to completed in %lld ms\n", (long long)ms);
}

/* ---- retention ---- */

static void retention_deletes_old_rows_in_batches(void **state)
{
    (void)state;
    /* The daily cron entry fires its current tick when the jobs start (a second later if the
     * database was not connected yet): let that run finish first, or it may take this test's rows
     * and leave this job's report at 0. */
    long cron_job = 0;
    for (int i = 0; i < 500 && cron_job == 0; i++, sleep_ms(10))
        cron_job = count("SELECT coalesce(max(job_id), 0) FROM cron_ticks WHERE name = 'retention'");
    assert_true(cron_job > 0);
    char *cron_state = finished_state(cron_job);
    assert_string_equal(cron_state, "completed");
    free(cron_state);
    /* 12,000 fixes older than the retention age in an old batch, 100 recent ones in a recent batch */
    exec_on(
        db_url,
        "INSERT INTO vehicles (id, fleet_id) VALUES ('old-1', 'harbor-1');"
        "INSERT INTO ingest_batches (id, partner_id, webhook_id, webhook_timestamp, signature, body, received_at, job_id) VALUES"
        " (900001, 'acme', 'old', 1, 'v1,x', '\\x7b7d', now() - interval '40 days', 1),"
        " (900002, 'acme', 'old-empty', 1, 'v1,x', '\\x7b7d', now() - interval '35 days', 2),"
        " (900003, 'acme', 'recent', 1, 'v1,x', '\\x7b7d', now() - interval '1 day', 3);"
        "INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, batch_id)"
        " SELECT 'old-1', now() - interval '40 days' + i * interval '1 s', 'harbor-1', 1, 1, now(), 900001"
        " FROM generate_series(1, 12000) i;"
        "INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, batch_id)"
        " SELECT 'old-1', now() - interval '1 day' + i * interval '1 s', 'harbor-1', 1, 1, now(), 900003"
        " FROM generate_series(1, 100) i;"
        "INSERT INTO job_uniques (key, job_id, until, inserted_at) VALUES"
        " ('ingest:acme:old', 1, 'infinity', now() - interval '40 days'),"
        " ('ingest:acme:recent', 3, 'infinity', now() - interval '1 day'),"
        " ('other:old', 4, 'infinity', now() - interval '40 days')");
    long recent_other = count("SELECT count(*) FROM positions WHERE recorded_at >= now() - interval '30 days'");
    char args[64];
    snprintf(args, sizeof(args), "{\"retention_s\":%d}", RETENTION_S);
    long id = insert_job("retention", args);
    char *state_after = finished_state(id);
    assert_string_equal(state_after, "completed");
    free(state_after);

    assert_int_equal(count("SELECT count(*) FROM positions WHERE recorded_at < now() - interval '30 days'"), 0);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE recorded_at >= now() - interval '30 days'"), recent_other);
    assert_int_equal(count("SELECT count(*) FROM positions WHERE batch_id = 900003"), 100);
    assert_int_equal(count("SELECT count(*) FROM ingest_batches WHERE id IN (900001, 900002)"), 0);
    assert_int_equal(count("SELECT count(*) FROM ingest_batches WHERE id = 900003"), 1);
    assert_int_equal(count("SELECT count(*) FROM job_uniques WHERE key IN ('ingest:acme:recent', 'other:old')"), 2);
    assert_int_equal(count("SELECT count(*) FROM job_uniques WHERE key = 'ingest:acme:old'"), 0);

    /* the run's report: 12,000 positions in statements of 5,000 (3), then one for batches, one for ids */
    char needle[64];
    snprintf(needle, sizeof(needle), "\"job\":%ld,", id);
    bool seen = false;
    for (int tries = 0; tries < 100 && !seen; tries++, sleep_ms(20)) {
        FILE *f = fopen(log_path, "r");
        char line[4096];
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, "\"event\":\"retention.done\"") && strstr(line, needle)) {
                json_t *e = json_loads(line, 0, NULL);
                assert_int_equal(json_integer_value(json_object_get(e, "positions")), 12000);
                assert_int_equal(json_integer_value(json_object_get(e, "ingest_batches")), 2);
                assert_int_equal(json_integer_value(json_object_get(e, "webhook_ids")), 1);
                assert_int_equal(json_integer_value(json_object_get(e, "statements")), 5);
                json_decref(e);
                seen = true;
            }
        if (f)
            fclose(f);
    }
    assert_true(seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(times_are_read_as_rfc3339),
        cmocka_unit_test(args_carry_the_body_as_a_string),
        cmocka_unit_test(a_batch_becomes_rows),
        cmocka_unit_test(latest_only_moves_forward),
        cmocka_unit_test(a_duplicate_fix_is_ignored),
        cmocka_unit_test(the_same_batch_twice_adds_nothing),
        cmocka_unit_test(an_unreadable_body_is_discarded),
        cmocka_unit_test(a_fix_for_another_fleets_vehicle_is_not_stored),
        cmocka_unit_test(a_thousand_fixes_in_one_batch),
        cmocka_unit_test(retention_deletes_old_rows_in_batches),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
