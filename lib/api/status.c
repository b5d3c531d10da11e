/* GET /api/v1/fleets/{fleet_id}/status: a fleet's vehicles from memory (CONTRACT.md "Status").
 * The fleet's tracker serialises its status JSON once per change into an immutable blob; a read
 * takes a reference to it and writes those very bytes (no copy, no database, no message to the
 * tracker). While the tracker starts, loads or restarts, the read waits for it, up to
 * FLEETD_STATUS_WAIT; a tracker that cannot load in that time means the database is down: 503.
 *
 * ETag: the snapshot's seq. A tracker's seq starts at the wall clock in microseconds when it
 * starts and grows by one per change, so a seq names one content of one incarnation, and a
 * restarted tracker (or fleetd) never reuses a seq a client may hold. */
#include "api_internal.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum { RETRY_MS = 10 }; /* between tries while the tracker is between incarnations */

typedef struct {
    fl_api_t *api;
    fl_http_req_t *req;
    const char *fleet_id; /* the request's: valid until it is answered */
    int64_t deadline_ms;
    struct event *retry; /* created on the first retry */
} status_read_t;

static void status_read_free(status_read_t *r)
{
    if (r->retry)
        event_free(r->retry);
    fl_free(r);
}

static void respond_snapshot(fl_http_req_t *req, fl_blob_t *json, uint64_t seq)
{
    char etag[32];
    snprintf(etag, sizeof(etag), "\"%" PRIu64 "\"", seq);
    fl_http_set_header(req, "ETag", etag);
    fl_http_set_header(req, "Cache-Control", "no-cache");
    const char *inm = fl_http_req_header(req, "If-None-Match");
    if (inm && fl_api_etag_matches(inm, etag)) {
        fl_blob_unref(json);
        fl_http_respond(req, 304, NULL, NULL, 0);
        return;
    }
    fl_http_respond_ref(req, 200, "application/json", fl_blob_data(json), fl_blob_len(json), fl_blob_release, json);
}

static void try_read(status_read_t *r);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    try_read(arg);
}

static void on_status(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    status_read_t *r = arg;
    if (status == FL_OK) {
        respond_snapshot(r->req, json, seq);
    } else if (status == FL_ENOTFOUND) {
        fl_api_fleet_not_found(r->req, r->fleet_id);
    } else {
        /* Between incarnations (stopping, restarting, its partition restarting): try again
         * shortly. A tracker that is there but cannot load takes the whole wait in one try. */
        int64_t left = r->deadline_ms - fl_now_mono_ms();
        if (status != FL_ENOMEM && left > RETRY_MS) {
            if (r->retry == NULL)
                r->retry = evtimer_new(fl_shard_base(fl_http_req_shard(r->req)), on_retry, r);
            struct timeval tv = {0, RETRY_MS * 1000};
            if (r->retry && evtimer_add(r->retry, &tv) == 0)
                return;
        }
        fl_log(FL_LOG_WARN, "status.unavailable", FL_MSG("a fleet's status could not be read in time"),
               FL_RID(fl_http_req_id(r->req)), FL_STR("fleet", r->fleet_id), FL_STR("error", fl_strerror(status)));
        fl_http_set_header(r->req, "Retry-After", "1");
        fl_http_respond_error(r->req, 503, "unavailable",
                              status == FL_ENOMEM ? "out of memory while reading the fleet's status"
                                                  : "the fleet's status cannot be loaded now (database unavailable)");
    }
    status_read_free(r);
}

static void try_read(status_read_t *r)
{
    int64_t left = r->deadline_ms - fl_now_mono_ms();
    int rc = fl_trackers_status(r->api->deps.trackers, r->fleet_id, left > 1 ? (int)left : 1, on_status, r);
    if (rc != FL_OK)
        on_status(rc, NULL, 0, r);
}

static void status_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    (void)token;
    fl_api_t *api = arg;
    const char *fleet_id = fl_http_req_param(req, "fleet_id");
    if (!fl_id_valid(fleet_id)) { /* an id fleetd never accepts names nothing */
        fl_api_fleet_not_found(req, fleet_id);
        return;
    }
    if (api->deps.trackers == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "fleet status is not served by this process");
        return;
    }
    status_read_t *r = fl_malloc(sizeof(*r));
    if (r == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory");
        return;
    }
    int wait_ms = api->deps.cfg ? api->deps.cfg->status_wait_ms : 2000;
    *r = (status_read_t){.api = api, .req = req, .fleet_id = fleet_id, .deadline_ms = fl_now_mono_ms() + wait_ms};
    try_read(r);
}

static void get_status(fl_http_req_t *req, void *arg)
{
    fl_api_authorize(arg, req, fl_http_req_param(req, "fleet_id"), status_authorized, arg);
}

int fl_api_status_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/api/v1/fleets/{fleet_id}/status", get_status, api, 0);
}
