/* Request parsing: Debian's http_parser (callback API) fills a fl_http_req_t, one message at a
 * time (the parser pauses at the end of each message so pipelined requests wait their turn),
 * and the limits of fl_config_t are enforced as the bytes arrive. No sockets here: the
 * connection feeds bytes in, and so does the fuzz harness. */
#include "http_internal.h"

#include <string.h>
#include <strings.h>

enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };

/* Memory kept across the requests of a connection; more than this is returned after a request. */
#define HEAD_FIRST_BYTES  1024
#define HEAD_KEEP_BYTES   (16 * 1024)
#define HDRS_FIRST        16
#define BODY_KEEP_BYTES   (64 * 1024)
#define ARENA_FIRST_BYTES 512

void req_fail(fl_http_req_t *req, int status, const char *code, const char *msg)
{
    req->phase = PH_ERROR;
    req->err_status = status;
    req->err_code = code;
    req->err_msg = msg;
    req->keep_alive = false;
}

static int fail_cb(fl_http_req_t *req, int status, const char *code, const char *msg)
{
    req_fail(req, status, code, msg);
    return -1;
}

static int out_of_memory(fl_http_req_t *req)
{
    return fail_cb(req, 503, "unavailable", "the server is out of memory; retry shortly");
}

/* Appends to the string being built (cont) or starts a new one, keeping it NUL-terminated. */
static bool head_put(fl_http_req_t *req, const char *at, size_t len, bool cont, uint32_t *off)
{
    size_t pos = cont ? req->head_len - 1 : req->head_len;
    size_t need = pos + len + 1;
    if (need > req->head_cap) {
        size_t cap = req->head_cap * 2 > need ? req->head_cap * 2 : need;
        char *head = fl_realloc(req->head, cap);
        if (head == NULL)
            return false;
        req->head = head;
        req->head_cap = cap;
    }
    if (!cont && off)
        *off = (uint32_t)pos;
    memcpy(req->head + pos, at, len);
    req->head[pos + len] = '\0';
    req->head_len = need;
    return true;
}

static int on_message_begin(http_parser *hp)
{
    fl_http_req_t *req = hp->data;
    req->phase = PH_HEAD;
    if (req->cfg->access_log)
        req->start_ns = fl_now_mono_ns();
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    fl_http_req_t *req = hp->data;
    if (!head_put(req, at, len, req->has_url, NULL))
        return out_of_memory(req);
    req->has_url = true;
    req->last_cb = CB_URL;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    fl_http_req_t *req = hp->data;
    if (req->phase != PH_HEAD)
        return 0; /* chunked trailers: not kept */
    bool cont = req->last_cb == CB_FIELD;
    if (!cont) {
        if (req->nhdrs >= (unsigned)req->cfg->max_headers)
            return fail_cb(req, 431, "headers_too_large", "the request has too many header fields");
        if (req->nhdrs == req->hdrs_cap) {
            unsigned cap = req->hdrs_cap * 2;
            hdr_t *hdrs = fl_realloc(req->hdrs, cap * sizeof(*hdrs));
            if (hdrs == NULL)
                return out_of_memory(req);
            req->hdrs = hdrs;
            req->hdrs_cap = cap;
        }
        req->hdrs[req->nhdrs++] = (hdr_t){.name = 0, .value = UINT32_MAX};
    }
    if (!head_put(req, at, len, cont, &req->hdrs[req->nhdrs - 1].name))
        return out_of_memory(req);
    req->last_cb = CB_FIELD;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    fl_http_req_t *req = hp->data;
    if (req->phase != PH_HEAD || req->nhdrs == 0)
        return 0;
    bool cont = req->last_cb == CB_VALUE;
    if (!head_put(req, at, len, cont, &req->hdrs[req->nhdrs - 1].value))
        return out_of_memory(req);
    req->last_cb = CB_VALUE;
    return 0;
}

static const char *header_value(const fl_http_req_t *req, const hdr_t *h)
{
    return h->value == UINT32_MAX ? "" : req->head + h->value;
}

static int method_bit(unsigned m)
{
    switch (m) {
    case HTTP_GET:
        return FL_HTTP_GET;
    case HTTP_HEAD:
        return FL_HTTP_HEAD;
    case HTTP_POST:
        return FL_HTTP_POST;
    case HTTP_PUT:
        return FL_HTTP_PUT;
    case HTTP_DELETE:
        return FL_HTTP_DELETE;
    case HTTP_PATCH:
        return FL_HTTP_PATCH;
    case HTTP_OPTIONS:
        return FL_HTTP_OPTIONS;
    default:
        return 0;
    }
}

