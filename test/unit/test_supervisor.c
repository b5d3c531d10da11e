/* lib/runtime supervisors: ordered start and reverse stop, the three strategies, restart types,
 * restart intensity and escalation, dynamic children, the operator's drill and the tree JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"

#include <jansson.h>

static int setup(void **state)
{
    (void)state;
    return runtime_setup(FL_LOG_OFF);
}

/* Three counters a, b, c spread over both shards. */
static fixture_t fx[3];
static fl_child_spec_t kids[3];

static void make_kids(fl_restart_t restart)
{
    const char *names[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        memset(&fx[i], 0, sizeof(fx[i]));
        snprintf(fx[i].name, sizeof(fx[i].name), "%s", names[i]);
        kids[i] = (fl_child_spec_t){.id = names[i],
                                    .behaviour = &counter_behaviour,
                                    .arg = &fx[i],
                                    .restart = restart,
                                    .shard = fl_runtime_shard(rt, i % 2)};
    }
    journal_reset();
}

static fl_actor_t *start_sup(fl_strategy_t strategy, int max_restarts, exit_seen_t *seen)
{
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = strategy, .max_restarts = max_restarts, .period_ms = 5000, .children = kids, .nchildren = 3};
    fl_actor_t *sup = NULL;
    assert_int_equal(fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, seen ? on_exit_record : NULL, seen, 5000, &sup), FL_OK);
    return sup;
}

/* A child's node in the tree JSON (a new reference), or NULL. */
static json_t *child_json(fl_actor_t *root, const char *id)
{
    json_t *tree = fl_tree_json(root);
    json_t *children = json_object_get(tree, "children"), *found = NULL, *c;
    size_t i;
    json_array_foreach(children, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "id")), id) == 0)
            found = json_incref(c);
    }
    json_decref(tree);
    return found;
}

static int child_restarts(fl_actor_t *root, const char *id)
{
    json_t *c = child_json(root, id);
    int n = c ? (int)json_integer_value(json_object_get(c, "restarts")) : -1;
    json_decref(c);
    return n;
}

static bool child_running(fl_actor_t *root, const char *id)
{
    json_t *c = child_json(root, id);
    bool running = c && strcmp(json_string_value(json_object_get(c, "status")), "running") == 0;
    json_decref(c);
    return running;
}

static bool all_running(fl_actor_t *root)
{
    return child_running(root, "a") && child_running(root, "b") && child_running(root, "c");
}

static void crash_child(fl_actor_t *root, const char *id)
{
    /* a crash from inside the child (the drill, fl_tree_restart, is tested on its own) */
    char name[48];
    snprintf(name, sizeof(name), "test:%s", id);
    fl_actor_t *a = fl_registry_lookup(name);
    assert_non_null(a);
    assert_int_equal(fl_actor_cast(a, T_CRASH, NULL, NULL), FL_OK);
    fl_actor_unref(a);
    (void)root;
}

/* Children register as test:NAME so crash_child can find the current incarnation (a name whose
 * holder has ended is free for the next one). */
static int registering_init(fl_actor_t *self, void *arg, void **state)
{
    int rc = counter_init(self, arg, state);
    if (rc == FL_OK) {
        char name[48];
        snprintf(name, sizeof(name), "test:%s", ((fixture_t *)arg)->name);
        rc = fl_registry_register(name, self);
    }
    return rc;
}

static const fl_behaviour_t registering = {
    .name = "registering",
    .init = registering_init,
    .handle = counter_handle,
    .terminate = counter_terminate,
};

static void use_registering(void)
{
    for (int i = 0; i < 3; i++)
        kids[i].behaviour = &registering;
}

static void starts_in_order_stops_in_reverse(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 3, NULL);
    assert_string_equal(journal, "init:a init:b init:c ");
    assert_true(all_running(sup));
    assert_int_equal(fl_sup_stop(sup, 5000), FL_OK);
    assert_string_equal(journal, "init:a init:b init:c term:c term:b term:a ");
    fl_actor_unref(sup);
}

