/*
 * fleetd HTTP/1.1 server: listeners (one SO_REUSEPORT socket per shard), connections, limits,
 * a router and the request/response API that lib/api builds on.
 *
 * Threads: a connection lives on the shard that accepted it. Handlers run on that shard's thread,
 * and every fl_http_req_* / fl_http_respond* call for a request must be made on that same thread.
 * Only fl_http_server_pause/resume/drain/connections and fl_http_upgraded_closed may be called
 * from any thread.
 *
 * Memory: a request and everything its accessors return belong to the server and stay valid
 * until the request's response is sent (fl_http_respond*, fl_http_upgrade). Response bodies are
 * copied (fl_http_respond) or borrowed until release (fl_http_respond_ref).
 */
#ifndef FL_HTTP_H
#define FL_HTTP_H

#include "runtime/runtime.h"

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

typedef struct fl_http_server fl_http_server_t;
typedef struct fl_http_router fl_http_router_t;
typedef struct fl_http_req fl_http_req_t;

enum {
    FL_HTTP_GET = 1,
    FL_HTTP_HEAD = 2,
    FL_HTTP_POST = 4,
    FL_HTTP_PUT = 8,
    FL_HTTP_DELETE = 16,
    FL_HTTP_PATCH = 32,
    FL_HTTP_OPTIONS = 64
};

/* Request bodies: any request carrying one (Content-Length > 0 or chunked) must have Content-Type
 * application/json (parameters allowed; a charset must be utf-8), else 415 unsupported_media_type
 * as soon as the headers are in, before routing and before the body is read.
 * Route flags. FL_ROUTE_JSON_BODY: the request must carry that Content-Type even without a body,
 * else 415 before the handler runs. */
enum { FL_ROUTE_JSON_BODY = 1 };

/* A handler answers by calling exactly one fl_http_respond* (or fl_http_upgrade): before it returns,
 * or later on the same shard (async). While a handler has not answered, no timeout applies to the
 * connection and the next pipelined request waits; if it has not answered after write_timeout_ms,
 * one warning (event http.handler_pending) is logged so a forgotten response is visible. */
typedef void (*fl_http_handler_fn)(fl_http_req_t *req, void *arg);

/* ---- router -------------------------------------------------------------------------------- */

fl_http_router_t *fl_http_router_new(void);
/* Frees the router; the servers using it must be freed first. */
void fl_http_router_free(fl_http_router_t *r);
/* pattern: "/api/v1/fleets/{fleet_id}/status": {name} matches one non-empty path segment
 * (name: [A-Za-z0-9_]+); a literal segment wins over a parameter. methods: OR of FL_HTTP_*;
 * GET routes also answer HEAD (without the body). Returns FL_OK, FL_EINVAL (bad pattern or
 * methods, or a method already routed for the same pattern) or FL_ENOMEM. Not thread-safe:
 * add every route before the server starts. */
int fl_http_router_add(fl_http_router_t *r, int methods, const char *pattern, fl_http_handler_fn fn, void *arg, unsigned flags);

/* ---- server -------------------------------------------------------------------------------- */

/* Keeps cfg and router pointers: both must outlive the server. */
int fl_http_server_new(const fl_config_t *cfg, fl_http_router_t *router, fl_http_server_t **out);
/* Binds one SO_REUSEPORT listening socket per shard on addr ("host:port", "[::1]:port"; port 0:
 * the first bind picks a free port and the others use the same) and registers the accept events
 * on each shard's base. Call once, before fl_runtime_start. Writes the bound "host:port" to bound.
 * Errors: FL_EINVAL (bad address), FL_EIO (bind/listen failed; logged as http.listen_failed),
 * FL_ESTATE (already listening), FL_ENOMEM. */
