/*
 * A client connection on its shard: read into a per-connection buffer, parse and answer one
 * request at a time (pipelined requests wait their turn, so async handlers keep the order),
 * queue the responses and write each batch with one sendmsg. Timeouts, lingering close after
 * errors, the protocol switch and the per-connection memory all live here.
 *
 * Every event callback ends in conn_settle, the one place that closes or frees a connection;
 * nothing touches a connection after calling it.
 */
#include "http_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_BUF_BYTES    8192
#define OUT_FIRST_BYTES 1024
/* Pipelined requests are not parsed while this much output waits for the client to read it. */
#define OUT_HIGH_WATER (256 * 1024)
/* After an error answer the rest of the client's bytes are read and dropped for this long, so
 * closing with unread input does not reset the connection before the client sees the answer. */
#define LINGER_MS 2000

static void conn_settle(http_conn_t *c, int64_t now);

/* ---- lifetime -------------------------------------------------------------------------------- */

static void unlink_conn(http_conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->hs->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void stop_events(http_conn_t *c)
{
    if (c->rev_on)
        event_del(&c->rev);
    if (c->wev_on)
        event_del(&c->wev);
    if (c->tev_on)
        event_del(&c->tev);
    c->rev_on = c->wev_on = c->tev_on = false;
}

/* Frees c; keep_count: the socket lives on (upgraded) and still counts toward max_connections. */
static void conn_free(http_conn_t *c, bool keep_count)
{
    fl_http_server_t *srv = c->hs->srv;
    /* An upgrade that never reached its hand-over: its owner still hears of it (fd -1), so it can
     * release what it passed as arg. */
    fl_http_upgrade_fn abandoned = c->upgrading && !keep_count ? c->up_fn : NULL;
    void *up_arg = c->up_arg;
    fl_shard_t *shard = c->hs->shard;
    stop_events(c);
    if (c->fd >= 0)
        close(c->fd);
    unlink_conn(c);
    outq_free(&c->out);
    req_cleanup(&c->req);
    fl_free(c->in);
    fl_free(c);
    if (!keep_count)
        atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed);
    if (abandoned)
        abandoned(shard, -1, NULL, up_arg);
}

/* Closes the socket. A handler that still owns the request keeps the memory alive until it
 * answers (the answer is dropped then). */
static void conn_close(http_conn_t *c)
{
    if (c->req.state == RS_HANDLER && !c->zombie) {
        stop_events(c);
        close(c->fd);
        c->fd = -1;
        c->zombie = true;
        outq_free(&c->out);
        return;
    }
    conn_free(c, false);
}

void conn_destroy(http_conn_t *c)
{
    conn_free(c, false);
}

void conn_format_peer(const struct sockaddr *sa, char *out, size_t outlen, bool *loopback)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    *loopback = false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        *loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        snprintf(out, outlen, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof(host));
            *loopback = in6->sin6_addr.s6_addr[12] == 127;
            snprintf(out, outlen, "%s:%u", host, port);
        } else {
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            *loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
            snprintf(out, outlen, "[%s]:%u", host, port);
        }
    } else {
        snprintf(out, outlen, "unknown");
    }
}

/* ---- the request loop ------------------------------------------------------------------------ */

static void respond_failure(fl_http_req_t *req)
{
    char body[512];
    size_t n = resp_error_body(body, sizeof(body), req->err_code, req->err_msg);
    resp_send(req, req->err_status, "application/json", body, n, true, NULL, NULL,
              req->err_status == 503 ? "Retry-After: 1\r\n" : NULL);
}

static void dispatch(http_conn_t *c)
{
    fl_http_req_t *req = &c->req;
    int status = 0, allow = 0;
    const char *code = NULL, *msg = NULL;
    const endpoint_t *ep = req_route(req, c->hs->srv->router, &status, &code, &msg, &allow);
    if (ep) {
        ep->fn(req, ep->arg);
        return;
    }
    char body[256], extra[128] = "";
    size_t n = resp_error_body(body, sizeof(body), code, msg);
    if (status == 405) {
        char methods[96];
        router_allow_string(allow, methods, sizeof(methods));
        snprintf(extra, sizeof(extra), "Allow: %s\r\n", methods);
    } else if (status == 503) {
        snprintf(extra, sizeof(extra), "Retry-After: 1\r\n");
    }
    resp_send(req, status, "application/json", body, n, true, NULL, NULL, extra[0] ? extra : NULL);
}

/* Parses and answers buffered requests until the input runs out, a handler goes async, the
 * output backs up, or the connection is to close. */
