#include "core.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A line is built in a fixed buffer and written with one write(2); fields that do not fit are
 * cut and the line is marked "truncated", so a huge value never costs an allocation. */
#define LINE_MAX_BYTES 8192

static atomic_int log_level = FL_LOG_INFO;
static atomic_int log_fd = 2;
static bool log_text;

typedef struct {
    char *p;
    size_t len;
    size_t cap;
    size_t max_str; /* longest string value written (bytes of input), for the retry after truncation */
    bool truncated;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    size_t room = l->len < l->cap ? l->cap - l->len : 0;
    if (n > room) {
        n = room;
        l->truncated = true;
    }
    if (n > 0)
        memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

static void putf(line_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(line_t *l, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* JSON string body (without quotes); control characters and invalid bytes escaped. */
static void put_escaped(line_t *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t left = l->max_str;
    for (const unsigned char *c = (const unsigned char *)s; *c && !l->truncated; c++) {
        if (left-- == 0) {
            put(l, "...", 3);
            break;
        }
        switch (*c) {
        case '"':
            put(l, "\\\"", 2);
            break;
        case '\\':
            put(l, "\\\\", 2);
            break;
        case '\n':
            put(l, "\\n", 2);
            break;
        case '\r':
            put(l, "\\r", 2);
            break;
        case '\t':
            put(l, "\\t", 2);
            break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                char esc[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
                put(l, esc, 6);
            } else {
                put(l, (const char *)c, 1);
            }
        }
    }
}

static void put_json_value(line_t *l, const fl_field_t *f)
{
    switch (f->kind) {
    case FL_F_INT:
        putf(l, "%lld", f->v.i);
        break;
    case FL_F_DBL: {
        char num[32];
        fl_format_double(f->v.d, num);
        puts_(l, num);
        break;
    }
    case FL_F_BOOL:
        puts_(l, f->v.b ? "true" : "false");
        break;
    default:
        if (f->v.s == NULL) {
            puts_(l, "null");
        } else {
            put(l, "\"", 1);
            put_escaped(l, f->v.s);
            put(l, "\"", 1);
        }
    }
}

const char *fl_log_level_name(fl_log_level_t level)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    return (unsigned)level <= FL_LOG_OFF ? names[level] : "info";
}

void fl_log_init(fl_log_level_t level, fl_log_format_t format)
{
    atomic_store(&log_level, (int)level);
    if (format == FL_LOG_AUTO)
        log_text = isatty(STDERR_FILENO);
    else
        log_text = format == FL_LOG_TEXT;
}

void fl_log_set_level(fl_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

fl_log_level_t fl_log_level(void)
{
    return (fl_log_level_t)atomic_load_explicit(&log_level, memory_order_relaxed);
}

void fl_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd < 0 ? 2 : fd);
}

static void emit_json(line_t *l, fl_log_level_t level, const char *event, const fl_field_t *fields, const char *ts)
{
    const char *message = NULL, *rid = NULL;
    for (const fl_field_t *f = fields; f->kind != FL_F_END; f++) {
        if (f->kind == FL_F_MSG)
            message = f->v.s;
        else if (f->kind == FL_F_RID)
            rid = f->v.s;
    }
    puts_(l, "{\"ts\":\"");
    puts_(l, ts);
    puts_(l, "\",\"level\":\"");
    puts_(l, fl_log_level_name(level));
    puts_(l, "\",\"event\":\"");
    put_escaped(l, event);
    puts_(l, "\",\"message\":");
    put_json_value(l, &FL_STR("message", message ? message : ""));
    puts_(l, ",\"request_id\":");
    put_json_value(l, &FL_STR("request_id", rid));
    for (const fl_field_t *f = fields; f->kind != FL_F_END; f++) {
        if (f->kind == FL_F_MSG || f->kind == FL_F_RID)
            continue;
        put(l, ",\"", 2);
        put_escaped(l, f->key);
        put(l, "\":", 2);
        put_json_value(l, f);
    }
}

static void emit_text(line_t *l, fl_log_level_t level, const char *event, const fl_field_t *fields, const char *ts)
{
    static const char *colour[] = {"\033[2m", "\033[36m", "\033[33m", "\033[31;1m", ""};
    const char *message = "";
    for (const fl_field_t *f = fields; f->kind != FL_F_END; f++)
        if (f->kind == FL_F_MSG && f->v.s)
            message = f->v.s;
    put(l, ts + 11, 12); /* HH:MM:SS.mmm */
    put(l, " ", 1);
    puts_(l, colour[level]);
    putf(l, "%-5s", fl_log_level_name(level));
    puts_(l, "\033[0m ");
    puts_(l, event);
    put(l, "  ", 2);
    puts_(l, message);
    for (const fl_field_t *f = fields; f->kind != FL_F_END; f++) {
        if (f->kind == FL_F_MSG)
            continue;
        put(l, " \033[2m", 5);
        puts_(l, f->key);
        put(l, "=\033[0m", 5);
        if (f->kind == FL_F_STR || f->kind == FL_F_RID)
            puts_(l, f->v.s ? f->v.s : "null");
        else
            put_json_value(l, f);
    }
}

void fl_log_emit(fl_log_level_t level, const char *event, const fl_field_t *fields)
{
    char buf[LINE_MAX_BYTES];
    line_t l = {.p = buf, .cap = sizeof(buf) - 32, .max_str = SIZE_MAX};
    char ts[32];
    fl_time_format_ms(fl_now_wall_ms(), ts);

    /* A line too long for the buffer is written again with every string value cut short,
     * so the result is always one valid JSON object. */
    for (int pass = 0; pass < 2; pass++) {
        if (log_text)
            emit_text(&l, level, event, fields, ts);
        else
            emit_json(&l, level, event, fields, ts);
        if (!l.truncated)
            break;
        l.len = 0;
        l.truncated = false;
        l.max_str = 200;
    }
    l.cap = sizeof(buf); /* room reserved above for the closing bytes */
    if (!log_text)
        puts_(&l, l.max_str != SIZE_MAX ? ",\"truncated\":true}\n" : "}\n");
    else
        puts_(&l, "\n");
    ssize_t off = 0;
    while ((size_t)off < l.len) {
        ssize_t n = write(atomic_load_explicit(&log_fd, memory_order_relaxed), buf + off, l.len - (size_t)off);
        if (n <= 0)
            break;
        off += n;
    }
}

/* ---- assertions ---- */

static _Thread_local fl_assert_handler_fn assert_handler;

void fl_assert_set_thread_handler(fl_assert_handler_fn fn)
{
    assert_handler = fn;
}

_Noreturn void fl_assert_failed(const char *expr, const char *file, int line)
{
    fl_log(FL_LOG_ERROR, "assert.failed", FL_MSG("invariant check failed"), FL_STR("expr", expr), FL_STR("file", file),
           FL_INT("line", line));
    if (assert_handler != NULL)
        assert_handler(expr, file, line);
    abort();
}
