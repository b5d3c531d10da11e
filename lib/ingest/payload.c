/*
 * The ingest body, {"fixes":[FIX, ...]}, parsed with jansson and checked against CONTRACT.md.
 * Three kinds of refusal, for three different mistakes on the partner's side:
 *   FL_EPROTO  not JSON at all (invalid_json): syntax, bad UTF-8, trailing bytes;
 *   FL_EINVAL  JSON, but not the shape (invalid_payload): not an object, no "fixes" array, an empty
 *              or too long one, a key repeated in any object, a number too large for a double;
 *   FL_ERANGE  the shape is right but fixes are wrong (invalid_fix): every problem of every fix,
 *              with its index and field, up to MAX_PROBLEMS.
 * Choices the contract leaves open:
 * - Repeated keys ({"lat":1,"lat":2}) are refused as invalid_payload: which one a partner meant is
 *   a guess, and jansson finds them while parsing, before it knows which fix they are in.
 * - Unknown fields, in a fix or beside "fixes", are ignored, so partners can send more than this
 *   version reads (forward compatibility).
 * - An optional field that is null counts as absent (serialisers write null for an unset field);
 *   a required one that is null is missing.
 * - A fix that is not an object is an invalid fix (field ""), listed with the others.
 */
#include "ingest.h"

#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MAX_PROBLEMS    100
#define FUTURE_LIMIT_US (5LL * 60 * 1000000)

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Records a problem; past MAX_PROBLEMS it is dropped (the batch is refused anyway). */
static int add_problem(fl_batch_t *b, int index, const char *field, const char *problem)
{
    if (b->problems == NULL) {
        b->problems = fl_calloc(MAX_PROBLEMS, sizeof(*b->problems));
        if (b->problems == NULL)
            return FL_ENOMEM;
    }
    if (b->nproblems == MAX_PROBLEMS)
        return FL_OK;
    fl_fix_problem_t *p = &b->problems[b->nproblems++];
    p->index = index;
    snprintf(p->field, sizeof(p->field), "%s", field);
    snprintf(p->problem, sizeof(p->problem), "%s", problem);
    return FL_OK;
}

/* A required field that is absent or null. */
static bool missing(const json_t *v)
{
    return v == NULL || json_is_null(v);
}

static int check_id(fl_batch_t *b, int index, const json_t *fix, const char *field, char out[65])
{
    const json_t *v = json_object_get(fix, field);
    if (missing(v))
        return add_problem(b, index, field, "is required");
    if (!json_is_string(v))
        return add_problem(b, index, field, "must be a string");
    const char *s = json_string_value(v); /* jansson refuses \u0000 in strings: no NUL inside */
    if (!fl_id_valid(s))
        return add_problem(b, index, field, "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'");
    memcpy(out, s, strlen(s) + 1);
    return FL_OK;
}

typedef struct {
    const char *field;
    double min, max;
    bool max_exclusive;
    unsigned flag; /* FL_FIX_*, or 0 for a required field */
    size_t offset; /* of the double in fl_fix_t */
    const char *range;
} number_rule_t;

static const number_rule_t number_rules[] = {
    {"lat", -90, 90, false, 0, offsetof(fl_fix_t, lat), "must be between -90 and 90"},
    {"lng", -180, 180, false, 0, offsetof(fl_fix_t, lng), "must be between -180 and 180"},
    {"speed_kmh", 0, 1000, false, FL_FIX_SPEED, offsetof(fl_fix_t, speed_kmh), "must be between 0 and 1000"},
    {"heading_deg", 0, 360, true, FL_FIX_HEADING, offsetof(fl_fix_t, heading_deg), "must be at least 0 and less than 360"},
    {"accuracy_m", 0, 100000, false, FL_FIX_ACCURACY, offsetof(fl_fix_t, accuracy_m), "must be between 0 and 100000"},
};

static int check_number(fl_batch_t *b, int index, const json_t *fix, const number_rule_t *r, fl_fix_t *out)
{
    const json_t *v = json_object_get(fix, r->field);
    if (missing(v))
        return r->flag ? FL_OK : add_problem(b, index, r->field, "is required");
    if (!json_is_number(v))
        return add_problem(b, index, r->field, "must be a number");
    double d = json_number_value(v); /* always finite: JSON has no NaN or infinity */
    if (d < r->min || d > r->max || (r->max_exclusive && d == r->max))
        return add_problem(b, index, r->field, r->range);
    memcpy((char *)out + r->offset, &d, sizeof(d));
    out->has |= r->flag;
    return FL_OK;
}

static int check_time(fl_batch_t *b, int index, const json_t *fix, int64_t now_us, fl_fix_t *out)
{
    const json_t *v = json_object_get(fix, "recorded_at");
    if (missing(v))
        return add_problem(b, index, "recorded_at", "is required");
    if (!json_is_string(v))
        return add_problem(b, index, "recorded_at", "must be a string");
    int64_t us;
    if (fl_rfc3339_parse(json_string_value(v), &us) != FL_OK)
        return add_problem(b, index, "recorded_at", "must be an RFC 3339 time, like 2026-11-23T10:00:00.123Z");
    if (us > now_us + FUTURE_LIMIT_US)
        return add_problem(b, index, "recorded_at", "is more than 5 minutes in the future");
    out->recorded_us = us;
    return FL_OK;
}

