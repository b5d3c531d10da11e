/* The server: one SO_REUSEPORT listening socket per shard (the kernel spreads connections over
 * them), accept with the connection limit, graceful drain and teardown. */
#include "http_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 64
/* After accept fails for lack of descriptors or memory, accepting pauses this long instead of
 * spinning on a listening socket that stays readable. */
#define ACCEPT_PAUSE_MS       100
#define LIMIT_LOG_INTERVAL_MS 1000

int fl_http_server_new(const fl_config_t *cfg, fl_http_router_t *router, fl_http_server_t **out)
{
    if (cfg == NULL || router == NULL || out == NULL)
        return FL_EINVAL;
    fl_http_server_t *srv = fl_calloc(1, sizeof(*srv));
    if (srv == NULL)
        return FL_ENOMEM;
    srv->cfg = cfg;
    srv->router = router;
    atomic_init(&srv->nconns, 0);
    atomic_init(&srv->draining, false);
    atomic_init(&srv->paused, false);
    /* http_parser has its own (process-wide) cap on header bytes; ours is the one that counts. */
    if (cfg->max_header_bytes > 64 * 1024)
        http_parser_set_max_header_size((uint32_t)cfg->max_header_bytes + 1024);
    *out = srv;
    return FL_OK;
}

/* "host:port", "[v6]:port", ":port" (all IPv4 interfaces) into host and port strings. */
static int split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    size_t hl;
    const char *h = addr;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            return FL_EINVAL;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return FL_EINVAL; /* no port, or an IPv6 address without brackets */
        hl = (size_t)(colon - addr);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (pl == 0 || pl > 5 || strspn(p, "0123456789") != pl || atoi(p) > 65535 || hl >= hostlen || pl >= portlen)
        return FL_EINVAL;
    if (hl == 0) {
        snprintf(host, hostlen, "0.0.0.0");
    } else {
        memcpy(host, h, hl);
        host[hl] = '\0';
    }
    memcpy(port, p, pl + 1);
    return FL_OK;
}

static void format_addr(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
    }
}

static int open_listener(const struct sockaddr *sa, socklen_t salen, const char *addr, int *out)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const char *step = "socket";
    int one = 1;
    if (fd < 0)
        goto failed;
    step = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        goto failed;
    step = "bind";
    if (bind(fd, sa, salen) != 0)
        goto failed;
    step = "listen";
    if (listen(fd, 4096) != 0)
        goto failed;
    *out = fd;
    return FL_OK;
failed:;
    int err = errno;
    fl_log(FL_LOG_ERROR, "http.listen_failed", FL_MSG("cannot listen"), FL_STR("addr", addr), FL_STR("step", step),
           FL_STR("error", strerror(err)));
    if (fd >= 0)
        close(fd);
    return FL_EIO;
}

static void close_listener(http_shard_t *hs)
{
    if (hs->lev) {
        event_free(hs->lev);
        hs->lev = NULL;
    }
    if (hs->resume)
        event_del(hs->resume);
    if (hs->lfd >= 0) {
        close(hs->lfd);
        hs->lfd = -1;
    }
    hs->accepting = false;
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_shard_t *hs = arg;
    if (hs->lev && !hs->drained && !atomic_load(&hs->srv->paused) && event_add(hs->lev, NULL) == 0)
        hs->accepting = true;
}

static void pause_accepting(http_shard_t *hs, int err)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_PAUSE_MS * 1000};
    event_del(hs->lev);
    hs->accepting = false;
    evtimer_add(hs->resume, &tv);
    int64_t now = fl_now_mono_ms();
    if (now - hs->last_pause_log >= LIMIT_LOG_INTERVAL_MS) {
        hs->last_pause_log = now;
        fl_log(FL_LOG_WARN, "http.accept_paused", FL_MSG("accept failed; pausing accepting briefly"),
               FL_STR("error", strerror(err)), FL_INT("pause_ms", ACCEPT_PAUSE_MS), FL_INT("shard", fl_shard_index(hs->shard)));
    }
}

/* One more open connection, unless that would pass max_connections (the count never does,
 * even for a moment, so fl_http_server_connections stays within the limit). */
