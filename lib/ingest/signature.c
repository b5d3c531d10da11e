/*
 * Standard Webhooks 1.0 symmetric signatures: base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
 * in "v1,<base64>" entries of a space-separated header. The header is parsed as the reference
 * libraries (standardwebhooks on npm, PyPI, Go) do: split on spaces, skip entries whose version is
 * not "v1" or that are malformed, pass when any one entry matches any key. Bounded for hostile
 * input: more than MAX_ENTRIES entries is a malformed header, refused before any HMAC is computed;
 * an entry of any length but that of a v1 signature is skipped without a look at its content; the
 * work is one pass over the header (whose size the HTTP limits bound) plus one HMAC per key.
 *
 * Like the reference libraries, the signature is compared as text: the base64 of the expected
 * HMAC against the entry, so exactly one spelling passes. (Decoding the entry instead would not be
 * as strict: libsodium 1.0.18's sodium_base642bin reads every byte >= 0x80 as '/', a
 * signed-char slip that fuzz_webhook_signature found.)
 * Where fleetd is stricter than the reference libraries, on purpose:
 * - An entry is exactly "v1,<44 characters>"; "v1,<sig>,junk" is skipped (Go and JS compare only
 *   the part between the first and second comma).
 * - The timestamp is signed as given: the route checks it is an integer and within the window.
 */
#include "ingest.h"

#include <sodium.h>
#include <string.h>

#define MAX_ENTRIES 32
#define SIG_B64_LEN 44 /* base64 of 32 bytes, padded */

static void hmac_message(const char *msg_id, const char *timestamp, const void *body, size_t body_len,
                         const uint8_t key[FL_SECRET_BYTES], uint8_t mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, FL_SECRET_BYTES);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg_id, strlen(msg_id));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)timestamp, strlen(timestamp));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    if (body_len > 0)
        crypto_auth_hmacsha256_update(&st, body, body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

int fl_webhook_verify(const char *msg_id, const char *timestamp, const char *signature_header, const void *body, size_t body_len,
                      const uint8_t (*keys)[FL_SECRET_BYTES], int nkeys)
{
    if (msg_id == NULL || timestamp == NULL || signature_header == NULL || (body == NULL && body_len > 0) || keys == NULL ||
        nkeys <= 0)
        return FL_EINVAL;

    /* First the header alone: where its v1 signatures are. */
    const char *sigs[MAX_ENTRIES];
    int nentries = 0, nsigs = 0;
    for (const char *p = signature_header; *p;) {
        if (*p == ' ') {
            p++;
            continue; /* empty entries between repeated spaces, as split(" ") yields them */
        }
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        if (++nentries > MAX_ENTRIES)
            return FL_EINVAL;
        if ((size_t)(p - start) == 3 + SIG_B64_LEN && memcmp(start, "v1,", 3) == 0)
            sigs[nsigs++] = start + 3;
    }
    if (nsigs == 0)
        return FL_EINVAL;

    /* Then one HMAC per key, its base64 compared with every signature in constant time. */
    int rc = FL_EINVAL;
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    char expected[SIG_B64_LEN + 1];
    for (int k = 0; k < nkeys && rc != FL_OK; k++) {
        hmac_message(msg_id, timestamp, body, body_len, keys[k], mac);
        sodium_bin2base64(expected, sizeof(expected), mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
        for (int i = 0; i < nsigs; i++) {
            if (sodium_memcmp(expected, sigs[i], SIG_B64_LEN) == 0) {
                rc = FL_OK;
                break;
            }
        }
    }
    sodium_memzero(mac, sizeof(mac));
    sodium_memzero(expected, sizeof(expected));
    return rc;
}

void fl_webhook_sign(const char *msg_id, const char *timestamp, const void *body, size_t body_len,
                     const uint8_t key[FL_SECRET_BYTES], char out[64])
{
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    hmac_message(msg_id, timestamp, body, body_len, key, mac);
    memcpy(out, "v1,", 3);
    sodium_bin2base64(out + 3, 64 - 3, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
}
