/* Group-commit enqueue. Requests from every shard go to one actor, the committer, which commits
 * them together: one statement (so one transaction and one round trip) per flush, every
 * commit_interval_ms or as soon as commit_max_jobs wait, whichever comes first, with at most one
 * flush in flight — while one commits, the next gathers. Each caller hears on its own shard once
 * its job is durable, or gets an error: at once when the queue is full or the database is down,
 * FL_ETIMEDOUT when the commit takes longer than commit_timeout_ms. Memory is bounded: at most
 * max_pending requests and max_pending_bytes of arguments alive at once (past either, FL_EFULL at
 * once), and commit_max_jobs or 16 MiB per flush.
 *
 * The statement takes the jobs as arrays (unnest), claims unique keys in job_uniques (a held key
 * makes the job a duplicate of the job holding it), inserts the new jobs and notifies the
 * producers of their queues, all at once. */
#include "jobs_internal.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct request {
    struct request *next;
    fl_jobs_t *jobs;
    fl_shard_t *caller;
    fl_enqueue_fn cb;
    void *cb_arg;
    int64_t deadline_ms;
    /* the job */
    char *queue, *kind, *args, *unique_key;
    int unique_period_s;
    int64_t scheduled_at_us;
    int max_attempts;
    /* the outcome, delivered on the caller's shard */
    int status;
    int64_t job_id;
    bool duplicate;
    bool answered;           /* the caller has been told (a timeout can come before the commit) */
    struct request *same_as; /* an earlier request in the same flush with the same unique key */
    struct outcome *outcome; /* allocated with the request, so answering never needs memory */
    size_t bytes;            /* counted in pending_bytes while the request lives */
    bool counted;            /* counted in pending_jobs */
} request_t;

/* What a caller is told, on its own shard. */
typedef struct outcome {
    fl_enqueue_fn cb;
    void *arg;
    int status;
    int64_t job_id;
    bool duplicate;
} outcome_t;

typedef struct {
    fl_jobs_t *jobs;
    fl_actor_t *self;
    fl_db_t *db; /* the committer's own connection */
    request_t *pending, **pending_tail;
    int npending;
    request_t *flushing; /* the flush in flight, or NULL */
    int nflushing;
    struct event *timer;     /* commit_interval_ms after the first pending request */
    struct event *sweep;     /* answers overdue requests with FL_ETIMEDOUT */
    long flushes, committed; /* for the memory estimate and logs */
} committer_t;

enum { CM_ENQUEUE = 1, CM_FLUSH, CM_FLUSHED, CM_SWEEP };

/* Bytes of job arguments enqueued and not yet released (one jobs service per process): ingest
 * bodies can be large, so the count of pending jobs alone does not bound memory. */
static atomic_long pending_bytes;
/* Requests alive (in the committer's mailbox, waiting, or in a flush): bounded by max_pending. The
 * mailbox alone would not bound them, since the committer drains it into its waiting list. */
static atomic_long pending_jobs;
/* One flush stops taking jobs past this many bytes of arguments. */
#define FLUSH_MAX_BYTES (16L << 20)

/* The committer's connection, for fl_jobs_ready on any thread: set and cleared under the lock by
 * the committer's init and terminate. */
static pthread_mutex_t committer_lock = PTHREAD_MUTEX_INITIALIZER;
static fl_db_t *committer_db;

bool fl_jobs_ready(const fl_jobs_t *jobs)
{
    (void)jobs;
    pthread_mutex_lock(&committer_lock);
    bool up = committer_db != NULL && fl_db_is_up(committer_db);
    pthread_mutex_unlock(&committer_lock);
    return up;
}

static long max_pending_bytes(const fl_jobs_t *jobs)
{
    return jobs->opts.max_pending_bytes > 0 ? jobs->opts.max_pending_bytes : 64L << 20;
}

