/*
 * Server-Sent Events for simple clients (CONTRACT.md, "Live"): GET /api/v1/fleets/{id}/events
 * with a bearer token (header or ?token=). The stream starts with `event: snapshot` (id = its seq)
 * or, with Last-Event-ID still in the tracker's replay ring, with the missed positions; then every
 * `event: position` with id = seq. A comment line every few seconds keeps proxies from closing an
 * idle stream. The positions come from the live hub, as for WebSockets, with the same bounds.
 */
#include "live.h"

#include "http/ws.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEEPALIVE_MS        15000
#define CATCH_UP_TIMEOUT_MS 5000
#define SSE_OUTPUT_MAX      (1u << 20)

typedef struct sse {
    struct sse *prev, *next; /* the shard's open streams */
    fl_api_t *api;
    fl_http_server_t *srv;
    fl_stream_t *stream;
    live_sub_t *sub;
    struct event *keepalive;
    char fleet_id[65];
    bool has_last;
    uint64_t last;
    bool closed;
    bool rechecking; /* a keep-alive's token check is in flight */
    int refs;
    char token[FL_API_TOKEN_LEN + 1];
} sse_t;

/* Each shard's open streams, touched only on that shard's thread (for closing them on drain). */
#define MAX_SHARDS 256
static sse_t *open_streams[MAX_SHARDS];

static sse_t **streams_here(void)
{
    fl_shard_t *shard = fl_shard_current();
    int i = shard ? fl_shard_index(shard) : -1;
    return i >= 0 && i < MAX_SHARDS ? &open_streams[i] : NULL;
}

static void close_here(void *arg)
{
    (void)arg;
    sse_t **head = streams_here();
    for (sse_t *s = head ? *head : NULL; s; s = s->next)
        fl_stream_close(s->stream); /* the client reconnects (elsewhere) with Last-Event-ID */
}

void fl_api_sse_close_all(fl_api_t *api)
{
    for (int i = 0; api->deps.rt && i < fl_runtime_nshards(api->deps.rt); i++)
        fl_shard_post(fl_runtime_shard(api->deps.rt, i), close_here, NULL);
}

static void sse_unref(sse_t *s)
{
    if (--s->refs > 0)
        return;
    if (s->keepalive)
        event_free(s->keepalive);
    fl_free(s);
}

static void on_lost(live_sub_t *sub, bool behind, void *arg)
{
    (void)sub;
    sse_t *s = arg;
    if (behind)
        fl_log(FL_LOG_WARN, "live.too_slow", FL_MSG("closing an event stream that fell too far behind"),
               FL_STR("peer", fl_stream_peer(s->stream)), FL_STR("fleet", s->fleet_id));
    /* either way the client reconnects with Last-Event-ID and the replay fills the gap */
    if (behind)
        fl_stream_abort(s->stream);
    else
        fl_stream_close(s->stream);
}

static void on_caught_up(int status, fl_blob_t *snapshot, uint64_t seq, fl_blob_t **events, int n, void *arg)
{
    sse_t *s = arg;
    bool ok = status == FL_OK && !s->closed;
    if (ok && snapshot) {
        fl_blob_t *ev = fl_live_sse_event("snapshot", seq, fl_blob_data(snapshot), fl_blob_len(snapshot));
        ok = ev && fl_stream_write_blob(s->stream, ev) == FL_OK;
        fl_blob_unref(ev);
    }
    uint64_t last = seq;
    for (int i = 0; i < n; i++) {
        uint64_t id = fl_live_event_seq(fl_blob_data(events[i]), fl_blob_len(events[i]));
        if (ok) {
            fl_blob_t *ev = fl_live_sse_event("position", id, fl_blob_data(events[i]), fl_blob_len(events[i]));
            ok = ev && fl_stream_write_blob(s->stream, ev) == FL_OK;
            fl_blob_unref(ev);
            last = id;
        }
        fl_blob_unref(events[i]);
    }
    if (ok) {
        fl_live_release(s->sub, last);
    } else if (!s->closed) {
        fl_log(FL_LOG_WARN, "live.sse_start_failed", FL_MSG("an event stream could not start"), FL_STR("fleet", s->fleet_id),
               FL_STR("error", fl_strerror(status == FL_OK ? FL_ENOMEM : status)));
        fl_stream_close(s->stream);
    }
    sse_unref(s);
}

