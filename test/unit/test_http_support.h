/* Shared by the lib/http tests: an in-process server on 2 shards with test routes, and a small
 * blocking HTTP client over real sockets on 127.0.0.1. Header-only so each test file stays one
 * cmocka executable. */
#ifndef TEST_HTTP_SUPPORT_H
#define TEST_HTTP_SUPPORT_H

/* Each test file uses a different subset of these helpers. */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the server under test -------------------------------------------------------------------- */

typedef struct {
    fl_config_t cfg;
    fl_runtime_t *rt;
    fl_http_router_t *router;
    fl_http_server_t *srv;
    int port;
    char bound[64];
    int log_pipe[2]; /* fl_log lines when capture_log */
    bool capture_log;
} world_t;

static world_t W;
static atomic_int released;   /* fl_http_respond_ref releases seen */
static atomic_int never_seen; /* requests the "never answers" handler took */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void h_sync(fl_http_req_t *req, void *arg)
{
    (void)arg;
    char body[256];
    const char *n = fl_http_req_query(req, "n");
    int len = n ? snprintf(body, sizeof(body), "sync n=%s", n) : snprintf(body, sizeof(body), "sync");
    fl_http_respond(req, 200, "text/plain", body, (size_t)len);
}

typedef struct {
    struct event *ev;
    fl_http_req_t *req;
    char body[128];
} async_t;

static void async_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    async_t *a = arg;
    fl_http_respond(a->req, 200, "text/plain", a->body, strlen(a->body));
    event_free(a->ev);
    free(a);
}

/* Answers later, from a timer on the request's shard: /async?n=ID&ms=DELAY */
static void h_async(fl_http_req_t *req, void *arg)
{
    (void)arg;
    async_t *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    const char *n = fl_http_req_query(req, "n"), *ms = fl_http_req_query(req, "ms");
    snprintf(a->body, sizeof(a->body), "async n=%s", n ? n : "");
    a->req = req;
    a->ev = evtimer_new(fl_shard_base(fl_http_req_shard(req)), async_fire, a);
    int delay = ms ? atoi(ms) : 30;
    struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
    evtimer_add(a->ev, &tv);
}

static void h_items(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond(req, 200, "text/plain", "items", 5);
}

static void h_vehicle(fl_http_req_t *req, void *arg)
{
    (void)arg;
    char body[2048];
    const char *q = fl_http_req_query(req, "q");
    int len = snprintf(body, sizeof(body), "fleet=%s vehicle=%s q=%s", fl_http_req_param(req, "fleet_id"),
                       fl_http_req_param(req, "vehicle_id"), q ? q : "(none)");
    fl_http_respond(req, 200, "text/plain", body, (size_t)len);
}

static void h_status_literal(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond(req, 200, "text/plain", "literal", 7);
}

static void h_status_param(fl_http_req_t *req, void *arg)
{
    (void)arg;
    char body[256];
    int len = snprintf(body, sizeof(body), "param %s", fl_http_req_param(req, "fleet_id"));
    fl_http_respond(req, 200, "text/plain", body, (size_t)len);
}

static void h_echo(fl_http_req_t *req, void *arg)
{
    (void)arg;
    size_t len;
    const char *body = fl_http_req_body(req, &len);
    fl_http_respond(req, 200, "application/octet-stream", body, len);
}

static void h_json(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond(req, 200, "application/json", "{\"ok\":true}", 11);
}

static void h_id(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond(req, 200, "text/plain", fl_http_req_id(req), strlen(fl_http_req_id(req)));
}

static void h_peer(fl_http_req_t *req, void *arg)
{
    (void)arg;
    char body[128];
    int len =
        snprintf(body, sizeof(body), "%s %s", fl_http_req_peer(req), fl_http_req_peer_is_loopback(req) ? "loopback" : "remote");
    fl_http_respond(req, 200, "text/plain", body, (size_t)len);
}

static void h_headers(fl_http_req_t *req, void *arg)
{
    (void)arg;
    char body[256];
    const char *v = fl_http_req_header(req, "x-test");
    int len = snprintf(body, sizeof(body), "x-test=%s method=%s", v ? v : "(none)", fl_http_req_method_name(req));
    assert_int_equal(fl_http_set_header(req, "X-Extra", "yes"), FL_OK);
    assert_int_equal(fl_http_set_header(req, "Content-Length", "1"), FL_EINVAL);
    assert_int_equal(fl_http_set_header(req, "X-Bad", "a\r\nInjected: 1"), FL_EINVAL);
    fl_http_respond(req, 200, "text/plain", body, (size_t)len);
}

static void h_error500(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond_error(req, 500, "internal_error", "something \"broke\"");
}

static void count_release(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&released, 1);
}

