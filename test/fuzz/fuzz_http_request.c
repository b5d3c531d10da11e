/*
 * libFuzzer harness for lib/http's request path without sockets: arbitrary bytes go through the
 * parser (in chunks whose size the first input byte picks, so every callback gets split), each
 * complete request through routing, parameter/query decoding and the accessors, and each error
 * through the JSON error body. Invariants that must hold for any input are checked with traps.
 */
#include "http/http_internal.h"

#include <stdint.h>
#include <string.h>

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (!(cond))                                                                                                               \
            __builtin_trap();                                                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fl_config_t cfg;
static fl_http_router_t *router;

static void noop(fl_http_req_t *req, void *arg)
{
    (void)req;
    (void)arg;
}

static void setup(void)
{
    fl_log_set_level(FL_LOG_OFF);
    cfg.max_header_bytes = 2048;
    cfg.max_headers = 16;
    cfg.max_body_bytes = 4096;
    cfg.access_log = false;
    router = fl_http_router_new();
    CHECK(router != NULL);
    CHECK(fl_http_router_add(router, FL_HTTP_GET, "/", noop, NULL, 0) == FL_OK);
    CHECK(fl_http_router_add(router, FL_HTTP_GET | FL_HTTP_POST, "/a/{x}/b", noop, NULL, 0) == FL_OK);
    CHECK(fl_http_router_add(router, FL_HTTP_DELETE, "/a/lit/b", noop, NULL, 0) == FL_OK);
    CHECK(fl_http_router_add(router, FL_HTTP_GET, "/api/v1/fleets/{fleet_id}/vehicles/{vehicle_id}/track", noop, NULL, 0) == FL_OK);
    CHECK(fl_http_router_add(router, FL_HTTP_POST | FL_HTTP_PUT, "/json", noop, NULL, FL_ROUTE_JSON_BODY) == FL_OK);
    CHECK(fl_http_router_add(router, FL_HTTP_GET, "/ws", noop, NULL, 0) == FL_OK);
}

/* A JSON string body must never carry a raw control character or an unescaped quote. */
static void check_error_body(const char *code, const char *msg)
{
    char body[256];
    size_t n = resp_error_body(body, sizeof(body), code, msg);
    CHECK(n > 0 && n <= sizeof(body));
    CHECK(memcmp(body, "{\"error\":{\"code\":\"", 18) == 0);
    CHECK(memcmp(body + n - 3, "\"}}", 3) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)body[i] >= 0x20);
}

static void on_request(fl_http_req_t *req)
{
    req->state = RS_HANDLER;
    int status = 0, allow = 0;
    const char *code = NULL, *msg = NULL;
    const endpoint_t *ep = req_route(req, router, &status, &code, &msg, &allow);
    if (ep) {
        for (unsigned i = 0; i < ep->nparams; i++) {
            const char *v = fl_http_req_param(req, ep->names[i]);
            CHECK(v != NULL && v[0] != '\0');
        }
    } else {
        CHECK(status == 404 || status == 405 || status == 415 || status == 503);
        CHECK((status == 405) == (allow != 0) || status == 415 || status == 503);
        char methods[96];
        router_allow_string(allow, methods, sizeof(methods));
        check_error_body(code, msg);
    }
    const char *id = fl_http_req_id(req);
    size_t idlen = strlen(id);
    CHECK(idlen >= 1 && idlen <= 128);
    CHECK(fl_http_req_path(req) != NULL);
    CHECK(fl_http_req_method_name(req) != NULL);
    (void)fl_http_req_query(req, "q");
    (void)fl_http_req_query(req, "x y");
    (void)fl_http_req_query_string(req);
    (void)fl_http_req_header(req, "host");
    (void)fl_http_req_header(req, "Content-Type");
    (void)fl_http_req_wants_upgrade(req);
    size_t blen;
    const char *body = fl_http_req_body(req, &blen);
    CHECK(blen <= (size_t)cfg.max_body_bytes);
    CHECK(body[blen] == '\0');
    CHECK(fl_http_set_header(req, "X-Fuzz", fl_http_req_path(req)) != FL_ESTATE);
    resp_send(req, 200, NULL, NULL, 0, true, NULL, NULL, NULL); /* no socket: just finishes it */
    CHECK(req->state == RS_ANSWERED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (router == NULL)
        setup();
    if (size == 0)
        return 0;
    /* first byte: feed 1..32 bytes at a time, or (0xe0 and up) everything at once */
    size_t step = data[0] >= 0xe0 ? SIZE_MAX : (size_t)(data[0] % 32) + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;

    fl_http_req_t req;
    if (req_init(&req, &cfg) != FL_OK)
        return 0;
    size_t off = 0;
    for (int messages = 0; off < len && messages < 64;) {
        size_t avail = len - off < step ? len - off : step;
        int event;
        size_t used = req_feed(&req, in + off, avail, &event);
        CHECK(used <= avail);
        off += used;
        if (event == FEED_MORE) {
            CHECK(used == avail);
            continue;
        }
        if (event == FEED_ERROR) {
            CHECK(req.err_status >= 400 && req.err_status <= 599 && req.err_code && req.err_msg);
            check_error_body(req.err_code, req.err_msg);
            break;
        }
        CHECK(req.phase == PH_DONE);
        bool upgrade = req.hp.upgrade;
        on_request(&req);
        messages++;
        req_next(&req);
        if (upgrade)
            break; /* the rest of the bytes belong to another protocol */
    }
    /* the request's own text is a fine message too */
    char msg[64];
    size_t n = len < sizeof(msg) - 1 ? len : sizeof(msg) - 1;
    memcpy(msg, in, n);
    msg[n] = '\0';
    check_error_body(msg, msg);
    req_cleanup(&req);
    return 0;
}