static bool take_slot(fl_http_server_t *srv)
{
    int n = atomic_load_explicit(&srv->nconns, memory_order_relaxed);
    do {
        if (n >= srv->cfg->max_connections)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&srv->nconns, &n, n + 1, memory_order_relaxed, memory_order_relaxed));
    return true;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    http_shard_t *hs = arg;
    fl_http_server_t *srv = hs->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(hs, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                fl_log(FL_LOG_WARN, "http.accept_failed", FL_MSG("accept failed"), FL_STR("error", strerror(errno)));
            return;
        }
        if (!take_slot(srv)) {
            conn_refuse(fd);
            stats_count_refused(hs);
            hs->refused++;
            int64_t now = fl_now_mono_ms();
            if (now - hs->last_refuse_log >= LIMIT_LOG_INTERVAL_MS) {
                fl_log(FL_LOG_WARN, "http.connection_limit", FL_MSG("connections refused with 503: at max_connections"),
                       FL_INT("refused", hs->refused), FL_INT("max_connections", srv->cfg->max_connections),
                       FL_INT("shard", fl_shard_index(hs->shard)));
                hs->last_refuse_log = now;
                hs->refused = 0;
            }
            continue;
        }
        conn_accepted(hs, fd, (const struct sockaddr *)&ss, sl);
    }
}

static void shards_free(http_shard_t *shards, int n)
{
    for (int i = 0; i < n; i++) {
        http_shard_t *hs = &shards[i];
        close_listener(hs);
        if (hs->resume)
            event_free(hs->resume);
        hs->resume = NULL;
        while (hs->conns)
            conn_destroy(hs->conns);
        fl_free(hs->stats);
    }
    fl_free(shards);
}

/* Listens on addr (bound by each shard, SO_REUSEPORT) or, with inherited >= 0, on that socket. */
static int listen_on(fl_http_server_t *srv, fl_runtime_t *rt, const char *addr, int inherited, char *bound, size_t boundlen)
{
    if (srv == NULL || rt == NULL || (addr == NULL && inherited < 0))
        return FL_EINVAL;
    if (srv->listening)
        return FL_ESTATE;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (inherited >= 0) {
        int type = 0;
        socklen_t tl = sizeof(type);
        if (getsockopt(inherited, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
            getsockname(inherited, (struct sockaddr *)&ss, &sslen) != 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
            fcntl(inherited, F_SETFL, O_NONBLOCK) != 0)
            return FL_EINVAL; /* a TCP socket (IPv4 or IPv6) only: peers are addresses (loopback rules, logs) */
        addr = "inherited socket";
    } else {
        char host[256], port[8];
        if (split_addr(addr, host, sizeof(host), port, sizeof(port)) != FL_OK)
            return FL_EINVAL;
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL)
            return FL_EINVAL;
        sslen = ai->ai_addrlen;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
    }

    int n = fl_runtime_nshards(rt);
    http_shard_t *shards = fl_calloc((size_t)n, sizeof(*shards));
    if (shards == NULL)
        return FL_ENOMEM;
    for (int i = 0; i < n; i++) {
        shards[i].srv = srv;
        shards[i].shard = fl_runtime_shard(rt, i);
        shards[i].base = fl_shard_base(shards[i].shard);
        shards[i].lfd = -1;
        if ((shards[i].stats = fl_calloc(router_count(srv->router) + 1, sizeof(route_stats_t))) == NULL) {
            shards_free(shards, n);
            return FL_ENOMEM;
        }
    }
    int rc = FL_OK;
    for (int i = 0; i < n; i++) {
        http_shard_t *hs = &shards[i];
        if (inherited >= 0) {
            /* One socket for every shard: each accepts from the same queue through its own copy,
             * and closing a copy (drain) leaves the socket and its queue to the next process. */
            if ((hs->lfd = fcntl(inherited, F_DUPFD_CLOEXEC, 3)) < 0) {
                fl_log(FL_LOG_ERROR, "http.listen_failed", FL_MSG("cannot use the inherited listening socket"),
                       FL_STR("error", strerror(errno)));
                rc = FL_EIO;
                goto fail;
            }
        } else if ((rc = open_listener((struct sockaddr *)&ss, sslen, addr, &hs->lfd)) != FL_OK) {
            goto fail;
        }
        /* Port 0: the first bind picked one; the other shards join it. */
        if (i == 0 && getsockname(hs->lfd, (struct sockaddr *)&ss, &sslen) != 0) {
            rc = FL_EIO;
            goto fail;
        }
        hs->lev = event_new(hs->base, hs->lfd, EV_READ | EV_PERSIST, on_accept, hs);
        hs->resume = evtimer_new(hs->base, on_resume, hs);
        if (hs->lev == NULL || hs->resume == NULL) {
            rc = FL_ENOMEM;
            goto fail;
        }
        if (!atomic_load(&srv->paused)) {
            if (event_add(hs->lev, NULL) != 0) {
                rc = FL_ENOMEM;
                goto fail;
            }
            hs->accepting = true;
        }
    }
    if (bound && boundlen)
        format_addr((struct sockaddr *)&ss, bound, boundlen);
    srv->shards = shards;
    srv->nshards = n;
    srv->rt = rt;
    srv->listening = true;
    return FL_OK;
fail:
    shards_free(shards, n);
    return rc;
}

