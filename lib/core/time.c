#include "core.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t fl_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t fl_now_mono_ms(void)
{
    return fl_now_mono_ns() / 1000000;
}

int64_t fl_now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fl_time_format_ms(int64_t epoch_ms, char out[32])
{
    time_t secs = (time_t)(epoch_ms / 1000);
    int ms = (int)(epoch_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* gmtime_r keeps every field in range, so 24 characters suffice; the larger buffer only
     * satisfies the compiler, which cannot know that. */
    char tmp[96];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ms);
    size_t len = strnlen(tmp, 31);
    memcpy(out, tmp, len);
    out[len] = '\0';
}

void fl_format_double(double v, char out[32])
{
    if (!isfinite(v)) {
        snprintf(out, 32, "null");
        return;
    }
    /* 15 significant digits read back exactly for every value a person or a GPS writes (59.3293,
     * 270, 0.1), without the exponent that fewer digits would force on 270 ("2.7e+02"); the rare
     * double that needs more gets 16 or 17 */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

void fl_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* the kernel's generator does not fail once the system is up */
        }
        p += got;
        n -= (size_t)got;
    }
}

uint32_t fl_random_below(uint32_t bound)
{
    if (bound <= 1)
        return 0;
    /* Rejection sampling keeps the result unbiased. */
    uint32_t limit = UINT32_MAX - UINT32_MAX % bound;
    uint32_t r;
    do {
        fl_random_bytes(&r, sizeof(r));
    } while (r >= limit);
    return r % bound;
}
