/* The commands' HTTP client (cli_http.h). */
#include "cli_http.h"

#include <errno.h>
#include <http_parser.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

enum { MAX_RESPONSE = 64 << 20, MAX_REQUEST_HEAD = 8192 };

int cli_http_split_url(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
    if (strncmp(url, "http://", 7) == 0)
        url += 7;
    const char *end = url + strcspn(url, "/");
    const char *colon;
    if (*url == '[') {
        const char *close = memchr(url, ']', (size_t)(end - url));
        if (close == NULL || close[1] != ':')
            return FL_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(close - url - 1), url + 1);
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = url; p < end; p++)
            if (*p == ':')
                colon = p;
        if (colon == NULL)
            return FL_EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(colon - url), url);
    }
    snprintf(port, portlen, "%.*s", (int)(end - colon - 1), colon + 1);
    if (host[0] == '\0' || port[0] == '\0' || strspn(port, "0123456789") != strlen(port))
        return FL_EINVAL;
    return FL_OK;
}

/* ---- reading the response ---- */

typedef struct {
    cli_http_response_t *res;
    fl_strbuf_t body;
    char field[32]; /* the header name being read (longer names are not ones we look for) */
    size_t field_len;
    bool in_value; /* the parser is in a header's value: the next name is a new one */
    bool in_retry_after;
    bool done;
} reader_t;

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    reader_t *r = hp->data;
    if (r->in_value)
        r->field_len = 0;
    r->in_value = false;
    size_t room = sizeof(r->field) - 1 - r->field_len;
    size_t n = len < room ? len : room;
    memcpy(r->field + r->field_len, at, n);
    r->field_len += n;
    r->field[r->field_len] = '\0';
    return 0;
}

/* Retry-After in delta-seconds; an HTTP date (fleetd never sends one) counts as absent. */
static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    reader_t *r = hp->data;
    if (!r->in_value) {
        r->in_value = true;
        r->in_retry_after = strcasecmp(r->field, "Retry-After") == 0;
        if (r->in_retry_after)
            r->res->retry_after_s = 0;
    }
    for (size_t i = 0; r->in_retry_after && i < len; i++) {
        if (at[i] >= '0' && at[i] <= '9' && r->res->retry_after_s >= 0 && r->res->retry_after_s < 100000000)
            r->res->retry_after_s = r->res->retry_after_s * 10 + (at[i] - '0');
        else if (at[i] != ' ' && at[i] != '\t')
            r->res->retry_after_s = -1;
    }
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    reader_t *r = hp->data;
    if (r->body.len + len > MAX_RESPONSE)
        return 1;
    fl_strbuf_add(&r->body, at, len);
    return r->body.failed ? 1 : 0;
}

static int on_message_complete(http_parser *hp)
{
    reader_t *r = hp->data;
    r->done = true;
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the exchange ---- */

static int connect_to(const char *host, const char *port, int timeout_ms, int *out, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return FL_EUNAVAIL;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int fd = -1, saved = 0;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* also bounds connect */
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s port %s: %s", host, port, strerror(saved));
        return saved == EINTR ? FL_EIO : FL_EUNAVAIL;
    }
    *out = fd;
    return FL_OK;
}

static int send_all(int fd, const void *data, size_t len, char *err, size_t errlen)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            snprintf(err, errlen, "cannot send the request: %s",
                     errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
            return FL_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return FL_OK;
}

static int receive(int fd, cli_http_response_t *res, char *err, size_t errlen)
{
    reader_t r = {.res = res};
    http_parser hp;
    http_parser_init(&hp, HTTP_RESPONSE);
    hp.data = &r;
    char buf[16384];
    int st = FL_OK;
    while (!r.done) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            snprintf(err, errlen, "no answer from the daemon: %s",
                     errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
            st = FL_EIO;
            break;
        }
        size_t used = http_parser_execute(&hp, &parser_settings, buf, (size_t)n); /* n == 0: the end of the stream */
        if (HTTP_PARSER_ERRNO(&hp) != HPE_OK || used != (size_t)n) {
            snprintf(err, errlen, "%s",
                     r.body.failed                ? "out of memory"
                     : r.body.len >= MAX_RESPONSE ? "the daemon's answer is too large"
                                                  : "the daemon's answer is not HTTP");
            st = r.body.failed ? FL_ENOMEM : FL_EPROTO;
            break;
        }
        if (n == 0 && !r.done) {
            snprintf(err, errlen, "the daemon closed the connection before it answered in full");
            st = FL_EIO;
            break;
        }
    }
    if (st == FL_OK) {
        fl_strbuf_add(&r.body, "", 0); /* a body of no bytes is still a string */
        if (r.body.failed) {
            snprintf(err, errlen, "out of memory");
            st = FL_ENOMEM;
        }
    }
    if (st != FL_OK) {
        fl_strbuf_free(&r.body);
        return st;
    }
    res->status = (int)hp.status_code;
    res->body = r.body.p;
    res->body_len = r.body.len;
    return FL_OK;
}

int cli_http_request(const char *url, const char *method, const char *path, const char *headers, const void *body, size_t body_len,
                     int timeout_ms, cli_http_response_t *res, char *err, size_t errlen)
{
    *res = (cli_http_response_t){.retry_after_s = -1};
    char host[256], port[16];
    if (cli_http_split_url(url, host, sizeof(host), port, sizeof(port)) != FL_OK) {
        snprintf(err, errlen, "\"%s\" is not a daemon address (expected http://HOST:PORT)", url);
        return FL_EINVAL;
    }
    char head[MAX_REQUEST_HEAD];
    bool v6 = strchr(host, ':') != NULL;
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nAccept: application/json\r\nConnection: close\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, v6 ? "[" : "", host, v6 ? "]" : "", port, headers ? headers : "", body_len);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        snprintf(err, errlen, "the request's head is too long");
        return FL_EINVAL;
    }
    int fd, st = connect_to(host, port, timeout_ms, &fd, err, errlen);
    if (st != FL_OK)
        return st;
    st = send_all(fd, head, (size_t)n, err, errlen);
    if (st == FL_OK && body_len > 0)
        st = send_all(fd, body, body_len, err, errlen);
    if (st == FL_OK)
        st = receive(fd, res, err, errlen);
    close(fd);
    return st;
}

void cli_http_response_free(cli_http_response_t *res)
{
    fl_free(res->body);
    res->body = NULL;
}
