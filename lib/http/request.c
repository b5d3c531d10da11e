/* Request accessors, percent-decoding, route resolution and request ids. */
#include "http_internal.h"

#include <string.h>
#include <strings.h>

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The byte at s[*i] decoded, advancing *i. A malformed escape, and %00 (which would cut a C
 * string short), stay as they were sent. */
static char decode_at(const char *s, size_t n, size_t *i, bool plus)
{
    char c = s[*i];
    if (c == '%' && n - *i >= 3) {
        int hi = unhex(s[*i + 1]), lo = unhex(s[*i + 2]);
        if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
            *i += 3;
            return (char)(hi << 4 | lo);
        }
    }
    (*i)++;
    return plus && c == '+' ? ' ' : c;
}

size_t http_decode(const char *s, size_t n, bool plus, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;)
        out[o++] = decode_at(s, n, &i, plus);
    out[o] = '\0';
    return o;
}

char *req_decode(fl_http_req_t *req, const char *s, size_t n, bool plus)
{
    char *out = arena_alloc(&req->arena, n + 1);
    if (out == NULL)
        return NULL;
    http_decode(s, n, plus, out);
    return out;
}

/* Compares the decoded form of s[0..n) with name, without decoding into memory. */
static bool decoded_equals(const char *s, size_t n, const char *name)
{
    size_t i = 0, j = 0;
    while (i < n) {
        if (name[j] == '\0' || decode_at(s, n, &i, true) != name[j])
            return false;
        j++;
    }
    return name[j] == '\0';
}

int fl_http_req_method(const fl_http_req_t *req)
{
    return req->method;
}

const char *fl_http_req_method_name(const fl_http_req_t *req)
{
    return req->has_url ? http_method_str((enum http_method)req->hp.method) : "";
}

const char *fl_http_req_path(const fl_http_req_t *req)
{
    return req->path ? req->path : "";
}

const char *fl_http_req_query_string(const fl_http_req_t *req)
{
    return req->query ? req->query : "";
}

const char *fl_http_req_query(const fl_http_req_t *req, const char *name)
{
    const char *q = req->query;
    if (q == NULL || name == NULL)
        return NULL;
    for (;;) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        if (decoded_equals(q, klen, name)) {
            const char *v = eq ? eq + 1 : q + len;
            /* The request is const to callers; the arena is the request's scratch memory. */
            return req_decode((fl_http_req_t *)(uintptr_t)req, v, (size_t)(q + len - v), true);
        }
        if (amp == NULL)
            return NULL;
        q = amp + 1;
    }
}

const char *fl_http_req_header(const fl_http_req_t *req, const char *name)
{
    if (name == NULL || req->phase < PH_BODY)
        return NULL;
    for (unsigned i = 0; i < req->nhdrs; i++)
        if (strcasecmp(req->head + req->hdrs[i].name, name) == 0)
            return req->hdrs[i].value == UINT32_MAX ? "" : req->head + req->hdrs[i].value;
    return NULL;
}

const char *fl_http_req_param(const fl_http_req_t *req, const char *name)
{
    if (req->ep == NULL || name == NULL)
        return NULL;
    for (unsigned i = 0; i < req->nparams; i++)
        if (strcmp(req->ep->names[i], name) == 0)
            return req->pvalues[i];
    return NULL;
}

const char *fl_http_req_body(const fl_http_req_t *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body_len ? req->body : "";
}

const char *fl_http_req_id(const fl_http_req_t *req)
{
    return req->id;
}

const char *fl_http_req_peer(const fl_http_req_t *req)
{
    return req->conn ? req->conn->peer : "";
}

bool fl_http_req_peer_is_loopback(const fl_http_req_t *req)
{
    return req->conn ? req->conn->loopback : false;
}

fl_shard_t *fl_http_req_shard(const fl_http_req_t *req)
{
    return req->conn ? req->conn->hs->shard : NULL;
}

fl_http_server_t *fl_http_req_server(const fl_http_req_t *req)
{
    return req->conn ? req->conn->hs->srv : NULL;
}

bool fl_http_req_wants_upgrade(const fl_http_req_t *req)
{
    return req->wants_upgrade;
}

bool req_is_json(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, "application/json", 16) != 0)
        return false;
    const char *p = ct + 16;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return true;
        if (*p++ != ';')
            return false;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *name = p;
        while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nlen = (size_t)(p - name);
        if (*p != '=')
            return false;
        p++;
        const char *val = p;
        size_t vlen;
        if (*p == '"') {
            val = ++p;
            while (*p && *p != '"')
                p++;
            if (*p != '"')
                return false;
            vlen = (size_t)(p - val);
            p++;
        } else {
            while (*p && *p != ';' && *p != ' ' && *p != '\t')
                p++;
            vlen = (size_t)(p - val);
        }
        if (nlen == 7 && strncasecmp(name, "charset", 7) == 0 && !(vlen == 5 && strncasecmp(val, "utf-8", 5) == 0))
            return false;
    }
}

const endpoint_t *req_route(fl_http_req_t *req, const fl_http_router_t *router, int *status, const char **code, const char **msg,
                            int *allow)
{
    route_match_t m;
    router_match(router, req->method, req->path, &m);
    *allow = m.allow;
    if (m.ep == NULL) {
        if (m.allow) {
            *status = 405;
            *code = "method_not_allowed";
            *msg = "the method is not allowed for this path";
        } else {
            *status = 404;
            *code = "not_found";
            *msg = "no such path";
        }
        return NULL;
    }
    if ((m.ep->flags & FL_ROUTE_JSON_BODY) && !req_is_json(req->content_type)) {
        *status = 415;
        *code = "unsupported_media_type";
        *msg = "the request body must be application/json";
        return NULL;
    }
    for (unsigned i = 0; i < m.nparams; i++) {
        if ((req->pvalues[i] = req_decode(req, m.vals[i], m.lens[i], false)) == NULL) {
            *status = 503;
            *code = "unavailable";
            *msg = "the server is out of memory; retry shortly";
            return NULL;
        }
    }
    req->ep = m.ep;
    req->nparams = m.nparams;
    return m.ep;
}

/* splitmix64 per thread, seeded from the kernel once: ids are unique, not secret, and a
 * getrandom(2) per request would cost a system call. */
static _Thread_local uint64_t id_state;
static _Thread_local bool id_seeded;

void req_generate_id(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    if (!id_seeded) {
        fl_random_bytes(&id_state, sizeof(id_state));
        id_seeded = true;
    }
    uint64_t z = (id_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[z & 15];
        z >>= 4;
    }
    out[16] = '\0';
}
