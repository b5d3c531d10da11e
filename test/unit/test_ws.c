/* The WebSocket transport (RFC 6455) and the raw stream under it, over real sockets: the real HTTP
 * server on a 2-shard runtime, WebSocket routes built on fl_ws_accept, and a client that writes
 * its frames byte by byte, so each rule of the RFC is checked by what goes over the wire. */
#include "test_http_support.h"

#include "http/ws.h"

#include <fcntl.h>

#define MAX_MESSAGE 1024
#define MAX_OUTPUT  (64 * 1024)
#define FLOOD_CHUNK 4096

static const char sample_key[] = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455, section 1.3 */

/* ---- what the server side saw ----------------------------------------------------------------- */

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static int closes, last_code;
static char last_reason[128];
static atomic_int opened, drained, flood_done, flood_rc, flood_sent;
static atomic_long flood_pending;

static void record_close(int code, const char *reason)
{
    pthread_mutex_lock(&seen_lock);
    closes++;
    last_code = code;
    snprintf(last_reason, sizeof(last_reason), "%s", reason);
    pthread_mutex_unlock(&seen_lock);
}

static int closes_now(void)
{
    pthread_mutex_lock(&seen_lock);
    int n = closes;
    pthread_mutex_unlock(&seen_lock);
    return n;
}

/* Waits until every WebSocket the server opened has closed, so that a test counts only its own. */
static void quiesce(void)
{
    for (int waited = 0; waited < 5000 && closes_now() < atomic_load(&opened); waited += 5)
        sleep_ms(5);
    assert_int_equal(closes_now(), atomic_load(&opened));
}

/* Waits until the server has seen `want` closes in all; returns the last code. */
static int wait_server_close(int want, char *reason, size_t reasonlen)
{
    for (int waited = 0; waited < 5000 && closes_now() < want; waited += 5)
        sleep_ms(5);
    pthread_mutex_lock(&seen_lock);
    assert_int_equal(closes, want);
    int code = last_code;
    if (reason)
        snprintf(reason, reasonlen, "%s", last_reason);
    pthread_mutex_unlock(&seen_lock);
    return code;
}

/* ---- the routes ---------------------------------------------------------------------------------- */

static void on_open(fl_ws_t *ws, void *arg)
{
    (void)ws;
    (void)arg;
    atomic_fetch_add(&opened, 1);
}

static void on_message(fl_ws_t *ws, const char *data, size_t len, bool binary, void *arg)
{
    (void)arg;
    char out[256];
    if (binary) {
        int n = snprintf(out, sizeof(out), "binary:%zu", len);
        fl_ws_send_text(ws, out, (size_t)n);
    } else if (len == 5 && memcmp(data, "query", 5) == 0) {
        const char *token = fl_ws_query(ws, "token"), *vsn = fl_ws_query(ws, "vsn");
        int n = snprintf(out, sizeof(out), "token=%s vsn=%s missing=%s", token ? token : "(none)", vsn ? vsn : "(none)",
                         fl_ws_query(ws, "missing") ? "found" : "(none)");
        fl_ws_send_text(ws, out, (size_t)n);
    } else if (len == 3 && memcmp(data, "bye", 3) == 0) {
        fl_ws_close(ws, 1000, "requested");
        assert_int_equal(fl_ws_send_text(ws, "late", 4), FL_ESTATE);
    } else if (len == 5 && memcmp(data, "flood", 5) == 0) {
        static char chunk[FLOOD_CHUNK];
        memset(chunk, 'f', sizeof(chunk));
        int rc = FL_OK, sent = 0;
        while (sent < 100000 && (rc = fl_ws_send_text(ws, chunk, sizeof(chunk))) == FL_OK)
            sent++;
        atomic_store(&flood_sent, sent);
        atomic_store(&flood_pending, (long)fl_ws_pending(ws));
        atomic_store(&flood_rc, rc);
        atomic_store(&flood_done, 1);
    } else {
        fl_ws_send_text(ws, data, len);
    }
}

static void on_drain(fl_ws_t *ws, void *arg)
{
    (void)ws;
    (void)arg;
    atomic_fetch_add(&drained, 1);
}

static void on_close(fl_ws_t *ws, int code, const char *reason, void *arg)
{
    (void)ws;
    (void)arg;
    record_close(code, reason);
}

static const fl_ws_handlers_t echo_handlers = {
    .on_open = on_open, .on_message = on_message, .on_drain = on_drain, .on_close = on_close};

/* /ws/echo?idle=MS: echoes text; "query", "bye" and "flood" are commands (see on_message). */
/* Answers an upgrade: 101 (FL_OK), or refused with an error status (FL_EPROTO), which the client
 * side of each case checks; anything else is a bug. */
static atomic_int accept_rc, accept_calls; /* the last fl_ws_accept's result, and how many so far */

static void accept_or_refuse(fl_http_req_t *req, const fl_ws_opts_t *o, const fl_ws_handlers_t *h)
{
    int rc = fl_ws_accept(req, o, h, NULL);
    assert_true(rc == FL_OK || rc == FL_EPROTO);
    atomic_store(&accept_rc, rc);
    atomic_fetch_add(&accept_calls, 1);
}

