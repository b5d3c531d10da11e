/* The blocking connect of the command line: PQconnectPoll under our own deadline in
 * milliseconds (libpq's connect_timeout counts whole seconds, at least 2, per host). */
#include "db_internal.h"

#include <errno.h>
#include <poll.h>

int db_connect_blocking(const db_params_t *p, int timeout_ms, PGconn **out, char *err, size_t errlen)
{
    if (timeout_ms <= 0)
        timeout_ms = 5000;
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    *out = NULL;
    PGconn *pg = PQconnectStartParams(p->keys, p->values, 0);
    if (pg == NULL) {
        db_errf(err, errlen, "out of memory");
        return FL_ENOMEM;
    }
    PQsetNoticeProcessor(pg, db_notice_processor, NULL);

    /* Just after PQconnectStart, behave as if PQconnectPoll had asked for writing. */
    PostgresPollingStatusType st = PQstatus(pg) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int64_t left = deadline - fl_now_mono_ms();
        if (left <= 0) {
            const char *host = PQhost(pg), *port = PQport(pg);
            db_errf(err, errlen, "timed out after %d ms connecting to %s%s%s", timeout_ms, host && *host ? host : "the server",
                    port && *port ? " port " : "", port && *port ? port : "");
            PQfinish(pg);
            return FL_EUNAVAIL;
        }
        struct pollfd pfd = {.fd = PQsocket(pg), .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (pfd.fd < 0)
            break;
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            st = PQconnectPoll(pg);
    }
    if (st != PGRES_POLLING_OK || PQstatus(pg) != CONNECTION_OK) {
        const char *why = PQerrorMessage(pg);
        db_message(p, NULL, why && *why ? why : "the connection failed", err, errlen);
        PQfinish(pg);
        return FL_EUNAVAIL;
    }
    *out = pg;
    return FL_OK;
}
