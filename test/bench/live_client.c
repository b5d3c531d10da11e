/* test/bench/live_client.c: the load generator of test/bench/live.sh. Many WebSocket clients of
 * fleetd's Phoenix Channels v2 endpoint (/socket/websocket) in one process, on one epoll loop:
 * each connects (from a source address among 127.0.0.2.., so ephemeral ports last), upgrades,
 * joins its topic and sends a heartbeat every 30 s. Then, with --requests, it posts pre-signed
 * ingest requests (test/bench/ingest-gen.mjs: NUL-separated, one fix each, vehicle PREFIX-k for
 * request k) at --rate per second, records when each was written and when its 202 came, and
 * records when each subscriber receives each position; it prints the latency from the write of a
 * request to the arrival of its position over every (subscriber, position) pair, and how many
 * pairs never arrived. Without --requests it holds the connections open (heartbeats on) for
 * --hold seconds or until SIGTERM, printing "READY n" once all have joined.
 *
 * Plain epoll and hand-written framing rather than libevent: a few bytes of state per connection
 * and no allocation per message, so the client's own cost stays small beside the server's.
 * Linux only, like the bench around it. Output lines: "READY ...", "PROGRESS ...", "RESULT k=v ...".
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_CONNECTING, ST_UPGRADING, ST_JOINING, ST_JOINED, ST_CLOSED };
enum { MAX_BUF = 64 << 20 };

typedef struct {
    int fd;
    uint8_t state;
    uint32_t len, cap;
    char *buf;
    uint32_t got;  /* positions received */
    bool measured; /* joined when the posting began */
} conn_t;

typedef struct {
    int fd;
    bool busy;
    int req; /* the request in flight */
    uint32_t len;
    char buf[4096];
} poster_t;

static struct {
    const char *host, *path, *requests, *prefix, *gen_cmd;
    int port, conns, srcs, inflight, rate, hold, grace, fleetd_pid;
    char **topics;
    int ntopics;
} opt = {.host = "127.0.0.1", .srcs = 1, .inflight = 256, .rate = 20, .hold = 0, .grace = 10};

static conn_t *conns;
static int ep;
static volatile sig_atomic_t stop_flag;
static int n_joined, n_closed, n_refused, n_connected, n_open_err;
static uint64_t n_positions, n_other, n_dup, n_unknown;

/* the measurement */
static int nreq;
static char **req_data;
static size_t *req_len;
static int64_t *sent_us, *acked_us;
static int *req_status;
static uint32_t *arrival; /* [k * conns + i]: µs after t0 + 1, 0 = not arrived */
static int64_t t0_us;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* stderr, at most 20 messages: thousands of connections fail alike */
static int n_msgs;
#define NOTE(...)                                                                                                                  \
    do {                                                                                                                           \
        if (n_msgs++ < 20)                                                                                                         \
            fprintf(stderr, __VA_ARGS__);                                                                                          \
    } while (0)