static void h_ws_echo(fl_http_req_t *req, void *arg)
{
    (void)arg;
    const char *idle = fl_http_req_query(req, "idle");
    fl_ws_opts_t o = {.max_message = MAX_MESSAGE,
                      .max_output = MAX_OUTPUT,
                      .idle_timeout_ms = idle ? atoi(idle) : 0,
                      .origins = " http://allowed.example , https://also.example"};
    accept_or_refuse(req, &o, &echo_handlers);
}

/* /ws/same: the default Origin policy (same origin). */
static void h_ws_same(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_ws_opts_t o = {.max_message = MAX_MESSAGE, .max_output = MAX_OUTPUT};
    accept_or_refuse(req, &o, &echo_handlers);
}

/* /ws/shared: each connection gets the same frame, shared, when it opens. */
static fl_blob_t *shared_frame;

static void shared_open(fl_ws_t *ws, void *arg)
{
    (void)arg;
    atomic_fetch_add(&opened, 1);
    assert_int_equal(fl_ws_send_frame(ws, shared_frame), FL_OK);
}

static const fl_ws_handlers_t shared_handlers = {.on_open = shared_open, .on_message = on_message, .on_close = on_close};

static void h_ws_shared(fl_http_req_t *req, void *arg)
{
    (void)arg;
    fl_ws_opts_t o = {.max_message = MAX_MESSAGE, .max_output = MAX_OUTPUT, .origins = "*"};
    accept_or_refuse(req, &o, &shared_handlers);
}

/* /ws/slow: accepts 100 ms later, from a timer, as a handler that checks a token first would. */
typedef struct {
    struct event *ev;
    fl_http_req_t *req;
} slow_t;

static void slow_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    slow_t *s = arg;
    fl_ws_opts_t o = {.max_message = MAX_MESSAGE, .max_output = MAX_OUTPUT, .origins = "*"};
    accept_or_refuse(s->req, &o, &echo_handlers);
    event_free(s->ev);
    free(s);
}

static void h_ws_slow(fl_http_req_t *req, void *arg)
{
    (void)arg;
    slow_t *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->req = req;
    s->ev = evtimer_new(fl_shard_base(fl_http_req_shard(req)), slow_fire, s);
    struct timeval tv = {.tv_usec = 100 * 1000};
    evtimer_add(s->ev, &tv);
}

static void ws_routes(fl_http_router_t *r)
{
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ws/slow", h_ws_slow, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ws/echo", h_ws_echo, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ws/same", h_ws_same, NULL, 0), FL_OK);
    assert_int_equal(fl_http_router_add(r, FL_HTTP_GET, "/ws/shared", h_ws_shared, NULL, 0), FL_OK);
}

static int group_setup(void **state)
{
    (void)state;
    extra_routes = ws_routes;
    shared_frame = fl_ws_frame_text("shared hello", 12);
    assert_non_null(shared_frame);
    return start_server(NULL);
}

static int group_teardown(void **state)
{
    for (int waited = 0; waited < 5000 && fl_ws_count() > 0; waited += 10)
        sleep_ms(10);
    assert_int_equal(fl_ws_count(), 0);
    stop_server(state);
    fl_blob_unref(shared_frame);
    return 0;
}

/* ---- the client ------------------------------------------------------------------------------------ */

static void handshake(client_t *c, const char *path, const char *extra, resp_t *r)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             path, W.port, sample_key, extra ? extra : "");
    send_str(c, req);
    assert_true(read_response(c, r, false));
}

static client_t *ws_open(const char *path)
{
    client_t *c = client_open();
    resp_t r;
    handshake(c, path, NULL, &r);
    assert_int_equal(r.status, 101);
    return c;
}

/* A client frame: b0 is FIN, RSV and opcode; the payload masked with a fixed key, the length in
 * its shortest form. */
static void send_frame(client_t *c, uint8_t b0, const void *payload, size_t len)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t h[14];
    size_t hl = 2;
    h[0] = b0;
    h[1] = 0x80;
    if (len < 126) {
        h[1] |= (uint8_t)len;
    } else if (len <= 0xffff) {
        h[1] |= 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        hl = 4;
    } else {
        h[1] |= 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    memcpy(h + hl, key, 4);
    hl += 4;
    send_bytes(c, (const char *)h, hl);
    char *body = malloc(len + 1);
    assert_non_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (char)(((const uint8_t *)payload)[i] ^ key[i % 4]);
    send_bytes(c, body, len);
    free(body);
}

static void send_text(client_t *c, const char *s)
{
    send_frame(c, 0x81, s, strlen(s));
}

typedef struct {
    int op;
    bool fin;
    size_t len;
    char data[MAX_OUTPUT];
} frame_t;

static frame_t F;

