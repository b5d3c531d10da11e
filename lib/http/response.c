/* Responses: the head is written straight into the connection's output queue (no printf), the
 * body copied after it or borrowed by reference; then the access-log line and the hand-back to
 * the connection, which writes the batch. */
#include "http_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *resp_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default: {
        const char *s = http_status_str((enum http_status)status);
        return s[0] == '<' ? "Unknown" : s; /* "<unknown>" */
    }
    }
}

/* The Date header's value, formatted once per second per thread. */
static _Thread_local time_t date_sec = -1;
static _Thread_local char date_text[64];

static const char *http_date(void)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(date_text, sizeof(date_text), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
                 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        date_sec = now;
    }
    return date_text;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, s) put((p), (s), sizeof(s) - 1)

static char *put_str(char *p, const char *s)
{
    return put(p, s, strlen(s));
}

static char *put_uint(char *p, size_t n)
{
    char tmp[24];
    int i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    return put(p, tmp + i, sizeof(tmp) - (size_t)i);
}

/* JSON string contents of s into [p, end); stops early (never mid-escape) when out of room. */
static char *put_json_escaped(char *p, char *end, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            if (end - p < 2)
                break;
            *p++ = '\\';
            *p++ = (char)*c;
        } else if (*c < 0x20 || *c == 0x7f) {
            if (end - p < 6)
                break;
            p = put(p, "\\u00", 4);
            *p++ = hex[*c >> 4];
            *p++ = hex[*c & 15];
        } else {
            if (end - p < 1)
                break;
            *p++ = (char)*c;
        }
    }
    return p;
}

size_t resp_error_body(char *out, size_t outlen, const char *code, const char *message)
{
    static const char a[] = "{\"error\":{\"code\":\"", b[] = "\",\"message\":\"", z[] = "\"}}";
    if (outlen < sizeof(a) + sizeof(b) + sizeof(z))
        return 0;
    char *end = out + outlen - (sizeof(z) - 1);
    char *p = PUT_LIT(out, a);
    p = put_json_escaped(p, end - (sizeof(b) - 1), code ? code : "error");
    p = PUT_LIT(p, b);
    p = put_json_escaped(p, end, message ? message : "");
    p = PUT_LIT(p, z);
    return (size_t)(p - out);
}

