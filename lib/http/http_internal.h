/*
 * lib/http private structures and helpers, shared by the module's files and the fuzz harness.
 * Nothing outside lib/http and its tests includes this.
 */
#ifndef FL_HTTP_INTERNAL_H
#define FL_HTTP_INTERNAL_H

#include "http/http.h"
#include "http/ws.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- arena: per-request memory, released in one place ------------------------------------- */

/* The first block is kept across the requests of a connection; overflow chunks are freed by
 * arena_reset, so a keep-alive connection does not allocate per request in the common case. */
typedef struct arena_chunk arena_chunk_t;
typedef struct {
    char *base;
    size_t used, cap;
    arena_chunk_t *chunks;
} arena_t;

int arena_init(arena_t *a, size_t cap);
void *arena_alloc(arena_t *a, size_t n); /* 8-byte aligned; NULL when out of memory */
char *arena_strndup(arena_t *a, const char *s, size_t n);
void arena_reset(arena_t *a);
void arena_free(arena_t *a);

/* ---- output queue: copied bytes and borrowed bodies, written with one writev ------------- */

typedef struct {
    const char *ref; /* borrowed bytes, or NULL: bytes [off, off + len) of the queue's buffer */
    size_t off, len;
    void (*release)(void *ctx);
    void *ctx;
} outseg_t;

typedef struct {
    char *buf; /* copied bytes; reset to empty whenever everything is written */
    size_t len, cap;
    outseg_t *segs;
    unsigned head, n, segcap; /* segs[head..n) are unsent */
    size_t sent;              /* bytes of segs[head] already written */
    size_t pending;           /* bytes not yet written */
} outq_t;

int outq_init(outq_t *q, size_t cap);
/* Room for n more copied bytes (and one more segment); NULL when out of memory. */
char *outq_reserve(outq_t *q, size_t n);
/* Appends n bytes written into the room outq_reserve returned. */
void outq_commit(outq_t *q, size_t n);
int outq_add(outq_t *q, const void *p, size_t n);
int outq_add_ref(outq_t *q, const void *p, size_t n, void (*release)(void *ctx), void *ctx);
/* One writev of what is pending. Returns bytes written, or -1 with errno set. */
ssize_t outq_write(outq_t *q, int fd);
/* Drops everything unsent (releasing borrowed bodies) and frees the memory. */
void outq_free(outq_t *q);

/* ---- router ------------------------------------------------------------------------------ */

#define ROUTE_MAX_PARAMS 16

typedef struct {
    int methods;
    fl_http_handler_fn fn;
    void *arg;
    unsigned flags;
    unsigned nparams;
    char *names[ROUTE_MAX_PARAMS];
    unsigned index;      /* the order it was added in: its slot in the request statistics */
    const char *pattern; /* as added (the router owns it) */
} endpoint_t;

typedef struct {
    const endpoint_t *ep; /* NULL: 404 when allow == 0, else 405 */
    int allow;            /* methods routed for this path (405's Allow) */
    unsigned nparams;
    const char *vals[ROUTE_MAX_PARAMS]; /* raw (percent-encoded) parameter values in the path */
    size_t lens[ROUTE_MAX_PARAMS];
} route_match_t;

void router_match(const fl_http_router_t *r, int method, const char *path, route_match_t *m);
/* "GET, HEAD, POST" for an Allow header. */
void router_allow_string(int methods, char *out, size_t outlen);
/* Endpoints added so far, and the pattern of the one with that index. */
unsigned router_count(const fl_http_router_t *r);
const char *router_pattern(const fl_http_router_t *r, unsigned index);

/* ---- request statistics (/metrics) ------------------------------------------------------------
 * Per shard and per endpoint (one more slot for requests no route took), written only by the
 * shard's thread with relaxed atomic loads and stores (no lock, no allocation), read by any. */
typedef struct {
    _Atomic uint64_t codes[FL_HTTP_STAT_CODES];
    _Atomic uint64_t buckets[FL_HTTP_LATENCY_BUCKETS + 1]; /* not cumulative; the last is +Inf */
    _Atomic uint64_t sum_ns;
} route_stats_t;