static void one_for_one_restarts_only_the_crashed_child(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    use_registering();
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 3, NULL);
    crash_child(sup, "b");
    assert_true(WAIT_FOR(atomic_load(&fx[1].inits) == 2 && child_running(sup, "b"), 3000));
    assert_int_equal(atomic_load(&fx[0].inits), 1);
    assert_int_equal(atomic_load(&fx[2].inits), 1);
    assert_int_equal(child_restarts(sup, "b"), 1);
    json_t *b = child_json(sup, "b");
    const char *reason = json_string_value(json_object_get(json_object_get(b, "last_crash"), "reason"));
    assert_non_null(strstr(reason, "handler returned"));
    json_decref(b);
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void one_for_all_restarts_every_child(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    use_registering();
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ALL, 3, NULL);
    journal_reset();
    crash_child(sup, "b");
    assert_true(WAIT_FOR(atomic_load(&fx[0].inits) == 2 && atomic_load(&fx[1].inits) == 2 && atomic_load(&fx[2].inits) == 2 &&
                             all_running(sup),
                         3000));
    /* b crashed; the others stop in reverse order; then all start in order */
    assert_string_equal(journal, "term:b term:c term:a init:a init:b init:c ");
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void rest_for_one_restarts_the_crashed_and_later_children(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    use_registering();
    fl_actor_t *sup = start_sup(FL_REST_FOR_ONE, 3, NULL);
    journal_reset();
    crash_child(sup, "b");
    assert_true(WAIT_FOR(atomic_load(&fx[1].inits) == 2 && atomic_load(&fx[2].inits) == 2 && all_running(sup), 3000));
    assert_int_equal(atomic_load(&fx[0].inits), 1);
    assert_string_equal(journal, "term:b term:c init:b init:c ");
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void restart_intensity_exceeded_fails_the_supervisor(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    use_registering();
    exit_seen_t seen = {0};
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 2, &seen);
    for (int i = 1; i <= 3; i++) {
        assert_true(WAIT_FOR(child_running(sup, "a") && atomic_load(&fx[0].inits) == i, 3000));
        crash_child(sup, "a");
    }
    assert_true(WAIT_FOR(atomic_load(&seen.calls) == 1, 3000));
    assert_int_equal(atomic_load(&seen.kind), FL_EXIT_CRASH);
    assert_non_null(strstr(seen.reason, "max restart intensity"));
    /* it stopped its other children before ending */
    assert_int_equal(atomic_load(&fx[1].terminates), 1);
    assert_int_equal(atomic_load(&fx[2].terminates), 1);
    assert_false(fl_actor_alive(sup));
    fl_actor_unref(sup);
}

static void failing_child_escalates_to_the_parent(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    use_registering();
    static fl_sup_spec_t mid;
    mid = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 1, .period_ms = 5000, .children = kids, .nchildren = 1};
    static fl_child_spec_t top_kids[1];
    top_kids[0] = (fl_child_spec_t){.id = "mid", .sup = &mid, .restart = FL_RESTART_PERMANENT};
    static fl_sup_spec_t top;
    top = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 5000, .children = top_kids, .nchildren = 1};
    fl_actor_t *root = NULL;
    assert_int_equal(fl_sup_start(fl_runtime_shard(rt, 1), "top", &top, NULL, NULL, 5000, &root), FL_OK);

    assert_true(WAIT_FOR(atomic_load(&fx[0].inits) == 1, 3000));
    crash_child(root, "a"); /* mid restarts a (1 restart allowed) */
    assert_true(WAIT_FOR(atomic_load(&fx[0].inits) == 2, 3000));
    crash_child(root, "a"); /* mid gives up; top restarts mid, which starts a again */
    assert_true(WAIT_FOR(atomic_load(&fx[0].inits) == 3 && child_running(root, "mid"), 3000));
    assert_int_equal(child_restarts(root, "mid"), 1);
    json_t *m = child_json(root, "mid");
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(m, "last_crash"), "reason")), "max restart intensity"));
    json_decref(m);
    fl_sup_stop(root, 5000);
    fl_actor_unref(root);
}

