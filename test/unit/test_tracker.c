/* lib/tracker against a real PostgreSQL: a tracker loads its fleet on demand, never moves a
 * vehicle back in time, bumps seq per change, publishes positions, replays from its ring, comes
 * back from a crash with the state it had, and stops when idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"
#include "pg_fixture.h"

#include "tracker/tracker.h"

#include <jansson.h>

static fl_db_service_t *dbs;
static fl_pubsub_t *ps;
static fl_trackers_t *tr;
static fl_actor_t *root;
static char *db_url;

static fl_db_t *db_of(int shard, void *arg)
{
    (void)arg;
    return fl_db_service_get(dbs, shard);
}

static int64_t us_of(const char *rfc3339_utc_ms)
{
    struct tm tm = {0};
    int ms = 0;
    sscanf(rfc3339_utc_ms, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return ((int64_t)timegm(&tm) * 1000 + ms) * 1000;
}

/* A live subscriber to fleet:harbor-1 (it also keeps that tracker from idling out). */
static atomic_int events_seen;
static atomic_ullong last_event_seq;
static fl_sub_t *harbor_sub;

static void on_position(const char *topic, fl_blob_t *payload, void *ctx)
{
    (void)topic;
    (void)ctx;
    if (payload == NULL)
        return;
    json_t *ev = json_loads(fl_blob_data(payload), 0, NULL);
    atomic_store(&last_event_seq, (unsigned long long)json_integer_value(json_object_get(ev, "seq")));
    atomic_fetch_add(&events_seen, 1);
    json_decref(ev);
}

static atomic_int subscribed;

static void subscribe_on_shard(void *arg)
{
    (void)arg;
    if (fl_pubsub_subscribe(ps, "fleet:harbor-1", on_position, NULL, &harbor_sub) == FL_OK)
        atomic_store(&subscribed, 1);
}

static void unsubscribe_on_shard(void *arg)
{
    (void)arg;
    fl_pubsub_unsubscribe(ps, harbor_sub);
    atomic_store(&subscribed, 0);
}

static int setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_WARN, FL_LOG_JSON);
    if (pg_fixture_setup("tracker") != 0)
        return -1;
    db_url = new_database("main");
    char err[256];
    if (fl_db_migrate(db_url, 5000, err, sizeof(err)) != FL_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    exec_on(db_url, "INSERT INTO fleets (id, name) VALUES ('harbor-1', 'Harbor'), ('empty-1', NULL);"
                    "INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1'), ('van-2', 'harbor-1');"
                    "INSERT INTO vehicle_latest VALUES"
                    " ('van-2', 'harbor-1', 59.3, 18.1, '2026-11-23T09:00:00.500Z', '2026-11-23T09:00:01.000Z', NULL, NULL, NULL),"
                    " ('truck-17', 'harbor-1', 59.3293, 18.0686, '2026-11-23T10:00:00.123Z', '2026-11-23T10:00:00.200Z',"
                    "  42.5, 270, 5)");

    fl_db_options_t dbo = {.conninfo = db_url, .health_interval_ms = 500};
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_db_service_new(rt, &dbo, &dbs) != FL_OK ||
        fl_pubsub_new(rt, &ps) != FL_OK)
        return -1;
    fl_trackers_opts_t opts = {.idle_timeout_ms = 400, .replay = 4, .mailbox = 1000, .db = db_of};
    if (fl_trackers_new(rt, ps, &opts, &tr) != FL_OK)
        return -1;
    static fl_child_spec_t kids[3];
    kids[0] = (fl_child_spec_t){.id = "db", .sup = fl_db_service_spec(dbs)};
    kids[1] = (fl_child_spec_t){.id = "pubsub", .sup = fl_pubsub_spec(ps)};
    kids[2] = (fl_child_spec_t){.id = "trackers", .sup = fl_trackers_spec(tr)};
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 10000, .children = kids, .nchildren = 3};
    if (fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 10000, &root) != FL_OK)
        return -1;
    fl_shard_post(fl_runtime_shard(rt, 0), subscribe_on_shard, NULL);
    return WAIT_FOR(atomic_load(&subscribed) == 1, 3000) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (atomic_load(&subscribed)) {
        fl_shard_post(fl_runtime_shard(rt, 0), unsubscribe_on_shard, NULL);
        WAIT_FOR(atomic_load(&subscribed) == 0, 3000);
    }
    if (root) {
        fl_sup_stop(root, 10000);
        fl_actor_unref(root);
    }
    fl_runtime_stop(rt);
    fl_trackers_free(tr);
    fl_pubsub_free(ps);
    fl_db_service_free(dbs);
    fl_runtime_free(rt);
    pg_fixture_teardown();
    return 0;
}

