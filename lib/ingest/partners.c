/* The partner cache: every partner with its live secrets (decrypted) and the fleets it may write,
 * held in memory so that verifying a request costs no query.
 *
 * The actor "partners" owns its own connection. A load is one query; its rows become an immutable
 * snapshot (a map from id to partner, each partner's fleets sorted for binary search) that is
 * published by swapping one mutex-guarded pointer. Readers on any shard take a reference to the
 * snapshot under that mutex and look up outside it; the snapshot is freed, its secrets wiped,
 * when the last reference goes. A load that fails leaves the last snapshot in place.
 *
 * Loads happen at start, when "fleetd_partners" is notified (the CLI notifies it in the
 * transaction of every change), on fl_partners_reload (SIGHUP), each time the connection comes
 * back (notifications sent while it was away are lost; the db module sends LISTEN before any query
 * queued after the reconnect, so that load sees everything a lost notification was about), and
 * every REFRESH_MS as the fallback the db module asks of listeners. */
#include "ingest/ingest.h"

#include <event2/event.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHANNEL "fleetd_partners"

#define TICK_MS       100   /* how often the actor looks at its connection */
#define WARM_TICK_MS  10    /* ... while the start waits for the first load */
#define WARM_START_MS 2000  /* the longest the start waits for the first load */
#define REFRESH_MS    60000 /* a full reload, in case a notification was lost anyway */
#define RETRY_MIN_MS  100   /* backoff after a failed load, doubling ... */
#define RETRY_MAX_MS  10000 /* ... up to this */
#define LOG_EVERY_MS  30000 /* a failing load is logged at most this often */

/* ---- snapshots ---- */

typedef struct {
    atomic_int refs;
    int npartners, nsecrets, nfleets; /* nsecrets and nfleets: live ones, over all partners */
    fl_partner_t *partners;
    uint8_t (*secrets)[FL_SECRET_BYTES]; /* one block for every partner's secrets; wiped on free */
    size_t secrets_cap;
    char (*fleets)[65];
    fl_map_t *by_id; /* id -> fl_partner_t * in partners */
    size_t bytes;
} snapshot_t;

static void snapshot_free(snapshot_t *s)
{
    if (s == NULL)
        return;
    if (s->secrets)
        sodium_memzero(s->secrets, s->secrets_cap * FL_SECRET_BYTES);
    fl_free(s->secrets);
    fl_free(s->fleets);
    fl_free(s->partners);
    fl_map_free(s->by_id, NULL);
    fl_free(s);
}

static void snapshot_unref(snapshot_t *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(s);
}

static int compare_fleets(const void *a, const void *b)
{
    return strcmp(a, b);
}

static bool partner_equal(const fl_partner_t *a, const fl_partner_t *b)
{
    if (a->nsecrets != b->nsecrets || a->nfleets != b->nfleets)
        return false;
    if (a->nsecrets && sodium_memcmp(a->secrets, b->secrets, (size_t)a->nsecrets * FL_SECRET_BYTES) != 0)
        return false;
    for (int i = 0; i < a->nfleets; i++)
        if (strcmp(a->fleets[i], b->fleets[i]) != 0)
            return false;
    return true;
}

static bool snapshot_equal(const snapshot_t *a, const snapshot_t *b)
{
    if (a == NULL || b == NULL || a->npartners != b->npartners)
        return false;
    for (int i = 0; i < a->npartners; i++) {
        const fl_partner_t *other = fl_map_get(b->by_id, a->partners[i].id);
        if (other == NULL || !partner_equal(&a->partners[i], other))
            return false;
    }
    return true;
}

/* ---- the service ---- */

struct fl_partners {
    fl_runtime_t *rt;
    fl_db_options_t dbo;
    char *conninfo;
    uint8_t master[FL_MASTER_KEY_BYTES];
    fl_child_spec_t spec;

    pthread_mutex_t lock; /* current and actor */
    snapshot_t *current;
    fl_actor_t *actor; /* the running incarnation, for fl_partners_reload */
    atomic_bool loaded;
    atomic_bool reload_asked; /* a P_RELOAD is on its way: later asks ride along */
};

