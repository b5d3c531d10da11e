/*
 * WebSocket (RFC 6455) on a stream: the opening handshake, incoming frames through wslay, and
 * outgoing frames built here, so that shared frames (fl_ws_frame_text), copied messages and
 * wslay's control frames all go into the stream's one output, in order, never interleaved.
 *
 * Incoming bytes: each frame's header is checked here first, for the rules wslay leaves to its
 * user or answers with a close frame that carries no code (RSV bits, reserved opcodes, masking,
 * control frames fragmented or over 125 bytes, a one-byte close body, lengths not in their
 * shortest form, a continuation without a message, a new message inside a fragmented one) and
 * for the message size, refused from the header before the payload is buffered. The whole frame
 * then goes to wslay, which unmasks it, reassembles messages, checks UTF-8 (text and close
 * reasons: 1007) and close codes (1002), answers pings and echoes the close. Each
 * wslay_event_recv call gets exactly one frame, so a control frame always sits whole in wslay's
 * read buffer (its close-reason check counts from the start of each chunk).
 *
 * Memory: a wslay context (a 4 KiB read buffer, queues, message chunks) costs several times what
 * everything else of an idle connection does (measured: 9.9 KiB against 1.2 KiB a connection, see
 * docs/architecture.md), so it exists only while frames are read or a fragmented message is open:
 * it is made for a batch of frames and freed when the batch ends on a message boundary.
 */
#include "http_internal.h"

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#define DEFAULT_MAX_MESSAGE (64 * 1024)
#define MAX_REASON          123 /* a close frame's body: 2 bytes of code and at most 123 of reason */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PONG = 10 };
enum { FRAME_MORE, FRAME_READY, FRAME_BAD };

typedef struct ws_shard ws_shard_t;

struct fl_ws {
    fl_ws_t *prev, *next; /* the shard's open WebSockets */
    ws_shard_t *list;     /* NULL until open, and again once ended */
    fl_shard_t *shard;
    fl_http_server_t *srv;
    fl_stream_t *stream;           /* NULL until the hand-over */
    wslay_event_context_ptr wslay; /* while frames are read (see above) */
    struct evbuffer *in;           /* during on_data: where wslay's recv callback reads */
    size_t feed;                   /* bytes of the current frame wslay may still read */
    fl_ws_handlers_t h;
    void *arg;
    size_t max_message, max_output;
    int idle_ms, sndbuf;
    uint64_t frag_len; /* bytes of the open fragmented message so far */
    char *query;       /* the upgrade request's query as decoded "name\0value\0" pairs */
    size_t query_len;
    char *close_reason;
    int close_code;
    bool frag_open;
    bool closing; /* a close frame went out (ours, or wslay's answer): nothing more is sent or read */
};

/* Each shard's open WebSockets, for fl_ws_close_all. An entry exists while its shard has any, so
 * no entry outlives its runtime. The entries list is under the lock; an entry's members are
 * touched only by its shard's thread. */
struct ws_shard {
    ws_shard_t *next;
    fl_shard_t *shard;
    fl_ws_t *head;
};

static pthread_mutex_t shards_lock = PTHREAD_MUTEX_INITIALIZER;
static ws_shard_t *shards;
static atomic_int n_open;

/* ---- helpers ------------------------------------------------------------------------------------ */

/* Whether a comma-separated list (a header's tokens, the origins setting) holds item, ignoring
 * case and the blanks around each element. */
static bool list_contains(const char *list, const char *item, size_t len)
{
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ","), m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == len && m > 0 && strncasecmp(p, item, len) == 0)
            return true;
        p += n;
    }
    return false;
}

