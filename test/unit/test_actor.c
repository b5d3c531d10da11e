/* lib/runtime actors: cast and call, mailbox bounds, call timeouts, crashes, budgets, and casts
 * from many threads at once (this file also runs under TSan in .ci/run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"

static int setup(void **state)
{
    (void)state;
    return runtime_setup(FL_LOG_ERROR);
}

static fl_actor_t *spawn_counter(fixture_t *fx, int shard, int capacity, exit_seen_t *seen)
{
    fl_actor_t *a = NULL;
    fl_actor_opts_t opts = {.id = fx->name, .mailbox_capacity = capacity};
    assert_int_equal(
        fl_actor_spawn(fl_runtime_shard(rt, shard), &counter_behaviour, fx, &opts, seen ? on_exit_record : NULL, seen, &a), FL_OK);
    return a;
}

static void stop_and_wait(fl_actor_t *a)
{
    fl_actor_stop(a, FL_EXIT_SHUTDOWN, "test over");
    assert_true(WAIT_FOR(!fl_actor_alive(a), 2000));
    fl_actor_unref(a);
}

static void cast_then_call_sees_every_cast(void **state)
{
    (void)state;
    fixture_t fx = {.name = "c1"};
    fl_actor_t *a = spawn_counter(&fx, 1, 0, NULL);
    for (int i = 0; i < 100; i++)
        assert_int_equal(fl_actor_cast(a, T_INCR, NULL, NULL), FL_OK);
    assert_int_equal(get_count(a), 100);
    fl_actor_stats_t st;
    /* the call's reply is sent from inside the handler, just before the count is bumped */
    assert_true(WAIT_FOR((fl_actor_stats(a, &st), st.handled == 101), 2000));
    assert_int_equal(st.mailbox, 0);
    assert_true(st.alive);
    stop_and_wait(a);
    assert_int_equal(atomic_load(&fx.terminates), 1);
    assert_int_equal(atomic_load(&fx.last_exit_kind), FL_EXIT_SHUTDOWN);
}

static void full_mailbox_is_the_senders_error(void **state)
{
    (void)state;
    fixture_t fx = {.name = "bounded"};
    fl_actor_t *a = spawn_counter(&fx, 0, 4, NULL);
    assert_int_equal(fl_actor_cast(a, T_SLEEP, long_box(300), fl_free), FL_OK);
    assert_true(WAIT_FOR(atomic_load(&fx.sleeping) == 1, 2000));
    for (int i = 0; i < 4; i++)
        assert_int_equal(fl_actor_cast(a, T_INCR, NULL, NULL), FL_OK);
    long *data = long_box(1); /* freed by the refused cast: ASan would report a leak otherwise */
    assert_int_equal(fl_actor_cast(a, T_INCR, data, fl_free), FL_EFULL);
    fl_actor_stats_t st;
    fl_actor_stats(a, &st);
    assert_int_equal(st.mailbox, 4);
    /* once the mailbox drains, the four accepted casts were all handled, none dropped */
    assert_true(WAIT_FOR((fl_actor_stats(a, &st), st.mailbox == 0), 2000));
    assert_int_equal(get_count(a), 4);
    stop_and_wait(a);
}

static void call_times_out_and_late_reply_is_freed(void **state)
{
    (void)state;
    fixture_t fx = {.name = "slow"};
    fl_actor_t *a = spawn_counter(&fx, 1, 0, NULL);
    void *reply = NULL;
    int64_t t0 = fl_now_mono_ms();
    int rc = fl_actor_call_wait(a, T_SLEEP, long_box(300), fl_free, 50, &reply);
    int64_t took = fl_now_mono_ms() - t0;
    assert_int_equal(rc, FL_ETIMEDOUT);
    assert_null(reply);
    assert_true(took >= 50 && took < 250);
    assert_int_equal(get_count(a), 0); /* still serving after the late reply */
    stop_and_wait(a);
}

static void call_to_stopped_actor_is_closed(void **state)
{
    (void)state;
    fixture_t fx = {.name = "gone"};
    fl_actor_t *a = spawn_counter(&fx, 0, 0, NULL);
    fl_actor_stop(a, FL_EXIT_SHUTDOWN, "bye");
    assert_true(WAIT_FOR(!fl_actor_alive(a), 2000));
    void *reply;
    assert_int_equal(fl_actor_call_wait(a, T_GET, NULL, NULL, 500, &reply), FL_ECLOSED);
    assert_int_equal(fl_actor_cast(a, T_INCR, NULL, NULL), FL_ECLOSED);
    fl_actor_unref(a);
}

static void handler_error_is_a_crash(void **state)
{
    (void)state;
    fixture_t fx = {.name = "crashy"};
    exit_seen_t seen = {0};
    fl_actor_t *a = spawn_counter(&fx, 1, 0, &seen);
    fl_actor_cast(a, T_INCR, NULL, NULL);
    fl_actor_cast(a, T_CRASH, NULL, NULL);
    assert_true(WAIT_FOR(atomic_load(&seen.calls) == 1, 2000));
    assert_int_equal(atomic_load(&seen.kind), FL_EXIT_CRASH);
    assert_non_null(strstr(seen.reason, "handler returned"));
    assert_false(fl_actor_alive(a));
    assert_int_equal(atomic_load(&fx.terminates), 1); /* terminate still ran: no leak */
    fl_actor_unref(a);
}

