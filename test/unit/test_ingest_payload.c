/* lib/ingest/payload.c and rfc3339.c: the ingest body, every rule of CONTRACT.md "Ingest". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ingest/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW_S  1795428000LL /* 2026-11-23T10:00:00Z */
#define NOW_US (NOW_S * 1000000)
#define MAX    1000

/* A valid fix with `extra` spliced in after its required fields (may be ""), and the required
 * fields given by the caller when `fields` is not NULL. */
#define FIX_FIELDS "\"fleet_id\":\"harbor-1\",\"vehicle_id\":\"truck-17\",\"lat\":59.3293,\"lng\":18.0686"
#define FIX_TIME   "\"recorded_at\":\"2026-11-23T09:59:00.123Z\""

static char body[1 << 20];

static int parse(const char *text, fl_batch_t *b)
{
    char err[256];
    int rc = fl_batch_parse(text, strlen(text), MAX, NOW_US, b, err, sizeof(err));
    assert_true(strlen(err) < sizeof(err));
    if (rc != FL_OK)
        assert_true(err[0] != '\0'); /* every refusal says why */
    return rc;
}

/* Parses {"fixes":[{<fields>}]} and returns the status; the batch is freed unless b is given. */
static int parse_fix(const char *fields, fl_batch_t *out)
{
    snprintf(body, sizeof(body), "{\"fixes\":[{%s}]}", fields);
    fl_batch_t b;
    int rc = parse(body, &b);
    if (out)
        *out = b;
    else
        fl_batch_free(&b);
    return rc;
}

/* The one problem of a one-fix batch, which must be refused with FL_ERANGE. */
static void expect_problem(const char *fields, const char *field, const char *problem_start)
{
    fl_batch_t b;
    int rc = parse_fix(fields, &b);
    if (rc != FL_ERANGE)
        fail_msg("expected FL_ERANGE for {%s}, got %d", fields, rc);
    assert_int_equal(b.nproblems, 1);
    assert_null(b.fixes);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.problems[0].index, 0);
    assert_string_equal(b.problems[0].field, field);
    if (strncmp(b.problems[0].problem, problem_start, strlen(problem_start)) != 0)
        fail_msg("{%s}: problem \"%s\", expected \"%s...\"", fields, b.problems[0].problem, problem_start);
    fl_batch_free(&b);
}

static void expect_ok(const char *fields)
{
    int rc = parse_fix(fields, NULL);
    if (rc != FL_OK)
        fail_msg("expected FL_OK for {%s}, got %d", fields, rc);
}

static void valid_fix_fills_every_field(void **state)
{
    (void)state;
    fl_batch_t b;
    assert_int_equal(parse_fix(FIX_FIELDS "," FIX_TIME ",\"speed_kmh\":42.5,\"heading_deg\":270,\"accuracy_m\":5", &b), FL_OK);
    assert_int_equal(b.n, 1);
    assert_null(b.problems);
    const fl_ingest_fix_t *f = &b.fixes[0];
    assert_string_equal(f->fleet_id, "harbor-1");
    assert_string_equal(f->fix.vehicle_id, "truck-17");
    assert_true(f->fix.lat == 59.3293);
    assert_true(f->fix.lng == 18.0686);
    assert_int_equal(f->fix.recorded_us, NOW_US - 60 * 1000000 + 123000);
    assert_int_equal(f->fix.received_us, 0); /* the caller's */
    assert_true(f->fix.speed_kmh == 42.5);
    assert_true(f->fix.heading_deg == 270);
    assert_true(f->fix.accuracy_m == 5);
    assert_int_equal(f->fix.has, FL_FIX_SPEED | FL_FIX_HEADING | FL_FIX_ACCURACY);
    fl_batch_free(&b);
    assert_null(b.fixes);
    fl_batch_free(&b); /* twice is harmless */

    /* optional fields absent, or null, are not set */
    assert_int_equal(parse_fix(FIX_FIELDS "," FIX_TIME, &b), FL_OK);
    assert_int_equal(b.fixes[0].fix.has, 0);
    fl_batch_free(&b);
    assert_int_equal(parse_fix(FIX_FIELDS "," FIX_TIME ",\"speed_kmh\":null,\"heading_deg\":null,\"accuracy_m\":7", &b), FL_OK);
    assert_int_equal(b.fixes[0].fix.has, FL_FIX_ACCURACY);
    fl_batch_free(&b);
}

