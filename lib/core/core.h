/*
 * fleetd core: status codes, allocation, logging, assertions, time and the settings table.
 * Every other module depends on this one; it depends on nothing of fleetd's.
 */
#ifndef FL_CORE_H
#define FL_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- status codes: functions return FL_OK or a negative FL_E* ---------------------------- */

enum {
    FL_OK = 0,
    FL_ENOMEM = -1,    /* allocation failed */
    FL_EINVAL = -2,    /* bad argument or malformed input */
    FL_ERANGE = -3,    /* value outside its allowed range */
    FL_EIO = -4,       /* system call or socket failure */
    FL_ETIMEDOUT = -5, /* deadline passed */
    FL_EFULL = -6,     /* bounded queue or table is full (back-pressure) */
    FL_ENOTFOUND = -7, /* no such thing */
    FL_EUNAVAIL = -8,  /* a service (database, peer) is not available now */
    FL_ECLOSED = -9,   /* the other side or the object is closed */
    FL_EPROTO = -10,   /* protocol violation */
    FL_EEXIST = -11,   /* already exists */
    FL_ESTATE = -12,   /* operation not allowed in the current state */
};

const char *fl_strerror(int status);

/* ---- allocation ------------------------------------------------------------------------------
 * Every allocation goes through these so a test can fail the Nth one (fl_alloc_fail_after).
 * fl_malloc and friends return NULL on failure; request paths turn that into a 503.
 * fl_xmalloc is for start-up only: it logs and exits on failure. */

void *fl_malloc(size_t size);
void *fl_calloc(size_t n, size_t size);
void *fl_realloc(void *ptr, size_t size);
char *fl_strdup(const char *s);
char *fl_strndup(const char *s, size_t n);
void fl_free(void *ptr);
void *fl_xmalloc(size_t size);
void *fl_xcalloc(size_t n, size_t size);
char *fl_xstrdup(const char *s);

/* Make the allocation after the next n succeed-ful ones fail (n = 0: the very next one);
 * a negative n turns failure injection off. Counts across all threads. */
void fl_alloc_fail_after(long n);
/* Number of allocations done through the wrappers so far (for tests). */
long fl_alloc_count(void);

/* ---- logging ---------------------------------------------------------------------------------
 * One JSON object per line on stderr: {"ts","level","event","message","request_id",...fields}.
 * When stderr is a terminal (or FLEETD_LOG_FORMAT=text) a readable line instead.
 *
 *   fl_log(FL_LOG_INFO, "http.listening", FL_MSG("listening"), FL_STR("addr", addr), FL_INT("shards", n));
 *
 * Each call writes its line with a single write(2), so lines from several threads never mix. */

typedef enum { FL_LOG_DEBUG = 0, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR, FL_LOG_OFF } fl_log_level_t;
typedef enum { FL_LOG_AUTO = 0, FL_LOG_JSON, FL_LOG_TEXT } fl_log_format_t;
typedef enum { FL_METRICS_LOOPBACK = 0, FL_METRICS_TOKEN, FL_METRICS_PUBLIC } fl_metrics_access_t;

typedef enum { FL_F_END = 0, FL_F_MSG, FL_F_RID, FL_F_STR, FL_F_INT, FL_F_DBL, FL_F_BOOL } fl_field_kind_t;

typedef struct {
    fl_field_kind_t kind;
    const char *key;
    union {
        const char *s;
        long long i;
        double d;
        bool b;
    } v;
} fl_field_t;

#define FL_MSG(text)    ((fl_field_t){.kind = FL_F_MSG, .key = "message", .v.s = (text)})
#define FL_RID(rid)     ((fl_field_t){.kind = FL_F_RID, .key = "request_id", .v.s = (rid)})
#define FL_STR(k, val)  ((fl_field_t){.kind = FL_F_STR, .key = (k), .v.s = (val)})
#define FL_INT(k, val)  ((fl_field_t){.kind = FL_F_INT, .key = (k), .v.i = (long long)(val)})
#define FL_DBL(k, val)  ((fl_field_t){.kind = FL_F_DBL, .key = (k), .v.d = (double)(val)})
#define FL_BOOL(k, val) ((fl_field_t){.kind = FL_F_BOOL, .key = (k), .v.b = (val)})

#define fl_log(level, event, ...)                                                                                                  \
    do {                                                                                                                           \
        if ((level) >= fl_log_level())                                                                                             \
            fl_log_emit((level), (event), (const fl_field_t[]){__VA_ARGS__, {.kind = FL_F_END}});                                  \
    } while (0)