static const char flush_sql[] =
    "WITH input AS ("
    "  SELECT t.*, nextval('jobs_id_seq') AS id"
    "  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[], $7::int[])"
    "       WITH ORDINALITY AS t(queue, kind, args, ukey, uperiod, sched_us, maxa, ord)"
    "), claimed AS ("
    "  INSERT INTO job_uniques (key, job_id, until)"
    "  SELECT ukey, id, CASE WHEN uperiod < 0 THEN 'infinity'::timestamptz"
    "                        ELSE now() + make_interval(secs => uperiod) END"
    "  FROM input WHERE ukey IS NOT NULL"
    "  ON CONFLICT (key) DO UPDATE SET job_id = EXCLUDED.job_id, until = EXCLUDED.until, inserted_at = now()"
    "     WHERE job_uniques.until < now()"
    "  RETURNING key, job_id"
    "), inserted AS ("
    "  INSERT INTO jobs (id, queue, kind, args, state, scheduled_at, max_attempts, unique_key)"
    "  SELECT i.id, i.queue, i.kind, i.args::jsonb,"
    "         CASE WHEN i.sched_us > 0 AND to_timestamp(i.sched_us / 1e6) > now()"
    "              THEN 'scheduled'::job_state ELSE 'available'::job_state END,"
    "         CASE WHEN i.sched_us > 0 THEN greatest(to_timestamp(i.sched_us / 1e6), now()) ELSE now() END,"
    "         i.maxa, i.ukey"
    "  FROM input i WHERE i.ukey IS NULL OR i.id IN (SELECT job_id FROM claimed)"
    "  RETURNING queue"
    "), notified AS ("
    "  SELECT count(pg_notify('" FL_JOBS_CHANNEL "', q.queue)) AS n FROM (SELECT DISTINCT queue FROM inserted) q"
    ")"
    " SELECT i.ord,"
    "        CASE WHEN i.ukey IS NULL THEN i.id WHEN c.key IS NOT NULL THEN c.job_id ELSE u.job_id END,"
    "        i.ukey IS NOT NULL AND c.key IS NULL"
    " FROM input i CROSS JOIN notified"
    " LEFT JOIN claimed c ON c.key = i.ukey"
    " LEFT JOIN job_uniques u ON u.key = i.ukey AND c.key IS NULL"
    " ORDER BY i.ord";

/* ---- array literals for the text-format parameters ---- */

/* One element of a PostgreSQL array literal: NULL, or double-quoted with " and \ escaped. */
static void array_elem(fl_strbuf_t *b, const char *s)
{
    if (b->len > 1)
        fl_strbuf_add(b, ",", 1);
    if (s == NULL) {
        fl_strbuf_add(b, "NULL", 4);
        return;
    }
    fl_strbuf_add(b, "\"", 1);
    for (const char *c = s; *c; c++) {
        const char *run = c;
        while (*c && *c != '"' && *c != '\\')
            c++;
        fl_strbuf_add(b, run, (size_t)(c - run));
        if (*c == '\0')
            break;
        char esc[2] = {'\\', *c};
        fl_strbuf_add(b, esc, 2);
    }
    fl_strbuf_add(b, "\"", 1);
}

static void array_num(fl_strbuf_t *b, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%s%lld", b->len > 1 ? "," : "", v);
    fl_strbuf_add(b, num, (size_t)n);
}

/* ---- answering callers on their shards ---- */

static void request_free(request_t *r)
{
    atomic_fetch_sub(&pending_bytes, (long)r->bytes);
    if (r->counted)
        atomic_fetch_sub(&pending_jobs, 1);
    fl_free(r->queue);
    fl_free(r->kind);
    fl_free(r->args);
    fl_free(r->unique_key);
    fl_free(r->outcome);
    fl_free(r);
}

static void deliver(void *arg)
{
    outcome_t *o = arg;
    o->cb(o->status, o->job_id, o->duplicate, o->arg);
    fl_free(o);
}

/* Tells the caller, once, on its shard, at once: a request that timed out while its flush is in
 * flight is answered now, and the flush's result later changes nothing for it. */
static void answer(request_t *r, int status, int64_t id, bool duplicate)
{
    if (r->answered)
        return;
    r->answered = true;
    r->status = status;
    r->job_id = id;
    r->duplicate = duplicate;
    outcome_t *o = r->outcome;
    r->outcome = NULL;
    *o = (outcome_t){r->cb, r->cb_arg, status, id, duplicate};
    if (fl_shard_post(r->caller, deliver, o) != FL_OK) {
        fl_log(FL_LOG_ERROR, "jobs.answer_lost", FL_MSG("could not tell an enqueue's caller its outcome"),
               FL_STR("queue", r->queue), FL_INT("status", status));
        fl_free(o);
    }
}

/* The requests are done with: any not yet answered hear FL_EUNAVAIL; all are freed. */
static void release(request_t *list)
{
    while (list) {
        request_t *next = list->next;
        answer(list, FL_EUNAVAIL, 0, false);
        request_free(list);
        list = next;
    }
}

/* Requests whose deadline passed are answered FL_ETIMEDOUT now and dropped from `pending`; those
 * in the flush are only answered (the flush's result then changes nothing for them). */