enum { P_TICK = 1, P_RELOAD, P_NOTIFIED, P_LOADED };

/* A secret that did not open with the master key: its row id and partner, never its bytes. */
typedef struct {
    char partner[65];
    char secret_id[24];
} bad_secret_t;

/* What a load brings back to the actor. */
typedef struct {
    int status;
    char err[256];
    snapshot_t *snap;
    bad_secret_t *bad;
    int nbad;
    int64_t ms; /* how long the query and the build took */
} loaded_t;

static void loaded_free(void *p)
{
    loaded_t *l = p;
    snapshot_free(l->snap); /* never published: its only reference */
    fl_free(l->bad);
    fl_free(l);
}

typedef struct {
    fl_partners_t *ps;
    fl_actor_t *self;
    fl_db_t *db;
    struct event *tick;
    int64_t started_ms;
    fl_call_t *start_waiter; /* the supervisor's ping, answered once the cache is warm */

    bool was_up;
    bool pending; /* a load is wanted */
    bool loading; /* one is in flight */
    int64_t load_sent_ms;
    int failures;
    int64_t not_before_ms; /* backoff after a failure */
    int64_t refresh_ms;
    int64_t logged_failure_ms;
    fl_map_t *bad_logged; /* secret row ids already reported as undecryptable */
    size_t snapshot_bytes;
} loader_t;

/* Live secrets newest first, each partner and each (partner, fleet): one statement, so one
 * consistent view. Secrets come back in hex (text results), with the row id for the log. */
static const char load_sql[] = "SELECT 0, p.id, NULL, NULL, NULL, 0::bigint FROM partners p"
                               " UNION ALL"
                               " SELECT 1, s.partner_id, s.id::text, encode(s.nonce, 'hex'), encode(s.secret_ciphertext, 'hex'),"
                               "  -s.id FROM partner_secrets s WHERE s.retired_at IS NULL"
                               " UNION ALL"
                               " SELECT 2, f.partner_id, f.fleet_id, NULL, NULL, 0::bigint FROM partner_fleets f"
                               " ORDER BY 1, 6";

/* Builds the snapshot from the load's rows, decrypting each secret; a secret that does not open is
 * left out and reported. Runs on the actor's shard (the db callback). */