/* Reads one server frame (never masked). False at EOF. */
static bool read_frame(client_t *c, frame_t *f)
{
    while (c->len < 2)
        if (!fill(c))
            return false;
    uint8_t b0 = (uint8_t)c->buf[0], b1 = (uint8_t)c->buf[1];
    assert_int_equal(b1 & 0x80, 0);
    assert_int_equal(b0 & 0x70, 0);
    uint64_t len = b1 & 0x7f;
    size_t hl = len == 126 ? 4 : len == 127 ? 10 : 2;
    while (c->len < hl)
        if (!fill(c))
            return false;
    if (hl > 2) {
        len = 0;
        for (size_t i = 2; i < hl; i++)
            len = len << 8 | (uint8_t)c->buf[i];
    }
    assert_true(len < sizeof(f->data));
    while (c->len < hl + len)
        if (!fill(c))
            return false;
    f->op = b0 & 0x0f;
    f->fin = b0 & 0x80;
    f->len = (size_t)len;
    memcpy(f->data, c->buf + hl, f->len);
    f->data[f->len < sizeof(f->data) ? f->len : 0] = '\0';
    memmove(c->buf, c->buf + hl + len, c->len - hl - len);
    c->len -= hl + len;
    return true;
}

static void expect_text(client_t *c, const char *want)
{
    assert_true(read_frame(c, &F));
    assert_int_equal(F.op, 1);
    assert_true(F.fin);
    assert_int_equal(F.len, strlen(want));
    assert_memory_equal(F.data, want, F.len);
}

/* The next frame is a close with this code (and reason, when given), and then the server closes
 * the TCP connection. */
static void expect_close(client_t *c, int code, const char *reason)
{
    assert_true(read_frame(c, &F));
    assert_int_equal(F.op, 8);
    assert_true(F.len >= 2);
    assert_int_equal(((uint8_t)F.data[0] << 8) | (uint8_t)F.data[1], code);
    if (reason) {
        assert_int_equal(F.len - 2, strlen(reason));
        assert_memory_equal(F.data + 2, reason, F.len - 2);
    }
    assert_true(peer_closed(c, 3000));
}

/* ---- the handshake --------------------------------------------------------------------------- */