/* Counts an answered request of c's shard (status, and its duration from the first byte). */
struct http_conn;
void stats_count(struct http_conn *c, const fl_http_req_t *req, int status);
/* A connection refused with the canned 503 at max_connections: counted as unmatched, 503. */
struct http_shard;
void stats_count_refused(struct http_shard *hs);

/* ---- request: parse state and the parsed request ------------------------------------------ */

typedef struct {
    uint32_t name, value; /* offsets into req->head; value UINT32_MAX: empty */
} hdr_t;

typedef struct xhdr {
    struct xhdr *next;
    const char *name, *value;
} xhdr_t;

enum req_phase { PH_IDLE, PH_HEAD, PH_BODY, PH_DONE, PH_ERROR };
enum req_state { RS_READING, RS_HANDLER, RS_ANSWERED };
enum feed_event { FEED_MORE, FEED_DONE, FEED_ERROR };

struct http_conn;

struct fl_http_req {
    struct http_conn *conn; /* NULL when parsing without a socket (fuzzing) */
    const fl_config_t *cfg;
    http_parser hp;
    uint8_t phase;   /* enum req_phase */
    uint8_t state;   /* enum req_state */
    uint8_t last_cb; /* which header callback ran last */
    bool keep_alive, wants_upgrade, expect_continue, continue_sent, is_head;
    int method; /* FL_HTTP_* bit, 0 for others */
    size_t head_bytes;

    /* the error to answer with when phase is PH_ERROR */
    int err_status;
    const char *err_code, *err_msg;

    /* URL and header strings, each NUL-terminated, in one buffer kept across requests */
    char *head;
    size_t head_len, head_cap;
    bool has_url;
    hdr_t *hdrs;
    unsigned nhdrs, hdrs_cap;
    const char *path, *query, *content_type;

    char *body;
    size_t body_len, body_cap;

    char id[129];
    const endpoint_t *ep; /* the route, once matched: parameter names */
    unsigned nparams;
    const char *pvalues[ROUTE_MAX_PARAMS];

    arena_t arena;
    xhdr_t *xhdrs, **xtail;
    int64_t start_ns; /* first byte of the request (monotonic), for duration_ms */
};

/* Sets up a request parser for a connection (or a fuzzer). FL_OK or FL_ENOMEM. */
int req_init(fl_http_req_t *req, const fl_config_t *cfg);
void req_cleanup(fl_http_req_t *req);
/* Forgets the current request and readies the parser for the next one on the connection. */
void req_next(fl_http_req_t *req);
/* Parses bytes of the current request: returns how many were consumed and sets *event to
 * FEED_MORE (all consumed, the request is not complete), FEED_DONE (one complete request; the
 * bytes after it are not consumed) or FEED_ERROR (req->err_status says what to answer). */
size_t req_feed(fl_http_req_t *req, const char *data, size_t len, int *event);
/* Marks the request failed with an error answer (and the connection to be closed after it). */
void req_fail(fl_http_req_t *req, int status, const char *code, const char *msg);
/* Percent-decodes n bytes of s into the arena ('+' as space when plus). NULL when out of memory. */
char *req_decode(fl_http_req_t *req, const char *s, size_t n, bool plus);
/* The same into out (room for n + 1 bytes, NUL-terminated); returns the decoded length. */
size_t http_decode(const char *s, size_t n, bool plus, char *out);
/* Resolves the route for the parsed request and decodes its parameters. Returns the endpoint,
 * or NULL after setting *status/code/msg (404, 405 with *allow, 415, 503). */
const endpoint_t *req_route(fl_http_req_t *req, const fl_http_router_t *router, int *status, const char **code, const char **msg,
                            int *allow);
/* Content-Type application/json, optionally with parameters; a charset, if given, must be utf-8. */
bool req_is_json(const char *content_type);
/* A fresh random request id (16 hex characters) into out[17]. */
void req_generate_id(char out[17]);

/* ---- response ------------------------------------------------------------------------------ */

/* Queues the response on the connection and finishes the request (the core of fl_http_respond*).
 * body_copy: copy the bytes; else borrow them until release(ctx). extra is one more header line
 * ("Allow: GET\r\n") or NULL. */
void resp_send(fl_http_req_t *req, int status, const char *ctype, const void *body, size_t len, bool body_copy,
               void (*release)(void *ctx), void *ctx, const char *extra);