static void conn_process(http_conn_t *c, int64_t now)
{
    if (c->in_process)
        return;
    c->in_process = true;
    fl_http_req_t *req = &c->req;
    while (req->state != RS_HANDLER && !c->close_after && !c->upgrading && !c->failed && !c->zombie) {
        if (c->out.pending > OUT_HIGH_WATER || c->in_start == c->in_end)
            break;
        if (req->phase == PH_IDLE) {
            c->head_start = now;
            c->fresh = false;
        }
        int before = req->phase, event;
        c->in_start += req_feed(req, c->in + c->in_start, c->in_end - c->in_start, &event);
        if (before <= PH_HEAD && req->phase == PH_BODY)
            c->body_start = now;
        if (event == FEED_MORE) {
            if (req->phase == PH_BODY && req->expect_continue && !req->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                req->continue_sent = true;
                if (outq_add(&c->out, cont, sizeof(cont) - 1) != FL_OK)
                    c->failed = true;
            }
            break;
        }
        req->state = RS_HANDLER;
        c->handler_since = now;
        c->handler_warned = false;
        if (event == FEED_ERROR) {
            c->linger = true;
            respond_failure(req);
        } else {
            dispatch(c);
        }
    }
    c->in_process = false;
    if (c->in_start == c->in_end)
        c->in_start = c->in_end = 0;
}

static void conn_flush(http_conn_t *c, int64_t now)
{
    while (c->out.pending > 0) {
        ssize_t w = outq_write(&c->out, c->fd);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (c->write_since == 0)
                    c->write_since = now;
            } else {
                c->failed = true; /* EPIPE, ECONNRESET: the client is gone */
            }
            return;
        }
        c->write_since = now;
    }
    c->write_since = 0;
    c->idle_since = now;
}

/* Reads once (the event is level-triggered: more bytes bring us back). */
static void conn_read(http_conn_t *c)
{
    if (c->in_start > 0 && c->in_end == c->in_cap) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    size_t room = c->in_cap - c->in_end;
    if (room == 0)
        return;
    ssize_t n = recv(c->fd, c->in + c->in_end, room, 0);
    if (n > 0) {
        if (c->lingering) /* the client's bytes after an error answer are dropped */
            return;
        c->in_end += (size_t)n;
    } else if (n == 0) {
        c->read_eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c->failed = true;
    }
}

static void conn_run(http_conn_t *c)
{
    int64_t now = fl_now_mono_ms();
    while (!c->lingering) {
        conn_process(c, now);
        if (c->out.pending == 0 || c->failed)
            break;
        conn_flush(c, now);
        /* Parsing may have stopped at the output high-water mark: once the output is written,
         * the requests still buffered go on (the client may have nothing more to send). */
        if (c->failed || c->out.pending > 0 || c->in_start == c->in_end || c->req.state == RS_HANDLER || c->close_after ||
            c->upgrading)
            break;
    }
    conn_settle(c, now);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_conn_t *c = arg;
    conn_read(c);
    conn_run(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_run(arg);
}

/* ---- timers ---------------------------------------------------------------------------------- */

#define NEVER INT64_MAX

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t conn_deadline(const http_conn_t *c)
{
    const fl_config_t *cfg = c->hs->srv->cfg;
    if (c->lingering)
        return c->linger_until;
    int64_t d = NEVER;
    if (c->out.pending > 0 && c->write_since)
        d = c->write_since + cfg->write_timeout_ms;
    if (c->req.state == RS_HANDLER) {
        if (!c->handler_warned)
            d = min64(d, c->handler_since + cfg->write_timeout_ms);
    } else if (c->req.phase == PH_HEAD) {
        d = min64(d, c->head_start + cfg->header_timeout_ms);
    } else if (c->req.phase == PH_BODY) {
        d = min64(d, c->body_start + cfg->body_timeout_ms);
    } else if (c->req.phase == PH_IDLE && c->out.pending == 0) {
        d = min64(d, c->idle_since + cfg->keepalive_timeout_ms);
    }
    return d;
}

/* Lazy re-arming: the timer only moves earlier; when it fires early it is set again for the
 * real deadline. A keep-alive connection answering requests touches the timer heap rarely. */
static void schedule(http_conn_t *c, int64_t now)
{
    int64_t d = conn_deadline(c);
    if (d == NEVER || (c->tev_on && c->timer_at <= d))
        return;
    int64_t wait = d > now ? d - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000), .tv_usec = (suseconds_t)(wait % 1000) * 1000};
    if (event_add(&c->tev, &tv) == 0) {
        c->tev_on = true;
        c->timer_at = d;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_conn_t *c = arg;
    const fl_config_t *cfg = c->hs->srv->cfg;
    fl_http_req_t *req = &c->req;
    c->tev_on = false;
    int64_t now = fl_now_mono_ms();

    if (c->lingering) {
        if (now >= c->linger_until)
            c->failed = true;
    } else if (c->out.pending > 0 && c->write_since && now >= c->write_since + cfg->write_timeout_ms) {
        fl_log(FL_LOG_DEBUG, "http.write_timeout", FL_MSG("the client did not read the response in time; closing"),
               FL_STR("peer", c->peer));
        c->failed = true;
    } else if (req->state == RS_HANDLER) {
        if (!c->handler_warned && now >= c->handler_since + cfg->write_timeout_ms) {
            c->handler_warned = true;
            fl_log(FL_LOG_WARN, "http.handler_pending", FL_MSG("a handler has not answered its request yet"),
                   FL_STR("method", fl_http_req_method_name(req)), FL_STR("path", fl_http_req_path(req)), FL_RID(req->id),
                   FL_INT("waited_ms", now - c->handler_since));
        }
    } else if ((req->phase == PH_HEAD && now >= c->head_start + cfg->header_timeout_ms) ||
               (req->phase == PH_BODY && now >= c->body_start + cfg->body_timeout_ms)) {
        req_fail(req, 408, "request_timeout",
                 req->phase == PH_HEAD ? "the request headers did not arrive in time" : "the request body did not arrive in time");
        req->state = RS_HANDLER;
        c->linger = true;
        respond_failure(req); /* ends in conn_run: c may be gone */
        return;
    } else if (req->phase == PH_IDLE && c->out.pending == 0 && now >= c->idle_since + cfg->keepalive_timeout_ms) {
        c->close_after = true; /* idle keep-alive: close without a word */
    }
    conn_settle(c, now);
}