static const char ref_body[] = "{\"status\":\"ok\"}";

static void h_ref(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond_ref(req, 200, "application/json", ref_body, sizeof(ref_body) - 1, count_release, NULL);
}

#define BIG_BYTES (8 * 1024 * 1024)
static char big_body[BIG_BYTES];

static void h_big(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_http_respond_ref(req, 200, "application/octet-stream", big_body, sizeof(big_body), count_release, NULL);
}

/* /blob?kb=N: N KiB of the big body, borrowed */
static void h_blob(fl_http_req_t *req, void *arg)
{
    (void)arg;
    const char *kb = fl_http_req_query(req, "kb");
    size_t n = kb ? (size_t)atoi(kb) * 1024 : 0;
    fl_http_respond_ref(req, 200, "application/octet-stream", big_body, n < sizeof(big_body) ? n : sizeof(big_body), NULL, NULL);
}

static void h_never(fl_http_req_t *req, void *arg)
{
    (void)arg;
    (void)req;
    atomic_fetch_add(&never_seen, 1);
}

/* The upgraded protocol for the tests: echo, with the bytes that came with the request first,
 * prefixed "L:" so the test can tell them apart. */
typedef struct {
    struct event *ev;
    int fd;
    fl_http_server_t *srv;
} echo_t;

static void echo_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    echo_t *e = arg;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
        if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) < 0) {
            /* the client is gone; the next read says so */
        }
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    event_free(e->ev);
    close(e->fd);
    fl_http_upgraded_closed(e->srv);
    free(e);
}

static void upgraded(fl_shard_t *shard, int fd, struct evbuffer *leftover, void *arg)
{
    if (fd < 0) /* the client left before the hand-over */
        return;
    size_t n = evbuffer_get_length(leftover);
    if (n > 0) {
        char out[4096];
        memcpy(out, "L:", 2);
        evbuffer_remove(leftover, out + 2, n > sizeof(out) - 2 ? sizeof(out) - 2 : n);
        if (send(fd, out, 2 + (n > sizeof(out) - 2 ? sizeof(out) - 2 : n), MSG_NOSIGNAL) < 0) {
            /* the client is gone; the first read says so */
        }
    }
    evbuffer_free(leftover);
    echo_t *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    e->fd = fd;
    e->srv = arg;
    e->ev = event_new(fl_shard_base(shard), fd, EV_READ | EV_PERSIST, echo_read, e);
    event_add(e->ev, NULL);
}

static void h_ws(fl_http_req_t *req, void *arg)
{
    (void)arg;
    if (!fl_http_req_wants_upgrade(req)) {
        fl_http_respond_error(req, 426, "upgrade_required", "this path speaks echo");
        return;
    }
    int rc = fl_http_upgrade(req, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n", upgraded,
                             fl_http_req_server(req));
    assert_int_equal(rc, FL_OK);
}

static void add_routes(fl_http_router_t *r)
{
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/sync", h_sync, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/async", h_async, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET | FL_HTTP_POST, "/items", h_items, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/fleets/{fleet_id}/vehicles/{vehicle_id}", h_vehicle, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/fleets/all/status", h_status_literal, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/fleets/{fleet_id}/status", h_status_param, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_POST | FL_HTTP_PUT, "/echo", h_echo, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_POST, "/json", h_json, NULL, FL_ROUTE_JSON_BODY), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/id", h_id, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/peer", h_peer, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/headers", h_headers, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/error500", h_error500, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ref", h_ref, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/big", h_big, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/blob", h_blob, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/never", h_never, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ws", h_ws, NULL, 0), FL_OK);
}

typedef void (*tweak_fn)(fl_config_t *cfg);
/* A test file's own routes, added after the shared ones (set before start_server). */
static void (*extra_routes)(fl_http_router_t *r);

static int start_server(tweak_fn tweak)
{
    bool capture = W.capture_log; /* a setup may ask for the log before starting */
    memset(&W, 0, sizeof(W));
    W.capture_log = capture;
    char err[256];
    assert_int_equal(fl_config_load(&W.cfg, err, sizeof(err)), FL_OK);
    W.cfg.access_log = false;
    W.cfg.header_timeout_ms = 5000;
    W.cfg.body_timeout_ms = 5000;
    W.cfg.keepalive_timeout_ms = 5000;
    W.cfg.write_timeout_ms = 5000;
    if (tweak)
        tweak(&W.cfg);
    atomic_store(&released, 0);
    atomic_store(&never_seen, 0);
    if (W.capture_log || W.cfg.access_log) {
        assert_int_equal(pipe(W.log_pipe), 0);
        fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
        fl_log_set_fd(W.log_pipe[1]);
        W.capture_log = true;
    } else {
        fl_log_set_level(FL_LOG_ERROR);
    }
    assert_int_equal(fl_runtime_new(2, &W.rt), FL_OK);
    W.router = fl_http_router_new();
    assert_non_null(W.router);
    add_routes(W.router);
    if (extra_routes)
        extra_routes(W.router);
    assert_int_equal(fl_http_server_new(&W.cfg, W.router, &W.srv), FL_OK);
    assert_int_equal(fl_http_server_listen(W.srv, W.rt, "127.0.0.1:0", W.bound, sizeof(W.bound)), FL_OK);
    const char *colon = strrchr(W.bound, ':');
    assert_non_null(colon);
    W.port = atoi(colon + 1);
    assert_true(W.port > 0);
    assert_int_equal(fl_runtime_start(W.rt), FL_OK);
    return 0;
}