static void sweep_overdue(committer_t *c)
{
    int64_t now = fl_now_mono_ms();
    request_t *late = NULL, **lp = &late;
    for (request_t **p = &c->pending; *p;) {
        request_t *r = *p;
        if (r->deadline_ms <= now) {
            *p = r->next;
            c->npending--;
            answer(r, FL_ETIMEDOUT, 0, false);
            r->next = NULL;
            *lp = r;
            lp = &r->next;
        } else {
            p = &r->next;
        }
    }
    c->pending_tail = &c->pending;
    while (*c->pending_tail)
        c->pending_tail = &(*c->pending_tail)->next;
    for (request_t *r = c->flushing; r; r = r->next)
        if (r->deadline_ms <= now)
            answer(r, FL_ETIMEDOUT, 0, false);
    release(late);
}

/* ---- flushing ---- */

typedef struct {
    committer_t *c;
    fl_actor_t *self;
    int status;
    char err[256];
    int n;
    int64_t *ids;
    bool *dups;
} flushed_t;

static void flushed_free(void *p)
{
    flushed_t *f = p;
    fl_free(f->ids);
    fl_free(f->dups);
    fl_free(f);
}

static void on_flush_result(const PGresult *res, int status, const char *err, void *arg)
{
    flushed_t *f = arg;
    f->status = status;
    if (err)
        snprintf(f->err, sizeof(f->err), "%s", err);
    if (status == FL_OK) {
        int rows = PQntuples(res);
        for (int i = 0; i < rows && i < f->n; i++) {
            int ord = atoi(PQgetvalue(res, i, 0)) - 1;
            if (ord < 0 || ord >= f->n)
                continue;
            f->ids[ord] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
            f->dups[ord] = PQgetvalue(res, i, 2)[0] == 't';
        }
    }
    fl_actor_t *self = f->self;
    fl_actor_notify(self, CM_FLUSHED, f, flushed_free);
    fl_actor_unref(self);
}

static void schedule_flush(committer_t *c)
{
    if (c->npending == 0 || c->flushing)
        return;
    if (c->npending >= c->jobs->opts.commit_max_jobs) {
        fl_actor_notify(c->self, CM_FLUSH, NULL, NULL);
        return;
    }
    if (!evtimer_pending(c->timer, NULL)) {
        int ms = c->jobs->opts.commit_interval_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        evtimer_add(c->timer, &tv);
    }
}

static void flush(committer_t *c)
{
    if (c->flushing || c->npending == 0)
        return;
    evtimer_del(c->timer);
    /* take up to commit_max_jobs from the head of pending */
    int max = c->jobs->opts.commit_max_jobs, n = 0;
    size_t bytes = 0;
    request_t *batch = c->pending, *last = NULL;
    for (request_t *r = c->pending; r && n < max && (n == 0 || bytes + r->bytes <= (size_t)FLUSH_MAX_BYTES); r = r->next) {
        last = r;
        bytes += r->bytes;
        n++;
    }
    c->pending = last->next;
    last->next = NULL;
    c->npending -= n;
    c->pending_tail = &c->pending;
    while (*c->pending_tail)
        c->pending_tail = &(*c->pending_tail)->next;

    /* a unique key twice in one flush: the later request shares the earlier one's result */
    for (request_t *r = batch; r; r = r->next) {
        r->same_as = NULL;
        if (r->unique_key == NULL)
            continue;
        for (request_t *e = batch; e != r; e = e->next)
            if (e->unique_key && e->same_as == NULL && strcmp(e->unique_key, r->unique_key) == 0) {
                r->same_as = e;
                break;
            }
    }

    fl_strbuf_t a[7] = {0};
    for (int k = 0; k < 7; k++)
        fl_strbuf_add(&a[k], "{", 1);
    int rows = 0;
    for (request_t *r = batch; r; r = r->next) {
        if (r->same_as)
            continue;
        array_elem(&a[0], r->queue);
        array_elem(&a[1], r->kind);
        array_elem(&a[2], r->args);
        array_elem(&a[3], r->unique_key);
        array_num(&a[4], r->unique_period_s);
        array_num(&a[5], r->scheduled_at_us);
        array_num(&a[6], r->max_attempts);
        rows++;
    }
    bool failed = false;
    for (int k = 0; k < 7; k++) {
        fl_strbuf_add(&a[k], "}", 1);
        failed |= a[k].failed;
    }

    flushed_t *f = fl_calloc(1, sizeof(*f));
    fl_db_t *db = c->db;
    int rc = FL_ENOMEM;
    if (!failed && f && (f->ids = fl_calloc((size_t)rows + 1, sizeof(int64_t))) &&
        (f->dups = fl_calloc((size_t)rows + 1, sizeof(bool)))) {
        f->c = c;
        f->self = c->self;
        f->n = rows;
        const char *values[7] = {a[0].p, a[1].p, a[2].p, a[3].p, a[4].p, a[5].p, a[6].p};
        fl_actor_ref(c->self);
        rc = db ? fl_db_query(db, flush_sql, 7, values, on_flush_result, f) : FL_EUNAVAIL;
        if (rc != FL_OK)
            fl_actor_unref(c->self);
    }
    for (int k = 0; k < 7; k++)
        fl_free(a[k].p);
    c->flushing = batch;
    c->nflushing = n;
    if (rc != FL_OK) {
        /* the database is down (or memory is out): every caller hears it now */
        for (request_t *r = batch; r; r = r->next)
            answer(r, rc == FL_ENOMEM ? FL_ENOMEM : FL_EUNAVAIL, 0, false);
        if (f)
            flushed_free(f);
        c->flushing = NULL;
        c->nflushing = 0;
        release(batch);
        schedule_flush(c);
    }
}

