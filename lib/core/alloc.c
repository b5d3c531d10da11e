#include "core.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Failure injection: when fail_at >= 0, the allocation whose sequence number equals it fails. */
static atomic_long alloc_seq;
static atomic_long fail_at = -1;

static bool should_fail(void)
{
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    long seq = atomic_fetch_add_explicit(&alloc_seq, 1, memory_order_relaxed);
    return at >= 0 && seq == at;
}

void fl_alloc_fail_after(long n)
{
    if (n < 0) {
        atomic_store(&fail_at, -1);
        return;
    }
    atomic_store(&fail_at, atomic_load(&alloc_seq) + n);
}

long fl_alloc_count(void)
{
    return atomic_load(&alloc_seq);
}

void *fl_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *fl_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *fl_realloc(void *ptr, size_t size)
{
    if (should_fail())
        return NULL;
    return realloc(ptr, size ? size : 1);
}

char *fl_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = fl_malloc(len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *fl_strdup(const char *s)
{
    return fl_strndup(s, strlen(s));
}

void fl_free(void *ptr)
{
    free(ptr);
}

static _Noreturn void out_of_memory(size_t size)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "fleetd: out of memory allocating %zu bytes at start-up\n", size);
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
        _exit(1);
    _exit(1);
}

void *fl_xmalloc(size_t size)
{
    void *p = fl_malloc(size);
    if (p == NULL)
        out_of_memory(size);
    return p;
}

void *fl_xcalloc(size_t n, size_t size)
{
    void *p = fl_calloc(n, size);
    if (p == NULL)
        out_of_memory(n * size);
    return p;
}

char *fl_xstrdup(const char *s)
{
    char *p = fl_strdup(s);
    if (p == NULL)
        out_of_memory(strlen(s) + 1);
    return p;
}