static void test_handshake_accept(void **state)
{
    (void)state;
    quiesce();
    client_t *c = client_open();
    resp_t r;
    handshake(c, "/ws/echo", NULL, &r);
    assert_int_equal(r.status, 101);
    assert_string_equal(find_header(&r, "Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_string_equal(find_header(&r, "Upgrade"), "websocket");
    assert_string_equal(find_header(&r, "Connection"), "Upgrade");
    for (int waited = 0; waited < 2000 && fl_ws_count() < 1; waited += 5)
        sleep_ms(5);
    assert_int_equal(fl_ws_count(), 1);
    client_close(c);
}

static void raw_handshake(const char *headers, resp_t *r)
{
    char req[1024];
    snprintf(req, sizeof(req), "GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", W.port, headers);
    request_once(req, r);
}

static void test_handshake_bad_key(void **state)
{
    (void)state;
    static const char *bad[] = {
        NULL,                       /* missing */
        "abc",                      /* not 16 bytes */
        "AAAAAAAAAAAAAAAAAAAA",     /* 15 bytes */
        "dGhlIHNhbXBsZSBub25jZR==", /* bits past the 128th */
        "dGhlIHNhbXBsZSBub25j*Q==", /* not base64 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char headers[512];
        resp_t r;
        snprintf(headers, sizeof(headers), "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n%s%s%s",
                 bad[i] ? "Sec-WebSocket-Key: " : "", bad[i] ? bad[i] : "", bad[i] ? "\r\n" : "");
        raw_handshake(headers, &r);
        assert_error(&r, 400, "bad_request");
    }
}

static void test_handshake_not_websocket(void **state)
{
    (void)state;
    resp_t r;
    raw_handshake("", &r); /* a plain GET */
    assert_error(&r, 400, "bad_request");
    raw_handshake(
        "Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", &r);
    assert_error(&r, 400, "bad_request");
    char req[512];
    snprintf(req, sizeof(req),
             "HEAD /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: %s\r\n\r\n",
             sample_key);
    request_once(req, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(find_header(&r, "Allow"), "GET");
}

static void test_handshake_version(void **state)
{
    (void)state;
    resp_t r;
    raw_handshake("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                  &r);
    assert_error(&r, 426, "upgrade_required");
    assert_string_equal(find_header(&r, "Sec-WebSocket-Version"), "13");
}

/* The status of a handshake on path with this Origin (NULL: none); a refusal must be 403
 * forbidden_origin. */
static int origin_status(const char *path, const char *origin)
{
    char header[160] = "";
    if (origin)
        snprintf(header, sizeof(header), "Origin: %s\r\n", origin);
    int calls = atomic_load(&accept_calls);
    client_t *c = client_open();
    resp_t r;
    handshake(c, path, header, &r);
    if (r.status != 101)
        assert_error(&r, 403, "forbidden_origin");
    /* and the caller was told which: FL_OK only for a 101 (a refused caller keeps its arg) */
    for (int i = 0; i < 1000 && atomic_load(&accept_calls) == calls; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&accept_calls), calls + 1);
    assert_int_equal(atomic_load(&accept_rc), r.status == 101 ? FL_OK : FL_EPROTO);
    client_close(c);
    return r.status;
}

static void test_handshake_origin(void **state)
{
    (void)state;
    char same[64], other_port[64];
    snprintf(same, sizeof(same), "http://127.0.0.1:%d", W.port);
    snprintf(other_port, sizeof(other_port), "http://127.0.0.1:%d", W.port + 1);
    /* an allowlist: exact origins, any case, blanks around the commas */
    assert_int_equal(origin_status("/ws/echo", "http://evil.example"), 403);
    assert_int_equal(origin_status("/ws/echo", "HTTPS://also.example"), 101);
    assert_int_equal(origin_status("/ws/echo", "http://allowed.example"), 101);
    assert_int_equal(origin_status("/ws/echo", "http://allowed.example.evil"), 403);
    /* the default: same origin only */
    assert_int_equal(origin_status("/ws/same", same), 101);
    assert_int_equal(origin_status("/ws/same", other_port), 403);
    assert_int_equal(origin_status("/ws/same", "http://allowed.example"), 403);
    assert_int_equal(origin_status("/ws/same", "null"), 403);
    /* no Origin: not a browser */
    assert_int_equal(origin_status("/ws/same", NULL), 101);
}

/* ---- messages -------------------------------------------------------------------------------------- */

static void test_echo(void **state)
{
    (void)state;
    client_t *c = ws_open("/ws/echo");
    send_text(c, "hello");
    expect_text(c, "hello");
    char big[1000];
    memset(big, 'x', sizeof(big));
    send_frame(c, 0x81, big, sizeof(big)); /* 16-bit length both ways */
    assert_true(read_frame(c, &F));
    assert_int_equal(F.len, sizeof(big));
    assert_memory_equal(F.data, big, sizeof(big));
    send_frame(c, 0x82, "\x00\x01\x02", 3);
    expect_text(c, "binary:3");
    send_text(c, "");
    expect_text(c, "");
    client_close(c);
}

/* Frames the client sends right behind its handshake arrive with the HTTP connection's leftover. */
static void test_frames_behind_handshake(void **state)
{
    (void)state;
    client_t *c = client_open();
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     sample_key);
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}; /* RFC 5.7 */
    memcpy(req + n, hello, sizeof(hello));
    send_bytes(c, req, (size_t)n + sizeof(hello));
    resp_t r;
    assert_true(read_response(c, &r, false));
    assert_int_equal(r.status, 101);
    expect_text(c, "Hello");
    client_close(c);
}

static void test_query(void **state)
{
    (void)state;
    client_t *c = ws_open("/ws/echo?vsn=2.0.0&token=a%20b+c&empty&token=second");
    send_text(c, "query");
    expect_text(c, "token=a b c vsn=2.0.0 missing=(none)");
    client_close(c);
    c = ws_open("/ws/echo?&&");
    send_text(c, "query");
    expect_text(c, "token=(none) vsn=(none) missing=(none)");
    client_close(c);
}

static void test_fragments_with_ping(void **state)
{
    (void)state;
    client_t *c = ws_open("/ws/echo");
    send_frame(c, 0x01, "Hel", 3); /* text, not final */
    send_frame(c, 0x89, "pp", 2);  /* a ping between the fragments */
    send_frame(c, 0x00, "l", 1);   /* continuation */
    send_frame(c, 0x80, "o", 1);   /* final continuation */
    assert_true(read_frame(c, &F));
    assert_int_equal(F.op, 10); /* pong, same payload */
    assert_int_equal(F.len, 2);
    assert_memory_equal(F.data, "pp", 2);
    expect_text(c, "Hello");
    send_frame(c, 0x8a, "unsolicited", 11); /* a pong nobody asked for is ignored */
    send_text(c, "after");
    expect_text(c, "after");
    client_close(c);
}

static void test_shared_frame(void **state)
{
    (void)state;
    client_t *a = ws_open("/ws/shared"), *b = ws_open("/ws/shared");
    expect_text(a, "shared hello");
    expect_text(b, "shared hello");
    send_text(a, "still echoes");
    expect_text(a, "still echoes");
    client_close(a);
    client_close(b);
}

/* ---- protocol errors: 1002, 1009, 1007 ---------------------------------------------------------- */

/* A client frame of a refused sequence: payload NULL means len bytes of filler. */
typedef struct {
    uint8_t b0; /* FIN, RSV, opcode */
    const char *payload;
    size_t len;
} spec_t;

/* Frame sequences the server must refuse, with the close code it must send. */
typedef struct {
    const char *what;
    int code;
    spec_t frames[3]; /* up to the first with neither payload nor length */
} bad_case_t;

static const bad_case_t bad_frames[] = {
    {"continuation without a message", 1002, {{0x80, "x", 1}}},
    {"reserved data opcode", 1002, {{0x83, "x", 1}}},
    {"reserved control opcode", 1002, {{0x8b, "", 0}}},
    {"RSV1 without an extension", 1002, {{0xc1, "x", 1}}},
    {"ping of 126 bytes", 1002, {{0x89, NULL, 126}}},
    {"fragmented ping", 1002, {{0x09, "p", 1}}},
    {"new message inside a fragmented one", 1002, {{0x01, "a", 1}, {0x81, "b", 1}}},
    {"one-byte close body", 1002, {{0x88, "\x03", 1}}},
    {"close code 1005", 1002, {{0x88, "\x03\xed", 2}}},
    {"close code 999", 1002, {{0x88, "\x03\xe7", 2}}},
    {"fragments past max_message", 1009, {{0x01, NULL, 400}, {0x00, NULL, 400}, {0x80, NULL, 400}}},
    {"one byte past max_message", 1009, {{0x81, NULL, MAX_MESSAGE + 1}}},
    {"invalid UTF-8", 1007, {{0x81, "\xc3\x28", 2}}},
    {"invalid UTF-8 across fragments", 1007, {{0x01, "ok \xe2\x82", 5}, {0x80, "(", 1}}},
    {"UTF-8 cut short at the end", 1007, {{0x81, "end \xe2\x82", 6}}},
    {"invalid UTF-8 in a close reason", 1007, {{0x88, "\x03\xe8\xff\xfe", 4}}},
};

/* Refused from the bytes of a header alone (sent as they are: no payload follows). */
static const struct {
    const char *what;
    int code;
    uint8_t raw[14];
    size_t n;
} bad_headers[] = {
    {"unmasked client frame", 1002, {0x81, 0x02, 'h', 'i'}, 4},
    {"length 5 in the 16-bit form", 1002, {0x81, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4}, 8},
    {"2 GiB announced", 1009, {0x81, 0x80 | 127, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4}, 14},
};

/* Sends a refused sequence on a fresh connection: the server must close with code (and say so
 * in its own on_close). */
static void expect_refused(const char *what, int code, const bad_case_t *frames, const uint8_t *raw, size_t n)
{
    quiesce();
    int before = closes_now();
    client_t *c = ws_open("/ws/echo");
    static char filler[MAX_MESSAGE + 1];
    memset(filler, 'a', sizeof(filler));
    for (int i = 0; frames && i < 3 && (frames->frames[i].payload || frames->frames[i].len); i++) {
        const spec_t *f = &frames->frames[i];
        send_frame(c, f->b0, f->payload ? f->payload : filler, f->len);
    }
    if (raw)
        send_bytes(c, (const char *)raw, n);
    assert_true(read_frame(c, &F));
    if (F.op != 8 || F.len < 2 || (((uint8_t)F.data[0] << 8) | (uint8_t)F.data[1]) != code)
        fail_msg("%s: expected a close with %d, got opcode %d (%zu bytes)", what, code, F.op, F.len);
    assert_true(peer_closed(c, 3000));
    client_close(c);
    assert_int_equal(wait_server_close(before + 1, NULL, 0), code);
}

static void test_refused(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_frames) / sizeof(bad_frames[0]); i++)
        expect_refused(bad_frames[i].what, bad_frames[i].code, &bad_frames[i], NULL, 0);
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++)
        expect_refused(bad_headers[i].what, bad_headers[i].code, NULL, bad_headers[i].raw, bad_headers[i].n);
}