int fl_http_server_listen(fl_http_server_t *srv, fl_runtime_t *rt, const char *addr, char *bound, size_t boundlen)
{
    return listen_on(srv, rt, addr, -1, bound, boundlen);
}

int fl_http_server_listen_fd(fl_http_server_t *srv, fl_runtime_t *rt, int fd, char *bound, size_t boundlen)
{
    if (fd < 0)
        return FL_EINVAL;
    return listen_on(srv, rt, NULL, fd, bound, boundlen);
}

/* On the shard: accept or not, as the owner last asked. */
static void apply_pause(void *arg)
{
    http_shard_t *hs = arg;
    if (hs->lev == NULL || hs->drained)
        return;
    if (atomic_load(&hs->srv->paused)) {
        event_del(hs->lev);
        event_del(hs->resume);
        hs->accepting = false;
    } else if (!hs->accepting && !evtimer_pending(hs->resume, NULL) && event_add(hs->lev, NULL) == 0) {
        hs->accepting = true;
    }
}

static void post_pause(fl_http_server_t *srv, bool paused)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->paused, paused);
    if (atomic_load(&srv->draining))
        return; /* the listeners are closed for good */
    for (int i = 0; i < srv->nshards; i++) {
        int rc = fl_shard_post(srv->shards[i].shard, apply_pause, &srv->shards[i]);
        if (rc != FL_OK && rc != FL_ECLOSED) /* a stopped shard accepts nothing anyway */
            fl_log(FL_LOG_WARN, "http.pause_failed",
                   FL_MSG(paused ? "cannot ask a shard to stop accepting" : "cannot ask a shard to accept"), FL_INT("shard", i),
                   FL_STR("error", fl_strerror(rc)));
    }
}

void fl_http_server_pause(fl_http_server_t *srv)
{
    post_pause(srv, true);
}

void fl_http_server_resume(fl_http_server_t *srv)
{
    post_pause(srv, false);
}

static void drain_shard(void *arg)
{
    http_shard_t *hs = arg;
    hs->drained = true;
    close_listener(hs);
    for (http_conn_t *c = hs->conns, *next; c; c = next) {
        next = c->next;
        conn_drain(c);
    }
}

void fl_http_server_drain(fl_http_server_t *srv)
{
    if (srv == NULL || atomic_exchange(&srv->draining, true))
        return;
    for (int i = 0; i < srv->nshards; i++) {
        int rc = fl_shard_post(srv->shards[i].shard, drain_shard, &srv->shards[i]);
        if (rc != FL_OK)
            fl_log(FL_LOG_WARN, "http.drain_failed", FL_MSG("cannot ask a shard to drain its connections"), FL_INT("shard", i),
                   FL_STR("error", fl_strerror(rc)));
    }
}

int fl_http_server_connections(const fl_http_server_t *srv)
{
    return atomic_load_explicit(&srv->nconns, memory_order_relaxed);
}

void fl_http_server_free(fl_http_server_t *srv)
{
    if (srv == NULL)
        return;
    if (srv->shards)
        shards_free(srv->shards, srv->nshards);
    fl_free(srv);
}
