/* lib/runtime shards: tasks posted from many threads all run, in order per producer, on the
 * right thread; a stop runs what was posted before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "runtime/runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define PRODUCERS    4
#define PER_PRODUCER 20000

typedef struct {
    fl_runtime_t *rt;
    int producer;
    /* written only by the shard that owns the slot (shard = producer % nshards) */
    long last_seen[PRODUCERS];
    atomic_long ran;
    atomic_int wrong_thread;
    atomic_int out_of_order;
} world_t;

typedef struct {
    world_t *w;
    int producer;
    long seq;
    int shard;
} msg_t;

static void on_msg(void *arg)
{
    msg_t *m = arg;
    fl_shard_t *cur = fl_shard_current();
    if (cur == NULL || fl_shard_index(cur) != m->shard)
        atomic_fetch_add(&m->w->wrong_thread, 1);
    if (m->seq != m->w->last_seen[m->producer] + 1)
        atomic_fetch_add(&m->w->out_of_order, 1);
    m->w->last_seen[m->producer] = m->seq;
    atomic_fetch_add(&m->w->ran, 1);
    fl_free(m);
}

typedef struct {
    world_t *w;
    int producer;
} producer_arg_t;

static void *produce(void *arg)
{
    producer_arg_t *pa = arg;
    int shard = pa->producer % fl_runtime_nshards(pa->w->rt);
    for (long i = 1; i <= PER_PRODUCER; i++) {
        msg_t *m = fl_malloc(sizeof(*m));
        *m = (msg_t){.w = pa->w, .producer = pa->producer, .seq = i, .shard = shard};
        if (fl_shard_post(fl_runtime_shard(pa->w->rt, shard), on_msg, m) != FL_OK)
            fl_free(m);
    }
    return NULL;
}

static void posts_from_many_threads_all_run_in_order(void **state)
{
    (void)state;
    world_t w;
    memset(&w, 0, sizeof(w));
    assert_int_equal(fl_runtime_new(2, &w.rt), FL_OK);
    assert_int_equal(fl_runtime_nshards(w.rt), 2);
    assert_int_equal(fl_runtime_start(w.rt), FL_OK);

    pthread_t threads[PRODUCERS];
    producer_arg_t args[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (producer_arg_t){.w = &w, .producer = i};
        assert_int_equal(pthread_create(&threads[i], NULL, produce, &args[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(threads[i], NULL);
    fl_runtime_stop(w.rt); /* runs everything posted before it */

    assert_int_equal(atomic_load(&w.ran), (long)PRODUCERS * PER_PRODUCER);
    assert_int_equal(atomic_load(&w.wrong_thread), 0);
    assert_int_equal(atomic_load(&w.out_of_order), 0);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(w.last_seen[i], PER_PRODUCER);
    fl_runtime_free(w.rt);
}

static void noop(void *arg)
{
    (void)arg;
}

static void post_after_stop_is_refused(void **state)
{
    (void)state;
    fl_runtime_t *rt;
    assert_int_equal(fl_runtime_new(1, &rt), FL_OK);
    assert_int_equal(fl_runtime_start(rt), FL_OK);
    fl_runtime_stop(rt);
    assert_int_equal(fl_shard_post(fl_runtime_shard(rt, 0), noop, NULL), FL_ECLOSED);
    assert_null(fl_shard_current());
    fl_runtime_free(rt);
}

static void post_with_no_memory_reports_it(void **state)
{
    (void)state;
    fl_runtime_t *rt;
    assert_int_equal(fl_runtime_new(1, &rt), FL_OK);
    fl_alloc_fail_after(0);
    int rc = fl_shard_post(fl_runtime_shard(rt, 0), noop, NULL);
    fl_alloc_fail_after(-1);
    assert_int_equal(rc, FL_ENOMEM);
    fl_runtime_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(posts_from_many_threads_all_run_in_order),
        cmocka_unit_test(post_after_stop_is_refused),
        cmocka_unit_test(post_with_no_memory_reports_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