static void several_fixes_keep_their_order(void **state)
{
    (void)state;
    fl_batch_t b;
    assert_int_equal(
        parse("{\"fixes\":["
              "{\"fleet_id\":\"f1\",\"vehicle_id\":\"v1\",\"lat\":1,\"lng\":2,\"recorded_at\":\"2026-11-23T09:00:00Z\"},"
              "{\"fleet_id\":\"f2\",\"vehicle_id\":\"v2\",\"lat\":-1.5,\"lng\":-2.5,\"recorded_at\":\"2026-11-23T09:00:01Z\","
              "\"speed_kmh\":0}]}",
              &b),
        FL_OK);
    assert_int_equal(b.n, 2);
    assert_string_equal(b.fixes[0].fleet_id, "f1");
    assert_string_equal(b.fixes[1].fix.vehicle_id, "v2");
    assert_true(b.fixes[1].fix.lat == -1.5 && b.fixes[1].fix.lng == -2.5);
    assert_int_equal(b.fixes[1].fix.recorded_us - b.fixes[0].fix.recorded_us, 1000000);
    assert_int_equal(b.fixes[1].fix.has, FL_FIX_SPEED);
    fl_batch_free(&b);
}

static void numbers_may_be_integers_or_reals(void **state)
{
    (void)state;
    fl_batch_t b;
    assert_int_equal(
        parse_fix("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":59,\"lng\":-0,\"recorded_at\":\"2026-11-23T09:00:00Z\","
                  "\"speed_kmh\":1e2,\"heading_deg\":0,\"accuracy_m\":2.5E1",
                  &b),
        FL_OK);
    assert_true(b.fixes[0].fix.lat == 59 && b.fixes[0].fix.lng == 0);
    assert_true(b.fixes[0].fix.speed_kmh == 100 && b.fixes[0].fix.heading_deg == 0 && b.fixes[0].fix.accuracy_m == 25);
    fl_batch_free(&b);
    /* an integer too large for 64 bits is still a number (read as a double), then out of range */
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":123456789012345678901234567890,\"lng\":0," FIX_TIME, "lat",
                   "must be between -90 and 90");
}