static void die(const char *what)
{
    fprintf(stderr, "live_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- WebSocket framing (client side: masked) ---------------------------------------------------- */

static int send_text(int fd, const char *text)
{
    size_t n = strlen(text);
    unsigned char frame[512];
    if (n > sizeof(frame) - 8)
        return -1;
    static const unsigned char mask[4] = {0x5a, 0xc3, 0x19, 0x7e};
    size_t h = 0;
    frame[h++] = 0x81;
    frame[h++] = (unsigned char)(0x80 | n); /* all our messages are under 126 bytes */
    memcpy(frame + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        frame[h + i] = (unsigned char)text[i] ^ mask[i % 4];
    ssize_t w = send(fd, frame, h + n, MSG_NOSIGNAL);
    return w == (ssize_t)(h + n) ? 0 : -1;
}

static void close_conn(int i)
{
    conn_t *c = &conns[i];
    if (c->state == ST_CLOSED)
        return;
    if (c->state == ST_JOINED)
        n_joined--;
    c->state = ST_CLOSED;
    n_closed++;
    close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* k of "PREFIX-k" at p (vehicle id start), or -1 */
static int vehicle_index(const char *p, const char *end)
{
    size_t pl = strlen(opt.prefix);
    if ((size_t)(end - p) <= pl + 1 || memcmp(p, opt.prefix, pl) != 0 || p[pl] != '-')
        return -1;
    long k = 0;
    const char *q = p + pl + 1;
    if (q >= end || *q < '0' || *q > '9')
        return -1;
    while (q < end && *q >= '0' && *q <= '9')
        k = k * 10 + (*q++ - '0');
    return q < end && *q == '"' && k < nreq ? (int)k : -1;
}

static void on_text(int i, const char *p, size_t n)
{
    conn_t *c = &conns[i];
    static const char pos[] = "\"position\",{\"vehicle_id\":\"";
    const char *end = p + n;
    if (n > 11 && memcmp(p, "[null,null,", 11) == 0) {
        const char *q = memmem(p, n < 200 ? n : 200, pos, sizeof(pos) - 1);
        if (q == NULL) {
            n_other++; /* presence_diff and the like */
            return;
        }
        int64_t t = now_us();
        c->got++;
        n_positions++;
        int k = arrival ? vehicle_index(q + sizeof(pos) - 1, end) : -1;
        if (k < 0) {
            n_unknown++;
            return;
        }
        uint32_t *slot = &arrival[(size_t)k * (size_t)opt.conns + (size_t)i];
        if (*slot)
            n_dup++;
        else
            *slot = (uint32_t)(t - t0_us + 1);
        return;
    }
    if (c->state == ST_JOINING && memmem(p, n < 200 ? n : 200, "\"phx_reply\",{\"status\":\"", 23)) {
        if (memmem(p, n < 200 ? n : 200, "\"status\":\"ok\"", 13)) {
            c->state = ST_JOINED;
            n_joined++;
        } else {
            n_refused++;
            NOTE("live_client: join refused: %.*s\n", (int)(n < 300 ? n : 300), p);
            close_conn(i);
        }
        return;
    }
    n_other++;
}

/* Parses whole frames from the buffer; returns false when the connection was closed. */
static bool on_frames(int i)
{
    conn_t *c = &conns[i];
    size_t off = 0;
    while (c->len - off >= 2) {
        unsigned char *f = (unsigned char *)c->buf + off;
        size_t avail = c->len - off, h = 2;
        uint64_t plen = f[1] & 0x7f;
        if (f[1] & 0x80) { /* a server never masks */
            NOTE("live_client: masked frame from the server\n");
            close_conn(i);
            return false;
        }
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int b = 0; b < 8; b++)
                plen = plen << 8 | f[2 + b];
            h = 10;
        }
        if (plen > MAX_BUF) {
            NOTE("live_client: frame of %" PRIu64 " bytes\n", plen);
            close_conn(i);
            return false;
        }
        if (avail < h + plen)
            break;
        int op = f[0] & 0x0f;
        if (op == 1 || op == 0)
            on_text(i, (char *)f + h, (size_t)plen);
        else if (op == 8) {
            NOTE("live_client: close from the server, code %d\n", plen >= 2 ? f[h] << 8 | f[h + 1] : 0);
            close_conn(i);
            return false;
        } else if (op == 9) {
            unsigned char pong[6] = {0x8a, 0x80, 0, 0, 0, 0}; /* empty pong; pings carry no data here */
            if (send(c->fd, pong, sizeof(pong), MSG_NOSIGNAL) != (ssize_t)sizeof(pong)) {
                close_conn(i);
                return false;
            }
        }
        off += h + (size_t)plen;
        if (c->state == ST_CLOSED)
            return false;
    }
    if (off > 0) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= (uint32_t)off;
    }
    return true;
}

static void on_readable(int i)
{
    conn_t *c = &conns[i];
    for (;;) {
        if (c->cap - c->len < 2048) {
            uint32_t cap = c->cap ? c->cap * 2 : 4096;
            if (cap > MAX_BUF) {
                NOTE("live_client: message over %d bytes\n", MAX_BUF);
                close_conn(i);
                return;
            }
            char *b = realloc(c->buf, cap);
            if (b == NULL)
                die("realloc");
            c->buf = b;
            c->cap = cap;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (r <= 0) {
            if (c->state != ST_CLOSED)
                NOTE("live_client: connection %d %s in state %d\n", i, r == 0 ? "closed" : strerror(errno), c->state);
            close_conn(i);
            return;
        }
        c->len += (uint32_t)r;
        if (c->state == ST_UPGRADING) {
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (e == NULL)
                continue;
            if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                NOTE("live_client: upgrade refused: %.*s\n", (int)(c->len < 200 ? c->len : 200), c->buf);
                n_refused++;
                close_conn(i);
                return;
            }
            size_t used = (size_t)(e + 4 - c->buf);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= (uint32_t)used;
            char join[160];
            snprintf(join, sizeof(join), "[\"1\",\"1\",\"%s\",\"phx_join\",{}]", opt.topics[i % opt.ntopics]);
            if (send_text(c->fd, join) != 0) {
                close_conn(i);
                return;
            }
            c->state = ST_JOINING;
        }
        if (c->state >= ST_JOINING && !on_frames(i))
            return;
        if ((size_t)r < 2048)
            break;
    }
    /* an idle connection keeps no buffer */
    if (c->len == 0 && c->cap > 4096) {
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
}

static int next_conn; /* the next connection to open */

static void open_conn(int i)
{
    conn_t *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        NOTE("live_client: socket %d: %s\n", i, strerror(errno));
        n_open_err++;
        c->state = ST_CLOSED;
        n_closed++;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % opt.srcs))};
    if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0)
        die("bind to a 127.0.0.x source address");
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &dst.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        NOTE("live_client: connect %d: %s\n", i, strerror(errno));
        n_open_err++;
        close(c->fd);
        c->fd = -1;
        c->state = ST_CLOSED;
        n_closed++;
        return;
    }
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

