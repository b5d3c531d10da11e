/* The jobs service: its options, the registered queues, workers and cron entries, and the "jobs"
 * supervisor built from them. */
#include "jobs_internal.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int or_default(int value, int def)
{
    return value != 0 ? value : def;
}

/* Queue and kind names as the jobs table's CHECK constraints allow them. */
static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

int fl_jobs_new(fl_runtime_t *rt, fl_db_service_t *db, const fl_jobs_opts_t *opts, fl_jobs_t **out)
{
    fl_assert(rt != NULL && db != NULL && out != NULL);
    static const fl_jobs_opts_t none = {0};
    if (opts == NULL)
        opts = &none;
    *out = NULL;
    fl_jobs_t *jobs = fl_calloc(1, sizeof(*jobs));
    if (jobs == NULL)
        return FL_ENOMEM;
    jobs->rt = rt;
    jobs->db = db;
    pthread_mutex_init(&jobs->ctx_lock, NULL);

    fl_jobs_opts_t *o = &jobs->opts;
    *o = *opts;
    char host[256] = "fleetd";
    if (opts->node == NULL || opts->node[0] == '\0') {
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "fleetd");
        host[sizeof(host) - 1] = '\0';
    }
    jobs->node = fl_strdup(opts->node && opts->node[0] ? opts->node : host);
    jobs->conninfo = fl_strdup(opts->conninfo ? opts->conninfo : "");
    if (jobs->node == NULL || jobs->conninfo == NULL) {
        fl_jobs_free(jobs);
        return FL_ENOMEM;
    }
    o->node = jobs->node;
    o->conninfo = jobs->conninfo;
    o->commit_interval_ms = or_default(o->commit_interval_ms, 5);
    o->commit_max_jobs = or_default(o->commit_max_jobs, 1000);
    o->commit_timeout_ms = or_default(o->commit_timeout_ms, 5000);
    o->max_pending = or_default(o->max_pending, 10000);
    o->poll_interval_ms = or_default(o->poll_interval_ms, 1000);
    o->lease_ms = or_default(o->lease_ms, 30000);
    o->prune_completed_s = or_default(o->prune_completed_s, 86400);
    o->prune_discarded_s = or_default(o->prune_discarded_s, 7 * 86400);
    o->prune_cancelled_s = or_default(o->prune_cancelled_s, 7 * 86400);
    o->backoff_base_ms = or_default(o->backoff_base_ms, 1000);
    o->backoff_max_ms = or_default(o->backoff_max_ms, 3600 * 1000);
    o->prune_interval_ms = or_default(o->prune_interval_ms, 60000);
    o->stop_grace_ms = or_default(o->stop_grace_ms, 5000);
    if (o->commit_interval_ms < 0 || o->commit_max_jobs < 1 || o->commit_timeout_ms < 1 || o->max_pending < 1 ||
        o->poll_interval_ms < 1 || o->lease_ms < 30 || o->backoff_base_ms < 1 || o->backoff_max_ms < o->backoff_base_ms ||
        o->prune_interval_ms < 1 || o->stop_grace_ms < 0) {
        fl_jobs_free(jobs);
        return FL_EINVAL;
    }
    jobs->db_opts = (fl_db_options_t){.conninfo = jobs->conninfo};
    *out = jobs;
    return FL_OK;
}

static void queue_free(jobs_queue_t *q)
{
    if (q == NULL)
        return;
    pthread_mutex_destroy(&q->lock);
    fl_free(q->name);
    fl_free(q);
}

void fl_jobs_free(fl_jobs_t *jobs)
{
    if (jobs == NULL)
        return;
    /* contexts whose worker never answered (the tree has stopped: nothing else holds them) */
    while (jobs->ctxs) {
        fl_job_ctx_t *ctx = jobs->ctxs;
        jobs->ctxs = ctx->next;
        if (ctx->timer)
            event_free(ctx->timer);
        fl_actor_unref(ctx->producer);
        fl_free(ctx->kind);
        fl_free(ctx->args);
        fl_free(ctx->error);
        fl_free(ctx);
    }
    for (int i = 0; i < jobs->nqueues; i++)
        queue_free(jobs->queues[i]);
    fl_free(jobs->queues);
    for (int i = 0; i < jobs->nworkers; i++)
        fl_free(jobs->workers[i].kind);
    fl_free(jobs->workers);
    for (int i = 0; i < jobs->ncrons; i++) {
        jobs_cron_t *c = &jobs->crons[i];
        fl_free(c->name);
        fl_free(c->queue);
        fl_free(c->kind);
        fl_free(c->args);
    }
    fl_free(jobs->crons);
    fl_free(jobs->children);
    fl_free(jobs->node);
    fl_free(jobs->conninfo);
    pthread_mutex_destroy(&jobs->ctx_lock);
    fl_free(jobs);
}

