#include "core.h"

#include <string.h>

typedef struct entry {
    struct entry *next;
    uint32_t hash;
    uint32_t keylen;
    void *value;
    char key[];
} entry_t;

struct fl_map {
    entry_t **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first insert */
    size_t count;
    size_t key_bytes;
};

static uint32_t hash_key(const char *s, size_t *len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    const char *p = s;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    *len = (size_t)(p - s);
    return h;
}

fl_map_t *fl_map_new(void)
{
    return fl_calloc(1, sizeof(fl_map_t));
}

void fl_map_free(fl_map_t *m, void (*value_free)(void *value))
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry_t *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            if (value_free)
                value_free(e->value);
            fl_free(e);
        }
    }
    fl_free(m->buckets);
    fl_free(m);
}

static entry_t **find(const fl_map_t *m, const char *key, uint32_t h, size_t len)
{
    entry_t **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p && ((*p)->hash != h || (*p)->keylen != len || memcmp((*p)->key, key, len) != 0))
        p = &(*p)->next;
    return p;
}

void *fl_map_get(const fl_map_t *m, const char *key)
{
    if (m->nbuckets == 0)
        return NULL;
    size_t len;
    uint32_t h = hash_key(key, &len);
    entry_t *e = *find(m, key, h, len);
    return e ? e->value : NULL;
}

static int grow(fl_map_t *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 8;
    entry_t **b = fl_calloc(n, sizeof(*b));
    if (b == NULL)
        return FL_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (entry_t *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    fl_free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return FL_OK;
}

int fl_map_put(fl_map_t *m, const char *key, void *value, void **old)
{
    if (old)
        *old = NULL;
    if (m->count >= m->nbuckets && grow(m) != FL_OK)
        return FL_ENOMEM;
    size_t len;
    uint32_t h = hash_key(key, &len);
    entry_t **p = find(m, key, h, len);
    if (*p) {
        if (old)
            *old = (*p)->value;
        (*p)->value = value;
        return FL_OK;
    }
    entry_t *e = fl_malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return FL_ENOMEM;
    e->next = NULL;
    e->hash = h;
    e->keylen = (uint32_t)len;
    e->value = value;
    memcpy(e->key, key, len + 1);
    *p = e;
    m->count++;
    m->key_bytes += len + 1;
    return FL_OK;
}

void *fl_map_remove(fl_map_t *m, const char *key)
{
    if (m->nbuckets == 0)
        return NULL;
    size_t len;
    uint32_t h = hash_key(key, &len);
    entry_t **p = find(m, key, h, len);
    entry_t *e = *p;
    if (e == NULL)
        return NULL;
    *p = e->next;
    void *value = e->value;
    m->count--;
    m->key_bytes -= len + 1;
    fl_free(e);
    return value;
}

size_t fl_map_count(const fl_map_t *m)
{
    return m->count;
}

void fl_map_foreach(const fl_map_t *m, void (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry_t *e = m->buckets[i]; e; e = e->next)
            fn(e->key, e->value, arg);
}

size_t fl_map_memory(const fl_map_t *m)
{
    return sizeof(*m) + m->nbuckets * sizeof(entry_t *) + m->count * sizeof(entry_t) + m->key_bytes;
}