static void on_writable(int i)
{
    conn_t *c = &conns[i];
    if (c->state != ST_CONNECTING)
        return;
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        NOTE("live_client: connect %d: %s\n", i, strerror(err));
        n_open_err++;
        close_conn(i);
        return;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: bGl2ZS1iZW5jaC0xNmJ5dA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     opt.path, opt.host, opt.port);
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close_conn(i);
        return;
    }
    c->state = ST_UPGRADING;
    n_connected++;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Connections being opened, upgraded or joined right now. */
static int in_flight(void)
{
    return next_conn - n_joined - n_closed;
}

static void heartbeats(int second)
{
    for (int i = second % 30; i < opt.conns; i += 30)
        if (conns[i].state == ST_JOINED && send_text(conns[i].fd, "[null,\"2\",\"phoenix\",\"heartbeat\",{}]") != 0)
            close_conn(i);
}

/* ---- the poster: pre-signed requests over keep-alive connections -------------------------------- */

enum { NPOSTERS = 8, POSTER_BASE = 1 << 30 };
static poster_t posters[NPOSTERS];

static void poster_open(int p)
{
    posters[p].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &dst.sin_addr);
    if (posters[p].fd < 0 || connect(posters[p].fd, (struct sockaddr *)&dst, sizeof(dst)) != 0)
        die("poster connect");
    int one = 1;
    setsockopt(posters[p].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(posters[p].fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(POSTER_BASE + p)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, posters[p].fd, &ev) != 0)
        die("epoll_ctl poster");
}

static bool poster_send(int k)
{
    for (int p = 0; p < NPOSTERS; p++) {
        if (posters[p].busy)
            continue;
        posters[p].busy = true;
        posters[p].req = k;
        posters[p].len = 0;
        sent_us[k] = now_us();
        int fl = fcntl(posters[p].fd, F_GETFL);
        fcntl(posters[p].fd, F_SETFL, fl & ~O_NONBLOCK); /* a few hundred bytes: written whole */
        ssize_t w = send(posters[p].fd, req_data[k], req_len[k], MSG_NOSIGNAL);
        fcntl(posters[p].fd, F_SETFL, fl);
        if (w != (ssize_t)req_len[k])
            die("poster send");
        return true;
    }
    return false;
}

