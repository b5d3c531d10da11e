#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool fl_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
        if (n >= 64)
            return false;
    }
    return n >= 1;
}

int fl_strbuf_reserve(fl_strbuf_t *b, size_t more)
{
    if (b->failed)
        return FL_ENOMEM;
    if (b->len + more + 1 <= b->cap)
        return FL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = fl_realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return FL_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    return FL_OK;
}

void fl_strbuf_add(fl_strbuf_t *b, const char *s, size_t n)
{
    if (fl_strbuf_reserve(b, n) != FL_OK)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void fl_strbuf_str(fl_strbuf_t *b, const char *s)
{
    fl_strbuf_add(b, s, strlen(s));
}

void fl_strbuf_printf(fl_strbuf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        fl_strbuf_add(b, small, (size_t)n);
        return;
    }
    if (fl_strbuf_reserve(b, (size_t)n) != FL_OK)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void fl_strbuf_free(fl_strbuf_t *b)
{
    fl_free(b->p);
    *b = (fl_strbuf_t){0};
}