int fl_http_server_listen(fl_http_server_t *srv, fl_runtime_t *rt, const char *addr, char *bound, size_t boundlen);
/* The same on a listening socket this process was given (systemd socket activation, LISTEN_FDS):
 * every shard accepts from it through its own copy of fd (fd itself stays the caller's). Because
 * the socket outlives this process, a drain closes only the copies: connections still waiting in
 * its queue go to the next process that takes it, none is refused. FL_EINVAL when fd is not a
 * stream socket. */
int fl_http_server_listen_fd(fl_http_server_t *srv, fl_runtime_t *rt, int fd, char *bound, size_t boundlen);
/* Stop / start accepting new connections, from any thread (each shard applies it on its own loop,
 * in the order asked). While paused the listening sockets stay bound, so new clients wait in the
 * backlog; connections already open carry on. A server accepts from fl_http_server_listen on
 * unless paused before it. No effect after fl_http_server_drain. */
void fl_http_server_pause(fl_http_server_t *srv);
void fl_http_server_resume(fl_http_server_t *srv);
/* Graceful drain, callable from any thread: stop accepting (listening sockets are closed), close
 * idle keep-alive connections, and answer requests in flight with Connection: close. */
void fl_http_server_drain(fl_http_server_t *srv);
/* Open connections now, any thread (upgraded ones count until fl_http_upgraded_closed). */
int fl_http_server_connections(const fl_http_server_t *srv);
/* After fl_runtime_stop and before fl_runtime_free: closes every connection still open (bodies
 * borrowed with fl_http_respond_ref are released) and frees the server. NULL is a no-op. */
void fl_http_server_free(fl_http_server_t *srv);

/* ---- request accessors (valid until the response is sent) ----------------------------------- */

int fl_http_req_method(const fl_http_req_t *req); /* FL_HTTP_*, or 0 for other methods */
const char *fl_http_req_method_name(const fl_http_req_t *req);
const char *fl_http_req_path(const fl_http_req_t *req);                     /* path without the query, as sent */
const char *fl_http_req_query(const fl_http_req_t *req, const char *name);  /* percent-decoded value ('+' is a space) or NULL */
const char *fl_http_req_header(const fl_http_req_t *req, const char *name); /* case-insensitive, first match, or NULL */
const char *fl_http_req_param(const fl_http_req_t *req, const char *name);  /* path parameter, percent-decoded, or NULL */
/* Decoded body (chunked decoded); never NULL: "" with *len = 0 when there is none. The bytes are
 * followed by a NUL that is not counted in *len. len may be NULL. */
const char *fl_http_req_body(const fl_http_req_t *req, size_t *len);
/* X-Request-Id accepted (1..128 characters of [A-Za-z0-9._:-]) or generated (16 random hex). */
const char *fl_http_req_id(const fl_http_req_t *req);
const char *fl_http_req_peer(const fl_http_req_t *req); /* "127.0.0.1:5555", "[::1]:5555" */
bool fl_http_req_peer_is_loopback(const fl_http_req_t *req);
fl_shard_t *fl_http_req_shard(const fl_http_req_t *req);
/* The raw query string after '?' (not decoded), or "" when there is none. */
const char *fl_http_req_query_string(const fl_http_req_t *req);

/* ---- responses ------------------------------------------------------------------------------ */

/* Adds a response header (name and value copied) before the response is sent. Server-managed
 * headers (Content-Length, Transfer-Encoding, Connection, Date, Server, X-Request-Id) are refused.
 * Returns FL_OK, FL_EINVAL (bad name/value, CR or LF), FL_ESTATE (already answered) or FL_ENOMEM. */
int fl_http_set_header(fl_http_req_t *req, const char *name, const char *value);
/* Sends the response; body is copied. content_type NULL: no Content-Type header. HEAD requests,
 * 1xx, 204 and 304 get no body. If the server runs out of memory while queuing the response,
 * the connection is closed (and logged). The request may be freed before this returns (a
 * deferred answer on a closing connection): do not touch req, or strings from it, afterwards. */