/* The error body, written into out; returns its length (truncated messages stay valid JSON). */
size_t resp_error_body(char *out, size_t outlen, const char *code, const char *message);
const char *resp_reason(int status);
/* The canned 503 for a connection refused at accept time, with a fresh request id. */
size_t resp_canned_503(char *out, size_t outlen);

/* ---- connections and the server ------------------------------------------------------------- */

typedef struct http_shard http_shard_t;

typedef struct http_conn {
    struct http_conn *prev, *next; /* the shard's list of open connections */
    http_shard_t *hs;
    int fd;
    struct event rev, wev, tev;
    bool rev_on, wev_on, tev_on;
    int64_t timer_at; /* monotonic ms the timer is armed for */

    char *in; /* bytes read, [in_start, in_end) not yet parsed */
    size_t in_start, in_end, in_cap;
    outq_t out;
    fl_http_req_t req;

    bool in_process;     /* inside the parse/dispatch loop: responses only queue */
    bool read_eof;       /* the client sent FIN */
    bool close_after;    /* close once the queued output is written */
    bool linger;         /* closing after an error: discard input for a while first */
    bool failed;         /* socket error: close as soon as possible */
    bool zombie;         /* socket closed while a handler still owns the request */
    bool upgrading;      /* hand the socket over once the output is written */
    bool handler_warned; /* http.handler_pending already logged for this request */
    bool lingering;      /* write side shut, reading until EOF or the linger deadline */
    bool fresh;          /* accepted, its first request not begun: a drain lets it send that one */
    int64_t idle_since, head_start, body_start, handler_since, write_since, linger_until;
    fl_http_upgrade_fn up_fn;
    void *up_arg;
    char peer[64];
    bool loopback;
} http_conn_t;

struct http_shard {
    fl_http_server_t *srv;
    fl_shard_t *shard;
    struct event_base *base;
    int lfd;
    struct event *lev;    /* accept */
    struct event *resume; /* re-enables accept after EMFILE and friends */
    bool accepting;
    bool drained;
    int64_t last_pause_log, last_refuse_log; /* rate limits for the warnings, monotonic ms */
    long refused;                            /* connections refused since the last warning */
    http_conn_t *conns;
    route_stats_t *stats; /* router_count + 1 slots */
};

struct fl_http_server {
    const fl_config_t *cfg;
    fl_http_router_t *router;
    fl_runtime_t *rt;
    int nshards;
    http_shard_t *shards;
    atomic_int nconns;
    atomic_bool draining;
    atomic_bool paused; /* fl_http_server_pause: the owner wants no new connections */
    bool listening;
};

/* ---- stream internals the WebSocket layer uses (stream.c) ------------------------------------ */

/* Queues a then b as one unit (a frame's header and payload): both or neither. control: a
 * control frame (pong, close) that may go past max_output by a small margin; reading pauses while
 * the output is past max_output, so pongs, which only answer what was read, stay within it. */
int stream_write_parts(fl_stream_t *s, const void *a, size_t alen, const void *b, size_t blen, bool control);

/* ws.c, for fl_ws_accept and the fuzz harness: a WebSocket not yet open (NULL: out of memory), and
 * the upgrade callback that opens it on fd (fd < 0: the client left first; on_close(1006) follows). */
fl_ws_t *ws_new(fl_shard_t *shard, fl_http_server_t *srv, const fl_ws_opts_t *o, const fl_ws_handlers_t *h, void *arg);
void ws_upgraded(fl_shard_t *shard, int fd, struct evbuffer *leftover, void *arg);

/* conn.c */
void conn_accepted(http_shard_t *hs, int fd, const struct sockaddr *sa, socklen_t salen);
/* After a response was queued for c's request (outside the connection's own loop: async). */
void conn_answered(http_conn_t *c);
void conn_drain(http_conn_t *c);
/* Answers the canned 503 on a socket that is not taken on, and closes it. */
void conn_refuse(int fd);
void conn_destroy(http_conn_t *c); /* server teardown */
/* "host:port" / "[v6]:port" and whether it is a loopback address. */
void conn_format_peer(const struct sockaddr *sa, char *out, size_t outlen, bool *loopback);

#endif