/* ---- closing, hand-over and event interest --------------------------------------------------- */

static void conn_handover(http_conn_t *c)
{
    stop_events(c);
    struct evbuffer *leftover = evbuffer_new();
    if (leftover == NULL || evbuffer_add(leftover, c->in + c->in_start, c->in_end - c->in_start) != 0) {
        fl_log(FL_LOG_ERROR, "http.upgrade_failed", FL_MSG("out of memory handing an upgraded connection over"),
               FL_STR("peer", c->peer));
        if (leftover)
            evbuffer_free(leftover);
        conn_free(c, false);
        return;
    }
    int fd = c->fd;
    fl_http_upgrade_fn fn = c->up_fn;
    void *arg = c->up_arg;
    fl_shard_t *shard = c->hs->shard;
    c->fd = -1;
    conn_free(c, true);
    fn(shard, fd, leftover, arg);
}

static void set_event(struct event *ev, bool *on, bool want)
{
    if (want == *on)
        return;
    if (want)
        *on = event_add(ev, NULL) == 0;
    else {
        event_del(ev);
        *on = false;
    }
}

static void conn_settle(http_conn_t *c, int64_t now)
{
    if (c->zombie)
        return;
    if (c->failed) {
        conn_close(c);
        return;
    }
    if (c->out.pending == 0 && !c->lingering) {
        if (c->upgrading) {
            conn_handover(c);
            return;
        }
        if (c->close_after) {
            if (!c->linger || c->read_eof) {
                conn_close(c);
                return;
            }
            shutdown(c->fd, SHUT_WR);
            c->lingering = true;
            c->linger_until = now + LINGER_MS;
            c->in_start = c->in_end = 0;
        } else if (c->read_eof && c->req.state != RS_HANDLER && c->in_start == c->in_end) {
            /* The client is done sending: everything is answered, or what is left of a request
             * can never complete. */
            conn_close(c);
            return;
        }
    }
    if (c->lingering && c->read_eof) {
        conn_close(c);
        return;
    }
    bool want_read = c->lingering || (!c->read_eof && !c->close_after && (c->in_end < c->in_cap || c->in_start > 0));
    set_event(&c->rev, &c->rev_on, want_read);
    set_event(&c->wev, &c->wev_on, c->out.pending > 0);
    schedule(c, now);
}

/* ---- entry points from the server and the response code ------------------------------------- */

void conn_answered(http_conn_t *c)
{
    if (c->zombie) {
        conn_free(c, false);
        return;
    }
    req_next(&c->req);
    if (!c->in_process)
        conn_run(c);
}

/* How long a connection accepted just before a drain has to send its first request. */
#define DRAIN_FIRST_REQUEST_MS 1000

void conn_drain(http_conn_t *c)
{
    if (c->zombie || c->lingering || c->upgrading)
        return;
    int64_t now = fl_now_mono_ms();
    if (c->req.state != RS_HANDLER && c->req.phase == PH_IDLE) {
        if (c->fresh && c->in_start == c->in_end) {
            /* Accepted just before the listeners closed (a hand-over to a new fleetd): its
             * client is sending a request now, so answer that one (with Connection: close)
             * rather than reset it; a client that sends nothing is closed after the grace. */
            int64_t by = now - c->hs->srv->cfg->keepalive_timeout_ms + DRAIN_FIRST_REQUEST_MS;
            if (c->idle_since > by)
                c->idle_since = by;
        } else {
            c->close_after = true; /* idle (or only writing): close once the output is out */
        }
    }
    conn_settle(c, now);
}