/* ---- registrations ---- */

int fl_jobs_add_queue(fl_jobs_t *jobs, const fl_queue_def_t *def)
{
    if (jobs->built)
        return FL_ESTATE;
    if (!valid_name(def->name) || def->concurrency < 1)
        return FL_EINVAL;
    if (jobs_queue(jobs, def->name))
        return FL_EEXIST;
    jobs_queue_t **queues = fl_realloc(jobs->queues, (size_t)(jobs->nqueues + 1) * sizeof(*queues));
    if (queues == NULL)
        return FL_ENOMEM;
    jobs->queues = queues;
    jobs_queue_t *q = fl_calloc(1, sizeof(*q));
    if (q == NULL || (q->name = fl_strdup(def->name)) == NULL) {
        fl_free(q);
        return FL_ENOMEM;
    }
    q->jobs = jobs;
    q->concurrency = def->concurrency;
    snprintf(q->id, sizeof(q->id), "queue:%s", def->name);
    pthread_mutex_init(&q->lock, NULL);
    atomic_init(&q->wake_pending, false);
    queues[jobs->nqueues++] = q;
    return FL_OK;
}

int fl_jobs_add_worker(fl_jobs_t *jobs, const fl_worker_def_t *def)
{
    if (jobs->built)
        return FL_ESTATE;
    if (!valid_name(def->kind) || def->perform == NULL || def->timeout_ms < 0)
        return FL_EINVAL;
    if (jobs_worker(jobs, def->kind))
        return FL_EEXIST;
    jobs_worker_t *workers = fl_realloc(jobs->workers, (size_t)(jobs->nworkers + 1) * sizeof(*workers));
    if (workers == NULL)
        return FL_ENOMEM;
    jobs->workers = workers;
    jobs_worker_t *w = &workers[jobs->nworkers];
    *w = (jobs_worker_t){.kind = fl_strdup(def->kind),
                         .perform = def->perform,
                         .arg = def->arg,
                         .timeout_ms = def->timeout_ms > 0 ? def->timeout_ms : 60000};
    if (w->kind == NULL)
        return FL_ENOMEM;
    jobs->nworkers++;
    return FL_OK;
}

static bool json_object_text(const char *text)
{
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    bool ok = json_is_object(doc);
    json_decref(doc);
    return ok;
}

int fl_jobs_add_cron(fl_jobs_t *jobs, const fl_cron_def_t *def)
{
    if (jobs->built)
        return FL_ESTATE;
    const char *args = def->args ? def->args : "{}";
    if (def->name == NULL || def->name[0] == '\0' || def->every_s < 1 || !valid_name(def->queue) || !valid_name(def->kind) ||
        !json_object_text(args))
        return FL_EINVAL;
    for (int i = 0; i < jobs->ncrons; i++)
        if (strcmp(jobs->crons[i].name, def->name) == 0)
            return FL_EEXIST;
    jobs_cron_t *crons = fl_realloc(jobs->crons, (size_t)(jobs->ncrons + 1) * sizeof(*crons));
    if (crons == NULL)
        return FL_ENOMEM;
    jobs->crons = crons;
    jobs_cron_t *c = &crons[jobs->ncrons];
    *c = (jobs_cron_t){.name = fl_strdup(def->name),
                       .queue = fl_strdup(def->queue),
                       .kind = fl_strdup(def->kind),
                       .args = fl_strdup(args),
                       .every_s = def->every_s};
    if (!c->name || !c->queue || !c->kind || !c->args) {
        fl_free(c->name);
        fl_free(c->queue);
        fl_free(c->kind);
        fl_free(c->args);
        return FL_ENOMEM;
    }
    jobs->ncrons++;
    return FL_OK;
}

/* ---- the supervisor ---- */

