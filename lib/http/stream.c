/*
 * The raw stream under Server-Sent Events and WebSockets: a socket taken over from an HTTP
 * connection, an evbuffer for input and one for output (copied bytes, and shared blobs by
 * reference), one I/O event whose interest follows what the stream needs, and one timer for the
 * idle timeout, the closing linger and the deferred on_close.
 *
 * A write goes straight to the socket when nothing is queued and no handler of this stream is
 * running: a frame fanned out to many idle subscribers costs one sendmsg each, and what a handler
 * writes while it runs leaves in one sendmsg after it returns.
 */
#include "http_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK         16384
#define DEFAULT_MAX_OUTPUT (1024 * 1024)
/* How far control frames may go past max_output: one read's worth of pongs and a close frame. */
#define CONTROL_MARGIN (READ_CHUNK + 1024)
#define WRITE_IOV      64
#define NEVER          INT64_MAX

enum stream_state {
    S_OPEN,
    S_CLOSING, /* fl_stream_close: writing what is pending, input discarded */
    S_LINGER,  /* all written, write side shut: reading until the peer's EOF or the deadline */
    S_DONE     /* socket closed; on_close runs from the timer on the next loop turn */
};

struct fl_stream {
    fl_shard_t *shard;
    fl_http_server_t *srv;
    struct event io, timer;
    struct evbuffer *in, *out;
    fl_stream_handlers_t h;
    void *arg;
    size_t max_output;
    int64_t last_input; /* monotonic ms: the idle timer counts from here */
    int64_t deadline;   /* monotonic ms: end of the closing linger */
    int64_t timer_at;   /* what the timer is armed for */
    int fd;
    int idle_ms;
    int reason; /* for on_close */
    uint8_t state;
    short interest; /* EV_READ | EV_WRITE registered on io */
    bool timer_on;
    bool busy;      /* a handler runs: writes wait for it to return, then leave together */
    bool above_low; /* output went past max_output / 4 since the last on_drain */
    bool read_eof;
    bool deliver; /* input is waiting for on_data (the leftover of the HTTP connection) */
    char peer[64];
};

static void settle(fl_stream_t *s);

/* ---- ending ------------------------------------------------------------------------------------- */

static void finalize(fl_stream_t *s)
{
    if (s->h.on_close)
        s->h.on_close(s, s->reason, s->arg);
    evbuffer_free(s->in); /* drops the references to shared blobs still queued */
    evbuffer_free(s->out);
    if (s->srv)
        fl_http_upgraded_closed(s->srv);
    fl_free(s);
}

/* Closes the socket now; on_close follows from the timer, never inside the caller's call. */
static void finish(fl_stream_t *s, int reason)
{
    if (s->state == S_DONE)
        return;
    s->state = S_DONE;
    s->reason = reason;
    if (s->interest)
        event_del(&s->io);
    s->interest = 0;
    if (s->timer_on)
        event_del(&s->timer);
    s->timer_on = false;
    close(s->fd);
    s->fd = -1;
    event_active(&s->timer, EV_TIMEOUT, 1);
}

/* ---- output -------------------------------------------------------------------------------------- */

/* Writes what the socket takes now, one sendmsg per batch of chains. */
static void flush(fl_stream_t *s)
{
    while (s->state < S_DONE && evbuffer_get_length(s->out) > 0) {
        struct evbuffer_iovec v[WRITE_IOV];
        struct iovec iov[WRITE_IOV];
        int n = evbuffer_peek(s->out, -1, NULL, v, WRITE_IOV);
        if (n > WRITE_IOV)
            n = WRITE_IOV;
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
            total += v[i].iov_len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                finish(s, s->state == S_OPEN ? FL_EIO : FL_OK); /* EPIPE, ECONNRESET: the peer is gone */
            return;
        }
        evbuffer_drain(s->out, (size_t)w); /* releases written blobs */
        if ((size_t)w < total)
            return; /* the socket buffer is full: the write event brings us back */
    }
}

/* After bytes were queued: out now if nothing else waits, else with the rest. */
static void queued(fl_stream_t *s, bool was_empty)
{
    if (was_empty && !s->busy)
        flush(s);
    if (s->state == S_DONE)
        return;
    if (evbuffer_get_length(s->out) > s->max_output / 4)
        s->above_low = true;
    if (!s->busy)
        settle(s);
}

static int check_room(const fl_stream_t *s, size_t len, bool control)
{
    if (s->state != S_OPEN)
        return FL_ECLOSED;
    size_t limit = s->max_output + (control ? CONTROL_MARGIN : 0);
    size_t pending = evbuffer_get_length(s->out);
    return pending > limit || len > limit - pending ? FL_EFULL : FL_OK;
}

