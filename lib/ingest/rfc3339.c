/*
 * RFC 3339 timestamps to Unix microseconds, without locale or time zone database: the offset is
 * in the text, and the date goes through days-from-civil arithmetic (proleptic Gregorian).
 *
 * Accepted: YYYY-MM-DD "T" HH:MM:SS [.fraction] ("Z" | +HH:MM | -HH:MM), with "t", "z" and a
 * space in place of "T" as RFC 3339 section 5.6 allows. The fraction may have any number of
 * digits; microseconds are kept and the rest truncated. "-00:00" (offset unknown) reads as UTC.
 * Refused: impossible dates (Feb 30, Feb 29 outside leap years), hour 24, missing seconds or
 * offset, anything before or after.
 * Leap seconds: second 60 is accepted only where one can occur, at 23:59:60 UTC (after applying
 * the offset), and is clamped to 23:59:59.999999: Unix time has no leap second, and clamping keeps
 * the fix inside the minute it was recorded in and before the next second's fixes.
 */
#include "ingest.h"

#include <string.h>

/* n decimal digits at p into *out; false unless all n are digits. */
static bool read_digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;                                   /* [0, 399] */
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

int fl_rfc3339_parse(const char *text, int64_t *us)
{
    if (text == NULL || us == NULL)
        return FL_EINVAL;
    /* "YYYY-MM-DDTHH:MM:SS" is 19 characters; strnlen keeps the checks below inside the string. */
    if (strnlen(text, 19) < 19)
        return FL_EINVAL;
    const char *p = text;
    int year, month, day, hour, minute, second;
    if (!read_digits(p, 4, &year) || p[4] != '-' || !read_digits(p + 5, 2, &month) || p[7] != '-' || !read_digits(p + 8, 2, &day))
        return FL_EINVAL;
    if (p[10] != 'T' && p[10] != 't' && p[10] != ' ')
        return FL_EINVAL;
    if (!read_digits(p + 11, 2, &hour) || p[13] != ':' || !read_digits(p + 14, 2, &minute) || p[16] != ':' ||
        !read_digits(p + 17, 2, &second))
        return FL_EINVAL;
    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60)
        return FL_EINVAL;
    p += 19;

    int frac_us = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return FL_EINVAL; /* a dot needs at least one digit */
        int ndigits = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (ndigits < 6) {
                frac_us = frac_us * 10 + (*p - '0');
                ndigits++;
            }
        }
        for (; ndigits < 6; ndigits++)
            frac_us *= 10;
    }

    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        /* p[1..5] are read only while each earlier one matched, so never past the NUL */
        if (!read_digits(p + 1, 2, &oh) || p[3] != ':' || !read_digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return FL_EINVAL;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return FL_EINVAL;
    }
    if (*p != '\0')
        return FL_EINVAL;

    if (second == 60) {
        int utc_minute_of_day = ((hour * 60 + minute - offset_min) % 1440 + 1440) % 1440;
        if (utc_minute_of_day != 23 * 60 + 59)
            return FL_EINVAL;
        second = 59;
        frac_us = 999999;
    }

    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - (int64_t)offset_min * 60;
    *us = secs * 1000000 + frac_us;
    return FL_OK;
}