/* The canned 503: written at once (a fresh socket's buffer has room), then what the client has
 * already sent is read and dropped, so the close is a FIN rather than a reset that could destroy
 * the answer before the client reads it. No state is kept for a refused connection. */
void conn_refuse(int fd)
{
    char buf[4096];
    size_t n = resp_canned_503(buf, sizeof(buf));
    if (n > 0 && send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        n = 0; /* the client is gone already */
    for (int i = 0; i < 4 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
        ;
    shutdown(fd, SHUT_WR);
    close(fd);
}

void conn_accepted(http_shard_t *hs, int fd, const struct sockaddr *sa, socklen_t salen)
{
    (void)salen;
    fl_http_server_t *srv = hs->srv;
    http_conn_t *c = fl_calloc(1, sizeof(*c));
    if (c == NULL)
        goto refused;
    c->in = fl_malloc(IN_BUF_BYTES);
    if (c->in == NULL)
        goto free_conn;
    if (outq_init(&c->out, OUT_FIRST_BYTES) != FL_OK)
        goto free_in;
    if (req_init(&c->req, srv->cfg) != FL_OK)
        goto free_out;
    c->req.conn = c;
    c->fd = fd;
    c->hs = hs;
    c->in_cap = IN_BUF_BYTES;
    conn_format_peer(sa, c->peer, sizeof(c->peer), &c->loopback);
    event_assign(&c->rev, hs->base, fd, EV_READ | EV_PERSIST, on_read, c);
    event_assign(&c->wev, hs->base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    evtimer_assign(&c->tev, hs->base, on_timer, c);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->next = hs->conns;
    if (hs->conns)
        hs->conns->prev = c;
    hs->conns = c;
    /* Until its first request, a new connection gets the header timeout, not the keep-alive one. */
    int64_t now = fl_now_mono_ms();
    c->fresh = true;
    c->idle_since = now - srv->cfg->keepalive_timeout_ms + srv->cfg->header_timeout_ms;
    conn_settle(c, now);
    return;

free_out:
    outq_free(&c->out);
free_in:
    fl_free(c->in);
free_conn:
    fl_free(c);
refused:
    fl_log(FL_LOG_WARN, "http.accept_out_of_memory", FL_MSG("out of memory accepting a connection; answered 503"));
    conn_refuse(fd);
    atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed);
}

/* fl_http_upgrade: the head goes out, then the socket goes to fn (conn_settle hands it over). */
static int hand_over(fl_http_req_t *req, const char *head, fl_http_upgrade_fn fn, void *arg, bool upgrade)
{
    if (req == NULL || head == NULL || head[0] == '\0' || fn == NULL)
        return FL_EINVAL;
    if (req->state != RS_HANDLER || (upgrade && !req->wants_upgrade) || req->conn == NULL)
        return FL_ESTATE;
    http_conn_t *c = req->conn;
    if (c->zombie) { /* the client left while the handler worked: fn hears of it at once */
        fl_shard_t *shard = c->hs->shard;
        req->state = RS_ANSWERED;
        conn_answered(c);
        fn(shard, -1, NULL, arg);
        return FL_OK;
    }
    if (outq_add(&c->out, head, strlen(head)) != FL_OK)
        return FL_ENOMEM;
    req->state = RS_ANSWERED;
    c->upgrading = true;
    c->up_fn = fn;
    c->up_arg = arg;
    if (c->hs->srv->cfg->access_log)
        fl_log(FL_LOG_INFO, "http.access", FL_STR("method", fl_http_req_method_name(req)), FL_STR("path", fl_http_req_path(req)),
               FL_INT("status", upgrade ? 101 : 200), FL_INT("bytes", 0),
               FL_DBL("duration_ms", req->start_ns ? (double)(fl_now_mono_ns() - req->start_ns) / 1e6 : 0.0), FL_RID(req->id),
               FL_STR("peer", c->peer));
    stats_count(c, req, upgrade ? 101 : 200);
    conn_answered(c);
    return FL_OK;
}

int fl_http_upgrade(fl_http_req_t *req, const char *head, fl_http_upgrade_fn fn, void *arg)
{
    return hand_over(req, head, fn, arg, true);
}

int fl_http_take_over(fl_http_req_t *req, const char *head, fl_http_upgrade_fn fn, void *arg)
{
    return hand_over(req, head, fn, arg, false);
}

void fl_http_upgraded_closed(fl_http_server_t *srv)
{
    atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed);
}