int stream_write_parts(fl_stream_t *s, const void *a, size_t alen, const void *b, size_t blen, bool control)
{
    if (alen > SIZE_MAX - blen)
        return FL_EFULL;
    int rc = check_room(s, alen + blen, control);
    if (rc != FL_OK)
        return rc;
    size_t before = evbuffer_get_length(s->out);
    /* Room for both first, so a frame's header never goes out without its payload. */
    if (evbuffer_expand(s->out, alen + blen) != 0 || evbuffer_add(s->out, a, alen) != 0 ||
        (blen > 0 && evbuffer_add(s->out, b, blen) != 0))
        return FL_ENOMEM;
    queued(s, before == 0);
    return FL_OK;
}

int fl_stream_write(fl_stream_t *s, const void *data, size_t len)
{
    return stream_write_parts(s, data, len, NULL, 0, false);
}

static void blob_cleanup(const void *data, size_t len, void *blob)
{
    (void)data;
    (void)len;
    fl_blob_unref(blob);
}

int fl_stream_write_blob(fl_stream_t *s, fl_blob_t *b)
{
    size_t len = fl_blob_len(b);
    int rc = check_room(s, len, false);
    if (rc != FL_OK || len == 0)
        return rc;
    size_t before = evbuffer_get_length(s->out);
    fl_blob_ref(b);
    if (evbuffer_add_reference(s->out, fl_blob_data(b), len, blob_cleanup, b) != 0) {
        fl_blob_unref(b);
        return FL_ENOMEM;
    }
    queued(s, before == 0);
    return FL_OK;
}

size_t fl_stream_pending(const fl_stream_t *s)
{
    return evbuffer_get_length(s->out);
}

/* ---- input ------------------------------------------------------------------------------------- */

static void read_open(fl_stream_t *s)
{
    int n = evbuffer_read(s->in, s->fd, READ_CHUNK);
    if (n == 0) {
        s->read_eof = true;
        finish(s, FL_EIO);
        return;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        finish(s, FL_EIO);
        return;
    }
    if (n > 0)
        s->last_input = fl_now_mono_ms();
    else if (!s->deliver)
        return;
    s->deliver = false;
    if (s->h.on_data == NULL) {
        evbuffer_drain(s->in, evbuffer_get_length(s->in));
        return;
    }
    s->busy = true;
    s->h.on_data(s, s->in, s->arg);
    s->busy = false;
}

/* Closing: what the peer still sends is read and dropped, so that closing the socket with unread
 * bytes does not reset the connection before the peer has read our last bytes. */
static void read_discard(fl_stream_t *s)
{
    char buf[4096];
    ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0)
        s->read_eof = true;
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        finish(s, FL_OK);
}

/* ---- events -------------------------------------------------------------------------------------- */

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    fl_stream_t *s = arg;
    if (what & EV_WRITE)
        flush(s);
    if ((what & EV_READ) && s->state == S_OPEN)
        read_open(s);
    else if ((what & EV_READ) && s->state < S_DONE)
        read_discard(s);
    if (s->state == S_DONE)
        return;
    flush(s); /* what on_data wrote */
    if (s->state == S_OPEN && s->above_low && evbuffer_get_length(s->out) <= s->max_output / 4) {
        s->above_low = false;
        if (s->h.on_drain) {
            s->busy = true;
            s->h.on_drain(s, s->arg);
            s->busy = false;
            flush(s);
        }
    }
    settle(s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fl_stream_t *s = arg;
    s->timer_on = false;
    if (s->state == S_DONE) {
        finalize(s);
        return;
    }
    int64_t now = fl_now_mono_ms();
    if (s->state == S_OPEN && s->idle_ms > 0 && now >= s->last_input + s->idle_ms) {
        if (s->h.on_idle == NULL) {
            finish(s, FL_ETIMEDOUT);
            return;
        }
        s->last_input = now;
        s->busy = true;
        s->h.on_idle(s, s->arg);
        s->busy = false;
        flush(s);
    } else if (s->state != S_OPEN && now >= s->deadline) {
        finish(s, FL_OK);
    }
    settle(s);
}

static void set_interest(fl_stream_t *s, short want)
{
    if (want == s->interest)
        return;
    if (s->interest)
        event_del(&s->io);
    s->interest = 0;
    if (want == 0)
        return;
    event_assign(&s->io, fl_shard_base(s->shard), s->fd, want | EV_PERSIST, on_io, s);
    if (event_add(&s->io, NULL) == 0)
        s->interest = want;
    else
        finish(s, s->state == S_OPEN ? FL_EIO : FL_OK);
}