static void ranges_have_exact_edges(void **state)
{
    (void)state;
    static const struct {
        const char *field, *value;
        bool ok;
    } cases[] = {
        {"lat", "90", true},
        {"lat", "-90", true},
        {"lat", "90.0", true},
        {"lat", "90.0000001", false},
        {"lat", "-90.0000001", false},
        {"lat", "1000", false},
        {"lng", "180", true},
        {"lng", "-180", true},
        {"lng", "180.0000001", false},
        {"lng", "-180.0000001", false},
        {"speed_kmh", "0", true},
        {"speed_kmh", "1000", true},
        {"speed_kmh", "1000.0001", false},
        {"speed_kmh", "-0.0001", false},
        {"heading_deg", "0", true},
        {"heading_deg", "359.9999", true},
        {"heading_deg", "360", false},
        {"heading_deg", "360.0", false},
        {"heading_deg", "-0.0001", false},
        {"heading_deg", "-0.0", true},
        {"accuracy_m", "0", true},
        {"accuracy_m", "100000", true},
        {"accuracy_m", "100000.5", false},
        {"accuracy_m", "-1", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char fields[512];
        bool required = strcmp(cases[i].field, "lat") == 0 || strcmp(cases[i].field, "lng") == 0;
        /* the tested field replaces lat/lng, or is added beside them */
        if (required)
            snprintf(fields, sizeof(fields), "\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"%s\":%s,\"%s\":0," FIX_TIME, cases[i].field,
                     cases[i].value, strcmp(cases[i].field, "lat") == 0 ? "lng" : "lat");
        else
            snprintf(fields, sizeof(fields), FIX_FIELDS "," FIX_TIME ",\"%s\":%s", cases[i].field, cases[i].value);
        if (cases[i].ok)
            expect_ok(fields);
        else
            expect_problem(fields, cases[i].field, "must be");
    }
}

static void types_are_checked(void **state)
{
    (void)state;
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":\"59.1\",\"lng\":0," FIX_TIME, "lat", "must be a number");
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":true,\"lng\":0," FIX_TIME, "lat", "must be a number");
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":[1],\"lng\":0," FIX_TIME, "lat", "must be a number");
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":null,\"lng\":0," FIX_TIME, "lat", "is required");
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":0," FIX_TIME, "lng", "is required");
    expect_problem("\"fleet_id\":12,\"vehicle_id\":\"v\",\"lat\":0,\"lng\":0," FIX_TIME, "fleet_id", "must be a string");
    expect_problem("\"vehicle_id\":\"v\",\"lat\":0,\"lng\":0," FIX_TIME, "fleet_id", "is required");
    expect_problem("\"fleet_id\":\"f\",\"vehicle_id\":{},\"lat\":0,\"lng\":0," FIX_TIME, "vehicle_id", "must be a string");
    expect_problem(FIX_FIELDS ",\"recorded_at\":1795427000", "recorded_at", "must be a string");
    expect_problem(FIX_FIELDS, "recorded_at", "is required");
    expect_problem(FIX_FIELDS "," FIX_TIME ",\"speed_kmh\":\"fast\"", "speed_kmh", "must be a number");
    expect_problem(FIX_FIELDS "," FIX_TIME ",\"heading_deg\":false", "heading_deg", "must be a number");
    expect_problem(FIX_FIELDS "," FIX_TIME ",\"accuracy_m\":{\"m\":1}", "accuracy_m", "must be a number");
}

static void ids_are_1_to_64_safe_characters(void **state)
{
    (void)state;
    char fields[512];
    const char *good[] = {"a", "A.b_c-9", "0123456789012345678901234567890123456789012345678901234567890123", "..", "-"};
    const char *bad[] = {"",        "a b",        "a/b",
                         "\\u00e4", "caf\\u00e9", "a\\tb",
                         "a:b",     "a\\\"b",     "01234567890123456789012345678901234567890123456789012345678901234"}; /* 65 */
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(fields, sizeof(fields), "\"fleet_id\":\"%s\",\"vehicle_id\":\"%s\",\"lat\":0,\"lng\":0," FIX_TIME, good[i],
                 good[i]);
        expect_ok(fields);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(fields, sizeof(fields), "\"fleet_id\":\"%s\",\"vehicle_id\":\"v\",\"lat\":0,\"lng\":0," FIX_TIME, bad[i]);
        expect_problem(fields, "fleet_id", "must be 1 to 64 characters");
        snprintf(fields, sizeof(fields), "\"fleet_id\":\"f\",\"vehicle_id\":\"%s\",\"lat\":0,\"lng\":0," FIX_TIME, bad[i]);
        expect_problem(fields, "vehicle_id", "must be 1 to 64 characters");
    }
}

static void recorded_at_is_rfc3339_and_not_too_far_ahead(void **state)
{
    (void)state;
    char fields[512];
    const char *future = "is more than 5 minutes in the future", *format = "must be an RFC 3339 time";
    const struct {
        const char *t;
        const char *problem; /* NULL: accepted */
    } cases[] = {
        {"2026-11-23T10:05:00Z", NULL},          /* exactly 5 minutes ahead */
        {"2026-11-23T10:05:00.000001Z", future}, /* one microsecond more */
        {"2026-11-23T15:35:00+05:30", NULL},     /* the same instants with an offset */
        {"2026-11-23T15:35:00.000001+05:30", future},
        {"2026-11-23T02:05:00-08:00", NULL},
        {"2026-11-23T10:04:59.999999999-00:00", NULL},
        {"1970-01-01T00:00:00Z", NULL}, /* the past has no limit here */
        {"2027-01-01T00:00:00Z", future},
        {"2026-11-23 10:00:00Z", NULL},
        {"2026-11-23T10:00:00", format}, /* no offset */
        {"yesterday", format},
        {"", format},
        {"2026-02-30T10:00:00Z", format},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(fields, sizeof(fields), FIX_FIELDS ",\"recorded_at\":\"%s\"", cases[i].t);
        if (cases[i].problem == NULL)
            expect_ok(fields);
        else
            expect_problem(fields, "recorded_at", cases[i].problem);
    }
}