/* Each keep-alive also asks whether the stream's token still holds (the shard's token cache, as
 * for WebSockets): a revoked one ends the stream, and the client's reconnect gets 401. */
static void on_recheck(int status, const fl_api_token_t *token, void *arg)
{
    (void)token;
    sse_t *s = arg;
    s->rechecking = false;
    if (!s->closed && status == FL_ENOTFOUND) {
        fl_log(FL_LOG_INFO, "live.token_revoked", FL_MSG("closing an event stream whose token was revoked"),
               FL_STR("peer", fl_stream_peer(s->stream)), FL_STR("fleet", s->fleet_id));
        fl_stream_close(s->stream);
    }
    sse_unref(s);
}

static void on_keepalive(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sse_t *s = arg;
    if (s->closed)
        return;
    if (fl_stream_pending(s->stream) == 0)
        fl_stream_write(s->stream, ": keepalive\n\n", 13);
    if (!s->rechecking) {
        s->rechecking = true;
        s->refs++;
        fl_api_token_check(s->api, s->token, on_recheck, s);
    }
}

static void on_stream_drain(fl_stream_t *stream, void *arg)
{
    (void)stream;
    sse_t *s = arg;
    if (s->sub)
        fl_live_drain(s->sub);
}

static void on_stream_close(fl_stream_t *stream, int reason, void *arg)
{
    (void)stream;
    (void)reason;
    sse_t *s = arg;
    s->closed = true;
    if (s->keepalive)
        event_del(s->keepalive); /* a check or catch-up in flight may keep s a while; the stream is gone */
    sse_t **head = streams_here();
    if (s->prev)
        s->prev->next = s->next;
    else if (head && *head == s)
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    fl_live_unsubscribe(s->sub);
    s->sub = NULL;
    sse_unref(s);
}

static const fl_stream_handlers_t stream_handlers = {.on_drain = on_stream_drain, .on_close = on_stream_close};

/* The response head is out and the socket is ours. */
static void on_taken_over(fl_shard_t *shard, int fd, struct evbuffer *leftover, void *arg)
{
    sse_t *s = arg;
    fl_stream_opts_t o = {.max_output = SSE_OUTPUT_MAX, .idle_timeout_ms = 0, .sndbuf = s->api->deps.cfg->live_sndbuf};
    if (fl_stream_open(shard, fd, leftover, s->srv, &o, &stream_handlers, s, &s->stream) != FL_OK) {
        sse_unref(s);
        return;
    }
    s->refs++; /* the stream's, dropped in on_stream_close */
    sse_t **head = streams_here();
    if (head) {
        s->next = *head;
        if (*head)
            (*head)->prev = s;
        *head = s;
    }
    if (atomic_load(&s->api->draining)) {
        /* started while fleetd drains, after this shard closed its streams: close it now too */
        fl_stream_close(s->stream);
        sse_unref(s);
        return;
    }
    live_target_t target = {.kind = LIVE_SSE, .conn = s->stream, .low_water = SSE_OUTPUT_MAX / 4, .lost = on_lost, .arg = s};
    s->keepalive = event_new(fl_shard_base(shard), -1, EV_PERSIST, on_keepalive, s);
    struct timeval tv = {KEEPALIVE_MS / 1000, (KEEPALIVE_MS % 1000) * 1000};
    int rc = s->keepalive ? event_add(s->keepalive, &tv) == 0 ? FL_OK : FL_EIO : FL_ENOMEM;
    if (rc == FL_OK)
        rc = fl_live_subscribe(s->api->live, s->fleet_id, false, &target, &s->sub);
    if (rc == FL_OK)
        rc = fl_live_catch_up(s->api->deps.trackers, s->fleet_id, s->has_last, s->last, CATCH_UP_TIMEOUT_MS, on_caught_up, s);
    if (rc != FL_OK) {
        fl_stream_close(s->stream);
        sse_unref(s);
    }
    /* else: on_caught_up drops the reference this function held */
}

