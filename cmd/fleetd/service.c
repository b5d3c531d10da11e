/* systemd notifications and the event-loop watchdog (service.h). */
#include "service.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <time.h>

typedef struct {
    svc_watchdog_t *wd;
    int index;
    atomic_bool answered; /* the shard ran its probe since it was posted */
    atomic_bool pending;  /* a probe is queued on the shard */
} probe_t;

struct svc_watchdog {
    fl_runtime_t *rt;
    int nshards;
    probe_t *probes;
    int64_t period_ms; /* half of systemd's interval */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
};

void svc_notify(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        fl_log(FL_LOG_WARN, "systemd.notify_failed", FL_MSG("could not notify the service manager"), FL_STR("state", state),
               FL_INT("errno", -rc));
}

static void probe_run(void *arg)
{
    probe_t *p = arg;
    atomic_store(&p->answered, true);
    atomic_store(&p->pending, false);
}

/* One round: ping when every shard answered the previous probe, then probe again every shard that
 * has no probe queued. Returns the first shard that did not answer, or -1. */
static int watchdog_round(svc_watchdog_t *wd)
{
    int missing = -1;
    for (int i = 0; i < wd->nshards && missing < 0; i++)
        if (!atomic_load(&wd->probes[i].answered))
            missing = i;
    if (missing < 0)
        svc_notify("WATCHDOG=1");
    for (int i = 0; i < wd->nshards; i++) {
        probe_t *p = &wd->probes[i];
        if (atomic_load(&p->pending))
            continue; /* still stuck behind whatever blocks that loop: do not pile up probes */
        atomic_store(&p->answered, false);
        atomic_store(&p->pending, true);
        if (fl_shard_post(fl_runtime_shard(wd->rt, i), probe_run, p) != FL_OK)
            atomic_store(&p->pending, false); /* retried next round; until then no ping */
    }
    return missing;
}

static void *watchdog_main(void *arg)
{
    svc_watchdog_t *wd = arg;
    int stalled = -1;   /* the shard named in the last watchdog.stalled line, or -1 */
    watchdog_round(wd); /* first probes; no shard has answered yet, so no ping */
    pthread_mutex_lock(&wd->mu);
    while (!wd->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(wd->period_ms / 1000);
        until.tv_nsec += (long)(wd->period_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!wd->stop && pthread_cond_timedwait(&wd->cv, &wd->mu, &until) == 0) {
        }
        if (wd->stop)
            break;
        pthread_mutex_unlock(&wd->mu);
        int missing = watchdog_round(wd);
        if (missing >= 0 && stalled < 0)
            fl_log(FL_LOG_ERROR, "watchdog.stalled",
                   FL_MSG("an event loop did not answer within half the watchdog interval: not feeding systemd's watchdog"),
                   FL_INT("shard", missing));
        else if (missing < 0 && stalled >= 0)
            fl_log(FL_LOG_WARN, "watchdog.recovered", FL_MSG("every event loop answers again"), FL_INT("shard", stalled));
        stalled = missing;
        pthread_mutex_lock(&wd->mu);
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

int svc_watchdog_start(fl_runtime_t *rt, svc_watchdog_t **out)
{
    *out = NULL;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return FL_OK;
    svc_watchdog_t *wd = fl_calloc(1, sizeof(*wd));
    if (wd == NULL)
        return FL_ENOMEM;
    wd->rt = rt;
    wd->nshards = fl_runtime_nshards(rt);
    wd->period_ms = (int64_t)(usec / 2000);
    if (wd->period_ms < 1)
        wd->period_ms = 1;
    wd->probes = fl_calloc((size_t)wd->nshards, sizeof(*wd->probes));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&wd->mu, NULL);
    pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (wd->probes == NULL) {
        svc_watchdog_free(wd);
        return FL_ENOMEM;
    }
    for (int i = 0; i < wd->nshards; i++) {
        wd->probes[i].wd = wd;
        wd->probes[i].index = i;
    }
    if (pthread_create(&wd->thread, NULL, watchdog_main, wd) != 0) {
        svc_watchdog_free(wd);
        return FL_ENOMEM;
    }
    wd->started = true;
    fl_log(FL_LOG_INFO, "watchdog.enabled", FL_MSG("feeding systemd's watchdog while every event loop answers"),
           FL_INT("interval_ms", (long long)(usec / 1000)), FL_INT("ping_every_ms", wd->period_ms));
    *out = wd;
    return FL_OK;
}

void svc_watchdog_stop(svc_watchdog_t *wd)
{
    if (wd == NULL || !wd->started)
        return;
    pthread_mutex_lock(&wd->mu);
    wd->stop = true;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
    wd->started = false;
}

void svc_watchdog_free(svc_watchdog_t *wd)
{
    if (wd == NULL)
        return;
    svc_watchdog_stop(wd);
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
    fl_free(wd->probes);
    fl_free(wd);
}

#ifndef NDEBUG
static void stall_run(void *arg)
{
    int ms = (int)(intptr_t)arg;
    fl_log(FL_LOG_WARN, "watchdog.drill", FL_MSG("drill: blocking this event loop"), FL_INT("ms", ms));
    struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0) {
    }
}

void svc_drill_stall(fl_runtime_t *rt, int ms)
{
    fl_shard_post(fl_runtime_shard(rt, 0), stall_run, (void *)(intptr_t)ms);
}
#endif

int svc_listen_fd(void)
{
    int n = sd_listen_fds(1); /* 1: unsets LISTEN_FDS so that children (none today) do not take it */
    if (n <= 0)
        return -1;
    if (n > 1) {
        for (int i = 1; i < n; i++)
            close(SD_LISTEN_FDS_START + i);
        return -2;
    }
    return SD_LISTEN_FDS_START;
}
