/*
 * libFuzzer harness for Standard Webhooks verification (lib/ingest/signature.c). The input is
 * "msg_id\ntimestamp\nsignature header\nbody" (missing parts are empty; the body is the rest, any
 * bytes). Each part is copied into a buffer of its exact size so that reading past it is an ASan
 * report. Checked for every input:
 * - fl_webhook_verify agrees with a plain reading of the spec: it passes exactly when the header
 *   has at most 32 space-separated entries and one of them is, character for character, the
 *   signature fl_webhook_sign makes with one of the keys (so decoding base64 is as strict as the
 *   reference libraries' text comparison);
 * - round trip: a signature made with either key passes beside a foreign entry, and fails with
 *   only the other key.
 * The keys are those of test_ingest_signature.c's reference vectors, so seeds signed by the npm
 * library reach the matching path.
 */
#include "ingest/ingest.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                                                \
    do {                                                                                                                           \
        if (!(cond))                                                                                                               \
            __builtin_trap();                                                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t keys[2][FL_SECRET_BYTES];
static bool ready;

static void setup(void)
{
    ready = true;
    for (int i = 0; i < FL_SECRET_BYTES; i++) {
        keys[0][i] = (uint8_t)i;              /* SECRET_A: bytes 0..31 */
        keys[1][i] = (uint8_t)(0xff - 7 * i); /* SECRET_B */
    }
}

/* The next part up to '\n' (or the end) as a NUL-terminated copy of exactly its size. */
static char *take_part(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = (size_t)((nl ? nl : end) - *p);
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = nl ? nl + 1 : end;
    return s;
}

/* What the spec says, read plainly: split on spaces, compare the text of each entry. */
static bool spec_accepts(const char *header, const char *sig0, const char *sig1)
{
    int entries = 0;
    bool match = false;
    for (const char *p = header; *p;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        entries++;
        size_t n = (size_t)(p - start);
        match |= (n == strlen(sig0) && memcmp(start, sig0, n) == 0) || (n == strlen(sig1) && memcmp(start, sig1, n) == 0);
    }
    return entries <= 32 && match;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    const uint8_t *p = data, *end = data + size;
    char *id = take_part(&p, end);
    char *ts = take_part(&p, end);
    char *header = take_part(&p, end);
    size_t blen = (size_t)(end - p);
    uint8_t *body = blen ? malloc(blen) : NULL;
    CHECK(blen == 0 || body != NULL);
    if (blen)
        memcpy(body, p, blen);

    const uint8_t(*both)[FL_SECRET_BYTES] = (const uint8_t(*)[FL_SECRET_BYTES])keys;
    char sigs[2][64];
    fl_webhook_sign(id, ts, body, blen, keys[0], sigs[0]);
    fl_webhook_sign(id, ts, body, blen, keys[1], sigs[1]);
    for (int k = 0; k < 2; k++)
        CHECK(strlen(sigs[k]) == 47 && memcmp(sigs[k], "v1,", 3) == 0);

    int rc = fl_webhook_verify(id, ts, header, body, blen, both, 2);
    CHECK(rc == FL_OK || rc == FL_EINVAL);
    CHECK((rc == FL_OK) == spec_accepts(header, sigs[0], sigs[1]));

    /* round trip */
    for (int k = 0; k < 2; k++) {
        char h[128];
        memcpy(h, "v1a,AAAA ", 9);
        memcpy(h + 9, sigs[k], 48);
        CHECK(fl_webhook_verify(id, ts, h, body, blen, both, 2) == FL_OK);
        CHECK(fl_webhook_verify(id, ts, h, body, blen, both + k, 1) == FL_OK);
        CHECK(fl_webhook_verify(id, ts, h, body, blen, both + (1 - k), 1) == FL_EINVAL);
    }

    free(body);
    free(header);
    free(ts);
    free(id);
    return 0;
}