static void unknown_fields_are_ignored(void **state)
{
    (void)state;
    fl_batch_t b;
    assert_int_equal(parse("{\"batch\":\"b-1\",\"fixes\":[{" FIX_FIELDS "," FIX_TIME
                           ",\"altitude_m\":12,\"extra\":{\"a\":[1,null]},\"LAT\":\"x\"}],\"v\":2}",
                           &b),
                     FL_OK);
    assert_int_equal(b.n, 1);
    assert_true(b.fixes[0].fix.lat == 59.3293);
    fl_batch_free(&b);
}

static void repeated_keys_are_an_invalid_payload(void **state)
{
    (void)state;
    fl_batch_t b;
    char err[256];
    const char *text = "{\"fixes\":[{" FIX_FIELDS "," FIX_TIME ",\"lat\":1}]}";
    assert_int_equal(fl_batch_parse(text, strlen(text), MAX, NOW_US, &b, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "lat"));
    fl_batch_free(&b);
    assert_int_equal(parse("{\"fixes\":[{" FIX_FIELDS "," FIX_TIME "}],\"fixes\":[]}", &b), FL_EINVAL);
    fl_batch_free(&b);
}

static void not_json_wrong_shape_and_invalid_fix_differ(void **state)
{
    (void)state;
    const char *not_json[] = {
        "",
        " ",
        "{",
        "nul",
        "{\"fixes\":[]",
        "{\"fixes\":[]} x",
        "{'fixes':[]}",
        "{\"fixes\":[1,]}",
        "{\"fixes\":[{\"lat\":NaN}]}",
        "{\"fixes\":[{\"lat\":01}]}",
        "{\"fixes\":\"\xff\"}",
        "\xef\xbb\xbf{\"fixes\":[]}",
    };
    const char *wrong_shape[] = {
        "[]",
        "42",
        "\"fixes\"",
        "null",
        "true",
        "{}",
        "{\"fixes\":{}}",
        "{\"fixes\":\"x\"}",
        "{\"fixes\":null}",
        "{\"fixes\":[]}",
        "{\"Fixes\":[{}]}",
        "{\"fixes\":[{\"lat\":1e400}]}",
        "{\"fixes\":[{\"vehicle_id\":\"a\\u0000b\"}]}",
    };
    fl_batch_t b;
    for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++) {
        int rc = parse(not_json[i], &b);
        if (rc != FL_EPROTO)
            fail_msg("%s: expected FL_EPROTO, got %d", not_json[i], rc);
        assert_null(b.fixes);
        fl_batch_free(&b);
    }
    for (size_t i = 0; i < sizeof(wrong_shape) / sizeof(wrong_shape[0]); i++) {
        int rc = parse(wrong_shape[i], &b);
        if (rc != FL_EINVAL)
            fail_msg("%s: expected FL_EINVAL, got %d", wrong_shape[i], rc);
        assert_null(b.fixes);
        assert_int_equal(b.nproblems, 0);
        fl_batch_free(&b);
    }
    /* the right shape with a fix that is not an object: an invalid fix, field "" */
    assert_int_equal(parse("{\"fixes\":[1]}", &b), FL_ERANGE);
    assert_int_equal(b.nproblems, 1);
    assert_string_equal(b.problems[0].field, "");
    assert_string_equal(b.problems[0].problem, "must be an object");
    fl_batch_free(&b);
    /* a body that is not NUL-terminated is read to len only */
    char text[] = "{\"fixes\":[{" FIX_FIELDS "," FIX_TIME "}]}garbage";
    char err[256];
    assert_int_equal(fl_batch_parse(text, strlen(text) - 7, MAX, NOW_US, &b, err, sizeof(err)), FL_OK);
    fl_batch_free(&b);
}