/* ---- running the asynchronous API on a shard and waiting for its answer ---- */

typedef struct {
    const char *fleet;
    atomic_int done;
    int status;
    char *json;
    uint64_t seq;
    const fl_fix_t *fixes;
    int nfixes;
    uint64_t last_seq;
    char *events[16];
    int nevents;
} job_t;

static void status_answer(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    job_t *j = arg;
    j->status = status;
    j->seq = seq;
    j->json = json ? strdup(fl_blob_data(json)) : NULL;
    fl_blob_unref(json);
    atomic_store(&j->done, 1);
}

static void status_on_shard(void *arg)
{
    job_t *j = arg;
    int rc = fl_trackers_status(tr, j->fleet, 3000, status_answer, j);
    if (rc != FL_OK)
        status_answer(rc, NULL, 0, j);
}

static void apply_answer(int status, void *arg)
{
    job_t *j = arg;
    j->status = status;
    atomic_store(&j->done, 1);
}

static void apply_on_shard(void *arg)
{
    job_t *j = arg;
    int rc = fl_trackers_apply(tr, j->fleet, j->fixes, j->nfixes, apply_answer, j);
    if (rc != FL_OK)
        apply_answer(rc, j);
}

static void replay_answer(int status, fl_blob_t **events, int n, uint64_t seq, void *arg)
{
    job_t *j = arg;
    j->status = status;
    j->seq = seq;
    for (int i = 0; i < n && i < 16; i++)
        j->events[j->nevents++] = strdup(fl_blob_data(events[i]));
    for (int i = 0; i < n; i++)
        fl_blob_unref(events[i]);
    atomic_store(&j->done, 1);
}

static void replay_on_shard(void *arg)
{
    job_t *j = arg;
    int rc = fl_trackers_replay(tr, j->fleet, j->last_seq, replay_answer, j);
    if (rc != FL_OK)
        replay_answer(rc, NULL, 0, 0, j);
}

static void run_on_shard(int shard, fl_task_fn fn, job_t *j)
{
    atomic_store(&j->done, 0);
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, shard), fn, j), FL_OK);
    assert_true(WAIT_FOR(atomic_load(&j->done) == 1, 5000));
}

static json_t *status_of(const char *fleet, int *status, uint64_t *seq)
{
    job_t j = {.fleet = fleet};
    run_on_shard(1, status_on_shard, &j);
    *status = j.status;
    if (seq)
        *seq = j.seq;
    json_t *doc = j.json ? json_loads(j.json, 0, NULL) : NULL;
    free(j.json);
    return doc;
}

static int apply(const char *fleet, const fl_fix_t *fixes, int n)
{
    job_t j = {.fleet = fleet, .fixes = fixes, .nfixes = n};
    run_on_shard(0, apply_on_shard, &j);
    return j.status;
}

static fl_fix_t fix(const char *vehicle, double lat, double lng, const char *recorded_at)
{
    fl_fix_t f = {.lat = lat, .lng = lng, .recorded_us = us_of(recorded_at), .received_us = fl_now_wall_ms() * 1000};
    snprintf(f.vehicle_id, sizeof(f.vehicle_id), "%s", vehicle);
    return f;
}

/* ---- tests ---- */