static void on_flushed(committer_t *c, flushed_t *f)
{
    request_t *batch = c->flushing;
    c->flushing = NULL;
    c->nflushing = 0;
    int i = 0;
    for (request_t *r = batch; r; r = r->next) {
        if (r->same_as)
            continue;
        if (f->status == FL_OK)
            answer(r, f->ids[i] > 0 ? FL_OK : FL_EIO, f->ids[i], f->dups[i]);
        else
            answer(r, f->status == FL_EIO || f->status == FL_ENOMEM ? FL_EUNAVAIL : f->status, 0, false);
        i++;
    }
    for (request_t *r = batch; r; r = r->next)
        if (r->same_as)
            answer(r, r->same_as->status, r->same_as->job_id, r->same_as->status == FL_OK);
    if (f->status == FL_OK) {
        c->flushes++;
        c->committed += i;
    } else {
        fl_log(FL_LOG_WARN, "jobs.commit_failed", FL_MSG("a group commit failed; its callers get an error"), FL_INT("jobs", i),
               FL_STR("error", f->err[0] ? f->err : fl_strerror(f->status)));
    }
    release(batch);
    schedule_flush(c);
}

/* ---- the actor ---- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_actor_notify(arg, CM_FLUSH, NULL, NULL);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_actor_notify(arg, CM_SWEEP, NULL, NULL);
}

static int committer_init(fl_actor_t *self, void *arg, void **state)
{
    fl_jobs_t *jobs = arg;
    committer_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        return FL_ENOMEM;
    c->jobs = jobs;
    c->self = self;
    c->pending_tail = &c->pending;
    struct event_base *base = fl_shard_base(fl_actor_shard(self));
    c->timer = evtimer_new(base, on_timer, self);
    c->sweep = event_new(base, -1, EV_PERSIST, on_sweep, self);
    /* its own connection: a flush never waits behind the shard's other queries */
    fl_db_options_t dbo = jobs->db_opts;
    int rc = c->timer && c->sweep ? fl_db_new(fl_actor_shard(self), &dbo, &c->db) : FL_ENOMEM;
    if (rc != FL_OK) {
        if (c->timer)
            event_free(c->timer);
        if (c->sweep)
            event_free(c->sweep);
        fl_free(c);
        return rc;
    }
    pthread_mutex_lock(&committer_lock);
    committer_db = c->db;
    pthread_mutex_unlock(&committer_lock);
    int ms = jobs->opts.commit_timeout_ms / 4 > 10 ? jobs->opts.commit_timeout_ms / 4 : 10;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(c->sweep, &tv);
    *state = c;
    return FL_OK;
}