static void batch_holds_1_to_max_fixes(void **state)
{
    (void)state;
    size_t off = (size_t)snprintf(body, sizeof(body), "{\"fixes\":[");
    for (int i = 0; i < 1001; i++)
        off += (size_t)snprintf(
            body + off, sizeof(body) - off,
            "%s{\"fleet_id\":\"f\",\"vehicle_id\":\"v%d\",\"lat\":0,\"lng\":0,\"recorded_at\":\"2026-11-23T09:00:00Z\"}",
            i ? "," : "", i);
    snprintf(body + off, sizeof(body) - off, "]}");
    fl_batch_t b;
    char err[256];
    assert_int_equal(fl_batch_parse(body, strlen(body), 1000, NOW_US, &b, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "1000"));
    fl_batch_free(&b);
    assert_int_equal(fl_batch_parse(body, strlen(body), 1001, NOW_US, &b, err, sizeof(err)), FL_OK);
    assert_int_equal(b.n, 1001);
    fl_batch_free(&b);

    /* cut to 1000 fixes: the last "," becomes the end of the array */
    char *last = strrchr(body, '{');
    strcpy(last - 1, "]}");
    assert_int_equal(fl_batch_parse(body, strlen(body), 1000, NOW_US, &b, err, sizeof(err)), FL_OK);
    assert_int_equal(b.n, 1000);
    assert_string_equal(b.fixes[999].fix.vehicle_id, "v999");
    fl_batch_free(&b);

    assert_int_equal(parse("{\"fixes\":[]}", &b), FL_EINVAL);
    fl_batch_free(&b);
    const char *three = "{\"fixes\":[1,2,3]}";
    assert_int_equal(fl_batch_parse(three, strlen(three), 2, NOW_US, &b, err, sizeof(err)), FL_EINVAL);
    fl_batch_free(&b);
}

static void every_problem_of_every_fix_is_listed(void **state)
{
    (void)state;
    fl_batch_t b;
    char err[256];
    const char *text = "{\"fixes\":["
                       "{\"fleet_id\":\"f\",\"vehicle_id\":\"v\",\"lat\":91,\"lng\":-181," FIX_TIME "},"
                       "{" FIX_FIELDS "," FIX_TIME "},"
                       "{\"fleet_id\":\"f\",\"lat\":0,\"lng\":0," FIX_TIME ",\"heading_deg\":360},"
                       "\"x\"]}";
    assert_int_equal(fl_batch_parse(text, strlen(text), MAX, NOW_US, &b, err, sizeof(err)), FL_ERANGE);
    assert_int_equal(b.nproblems, 5);
    assert_null(b.fixes);
    const struct {
        int index;
        const char *field;
    } want[] = {{0, "lat"}, {0, "lng"}, {2, "vehicle_id"}, {2, "heading_deg"}, {3, ""}};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b.problems[i].index, want[i].index);
        assert_string_equal(b.problems[i].field, want[i].field);
        assert_true(b.problems[i].problem[0] != '\0');
    }
    assert_string_equal(err, "fix 0: lat must be between -90 and 90, and more");
    fl_batch_free(&b);
    assert_null(b.problems);

    /* at most 100: a thousand fixes with two problems each */
    size_t off = (size_t)snprintf(body, sizeof(body), "{\"fixes\":[");
    for (int i = 0; i < 1000; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off, "%s{\"fleet_id\":\"\",\"vehicle_id\":\"\"}", i ? "," : "");
    snprintf(body + off, sizeof(body) - off, "]}");
    assert_int_equal(parse(body, &b), FL_ERANGE);
    assert_int_equal(b.nproblems, 100);
    assert_int_equal(b.problems[99].index, 19); /* five problems a fix: ids, lat, lng, recorded_at */
    fl_batch_free(&b);
}

static void allocation_failure_is_enomem(void **state)
{
    (void)state;
    fl_batch_t b;
    fl_alloc_fail_after(0); /* the fixes array */
    assert_int_equal(parse_fix(FIX_FIELDS "," FIX_TIME, &b), FL_ENOMEM);
    fl_alloc_fail_after(-1);
    fl_batch_free(&b);
    fl_alloc_fail_after(1); /* the problems array */
    assert_int_equal(parse_fix(FIX_FIELDS ",\"recorded_at\":\"never\"", &b), FL_ENOMEM);
    fl_alloc_fail_after(-1);
    fl_batch_free(&b);
}