/* At the limits but within them: a message of exactly max_message, and valid UTF-8 split inside
 * a character. */
static void test_within_limits(void **state)
{
    (void)state;
    client_t *c = ws_open("/ws/echo");
    char max[MAX_MESSAGE];
    memset(max, 'm', sizeof(max));
    send_frame(c, 0x01, max, 24);
    send_frame(c, 0x80, max + 24, sizeof(max) - 24);
    assert_true(read_frame(c, &F));
    assert_int_equal(F.len, sizeof(max));
    assert_memory_equal(F.data, max, sizeof(max));
    send_frame(c, 0x01, "\xe2\x82", 2);
    send_frame(c, 0x80, "\xac", 1);
    expect_text(c, "\xe2\x82\xac");
    client_close(c);
}

/* ---- closing -------------------------------------------------------------------------------------- */

static void test_client_close(void **state)
{
    (void)state;
    quiesce();
    int before = closes_now();
    client_t *c = ws_open("/ws/echo");
    send_frame(c, 0x88,
               "\x03\xe8"
               "bye",
               5);
    expect_close(c, 1000, "bye");
    client_close(c);
    char reason[128];
    assert_int_equal(wait_server_close(before + 1, reason, sizeof(reason)), 1000);
    assert_string_equal(reason, "bye");

    c = ws_open("/ws/echo"); /* a close without a code is answered without one */
    send_frame(c, 0x88, "", 0);
    assert_true(read_frame(c, &F));
    assert_int_equal(F.op, 8);
    assert_int_equal(F.len, 0);
    assert_true(peer_closed(c, 3000));
    client_close(c);
    assert_int_equal(wait_server_close(before + 2, NULL, 0), 1005);
}

static void test_server_close(void **state)
{
    (void)state;
    quiesce();
    int before = closes_now();
    client_t *c = ws_open("/ws/echo");
    send_text(c, "bye");
    expect_close(c, 1000, "requested");
    client_close(c);
    char reason[128];
    assert_int_equal(wait_server_close(before + 1, reason, sizeof(reason)), 1000);
    assert_string_equal(reason, "requested");
}

static void test_dropped(void **state)
{
    (void)state;
    quiesce();
    int before = closes_now();
    client_t *c = ws_open("/ws/echo");
    send_text(c, "hi");
    expect_text(c, "hi");
    client_close(c); /* no close frame */
    assert_int_equal(wait_server_close(before + 1, NULL, 0), 1006);
}

