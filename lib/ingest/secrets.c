/* The master key and partner signing secrets: generating a secret, and sealing it for storage
 * with libsodium's secretbox (XSalsa20-Poly1305) under the master key. Nothing here prints or
 * logs a key or a secret; error messages name the setting, never its value. */
#include "ingest/ingest.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A key file holds 64 hex characters and perhaps a newline; anything much longer is not one. */
#define KEY_FILE_MAX 256

static int fail(char *err, size_t errlen, int status, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 64 hex characters (surrounding whitespace ignored) into key; what is wrong otherwise, never the
 * text itself. */
static int parse_key(const char *text, size_t len, uint8_t key[FL_MASTER_KEY_BYTES], const char *setting, char *err, size_t errlen)
{
    while (len > 0 && isspace((unsigned char)text[0]))
        text++, len--;
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len != 2 * FL_MASTER_KEY_BYTES)
        return fail(err, errlen, FL_EINVAL, "%s: the master key must be 64 hex characters (32 bytes), got %zu characters", setting,
                    len);
    for (size_t i = 0; i < FL_MASTER_KEY_BYTES; i++) {
        int hi = hex_value((unsigned char)text[2 * i]), lo = hex_value((unsigned char)text[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            sodium_memzero(key, FL_MASTER_KEY_BYTES);
            return fail(err, errlen, FL_EINVAL, "%s: the master key must be 64 hex characters; character %zu is not hex", setting,
                        2 * i + (hi < 0 ? 1 : 2));
        }
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return FL_OK;
}

static int load_file(const char *path, uint8_t key[FL_MASTER_KEY_BYTES], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, FL_EINVAL, "FLEETD_MASTER_KEY_FILE: cannot open %s: %s", path, strerror(errno));
    char buf[KEY_FILE_MAX + 1];
    size_t len = 0;
    int rc = FL_OK;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = fail(err, errlen, FL_EINVAL, "FLEETD_MASTER_KEY_FILE: cannot read %s: %s", path, strerror(errno));
            break;
        }
        len += (size_t)n;
        if (n == 0 || len == sizeof(buf))
            break;
    }
    close(fd);
    if (rc == FL_OK && len > KEY_FILE_MAX)
        rc = fail(err, errlen, FL_EINVAL, "FLEETD_MASTER_KEY_FILE: %s is not a key file (over %d bytes)", path, KEY_FILE_MAX);
    if (rc == FL_OK)
        rc = parse_key(buf, len, key, "FLEETD_MASTER_KEY_FILE", err, errlen);
    sodium_memzero(buf, sizeof(buf));
    return rc;
}

int fl_master_key_load(const fl_config_t *cfg, uint8_t key[FL_MASTER_KEY_BYTES], char *err, size_t errlen)
{
    bool inline_key = cfg->master_key && cfg->master_key[0];
    bool file = cfg->master_key_file && cfg->master_key_file[0];
    if (sodium_init() < 0)
        return fail(err, errlen, FL_EIO, "libsodium cannot initialise");
    if (inline_key && file)
        return fail(err, errlen, FL_EINVAL, "FLEETD_MASTER_KEY and FLEETD_MASTER_KEY_FILE are both set: set one of them");
    if (inline_key)
        return parse_key(cfg->master_key, strlen(cfg->master_key), key, "FLEETD_MASTER_KEY", err, errlen);
    if (file)
        return load_file(cfg->master_key_file, key, err, errlen);
    return fail(err, errlen, FL_ENOTFOUND,
                "no master key: set FLEETD_MASTER_KEY (64 hex characters) or FLEETD_MASTER_KEY_FILE (a file holding them)");
}

void fl_secret_generate(uint8_t secret[FL_SECRET_BYTES], char text[64])
{
    fl_assert(sodium_init() >= 0);
    randombytes_buf(secret, FL_SECRET_BYTES);
    fl_secret_format(secret, text);
}

void fl_secret_format(const uint8_t secret[FL_SECRET_BYTES], char text[64])
{
    /* "whsec_" + 44 characters of padded standard base64 + NUL = 51 bytes */
    memcpy(text, "whsec_", 6);
    sodium_bin2base64(text + 6, 64 - 6, secret, FL_SECRET_BYTES, sodium_base64_VARIANT_ORIGINAL);
}

int fl_secret_parse(const char *text, uint8_t secret[FL_SECRET_BYTES])
{
    if (strncmp(text, "whsec_", 6) != 0)
        return FL_EINVAL;
    /* libsodium 1.0.18 decodes bytes 0x80..0xFF as '/' (found by fuzz_webhook_signature): check
     * the alphabet first */
    for (const char *c = text + 6; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '+' || *c == '/' ||
              *c == '='))
            return FL_EINVAL;
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(secret, FL_SECRET_BYTES, text + 6, strlen(text + 6), NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        len != FL_SECRET_BYTES || *end != '\0') {
        sodium_memzero(secret, FL_SECRET_BYTES);
        return FL_EINVAL;
    }
    return FL_OK;
}

void fl_secret_seal(const uint8_t master[FL_MASTER_KEY_BYTES], const uint8_t secret[FL_SECRET_BYTES], uint8_t nonce[24],
                    uint8_t ciphertext[FL_SECRET_BYTES + 16])
{
    _Static_assert(crypto_secretbox_NONCEBYTES == 24, "the schema stores 24-byte nonces");
    _Static_assert(crypto_secretbox_MACBYTES == 16, "the schema stores a 16-byte MAC");
    _Static_assert(crypto_secretbox_KEYBYTES == FL_MASTER_KEY_BYTES, "the master key is a secretbox key");
    fl_assert(sodium_init() >= 0);
    /* a random 24-byte nonce per secret: collisions are negligible at any number of secrets */
    randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(ciphertext, secret, FL_SECRET_BYTES, nonce, master);
}

int fl_secret_open(const uint8_t master[FL_MASTER_KEY_BYTES], const uint8_t nonce[24], const uint8_t *ciphertext, size_t len,
                   uint8_t secret[FL_SECRET_BYTES])
{
    if (len != FL_SECRET_BYTES + crypto_secretbox_MACBYTES)
        return FL_EINVAL;
    uint8_t plain[FL_SECRET_BYTES];
    int rc = crypto_secretbox_open_easy(plain, ciphertext, len, nonce, master) == 0 ? FL_OK : FL_EINVAL;
    if (rc == FL_OK)
        memcpy(secret, plain, FL_SECRET_BYTES);
    sodium_memzero(plain, sizeof(plain));
    return rc;
}