void fl_http_respond(fl_http_req_t *req, int status, const char *content_type, const void *body, size_t len);
/* Zero-copy: body stays owned by the caller until release(ctx) is called (release may be NULL
 * for static bytes). release runs on the request's shard, once, even when the client is gone.
 * The body must not point into the request (fl_http_req_body): those buffers are reused. */
void fl_http_respond_ref(fl_http_req_t *req, int status, const char *content_type, const void *body, size_t len,
                         void (*release)(void *ctx), void *ctx);
/* The contract's error body {"error":{"code":..,"message":..}} with Content-Type application/json. */
void fl_http_respond_error(fl_http_req_t *req, int status, const char *code, const char *message);

/* ---- protocol switch ---------------------------------------------------------------------- */

/* Writes head (a complete "HTTP/1.1 101 ...\r\n...\r\n\r\n", copied) and once it is flushed hands
 * the socket over: fn(shard, fd, leftover, arg) receives the fd (now owned by the callee) and the
 * bytes the client already sent after the request (an evbuffer the callee owns and frees). The
 * connection still counts toward max_connections until the new owner calls
 * fl_http_upgraded_closed(srv). If the client is gone before the hand-over (or memory for the
 * leftover runs out, logged), the server closes the socket and calls fn(shard, -1, NULL, arg), so
 * that the owner can release arg; the connection no longer counts then (fl_stream_open answers
 * FL_ECLOSED for that fd). fn may run inside this call when the client left while the handler
 * worked.
 * Returns FL_OK (the request is answered), FL_EINVAL (head NULL or empty), FL_ESTATE (already
 * answered, or the request did not ask to upgrade) or FL_ENOMEM (not answered: respond instead). */
typedef void (*fl_http_upgrade_fn)(fl_shard_t *shard, int fd, struct evbuffer *leftover, void *arg);
int fl_http_upgrade(fl_http_req_t *req, const char *head, fl_http_upgrade_fn fn, void *arg);
/* As fl_http_upgrade for a response that streams until the connection closes (Server-Sent
 * Events): head is a complete "HTTP/1.1 200 ...\r\n...\r\n\r\n" that should say
 * "Connection: close"; the request need not ask to upgrade. */
int fl_http_take_over(fl_http_req_t *req, const char *head, fl_http_upgrade_fn fn, void *arg);
bool fl_http_req_wants_upgrade(const fl_http_req_t *req); /* Connection: upgrade + Upgrade header present */
fl_http_server_t *fl_http_req_server(const fl_http_req_t *req);
void fl_http_upgraded_closed(fl_http_server_t *srv); /* any thread */

/* ---- request statistics (for /metrics) ------------------------------------------------------
 * Every answered request (upgrades and streams when they are handed over) is counted by its route
 * and status, with its duration from its first byte to its answer being queued. */

#define FL_HTTP_LATENCY_BUCKETS 14
/* The histogram's upper bounds in seconds, ascending; a +Inf bucket follows them. */
extern const double fl_http_latency_bounds[FL_HTTP_LATENCY_BUCKETS];
/* Status slots: common codes one by one, then one per class ("4xx") for any other code. */
#define FL_HTTP_STAT_CODES 29
const char *fl_http_stat_code(int slot); /* "200", ..., "5xx" */

typedef struct {
    const char *route;                             /* the pattern as added; NULL: no route took it */
    uint64_t codes[FL_HTTP_STAT_CODES];            /* requests by status slot */
    uint64_t buckets[FL_HTTP_LATENCY_BUCKETS + 1]; /* cumulative: the last one is every request */
    double sum_seconds;
} fl_http_route_stats_t;

/* Sums the shards' counters and calls fn for every route in the order they were added, then once
 * with route NULL. Any thread, once listening (before that fn is not called). Counters are read
 * without stopping the shards, so a request may show in one sum and not yet in another. */
void fl_http_server_stats(const fl_http_server_t *srv, void (*fn)(const fl_http_route_stats_t *st, void *arg), void *arg);

#endif