/* path and query from the request target; the URL string is ours, so it is cut in place. */
static void split_url(fl_http_req_t *req)
{
    static char root[] = "/";
    char *url = req->has_url ? req->head : root;
    req->path = url;
    req->query = "";
    if (url[0] == '/') {
        char *cut = strpbrk(url, "?#");
        if (cut && *cut == '?') {
            char *hash = strchr(cut + 1, '#');
            if (hash)
                *hash = '\0';
            req->query = cut + 1;
        }
        if (cut)
            *cut = '\0';
        return;
    }
    /* absolute-form (a proxy's "http://host/path?q"); "*" and authority-form stay as sent */
    size_t len = strlen(url);
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (len > UINT16_MAX || http_parser_parse_url(url, len, req->hp.method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_SCHEMA)))
        return;
    char *query = NULL;
    if (u.field_set & (1 << UF_QUERY)) {
        query = url + u.field_data[UF_QUERY].off;
        query[u.field_data[UF_QUERY].len] = '\0';
    }
    if (u.field_set & (1 << UF_PATH)) {
        req->path = url + u.field_data[UF_PATH].off;
        url[u.field_data[UF_PATH].off + u.field_data[UF_PATH].len] = '\0';
    } else {
        req->path = root;
    }
    if (query)
        req->query = query;
}

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

static void take_request_id(fl_http_req_t *req, const char *v)
{
    size_t n = 0;
    if (v) {
        while (n <= 128 && id_char(v[n]))
            n++;
        if (n >= 1 && n <= 128 && v[n] == '\0') {
            memcpy(req->id, v, n + 1);
            return;
        }
    }
    req_generate_id(req->id);
}

static bool reserve_body(fl_http_req_t *req, size_t need)
{
    if (need <= req->body_cap)
        return true;
    char *body = fl_realloc(req->body, need);
    if (body == NULL)
        return false;
    req->body = body;
    req->body_cap = need;
    return true;
}

