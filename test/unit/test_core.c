/* lib/core: logging, allocation failure injection, time formatting, status strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/core.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs fn with the log redirected to a pipe and returns what was written (caller frees). */
static char *capture_log(void (*fn)(void))
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fl_log_set_fd(fds[1]);
    fn();
    fl_log_set_fd(-1);
    close(fds[1]);
    char *out = calloc(1, 65536);
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], out + len, 65535 - len)) > 0)
        len += (size_t)n;
    close(fds[0]);
    return out;
}

static void log_simple(void)
{
    fl_log(FL_LOG_INFO, "test.event", FL_MSG("hello \"world\"\n"), FL_RID("req-1"), FL_STR("s", "a\tb\x01"), FL_INT("i", -42),
           FL_DBL("d", 1.5), FL_BOOL("b", true), FL_STR("null", NULL));
}

static void log_is_one_json_object_per_line(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
    char *out = capture_log(log_simple);
    size_t len = strlen(out);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1));

    json_error_t jerr;
    json_t *obj = json_loads(out, 0, &jerr);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(obj, "event")), "test.event");
    assert_string_equal(json_string_value(json_object_get(obj, "message")), "hello \"world\"\n");
    assert_string_equal(json_string_value(json_object_get(obj, "request_id")), "req-1");
    assert_string_equal(json_string_value(json_object_get(obj, "s")), "a\tb\x01");
    assert_int_equal(json_integer_value(json_object_get(obj, "i")), -42);
    assert_true(json_real_value(json_object_get(obj, "d")) == 1.5);
    assert_true(json_is_true(json_object_get(obj, "b")));
    assert_true(json_is_null(json_object_get(obj, "null")));
    const char *ts = json_string_value(json_object_get(obj, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[23], 'Z');
    json_decref(obj);
    free(out);
}

static char big[20000];

static void log_huge(void)
{
    memset(big, 'x', sizeof(big) - 1);
    fl_log(FL_LOG_WARN, "test.huge", FL_MSG("big"), FL_STR("a", big), FL_STR("b", big));
}

static void log_huge_value_stays_valid_json(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
    char *out = capture_log(log_huge);
    json_error_t jerr;
    json_t *obj = json_loads(out, 0, &jerr);
    assert_non_null(obj);
    assert_true(json_is_true(json_object_get(obj, "truncated")));
    assert_true(strlen(json_string_value(json_object_get(obj, "a"))) < 1000);
    assert_string_equal(json_string_value(json_object_get(obj, "event")), "test.huge");
    json_decref(obj);
    free(out);
}

static void log_debug(void)
{
    fl_log(FL_LOG_DEBUG, "test.debug", FL_MSG("hidden"));
    fl_log(FL_LOG_ERROR, "test.error", FL_MSG("shown"));
}

static void log_level_filters(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
    char *out = capture_log(log_debug);
    assert_null(strstr(out, "test.debug"));
    assert_non_null(strstr(out, "test.error"));
    free(out);
}

static void log_text(void)
{
    fl_log(FL_LOG_INFO, "test.text", FL_MSG("readable"), FL_INT("n", 7));
}

static void log_text_format_is_readable(void **state)
{
    (void)state;
    fl_log_init(FL_LOG_INFO, FL_LOG_TEXT);
    char *out = capture_log(log_text);
    assert_non_null(strstr(out, "test.text"));
    assert_non_null(strstr(out, "readable"));
    assert_non_null(strstr(out, "n=\033[0m7"));
    assert_int_equal(out[0] == '{', 0);
    fl_log_init(FL_LOG_INFO, FL_LOG_JSON);
    free(out);
}

static void alloc_fails_on_request(void **state)
{
    (void)state;
    fl_alloc_fail_after(1);
    void *a = fl_malloc(16);
    void *b = fl_malloc(16);
    void *c = fl_malloc(16);
    fl_alloc_fail_after(-1);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    fl_free(a);
    fl_free(c);
    char *s = fl_strndup("abcdef", 3);
    assert_string_equal(s, "abc");
    fl_free(s);
}

static void time_formats_rfc3339_ms(void **state)
{
    (void)state;
    char out[32];
    fl_time_format_ms(1795428000123LL, out);
    assert_string_equal(out, "2026-11-23T10:00:00.123Z");
    fl_time_format_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    assert_true(fl_now_mono_ms() > 0);
}

static void doubles_print_short_and_exact(void **state)
{
    (void)state;
    char out[32];
    const struct {
        double v;
        const char *text;
    } cases[] = {{270, "270"}, {59.3293, "59.3293"}, {0.1, "0.1"}, {-180, "-180"}, {42.5, "42.5"}, {1e-7, "1e-07"}, {0, "0"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fl_format_double(cases[i].v, out);
        assert_string_equal(out, cases[i].text);
    }
    fl_format_double(0.1 + 0.2, out); /* needs all 17 digits to read back */
    assert_true(strtod(out, NULL) == 0.1 + 0.2);
    fl_format_double(1.0 / 0.0, out);
    assert_string_equal(out, "null");
}

static void random_below_stays_in_bounds(void **state)
{
    (void)state;
    int seen[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint32_t r = fl_random_below(7);
        assert_true(r < 7);
        seen[r]++;
    }
    for (int i = 0; i < 7; i++)
        assert_true(seen[i] > 500);
}

static void strerror_names_every_status(void **state)
{
    (void)state;
    for (int s = FL_ESTATE; s <= FL_OK; s++)
        assert_string_not_equal(fl_strerror(s), "unknown error");
    assert_string_equal(fl_strerror(-1000), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_is_one_json_object_per_line),
        cmocka_unit_test(log_huge_value_stays_valid_json),
        cmocka_unit_test(log_level_filters),
        cmocka_unit_test(log_text_format_is_readable),
        cmocka_unit_test(alloc_fails_on_request),
        cmocka_unit_test(time_formats_rfc3339_ms),
        cmocka_unit_test(doubles_print_short_and_exact),
        cmocka_unit_test(random_below_stays_in_bounds),
        cmocka_unit_test(strerror_names_every_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