static void first_read_loads_the_fleet_from_postgres(void **state)
{
    (void)state;
    int status;
    json_t *doc = status_of("harbor-1", &status, NULL);
    assert_int_equal(status, FL_OK);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "fleet_id")), "harbor-1");
    assert_int_equal(json_integer_value(json_object_get(doc, "vehicle_count")), 2);
    /* the newest recorded_at (not received_at .200), as in CONTRACT.md's example */
    assert_string_equal(json_string_value(json_object_get(doc, "updated_at")), "2026-11-23T10:00:00.123Z");
    json_t *vehicles = json_object_get(doc, "vehicles");
    json_t *truck = json_array_get(vehicles, 0), *van = json_array_get(vehicles, 1);
    assert_string_equal(json_string_value(json_object_get(truck, "vehicle_id")), "truck-17"); /* sorted by id */
    assert_true(json_real_value(json_object_get(truck, "lat")) == 59.3293);
    assert_true(json_real_value(json_object_get(truck, "lng")) == 18.0686);
    assert_string_equal(json_string_value(json_object_get(truck, "recorded_at")), "2026-11-23T10:00:00.123Z");
    assert_true(json_number_value(json_object_get(truck, "speed_kmh")) == 42.5);
    assert_true(json_number_value(json_object_get(truck, "heading_deg")) == 270);
    assert_true(json_number_value(json_object_get(truck, "accuracy_m")) == 5);
    assert_string_equal(json_string_value(json_object_get(van, "vehicle_id")), "van-2");
    assert_null(json_object_get(van, "speed_kmh")); /* never sent: absent */
    assert_null(json_object_get(van, "seq"));
    json_decref(doc);

    doc = status_of("empty-1", &status, NULL);
    assert_int_equal(status, FL_OK);
    assert_int_equal(json_integer_value(json_object_get(doc, "vehicle_count")), 0);
    assert_true(json_is_null(json_object_get(doc, "updated_at")));
    json_decref(doc);

    doc = status_of("no-such-fleet", &status, NULL);
    assert_int_equal(status, FL_ENOTFOUND);
    assert_null(doc);
}

static void newer_fix_moves_older_never_does(void **state)
{
    (void)state;
    int status;
    uint64_t seq0, seq1, seq2;
    json_decref(status_of("harbor-1", &status, &seq0));
    fl_fix_t newer = fix("truck-17", 59.33, 18.07, "2026-11-23T10:05:00.000Z");
    assert_int_equal(apply("harbor-1", &newer, 1), FL_OK);
    json_t *doc = NULL;
    assert_true(WAIT_FOR((json_decref(doc), doc = status_of("harbor-1", &status, &seq1), seq1 > seq0), 3000));
    assert_int_equal(seq1, seq0 + 1);
    /* the subscriber got the position with that seq */
    assert_true(WAIT_FOR(atomic_load(&last_event_seq) == seq1, 3000));
    json_t *truck = json_array_get(json_object_get(doc, "vehicles"), 0);
    assert_true(json_real_value(json_object_get(truck, "lat")) == 59.33);
    assert_null(json_object_get(truck, "speed_kmh")); /* this fix did not carry it */
    json_decref(doc);

    fl_fix_t stale = fix("truck-17", 1.0, 1.0, "2026-11-23T10:01:00.000Z");
    fl_fix_t same = fix("truck-17", 2.0, 2.0, "2026-11-23T10:05:00.000Z");
    fl_fix_t fresh = fix("van-2", 59.31, 18.11, "2026-11-23T10:06:00.000Z");
    fl_fix_t batch[] = {stale, same, fresh};
    assert_int_equal(apply("harbor-1", batch, 3), FL_OK);
    doc = NULL;
    assert_true(WAIT_FOR((json_decref(doc), doc = status_of("harbor-1", &status, &seq2), seq2 > seq1), 3000));
    assert_int_equal(seq2, seq1 + 1); /* only the van moved */
    assert_true(WAIT_FOR(atomic_load(&last_event_seq) == seq2, 3000));
    truck = json_array_get(json_object_get(doc, "vehicles"), 0);
    assert_true(json_real_value(json_object_get(truck, "lat")) == 59.33);
    json_decref(doc);
}

static void replay_gives_the_missed_positions_in_order(void **state)
{
    (void)state;
    int status;
    uint64_t seq;
    json_decref(status_of("harbor-1", &status, &seq));
    fl_fix_t a = fix("truck-17", 59.40, 18.0, "2026-11-23T11:00:00.000Z");
    fl_fix_t b = fix("van-2", 59.41, 18.0, "2026-11-23T11:00:00.000Z");
    fl_fix_t c = fix("truck-17", 59.42, 18.0, "2026-11-23T11:00:01.000Z");
    fl_fix_t batch[] = {a, b, c};
    assert_int_equal(apply("harbor-1", batch, 3), FL_OK);

    uint64_t now_seq = 0;
    assert_true(WAIT_FOR((json_decref(status_of("harbor-1", &status, &now_seq)), now_seq == seq + 3), 3000));
    job_t j = {.fleet = "harbor-1", .last_seq = seq};
    run_on_shard(1, replay_on_shard, &j);
    assert_int_equal(j.status, FL_OK);
    assert_int_equal(j.nevents, 3);
    assert_int_equal(j.seq, seq + 3);
    for (int i = 0; i < 3; i++) {
        json_t *ev = json_loads(j.events[i], 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(ev, "seq")), seq + 1 + (uint64_t)i);
        assert_true(json_real_value(json_object_get(ev, "lat")) == batch[i].lat);
        json_decref(ev);
        free(j.events[i]);
    }
    /* the ring holds 4 positions: asking from further back needs a snapshot */
    job_t old = {.fleet = "harbor-1", .last_seq = seq - 5};
    run_on_shard(1, replay_on_shard, &old);
    assert_int_equal(old.status, FL_ERANGE);
}

