/*
 * libFuzzer harness for the ingest body (lib/ingest/payload.c) and RFC 3339 times (rfc3339.c).
 * The input is the body, in a buffer of exactly its size (no NUL after it). Checked for every input:
 * - fl_batch_parse answers one of its four statuses, says why when it refuses, and what it fills
 *   obeys the contract: accepted fixes have valid ids, in-range numbers, a time at most 5 minutes
 *   ahead; a refused batch lists 1..100 problems in fix order; nothing else is left filled;
 * - a lower max_fixes only changes the answer when there are more fixes than it allows;
 * - the input read as a timestamp: when fl_rfc3339_parse accepts it, the time written back as
 *   UTC with microseconds reads back to the same value.
 */
#include "ingest/ingest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (!(cond))                                                                                                               \
            __builtin_trap();                                                                                                      \
    } while (0)

#define NOW_US (1795428000LL * 1000000) /* 2026-11-23T10:00:00Z */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_batch(int rc, const fl_batch_t *b, const char *err, size_t errlen, int max_fixes)
{
    CHECK(rc == FL_OK || rc == FL_EPROTO || rc == FL_EINVAL || rc == FL_ERANGE);
    CHECK(memchr(err, '\0', errlen) != NULL);
    CHECK((rc == FL_OK) == (err[0] == '\0'));
    if (rc == FL_OK) {
        CHECK(b->n >= 1 && b->n <= max_fixes && b->fixes != NULL && b->problems == NULL && b->nproblems == 0);
        for (int i = 0; i < b->n; i++) {
            const fl_ingest_fix_t *f = &b->fixes[i];
            CHECK(fl_id_valid(f->fleet_id) && fl_id_valid(f->fix.vehicle_id));
            CHECK(f->fix.lat >= -90 && f->fix.lat <= 90 && f->fix.lng >= -180 && f->fix.lng <= 180);
            CHECK(f->fix.recorded_us <= NOW_US + 300LL * 1000000 && f->fix.received_us == 0);
            CHECK((f->fix.has & ~(unsigned)(FL_FIX_SPEED | FL_FIX_HEADING | FL_FIX_ACCURACY)) == 0);
            CHECK(!(f->fix.has & FL_FIX_SPEED) || (f->fix.speed_kmh >= 0 && f->fix.speed_kmh <= 1000));
            CHECK(!(f->fix.has & FL_FIX_HEADING) || (f->fix.heading_deg >= 0 && f->fix.heading_deg < 360));
            CHECK(!(f->fix.has & FL_FIX_ACCURACY) || (f->fix.accuracy_m >= 0 && f->fix.accuracy_m <= 100000));
        }
    } else if (rc == FL_ERANGE) {
        CHECK(b->fixes == NULL && b->n == 0 && b->nproblems >= 1 && b->nproblems <= 100);
        for (int i = 0; i < b->nproblems; i++) {
            const fl_fix_problem_t *p = &b->problems[i];
            CHECK(p->index >= 0 && p->index < max_fixes);
            CHECK(i == 0 || p->index >= b->problems[i - 1].index);
            CHECK(memchr(p->field, '\0', sizeof(p->field)) != NULL);
            CHECK(memchr(p->problem, '\0', sizeof(p->problem)) != NULL && p->problem[0] != '\0');
        }
    } else {
        CHECK(b->fixes == NULL && b->n == 0 && b->nproblems == 0);
    }
}

/* Unix days to a civil date (H. Hinnant's civil_from_days), to write a time back. */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static void check_time(const uint8_t *data, size_t size)
{
    char text[128];
    if (size >= sizeof(text))
        return;
    memcpy(text, data, size);
    text[size] = '\0';
    int64_t us;
    if (fl_rfc3339_parse(text, &us) != FL_OK)
        return;
    /* a 4-digit year with an offset of up to a day stays within a day of years 0000..9999 */
    CHECK(us >= (-62167219200LL - 86400) * 1000000 && us < (253402300800LL + 86400) * 1000000);
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int64_t frac = us - secs * 1000000, days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t sod = secs - days * 86400;
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999)
        return;
    char back[64];
    snprintf(back, sizeof(back), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y, m, d, (int)(sod / 3600), (int)(sod / 60 % 60),
             (int)(sod % 60), (int)frac);
    int64_t again;
    CHECK(fl_rfc3339_parse(back, &again) == FL_OK && again == us);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1);
    CHECK(body != NULL);
    memcpy(body, data, size);

    fl_batch_t b;
    char err[256];
    int rc = fl_batch_parse(body, size, 1000, NOW_US, &b, err, sizeof(err));
    CHECK(rc != FL_ENOMEM);
    check_batch(rc, &b, err, sizeof(err), 1000);
    int n = b.n;
    fl_batch_free(&b);
    CHECK(b.fixes == NULL && b.problems == NULL);

    fl_batch_t small;
    int rc2 = fl_batch_parse(body, size, 2, NOW_US, &small, err, sizeof(err));
    check_batch(rc2, &small, err, sizeof(err), 2);
    if (rc == FL_OK)
        CHECK(n <= 2 ? rc2 == FL_OK && small.n == n : rc2 == FL_EINVAL);
    else if (rc == FL_ERANGE)
        CHECK(rc2 == FL_ERANGE || rc2 == FL_EINVAL);
    else
        CHECK(rc2 == rc);
    fl_batch_free(&small);

    check_time(data, size);
    free(body);
    return 0;
}