/* A server frame's header: FIN, opcode, no mask, the length in its shortest form. */
static size_t frame_header(uint8_t h[10], unsigned opcode, size_t len)
{
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static bool close_code_sendable(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/* How much of reason fits a close frame, cut before a UTF-8 character that would not fit whole. */
static size_t reason_fit(const char *reason)
{
    size_t n = strlen(reason);
    if (n <= MAX_REASON)
        return n;
    n = MAX_REASON;
    while (n > 0 && ((unsigned char)reason[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static void ws_free(fl_ws_t *ws)
{
    if (ws->wslay)
        wslay_event_context_free(ws->wslay);
    fl_free(ws->query);
    fl_free(ws->close_reason);
    fl_free(ws);
}

/* ---- the shard lists ----------------------------------------------------------------------------- */

static ws_shard_t *find_shard_locked(const fl_shard_t *shard)
{
    ws_shard_t *l = shards;
    while (l && l->shard != shard)
        l = l->next;
    return l;
}

static int list_add(fl_ws_t *ws)
{
    pthread_mutex_lock(&shards_lock);
    ws_shard_t *l = find_shard_locked(ws->shard);
    if (l == NULL && (l = fl_calloc(1, sizeof(*l))) != NULL) {
        l->shard = ws->shard;
        l->next = shards;
        shards = l;
    }
    pthread_mutex_unlock(&shards_lock);
    if (l == NULL)
        return FL_ENOMEM;
    ws->list = l;
    ws->next = l->head;
    if (l->head)
        l->head->prev = ws;
    l->head = ws;
    atomic_fetch_add_explicit(&n_open, 1, memory_order_relaxed);
    return FL_OK;
}

static void list_remove(fl_ws_t *ws)
{
    ws_shard_t *l = ws->list;
    if (l == NULL)
        return;
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        l->head = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    ws->list = NULL;
    atomic_fetch_sub_explicit(&n_open, 1, memory_order_relaxed);
    if (l->head)
        return;
    pthread_mutex_lock(&shards_lock);
    for (ws_shard_t **p = &shards; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    pthread_mutex_unlock(&shards_lock);
    fl_free(l);
}

/* The end of a WebSocket: on_close, exactly once, then the memory. */
static void ws_end(fl_ws_t *ws, int code, const char *reason)
{
    list_remove(ws);
    fl_log(FL_LOG_DEBUG, "ws.closed", FL_INT("code", code), FL_STR("reason", reason),
           FL_STR("peer", ws->stream ? fl_stream_peer(ws->stream) : ""));
    if (ws->h.on_close)
        ws->h.on_close(ws, code, reason, ws->arg);
    ws_free(ws);
}

/* ---- closing ------------------------------------------------------------------------------------- */

/* Our close frame, then the stream's closing linger, in which the client answers and closes. */
static void send_close(fl_ws_t *ws, int code, const char *reason)
{
    if (ws->closing || ws->stream == NULL)
        return;
    if (!close_code_sendable(code))
        code = 1000;
    reason = reason ? reason : "";
    size_t rlen = reason_fit(reason);
    uint8_t head[10], body[2 + MAX_REASON];
    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    memcpy(body + 2, reason, rlen);
    size_t hlen = frame_header(head, OP_CLOSE, 2 + rlen);
    ws->closing = true;
    ws->close_code = code;
    ws->close_reason = fl_strndup(reason, rlen);
    if (ws->wslay) /* inside on_message: wslay reads nothing more */
        wslay_event_shutdown_read(ws->wslay);
    if (stream_write_parts(ws->stream, head, hlen, body, 2 + rlen, true) != FL_OK) {
        fl_stream_abort(ws->stream);
        return;
    }
    fl_stream_close(ws->stream);
}

void fl_ws_close(fl_ws_t *ws, int code, const char *reason)
{
    if (ws)
        send_close(ws, code, reason);
}

/* ---- incoming frames ----------------------------------------------------------------------------- */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    (void)flags;
    fl_ws_t *ws = user;
    size_t n = len < ws->feed ? len : ws->feed;
    int got = n > 0 && ws->in ? evbuffer_remove(ws->in, buf, n) : 0;
    if (got <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    ws->feed -= (size_t)got;
    return got;
}

/* wslay's pongs and close answers: always taken whole, into the same output as everything else. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user)
{
    (void)flags;
    fl_ws_t *ws = user;
    if (ws->closing) /* our close frame went out: nothing may follow it */
        return (ssize_t)len;
    if (stream_write_parts(ws->stream, data, len, NULL, 0, true) != FL_OK) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *m, void *user)
{
    (void)ctx;
    fl_ws_t *ws = user;
    if (ws->closing)
        return;
    if (m->opcode == WSLAY_TEXT_FRAME || m->opcode == WSLAY_BINARY_FRAME) {
        if (ws->h.on_message)
            ws->h.on_message(ws, m->msg ? (const char *)m->msg : "", m->msg_length, m->opcode == WSLAY_BINARY_FRAME, ws->arg);
    } else if (m->opcode == WSLAY_CONNECTION_CLOSE) {
        /* wslay has queued the echo; the code it checked */
        ws->close_code = m->status_code ? m->status_code : 1005;
        if (m->msg_length > 2)
            ws->close_reason = fl_strndup((const char *)m->msg + 2, m->msg_length - 2);
    }
}

static const struct wslay_event_callbacks wslay_callbacks = {
    .recv_callback = recv_cb, .send_callback = send_cb, .on_msg_recv_callback = msg_cb};

/* Checks the frame at the head of in from its header: FRAME_READY when it is all there (*size
 * bytes), FRAME_MORE when more must come, FRAME_BAD with the close code and why. */
static int check_frame(fl_ws_t *ws, struct evbuffer *in, size_t *size, int *code, const char **why)
{
    uint8_t h[14];
    size_t avail = evbuffer_get_length(in);
    if (avail < 2)
        return FRAME_MORE;
    evbuffer_copyout(in, h, avail < sizeof(h) ? avail : sizeof(h));
    bool fin = h[0] & 0x80, control = h[0] & 0x08;
    unsigned op = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    *code = 1002;
    *why = NULL;
    if (h[0] & 0x70)
        *why = "reserved bits set without an extension";
    else if ((op > OP_BINARY && op < OP_CLOSE) || op > OP_PONG)
        *why = "reserved opcode";
    else if (!(h[1] & 0x80))
        *why = "client frames must be masked";
    else if (control && (!fin || len > 125))
        *why = "control frames must not be fragmented nor longer than 125 bytes";
    else if (op == OP_CLOSE && len == 1)
        *why = "a close frame's body starts with a two-byte code";
    else if (!control && op == OP_CONT && !ws->frag_open)
        *why = "continuation frame without a message to continue";
    else if (!control && op != OP_CONT && ws->frag_open)
        *why = "new message before the fragmented one ended";
    if (*why)
        return FRAME_BAD;
    size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0, hlen = 2 + ext + 4;
    if (avail < 2 + ext)
        return FRAME_MORE;
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | h[2 + i];
        if ((ext == 2 && len < 126) || (ext == 8 && (len >> 63 || len <= 0xffff))) {
            *why = "frame length not in its shortest form";
            return FRAME_BAD;
        }
    }
    uint64_t total = (op == OP_CONT ? ws->frag_len : 0) + len;
    if (!control && total > ws->max_message) {
        *code = 1009;
        *why = "message too big";
        return FRAME_BAD;
    }
    if (avail < hlen || avail - hlen < len)
        return FRAME_MORE;
    if (!control) {
        ws->frag_open = !fin;
        ws->frag_len = fin ? 0 : total;
    }
    *size = hlen + (size_t)len;
    return FRAME_READY;
}

/* Hands one whole frame to wslay; what it answers (pong, close) goes out through send_cb. */
static int read_frame(fl_ws_t *ws, struct evbuffer *in, size_t size)
{
    if (ws->wslay == NULL) {
        if (wslay_event_context_server_init(&ws->wslay, &wslay_callbacks, ws) != 0) {
            ws->wslay = NULL;
            return FL_ENOMEM;
        }
        wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->max_message);
    }
    ws->in = in;
    ws->feed = size;
    int rc = wslay_event_recv(ws->wslay);
    if (rc == 0 && !ws->closing)
        rc = wslay_event_send(ws->wslay);
    ws->in = NULL;
    if (ws->feed > 0) { /* wslay stopped reading (it answered with a close): drop the rest */
        evbuffer_drain(in, ws->feed);
        ws->feed = 0;
    }
    if (rc != 0)
        return rc == WSLAY_ERR_NOMEM ? FL_ENOMEM : FL_EIO;
    if (!ws->closing && wslay_event_get_close_sent(ws->wslay)) {
        ws->closing = true;
        if (ws->close_code == 0) /* wslay closed for an error it found (1002, 1007) */
            ws->close_code = wslay_event_get_status_code_sent(ws->wslay);
        fl_stream_close(ws->stream);
    }
    return FL_OK;
}

static void ws_on_data(fl_stream_t *s, struct evbuffer *in, void *arg)
{
    fl_ws_t *ws = arg;
    while (!ws->closing) {
        size_t size = 0;
        int code = 0;
        const char *why = NULL;
        int r = check_frame(ws, in, &size, &code, &why);
        if (r == FRAME_MORE)
            break;
        if (r == FRAME_BAD) {
            fl_log(FL_LOG_DEBUG, "ws.protocol_error", FL_MSG(why), FL_INT("code", code), FL_STR("peer", fl_stream_peer(s)));
            send_close(ws, code, why);
            break;
        }
        int rc = read_frame(ws, in, size);
        if (rc != FL_OK) {
            fl_log(FL_LOG_WARN, "ws.read_failed", FL_MSG("a WebSocket frame could not be read; closing"),
                   FL_STR("error", fl_strerror(rc)), FL_STR("peer", fl_stream_peer(s)));
            ws->closing = true;
            ws->close_code = 1006; /* no close frame went out */
            fl_stream_abort(s);
            break;
        }
    }
    if (ws->wslay && (ws->closing || !ws->frag_open)) {
        wslay_event_context_free(ws->wslay);
        ws->wslay = NULL;
    }
}

static void ws_on_drain(fl_stream_t *s, void *arg)
{
    (void)s;
    fl_ws_t *ws = arg;
    if (!ws->closing && ws->h.on_drain)
        ws->h.on_drain(ws, ws->arg);
}

static void ws_on_idle(fl_stream_t *s, void *arg)
{
    (void)s;
    send_close(arg, 1001, "idle");
}

static void ws_on_stream_close(fl_stream_t *s, int reason, void *arg)
{
    (void)s;
    (void)reason;
    fl_ws_t *ws = arg;
    bool clean = ws->closing;
    ws->closing = true; /* sends from on_close answer FL_ESTATE */
    ws_end(ws, clean ? ws->close_code : 1006, clean && ws->close_reason ? ws->close_reason : "");
}

static const fl_stream_handlers_t stream_handlers = {
    .on_data = ws_on_data, .on_drain = ws_on_drain, .on_close = ws_on_stream_close, .on_idle = ws_on_idle};

/* ---- the handshake ------------------------------------------------------------------------------- */

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==", the last character
 * carrying nothing past the 128th bit. */
static bool key_valid(const char *key)
{
    if (key == NULL || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (int i = 0; i < 22; i++)
        if (b64_value(key[i]) < 0)
            return false;
    return (b64_value(key[21]) & 0x0f) == 0;
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)), 28 characters. */
static bool accept_value(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[24 + sizeof(guid)];
    memcpy(in, key, 24);
    memcpy(in + 24, guid, sizeof(guid) - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(in, 24 + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return false;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28;
}

/* s[0..n) without a trailing ":port" when port is the scheme's default one. */
static size_t without_default_port(const char *s, size_t n, const char *port)
{
    size_t pl = strlen(port);
    if (n > pl + 1 && s[n - pl - 1] == ':' && strncmp(s + n - pl, port, pl) == 0)
        return n - pl - 1;
    return n;
}

/* The Origin's host[:port] is the Host the request was sent to (default ports either way). */
static bool same_origin(const char *origin, const char *host)
{
    const char *sep = strstr(origin, "://");
    if (sep == NULL || host == NULL)
        return false;
    const char *port = sep - origin == 5 && strncasecmp(origin, "https", 5) == 0 ? "443" : "80";
    const char *authority = sep + 3;
    size_t an = without_default_port(authority, strlen(authority), port);
    size_t hn = without_default_port(host, strlen(host), port);
    return an == hn && strncasecmp(authority, host, an) == 0;
}

static bool origin_allowed(const char *allow, const char *origin, const char *host)
{
    if (origin == NULL)
        return true;
    if (allow == NULL || allow[0] == '\0')
        return same_origin(origin, host);
    return list_contains(allow, "*", 1) || list_contains(allow, origin, strlen(origin));
}

/* Keeps the query as decoded "name\0value\0" pairs for fl_ws_query. */
static int keep_query(fl_ws_t *ws, const char *q)
{
    size_t n = strlen(q);
    if (n == 0)
        return FL_OK;
    char *out = fl_malloc(2 * n + 2); /* a segment of k bytes decodes to at most k + 2 */
    if (out == NULL)
        return FL_ENOMEM;
    size_t o = 0;
    for (const char *p = q;;) {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        size_t klen = eq ? (size_t)(eq - p) : seg;
        if (seg > 0) {
            o += http_decode(p, klen, true, out + o) + 1;
            o += (eq ? http_decode(eq + 1, seg - klen - 1, true, out + o) : http_decode("", 0, true, out + o)) + 1;
        }
        if (p[seg] == '\0')
            break;
        p += seg + 1;
    }
    if (o == 0) { /* only separators */
        fl_free(out);
        return FL_OK;
    }
    char *fit = fl_realloc(out, o); /* kept for the connection's life: no slack */
    ws->query = fit ? fit : out;
    ws->query_len = o;
    return FL_OK;
}

static void abandoned(void *arg)
{
    ws_end(arg, 1006, "");
}

fl_ws_t *ws_new(fl_shard_t *shard, fl_http_server_t *srv, const fl_ws_opts_t *o, const fl_ws_handlers_t *h, void *arg)
{
    fl_ws_t *ws = fl_calloc(1, sizeof(*ws));
    if (ws == NULL)
        return NULL;
    ws->shard = shard;
    ws->srv = srv;
    ws->h = *h;
    ws->arg = arg;
    ws->max_message = o->max_message ? o->max_message : DEFAULT_MAX_MESSAGE;
    ws->max_output = o->max_output; /* 0: the stream's default */
    ws->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 0;
    ws->sndbuf = o->sndbuf;
    return ws;
}

/* The 101 is out and the socket is ours (fd < 0: the client left before). */
void ws_upgraded(fl_shard_t *shard, int fd, struct evbuffer *leftover, void *arg)
{
    fl_ws_t *ws = arg;
    if (fd < 0) { /* maybe inside fl_ws_accept: on_close waits for the loop */
        if (fl_shard_post(ws->shard, abandoned, ws) != FL_OK)
            abandoned(ws);
        return;
    }
    fl_stream_opts_t o = {.max_output = ws->max_output, .idle_timeout_ms = ws->idle_ms, .sndbuf = ws->sndbuf};
    int rc = fl_stream_open(shard, fd, leftover, ws->srv, &o, &stream_handlers, ws, &ws->stream);
    if (rc != FL_OK) {
        fl_log(FL_LOG_WARN, "ws.open_failed", FL_MSG("an accepted WebSocket could not be set up"),
               FL_STR("error", fl_strerror(rc)));
        ws_end(ws, 1006, "");
        return;
    }
    if (list_add(ws) != FL_OK) {
        fl_stream_abort(ws->stream); /* on_close follows */
        return;
    }
    if (ws->h.on_open)
        ws->h.on_open(ws, ws->arg);
}

static int refuse(fl_http_req_t *req, int status, const char *code, const char *message)
{
    if (status == 405)
        fl_http_set_header(req, "Allow", "GET");
    else if (status == 426)
        fl_http_set_header(req, "Sec-WebSocket-Version", "13");
    else if (status == 503)
        fl_http_set_header(req, "Retry-After", "1");
    fl_http_respond_error(req, status, code, message);
    return FL_EPROTO; /* answered, but no WebSocket: the handlers never run */
}

int fl_ws_accept(fl_http_req_t *req, const fl_ws_opts_t *opts, const fl_ws_handlers_t *h, void *arg)
{
    if (req == NULL || opts == NULL || h == NULL)
        return FL_EINVAL;
    const char *upgrade = fl_http_req_header(req, "Upgrade"), *connection = fl_http_req_header(req, "Connection");
    const char *version = fl_http_req_header(req, "Sec-WebSocket-Version"), *key = fl_http_req_header(req, "Sec-WebSocket-Key");
    if (fl_http_req_method(req) != FL_HTTP_GET)
        return refuse(req, 405, "method_not_allowed", "a WebSocket handshake is a GET request");
    if (!list_contains(upgrade, "websocket", 9) || !list_contains(connection, "upgrade", 7) || !fl_http_req_wants_upgrade(req))
        return refuse(req, 400, "bad_request", "this route speaks WebSocket: send Upgrade: websocket and Connection: Upgrade");
    if (version == NULL || strcmp(version, "13") != 0)
        return refuse(req, 426, "upgrade_required", "only WebSocket version 13 is served");
    if (!key_valid(key))
        return refuse(req, 400, "bad_request", "Sec-WebSocket-Key must be the base64 of 16 bytes");
    if (!origin_allowed(opts->origins, fl_http_req_header(req, "Origin"), fl_http_req_header(req, "Host")))
        return refuse(req, 403, "forbidden_origin", "WebSocket connections from this Origin are not allowed");

    char accept[29], head[512]; /* the fixed part and a request id of up to 128 bytes */
    fl_ws_t *ws = ws_new(fl_http_req_shard(req), fl_http_req_server(req), opts, h, arg);
    if (ws == NULL || !accept_value(key, accept) || keep_query(ws, fl_http_req_query_string(req)) != FL_OK) {
        if (ws)
            ws_free(ws);
        return refuse(req, 503, "unavailable", "out of memory opening a WebSocket");
    }
    snprintf(head, sizeof(head),
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
             "X-Request-Id: %s\r\n\r\n",
             accept, fl_http_req_id(req));
    int rc = fl_http_upgrade(req, head, ws_upgraded, ws);
    if (rc == FL_OK)
        return FL_OK;
    ws_free(ws);
    if (rc == FL_ENOMEM)
        return refuse(req, 503, "unavailable", "out of memory opening a WebSocket");
    return rc;
}

/* ---- sending ------------------------------------------------------------------------------------- */

static int sendable(const fl_ws_t *ws)
{
    return ws->closing || ws->stream == NULL ? FL_ESTATE : FL_OK;
}

static int stream_status(int rc)
{
    return rc == FL_ECLOSED ? FL_ESTATE : rc; /* the peer went away: on_close is on its way */
}

int fl_ws_send_text(fl_ws_t *ws, const char *data, size_t len)
{
    int rc = sendable(ws);
    if (rc != FL_OK)
        return rc;
    uint8_t h[10];
    size_t hlen = frame_header(h, OP_TEXT, len);
    return stream_status(stream_write_parts(ws->stream, h, hlen, data, len, false));
}

fl_blob_t *fl_ws_frame_text(const char *data, size_t len)
{
    uint8_t h[10];
    size_t hlen = frame_header(h, OP_TEXT, len);
    fl_blob_t *b = fl_blob_new(hlen + len);
    if (b == NULL)
        return NULL;
    memcpy(fl_blob_data(b), h, hlen);
    if (len > 0)
        memcpy(fl_blob_data(b) + hlen, data, len);
    return b;
}

int fl_ws_send_frame(fl_ws_t *ws, fl_blob_t *frame)
{
    int rc = sendable(ws);
    return rc == FL_OK ? stream_status(fl_stream_write_blob(ws->stream, frame)) : rc;
}

size_t fl_ws_pending(const fl_ws_t *ws)
{
    return ws->stream ? fl_stream_pending(ws->stream) : 0;
}

fl_shard_t *fl_ws_shard(const fl_ws_t *ws)
{
    return ws->shard;
}

const char *fl_ws_peer(const fl_ws_t *ws)
{
    return ws->stream ? fl_stream_peer(ws->stream) : "";
}

const char *fl_ws_query(const fl_ws_t *ws, const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < ws->query_len;) {
        const char *k = ws->query + i, *v = k + strlen(k) + 1;
        if (strcmp(k, name) == 0)
            return v;
        i = (size_t)(v - ws->query) + strlen(v) + 1;
    }
    return NULL;
}

/* ---- every WebSocket ---------------------------------------------------------------------------- */

typedef struct {
    fl_shard_t *shard;
    int code;
    char reason[MAX_REASON + 1];
} close_all_t;

static void close_all_task(void *arg)
{
    close_all_t *t = arg;
    pthread_mutex_lock(&shards_lock);
    ws_shard_t *l = find_shard_locked(t->shard);
    pthread_mutex_unlock(&shards_lock);
    /* The entry is this thread's to free, and closing ends no WebSocket inside this loop. */
    for (fl_ws_t *ws = l ? l->head : NULL; ws; ws = ws->next)
        send_close(ws, t->code, t->reason);
    fl_free(t);
}

void fl_ws_close_all(int code, const char *reason)
{
    reason = reason ? reason : "";
    size_t rlen = reason_fit(reason);
    pthread_mutex_lock(&shards_lock);
    for (ws_shard_t *l = shards; l; l = l->next) {
        close_all_t *t = fl_malloc(sizeof(*t));
        if (t == NULL) {
            fl_log(FL_LOG_ERROR, "ws.close_all_failed", FL_MSG("out of memory closing WebSockets on a shard"));
            continue;
        }
        t->shard = l->shard;
        t->code = code;
        memcpy(t->reason, reason, rlen);
        t->reason[rlen] = '\0';
        if (fl_shard_post(l->shard, close_all_task, t) != FL_OK)
            fl_free(t);
    }
    pthread_mutex_unlock(&shards_lock);
}

int fl_ws_count(void)
{
    return atomic_load_explicit(&n_open, memory_order_relaxed);
}
