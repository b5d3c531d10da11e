/* The router: a tree of path segments (literal children, one parameter child), each node holding
 * the endpoints routed to that exact path. A literal segment wins over a parameter. */
#include "http_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct node {
    char *literal; /* NULL for the root and parameter nodes */
    size_t litlen;
    struct node **kids;
    unsigned nkids;
    struct node *param;
    endpoint_t *eps;
    unsigned neps;
} node_t;

struct fl_http_router {
    node_t root;
    char **patterns; /* by endpoint index */
    unsigned nroutes;
};

#define ALL_METHODS (FL_HTTP_GET | FL_HTTP_HEAD | FL_HTTP_POST | FL_HTTP_PUT | FL_HTTP_DELETE | FL_HTTP_PATCH | FL_HTTP_OPTIONS)

fl_http_router_t *fl_http_router_new(void)
{
    return fl_calloc(1, sizeof(fl_http_router_t));
}

static void node_free(node_t *n)
{
    for (unsigned i = 0; i < n->nkids; i++) {
        node_free(n->kids[i]);
        fl_free(n->kids[i]);
    }
    fl_free(n->kids);
    if (n->param) {
        node_free(n->param);
        fl_free(n->param);
    }
    for (unsigned i = 0; i < n->neps; i++)
        for (unsigned j = 0; j < n->eps[i].nparams; j++)
            fl_free(n->eps[i].names[j]);
    fl_free(n->eps);
    fl_free(n->literal);
}

void fl_http_router_free(fl_http_router_t *r)
{
    if (r == NULL)
        return;
    node_free(&r->root);
    for (unsigned i = 0; i < r->nroutes; i++)
        fl_free(r->patterns[i]);
    fl_free(r->patterns);
    fl_free(r);
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Characters a literal segment may hold: visible ASCII except the ones with a meaning here. */
static bool literal_char(char c)
{
    return c > ' ' && c < 0x7f && c != '{' && c != '}' && c != '?' && c != '#' && c != '/';
}

static node_t *literal_kid(node_t *n, const char *seg, size_t len, bool create)
{
    for (unsigned i = 0; i < n->nkids; i++)
        if (n->kids[i]->litlen == len && memcmp(n->kids[i]->literal, seg, len) == 0)
            return n->kids[i];
    if (!create)
        return NULL;
    node_t **kids = fl_realloc(n->kids, (n->nkids + 1) * sizeof(*kids));
    if (kids == NULL)
        return NULL;
    n->kids = kids;
    node_t *kid = fl_calloc(1, sizeof(*kid));
    if (kid == NULL)
        return NULL;
    kid->literal = fl_strndup(seg, len);
    if (kid->literal == NULL) {
        fl_free(kid);
        return NULL;
    }
    kid->litlen = len;
    n->kids[n->nkids++] = kid;
    return kid;
}

int fl_http_router_add(fl_http_router_t *r, int methods, const char *pattern, fl_http_handler_fn fn, void *arg, unsigned flags)
{
    if (r == NULL || pattern == NULL || fn == NULL || pattern[0] != '/' || methods <= 0 || (methods & ~ALL_METHODS) != 0 ||
        (flags & ~(unsigned)FL_ROUTE_JSON_BODY) != 0)
        return FL_EINVAL;

    /* Validate the whole pattern before the tree changes. */
    const char *names[ROUTE_MAX_PARAMS];
    size_t namelens[ROUTE_MAX_PARAMS];
    unsigned nparams = 0;
    if (pattern[1] != '\0') {
        for (const char *p = pattern + 1;;) {
            const char *end = strchr(p, '/');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len == 0)
                return FL_EINVAL; /* empty segment: "//" or a trailing '/' */
            if (p[0] == '{') {
                if (len < 3 || p[len - 1] != '}' || nparams == ROUTE_MAX_PARAMS)
                    return FL_EINVAL;
                for (size_t i = 1; i + 1 < len; i++)
                    if (!name_char(p[i]))
                        return FL_EINVAL;
                for (unsigned i = 0; i < nparams; i++)
                    if (namelens[i] == len - 2 && memcmp(names[i], p + 1, len - 2) == 0)
                        return FL_EINVAL;
                names[nparams] = p + 1;
                namelens[nparams++] = len - 2;
            } else {
                for (size_t i = 0; i < len; i++)
                    if (!literal_char(p[i]))
                        return FL_EINVAL;
            }
            if (end == NULL)
                break;
            p = end + 1;
        }
    }

    /* Walk (and grow) the tree. Nodes left empty by a later failure are harmless. */
    node_t *n = &r->root;
    if (pattern[1] != '\0') {
        for (const char *p = pattern + 1;;) {
            const char *end = strchr(p, '/');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (p[0] == '{') {
                if (n->param == NULL && (n->param = fl_calloc(1, sizeof(node_t))) == NULL)
                    return FL_ENOMEM;
                n = n->param;
            } else if ((n = literal_kid(n, p, len, true)) == NULL) {
                return FL_ENOMEM;
            }
            if (end == NULL)
                break;
            p = end + 1;
        }
    }
    for (unsigned i = 0; i < n->neps; i++)
        if (n->eps[i].methods & methods)
            return FL_EINVAL;

    char **patterns = fl_realloc(r->patterns, (r->nroutes + 1) * sizeof(*patterns));
    if (patterns == NULL)
        return FL_ENOMEM;
    r->patterns = patterns;
    if ((patterns[r->nroutes] = fl_strdup(pattern)) == NULL)
        return FL_ENOMEM;
    endpoint_t ep = {.methods = methods,
                     .fn = fn,
                     .arg = arg,
                     .flags = flags,
                     .nparams = nparams,
                     .index = r->nroutes,
                     .pattern = patterns[r->nroutes]};
    for (unsigned i = 0; i < nparams; i++) {
        if ((ep.names[i] = fl_strndup(names[i], namelens[i])) == NULL) {
            for (unsigned j = 0; j < i; j++)
                fl_free(ep.names[j]);
            fl_free(patterns[r->nroutes]);
            return FL_ENOMEM;
        }
    }
    endpoint_t *eps = fl_realloc(n->eps, (n->neps + 1) * sizeof(*eps));
    if (eps == NULL) {
        for (unsigned j = 0; j < nparams; j++)
            fl_free(ep.names[j]);
        fl_free(patterns[r->nroutes]);
        return FL_ENOMEM;
    }
    n->eps = eps;
    n->eps[n->neps++] = ep;
    r->nroutes++;
    return FL_OK;
}