static void poster_readable(int p)
{
    poster_t *ps = &posters[p];
    ssize_t r = recv(ps->fd, ps->buf + ps->len, sizeof(ps->buf) - 1 - ps->len, 0);
    if (r <= 0) {
        if (r < 0 && errno == EAGAIN)
            return;
        if (!ps->busy && ps->len == 0) {
            /* an idle connection that never sent a request is closed by fleetd after its header
             * timeout (at low rates only the first posters are used): open it again */
            epoll_ctl(ep, EPOLL_CTL_DEL, ps->fd, NULL);
            close(ps->fd);
            poster_open(p);
            return;
        }
        NOTE("live_client: the poster's connection closed with a request in flight\n");
        exit(1);
    }
    ps->len += (uint32_t)r;
    ps->buf[ps->len] = '\0';
    char *e = strstr(ps->buf, "\r\n\r\n");
    if (e == NULL)
        return;
    const char *cl = strcasestr(ps->buf, "\ncontent-length:");
    size_t body = cl && cl < e ? strtoul(cl + 16, NULL, 10) : 0;
    size_t total = (size_t)(e + 4 - ps->buf) + body;
    if (ps->len < total)
        return;
    if (ps->busy) {
        acked_us[ps->req] = now_us();
        req_status[ps->req] = atoi(ps->buf + 9);
        if (req_status[ps->req] != 202)
            NOTE("live_client: request %d: %.*s\n", ps->req, (int)(ps->len < 300 ? ps->len : 300), ps->buf);
    }
    ps->busy = false;
    memmove(ps->buf, ps->buf + total, ps->len - total);
    ps->len -= (uint32_t)total;
}

static void load_requests(void)
{
    FILE *f = fopen(opt.requests, "rb");
    if (f == NULL)
        die(opt.requests);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *all = malloc((size_t)size + 1);
    if (all == NULL || fread(all, 1, (size_t)size, f) != (size_t)size)
        die("read requests");
    fclose(f);
    all[size] = '\0';
    for (long i = 0; i < size; i++)
        nreq += all[i] == '\0';
    req_data = calloc((size_t)nreq, sizeof(char *));
    req_len = calloc((size_t)nreq, sizeof(size_t));
    char *p = all;
    for (int k = 0; k < nreq; k++) {
        req_data[k] = p;
        req_len[k] = strlen(p);
        p += req_len[k] + 1;
    }
}

/* ---- the CPU time of a process, for the window ---------------------------------------------------- */

static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* /proc/stat: idle and steal jiffies of the machine */
static void machine_ticks(unsigned long long *total, unsigned long long *idle, unsigned long long *steal)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL ||
        fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 8) {
        if (f)
            fclose(f);
        *total = *idle = *steal = 0;
        return;
    }
    fclose(f);
    *total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    *idle = v[3] + v[4];
    *steal = v[7];
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- main ----------------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: live_client --port P --path PATH --conns N --topics fleet:A[,fleet:B...] [--srcs K] [--inflight M]\n"
            "         [--hold S] | [--requests FILE --gen-cmd CMD --prefix PREFIX --rate R --grace S] [--fleetd-pid PID]\n");
    exit(2);
}

static void parse_topics(char *list)
{
    for (char *t = strtok(list, ","); t; t = strtok(NULL, ",")) {
        opt.topics = realloc(opt.topics, (size_t)(opt.ntopics + 1) * sizeof(char *));
        if (strlen(t) > 100)
            usage();
        opt.topics[opt.ntopics++] = t;
    }
}

static int loop_once(int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int e = 0; e < n; e++) {
        uint64_t id = evs[e].data.u64;
        if (id >= POSTER_BASE) {
            poster_readable((int)(id - POSTER_BASE));
            continue;
        }
        int i = (int)id;
        if (conns[i].state == ST_CLOSED)
            continue;
        if (evs[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP) && conns[i].state == ST_CONNECTING)
            on_writable(i);
        if (conns[i].state != ST_CLOSED && conns[i].state != ST_CONNECTING && evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(i);
    }
    return n;
}

