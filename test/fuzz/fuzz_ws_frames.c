/*
 * libFuzzer harness for the WebSocket transport's incoming side: arbitrary bytes arrive on an
 * opened WebSocket (as the bytes a client sent behind its handshake), through the frame checks,
 * wslay and the echoing handler, over a real socket pair driven by the shard's event base on this
 * thread. Invariants: a text message is valid UTF-8, no message is larger than max_message, the
 * connection always ends with exactly one on_close and a code a server may report.
 */
#include "http/http_internal.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (!(cond))                                                                                                               \
            __builtin_trap();                                                                                                      \
    } while (0)

#define MAX_MESSAGE 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fl_runtime_t *rt;
static fl_shard_t *shard;
static int closes;

/* Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF), written apart from
 * wslay's decoder so the two check each other. */
static bool utf8_valid(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (len == 0 || i + len > n)
            return false;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
        if ((len > 1 && cp < least[len]) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        i += len;
    }
    return true;
}

static void on_message(fl_ws_t *ws, const char *msg, size_t len, bool binary, void *arg)
{
    (void)arg;
    CHECK(len <= MAX_MESSAGE);
    CHECK(binary || utf8_valid((const unsigned char *)msg, len));
    if (len > 0 && msg[0] == '!')
        fl_ws_close(ws, 1000, "asked to");
    else
        (void)fl_ws_send_text(ws, msg, len);
}

static void on_close(fl_ws_t *ws, int code, const char *reason, void *arg)
{
    (void)ws;
    (void)reason;
    (void)arg;
    CHECK((code >= 1000 && code <= 1003) || (code >= 1005 && code <= 1014) || (code >= 3000 && code <= 4999));
    closes++;
}

static const fl_ws_handlers_t handlers = {.on_message = on_message, .on_close = on_close};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (rt == NULL) {
        fl_log_set_level(FL_LOG_OFF);
        CHECK(fl_runtime_new(1, &rt) == FL_OK); /* never started: its base runs on this thread */
        shard = fl_runtime_shard(rt, 0);
    }
    struct event_base *base = fl_shard_base(shard);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    fl_ws_opts_t o = {.max_message = MAX_MESSAGE, .max_output = 16 * 1024};
    fl_ws_t *ws = ws_new(shard, NULL, &o, &handlers, NULL);
    struct evbuffer *in = evbuffer_new();
    CHECK(ws != NULL && in != NULL && evbuffer_add(in, data, size) == 0);
    closes = 0;
    ws_upgraded(shard, sv[0], in, ws);
    char sink[65536];
    for (int i = 0; i < 4 && closes == 0; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (recv(sv[1], sink, sizeof(sink), 0) > 0) /* the client reads what the server sent */
            ;
    }
    close(sv[1]);
    for (int i = 0; i < 1000 && closes == 0; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(closes == 1);
    CHECK(fl_ws_count() == 0);
    return 0;
}