static int build(const fl_partners_t *ps, const PGresult *res, loaded_t *out)
{
    int nrows = PQntuples(res);
    snapshot_t *s = fl_calloc(1, sizeof(*s));
    if (s == NULL)
        return FL_ENOMEM;
    atomic_init(&s->refs, 1);
    out->snap = s;
    int nsecret_rows = 0, nfleet_rows = 0;
    for (int i = 0; i < nrows; i++) {
        int kind = atoi(PQgetvalue(res, i, 0));
        s->npartners += kind == 0;
        nsecret_rows += kind == 1;
        nfleet_rows += kind == 2;
    }
    s->by_id = fl_map_new();
    s->partners = fl_calloc((size_t)s->npartners + 1, sizeof(*s->partners));
    s->secrets = fl_calloc((size_t)nsecret_rows + 1, FL_SECRET_BYTES);
    s->secrets_cap = (size_t)nsecret_rows + 1;
    s->fleets = fl_calloc((size_t)nfleet_rows + 1, sizeof(*s->fleets));
    out->bad = fl_calloc((size_t)nsecret_rows + 1, sizeof(*out->bad));
    if (!s->by_id || !s->partners || !s->secrets || !s->fleets || !out->bad)
        return FL_ENOMEM;

    /* partners first (kind 0 sorts first), then each one's share of the two blocks */
    int np = 0;
    for (int i = 0; i < nrows && atoi(PQgetvalue(res, i, 0)) == 0; i++) {
        fl_partner_t *p = &s->partners[np++];
        snprintf(p->id, sizeof(p->id), "%s", PQgetvalue(res, i, 1));
        if (fl_map_put(s->by_id, p->id, p, NULL) != FL_OK)
            return FL_ENOMEM;
    }
    for (int i = np; i < nrows; i++) {
        fl_partner_t *p = fl_map_get(s->by_id, PQgetvalue(res, i, 1));
        if (p && atoi(PQgetvalue(res, i, 0)) == 1)
            p->nsecrets++;
        else if (p)
            p->nfleets++;
    }
    size_t secret_at = 0, fleet_at = 0;
    for (int k = 0; k < np; k++) {
        fl_partner_t *p = &s->partners[k];
        p->secrets = s->secrets + secret_at;
        p->fleets = s->fleets + fleet_at;
        secret_at += (size_t)p->nsecrets;
        fleet_at += (size_t)p->nfleets;
        p->nsecrets = p->nfleets = 0;
    }

    /* secrets in row order, which is newest first; fleets sorted afterwards */
    for (int i = np; i < nrows; i++) {
        fl_partner_t *p = fl_map_get(s->by_id, PQgetvalue(res, i, 1));
        if (p == NULL)
            continue;
        if (atoi(PQgetvalue(res, i, 0)) == 2) {
            snprintf(p->fleets[p->nfleets++], sizeof(p->fleets[0]), "%s", PQgetvalue(res, i, 2));
            s->nfleets++;
            continue;
        }
        uint8_t nonce[24], box[FL_SECRET_BYTES + 16];
        size_t nonce_len = 0, box_len = 0;
        const char *nonce_hex = PQgetvalue(res, i, 3), *box_hex = PQgetvalue(res, i, 4);
        bool ok = sodium_hex2bin(nonce, sizeof(nonce), nonce_hex, strlen(nonce_hex), NULL, &nonce_len, NULL) == 0 &&
                  nonce_len == sizeof(nonce) &&
                  sodium_hex2bin(box, sizeof(box), box_hex, strlen(box_hex), NULL, &box_len, NULL) == 0 && box_len == sizeof(box) &&
                  fl_secret_open(ps->master, nonce, box, box_len, p->secrets[p->nsecrets]) == FL_OK;
        if (ok) {
            p->nsecrets++;
            s->nsecrets++;
        } else {
            bad_secret_t *b = &out->bad[out->nbad++];
            snprintf(b->partner, sizeof(b->partner), "%s", p->id);
            snprintf(b->secret_id, sizeof(b->secret_id), "%s", PQgetvalue(res, i, 2));
        }
    }
    for (int k = 0; k < np; k++)
        if (s->partners[k].nfleets > 1)
            qsort(s->partners[k].fleets, (size_t)s->partners[k].nfleets, sizeof(s->partners[k].fleets[0]), compare_fleets);
    s->bytes = sizeof(*s) + (size_t)np * sizeof(fl_partner_t) + s->secrets_cap * FL_SECRET_BYTES +
               ((size_t)nfleet_rows + 1) * sizeof(*s->fleets) + fl_map_memory(s->by_id);
    return FL_OK;
}

static void on_load_result(const PGresult *res, int status, const char *err, void *arg)
{
    loader_t *l = arg;
    if (status == FL_ECLOSED)
        return; /* the actor is ending (fl_db_free in its terminate) */
    int64_t t0 = l->load_sent_ms;
    loaded_t *out = fl_calloc(1, sizeof(*out));
    if (out == NULL) {
        /* the load is lost; the tick sees loading stuck and starts another */
        fl_log(FL_LOG_ERROR, "partners.no_memory", FL_MSG("no memory for the partners' load; retrying"));
        return;
    }
    out->status = status;
    if (status == FL_OK)
        out->status = build(l->ps, res, out);
    else
        snprintf(out->err, sizeof(out->err), "%s", err ? err : fl_strerror(status));
    if (out->status != FL_OK) {
        if (status == FL_OK)
            snprintf(out->err, sizeof(out->err), "%s", fl_strerror(out->status));
        snapshot_free(out->snap);
        out->snap = NULL;
        out->nbad = 0;
    }
    out->ms = fl_now_mono_ms() - t0;
    /* the handler, not the db callback, touches the loader's state */
    fl_actor_notify(l->self, P_LOADED, out, loaded_free);
}

static void on_notification(const char *channel, const char *payload, void *arg)
{
    (void)channel;
    (void)payload; /* the partner that changed; the load reads them all anyway */
    loader_t *l = arg;
    fl_actor_notify(l->self, P_NOTIFIED, NULL, NULL);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_actor_notify(arg, P_TICK, NULL, NULL);
}