void fl_log_init(fl_log_level_t level, fl_log_format_t format);
void fl_log_set_level(fl_log_level_t level);
fl_log_level_t fl_log_level(void);
/* Redirect log lines to fd (tests); -1 restores stderr. */
void fl_log_set_fd(int fd);
void fl_log_emit(fl_log_level_t level, const char *event, const fl_field_t *fields);
const char *fl_log_level_name(fl_log_level_t level);

/* ---- assertions ------------------------------------------------------------------------------
 * fl_assert checks an invariant. A failure is logged with file and line; then, inside an actor,
 * the actor crashes (its supervisor decides); anywhere else the process aborts. */

#define fl_assert(cond)                                                                                                            \
    do {                                                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                                                          \
            fl_assert_failed(#cond, __FILE__, __LINE__);                                                                           \
    } while (0)

typedef void (*fl_assert_handler_fn)(const char *expr, const char *file, int line);
_Noreturn void fl_assert_failed(const char *expr, const char *file, int line);
/* Installs a per-thread handler (the actor scheduler's); it must not return. NULL removes it. */
void fl_assert_set_thread_handler(fl_assert_handler_fn fn);

/* ---- time ------------------------------------------------------------------------------------ */

int64_t fl_now_mono_ms(void); /* monotonic milliseconds */
int64_t fl_now_mono_ns(void); /* monotonic nanoseconds */
int64_t fl_now_wall_ms(void); /* Unix epoch milliseconds */
/* RFC 3339 UTC with milliseconds into out (at least 25 bytes): 2026-11-23T10:00:00.123Z. */
void fl_time_format_ms(int64_t epoch_ms, char out[32]);

/* Formats a double the shortest way that reads back to the same value (59.3293, not
 * 59.329300000000003); "null" for NaN and infinities. out needs 32 bytes. */
void fl_format_double(double v, char out[32]);

/* ---- random ------------------------------------------------------------------------------------ */

/* n random bytes from the kernel (getrandom); never fails after start-up. */
void fl_random_bytes(void *buf, size_t n);
/* A uniformly distributed value in [0, bound). */
uint32_t fl_random_below(uint32_t bound);

/* ---- string-keyed hash map ------------------------------------------------------------------------
 * Not thread-safe: the owner locks it or keeps it on one thread. Keys are copied; values are the
 * caller's. Grows by doubling; iteration order is unspecified. */

typedef struct fl_map fl_map_t;

fl_map_t *fl_map_new(void);
/* Frees the map; value_free (may be NULL) is called on each value. */
void fl_map_free(fl_map_t *m, void (*value_free)(void *value));
void *fl_map_get(const fl_map_t *m, const char *key);
/* Inserts or replaces; the replaced value (or NULL) goes to *old when old is not NULL. */
int fl_map_put(fl_map_t *m, const char *key, void *value, void **old);
/* Removes key and returns its value, or NULL. */
void *fl_map_remove(fl_map_t *m, const char *key);
size_t fl_map_count(const fl_map_t *m);
/* Calls fn for each entry; fn must not change the map. */
void fl_map_foreach(const fl_map_t *m, void (*fn)(const char *key, void *value, void *arg), void *arg);
/* Bytes the map itself holds (buckets and entries, not the values). */
size_t fl_map_memory(const fl_map_t *m);

/* ---- text -------------------------------------------------------------------------------------- */

/* A contract identifier (fleet, vehicle, partner): 1 to 64 characters of [A-Za-z0-9._-]. */
bool fl_id_valid(const char *s);

/* A growable text buffer. An allocation failure sets `failed`; every later add is a no-op, so a
 * builder checks once at the end. p is NUL-terminated while not failed. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} fl_strbuf_t;

void fl_strbuf_add(fl_strbuf_t *b, const char *s, size_t n);
void fl_strbuf_str(fl_strbuf_t *b, const char *s);
void fl_strbuf_printf(fl_strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Makes room for more bytes; FL_ENOMEM (and failed) when it cannot. */
int fl_strbuf_reserve(fl_strbuf_t *b, size_t more);
void fl_strbuf_free(fl_strbuf_t *b);

/* ---- shared immutable bytes -------------------------------------------------------------------
 * A reference-counted, immutable byte string (a snapshot's JSON, a frame published to many
 * subscribers): written once by its creator, then only read, from any thread. */

typedef struct fl_blob fl_blob_t;

/* A blob of len bytes (plus a terminating NUL) for the creator to fill before sharing it. */
fl_blob_t *fl_blob_new(size_t len);
fl_blob_t *fl_blob_from(const void *data, size_t len);
char *fl_blob_data(fl_blob_t *blob);
size_t fl_blob_len(const fl_blob_t *blob);
fl_blob_t *fl_blob_ref(fl_blob_t *blob);
void fl_blob_unref(fl_blob_t *blob);
/* For fl_http_respond_ref and other void * release hooks. */
void fl_blob_release(void *blob);

/* ---- settings --------------------------------------------------------------------------------
 * One table (config.c) names every setting: environment variable, type, default, range and
 * help, and the fl_config_t field it fills. Sources, later ones winning: defaults, the config
 * file (FLEETD_CONFIG, KEY=VALUE lines like a systemd EnvironmentFile), the environment.
 * docs/configuration.md is generated from the table (fleetd config --markdown) and a test
 * checks that the two agree. */

typedef struct fl_config {
    char *config_file;
    char *database_url;
    char *listen;     /* host:port */
    int shards;       /* 0 = one per online CPU */
    char *master_key; /* 64 hex characters, or NULL */
    char *master_key_file;
    char *data_dir; /* local state (the demo's token), or NULL */
    int log_level;  /* fl_log_level_t */
    int log_format; /* fl_log_format_t */
    bool access_log;
    int metrics_access; /* fl_metrics_access_t: who may read GET /metrics */

    /* HTTP limits */
    int max_connections;
    int max_header_bytes;
    int max_headers;
    long max_body_bytes;
    int header_timeout_ms;
    int body_timeout_ms;
    int keepalive_timeout_ms;
    int write_timeout_ms;

    /* WebSocket (lib/http/ws.c) */
    char *ws_origins; /* "" = same origin */
    int ws_max_message;
    int ws_output_max;
    int ws_idle_timeout_ms;

    /* database */
    int db_connect_timeout_ms;
    int db_reconnect_min_ms;
    int db_reconnect_max_ms;
    int db_health_interval_ms;

    int shutdown_timeout_ms;

    /* trackers */
    int tracker_idle_timeout_ms;
    int tracker_replay;
    int live_behind_timeout_ms;
    int live_behind_vehicles;
    int live_sndbuf;
    int tracker_mailbox;
    int tracker_snapshot_interval_ms;
    int status_wait_ms; /* a status read waits this long for a (re)starting tracker */

    /* job queue and audit trail */
    char *node;
    int jobs_commit_interval_ms;
    int jobs_commit_max;
    int jobs_commit_timeout_ms;
    int jobs_max_pending;
    long jobs_max_pending_bytes;
    int jobs_poll_interval_ms;
    int jobs_lease_ms;
    int jobs_backoff_base_ms;
    int jobs_backoff_max_ms;
    int jobs_keep_completed_s;
    int jobs_keep_discarded_s;
    int jobs_keep_cancelled_s;
    int retention_s;
    int retention_every_s;

    /* ingest */
    int ingest_max_fixes;
    int ingest_timestamp_tolerance_ms;
    int ingest_rate;
    int ingest_burst;

    /* the live map (lib/api/web.c) */
    char *web_dir; /* "" = found beside the binary or installed */
    char *map_tiles;
    char *map_attribution;
} fl_config_t;

/* FL_SET_DURATION fills an int of milliseconds; FL_SET_SECONDS an int of seconds (for days). */
typedef enum {
    FL_SET_STRING,
    FL_SET_INT,
    FL_SET_BYTES,
    FL_SET_DURATION,
    FL_SET_BOOL,
    FL_SET_ENUM,
    FL_SET_SECONDS
} fl_setting_type_t;

typedef struct {
    const char *name; /* environment variable, e.g. FLEETD_LISTEN */
    fl_setting_type_t type;
    const char *def;     /* default, as text (NULL: unset) */
    long long min, max;  /* range for numbers (bytes in bytes, durations in ms) */
    const char *choices; /* FL_SET_ENUM: "debug|info|warn|error" (index is the stored value) */
    bool secret;         /* never printed */
    const char *help;
    size_t offset; /* field of fl_config_t */
} fl_setting_t;

/* The table, terminated by an entry with name NULL. */
const fl_setting_t *fl_settings(void);

/* Fills cfg from defaults, then the file named by FLEETD_CONFIG (if any), then the environment
 * (getenv). On a bad value returns FL_EINVAL and writes one line naming the setting to err. */
int fl_config_load(fl_config_t *cfg, char *err, size_t errlen);
/* Applies one NAME=VALUE (used for the file, the environment and command-line flags). */
int fl_config_set(fl_config_t *cfg, const char *name, const char *value, char *err, size_t errlen);
void fl_config_free(fl_config_t *cfg);
/* Writes the current value of a setting as text ("" when unset, "(set)" for secrets). */
void fl_config_format(const fl_config_t *cfg, const fl_setting_t *s, char *out, size_t outlen);
/* Writes the settings table as the Markdown of docs/configuration.md to out (a FILE *). */
void fl_config_markdown(void *file);

#endif