static int check_fix(fl_batch_t *b, int index, const json_t *fix, int64_t now_us, fl_ingest_fix_t *out)
{
    if (!json_is_object(fix))
        return add_problem(b, index, "", "must be an object");
    int rc;
    if ((rc = check_id(b, index, fix, "fleet_id", out->fleet_id)) != FL_OK ||
        (rc = check_id(b, index, fix, "vehicle_id", out->fix.vehicle_id)) != FL_OK ||
        (rc = check_time(b, index, fix, now_us, &out->fix)) != FL_OK)
        return rc;
    for (size_t i = 0; i < sizeof(number_rules) / sizeof(number_rules[0]); i++) {
        if ((rc = check_number(b, index, fix, &number_rules[i], &out->fix)) != FL_OK)
            return rc;
    }
    return FL_OK;
}

/* jansson's error for a body it could not load, as one of our three answers. */
static int load_error(const json_error_t *jerr, char *err, size_t errlen)
{
    switch (json_error_code(jerr)) {
    case json_error_out_of_memory:
        set_err(err, errlen, "out of memory while parsing the body");
        return FL_ENOMEM;
    case json_error_duplicate_key:
        set_err(err, errlen, "an object repeats a key: %s (byte %d)", jerr->text, jerr->position);
        return FL_EINVAL;
    case json_error_numeric_overflow:
    case json_error_null_character:
    case json_error_null_byte_in_key:
    case json_error_stack_overflow:
        set_err(err, errlen, "the body is JSON that fleetd does not accept: %s (byte %d)", jerr->text, jerr->position);
        return FL_EINVAL;
    default:
        set_err(err, errlen, "the body is not valid JSON: %s (line %d, column %d)", jerr->text, jerr->line, jerr->column);
        return FL_EPROTO;
    }
}

int fl_batch_parse(const char *body, size_t len, int max_fixes, int64_t now_us, fl_batch_t *batch, char *err, size_t errlen)
{
    set_err(err, errlen, "%s", "");
    if (batch == NULL)
        return FL_EINVAL;
    *batch = (fl_batch_t){0};
    if ((body == NULL && len > 0) || max_fixes < 1) {
        set_err(err, errlen, "bad arguments");
        return FL_EINVAL;
    }

    json_error_t jerr;
    json_t *doc = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &jerr);
    if (doc == NULL)
        return load_error(&jerr, err, errlen);

    int rc = FL_EINVAL;
    const json_t *fixes = json_is_object(doc) ? json_object_get(doc, "fixes") : NULL;
    if (!json_is_object(doc)) {
        set_err(err, errlen, "the body must be a JSON object, {\"fixes\":[...]}");
        goto free_doc;
    }
    if (fixes == NULL) {
        set_err(err, errlen, "the body has no \"fixes\"");
        goto free_doc;
    }
    if (!json_is_array(fixes)) {
        set_err(err, errlen, "\"fixes\" must be an array");
        goto free_doc;
    }
    size_t n = json_array_size(fixes);
    if (n == 0) {
        set_err(err, errlen, "\"fixes\" must hold at least one fix");
        goto free_doc;
    }
    if (n > (size_t)max_fixes) {
        set_err(err, errlen, "\"fixes\" holds %zu fixes, more than the limit of %d", n, max_fixes);
        goto free_doc;
    }

    batch->fixes = fl_calloc(n, sizeof(*batch->fixes));
    if (batch->fixes == NULL) {
        set_err(err, errlen, "out of memory for %zu fixes", n);
        rc = FL_ENOMEM;
        goto free_doc;
    }
    for (size_t i = 0; i < n && batch->nproblems < MAX_PROBLEMS; i++) {
        if ((rc = check_fix(batch, (int)i, json_array_get(fixes, i), now_us, &batch->fixes[i])) != FL_OK)
            goto free_fixes;
    }
    if (batch->nproblems > 0) {
        const fl_fix_problem_t *p = &batch->problems[0];
        set_err(err, errlen, "fix %d%s%s %s%s", p->index, p->field[0] ? ": " : "", p->field, p->problem,
                batch->nproblems > 1 ? ", and more" : "");
        rc = FL_ERANGE;
        goto free_fixes;
    }
    batch->n = (int)n;
    json_decref(doc);
    return FL_OK;

free_fixes:
    if (rc == FL_ENOMEM)
        set_err(err, errlen, "out of memory while checking the fixes");
    fl_free(batch->fixes);
    batch->fixes = NULL;
free_doc:
    json_decref(doc);
    return rc;
}

void fl_batch_free(fl_batch_t *batch)
{
    if (batch == NULL)
        return;
    fl_free(batch->fixes);
    fl_free(batch->problems);
    *batch = (fl_batch_t){0};
}