size_t resp_canned_503(char *out, size_t outlen)
{
    static const char body[] = "{\"error\":{\"code\":\"unavailable\",\"message\":\"the server is at its connection limit; retry "
                               "shortly\"}}";
    char id[17];
    req_generate_id(id);
    int n = snprintf(out, outlen,
                     "HTTP/1.1 503 Service Unavailable\r\nServer: fleetd\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nRetry-After: 1\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n%s",
                     sizeof(body) - 1, id, body);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

static void access_log(const fl_http_req_t *req, int status, size_t bytes)
{
    double ms = req->start_ns ? (double)(fl_now_mono_ns() - req->start_ns) / 1e6 : 0.0;
    fl_log(FL_LOG_INFO, "http.access", FL_STR("method", fl_http_req_method_name(req)),
           FL_STR("path", req->path      ? req->path
                          : req->has_url ? req->head
                                         : ""),
           FL_INT("status", status), FL_INT("bytes", bytes), FL_DBL("duration_ms", ms), FL_RID(req->id),
           FL_STR("peer", fl_http_req_peer(req)));
}

void resp_send(fl_http_req_t *req, int status, const char *ctype, const void *body, size_t len, bool body_copy,
               void (*release)(void *ctx), void *ctx, const char *extra)
{
    if (req->state != RS_HANDLER) {
        fl_log(FL_LOG_ERROR, "http.response_unexpected", FL_MSG("a response was sent for a request not waiting for one"),
               FL_INT("status", status), FL_RID(req->id));
        if (release)
            release(ctx);
        return;
    }
    req->state = RS_ANSWERED;
    http_conn_t *c = req->conn;
    if (c == NULL || c->zombie) { /* no socket (fuzzing), or the client is gone */
        if (release)
            release(ctx);
        if (c)
            conn_answered(c);
        return;
    }
    fl_assert(fl_shard_current() == c->hs->shard);
    if (status < 100 || status > 999)
        status = 500;
    if (req->id[0] == '\0')
        req_generate_id(req->id);

    bool bodiless_status = status < 200 || status == 204 || status == 304;
    bool send_body = !bodiless_status && !req->is_head && len > 0;
    bool closing = c->close_after || !req->keep_alive || req->phase == PH_ERROR ||
                   atomic_load_explicit(&c->hs->srv->draining, memory_order_relaxed);
    size_t ctlen = ctype ? strlen(ctype) : 0;
    size_t extlen = extra ? strlen(extra) : 0;
    for (const xhdr_t *x = req->xhdrs; x; x = x->next)
        extlen += strlen(x->name) + strlen(x->value) + 4;
    size_t copy = send_body && body_copy ? len : 0;
    size_t max = 256 + ctlen + extlen + strlen(req->id) + copy;

    char *p0 = max >= copy ? outq_reserve(&c->out, max) : NULL;
    if (p0 == NULL) {
        fl_log(FL_LOG_ERROR, "http.out_of_memory", FL_MSG("cannot queue a response; closing the connection"),
               FL_INT("status", status), FL_RID(req->id), FL_STR("peer", c->peer));
        if (release)
            release(ctx);
        c->failed = true;
        conn_answered(c);
        return;
    }
    char *p = PUT_LIT(p0, "HTTP/1.1 ");
    *p++ = (char)('0' + status / 100);
    *p++ = (char)('0' + status / 10 % 10);
    *p++ = (char)('0' + status % 10);
    *p++ = ' ';
    p = put_str(p, resp_reason(status));
    p = PUT_LIT(p, "\r\nServer: fleetd\r\nDate: ");
    p = put_str(p, http_date());
    if (ctype) {
        p = PUT_LIT(p, "\r\nContent-Type: ");
        p = put(p, ctype, ctlen);
    }
    if (!bodiless_status) {
        p = PUT_LIT(p, "\r\nContent-Length: ");
        p = put_uint(p, len);
    }
    p = PUT_LIT(p, "\r\nX-Request-Id: ");
    p = put_str(p, req->id);
    p = PUT_LIT(p, "\r\n");
    if (extra)
        p = put_str(p, extra);
    for (const xhdr_t *x = req->xhdrs; x; x = x->next) {
        p = put_str(p, x->name);
        p = PUT_LIT(p, ": ");
        p = put_str(p, x->value);
        p = PUT_LIT(p, "\r\n");
    }
    if (closing)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (req->hp.http_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    if (copy)
        p = put(p, body, len);
    outq_commit(&c->out, (size_t)(p - p0));
    if (send_body && !body_copy)
        outq_add_ref(&c->out, body, len, release, ctx); /* cannot fail: outq_reserve kept a segment free */
    else if (release)
        release(ctx);
    if (closing)
        c->close_after = true;
    if (c->hs->srv->cfg->access_log)
        access_log(req, status, send_body ? len : 0);
    stats_count(c, req, status);
    conn_answered(c);
}

void fl_http_respond(fl_http_req_t *req, int status, const char *content_type, const void *body, size_t len)
{
    resp_send(req, status, content_type, body, len, true, NULL, NULL, NULL);
}

void fl_http_respond_ref(fl_http_req_t *req, int status, const char *content_type, const void *body, size_t len,
                         void (*release)(void *ctx), void *ctx)
{
    resp_send(req, status, content_type, body, len, false, release, ctx, NULL);
}

void fl_http_respond_error(fl_http_req_t *req, int status, const char *code, const char *message)
{
    char body[1024];
    size_t n = resp_error_body(body, sizeof(body), code, message);
    resp_send(req, status, "application/json", body, n, true, NULL, NULL, NULL);
}

static bool token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

int fl_http_set_header(fl_http_req_t *req, const char *name, const char *value)
{
    static const char *const managed[] = {"content-length", "transfer-encoding", "connection", "date", "server", "x-request-id"};
    if (req == NULL || name == NULL || value == NULL || name[0] == '\0')
        return FL_EINVAL;
    if (req->state != RS_HANDLER)
        return FL_ESTATE;
    for (const char *c = name; *c; c++)
        if (!token_char(*c))
            return FL_EINVAL;
    for (const char *c = value; *c; c++)
        if (*c == '\r' || *c == '\n')
            return FL_EINVAL;
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++)
        if (strcasecmp(name, managed[i]) == 0)
            return FL_EINVAL;
    xhdr_t *x = arena_alloc(&req->arena, sizeof(*x));
    char *n = x ? arena_strndup(&req->arena, name, strlen(name)) : NULL;
    char *v = n ? arena_strndup(&req->arena, value, strlen(value)) : NULL;
    if (v == NULL)
        return FL_ENOMEM;
    *x = (xhdr_t){.next = NULL, .name = n, .value = v};
    *req->xtail = x;
    req->xtail = &x->next;
    return FL_OK;
}