static void arm_tick(loader_t *l)
{
    int ms = l->start_waiter ? WARM_TICK_MS : TICK_MS;
    struct timeval tv = {.tv_sec = 0, .tv_usec = ms * 1000};
    evtimer_add(l->tick, &tv);
}

static void answer_start(loader_t *l)
{
    if (l->start_waiter == NULL)
        return;
    fl_call_reply(l->start_waiter, FL_OK, NULL, NULL);
    l->start_waiter = NULL;
}

static void maybe_load(loader_t *l)
{
    int64_t now = fl_now_mono_ms();
    /* a result that never came back (lost to an allocation failure): give up on it */
    if (l->loading && now - l->load_sent_ms > 60000)
        l->loading = false;
    if (!l->pending || l->loading || now < l->not_before_ms || !fl_db_is_up(l->db))
        return;
    int rc = fl_db_query(l->db, load_sql, 0, NULL, on_load_result, l);
    if (rc != FL_OK)
        return; /* not connected after all, or the queue is full: the next tick tries again */
    l->pending = false;
    l->loading = true;
    l->load_sent_ms = now;
}

static void publish(loader_t *l, snapshot_t *snap)
{
    fl_partners_t *ps = l->ps;
    pthread_mutex_lock(&ps->lock);
    snapshot_t *old = ps->current;
    ps->current = snap;
    pthread_mutex_unlock(&ps->lock);
    snapshot_unref(old);
    l->snapshot_bytes = snap->bytes;
}

/* Reports each undecryptable secret once (per incarnation) while it stays live. */
static void report_bad(loader_t *l, const loaded_t *r)
{
    fl_map_t *seen = fl_map_new();
    for (int i = 0; i < r->nbad; i++) {
        const bad_secret_t *b = &r->bad[i];
        if (l->bad_logged == NULL || fl_map_get(l->bad_logged, b->secret_id) == NULL)
            fl_log(FL_LOG_ERROR, "partners.secret_undecryptable",
                   FL_MSG("a partner secret does not open with the master key (another key, or a damaged row); "
                          "it is ignored"),
                   FL_STR("partner", b->partner), FL_STR("secret_id", b->secret_id));
        if (seen)
            fl_map_put(seen, b->secret_id, (void *)1, NULL);
    }
    if (seen) {
        fl_map_free(l->bad_logged, NULL);
        l->bad_logged = seen;
    }
}

static void on_loaded(loader_t *l, loaded_t *r)
{
    int64_t now = fl_now_mono_ms();
    l->loading = false;
    if (r->status != FL_OK) {
        l->failures++;
        int shift = l->failures < 8 ? l->failures - 1 : 7;
        int64_t wait = (int64_t)RETRY_MIN_MS << shift;
        l->not_before_ms = now + (wait < RETRY_MAX_MS ? wait : RETRY_MAX_MS);
        l->pending = true;
        if (l->failures == 1 || now - l->logged_failure_ms >= LOG_EVERY_MS) {
            fl_log(FL_LOG_WARN, "partners.load_failed", FL_MSG("could not load the partners; serving the last ones loaded"),
                   FL_STR("error", r->err), FL_INT("failures", l->failures), FL_BOOL("loaded", atomic_load(&l->ps->loaded)));
            l->logged_failure_ms = now;
        }
        maybe_load(l);
        return;
    }
    if (l->failures > 0)
        fl_log(FL_LOG_INFO, "partners.load_recovered", FL_MSG("the partners load again"), FL_INT("failures", l->failures));
    l->failures = 0;
    l->not_before_ms = 0;
    l->refresh_ms = now + REFRESH_MS;
    report_bad(l, r);

    fl_partners_t *ps = l->ps;
    pthread_mutex_lock(&ps->lock);
    bool same = snapshot_equal(r->snap, ps->current);
    pthread_mutex_unlock(&ps->lock);
    snapshot_t *snap = r->snap;
    if (!same) {
        r->snap = NULL; /* the cache owns it now */
        publish(l, snap);
    }
    bool first = !atomic_exchange(&ps->loaded, true);
    fl_log(same && !first ? FL_LOG_DEBUG : FL_LOG_INFO, "partners.loaded",
           FL_MSG(same && !first ? "partners reloaded, unchanged" : "partners loaded"), FL_INT("partners", snap->npartners),
           FL_INT("secrets", snap->nsecrets), FL_INT("fleets", snap->nfleets), FL_INT("undecryptable", r->nbad),
           FL_INT("ms", r->ms));
    answer_start(l);
    maybe_load(l); /* a notification during the load: its change may have missed it */
}

