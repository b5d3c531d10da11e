/* lib/core settings: defaults, units, ranges, the file, the environment winning over it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void clear_env(void)
{
    for (const fl_setting_t *s = fl_settings(); s->name; s++)
        unsetenv(s->name);
}

static void defaults_fill_every_setting(void **state)
{
    (void)state;
    clear_env();
    fl_config_t cfg;
    char err[256];
    assert_int_equal(fl_config_load(&cfg, err, sizeof(err)), FL_OK);
    assert_string_equal(cfg.listen, "127.0.0.1:4000");
    assert_int_equal(cfg.max_body_bytes, 1024 * 1024);
    assert_int_equal(cfg.max_header_bytes, 16 * 1024);
    assert_int_equal(cfg.header_timeout_ms, 10000);
    assert_int_equal(cfg.log_level, FL_LOG_INFO);
    assert_true(cfg.access_log);
    assert_null(cfg.master_key);
    fl_config_free(&cfg);
}

static void units_and_ranges(void **state)
{
    (void)state;
    fl_config_t cfg = {0};
    char err[256];
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_BODY_BYTES", "64KiB", err, sizeof(err)), FL_OK);
    assert_int_equal(cfg.max_body_bytes, 65536);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_BODY_BYTES", "2MiB", err, sizeof(err)), FL_OK);
    assert_int_equal(cfg.max_body_bytes, 2 * 1024 * 1024);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_HEADER_TIMEOUT", "2m", err, sizeof(err)), FL_OK);
    assert_int_equal(cfg.header_timeout_ms, 120000);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_HEADER_TIMEOUT", "250", err, sizeof(err)), FL_OK);
    assert_int_equal(cfg.header_timeout_ms, 250);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_ACCESS_LOG", "off", err, sizeof(err)), FL_OK);
    assert_false(cfg.access_log);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_LOG_LEVEL", "WARN", err, sizeof(err)), FL_OK);
    assert_int_equal(cfg.log_level, FL_LOG_WARN);

    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_BODY_BYTES", "12 parsecs", err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "FLEETD_MAX_BODY_BYTES"));
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_BODY_BYTES", "1GiB", err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "out of range"));
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_HEADERS", "-5", err, sizeof(err)), FL_EINVAL);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MAX_HEADERS", "99999999999999999999", err, sizeof(err)), FL_EINVAL);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_LOG_LEVEL", "loud", err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "debug|info|warn|error"));
    assert_int_equal(fl_config_set(&cfg, "FLEETD_ACCESS_LOG", "maybe", err, sizeof(err)), FL_EINVAL);
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MASTER_KEY", "abc", err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "64 hex"));
    assert_int_equal(fl_config_set(&cfg, "FLEETD_NOPE", "1", err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "unknown setting"));
    fl_config_free(&cfg);
}

static void file_then_environment(void **state)
{
    (void)state;
    clear_env();
    char path[] = "/tmp/fleetd-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] =
        "# comment\n\nFLEETD_LISTEN=127.0.0.1:5000\nexport FLEETD_MAX_HEADERS=\"32\"\n  FLEETD_LOG_LEVEL = ignored\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);

    fl_config_t cfg;
    char err[256];
    setenv("FLEETD_CONFIG", path, 1);
    /* "FLEETD_LOG_LEVEL " (with a space) is not a setting: the file is refused, naming the line. */
    assert_int_equal(fl_config_load(&cfg, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "line 5"));
    fl_config_free(&cfg);

    FILE *f = fopen(path, "w");
    fputs("FLEETD_LISTEN=127.0.0.1:5000\nexport FLEETD_MAX_HEADERS=\"32\"\n", f);
    fclose(f);
    setenv("FLEETD_MAX_HEADERS", "40", 1);
    assert_int_equal(fl_config_load(&cfg, err, sizeof(err)), FL_OK);
    assert_string_equal(cfg.listen, "127.0.0.1:5000");
    assert_int_equal(cfg.max_headers, 40);
    fl_config_free(&cfg);

    setenv("FLEETD_MAX_HEADERS", "3", 1);
    assert_int_equal(fl_config_load(&cfg, err, sizeof(err)), FL_EINVAL);
    assert_non_null(strstr(err, "FLEETD_MAX_HEADERS"));
    fl_config_free(&cfg);
    clear_env();
    unlink(path);
}

static void secrets_are_not_printed(void **state)
{
    (void)state;
    fl_config_t cfg = {0};
    char err[256], out[256];
    const char *key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_int_equal(fl_config_set(&cfg, "FLEETD_MASTER_KEY", key, err, sizeof(err)), FL_OK);
    assert_int_equal(fl_config_set(&cfg, "DATABASE_URL", "postgresql://u:pw@h/db", err, sizeof(err)), FL_OK);
    for (const fl_setting_t *s = fl_settings(); s->name; s++) {
        fl_config_format(&cfg, s, out, sizeof(out));
        assert_null(strstr(out, "pw@"));
        assert_null(strstr(out, "0011223344"));
    }
    fl_config_free(&cfg);
}

static void every_default_is_in_range_and_documented(void **state)
{
    (void)state;
    for (const fl_setting_t *s = fl_settings(); s->name; s++) {
        assert_non_null(s->help);
        assert_true(strlen(s->help) > 10);
        if (s->def) {
            fl_config_t cfg = {0};
            char err[256];
            assert_int_equal(fl_config_set(&cfg, s->name, s->def, err, sizeof(err)), FL_OK);
            fl_config_free(&cfg);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_fill_every_setting),
        cmocka_unit_test(units_and_ranges),
        cmocka_unit_test(file_then_environment),
        cmocka_unit_test(secrets_are_not_printed),
        cmocka_unit_test(every_default_is_in_range_and_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
