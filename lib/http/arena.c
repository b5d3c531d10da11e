/* Per-request arena: bump allocation in a block kept for the connection's life, with overflow
 * chunks freed when the request ends (after h2o's and nginx's pools). */
#include "http_internal.h"

#include <string.h>

struct arena_chunk {
    arena_chunk_t *next;
    max_align_t data[];
};

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

int arena_init(arena_t *a, size_t cap)
{
    memset(a, 0, sizeof(*a));
    a->base = fl_malloc(cap);
    if (a->base == NULL)
        return FL_ENOMEM;
    a->cap = cap;
    return FL_OK;
}

void *arena_alloc(arena_t *a, size_t n)
{
    n = ALIGN8(n ? n : 1);
    if (a->base && n <= a->cap - a->used) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    if (n > SIZE_MAX - sizeof(arena_chunk_t))
        return NULL;
    arena_chunk_t *c = fl_malloc(sizeof(*c) + n);
    if (c == NULL)
        return NULL;
    c->next = a->chunks;
    a->chunks = c;
    return c->data;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void arena_reset(arena_t *a)
{
    for (arena_chunk_t *c = a->chunks, *next; c; c = next) {
        next = c->next;
        fl_free(c);
    }
    a->chunks = NULL;
    a->used = 0;
}

void arena_free(arena_t *a)
{
    arena_reset(a);
    fl_free(a->base);
    a->base = NULL;
    a->cap = 0;
}
