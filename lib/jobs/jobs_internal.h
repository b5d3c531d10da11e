/*
 * lib/jobs internals: shared by the module's files and its unit tests, nobody else.
 *
 * Who owns what. fl_jobs_t owns every definition (copied at registration) and the child specs of
 * the "jobs" supervisor; it outlives that supervisor and the db service (fl_jobs_free comes last).
 * Each actor's state belongs to its actor. A running job's context (fl_job_ctx_t) is shared by its
 * producer and its worker on one shard thread; see worker.c.
 *
 * The actors under "jobs" (one_for_one), in start order:
 *   committer     group-commit enqueue (commit.c), registered as FL_JOBS_COMMITTER
 *   listener      LISTEN FL_JOBS_CHANNEL on its own connection; wakes producers (listen.c)
 *   queue:NAME    one producer per queue, queues spread over the shards (producer.c)
 *   stager        scheduled/retryable jobs that are due -> available (stage.c)
 *   cron          one job per cron entry and tick, by one node per tick (cron.c)
 *   rescuer       executing jobs whose lease ran out -> available or discarded (rescue.c)
 *   pruner        deletes old finished jobs, expired unique keys, old cron ticks (prune.c)
 */
#ifndef FL_JOBS_INTERNAL_H
#define FL_JOBS_INTERNAL_H

#include "jobs.h"

#include <pthread.h>
#include <stdatomic.h>

struct event;

/* NOTIFY channel; the payload is a queue name. The enqueue, the stager, the rescuer, cron and
 * `fleetd jobs retry` notify it when jobs become available. */
#define FL_JOBS_CHANNEL "fleetd_jobs"
/* The committer's tree id and registry name (one jobs service per process). */
#define FL_JOBS_COMMITTER "committer"

/* Rows per statement for the stager, the rescuer and the pruner: short transactions, short locks. */
#define JOBS_BATCH 1000
/* Longest error text stored per attempt, in bytes (cut on a UTF-8 boundary). */
#define JOBS_MAX_ERROR 2000

/* now() as the contract's RFC 3339 UTC text with milliseconds, for the `errors` entries. */
#define JOBS_SQL_NOW_TEXT "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

typedef struct jobs_queue {
    fl_jobs_t *jobs;
    char *name;
    int concurrency;
    char id[80]; /* "queue:NAME", the producer's tree id */
    int shard;   /* where its producer runs */
    /* The live producer, for the listener's wake-ups (set by the producer's init, cleared by its
     * terminate). wake_pending coalesces them: at most one wake-up waits in its mailbox. */
    pthread_mutex_t lock;
    fl_actor_t *producer;
    atomic_bool wake_pending;
} jobs_queue_t;

typedef struct {
    char *kind;
    fl_job_perform_fn perform;
    void *arg;
    int timeout_ms;
} jobs_worker_t;

typedef struct {
    char *name, *queue, *kind, *args;
    int every_s;
} jobs_cron_t;

struct fl_jobs {
    fl_runtime_t *rt;
    fl_db_service_t *db;
    fl_jobs_opts_t opts; /* defaults filled in; node and conninfo point at the copies below */
    char *node, *conninfo;
    fl_db_options_t db_opts; /* for the actors' own connections (committer, listener) */
    jobs_queue_t **queues;
    int nqueues;
    jobs_worker_t *workers;
    int nworkers;
    jobs_cron_t *crons;
    int ncrons;
    /* the supervisor's spec, built by fl_jobs_spec; registrations are refused afterwards */
    fl_child_spec_t *children;
    int nchildren;
    fl_sup_spec_t spec;
    bool built;
    /* Every job context not yet freed, so that fl_jobs_free can free those whose worker never
     * answered. Under ctx_lock (contexts live on several shards). */
    pthread_mutex_t ctx_lock;
    struct fl_job_ctx *ctxs;
};

/* ---- jobs.c ---- */

const jobs_worker_t *jobs_worker(const fl_jobs_t *jobs, const char *kind);
jobs_queue_t *jobs_queue(const fl_jobs_t *jobs, const char *name);
/* The connection of the calling shard (NULL while its db actor restarts). */
fl_db_t *jobs_db_here(const fl_jobs_t *jobs);
/* Arms a one-shot libevent timer ms from now. */
void jobs_timer_in(struct event *ev, int64_t ms);

/* A one-shot timer that sends its actor a message (type, no data) when it fires, so that the
 * handler, not the loop, touches the state. On the actor's shard; embedded in the actor's state. */
typedef struct {
    struct event *ev;
    fl_actor_t *self;
    int type;
} jobs_timer_t;
int jobs_timer_init(jobs_timer_t *t, fl_actor_t *self, int type);
void jobs_timer_arm(jobs_timer_t *t, int64_t ms);
void jobs_timer_free(jobs_timer_t *t);
/* Wakes the producer of a queue, at most one wake-up pending at a time. Any thread. */
void jobs_wake(const fl_jobs_t *jobs, const char *queue);