static void failed_assert_crashes_the_actor_not_the_process(void **state)
{
    (void)state;
    fixture_t fx = {.name = "asserty"};
    exit_seen_t seen = {0};
    fl_actor_t *a = spawn_counter(&fx, 0, 0, &seen);
    fl_actor_cast(a, T_ASSERT, NULL, NULL);
    assert_true(WAIT_FOR(atomic_load(&seen.calls) == 1, 2000));
    assert_int_equal(atomic_load(&seen.kind), FL_EXIT_CRASH);
    assert_non_null(strstr(seen.reason, "assertion failed: c->count < 0"));
    fl_actor_unref(a);
}

static void failed_init_reports_exit(void **state)
{
    (void)state;
    fixture_t fx = {.name = "noinit"};
    atomic_store(&fx.fail_init, 1);
    exit_seen_t seen = {0};
    fl_actor_t *a = spawn_counter(&fx, 1, 0, &seen);
    assert_true(WAIT_FOR(atomic_load(&seen.calls) == 1, 2000));
    assert_int_equal(atomic_load(&seen.kind), FL_EXIT_CRASH);
    assert_non_null(strstr(seen.reason, "init returned"));
    assert_int_equal(atomic_load(&fx.terminates), 0); /* no state, nothing to terminate */
    fl_actor_unref(a);
}

/* A busy actor gets FL_ACTOR_BUDGET messages per turn: a neighbour on the same shard is served
 * long before the busy one's mailbox is empty. */
static void busy_actor_does_not_starve_its_neighbour(void **state)
{
    (void)state;
    fixture_t fb = {.name = "busy"}, fq = {.name = "quiet"};
    fl_actor_t *busy = spawn_counter(&fb, 0, 100000, NULL);
    fl_actor_t *quiet = spawn_counter(&fq, 0, 0, NULL);
    assert_int_equal(get_count(quiet), 0);
    /* hold the shard so both mailboxes fill before either runs */
    fl_actor_cast(quiet, T_SLEEP, long_box(100), fl_free);
    assert_true(WAIT_FOR(atomic_load(&fq.sleeping) == 1, 2000));
    for (int i = 0; i < 50000; i++)
        assert_int_equal(fl_actor_cast(busy, T_SLEEP, long_box(0), fl_free), FL_OK);
    fl_actor_cast(quiet, T_INCR, NULL, NULL);
    assert_int_equal(get_count(quiet), 1);
    fl_actor_stats_t st;
    fl_actor_stats(busy, &st);
    assert_true(st.mailbox > 40000); /* the quiet one was answered after a few turns of the busy one */
    stop_and_wait(busy);
    stop_and_wait(quiet);
}

#define THREADS 4
#define CASTS   50000

typedef struct {
    fl_actor_t *to;
    atomic_long *full;
} caster_t;

static void *cast_many(void *arg)
{
    caster_t *c = arg;
    for (int i = 0; i < CASTS; i++) {
        int rc;
        while ((rc = fl_actor_cast(c->to, T_INCR, NULL, NULL)) == FL_EFULL) {
            atomic_fetch_add(c->full, 1);
            sched_yield();
        }
        if (rc != FL_OK)
            return (void *)1;
    }
    return NULL;
}

static void casts_from_many_threads_are_all_handled(void **state)
{
    (void)state;
    fixture_t fx = {.name = "target"};
    fl_actor_t *a = spawn_counter(&fx, 1, 256, NULL);
    atomic_long full = 0;
    pthread_t th[THREADS];
    caster_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (caster_t){.to = a, .full = &full};
        pthread_create(&th[i], NULL, cast_many, &args[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    assert_int_equal(get_count(a), (long)THREADS * CASTS);
    stop_and_wait(a);
}

static void registry_finds_actors_by_name(void **state)
{
    (void)state;
    fixture_t f1 = {.name = "r1"}, f2 = {.name = "r2"};
    fl_actor_t *a = spawn_counter(&f1, 0, 0, NULL);
    fl_actor_t *b = spawn_counter(&f2, 1, 0, NULL);
    assert_int_equal(fl_registry_register("tracker:x", a), FL_OK);
    assert_int_equal(fl_registry_register("tracker:x", b), FL_EEXIST);
    fl_actor_t *found = fl_registry_lookup("tracker:x");
    assert_ptr_equal(found, a);
    fl_actor_unref(found);
    assert_null(fl_registry_lookup("tracker:y"));

    stop_and_wait(a); /* the registry still holds a reference, but the name is free now */
    assert_null(fl_registry_lookup("tracker:x"));
    assert_int_equal(fl_registry_register("tracker:x", b), FL_OK);
    found = fl_registry_lookup("tracker:x");
    assert_ptr_equal(found, b);
    fl_actor_unref(found);
    fl_registry_unregister("tracker:x", b);
    assert_null(fl_registry_lookup("tracker:x"));
    stop_and_wait(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cast_then_call_sees_every_cast),
        cmocka_unit_test(full_mailbox_is_the_senders_error),
        cmocka_unit_test(call_times_out_and_late_reply_is_freed),
        cmocka_unit_test(call_to_stopped_actor_is_closed),
        cmocka_unit_test(handler_error_is_a_crash),
        cmocka_unit_test(failed_assert_crashes_the_actor_not_the_process),
        cmocka_unit_test(failed_init_reports_exit),
        cmocka_unit_test(busy_actor_does_not_starve_its_neighbour),
        cmocka_unit_test(casts_from_many_threads_are_all_handled),
        cmocka_unit_test(registry_finds_actors_by_name),
    };
    return cmocka_run_group_tests(tests, setup, runtime_teardown);
}