/* A handler that accepts later: fine while the client waits; when the client has gone (reset)
 * meanwhile, on_close still comes, once, with 1006, so the owner can free what it passed. */
static void test_accept_later(void **state)
{
    (void)state;
    quiesce();
    client_t *c = ws_open("/ws/slow");
    send_text(c, "later");
    expect_text(c, "later");
    client_close(c);
    quiesce();

    int before = closes_now();
    c = client_open();
    char req[512];
    snprintf(req, sizeof(req),
             "GET /ws/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n",
             sample_key);
    send_str(c, req);
    sleep_ms(20);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    client_close(c); /* a reset while the handler waits */
    assert_int_equal(wait_server_close(before + 1, NULL, 0), 1006);
    atomic_fetch_add(&opened, 1); /* it never opened, but it did close: keep quiesce's count even */
    wait_connections(0, 2000);
    assert_int_equal(fl_http_server_connections(W.srv), 0);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    client_t *c = ws_open("/ws/echo?idle=300");
    int64_t start = fl_now_mono_ms();
    send_text(c, "keep"); /* input restarts the timer */
    expect_text(c, "keep");
    expect_close(c, 1001, "idle");
    assert_true(fl_now_mono_ms() - start >= 250);
    client_close(c);
}

static void test_close_all(void **state)
{
    (void)state;
    quiesce();
    client_t *a = ws_open("/ws/echo"), *b = ws_open("/ws/echo");
    send_text(a, "a");
    expect_text(a, "a");
    send_text(b, "b");
    expect_text(b, "b");
    assert_int_equal(fl_ws_count(), 2);
    fl_ws_close_all(1001, "shutting down");
    expect_close(a, 1001, "shutting down");
    expect_close(b, 1001, "shutting down");
    client_close(a);
    client_close(b);
    for (int waited = 0; waited < 3000 && fl_ws_count() > 0; waited += 5)
        sleep_ms(5);
    assert_int_equal(fl_ws_count(), 0);
}

/* A client that does not read while the server sends: sends are refused with FL_EFULL once
 * max_output is queued, memory stays bounded, and reading again brings on_drain. */
static void test_output_bound(void **state)
{
    (void)state;
    atomic_store(&flood_done, 0);
    atomic_store(&drained, 0);
    client_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = connect_fd(W.port, 4096);
    assert_true(c->fd >= 0);
    resp_t r;
    handshake(c, "/ws/echo", NULL, &r);
    assert_int_equal(r.status, 101);
    send_text(c, "flood");
    for (int waited = 0; waited < 5000 && !atomic_load(&flood_done); waited += 5)
        sleep_ms(5);
    assert_true(atomic_load(&flood_done));
    assert_int_equal(atomic_load(&flood_rc), FL_EFULL);
    assert_true(atomic_load(&flood_pending) <= MAX_OUTPUT);
    assert_true(atomic_load(&flood_pending) > MAX_OUTPUT - FLOOD_CHUNK - 16);
    int sent = atomic_load(&flood_sent);
    assert_true(sent > 0);
    for (int i = 0; i < sent; i++) { /* everything that was accepted arrives, whole */
        assert_true(read_frame(c, &F));
        assert_int_equal(F.op, 1);
        assert_int_equal(F.len, FLOOD_CHUNK);
    }
    for (int waited = 0; waited < 2000 && atomic_load(&drained) == 0; waited += 5)
        sleep_ms(5);
    assert_true(atomic_load(&drained) > 0);
    send_text(c, "alive");
    expect_text(c, "alive");
    client_close(c);
}

/* ---- the stream on its own ------------------------------------------------------------------------ */

typedef struct {
    fl_stream_t *s;
    int fd;   /* the server side, handed to the stream */
    int peer; /* the test's side */
    size_t max_output;
    int idle_ms, sndbuf;
    struct evbuffer *leftover;
    atomic_int closed, reason, drains;
    atomic_bool in_call; /* a test task is inside a stream call */
    atomic_bool close_inside_call;
    pthread_mutex_t lock;
    char data[256];
    size_t data_len;
} sx_t;

static void sx_data(fl_stream_t *s, struct evbuffer *in, void *arg)
{
    (void)s;
    sx_t *x = arg;
    pthread_mutex_lock(&x->lock);
    size_t n = evbuffer_get_length(in);
    if (n > sizeof(x->data) - 1 - x->data_len)
        n = sizeof(x->data) - 1 - x->data_len;
    evbuffer_remove(in, x->data + x->data_len, n);
    x->data_len += n;
    x->data[x->data_len] = '\0';
    pthread_mutex_unlock(&x->lock);
}

static void sx_drain(fl_stream_t *s, void *arg)
{
    (void)s;
    atomic_fetch_add(&((sx_t *)arg)->drains, 1);
}

static void sx_close(fl_stream_t *s, int reason, void *arg)
{
    (void)s;
    sx_t *x = arg;
    if (atomic_load(&x->in_call))
        atomic_store(&x->close_inside_call, true);
    atomic_store(&x->reason, reason);
    atomic_store(&x->closed, 1);
}

static atomic_int task_rc; /* what a task on the shard saw, checked on the test's thread */
static atomic_long task_pending;