/* What an acknowledged fix leaves in PostgreSQL (the audit worker's job, done here by hand). */
static void store_latest(const fl_fix_t *f)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE vehicle_latest SET lat = %.17g, lng = %.17g,"
             " recorded_at = 'epoch'::timestamptz + %lld * interval '1 microsecond',"
             " received_at = 'epoch'::timestamptz + %lld * interval '1 microsecond',"
             " speed_kmh = NULL, heading_deg = NULL, accuracy_m = NULL"
             " WHERE vehicle_id = '%s'",
             f->lat, f->lng, (long long)f->recorded_us, (long long)f->received_us, f->vehicle_id);
    exec_on(db_url, sql);
}

static void crashed_tracker_restarts_with_equal_state(void **state)
{
    (void)state;
    fl_fix_t f = fix("van-2", 59.5, 18.5, "2026-11-23T12:00:00.000Z");
    store_latest(&f);
    fl_fix_t t = fix("truck-17", 59.6, 18.6, "2026-11-23T12:00:00.000Z");
    store_latest(&t);
    fl_fix_t both[] = {f, t};
    int status;
    uint64_t before_seq, after_seq;
    json_decref(status_of("harbor-1", &status, &before_seq));
    assert_int_equal(apply("harbor-1", both, 2), FL_OK);
    json_t *before = NULL;
    assert_true(
        WAIT_FOR((json_decref(before), before = status_of("harbor-1", &status, &before_seq),
                  json_integer_value(json_object_get(before, "vehicle_count")) == 2 &&
                      json_real_value(json_object_get(json_array_get(json_object_get(before, "vehicles"), 1), "lat")) == 59.5),
                 3000));

    assert_int_equal(fl_tree_restart_wait(root, "tracker:harbor-1", 5000), FL_OK);
    json_t *after = status_of("harbor-1", &status, &after_seq);
    assert_int_equal(status, FL_OK);
    assert_true(json_equal(json_object_get(before, "vehicles"), json_object_get(after, "vehicles")));
    if (!json_equal(json_object_get(before, "updated_at"), json_object_get(after, "updated_at")))
        fail_msg("updated_at before %s after %s", json_string_value(json_object_get(before, "updated_at")),
                 json_string_value(json_object_get(after, "updated_at")));
    assert_true(after_seq > before_seq); /* seq keeps increasing across the restart */

    json_t *tree = fl_tree_json(root);
    char *text = json_dumps(tree, JSON_COMPACT);
    assert_non_null(strstr(text, "\"id\":\"tracker:harbor-1\""));
    assert_non_null(strstr(text, "killed by an operator (drill)"));
    free(text);
    json_decref(tree);
    json_decref(before);
    json_decref(after);
}

static bool tracker_listed(const char *id)
{
    json_t *tree = fl_tree_json(root);
    char *text = json_dumps(tree, JSON_COMPACT);
    char needle[96];
    snprintf(needle, sizeof(needle), "\"id\":\"%s\"", id);
    bool found = strstr(text, needle) != NULL;
    free(text);
    json_decref(tree);
    return found;
}

static void idle_tracker_stops_and_comes_back_on_demand(void **state)
{
    (void)state;
    int status;
    json_decref(status_of("empty-1", &status, NULL));
    assert_true(tracker_listed("tracker:empty-1"));
    assert_true(WAIT_FOR(!tracker_listed("tracker:empty-1"), 3000)); /* idle_timeout_ms = 400 */
    json_t *doc = status_of("empty-1", &status, NULL);
    assert_int_equal(status, FL_OK);
    assert_true(tracker_listed("tracker:empty-1"));
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_read_loads_the_fleet_from_postgres),    cmocka_unit_test(newer_fix_moves_older_never_does),
        cmocka_unit_test(replay_gives_the_missed_positions_in_order),  cmocka_unit_test(crashed_tracker_restarts_with_equal_state),
        cmocka_unit_test(idle_tracker_stops_and_comes_back_on_demand),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
