/* lib/runtime pubsub: one message per shard with subscribers, the same payload bytes for every
 * subscriber, unsubscribe, and subscribers told when their shard's pubsub actor restarts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "actor_fixture.h"

#include <jansson.h>

#define SUBS_PER_SHARD 3

typedef struct {
    atomic_int received;
    atomic_int lost;
    _Atomic(fl_blob_t *) last;
    fl_sub_t *sub;
    int shard;
} subscriber_t;

static fl_pubsub_t *ps;
static fl_actor_t *sup;
static subscriber_t subs[2][SUBS_PER_SHARD];

static void deliver(const char *topic, fl_blob_t *payload, void *ctx)
{
    subscriber_t *s = ctx;
    assert_string_equal(topic, "fleet:harbor-1");
    assert_int_equal(fl_shard_index(fl_shard_current()), s->shard);
    if (payload == NULL) {
        s->sub = NULL; /* gone with the actor */
        atomic_fetch_add(&s->lost, 1);
        return;
    }
    atomic_store(&s->last, payload);
    atomic_fetch_add(&s->received, 1);
}

typedef struct {
    subscriber_t *s;
    atomic_int done;
    int rc;
} job_t;

static void do_subscribe(void *arg)
{
    job_t *j = arg;
    j->rc = fl_pubsub_subscribe(ps, "fleet:harbor-1", deliver, j->s, &j->s->sub);
    atomic_store(&j->done, 1);
}

static void do_unsubscribe(void *arg)
{
    job_t *j = arg;
    fl_pubsub_unsubscribe(ps, j->s->sub);
    j->s->sub = NULL;
    atomic_store(&j->done, 1);
}

static void on_shard(int shard, fl_task_fn fn, subscriber_t *s)
{
    job_t j = {.s = s};
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, shard), fn, &j), FL_OK);
    assert_true(WAIT_FOR(atomic_load(&j.done) == 1, 2000));
    assert_int_equal(j.rc, FL_OK);
}

static int setup(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_OFF, FL_LOG_JSON);
    if (fl_runtime_new(2, &rt) != FL_OK || fl_runtime_start(rt) != FL_OK || fl_pubsub_new(rt, &ps) != FL_OK)
        return -1;
    if (fl_sup_start(fl_runtime_shard(rt, 0), "pubsub", fl_pubsub_spec(ps), NULL, NULL, 5000, &sup) != FL_OK)
        return -1;
    for (int shard = 0; shard < 2; shard++) {
        for (int i = 0; i < SUBS_PER_SHARD; i++) {
            subs[shard][i].shard = shard;
            on_shard(shard, do_subscribe, &subs[shard][i]);
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fl_sup_stop(sup, 5000);
    fl_actor_unref(sup);
    fl_runtime_stop(rt);
    fl_pubsub_free(ps);
    fl_runtime_free(rt);
    return 0;
}

static long handled_by(const char *id)
{
    json_t *tree = fl_tree_json(sup), *c;
    size_t i;
    long handled = -1;
    json_array_foreach(json_object_get(tree, "children"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "id")), id) == 0)
            handled = (long)json_integer_value(json_object_get(c, "handled"));
    }
    json_decref(tree);
    return handled;
}

static void one_message_per_shard_and_shared_payload(void **state)
{
    (void)state;
    assert_int_equal(fl_pubsub_count(ps, "fleet:harbor-1"), 2 * SUBS_PER_SHARD);
    long before0 = handled_by("pubsub:0"), before1 = handled_by("pubsub:1");
    fl_blob_t *payload = fl_blob_from("{\"seq\":1}", 9);
    assert_int_equal(fl_pubsub_publish(ps, "fleet:harbor-1", payload), FL_OK);
    for (int shard = 0; shard < 2; shard++)
        for (int i = 0; i < SUBS_PER_SHARD; i++)
            assert_true(WAIT_FOR(atomic_load(&subs[shard][i].received) == 1, 2000));
    /* every subscriber saw the very same bytes: shared, not copied */
    for (int shard = 0; shard < 2; shard++)
        for (int i = 0; i < SUBS_PER_SHARD; i++)
            assert_ptr_equal(atomic_load(&subs[shard][i].last), payload);
    /* one message per shard, not one per subscriber */
    assert_true(WAIT_FOR(handled_by("pubsub:0") == before0 + 1 && handled_by("pubsub:1") == before1 + 1, 2000));
    fl_blob_unref(payload);
    assert_int_equal(fl_pubsub_publish(ps, "fleet:nobody", payload = fl_blob_from("x", 1)), FL_OK);
    fl_blob_unref(payload);
}

static void unsubscribed_gets_nothing_more(void **state)
{
    (void)state;
    on_shard(1, do_unsubscribe, &subs[1][0]);
    assert_int_equal(fl_pubsub_count(ps, "fleet:harbor-1"), 2 * SUBS_PER_SHARD - 1);
    int before = atomic_load(&subs[1][0].received);
    fl_blob_t *payload = fl_blob_from("{\"seq\":2}", 9);
    assert_int_equal(fl_pubsub_publish(ps, "fleet:harbor-1", payload), FL_OK);
    fl_blob_unref(payload);
    assert_true(WAIT_FOR(atomic_load(&subs[1][1].received) == 2, 2000));
    assert_true(WAIT_FOR(atomic_load(&subs[0][0].received) == 2, 2000));
    assert_int_equal(atomic_load(&subs[1][0].received), before);
}

static void restart_of_a_shards_actor_tells_its_subscribers(void **state)
{
    (void)state;
    assert_int_equal(fl_tree_restart_wait(sup, "pubsub:0", 3000), FL_OK);
    for (int i = 0; i < SUBS_PER_SHARD; i++)
        assert_true(WAIT_FOR(atomic_load(&subs[0][i].lost) == 1, 2000));
    assert_int_equal(atomic_load(&subs[1][1].lost), 0);
    assert_int_equal(fl_pubsub_count(ps, "fleet:harbor-1"), SUBS_PER_SHARD - 1);
    /* they can subscribe again on the restarted actor */
    on_shard(0, do_subscribe, &subs[0][0]);
    fl_blob_t *payload = fl_blob_from("{\"seq\":3}", 9);
    int before = atomic_load(&subs[0][0].received);
    assert_int_equal(fl_pubsub_publish(ps, "fleet:harbor-1", payload), FL_OK);
    fl_blob_unref(payload);
    assert_true(WAIT_FOR(atomic_load(&subs[0][0].received) == before + 1, 2000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_message_per_shard_and_shared_payload),
        cmocka_unit_test(unsubscribed_gets_nothing_more),
        cmocka_unit_test(restart_of_a_shards_actor_tells_its_subscribers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