static const fl_stream_handlers_t sx_handlers = {.on_data = sx_data, .on_drain = sx_drain, .on_close = sx_close};

typedef struct {
    void (*fn)(sx_t *x, void *arg);
    sx_t *x;
    void *arg;
    atomic_int done;
} task_t;

static void run_task(void *arg)
{
    task_t *t = arg;
    atomic_store(&t->x->in_call, true);
    t->fn(t->x, t->arg);
    atomic_store(&t->x->in_call, false);
    atomic_store(&t->done, 1);
}

/* Runs fn on shard 0 (where the stream lives) and waits for it. */
static void on_shard(sx_t *x, void (*fn)(sx_t *x, void *arg), void *arg)
{
    task_t t = {.fn = fn, .x = x, .arg = arg};
    assert_int_equal(fl_shard_post(fl_runtime_shard(W.rt, 0), run_task, &t), FL_OK);
    for (int waited = 0; waited < 5000 && !atomic_load(&t.done); waited++)
        sleep_ms(1);
    assert_true(atomic_load(&t.done));
}

static void wait_closed(sx_t *x, int reason)
{
    for (int waited = 0; waited < 5000 && !atomic_load(&x->closed); waited += 2)
        sleep_ms(2);
    assert_true(atomic_load(&x->closed));
    assert_int_equal(atomic_load(&x->reason), reason);
    assert_false(atomic_load(&x->close_inside_call));
}

static void sx_open(sx_t *x, void *arg)
{
    (void)arg;
    fl_stream_opts_t o = {.max_output = x->max_output, .idle_timeout_ms = x->idle_ms, .sndbuf = x->sndbuf};
    int rc = fl_stream_open(fl_runtime_shard(W.rt, 0), x->fd, x->leftover, NULL, &o, &sx_handlers, x, &x->s);
    if (rc == FL_OK && (fl_stream_shard(x->s) != fl_runtime_shard(W.rt, 0) || strncmp(fl_stream_peer(x->s), "127.0.0.1:", 10) != 0))
        rc = FL_ESTATE;
    atomic_store(&task_rc, rc);
}

/* A connected pair of TCP sockets on 127.0.0.1 and a stream on the server side. */
static sx_t *sx_new(size_t max_output, int idle_ms, int peer_rcvbuf, const char *leftover, int sndbuf)
{
    sx_t *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    pthread_mutex_init(&x->lock, NULL);
    x->max_output = max_output;
    x->idle_ms = idle_ms;
    x->sndbuf = sndbuf;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t salen = sizeof(sa);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &salen), 0);
    x->peer = connect_fd(ntohs(sa.sin_port), peer_rcvbuf);
    assert_true(x->peer >= 0);
    x->fd = accept4(l, NULL, NULL, SOCK_CLOEXEC); /* blocking: the stream makes it non-blocking */
    assert_true(x->fd >= 0);
    close(l);
    if (leftover) {
        x->leftover = evbuffer_new();
        evbuffer_add(x->leftover, leftover, strlen(leftover));
    }
    on_shard(x, sx_open, NULL);
    assert_int_equal(atomic_load(&task_rc), FL_OK);
    return x;
}

static void sx_free(sx_t *x)
{
    close(x->peer);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

static void read_exactly(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        assert_true(r > 0);
        got += (size_t)r;
    }
}

static bool at_eof(int fd)
{
    char b;
    return recv(fd, &b, 1, 0) == 0;
}

static void sx_write_hello_blob_close(sx_t *x, void *arg)
{
    (void)arg;
    int rc = fl_stream_write(x->s, "hello ", 6);
    fl_blob_t *b = fl_blob_from("shared world", 12);
    if (rc == FL_OK)
        rc = fl_stream_write_blob(x->s, b);
    fl_blob_unref(b); /* the stream holds its own reference */
    fl_stream_close(x->s);
    if (rc == FL_OK && fl_stream_write(x->s, "late", 4) != FL_ECLOSED)
        rc = FL_ESTATE;
    atomic_store(&task_rc, rc);
}

static void test_stream_write_close(void **state)
{
    (void)state;
    sx_t *x = sx_new(0, 0, 0, NULL, 0);
    on_shard(x, sx_write_hello_blob_close, NULL);
    assert_int_equal(atomic_load(&task_rc), FL_OK);
    char buf[32] = "";
    read_exactly(x->peer, buf, 18);
    assert_memory_equal(buf, "hello shared world", 18);
    assert_true(at_eof(x->peer));
    wait_closed(x, FL_OK);
    sx_free(x);
}

static fl_blob_t *big_blob;

static void sx_write_big_blob(sx_t *x, void *arg)
{
    (void)arg;
    atomic_store(&task_rc, fl_stream_write_blob(x->s, big_blob));
    atomic_store(&task_pending, (long)fl_stream_pending(x->s));
    fl_blob_unref(big_blob); /* gone on our side: the stream's reference keeps the bytes */
    big_blob = NULL;
    fl_stream_close(x->s);
}