static const endpoint_t *node_endpoint(const node_t *n, int method)
{
    if (method == 0)
        return NULL;
    for (unsigned i = 0; i < n->neps; i++)
        if (n->eps[i].methods & method)
            return &n->eps[i];
    if (method == FL_HTTP_HEAD)
        for (unsigned i = 0; i < n->neps; i++)
            if (n->eps[i].methods & FL_HTTP_GET)
                return &n->eps[i];
    return NULL;
}

typedef struct {
    int method;
    route_match_t *m;
    unsigned depth;
    const char *vals[ROUTE_MAX_PARAMS];
    size_t lens[ROUTE_MAX_PARAMS];
} walk_t;

/* Visits every node the path reaches (literal first), so the first endpoint found is the most
 * specific and allow collects the methods of all of them. seg NULL: the path has ended. */
static void walk(walk_t *w, const node_t *n, const char *seg)
{
    if (seg == NULL) {
        for (unsigned i = 0; i < n->neps; i++)
            w->m->allow |= n->eps[i].methods;
        const endpoint_t *ep = w->m->ep ? NULL : node_endpoint(n, w->method);
        if (ep) {
            w->m->ep = ep;
            w->m->nparams = w->depth;
            memcpy(w->m->vals, w->vals, sizeof(w->vals[0]) * w->depth);
            memcpy(w->m->lens, w->lens, sizeof(w->lens[0]) * w->depth);
        }
        return;
    }
    const char *slash = strchr(seg, '/');
    size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
    const char *next = slash ? slash + 1 : NULL;
    for (unsigned i = 0; i < n->nkids; i++)
        if (n->kids[i]->litlen == len && memcmp(n->kids[i]->literal, seg, len) == 0)
            walk(w, n->kids[i], next);
    if (n->param && len > 0 && w->depth < ROUTE_MAX_PARAMS) {
        w->vals[w->depth] = seg;
        w->lens[w->depth] = len;
        w->depth++;
        walk(w, n->param, next);
        w->depth--;
    }
}

void router_match(const fl_http_router_t *r, int method, const char *path, route_match_t *m)
{
    memset(m, 0, sizeof(*m));
    if (path == NULL || path[0] != '/')
        return;
    walk_t w = {.method = method, .m = m};
    walk(&w, &r->root, path[1] ? path + 1 : NULL);
    if (m->allow & FL_HTTP_GET)
        m->allow |= FL_HTTP_HEAD;
}

void router_allow_string(int methods, char *out, size_t outlen)
{
    static const struct {
        int bit;
        const char *name;
    } order[] = {{FL_HTTP_GET, "GET"},       {FL_HTTP_HEAD, "HEAD"},   {FL_HTTP_POST, "POST"},      {FL_HTTP_PUT, "PUT"},
                 {FL_HTTP_DELETE, "DELETE"}, {FL_HTTP_PATCH, "PATCH"}, {FL_HTTP_OPTIONS, "OPTIONS"}};
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (!(methods & order[i].bit))
            continue;
        int n = snprintf(out + o, outlen - o, "%s%s", o ? ", " : "", order[i].name);
        if (n < 0 || (size_t)n >= outlen - o)
            break;
        o += (size_t)n;
    }
}

unsigned router_count(const fl_http_router_t *r)
{
    return r->nroutes;
}

const char *router_pattern(const fl_http_router_t *r, unsigned index)
{
    return index < r->nroutes ? r->patterns[index] : NULL;
}