static void on_tick_msg(loader_t *l)
{
    int64_t now = fl_now_mono_ms();
    bool up = fl_db_is_up(l->db);
    if (up && !l->was_up) {
        /* (re)connected: whatever was notified while we were away is read now */
        l->pending = true;
        l->not_before_ms = 0;
    }
    l->was_up = up;
    if (now >= l->refresh_ms)
        l->pending = true;
    maybe_load(l);
    if (l->start_waiter && now - l->started_ms >= WARM_START_MS) {
        fl_log(FL_LOG_WARN, "partners.start_cold",
               FL_MSG("the partners could not be loaded in time; starting without them and retrying"),
               FL_INT("waited_ms", now - l->started_ms));
        answer_start(l);
    }
    arm_tick(l);
}

/* ---- the behaviour ---- */

static void loader_free(loader_t *l)
{
    if (l == NULL)
        return;
    fl_partners_t *ps = l->ps;
    pthread_mutex_lock(&ps->lock);
    if (ps->actor == l->self)
        ps->actor = NULL;
    pthread_mutex_unlock(&ps->lock);
    if (l->start_waiter)
        fl_call_reply(l->start_waiter, FL_ECLOSED, NULL, NULL);
    fl_db_free(l->db); /* a load in flight is answered FL_ECLOSED at once; notifications stop */
    if (l->tick)
        event_free(l->tick);
    fl_map_free(l->bad_logged, NULL);
    fl_free(l);
}

static int loader_init(fl_actor_t *self, void *arg, void **state)
{
    fl_partners_t *ps = arg;
    loader_t *l = fl_calloc(1, sizeof(*l));
    if (l == NULL)
        return FL_ENOMEM;
    l->ps = ps;
    l->self = self;
    l->started_ms = fl_now_mono_ms();
    l->pending = true;
    l->refresh_ms = l->started_ms + REFRESH_MS;
    l->tick = evtimer_new(fl_shard_base(fl_actor_shard(self)), on_tick, self);
    int rc = l->tick ? fl_db_new(fl_actor_shard(self), &ps->dbo, &l->db) : FL_ENOMEM;
    if (rc == FL_OK)
        rc = fl_db_listen(l->db, CHANNEL, on_notification, l);
    if (rc != FL_OK) {
        loader_free(l); /* terminate is not called after a failed init */
        return rc;
    }
    pthread_mutex_lock(&ps->lock);
    ps->actor = self;
    pthread_mutex_unlock(&ps->lock);
    atomic_store(&ps->reload_asked, false);
    arm_tick(l);
    *state = l;
    return FL_OK;
}

static int loader_handle(fl_actor_t *self, void *state, fl_msg_t *msg)
{
    (void)self;
    loader_t *l = state;
    switch (msg->type) {
    case FL_MSG_PING:
        /* the supervisor waits for this: answer once the cache is warm (bounded by WARM_START_MS);
         * a restarted actor finds the cache still warm from its previous incarnation */
        if (atomic_load(&l->ps->loaded) || l->start_waiter) {
            fl_actor_reply(msg, FL_OK, NULL, NULL);
        } else {
            l->start_waiter = fl_actor_keep_call(msg);
            arm_tick(l);
        }
        return FL_OK;
    case P_TICK:
        on_tick_msg(l);
        return FL_OK;
    case P_RELOAD:
        atomic_store(&l->ps->reload_asked, false);
        fl_log(FL_LOG_INFO, "partners.reload", FL_MSG("reloading the partners on request"));
        /* fall through */
    case P_NOTIFIED:
        l->pending = true;
        l->not_before_ms = 0;
        maybe_load(l);
        return FL_OK;
    case P_LOADED:
        on_loaded(l, msg->data);
        return FL_OK;
    default:
        return FL_EINVAL;
    }
}

