/* A (re)starting tracker sees every acknowledged fix: those already in vehicle_latest and those
 * still waiting in an audit job. The same status before the audit worker runs and after. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "jobs/jobs.h"
#include "tracker/tracker.h"

#include <jansson.h>

static fl_db_service_t *dbs;
static fl_pubsub_t *ps;
static fl_trackers_t *tr;
static fl_jobs_t *jobs;
static fl_actor_t *root, *jobs_sup;
static char *db_url;

static fl_db_t *db_of(int shard, void *arg)
{
    (void)arg;
    return fl_db_service_get(dbs, shard);
}

static int setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_WARN, FL_LOG_JSON);
    if (pg_fixture_setup("audit_tracker") != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    exec_on(db_url, "INSERT INTO fleets (id) VALUES ('harbor-1'), ('other');"
                    "INSERT INTO partners (id) VALUES ('acme');"
                    "INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1'), ('van-2', 'harbor-1');"
                    "INSERT INTO vehicle_latest VALUES"
                    " ('van-2', 'harbor-1', 59.3, 18.1, '2026-11-23T09:00:00.500Z', '2026-11-23T09:00:01Z', NULL, NULL, NULL),"
                    " ('truck-17', 'harbor-1', 59.3293, 18.0686, '2026-11-23T10:00:00.123Z', '2026-11-23T10:00:00.200Z',"
                    "  42.5, 270, 5)");

    fl_db_options_t dbo = {.conninfo = db_url, .health_interval_ms = 500};
    fl_jobs_opts_t jo = {.node = "test", .conninfo = db_url, .poll_interval_ms = 50};
    fl_trackers_opts_t to = {.idle_timeout_ms = 60000, .replay = 4, .mailbox = 1000, .db = db_of};
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_db_service_new(rt, &dbo, &dbs) != FL_OK ||
        fl_pubsub_new(rt, &ps) != FL_OK || fl_trackers_new(rt, ps, &to, &tr) != FL_OK ||
        fl_jobs_new(rt, dbs, &jo, &jobs) != FL_OK || fl_audit_register(jobs, 0, 0) != FL_OK)
        return -1;
    static fl_child_spec_t kids[3];
    kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(dbs)};
    kids[1] = (fl_child_spec_t){.id = "pubsub", .sup = fl_pubsub_spec(ps)};
    kids[2] = (fl_child_spec_t){.id = "trackers", .sup = fl_trackers_spec(tr)};
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 3};
    return fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) == FL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (jobs_sup) {
        fl_sup_stop(jobs_sup, 10000);
        fl_actor_unref(jobs_sup);
    }
    if (root) {
        fl_sup_stop(root, 10000);
        fl_actor_unref(root);
    }
    fl_runtime_stop(rt);
    fl_jobs_free(jobs);
    fl_trackers_free(tr);
    fl_pubsub_free(ps);
    fl_db_service_free(dbs);
    fl_runtime_free(rt);
    pg_fixture_teardown();
    return 0;
}

typedef struct {
    const char *fleet;
    atomic_int done;
    int status;
    char *json;
} read_t;

static void status_answer(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    (void)seq;
    read_t *r = arg;
    r->status = status;
    r->json = json ? strdup(fl_blob_data(json)) : NULL;
    fl_blob_unref(json);
    atomic_store(&r->done, 1);
}

static void status_on_shard(void *arg)
{
    read_t *r = arg;
    int rc = fl_trackers_status(tr, r->fleet, 3000, status_answer, r);
    if (rc != FL_OK)
        status_answer(rc, NULL, 0, r);
}

static json_t *status_of(const char *fleet, int *status)
{
    read_t r = {.fleet = fleet};
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 1), status_on_shard, &r), FL_OK);
    assert_true(WAIT_FOR(atomic_load(&r.done) == 1, 5000));
    *status = r.status;
    json_t *doc = r.json ? json_loads(r.json, 0, NULL) : NULL;
    free(r.json);
    return doc;
}

static json_t *vehicle(json_t *doc, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "vehicles"), i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "vehicle_id")), id) == 0)
            return v;
    }
    return NULL;
}

static long insert_job(const char *state_name, const char *args)
{
    PGconn *pg = connect_to(db_url);
    const char *values[] = {state_name, args};
    PGresult *res = PQexecParams(pg,
                                 "INSERT INTO jobs (queue, kind, args, state, discarded_at)"
                                 " VALUES ('audit', 'audit', $2::jsonb, $1::job_state,"
                                 "  CASE WHEN $1 = 'discarded' THEN now() END) RETURNING id",
                                 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("insert job: %s", PQerrorMessage(pg));
    long id = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(pg);
    return id;
}

static char *args_of(const char *webhook_id, const char *const *fleets, int nfleets, const char *body)
{
    char *args = NULL;
    assert_int_equal(fl_audit_args("acme", webhook_id, 1795428000, "v1,eA==", 1795428300250000LL, fleets, nfleets, body,
                                   strlen(body), &args, NULL),
                     FL_OK);
    return args;
}

static void pending_fixes_are_seen_before_and_after_the_worker_runs(void **state)
{
    (void)state;
    /* A batch acknowledged but not yet stored: truck-17 newer, van-2 older (stays), bus-1 a new
     * vehicle, and a fix of another fleet in the same batch. */
    const char *both[] = {"harbor-1", "other"};
    char *args = args_of(
        "msg_pending", both, 2,
        "{\"fixes\":["
        "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":59.5,\"lng\":18.5,"
        "\"recorded_at\":\"2026-11-23T12:05:00.250+02:00\",\"speed_kmh\":50},"
        "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"van-2\",\"lat\":1,\"lng\":1,\"recorded_at\":\"2026-11-23T08:00:00Z\"},"
        "{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"bus-1\",\"lat\":59.1,\"lng\":18.2,\"recorded_at\":\"2026-11-23T10:01:00Z\","
        "\"heading_deg\":12.5},"
        "{\"fleet_id\":\"other\",\"vehicle_id\":\"ferry-3\",\"lat\":60,\"lng\":20,\"recorded_at\":\"2026-11-23T10:01:00Z\"}"
        "]}");
    long pending = insert_job("available", args);
    fl_free(args);
    /* finished jobs are not read: a discarded one whose body is not even JSON, and a completed one */
    const char *harbor[] = {"harbor-1"};
    args = args_of("msg_garbage", harbor, 1, "{\"fixes\":[");
    insert_job("discarded", args);
    fl_free(args);
    args = args_of("msg_done", harbor, 1,
                   "{\"fixes\":[{\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":0,\"lng\":0,"
                   "\"recorded_at\":\"2026-11-23T11:00:00Z\"}]}");
    insert_job("completed", args);
    fl_free(args);
    /* a job naming a fleet that does not exist does not make it exist */
    const char *ghost[] = {"ghost"};
    args = args_of(
        "msg_ghost", ghost, 1,
        "{\"fixes\":[{\"fleet_id\":\"ghost\",\"vehicle_id\":\"g\",\"lat\":0,\"lng\":0,\"recorded_at\":\"2026-11-23T11:00:00Z\"}]}");
    long ghost_job = insert_job("available", args);
    fl_free(args);

    int status;
    json_t *before = status_of("harbor-1", &status);
    assert_int_equal(status, FL_OK);
    assert_int_equal(json_integer_value(json_object_get(before, "vehicle_count")), 3);
    json_t *truck = vehicle(before, "truck-17");
    assert_true(json_real_value(json_object_get(truck, "lat")) == 59.5);
    assert_string_equal(json_string_value(json_object_get(truck, "recorded_at")), "2026-11-23T10:05:00.250Z");
    assert_string_equal(json_string_value(json_object_get(truck, "received_at")), "2026-11-23T10:05:00.250Z");
    assert_true(json_number_value(json_object_get(truck, "speed_kmh")) == 50);
    assert_null(json_object_get(truck, "heading_deg")); /* the newer fix did not carry it */
    json_t *van = vehicle(before, "van-2");
    assert_true(json_real_value(json_object_get(van, "lat")) == 59.3); /* never backwards */
    json_t *bus = vehicle(before, "bus-1");
    assert_non_null(bus);
    assert_true(json_number_value(json_object_get(bus, "heading_deg")) == 12.5);
    assert_null(vehicle(before, "ferry-3"));
    assert_string_equal(json_string_value(json_object_get(before, "updated_at")), "2026-11-23T10:05:00.250Z");

    json_t *none = status_of("ghost", &status);
    assert_int_equal(status, FL_ENOTFOUND);
    assert_null(none);

    /* the audit worker runs: the batch moves into vehicle_latest */
    assert_int_equal(fl_sup_start(fl_runtime_shard(rt, 0), "jobs", fl_jobs_spec(jobs), NULL, NULL, 10000, &jobs_sup), FL_OK);
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT state FROM jobs WHERE id = %ld AND state = 'completed'", pending);
    char *done = NULL;
    assert_true(WAIT_FOR((free(done), done = value_of(db_url, sql, NULL)) != NULL, 10000));
    free(done);
    done = NULL;
    snprintf(sql, sizeof(sql), "SELECT state FROM jobs WHERE id = %ld AND state IN ('retryable', 'discarded')", ghost_job);
    assert_true(WAIT_FOR((free(done), done = value_of(db_url, sql, NULL)) != NULL, 10000)); /* no fleet: it cannot be stored */
    free(done);
    assert_int_equal(long_of(db_url, "SELECT count(*) FROM vehicle_latest WHERE vehicle_id = 'truck-17'"
                                     " AND recorded_at = '2026-11-23T10:05:00.25Z'"),
                     1);

    /* a fresh tracker, from vehicle_latest alone now: the same vehicles */
    assert_int_equal(fl_tree_restart_wait(root, "tracker:harbor-1", 5000), FL_OK);
    json_t *after = status_of("harbor-1", &status);
    assert_int_equal(status, FL_OK);
    if (!json_equal(json_object_get(before, "vehicles"), json_object_get(after, "vehicles"))) {
        char *a = json_dumps(before, 0), *b = json_dumps(after, 0);
        fail_msg("before %s\nafter  %s", a, b);
    }
    assert_true(json_equal(json_object_get(before, "updated_at"), json_object_get(after, "updated_at")));
    json_decref(before);
    json_decref(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pending_fixes_are_seen_before_and_after_the_worker_runs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