static void transient_and_temporary_children(void **state)
{
    (void)state;
    make_kids(FL_RESTART_TRANSIENT);
    use_registering();
    kids[2].restart = FL_RESTART_TEMPORARY;
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 5, NULL);

    fl_actor_t *a = fl_registry_lookup("test:a");
    fl_actor_cast(a, T_STOP, NULL, NULL); /* normal exit: a transient child stays down */
    fl_actor_unref(a);
    assert_true(WAIT_FOR(atomic_load(&fx[0].terminates) == 1, 3000));
    sleep_ms(50);
    assert_int_equal(atomic_load(&fx[0].inits), 1);
    assert_int_equal(child_restarts(sup, "a"), 0);

    crash_child(sup, "b"); /* abnormal exit: a transient child comes back */
    assert_true(WAIT_FOR(atomic_load(&fx[1].inits) == 2, 3000));

    crash_child(sup, "c"); /* a temporary child never comes back */
    assert_true(WAIT_FOR(atomic_load(&fx[2].terminates) == 1, 3000));
    sleep_ms(50);
    assert_int_equal(atomic_load(&fx[2].inits), 1);
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void dynamic_supervisor_starts_children_at_run_time(void **state)
{
    (void)state;
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 10, .period_ms = 5000, .dynamic = true};
    fl_actor_t *sup = NULL;
    assert_int_equal(fl_sup_start(fl_runtime_shard(rt, 1), "trackers", &spec, NULL, NULL, 5000, &sup), FL_OK);
    make_kids(FL_RESTART_TRANSIENT);
    fl_child_spec_t child = {.id = "tracker:x", .behaviour = &counter_behaviour, .arg = &fx[0], .restart = FL_RESTART_TRANSIENT};
    fl_actor_t *a = NULL, *again = NULL;
    assert_int_equal(fl_sup_start_child_wait(sup, &child, 3000, &a), FL_OK);
    assert_non_null(a);
    assert_int_equal(fl_sup_start_child_wait(sup, &child, 3000, &again), FL_OK);
    assert_ptr_equal(a, again); /* the same id twice: the running child */
    fl_actor_unref(again);
    assert_true(child_running(sup, "tracker:x"));

    fl_actor_cast(a, T_CRASH, NULL, NULL);
    assert_true(WAIT_FOR(atomic_load(&fx[0].inits) == 2 && child_running(sup, "tracker:x"), 3000));
    fl_actor_unref(a);

    assert_int_equal(fl_tree_restart_wait(sup, "tracker:x", 3000), FL_OK);
    assert_int_equal(atomic_load(&fx[0].inits), 3);
    assert_int_equal(child_restarts(sup, "tracker:x"), 2);

    /* a normal stop removes a dynamic child from the tree */
    assert_int_equal(fl_sup_start_child_wait(sup, &child, 3000, &a), FL_OK);
    fl_actor_cast(a, T_STOP, NULL, NULL);
    fl_actor_unref(a);
    json_t *gone = NULL;
    assert_true(WAIT_FOR((json_decref(gone), (gone = child_json(sup, "tracker:x")) == NULL), 3000));
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void drill_restarts_a_child_and_tree_json_shows_it(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 3, NULL);
    assert_int_equal(fl_tree_restart_wait(sup, "c", 3000), FL_OK);
    assert_int_equal(atomic_load(&fx[2].inits), 2);
    assert_int_equal(fl_tree_restart_wait(sup, "nope", 3000), FL_ENOTFOUND);

    json_t *tree = fl_tree_json(sup);
    assert_string_equal(json_string_value(json_object_get(tree, "id")), "root");
    assert_string_equal(json_string_value(json_object_get(tree, "kind")), "supervisor");
    assert_string_equal(json_string_value(json_object_get(tree, "strategy")), "one_for_one");
    assert_int_equal(json_array_size(json_object_get(tree, "children")), 3);
    json_t *c = json_array_get(json_object_get(tree, "children"), 2);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "c");
    assert_string_equal(json_string_value(json_object_get(c, "kind")), "actor");
    assert_string_equal(json_string_value(json_object_get(c, "status")), "running");
    assert_int_equal(json_integer_value(json_object_get(c, "restarts")), 1);
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "last_crash"), "reason")),
                        "killed by an operator (drill)");
    assert_non_null(json_object_get(json_object_get(c, "last_crash"), "at"));
    assert_true(json_is_integer(json_object_get(c, "mailbox")));
    assert_true(json_is_integer(json_object_get(c, "handled")));
    assert_true(json_is_integer(json_object_get(c, "uptime_s")));
    assert_true(json_integer_value(json_object_get(c, "memory")) > 0);
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(tree, "children"), 0), "last_crash")));
    json_decref(tree);
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void init_failure_within_intensity_is_retried(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    atomic_store(&fx[1].fail_init, 1);
    fl_actor_t *sup = start_sup(FL_ONE_FOR_ONE, 3, NULL);
    assert_true(all_running(sup));
    assert_int_equal(child_restarts(sup, "b"), 1);
    assert_string_equal(journal, "init:a init:b init:c ");
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
}

static void init_failing_for_good_fails_the_start(void **state)
{
    (void)state;
    make_kids(FL_RESTART_PERMANENT);
    atomic_store(&fx[1].fail_init, 1000);
    static fl_sup_spec_t spec;
    spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 2, .period_ms = 5000, .children = kids, .nchildren = 3};
    fl_actor_t *sup = NULL;
    assert_int_not_equal(fl_sup_start(fl_runtime_shard(rt, 0), "root", &spec, NULL, NULL, 5000, &sup), FL_OK);
    assert_int_equal(atomic_load(&fx[0].terminates), 1); /* a was started, then stopped again */
    assert_int_equal(atomic_load(&fx[2].inits), 0);      /* c never started */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_in_order_stops_in_reverse),
        cmocka_unit_test(one_for_one_restarts_only_the_crashed_child),
        cmocka_unit_test(one_for_all_restarts_every_child),
        cmocka_unit_test(rest_for_one_restarts_the_crashed_and_later_children),
        cmocka_unit_test(restart_intensity_exceeded_fails_the_supervisor),
        cmocka_unit_test(failing_child_escalates_to_the_parent),
        cmocka_unit_test(transient_and_temporary_children),
        cmocka_unit_test(dynamic_supervisor_starts_children_at_run_time),
        cmocka_unit_test(drill_restarts_a_child_and_tree_json_shows_it),
        cmocka_unit_test(init_failure_within_intensity_is_retried),
        cmocka_unit_test(init_failing_for_good_fails_the_start),
    };
    return cmocka_run_group_tests(tests, setup, runtime_teardown);
}