static void test_stream_blob_outlives_caller(void **state)
{
    (void)state;
    size_t n = 8 * 1024 * 1024;
    sx_t *x = sx_new(2 * n, 0, 4096, NULL, 0);
    big_blob = fl_blob_new(n);
    for (size_t i = 0; i < n; i++)
        fl_blob_data(big_blob)[i] = (char)(i * 7 + i / 251);
    on_shard(x, sx_write_big_blob, NULL);
    assert_int_equal(atomic_load(&task_rc), FL_OK);
    assert_true(atomic_load(&task_pending) > 0); /* the socket could not take it all at once */
    char *buf = malloc(n);
    read_exactly(x->peer, buf, n);
    for (size_t i = 0; i < n; i++)
        if (buf[i] != (char)(i * 7 + i / 251))
            fail_msg("byte %zu differs", i);
    free(buf);
    assert_true(at_eof(x->peer));
    wait_closed(x, FL_OK);
    sx_free(x);
}

static void sx_fill(sx_t *x, void *arg)
{
    (void)arg;
    char chunk[8192];
    memset(chunk, 'z', sizeof(chunk));
    int rc, i = 0;
    while ((rc = fl_stream_write(x->s, chunk, sizeof(chunk))) == FL_OK && i < 10000)
        i++;
    atomic_store(&task_rc, rc);
    atomic_store(&task_pending, (long)fl_stream_pending(x->s));
}

static void sx_abort(sx_t *x, void *arg)
{
    (void)arg;
    fl_stream_abort(x->s);
    atomic_store(&task_rc, fl_stream_write(x->s, "x", 1));
}

static void test_stream_efull_drain_abort(void **state)
{
    (void)state;
    sx_t *x = sx_new(64 * 1024, 0, 4096, NULL, 4096);
    int sndbuf = 0;
    socklen_t len = sizeof(sndbuf);
    assert_int_equal(getsockopt(x->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
    assert_true(sndbuf > 0 && sndbuf < 16384); /* the option took (Linux doubles it), not the default */
    on_shard(x, sx_fill, NULL);
    assert_int_equal(atomic_load(&task_rc), FL_EFULL);
    long pending = atomic_load(&task_pending);
    assert_true(pending <= 64 * 1024 && pending > 64 * 1024 - 8192);
    char *buf = malloc(1 << 20);
    size_t got = 0;
    for (int waited = 0; waited < 5000 && atomic_load(&x->drains) == 0; waited += 2) {
        ssize_t r = recv(x->peer, buf, 1 << 20, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        else
            sleep_ms(2);
    }
    assert_true(atomic_load(&x->drains) > 0);
    free(buf);
    assert_true(got > 0);
    on_shard(x, sx_abort, NULL);
    assert_int_equal(atomic_load(&task_rc), FL_ECLOSED);
    wait_closed(x, FL_OK);
    sx_free(x);
}

static void test_stream_peer_gone(void **state)
{
    (void)state;
    sx_t *x = sx_new(0, 0, 0, "left ", 0);
    send(x->peer, "over", 4, MSG_NOSIGNAL);
    for (int waited = 0; waited < 2000; waited += 2) {
        pthread_mutex_lock(&x->lock);
        bool done = x->data_len == 9;
        pthread_mutex_unlock(&x->lock);
        if (done)
            break;
        sleep_ms(2);
    }
    pthread_mutex_lock(&x->lock);
    assert_string_equal(x->data, "left over"); /* the leftover first, then what came after */
    pthread_mutex_unlock(&x->lock);
    shutdown(x->peer, SHUT_WR);
    wait_closed(x, FL_EIO);
    sx_free(x);
}

static void test_stream_idle(void **state)
{
    (void)state;
    int64_t start = fl_now_mono_ms();
    sx_t *x = sx_new(0, 150, 0, NULL, 0);
    wait_closed(x, FL_ETIMEDOUT);
    assert_true(fl_now_mono_ms() - start >= 140);
    assert_true(at_eof(x->peer));
    sx_free(x);
}

static void test_stream_open_after_client_left(void **state)
{
    (void)state;
    fl_stream_t *s = NULL;
    fl_stream_opts_t o = {0};
    assert_int_equal(fl_stream_open(fl_runtime_shard(W.rt, 0), -1, NULL, NULL, &o, &sx_handlers, NULL, &s), FL_ECLOSED);
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_accept),
        cmocka_unit_test(test_handshake_bad_key),
        cmocka_unit_test(test_handshake_not_websocket),
        cmocka_unit_test(test_handshake_version),
        cmocka_unit_test(test_handshake_origin),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_frames_behind_handshake),
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_fragments_with_ping),
        cmocka_unit_test(test_shared_frame),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_within_limits),
        cmocka_unit_test(test_client_close),
        cmocka_unit_test(test_server_close),
        cmocka_unit_test(test_dropped),
        cmocka_unit_test(test_accept_later),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_close_all),
        cmocka_unit_test(test_output_bound),
        cmocka_unit_test(test_stream_write_close),
        cmocka_unit_test(test_stream_blob_outlives_caller),
        cmocka_unit_test(test_stream_efull_drain_abort),
        cmocka_unit_test(test_stream_peer_gone),
        cmocka_unit_test(test_stream_idle),
        cmocka_unit_test(test_stream_open_after_client_left),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
