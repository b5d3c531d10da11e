/* fleetd serve under systemd: the notification protocol (Type=notify) and the watchdog.
 * Without NOTIFY_SOCKET (not started by systemd) every call here does nothing. */
#ifndef FLEETD_SERVICE_H
#define FLEETD_SERVICE_H

#include "runtime/runtime.h"

/* Sends one state to the service manager, e.g. "READY=1" or "STOPPING=1" (sd_notify). */
void svc_notify(const char *state);

/* The listening socket systemd passed (socket activation: LISTEN_FDS and LISTEN_PID for this
 * process), or -1 when there is none. More than one is refused: -2 (fleetd listens on one). */
int svc_listen_fd(void);

typedef struct svc_watchdog svc_watchdog_t;

/* When systemd asked for a watchdog (WatchdogSec=, i.e. WATCHDOG_USEC for this process), starts a
 * thread that posts a no-op task to every shard each half interval and sends WATCHDOG=1 only when
 * every shard ran its task since the previous round: a stuck event loop stops the pings and
 * systemd restarts fleetd. *out is NULL when no watchdog is wanted. FL_OK or FL_ENOMEM. */
int svc_watchdog_start(fl_runtime_t *rt, svc_watchdog_t **out);
/* Stops the thread (no more pings). Safe on NULL. */
void svc_watchdog_stop(svc_watchdog_t *wd);
/* Frees it; call once the runtime has stopped (a queued task may still point at it until then). */
void svc_watchdog_free(svc_watchdog_t *wd);

#ifndef NDEBUG
/* A drill for Debug builds only (fleetd serve takes it on SIGUSR2): blocks the event loop of shard
 * 0 for ms milliseconds, as a stuck loop would, so that a test can watch the pings stop. */
void svc_drill_stall(fl_runtime_t *rt, int ms);
#endif

#endif
