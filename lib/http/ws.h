/*
 * fleetd WebSocket transport (RFC 6455) and the raw output stream it runs on, part of lib/http.
 *
 * A stream owns a socket that an HTTP connection handed over (fl_http_upgrade, fl_http_take_over):
 * Server-Sent Events write to it directly, WebSockets frame on top of it. Both live on one shard
 * and every function here (but fl_ws_close_all and fl_ws_count) must be called on that shard's
 * thread. Output is bounded: a write that would queue more than max_output answers FL_EFULL and
 * writes nothing, so a client that stops reading costs at most that much memory.
 *
 * Lifetime: an object is freed by the library right after its on_close handler returns; on_close
 * runs exactly once and never inside a call made by the owner (close, abort, write), so the
 * owner may call anything from any handler.
 */
#ifndef FL_HTTP_WS_H
#define FL_HTTP_WS_H

#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

/* ---- raw stream ------------------------------------------------------------------------------ */

typedef struct fl_stream fl_stream_t;

typedef struct {
    /* Bytes arrived; take what is complete from in and leave the rest (NULL: input is discarded). */
    void (*on_data)(fl_stream_t *s, struct evbuffer *in, void *arg);
    /* Output fell to or below the low-water mark (max_output / 4) after having been above it. */
    void (*on_drain)(fl_stream_t *s, void *arg);
    /* Final; the stream is freed right after. reason: FL_OK (closed by us: fl_stream_close or
     * fl_stream_abort), FL_EIO (the peer went away or the socket failed), FL_ETIMEDOUT (idle). */
    void (*on_close)(fl_stream_t *s, int reason, void *arg);
    /* Optional. Called when the idle timeout passes instead of closing with FL_ETIMEDOUT, so that
     * the owner can say goodbye first (a WebSocket close frame); the idle timer starts over. */
    void (*on_idle)(fl_stream_t *s, void *arg);
} fl_stream_handlers_t;

typedef struct {
    size_t max_output;   /* bytes queued for the socket; writes past it answer FL_EFULL (0: 1 MiB) */
    int idle_timeout_ms; /* nothing received for this long: on_idle, or close with FL_ETIMEDOUT (0: none) */
    int sndbuf;          /* the socket's SO_SNDBUF (0: the kernel's default and its autotuning) */
} fl_stream_opts_t;

/* Takes over fd (closed by the stream from now on, also on failure) and leftover (bytes the
 * client sent after the HTTP request; freed by the stream; may be NULL). Bytes already in leftover
 * reach on_data from the shard's loop soon after, never inside this call. srv: the server the
 * connection came from, told once with fl_http_upgraded_closed when the stream is freed, or at
 * once when this fails. Handlers are copied; arg is passed to them.
 * FL_OK with *out, FL_ENOMEM, FL_EINVAL (bad arguments), or FL_ECLOSED when fd < 0 (an upgrade
 * callback told that the client left before the hand-over: nothing to release then). */
int fl_stream_open(fl_shard_t *shard, int fd, struct evbuffer *leftover, fl_http_server_t *srv, const fl_stream_opts_t *o,
                   const fl_stream_handlers_t *h, void *arg, fl_stream_t **out);
/* Copies the bytes. FL_EFULL when the output would exceed max_output (nothing written),
 * FL_ECLOSED once the stream is closing, FL_ENOMEM. */
int fl_stream_write(fl_stream_t *s, const void *data, size_t len);
/* As fl_stream_write, sharing the blob's bytes: takes its own reference, dropped once the bytes
 * are written or the stream is freed. The caller keeps its reference. */
int fl_stream_write_blob(fl_stream_t *s, fl_blob_t *b);
size_t fl_stream_pending(const fl_stream_t *s); /* bytes not yet written to the socket */
/* Writes what is pending (for at most FL_STREAM_LINGER_MS), then closes; on_close(FL_OK) follows. */
void fl_stream_close(fl_stream_t *s);
/* Closes at once, dropping pending output; on_close(FL_OK) follows. */
void fl_stream_abort(fl_stream_t *s);
fl_shard_t *fl_stream_shard(const fl_stream_t *s);
const char *fl_stream_peer(const fl_stream_t *s); /* "127.0.0.1:5555", "[::1]:5555" */

#define FL_STREAM_LINGER_MS 2000

/* ---- WebSocket --------------------------------------------------------------------------------- */

typedef struct fl_ws fl_ws_t;