const fl_sup_spec_t *fl_jobs_spec(fl_jobs_t *jobs)
{
    if (jobs->built)
        return &jobs->spec;
    int nshards = fl_runtime_nshards(jobs->rt);
    int max = jobs->nqueues + 6;
    fl_child_spec_t *c = fl_calloc((size_t)max, sizeof(*c));
    if (c == NULL)
        return NULL;
    int n = 0;
    c[n++] = (fl_child_spec_t){.id = FL_JOBS_COMMITTER,
                               .behaviour = fl_jobs_committer_behaviour(),
                               .arg = jobs,
                               .mailbox_capacity = jobs->opts.max_pending,
                               .shard = fl_runtime_shard(jobs->rt, 0),
                               .registered = true,
                               .restart = FL_RESTART_PERMANENT};
    c[n++] = (fl_child_spec_t){.id = "listener",
                               .behaviour = &jobs_listener_behaviour,
                               .arg = jobs,
                               .shard = fl_runtime_shard(jobs->rt, 1 % nshards),
                               .restart = FL_RESTART_PERMANENT};
    /* queues round-robin over the shards, then the housekeepers after them */
    int shard = 0;
    for (int i = 0; i < jobs->nqueues; i++) {
        jobs_queue_t *q = jobs->queues[i];
        q->shard = shard++ % nshards;
        c[n++] = (fl_child_spec_t){.id = q->id,
                                   .behaviour = &jobs_producer_behaviour,
                                   .arg = q,
                                   .shard = fl_runtime_shard(jobs->rt, q->shard),
                                   .restart = FL_RESTART_PERMANENT,
                                   /* running jobs get stop_grace_ms to finish */
                                   .shutdown_ms = jobs->opts.stop_grace_ms + 2000};
    }
    static const struct {
        const char *id;
        const fl_behaviour_t *behaviour;
    } keepers[] = {{"stager", &jobs_stager_behaviour},
                   {"cron", &jobs_cron_behaviour},
                   {"rescuer", &jobs_rescuer_behaviour},
                   {"pruner", &jobs_pruner_behaviour}};
    for (size_t k = 0; k < sizeof(keepers) / sizeof(keepers[0]); k++)
        c[n++] = (fl_child_spec_t){.id = keepers[k].id,
                                   .behaviour = keepers[k].behaviour,
                                   .arg = jobs,
                                   .shard = fl_runtime_shard(jobs->rt, shard++ % nshards),
                                   .restart = FL_RESTART_PERMANENT};
    jobs->children = c;
    jobs->nchildren = n;
    jobs->spec = (fl_sup_spec_t){.strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 10000, .children = c, .nchildren = n};
    jobs->built = true;
    return &jobs->spec;
}

int fl_jobs_shutdown_ms(const fl_jobs_t *jobs)
{
    /* a supervisor stops its children one after the other: every producer's own shutdown time
     * (grace + 2 s, see fl_jobs_spec), and some for the rest */
    long ms = (long)jobs->nqueues * (jobs->opts.stop_grace_ms + 2000) + 5000;
    return ms < INT32_MAX ? (int)ms : INT32_MAX;
}

/* ---- helpers for the module's files ---- */

const jobs_worker_t *jobs_worker(const fl_jobs_t *jobs, const char *kind)
{
    for (int i = 0; i < jobs->nworkers; i++)
        if (strcmp(jobs->workers[i].kind, kind) == 0)
            return &jobs->workers[i];
    return NULL;
}

jobs_queue_t *jobs_queue(const fl_jobs_t *jobs, const char *name)
{
    for (int i = 0; i < jobs->nqueues; i++)
        if (strcmp(jobs->queues[i]->name, name) == 0)
            return jobs->queues[i];
    return NULL;
}

fl_db_t *jobs_db_here(const fl_jobs_t *jobs)
{
    fl_shard_t *here = fl_shard_current();
    fl_assert(here != NULL);
    return fl_db_service_get(jobs->db, fl_shard_index(here));
}

void jobs_timer_in(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    jobs_timer_t *t = arg;
    fl_actor_notify(t->self, t->type, NULL, NULL);
}

int jobs_timer_init(jobs_timer_t *t, fl_actor_t *self, int type)
{
    t->self = self;
    t->type = type;
    t->ev = evtimer_new(fl_shard_base(fl_actor_shard(self)), on_timer, t);
    return t->ev ? FL_OK : FL_ENOMEM;
}

void jobs_timer_arm(jobs_timer_t *t, int64_t ms)
{
    jobs_timer_in(t->ev, ms);
}

void jobs_timer_free(jobs_timer_t *t)
{
    if (t->ev)
        event_free(t->ev);
    t->ev = NULL;
}

void jobs_wake(const fl_jobs_t *jobs, const char *queue)
{
    jobs_queue_t *q = jobs_queue(jobs, queue);
    if (q == NULL || atomic_exchange(&q->wake_pending, true))
        return; /* not a queue of this node, or a wake-up is already on its way */
    pthread_mutex_lock(&q->lock);
    fl_actor_t *producer = q->producer;
    if (producer)
        fl_actor_ref(producer);
    pthread_mutex_unlock(&q->lock);
    /* a bounded notice: at most one per queue waits in the mailbox */
    if (producer == NULL || fl_actor_notify(producer, JOBS_P_WAKE, NULL, NULL) != FL_OK)
        atomic_store(&q->wake_pending, false);
    if (producer)
        fl_actor_unref(producer);
}