/* ---- query.c: a query whose result comes back to an actor as a message ----
 * The result is copied out of libpq (text cells) so the handler can keep it; tag travels with it
 * and is released with tag_dtor when the message is dropped or freed. */

typedef struct {
    int status;    /* FL_OK or the fl_db_query error */
    char err[256]; /* why, when status is not FL_OK */
    int nrows, ncols;
    long affected; /* PQcmdTuples */
    void *tag;
    void (*tag_dtor)(void *tag);
    char **cells; /* nrows * ncols, NULL for SQL NULL */
} jobs_rows_t;

/* Sends sql on the calling shard's connection (db may be NULL: FL_EUNAVAIL). On FL_OK the result
 * arrives later as message `type` to self, data a jobs_rows_t; on an error nothing arrives and the
 * caller still owns tag. */
int jobs_query(fl_actor_t *self, int type, fl_db_t *db, const char *sql, int nparams, const char *const *values, void *tag,
               void (*tag_dtor)(void *));
void jobs_rows_free(void *rows);
/* Rows an INSERT, UPDATE or DELETE touched (libpq's PQcmdTuples takes a non-const result). */
long jobs_affected(const PGresult *res);
static inline const char *jobs_cell(const jobs_rows_t *r, int row, int col)
{
    return r->cells[row * r->ncols + col];
}

/* ---- worker.c: running jobs ---- */

typedef enum { JOB_RUNNING = 0, JOB_COMPLETE, JOB_FAIL, JOB_DISCARD } jobs_outcome_t;

/* A job handed to a worker. Everything touching it runs on its shard's thread, so its reference
 * count is a plain int: one reference for the producer that holds it (until its outcome is
 * recorded or the producer ends), one for the worker (until it answers), one per message or query
 * carrying it. */
typedef struct fl_job_ctx {
    struct fl_job_ctx *prev, *next; /* fl_jobs_t.ctxs */
    fl_jobs_t *jobs;
    fl_actor_t *producer; /* the incarnation that claimed it (a reference) */
    int refs;
    fl_job_t job;
    char *kind, *args; /* job.kind, job.args */
    int timeout_ms;
    struct event *timer; /* the worker's timeout, while the producer holds it */
    /* the outcome */
    bool answered;  /* the worker answered (or it timed out first) */
    bool timed_out; /* recorded as failed after timeout_ms; a late answer is ignored */
    jobs_outcome_t outcome;
    char *error;
    int64_t backoff_ms;
    /* the producer's bookkeeping */
    struct fl_job_ctx *run_next; /* in the producer's running list */
    bool recording;              /* an outcome write is in flight */
    int writes;                  /* outcome writes sent (a retry may find its job written) */
    bool deferred;               /* a write failed: being retried */
    bool lease_lost;
} fl_job_ctx_t;

fl_job_ctx_t *jobs_ctx_new(fl_jobs_t *jobs, fl_actor_t *producer);
fl_job_ctx_t *jobs_ctx_ref(fl_job_ctx_t *ctx);
void jobs_ctx_unref(fl_job_ctx_t *ctx);
void jobs_ctx_release(void *ctx); /* jobs_ctx_unref for dtors */

/* The delay before retry `attempt` + 1: base * 2^(attempt-1), at most max, then +-20% jitter. */
int64_t jobs_backoff_ms(const fl_jobs_opts_t *opts, int attempt);

/* Writes ctx's outcome, fenced: only while the job is still executing under this attempt, so a
 * job rescued or cancelled meanwhile is left as it is. The result comes to self as message `type`
 * with ctx as its tag (self NULL: nobody hears it). */
int jobs_record(fl_job_ctx_t *ctx, fl_actor_t *self, int type);

/* Messages other files send a producer: a wake-up (jobs_wake), a worker's answer and a job's
 * timeout (data: the ctx, with a reference). */
enum { JOBS_P_WAKE = 100, JOBS_P_ANSWER, JOBS_P_TIMEOUT };

/* ---- the behaviours ---- */

const fl_behaviour_t *fl_jobs_committer_behaviour(void); /* commit.c */
extern const fl_behaviour_t jobs_listener_behaviour;     /* listen.c */
extern const fl_behaviour_t jobs_producer_behaviour;     /* producer.c, arg: jobs_queue_t */
extern const fl_behaviour_t jobs_stager_behaviour;       /* stage.c */
extern const fl_behaviour_t jobs_cron_behaviour;         /* cron.c */
extern const fl_behaviour_t jobs_rescuer_behaviour;      /* rescue.c */
extern const fl_behaviour_t jobs_pruner_behaviour;       /* prune.c */

#endif