typedef struct {
    size_t max_message;  /* bytes of a (reassembled) incoming message; larger: close 1009 (0: 64 KiB) */
    size_t max_output;   /* bytes queued for the socket; fl_ws_send* answer FL_EFULL beyond (0: 1 MiB) */
    int idle_timeout_ms; /* nothing received for this long: close 1001 "idle" (0: none) */
    /* Comma-separated allowlist of Origin values ("https://a.example,http://127.0.0.1:4000"), "*" for
     * any. NULL or empty: same origin only (the Origin's host[:port] equals the Host header).
     * A request without Origin (not from a browser) is always allowed: the check protects browsers
     * from cross-site WebSocket hijacking, and any other client can send what Origin it likes. */
    const char *origins;
    int sndbuf; /* the socket's SO_SNDBUF (0: the kernel's default) */
} fl_ws_opts_t;

typedef struct {
    void (*on_open)(fl_ws_t *ws, void *arg);
    /* A whole message, reassembled from its fragments; text is valid UTF-8 (else close 1007).
     * data is valid for the call only. */
    void (*on_message)(fl_ws_t *ws, const char *data, size_t len, bool binary, void *arg);
    void (*on_drain)(fl_ws_t *ws, void *arg); /* as the stream's (may be NULL) */
    /* Final, exactly once for every fl_ws_accept that answered 101 (also when the client left
     * before on_open: code 1006). code: the close code sent or received (1005 for a close frame
     * without one, 1006 when the connection dropped without a close frame); ws freed right after. */
    void (*on_close)(fl_ws_t *ws, int code, const char *reason, void *arg);
} fl_ws_handlers_t;

/* In an HTTP handler: checks the upgrade request and answers it. Errors are answered with the
 * contract's JSON body: 405 (not GET), 400 bad_request (not a WebSocket upgrade, or a missing or
 * malformed Sec-WebSocket-Key), 426 upgrade_required with Sec-WebSocket-Version: 13 (another
 * version), 403 forbidden_origin (Origin not allowed by opts->origins), 503 (out of memory).
 * Otherwise answers 101 and hands the connection over; on_open follows on the request's shard.
 * opts and h are copied; arg is passed to the handlers.
 * FL_OK when it answered 101 (the handlers run, on_close exactly once); FL_EPROTO when it answered
 * with one of those errors (the handlers never run: arg is still the caller's); FL_EINVAL for bad
 * arguments, FL_ESTATE when the request had already been answered. */
int fl_ws_accept(fl_http_req_t *req, const fl_ws_opts_t *opts, const fl_ws_handlers_t *h, void *arg);
/* A text message (copied). FL_EFULL past max_output (nothing queued), FL_ESTATE once closing or
 * before on_open, FL_ENOMEM. */
int fl_ws_send_text(fl_ws_t *ws, const char *data, size_t len);
/* A complete unmasked server text frame (header and payload) as a new blob (one reference for the
 * caller), to send to many connections with fl_ws_send_frame. NULL when out of memory. */
fl_blob_t *fl_ws_frame_text(const char *data, size_t len);
/* Queues a frame made by fl_ws_frame_text, sharing its bytes (errors as fl_ws_send_text). */
int fl_ws_send_frame(fl_ws_t *ws, fl_blob_t *frame);
size_t fl_ws_pending(const fl_ws_t *ws);
/* Starts the closing handshake: sends a close frame (code 1000-1003, 1007-1014 or 3000-4999, else
 * 1000; reason cut to 123 bytes of whole UTF-8 characters), waits for the client to answer and
 * close (bounded by FL_STREAM_LINGER_MS), then on_close with that code. No-op once closing. */
void fl_ws_close(fl_ws_t *ws, int code, const char *reason);
fl_shard_t *fl_ws_shard(const fl_ws_t *ws);
const char *fl_ws_peer(const fl_ws_t *ws);
/* A query parameter of the upgrade request (percent-decoded, '+' as space; first of repeated
 * names), kept for the connection's life ("token", "vsn"), or NULL. */
const char *fl_ws_query(const fl_ws_t *ws, const char *name);
/* Closes every open WebSocket on every shard with code and reason (SIGTERM drain: 1001), by a
 * task posted to each shard that has any. Any thread. */
void fl_ws_close_all(int code, const char *reason);
int fl_ws_count(void); /* open WebSockets, all shards (for /metrics). Any thread. */

#endif