/* The one place that moves a closing stream on and sets what the loop watches. Reading pauses
 * while the output is past max_output: a client that does not read is not read from either. */
static void settle(fl_stream_t *s)
{
    if (s->state == S_CLOSING && evbuffer_get_length(s->out) == 0) {
        shutdown(s->fd, SHUT_WR);
        s->state = S_LINGER;
    }
    if (s->state == S_LINGER && s->read_eof)
        finish(s, FL_OK);
    if (s->state == S_DONE)
        return;
    size_t pending = evbuffer_get_length(s->out);
    bool want_read = !s->read_eof && (s->state != S_OPEN || pending <= s->max_output);
    set_interest(s, (short)((want_read ? EV_READ : 0) | (pending > 0 && s->state != S_LINGER ? EV_WRITE : 0)));
    if (s->state == S_DONE)
        return;
    int64_t at = s->state != S_OPEN ? s->deadline : s->idle_ms > 0 ? s->last_input + s->idle_ms : NEVER;
    /* The timer only moves earlier; when it fires early it is set again for the real time. */
    if (at == NEVER || (s->timer_on && s->timer_at <= at))
        return;
    int64_t now = fl_now_mono_ms(), wait = at > now ? at - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000), .tv_usec = (suseconds_t)(wait % 1000) * 1000};
    if (event_add(&s->timer, &tv) == 0) {
        s->timer_on = true;
        s->timer_at = at;
    }
}

/* ---- the API ------------------------------------------------------------------------------------- */

int fl_stream_open(fl_shard_t *shard, int fd, struct evbuffer *leftover, fl_http_server_t *srv, const fl_stream_opts_t *o,
                   const fl_stream_handlers_t *h, void *arg, fl_stream_t **out)
{
    if (fd < 0) {
        if (leftover)
            evbuffer_free(leftover);
        return FL_ECLOSED;
    }
    int rc = FL_EINVAL;
    fl_stream_t *s = NULL;
    if (shard == NULL || o == NULL || h == NULL || out == NULL)
        goto fail;
    rc = FL_ENOMEM;
    s = fl_calloc(1, sizeof(*s));
    if (s == NULL || (s->out = evbuffer_new()) == NULL)
        goto fail;
    s->in = leftover ? leftover : evbuffer_new();
    leftover = NULL;
    if (s->in == NULL)
        goto fail;
    s->shard = shard;
    s->srv = srv;
    s->fd = fd;
    s->h = *h;
    s->arg = arg;
    s->max_output = o->max_output ? o->max_output : DEFAULT_MAX_OUTPUT;
    s->idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 0;
    s->last_input = fl_now_mono_ms();
    s->deliver = evbuffer_get_length(s->in) > 0;
    if (o->sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, sizeof(o->sndbuf));
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK))
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    struct sockaddr_storage sa;
    socklen_t salen = sizeof(sa);
    bool loopback;
    if (getpeername(fd, (struct sockaddr *)&sa, &salen) == 0)
        conn_format_peer((struct sockaddr *)&sa, s->peer, sizeof(s->peer), &loopback);
    else
        snprintf(s->peer, sizeof(s->peer), "unknown");
    evtimer_assign(&s->timer, fl_shard_base(shard), on_timer, s);
    settle(s);
    if (s->deliver && s->interest) /* the leftover reaches on_data from the loop */
        event_active(&s->io, EV_READ, 1);
    *out = s;
    return FL_OK;

fail:
    if (leftover)
        evbuffer_free(leftover);
    if (s) {
        if (s->in)
            evbuffer_free(s->in);
        if (s->out)
            evbuffer_free(s->out);
        fl_free(s);
    }
    close(fd);
    if (srv)
        fl_http_upgraded_closed(srv);
    return rc;
}

void fl_stream_close(fl_stream_t *s)
{
    if (s->state != S_OPEN)
        return;
    s->state = S_CLOSING;
    s->deadline = fl_now_mono_ms() + FL_STREAM_LINGER_MS;
    if (!s->busy)
        settle(s);
}

void fl_stream_abort(fl_stream_t *s)
{
    finish(s, FL_OK);
}

fl_shard_t *fl_stream_shard(const fl_stream_t *s)
{
    return s->shard;
}

const char *fl_stream_peer(const fl_stream_t *s)
{
    return s->peer;
}