int main(int argc, char **argv)
{
    for (int a = 1; a < argc; a++) {
        const char *k = argv[a];
        if (a + 1 >= argc)
            usage();
        char *v = argv[++a];
        if (!strcmp(k, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(k, "--host"))
            opt.host = v;
        else if (!strcmp(k, "--path"))
            opt.path = v;
        else if (!strcmp(k, "--conns"))
            opt.conns = atoi(v);
        else if (!strcmp(k, "--topics"))
            parse_topics(v);
        else if (!strcmp(k, "--srcs"))
            opt.srcs = atoi(v);
        else if (!strcmp(k, "--inflight"))
            opt.inflight = atoi(v);
        else if (!strcmp(k, "--hold"))
            opt.hold = atoi(v);
        else if (!strcmp(k, "--requests"))
            opt.requests = v;
        else if (!strcmp(k, "--gen-cmd"))
            opt.gen_cmd = v;
        else if (!strcmp(k, "--prefix"))
            opt.prefix = v;
        else if (!strcmp(k, "--rate"))
            opt.rate = atoi(v);
        else if (!strcmp(k, "--grace"))
            opt.grace = atoi(v);
        else if (!strcmp(k, "--fleetd-pid"))
            opt.fleetd_pid = atoi(v);
        else
            usage();
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.path == NULL || opt.conns <= 0 || opt.conns > 1000000 || opt.ntopics == 0 ||
        opt.srcs < 1 || opt.srcs > 250 || opt.inflight < 1 || opt.rate < 1 || opt.rate > 10000 || opt.grace < 0 ||
        (opt.requests && (opt.prefix == NULL || opt.gen_cmd == NULL)))
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    setvbuf(stdout, NULL, _IOLBF, 0);

    conns = calloc((size_t)opt.conns, sizeof(conn_t));
    if (conns == NULL)
        die("calloc");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    t0_us = now_us();

    /* connect and join everyone, at most --inflight at a time; heartbeats already run */
    int64_t start = now_us(), last_progress = start, last_change = start;
    int last_second = -1, last_done = 0;
    while (!stop_flag && n_joined + n_closed < opt.conns) {
        while (next_conn < opt.conns && in_flight() < opt.inflight)
            open_conn(next_conn++);
        loop_once(100);
        int64_t t = now_us();
        int sec = (int)((t - start) / 1000000);
        if (sec != last_second) {
            heartbeats(sec);
            last_second = sec;
        }
        if (n_joined + n_closed != last_done) {
            last_done = n_joined + n_closed;
            last_change = t;
        }
        if (t - last_progress >= 5000000) {
            printf("PROGRESS joined=%d closed=%d in_flight=%d after %.1f s\n", n_joined, n_closed, in_flight(), (t - start) / 1e6);
            last_progress = t;
        }
        if (t - last_change > 60000000) {
            NOTE("live_client: no join answered for 60 s; giving up with %d joined\n", n_joined);
            break;
        }
    }
    double join_s = (now_us() - start) / 1e6;
    printf("READY joined=%d closed=%d refused=%d connect_errors=%d join_s=%.2f\n", n_joined, n_closed, n_refused, n_open_err,
           join_s);

    if (opt.requests == NULL) {
        int64_t until = opt.hold > 0 ? now_us() + (int64_t)opt.hold * 1000000 : INT64_MAX;
        while (!stop_flag && now_us() < until) {
            loop_once(200);
            int sec = (int)((now_us() - start) / 1000000);
            if (sec != last_second) {
                heartbeats(sec);
                last_second = sec;
            }
        }
        printf("RESULT joined=%d closed=%d positions=%" PRIu64 " other=%" PRIu64 "\n", n_joined, n_closed, n_positions, n_other);
        return 0;
    }

    /* let the join traffic (presence_diff to everyone) drain: until 1 s passes with nothing read */
    uint64_t seen = n_other;
    for (int quiet = 0; quiet < 10 && !stop_flag;) {
        loop_once(100);
        quiet = n_other == seen ? quiet + 1 : 0;
        seen = n_other;
    }
    int subscribers = n_joined;
    for (int i = 0; i < opt.conns; i++)
        conns[i].measured = conns[i].state == ST_JOINED;
    if (system(opt.gen_cmd) != 0) {
        NOTE("live_client: %s failed\n", opt.gen_cmd);
        return 1;
    }
    load_requests();
    sent_us = calloc((size_t)nreq, sizeof(int64_t));
    acked_us = calloc((size_t)nreq, sizeof(int64_t));
    req_status = calloc((size_t)nreq, sizeof(int));
    arrival = calloc((size_t)nreq * (size_t)opt.conns, sizeof(uint32_t));
    if (!sent_us || !acked_us || !req_status || !arrival)
        die("calloc");
    for (int p = 0; p < NPOSTERS; p++)
        poster_open(p);
    uint64_t positions0 = n_positions, other0 = n_other;

    unsigned long long m_total0, m_idle0, m_steal0, m_total1, m_idle1, m_steal1;
    machine_ticks(&m_total0, &m_idle0, &m_steal0);
    double self0 = self_cpu_s(), fleetd0 = opt.fleetd_pid ? proc_cpu_s(opt.fleetd_pid) : 0;
    int64_t w0 = now_us(), interval = 1000000 / opt.rate;
    int next = 0, late = 0;
    int64_t expect = (int64_t)nreq * subscribers, deadline = 0;
    while (!stop_flag) {
        int64_t t = now_us();
        while (next < nreq && t >= w0 + next * interval) {
            if (!poster_send(next))
                break; /* every poster busy: it goes when one frees */
            if (t - (w0 + next * interval) > 1000)
                late++;
            next++;
        }
        int64_t due = next < nreq ? w0 + next * interval - t : 1000;
        loop_once(due > 0 ? (int)((due + 999) / 1000) : 0);
        int sec = (int)((now_us() - start) / 1000000);
        if (sec != last_second) {
            heartbeats(sec);
            last_second = sec;
        }
        if (next == nreq) {
            bool acked = true;
            for (int p = 0; p < NPOSTERS; p++)
                acked = acked && !posters[p].busy;
            if (acked && deadline == 0)
                deadline = now_us() + (int64_t)opt.grace * 1000000;
            if ((int64_t)(n_positions - positions0 - n_unknown) >= expect && acked)
                break;
            if (deadline && now_us() > deadline)
                break;
        }
    }
    int64_t w1 = now_us();
    double self1 = self_cpu_s(), fleetd1 = opt.fleetd_pid ? proc_cpu_s(opt.fleetd_pid) : 0;
    machine_ticks(&m_total1, &m_idle1, &m_steal1);

    /* the figures */
    size_t pairs = 0, missing = 0;
    uint32_t *lat = malloc((size_t)nreq * (size_t)opt.conns * sizeof(uint32_t));
    int64_t *acks = malloc((size_t)nreq * sizeof(int64_t));
    int non202 = 0, nacks = 0;
    if (lat == NULL || acks == NULL)
        die("malloc");
    for (int k = 0; k < nreq; k++) {
        if (req_status[k] != 202) {
            non202++;
            continue;
        }
        acks[nacks++] = acked_us[k] - sent_us[k];
        for (int i = 0; i < opt.conns; i++) {
            uint32_t a = arrival[(size_t)k * (size_t)opt.conns + (size_t)i];
            if (a == 0) {
                if (conns[i].measured)
                    missing++;
                continue;
            }
            int64_t d = (t0_us + a - 1) - sent_us[k];
            lat[pairs++] = d < 0 ? 0 : (uint32_t)d;
        }
    }
    qsort(lat, pairs, sizeof(uint32_t), cmp_u32);
    qsort(acks, (size_t)nacks, sizeof(int64_t), cmp_i64);
#define PCT(a, n, q) ((n) ? (double)(a)[(size_t)(((double)(n)-1) * (q) + 0.5)] / 1000.0 : 0.0)
    double mt = (double)(m_total1 - m_total0);
    printf("RESULT subscribers=%d requests=%d non202=%d late_sends=%d pairs=%zu missing=%zu dup=%" PRIu64
           " lat_p50_ms=%.2f lat_p99_ms=%.2f lat_p999_ms=%.2f lat_max_ms=%.2f ack_p50_ms=%.2f ack_p99_ms=%.2f ack_max_ms=%.2f"
           " window_s=%.2f client_cpu_s=%.2f fleetd_cpu_s=%.2f machine_idle_pct=%.1f steal_pct=%.1f other_frames=%" PRIu64
           " closed=%d join_s=%.2f\n",
           subscribers, nreq, non202, late, pairs, missing, n_dup, PCT(lat, pairs, 0.5), PCT(lat, pairs, 0.99),
           PCT(lat, pairs, 0.999), pairs ? lat[pairs - 1] / 1000.0 : 0.0, PCT(acks, nacks, 0.5), PCT(acks, nacks, 0.99),
           nacks ? acks[nacks - 1] / 1000.0 : 0.0, (w1 - w0) / 1e6, self1 - self0, fleetd1 - fleetd0,
           mt > 0 ? 100.0 * (double)(m_idle1 - m_idle0) / mt : 0, mt > 0 ? 100.0 * (double)(m_steal1 - m_steal0) / mt : 0,
           n_other - other0, n_closed, join_s);
    return 0;
}