/* ---- fl_rfc3339_parse --------------------------------------------------------------------------- */

static int64_t rfc(const char *text)
{
    int64_t us = 0x5a5a5a5a;
    int rc = fl_rfc3339_parse(text, &us);
    if (rc != FL_OK)
        fail_msg("%s: refused (%d)", text, rc);
    return us;
}

static void rfc3339_reads_offsets_and_fractions(void **state)
{
    (void)state;
    assert_int_equal(rfc("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(rfc("2026-11-23T10:00:00Z"), NOW_US);
    assert_int_equal(rfc("2026-11-23T10:00:00.123Z"), NOW_US + 123000);
    assert_int_equal(rfc("2026-11-23t10:00:00z"), NOW_US);
    assert_int_equal(rfc("2026-11-23 10:00:00Z"), NOW_US);
    assert_int_equal(rfc("2026-11-23T15:30:00+05:30"), NOW_US);
    assert_int_equal(rfc("2026-11-23T10:00:00+00:00"), NOW_US);
    assert_int_equal(rfc("2026-11-23T10:00:00-00:00"), NOW_US);
    assert_int_equal(rfc("2026-11-23T02:00:00-08:00"), NOW_US);
    assert_int_equal(rfc("2026-11-24T09:59:00+23:59"), NOW_US);
    assert_int_equal(rfc("2026-11-22T10:01:00-23:59"), NOW_US);
    /* fractions of any length: microseconds kept, the rest truncated */
    assert_int_equal(rfc("2026-11-23T10:00:00.1Z"), NOW_US + 100000);
    assert_int_equal(rfc("2026-11-23T10:00:00.000001Z"), NOW_US + 1);
    assert_int_equal(rfc("2026-11-23T10:00:00.123456Z"), NOW_US + 123456);
    assert_int_equal(rfc("2026-11-23T10:00:00.1234567Z"), NOW_US + 123456);
    assert_int_equal(rfc("2026-11-23T10:00:00.99999999999999999999999999Z"), NOW_US + 999999);
    assert_int_equal(rfc("2026-11-23T10:00:00.0000000+05:30"), NOW_US - 19800LL * 1000000);
    /* before 1970 and the ends of the 4-digit range */
    assert_int_equal(rfc("1969-12-31T23:59:59.5Z"), -500000);
    assert_int_equal(rfc("0000-01-01T00:00:00Z"), -62167219200LL * 1000000);
    assert_int_equal(rfc("9999-12-31T23:59:59.999999Z"), 253402300799LL * 1000000 + 999999);
    /* leap years */
    assert_int_equal(rfc("2024-02-29T12:00:00Z"), 1709208000LL * 1000000);
    assert_int_equal(rfc("2000-02-29T00:00:00Z") + 86400LL * 1000000, rfc("2000-03-01T00:00:00Z"));
    assert_int_equal(rfc("2024-12-31T00:00:00Z") + 86400LL * 1000000, rfc("2025-01-01T00:00:00Z"));
}

static void rfc3339_clamps_leap_seconds(void **state)
{
    (void)state;
    int64_t last = 1483228799LL * 1000000 + 999999; /* 2016-12-31T23:59:59.999999Z */
    assert_int_equal(rfc("2016-12-31T23:59:60Z"), last);
    assert_int_equal(rfc("2016-12-31T23:59:60.5Z"), last);
    assert_int_equal(rfc("2017-01-01T05:29:60+05:30"), last);
    assert_int_equal(rfc("2016-12-31T15:59:60-08:00"), last);
    int64_t us;
    assert_int_equal(fl_rfc3339_parse("2026-11-23T10:00:60Z", &us), FL_EINVAL);
    assert_int_equal(fl_rfc3339_parse("2016-12-31T23:59:60+05:30", &us), FL_EINVAL);
    assert_int_equal(fl_rfc3339_parse("2016-12-31T23:59:61Z", &us), FL_EINVAL);
}

static void rfc3339_refuses_impossible_and_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "2026-11-23",
        "2026-11-23T10:00Z",
        "2026-11-23T10:00:00",
        "2026-11-23T10:00:00.Z",
        "2026-11-23T10:00:00.",
        "2026-11-23T10:00:00,5Z",
        "2026-11-23T10:00:00+0530",
        "2026-11-23T10:00:00+05",
        "2026-11-23T10:00:00+5:30",
        "2026-11-23T10:00:00+24:00",
        "2026-11-23T10:00:00+05:60",
        "2026-11-23T10:00:00Z ",
        " 2026-11-23T10:00:00Z",
        "2026-11-23T10:00:00ZZ",
        "2026-11-23T10:00:00.5.5Z",
        "2026-11-23T10:00:00+05:30:00",
        "2026-1-23T10:00:00Z",
        "20261123T100000Z",
        "2026-11-23X10:00:00Z",
        "2026-11-23T10-00-00Z",
        "12026-11-23T10:00:00Z",
        "-2026-11-23T10:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-06-31T00:00:00Z",
        "2026-09-31T00:00:00Z",
        "2026-11-31T00:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T10:60:00Z",
        "2026-11-23T1a:00:00Z",
        "2026-11-23T10:00:00\xef\xbc\xba",
        "\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x96-11-23T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t us = 7;
        if (fl_rfc3339_parse(bad[i], &us) != FL_EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_int_equal(us, 7);
    }
    int64_t us;
    assert_int_equal(fl_rfc3339_parse(NULL, &us), FL_EINVAL);
    assert_int_equal(fl_rfc3339_parse("2026-11-23T10:00:00Z", NULL), FL_EINVAL);
}

/* Every day from 1600 to 2400 against a second, naive count of days. */
static void rfc3339_agrees_with_counting_days(void **state)
{
    (void)state;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t days = rfc("1600-01-01T00:00:00Z") / 86400000000LL;
    for (int y = 1600; y <= 2400; y++) {
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        for (int m = 1; m <= 12; m++) {
            int n = mdays[m - 1] + (m == 2 && leap);
            for (int d = 1; d <= n; d++, days++) {
                char text[40];
                snprintf(text, sizeof(text), "%04d-%02d-%02dT00:00:00Z", y, m, d);
                int64_t us;
                assert_int_equal(fl_rfc3339_parse(text, &us), FL_OK);
                assert_int_equal(us, days * 86400000000LL);
            }
            char text[40];
            snprintf(text, sizeof(text), "%04d-%02d-%02dT00:00:00Z", y, m, n + 1);
            int64_t us;
            assert_int_equal(fl_rfc3339_parse(text, &us), FL_EINVAL);
        }
    }
    assert_int_equal(days, rfc("2401-01-01T00:00:00Z") / 86400000000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_fix_fills_every_field),
        cmocka_unit_test(several_fixes_keep_their_order),
        cmocka_unit_test(numbers_may_be_integers_or_reals),
        cmocka_unit_test(ranges_have_exact_edges),
        cmocka_unit_test(types_are_checked),
        cmocka_unit_test(ids_are_1_to_64_safe_characters),
        cmocka_unit_test(recorded_at_is_rfc3339_and_not_too_far_ahead),
        cmocka_unit_test(unknown_fields_are_ignored),
        cmocka_unit_test(repeated_keys_are_an_invalid_payload),
        cmocka_unit_test(not_json_wrong_shape_and_invalid_fix_differ),
        cmocka_unit_test(batch_holds_1_to_max_fixes),
        cmocka_unit_test(every_problem_of_every_fix_is_listed),
        cmocka_unit_test(allocation_failure_is_enomem),
        cmocka_unit_test(rfc3339_reads_offsets_and_fractions),
        cmocka_unit_test(rfc3339_clamps_leap_seconds),
        cmocka_unit_test(rfc3339_refuses_impossible_and_malformed),
        cmocka_unit_test(rfc3339_agrees_with_counting_days),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