static int on_headers_complete(http_parser *hp)
{
    fl_http_req_t *req = hp->data;
    req->phase = PH_BODY;
    req->method = method_bit(hp->method);
    req->is_head = hp->method == HTTP_HEAD;
    req->keep_alive = http_should_keep_alive(hp) && hp->method != HTTP_CONNECT;
    req->wants_upgrade = hp->upgrade && hp->method != HTTP_CONNECT;
    split_url(req);

    const char *expect = NULL, *rid = NULL;
    for (unsigned i = 0; i < req->nhdrs; i++) {
        const char *name = req->head + req->hdrs[i].name;
        if (!req->content_type && strcasecmp(name, "content-type") == 0)
            req->content_type = header_value(req, &req->hdrs[i]);
        else if (!expect && strcasecmp(name, "expect") == 0)
            expect = header_value(req, &req->hdrs[i]);
        else if (!rid && strcasecmp(name, "x-request-id") == 0)
            rid = header_value(req, &req->hdrs[i]);
    }
    take_request_id(req, rid);

    if (hp->http_major != 1)
        return fail_cb(req, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served");
    bool has_length = hp->flags & F_CONTENTLENGTH, chunked = hp->flags & F_CHUNKED;
    if ((req->method & (FL_HTTP_POST | FL_HTTP_PUT | FL_HTTP_PATCH)) && !has_length && !chunked)
        return fail_cb(req, 411, "length_required", "a request body needs Content-Length or Transfer-Encoding: chunked");
    if (has_length && hp->content_length > (uint64_t)req->cfg->max_body_bytes)
        return fail_cb(req, 413, "payload_too_large", "the request body is larger than the server accepts");
    /* fleetd takes JSON bodies only: anything else is refused before routing and before the
     * body is read (like 413). */
    if ((chunked || (has_length && hp->content_length > 0)) && !req_is_json(req->content_type))
        return fail_cb(req, 415, "unsupported_media_type", "a request body must be application/json");
    if (expect && expect[0]) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail_cb(req, 417, "expectation_failed", "the only expectation served is 100-continue");
        req->expect_continue = chunked || (has_length && hp->content_length > 0);
    }
    if (has_length && hp->content_length > 0 && !reserve_body(req, (size_t)hp->content_length + 1))
        return out_of_memory(req);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    fl_http_req_t *req = hp->data;
    size_t max = (size_t)req->cfg->max_body_bytes;
    if (len > max - req->body_len)
        return fail_cb(req, 413, "payload_too_large", "the request body is larger than the server accepts");
    size_t need = req->body_len + len + 1;
    if (need > req->body_cap) {
        size_t cap = req->body_cap < 4096 ? 4096 : req->body_cap * 2;
        if (cap > max + 1)
            cap = max + 1;
        if (!reserve_body(req, cap > need ? cap : need))
            return out_of_memory(req);
    }
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    fl_http_req_t *req = hp->data;
    req->phase = PH_DONE;
    /* Stop after this message: the next pipelined one waits until this one is answered. */
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

size_t req_feed(fl_http_req_t *req, const char *data, size_t len, int *event)
{
    size_t total = 0;
    *event = req->phase == PH_DONE ? FEED_DONE : req->phase == PH_ERROR ? FEED_ERROR : FEED_MORE;
    if (*event != FEED_MORE)
        return 0;
    size_t max_head = (size_t)req->cfg->max_header_bytes;
    while (total < len) {
        bool in_head = req->phase <= PH_HEAD;
        size_t chunk = len - total;
        /* Never hand the parser more head bytes than the limit allows, so 431 is exact. */
        if (in_head && chunk > max_head + 1 - req->head_bytes)
            chunk = max_head + 1 - req->head_bytes;
        size_t got = http_parser_execute(&req->hp, &settings, data + total, chunk);
        total += got;
        if (in_head)
            req->head_bytes += got;
        enum http_errno err = HTTP_PARSER_ERRNO(&req->hp);
        if (err == HPE_PAUSED) {
            http_parser_pause(&req->hp, 0);
            *event = FEED_DONE;
            return total;
        }
        if (err != HPE_OK) {
            if (req->phase != PH_ERROR) {
                if (err == HPE_HEADER_OVERFLOW)
                    req_fail(req, 431, "headers_too_large", "the request headers are larger than the server accepts");
                else
                    req_fail(req, 400, "bad_request", http_errno_description(err));
            }
            *event = FEED_ERROR;
            return total;
        }
        if (req->phase <= PH_HEAD && req->head_bytes > max_head) {
            req_fail(req, 431, "headers_too_large", "the request headers are larger than the server accepts");
            *event = FEED_ERROR;
            return total;
        }
        if (got < chunk) { /* the parser stopped without saying why: treat as malformed */
            req_fail(req, 400, "bad_request", "the request could not be parsed");
            *event = FEED_ERROR;
            return total;
        }
    }
    return total;
}

static void parser_reset(fl_http_req_t *req)
{
    http_parser_init(&req->hp, HTTP_REQUEST);
    req->hp.data = req;
}

int req_init(fl_http_req_t *req, const fl_config_t *cfg)
{
    memset(req, 0, sizeof(*req));
    req->cfg = cfg;
    req->head = fl_malloc(HEAD_FIRST_BYTES);
    req->hdrs = fl_malloc(HDRS_FIRST * sizeof(hdr_t));
    if (req->head == NULL || req->hdrs == NULL || arena_init(&req->arena, ARENA_FIRST_BYTES) != FL_OK) {
        req_cleanup(req);
        return FL_ENOMEM;
    }
    req->head_cap = HEAD_FIRST_BYTES;
    req->hdrs_cap = HDRS_FIRST;
    req->xtail = &req->xhdrs;
    parser_reset(req);
    return FL_OK;
}

void req_cleanup(fl_http_req_t *req)
{
    fl_free(req->head);
    fl_free(req->hdrs);
    fl_free(req->body);
    arena_free(&req->arena);
    req->head = NULL;
    req->hdrs = NULL;
    req->body = NULL;
    req->head_cap = req->body_cap = 0;
    req->hdrs_cap = 0;
}

void req_next(fl_http_req_t *req)
{
    parser_reset(req);
    req->phase = PH_IDLE;
    req->state = RS_READING;
    req->last_cb = CB_NONE;
    req->keep_alive = req->wants_upgrade = req->expect_continue = req->continue_sent = req->is_head = false;
    req->method = 0;
    req->head_bytes = 0;
    req->err_status = 0;
    req->err_code = req->err_msg = NULL;
    req->head_len = 0;
    req->has_url = false;
    req->nhdrs = 0;
    req->path = req->query = req->content_type = NULL;
    req->body_len = 0;
    req->id[0] = '\0';
    req->ep = NULL;
    req->nparams = 0;
    req->xhdrs = NULL;
    req->xtail = &req->xhdrs;
    req->start_ns = 0;
    arena_reset(&req->arena);
    /* Give back what one large request made us grow. */
    if (req->head_cap > HEAD_KEEP_BYTES) {
        char *small = fl_malloc(HEAD_FIRST_BYTES);
        if (small) {
            fl_free(req->head);
            req->head = small;
            req->head_cap = HEAD_FIRST_BYTES;
        }
    }
    if (req->body_cap > BODY_KEEP_BYTES) {
        fl_free(req->body);
        req->body = NULL;
        req->body_cap = 0;
    }
}