static void wait_connections(int want, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms && fl_http_server_connections(W.srv) != want; waited += 10)
        sleep_ms(10);
}

static int stop_server(void **state)
{
    (void)state;
    fl_alloc_fail_after(-1);
    wait_connections(0, 1000);
    fl_runtime_stop(W.rt);
    fl_http_server_free(W.srv);
    fl_runtime_free(W.rt);
    fl_http_router_free(W.router);
    if (W.capture_log) {
        fl_log_set_fd(-1);
        close(W.log_pipe[0]);
        close(W.log_pipe[1]);
        W.capture_log = false;
    }
    fl_config_free(&W.cfg);
    return 0;
}

/* Reads what the server logged so far (the pipe is non-blocking-read via poll). */
static size_t read_log(char *out, size_t outlen)
{
    size_t len = 0;
    struct pollfd p = {.fd = W.log_pipe[0], .events = POLLIN};
    while (len + 1 < outlen && poll(&p, 1, 50) > 0) {
        ssize_t n = read(W.log_pipe[0], out + len, outlen - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    out[len] = '\0';
    return len;
}

/* ---- the client -------------------------------------------------------------------------------- */

typedef struct {
    int fd;
    size_t len;
    char buf[1 << 16];
} client_t;

typedef struct {
    int status;
    char head[8192];
    char body[1 << 16];
    size_t body_len;
} resp_t;

static int connect_fd(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static client_t *client_open(void)
{
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = connect_fd(W.port, 0);
    assert_true(c->fd >= 0);
    return c;
}

static void client_close(client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static void send_bytes(client_t *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

static void send_str(client_t *c, const char *s)
{
    send_bytes(c, s, strlen(s));
}

static bool fill(client_t *c)
{
    if (c->len == sizeof(c->buf))
        return false;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n <= 0)
        return false;
    c->len += (size_t)n;
    return true;
}

static const char *find_header(const resp_t *r, const char *name)
{
    static char value[1024];
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            size_t vl = end ? (size_t)(end - v) : strlen(v);
            if (vl >= sizeof(value))
                vl = sizeof(value) - 1;
            memcpy(value, v, vl);
            value[vl] = '\0';
            return value;
        }
    }
    return NULL;
}

/* Reads one response; head_request: no body follows whatever Content-Length says. */
static bool read_response(client_t *c, resp_t *r, bool head_request)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
        if (!fill(c))
            return false;
    size_t hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof(r->head));
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    const char *cl = find_header(r, "Content-Length");
    size_t blen = cl && !head_request ? (size_t)atol(cl) : 0;
    assert_true(blen < sizeof(r->body));
    while (c->len < hlen + blen)
        if (!fill(c))
            return false;
    memcpy(r->body, c->buf + hlen, blen);
    r->body[blen] = '\0';
    r->body_len = blen;
    memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
    c->len -= hlen + blen;
    return true;
}

/* True when the server closes the connection within timeout_ms (FIN or reset). */
static bool peer_closed(client_t *c, int timeout_ms)
{
    if (c->len > 0)
        return false;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int64_t deadline = fl_now_mono_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - fl_now_mono_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return false;
        char b[4096];
        ssize_t n = recv(c->fd, b, sizeof(b), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n > 0)
            return false;
    }
}

/* One request, one response, on a fresh connection. */
static void request_once(const char *raw, resp_t *r)
{
    client_t *c = client_open();
    send_str(c, raw);
    assert_true(read_response(c, r, strncmp(raw, "HEAD ", 5) == 0));
    client_close(c);
}

static void assert_error(const resp_t *r, int status, const char *code)
{
    char want[128];
    assert_int_equal(r->status, status);
    const char *ct = find_header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/json");
    snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    assert_true(strncmp(r->body, want, strlen(want)) == 0);
    assert_true(r->body_len > strlen(want) + 3 && strcmp(r->body + r->body_len - 3, "\"}}") == 0);
    assert_non_null(find_header(r, "X-Request-Id"));
}

#endif