static int committer_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    committer_t *c = state;
    switch (msg->type) {
    case CM_ENQUEUE: {
        request_t *r = msg->data;
        msg->data = NULL; /* ours now */
        r->next = NULL;
        *c->pending_tail = r;
        c->pending_tail = &r->next;
        c->npending++;
        schedule_flush(c);
        return FL_OK;
    }
    case CM_FLUSH:
        flush(c);
        return FL_OK;
    case CM_FLUSHED:
        on_flushed(c, msg->data);
        return FL_OK;
    case CM_SWEEP:
        sweep_overdue(c);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void committer_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    committer_t *c = state;
    if (c == NULL)
        return;
    /* Freeing the connection answers a flush in flight with FL_ECLOSED (its notify is refused now
     * that the mailbox is closed); callers hear FL_EUNAVAIL: their jobs may or may not be durable,
     * and their unique keys make a retry safe. */
    pthread_mutex_lock(&committer_lock);
    if (committer_db == c->db)
        committer_db = NULL;
    pthread_mutex_unlock(&committer_lock);
    fl_db_free(c->db);
    request_t *all = c->flushing;
    if (all) {
        request_t *tail = all;
        while (tail->next)
            tail = tail->next;
        tail->next = c->pending;
    } else {
        all = c->pending;
    }
    release(all);
    event_free(c->timer);
    event_free(c->sweep);
    fl_free(c);
}

static size_t committer_memory(const void *state)
{
    const committer_t *c = state;
    size_t bytes = sizeof(*c);
    for (const request_t *r = c->pending; r; r = r->next)
        bytes += sizeof(*r) + (r->args ? strlen(r->args) : 0);
    for (const request_t *r = c->flushing; r; r = r->next)
        bytes += sizeof(*r) + (r->args ? strlen(r->args) : 0);
    return bytes;
}

/* The request being cast by fl_jobs_enqueue on this thread: if the cast is refused, fl_actor_cast
 * frees it through request_dtor at once, and the caller must hear the error from the return value,
 * not from a callback. */
static _Thread_local request_t *casting;

/* A request dropped unhandled: the cast was refused (see casting), or the committer stopped with it
 * still in its mailbox (the caller hears FL_EUNAVAIL). */
static void request_dtor(void *p)
{
    request_t *r = p;
    if (r == casting) {
        request_free(r);
        return;
    }
    r->next = NULL;
    release(r);
}

static const fl_behaviour_t committer_behaviour = {
    .name = "committer",
    .init = committer_init,
    .handle = committer_handle,
    .terminate = committer_terminate,
    .memory = committer_memory,
};

const fl_behaviour_t *fl_jobs_committer_behaviour(void)
{
    return &committer_behaviour;
}

int fl_jobs_enqueue(fl_jobs_t *jobs, const fl_job_new_t *job, fl_enqueue_fn cb, void *arg)
{
    fl_shard_t *here = fl_shard_current();
    fl_assert(here != NULL);
    fl_actor_t *committer = fl_registry_lookup(FL_JOBS_COMMITTER);
    if (committer == NULL)
        return FL_EUNAVAIL; /* restarting */
    request_t *r = fl_calloc(1, sizeof(*r));
    if (r == NULL) {
        fl_actor_unref(committer);
        return FL_ENOMEM;
    }
    r->jobs = jobs;
    r->caller = here;
    r->cb = cb;
    r->cb_arg = arg;
    r->deadline_ms = fl_now_mono_ms() + jobs->opts.commit_timeout_ms;
    r->queue = fl_strdup(job->queue);
    r->kind = fl_strdup(job->kind);
    r->args = job->args ? fl_strndup(job->args, job->args_len ? job->args_len : strlen(job->args)) : fl_strdup("{}");
    r->unique_key = job->unique_key ? fl_strdup(job->unique_key) : NULL;
    r->unique_period_s = job->unique_period_s;
    r->scheduled_at_us = job->scheduled_at_us;
    r->max_attempts = job->max_attempts > 0 ? job->max_attempts : 20;
    r->outcome = fl_malloc(sizeof(outcome_t));
    r->bytes = sizeof(*r) + (r->args ? strlen(r->args) : 0);
    r->counted = true;
    bool over = atomic_fetch_add(&pending_jobs, 1) >= jobs->opts.max_pending;
    if (atomic_fetch_add(&pending_bytes, (long)r->bytes) + (long)r->bytes > max_pending_bytes(jobs))
        over = true;
    if (over) {
        request_free(r); /* gives the count and the bytes back */
        fl_actor_unref(committer);
        return FL_EFULL;
    }
    int rc = FL_ENOMEM;
    if (r->queue && r->kind && r->args && r->outcome && (job->unique_key == NULL || r->unique_key)) {
        /* the committer's mailbox bound is the bound on pending enqueues */
        casting = r;
        rc = fl_actor_cast(committer, CM_ENQUEUE, r, request_dtor); /* a refusal frees r */
        casting = NULL;
    } else {
        request_free(r);
    }
    fl_actor_unref(committer);
    return rc;
}