typedef struct {
    fl_api_t *api;
    fl_http_req_t *req;
    char fleet_id[65];
    bool has_last;
    uint64_t last;
    char token[FL_API_TOKEN_LEN + 1];
} start_t;

static void on_exists(int status, fl_blob_t *json, uint64_t seq, void *arg)
{
    (void)seq;
    start_t *st = arg;
    fl_http_req_t *req = st->req;
    fl_blob_unref(json);
    if (status == FL_ENOTFOUND) {
        fl_api_fleet_not_found(req, st->fleet_id);
    } else if (status != FL_OK) {
        fl_http_set_header(req, "Retry-After", "1");
        fl_http_respond_error(req, 503, "unavailable", "the fleet cannot be loaded now; retry shortly");
    } else {
        sse_t *s = fl_calloc(1, sizeof(*s));
        char head[512]; /* the fixed part and a request id of up to 128 bytes */
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n"
                 "X-Accel-Buffering: no\r\nX-Request-Id: %s\r\n\r\nretry: 2000\n\n",
                 fl_http_req_id(req));
        if (s) {
            *s = (sse_t){.api = st->api, .srv = fl_http_req_server(req), .has_last = st->has_last, .last = st->last, .refs = 1};
            memcpy(s->fleet_id, st->fleet_id, sizeof(s->fleet_id));
            memcpy(s->token, st->token, sizeof(s->token));
        }
        if (s == NULL || fl_http_take_over(req, head, on_taken_over, s) != FL_OK) {
            fl_free(s);
            fl_http_respond_error(req, 503, "unavailable", "out of memory");
        }
    }
    fl_free(st);
}

static void on_token(int status, const fl_api_token_t *token, void *arg)
{
    start_t *st = arg;
    fl_http_req_t *req = st->req;
    if (status == FL_OK && !fl_api_token_allows(token, st->fleet_id)) {
        fl_api_fleet_not_found(req, st->fleet_id);
    } else if (status == FL_OK) {
        int rc = fl_trackers_status(st->api->deps.trackers, st->fleet_id, CATCH_UP_TIMEOUT_MS, on_exists, st);
        if (rc == FL_OK)
            return;
        fl_http_set_header(req, "Retry-After", "1");
        fl_http_respond_error(req, 503, "unavailable", "the fleet cannot be loaded now; retry shortly");
    } else {
        fl_api_token_refused(req, status);
    }
    fl_free(st);
}

static void events_route(fl_http_req_t *req, void *arg)
{
    fl_api_t *api = arg;
    const char *fleet_id = fl_http_req_param(req, "fleet_id");
    if (fleet_id == NULL || !fl_id_valid(fleet_id)) {
        fl_api_fleet_not_found(req, fleet_id ? fleet_id : "");
        return;
    }
    const char *last = fl_http_req_header(req, "Last-Event-ID");
    if (last == NULL)
        last = fl_http_req_query(req, "last_event_id");
    start_t *st = fl_calloc(1, sizeof(*st));
    if (st == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory");
        return;
    }
    *st = (start_t){.api = api, .req = req};
    snprintf(st->fleet_id, sizeof(st->fleet_id), "%s", fleet_id);
    if (last && last[0]) {
        char *end = NULL;
        unsigned long long v = strtoull(last, &end, 10);
        if (*end != '\0' || last[0] < '0' || last[0] > '9') {
            fl_free(st);
            fl_http_respond_error(req, 400, "invalid_last_event_id", "Last-Event-ID must be a seq from this stream");
            return;
        }
        st->has_last = true;
        st->last = v;
    }
    const char *token = fl_api_request_token(req);
    if (token && strlen(token) < sizeof(st->token))
        memcpy(st->token, token, strlen(token) + 1); /* a longer one is refused by the check */
    fl_api_token_check(api, token, on_token, st);
}

int fl_api_sse_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/api/v1/fleets/{fleet_id}/events", events_route, api, 0);
}
