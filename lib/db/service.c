/* The db service: one asynchronous connection per shard, each owned by an actor db:N under the
 * "db" supervisor, so the tree shows each connection and an operator can restart one. Code on a
 * shard uses that shard's connection (fl_db_service_get); /ready asks whether all are up. */
#include "db.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    fl_db_service_t *svc;
    int shard;
} conn_arg_t;

struct fl_db_service {
    fl_runtime_t *rt;
    int nshards;
    fl_db_options_t opts;
    char *conninfo;
    pthread_mutex_t lock; /* guards dbs[] for readers on other shards */
    fl_db_t **dbs;
    conn_arg_t *args;
    fl_child_spec_t *children;
    char (*ids)[16];
    fl_sup_spec_t spec;
};

static int conn_init(fl_actor_t *self, void *arg, void **state)
{
    (void)self;
    conn_arg_t *a = arg;
    fl_db_t *db;
    int rc = fl_db_new(fl_runtime_shard(a->svc->rt, a->shard), &a->svc->opts, &db);
    if (rc != FL_OK)
        return rc;
    pthread_mutex_lock(&a->svc->lock);
    a->svc->dbs[a->shard] = db;
    pthread_mutex_unlock(&a->svc->lock);
    *state = a;
    return FL_OK;
}

static int conn_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    (void)state;
    (void)msg;
    return FL_EINVAL; /* it takes no messages: the connection runs on the shard's event loop */
}

static void conn_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    conn_arg_t *a = state;
    pthread_mutex_lock(&a->svc->lock);
    fl_db_t *db = a->svc->dbs[a->shard];
    a->svc->dbs[a->shard] = NULL;
    pthread_mutex_unlock(&a->svc->lock);
    fl_db_free(db); /* pending queries get FL_ECLOSED */
}

static const fl_behaviour_t conn_behaviour = {
    .name = "db",
    .init = conn_init,
    .handle = conn_handle,
    .terminate = conn_terminate,
};

int fl_db_service_new(fl_runtime_t *rt, const fl_db_options_t *opts, fl_db_service_t **out)
{
    fl_db_service_t *svc = fl_calloc(1, sizeof(*svc));
    if (svc == NULL)
        return FL_ENOMEM;
    int n = fl_runtime_nshards(rt);
    svc->rt = rt;
    svc->nshards = n;
    svc->opts = *opts;
    pthread_mutex_init(&svc->lock, NULL);
    svc->conninfo = fl_strdup(opts->conninfo ? opts->conninfo : "");
    svc->dbs = fl_calloc((size_t)n, sizeof(*svc->dbs));
    svc->args = fl_calloc((size_t)n, sizeof(*svc->args));
    svc->children = fl_calloc((size_t)n, sizeof(*svc->children));
    svc->ids = fl_calloc((size_t)n, sizeof(*svc->ids));
    if (!svc->conninfo || !svc->dbs || !svc->args || !svc->children || !svc->ids) {
        fl_db_service_free(svc);
        return FL_ENOMEM;
    }
    svc->opts.conninfo = svc->conninfo;
    for (int i = 0; i < n; i++) {
        svc->args[i] = (conn_arg_t){svc, i};
        snprintf(svc->ids[i], sizeof(svc->ids[i]), "db:%d", i);
        svc->children[i] = (fl_child_spec_t){.id = svc->ids[i],
                                             .behaviour = &conn_behaviour,
                                             .arg = &svc->args[i],
                                             .shard = fl_runtime_shard(rt, i),
                                             .restart = FL_RESTART_PERMANENT};
    }
    svc->spec = (fl_sup_spec_t){
        .strategy = FL_ONE_FOR_ONE, .max_restarts = 5, .period_ms = 10000, .children = svc->children, .nchildren = n};
    *out = svc;
    return FL_OK;
}

void fl_db_service_free(fl_db_service_t *svc)
{
    if (svc == NULL)
        return;
    for (int i = 0; svc->dbs && i < svc->nshards; i++)
        fl_db_free(svc->dbs[i]);
    fl_free(svc->dbs);
    fl_free(svc->args);
    fl_free(svc->children);
    fl_free(svc->ids);
    fl_free(svc->conninfo);
    pthread_mutex_destroy(&svc->lock);
    fl_free(svc);
}

const fl_sup_spec_t *fl_db_service_spec(fl_db_service_t *svc)
{
    return &svc->spec;
}

fl_db_t *fl_db_service_get(fl_db_service_t *svc, int shard)
{
    /* only shard's own thread changes dbs[shard] (in the actor's init and terminate), and only
     * that thread may use the connection, so it reads without the lock */
    return svc->dbs[shard];
}

bool fl_db_service_up(fl_db_service_t *svc)
{
    bool up = true;
    pthread_mutex_lock(&svc->lock);
    for (int i = 0; i < svc->nshards; i++)
        up = up && svc->dbs[i] && fl_db_is_up(svc->dbs[i]);
    pthread_mutex_unlock(&svc->lock);
    return up;
}

int fl_db_service_connections(fl_db_service_t *svc, int *up)
{
    int n = 0;
    pthread_mutex_lock(&svc->lock);
    for (int i = 0; i < svc->nshards; i++)
        n += svc->dbs[i] && fl_db_is_up(svc->dbs[i]);
    pthread_mutex_unlock(&svc->lock);
    *up = n;
    return svc->nshards;
}

int fl_db_service_schema_version(fl_db_service_t *svc)
{
    int version = -1;
    pthread_mutex_lock(&svc->lock);
    for (int i = 0; i < svc->nshards; i++) {
        int v = svc->dbs[i] ? fl_db_schema_version(svc->dbs[i]) : -1;
        if (v > version)
            version = v;
    }
    pthread_mutex_unlock(&svc->lock);
    return version;
}