static void loader_terminate(fl_actor_t *self, void *state, int kind)
{
    (void)self;
    (void)kind;
    loader_free(state);
}

static size_t loader_memory(const void *state)
{
    const loader_t *l = state;
    return sizeof(*l) + l->snapshot_bytes + (l->bad_logged ? fl_map_memory(l->bad_logged) : 0);
}

static const fl_behaviour_t partners_behaviour = {
    .name = "partners",
    .init = loader_init,
    .handle = loader_handle,
    .terminate = loader_terminate,
    .memory = loader_memory,
    .flags = FL_BEHAVIOUR_OWN_PING,
};

/* ---- the public functions ---- */

int fl_partners_new(fl_runtime_t *rt, const fl_db_options_t *db, const uint8_t master[FL_MASTER_KEY_BYTES], fl_partners_t **out)
{
    if (sodium_init() < 0)
        return FL_EIO;
    fl_partners_t *ps = fl_calloc(1, sizeof(*ps));
    if (ps == NULL)
        return FL_ENOMEM;
    ps->rt = rt;
    ps->dbo = *db;
    if (db->conninfo && (ps->conninfo = fl_strdup(db->conninfo)) == NULL) {
        fl_free(ps);
        return FL_ENOMEM;
    }
    ps->dbo.conninfo = ps->conninfo;
    sodium_mlock(ps->master, sizeof(ps->master)); /* kept out of swap where allowed; best effort */
    memcpy(ps->master, master, FL_MASTER_KEY_BYTES);
    pthread_mutex_init(&ps->lock, NULL);
    atomic_init(&ps->loaded, false);
    atomic_init(&ps->reload_asked, false);
    ps->spec = (fl_child_spec_t){.id = "partners",
                                 .behaviour = &partners_behaviour,
                                 .arg = ps,
                                 .shard = fl_runtime_shard(rt, 0),
                                 .restart = FL_RESTART_PERMANENT,
                                 .start_timeout_ms = WARM_START_MS + 3000};
    *out = ps;
    return FL_OK;
}

void fl_partners_free(fl_partners_t *ps)
{
    if (ps == NULL)
        return;
    snapshot_unref(ps->current);                    /* readers still holding it free it with their release */
    sodium_munlock(ps->master, sizeof(ps->master)); /* wipes it too */
    pthread_mutex_destroy(&ps->lock);
    fl_free(ps->conninfo);
    fl_free(ps);
}

const fl_child_spec_t *fl_partners_spec(fl_partners_t *ps)
{
    return &ps->spec;
}

void fl_partners_reload(fl_partners_t *ps)
{
    if (atomic_exchange(&ps->reload_asked, true))
        return; /* one is already on its way */
    pthread_mutex_lock(&ps->lock);
    fl_actor_t *a = ps->actor;
    if (a)
        fl_actor_ref(a);
    pthread_mutex_unlock(&ps->lock);
    /* no actor: it is (re)starting, and its start loads anyway */
    if (a == NULL || fl_actor_cast(a, P_RELOAD, NULL, NULL) != FL_OK)
        atomic_store(&ps->reload_asked, false);
    fl_actor_unref(a);
}

const fl_partner_t *fl_partners_get(fl_partners_t *ps, const char *id, void **snapshot)
{
    *snapshot = NULL;
    pthread_mutex_lock(&ps->lock);
    snapshot_t *s = ps->current;
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ps->lock);
    if (s == NULL)
        return NULL;
    const fl_partner_t *p = fl_map_get(s->by_id, id);
    if (p == NULL) {
        snapshot_unref(s);
        return NULL;
    }
    *snapshot = s;
    return p;
}

void fl_partners_release(void *snapshot)
{
    snapshot_unref(snapshot);
}

bool fl_partner_may_write(const fl_partner_t *p, const char *fleet_id)
{
    return p && bsearch(fleet_id, p->fleets, (size_t)p->nfleets, sizeof(p->fleets[0]), compare_fleets) != NULL;
}

bool fl_partners_loaded(fl_partners_t *ps)
{
    return atomic_load(&ps->loaded);
}
