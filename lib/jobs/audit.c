/* The audit worker: an audit job (an accepted ingest batch, exactly as it was signed) becomes rows
 * of ingest_batches, vehicles, positions and vehicle_latest, all in one statement, so a batch is
 * stored entirely or not at all and a retried job finds its own earlier work and adds nothing. */
#include "audit_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { AUDIT_CONCURRENCY = 4, AUDIT_TIMEOUT_MS = 60000 };

/* ---- reading times ------------------------------------------------------------------------------ */

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* RFC 3339 section 5.6: full-date "T" full-time, T and Z in either case; a leap second (:60) counts
 * as the first second of the next minute, as PostgreSQL reads it. */
int fl_audit_parse_time(const char *s, size_t len, int64_t *epoch_us)
{
    int y, mo, d, h, mi, sec;
    if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' || !digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return FL_EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return FL_EINVAL;
    size_t i = 19;
    int64_t frac_us = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        int64_t scale = 100000;
        bool round_up = false;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (scale > 0) {
                frac_us += (s[i] - '0') * scale;
                scale /= 10;
            } else if (i == start + 6) {
                round_up = s[i] >= '5';
            }
        }
        if (i == start)
            return FL_EINVAL;
        frac_us += round_up;
    }
    int64_t offset_s;
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) {
        offset_s = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return FL_EINVAL;
        offset_s = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
    } else {
        return FL_EINVAL;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_s;
    *epoch_us = secs * 1000000 + frac_us;
    return FL_OK;
}

/* ---- the args and the body ------------------------------------------------------------------------ */

int fl_audit_args(const char *partner_id, const char *webhook_id, int64_t webhook_timestamp, const char *signature,
                  int64_t received_at_us, const char *const *fleets, int nfleets, const char *body, size_t body_len, char **out,
                  size_t *len)
{
    *out = NULL;
    if (partner_id == NULL || !partner_id[0] || webhook_id == NULL || !webhook_id[0] || signature == NULL || body == NULL ||
        nfleets < 0)
        return FL_EINVAL;
    char received[40], ms[32];
    fl_time_format_ms(received_at_us / 1000 - (received_at_us % 1000 < 0), ms);
    /* the microseconds too: positions.received_at keeps them */
    int64_t us = ((received_at_us % 1000000) + 1000000) % 1000000;
    snprintf(received, sizeof(received), "%.19s.%06lldZ", ms, (long long)us);

    int rc = FL_ENOMEM;
    json_t *list = json_array();
    json_t *args = NULL;
    for (int i = 0; list && i < nfleets; i++)
        if (fleets[i] == NULL || json_array_append_new(list, json_string(fleets[i])) != 0) {
            rc = FL_EINVAL;
            goto out;
        }
    args = json_pack("{s:s, s:s, s:I, s:s, s:s, s:O, s:s%}", "partner_id", partner_id, "webhook_id", webhook_id,
                     "webhook_timestamp", (json_int_t)webhook_timestamp, "signature", signature, "received_at", received, "fleets",
                     list, "body", body, body_len);
    if (args == NULL) {
        /* jansson refuses strings that are not UTF-8; memory is the other reason */
        rc = list ? FL_EINVAL : FL_ENOMEM;
        goto out;
    }
    size_t size = json_dumpb(args, NULL, 0, JSON_COMPACT);
    char *text = size ? fl_malloc(size + 1) : NULL;
    if (text == NULL)
        goto out;
    json_dumpb(args, text, size, JSON_COMPACT);
    text[size] = '\0';
    *out = text;
    if (len)
        *len = size;
    rc = FL_OK;
out:
    json_decref(args);
    json_decref(list);
    return rc;
}

/* The columns of a batch's fixes as PostgreSQL array literals, for unnest(). */
enum { COL_FLEET, COL_VEHICLE, COL_LAT, COL_LNG, COL_RECORDED, COL_SPEED, COL_HEADING, COL_ACCURACY, NCOLS };

typedef struct {
    const char *partner_id, *webhook_id, *signature; /* into args */
    long long webhook_timestamp;
    int64_t received_us;
    const char *body; /* into args */
    size_t body_len;
    json_t *args;
    fl_strbuf_t col[NCOLS];
    int nfixes;
} batch_t;

static void batch_free(batch_t *b)
{
    json_decref(b->args);
    for (int i = 0; i < NCOLS; i++)
        fl_free(b->col[i].p);
}

static void col_next(fl_strbuf_t *col, int index)
{
    fl_strbuf_str(col, index ? "," : "{");
}

/* Ids are checked against [A-Za-z0-9._-]: nothing to escape inside the quotes. */
static void col_text(fl_strbuf_t *col, int index, const char *s)
{
    col_next(col, index);
    fl_strbuf_str(col, "\"");
    fl_strbuf_str(col, s);
    fl_strbuf_str(col, "\"");
}

static void col_double(fl_strbuf_t *col, int index, double v)
{
    char num[32];
    fl_format_double(v, num);
    col_next(col, index);
    fl_strbuf_str(col, num);
}

static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *string_field(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* A required number within [min, max] (max_open: below max). */
static bool number_field(json_t *fix, const char *key, double min, double max, bool max_open, double *out)
{
    json_t *v = json_object_get(fix, key);
    if (!json_is_number(v))
        return false;
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max || (max_open && d == max))
        return false;
    *out = d;
    return true;
}

/* An optional one: absent or null is NULL in the column. */
static bool optional_field(json_t *fix, const char *key, double min, double max, bool max_open, fl_strbuf_t *col, int index)
{
    json_t *v = json_object_get(fix, key);
    if (v == NULL || json_is_null(v)) {
        col_next(col, index);
        fl_strbuf_str(col, "NULL");
        return true;
    }
    double d;
    if (!number_field(fix, key, min, max, max_open, &d))
        return false;
    col_double(col, index, d);
    return true;
}

/* Ingest validated the body before accepting it; this checks again what would otherwise make the
 * statement fail on every retry (a type, a range, an id), so such a job is discarded at once. */
static int parse_fixes(batch_t *b, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(b->body, b->body_len, 0, &jerr);
    if (doc == NULL) {
        errf(err, errlen, "body is not JSON: %s at byte %d", jerr.text, jerr.position);
        return FL_EINVAL;
    }
    int rc = FL_EINVAL;
    json_t *fixes = json_object_get(doc, "fixes");
    if (!json_is_array(fixes)) {
        errf(err, errlen, "body has no \"fixes\" array");
        goto out;
    }
    size_t i;
    json_t *fix;
    json_array_foreach(fixes, i, fix)
    {
        int k = (int)i;
        const char *fleet = string_field(fix, "fleet_id"), *vehicle = string_field(fix, "vehicle_id");
        const char *recorded = string_field(fix, "recorded_at");
        double lat, lng;
        int64_t recorded_us;
        const char *bad = NULL;
        if (!json_is_object(fix))
            bad = "the fix is not an object";
        else if (fleet == NULL || !fl_id_valid(fleet))
            bad = "fleet_id is not 1 to 64 characters of [A-Za-z0-9._-]";
        else if (vehicle == NULL || !fl_id_valid(vehicle))
            bad = "vehicle_id is not 1 to 64 characters of [A-Za-z0-9._-]";
        else if (!number_field(fix, "lat", -90, 90, false, &lat))
            bad = "lat is not a number from -90 to 90";
        else if (!number_field(fix, "lng", -180, 180, false, &lng))
            bad = "lng is not a number from -180 to 180";
        else if (recorded == NULL || fl_audit_parse_time(recorded, strlen(recorded), &recorded_us) != FL_OK)
            bad = "recorded_at is not an RFC 3339 time";
        else if (!optional_field(fix, "speed_kmh", 0, 1000, false, &b->col[COL_SPEED], k))
            bad = "speed_kmh is not a number from 0 to 1000";
        else if (!optional_field(fix, "heading_deg", 0, 360, true, &b->col[COL_HEADING], k))
            bad = "heading_deg is not a number from 0 to below 360";
        else if (!optional_field(fix, "accuracy_m", 0, 100000, false, &b->col[COL_ACCURACY], k))
            bad = "accuracy_m is not a number from 0 to 100000";
        if (bad) {
            errf(err, errlen, "fix %d: %s", k, bad);
            goto out;
        }
        char num[32];
        col_text(&b->col[COL_FLEET], k, fleet);
        col_text(&b->col[COL_VEHICLE], k, vehicle);
        col_double(&b->col[COL_LAT], k, lat);
        col_double(&b->col[COL_LNG], k, lng);
        snprintf(num, sizeof(num), "%lld", (long long)recorded_us);
        col_next(&b->col[COL_RECORDED], k);
        fl_strbuf_str(&b->col[COL_RECORDED], num);
    }
    b->nfixes = (int)json_array_size(fixes);
    rc = FL_OK;
    for (int c = 0; c < NCOLS; c++) {
        fl_strbuf_str(&b->col[c], b->nfixes ? "}" : "{}");
        if (b->col[c].failed)
            rc = FL_ENOMEM;
    }
out:
    json_decref(doc);
    return rc;
}

/* FL_OK, FL_EINVAL (err says why: the job is discarded) or FL_ENOMEM. */
static int parse_job(const char *args, batch_t *b, char *err, size_t errlen)
{
    json_error_t jerr;
    b->args = json_loads(args ? args : "", 0, &jerr);
    if (b->args == NULL) {
        errf(err, errlen, "args are not JSON: %s", jerr.text);
        return FL_EINVAL;
    }
    json_t *ts = json_object_get(b->args, "webhook_timestamp");
    json_t *body = json_object_get(b->args, "body");
    const char *received = string_field(b->args, "received_at");
    b->partner_id = string_field(b->args, "partner_id");
    b->webhook_id = string_field(b->args, "webhook_id");
    b->signature = string_field(b->args, "signature");
    if (b->partner_id == NULL || !fl_id_valid(b->partner_id) || b->webhook_id == NULL || !b->webhook_id[0] ||
        b->signature == NULL || !json_is_integer(ts) || !json_is_string(body) || received == NULL) {
        errf(err, errlen, "args lack partner_id, webhook_id, webhook_timestamp, signature, received_at or body");
        return FL_EINVAL;
    }
    if (fl_audit_parse_time(received, strlen(received), &b->received_us) != FL_OK) {
        errf(err, errlen, "args: received_at is not an RFC 3339 time");
        return FL_EINVAL;
    }
    b->webhook_timestamp = (long long)json_integer_value(ts);
    b->body = json_string_value(body);
    b->body_len = json_string_length(body);

    int rc = parse_fixes(b, err, errlen);
    if (rc == FL_EINVAL) {
        char why[200];
        snprintf(why, sizeof(why), "%.190s", err); /* cut: it goes into one error entry */
        errf(err, errlen, "body: %s", why);
    }
    return rc;
}

/* ---- storing --------------------------------------------------------------------------------------
 * One transaction of three statements, sent together (one round trip). Each statement sees what
 * the ones before it did and what other transactions committed before it began: a vehicle that a
 * concurrent batch is registering makes the second statement wait for that batch, so the third
 * sees it. Every insert tolerates what is already there, so a retried job adds nothing and fails
 * on nothing. A fix naming a fleet other than its vehicle's (two partners registering one new
 * vehicle at once; ingest refuses the rest) is not stored. Rows go in key order, so concurrent
 * batches touching the same vehicles lock them in the same order. */

enum { P_PARTNER, P_WEBHOOK, P_TIMESTAMP, P_SIGNATURE, P_BODY, P_RECEIVED, P_JOB, NBATCH_PARAMS };

static const char batch_sql[] =
    "INSERT INTO ingest_batches (partner_id, webhook_id, webhook_timestamp, signature, body, received_at, job_id)"
    " VALUES ($1, $2, $3::bigint, $4, $5::bytea, 'epoch'::timestamptz + $6::bigint * interval '1 microsecond', $7::bigint)"
    " ON CONFLICT (partner_id, webhook_id) DO NOTHING";

static const char vehicles_sql[] = "INSERT INTO vehicles (id, fleet_id)"
                                   " SELECT DISTINCT ON (t.vehicle_id) t.vehicle_id, t.fleet_id"
                                   " FROM unnest($1::text[], $2::text[]) AS t(fleet_id, vehicle_id)"
                                   " ORDER BY t.vehicle_id, t.fleet_id"
                                   " ON CONFLICT (id) DO NOTHING";

/* $1, $2: the batch's partner and webhook-id; $3..$10: the columns */
static const char fixes_sql[] =
    "WITH fix AS ("
    "  SELECT t.fleet_id, t.vehicle_id, t.lat, t.lng, 'epoch'::timestamptz + t.recorded_us * interval '1 microsecond' AS "
    "recorded_at,"
    "         t.speed_kmh, t.heading_deg, t.accuracy_m"
    "    FROM unnest($3::text[], $4::text[], $5::float8[], $6::float8[], $7::bigint[], $8::float8[], $9::float8[], $10::float8[])"
    "         AS t(fleet_id, vehicle_id, lat, lng, recorded_us, speed_kmh, heading_deg, accuracy_m)"
    "), batch AS ("
    "  SELECT id, received_at FROM ingest_batches WHERE partner_id = $1 AND webhook_id = $2"
    "), ok AS ("
    "  SELECT fix.* FROM fix JOIN vehicles v ON v.id = fix.vehicle_id AND v.fleet_id = fix.fleet_id"
    "), stored AS ("
    "  INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, speed_kmh, heading_deg, accuracy_m, "
    "batch_id)"
    "  SELECT ok.vehicle_id, ok.recorded_at, ok.fleet_id, ok.lat, ok.lng, batch.received_at, ok.speed_kmh, ok.heading_deg,"
    "         ok.accuracy_m, batch.id"
    "    FROM ok, batch ORDER BY ok.vehicle_id, ok.recorded_at"
    "  ON CONFLICT (vehicle_id, recorded_at) DO NOTHING"
    "  RETURNING 1"
    "), moved AS ("
    "  INSERT INTO vehicle_latest AS l (vehicle_id, fleet_id, lat, lng, recorded_at, received_at, speed_kmh, heading_deg, "
    "accuracy_m)"
    "  SELECT DISTINCT ON (ok.vehicle_id) ok.vehicle_id, ok.fleet_id, ok.lat, ok.lng, ok.recorded_at, batch.received_at,"
    "         ok.speed_kmh, ok.heading_deg, ok.accuracy_m"
    "    FROM ok, batch ORDER BY ok.vehicle_id, ok.recorded_at DESC"
    "  ON CONFLICT (vehicle_id) DO UPDATE SET lat = EXCLUDED.lat, lng = EXCLUDED.lng, recorded_at = EXCLUDED.recorded_at,"
    "    received_at = EXCLUDED.received_at, speed_kmh = EXCLUDED.speed_kmh, heading_deg = EXCLUDED.heading_deg,"
    "    accuracy_m = EXCLUDED.accuracy_m"
    "  WHERE l.recorded_at < EXCLUDED.recorded_at"
    "  RETURNING 1"
    ")"
    "SELECT (SELECT count(*) FROM fix), (SELECT count(*) FROM ok), (SELECT count(*) FROM stored), (SELECT count(*) FROM moved)";

typedef struct {
    fl_job_ctx_t *ctx;
    int64_t job_id;
    char partner_id[65];
} store_t;

static void on_stored(PGresult *const *results, int n, int status, const char *err, int failed_index, void *arg)
{
    (void)n;
    store_t *s = arg;
    if (status != FL_OK) {
        static const char *const what[] = {"the request", "the vehicles", "the fixes"};
        char why[512];
        snprintf(why, sizeof(why), "storing %s failed: %s",
                 failed_index >= 0 && failed_index < 3 ? what[failed_index] : "the batch", err ? err : fl_strerror(status));
        fl_job_fail(s->ctx, why);
        fl_free(s);
        return;
    }
    long c[4];
    for (int i = 0; i < 4; i++)
        c[i] = strtol(PQgetvalue(results[2], 0, i), NULL, 10);
    long fixes = c[0], ok = c[1], stored = c[2], moved = c[3];
    if (ok < fixes)
        fl_log(FL_LOG_WARN, "audit.foreign_vehicle", FL_MSG("fixes naming a fleet other than their vehicle's were not stored"),
               FL_INT("job", s->job_id), FL_STR("partner", s->partner_id), FL_INT("fixes", fixes - ok));
    fl_log(FL_LOG_DEBUG, "audit.stored", FL_MSG("batch stored"), FL_INT("job", s->job_id), FL_INT("fixes", fixes),
           FL_INT("new_positions", stored), FL_INT("vehicles_moved", moved));
    fl_job_complete(s->ctx);
    fl_free(s);
}

static void audit_perform(fl_job_ctx_t *ctx, const fl_job_t *job, fl_db_t *db, void *arg)
{
    (void)arg;
    batch_t b = {0};
    char err[512];
    int rc = parse_job(job->args, &b, err, sizeof(err));
    if (rc == FL_EINVAL) {
        fl_log(FL_LOG_ERROR, "audit.discarded", FL_MSG("an audit job cannot be read; discarded"), FL_INT("job", job->id),
               FL_STR("error", err));
        fl_job_discard(ctx, err);
        goto out;
    }
    if (rc != FL_OK) {
        fl_job_fail(ctx, "out of memory while reading the batch");
        goto out;
    }
    if (db == NULL) {
        fl_job_fail(ctx, "no database connection on this shard now");
        goto out;
    }
    store_t *s = fl_malloc(sizeof(*s));
    if (s == NULL) {
        fl_job_fail(ctx, "out of memory while storing the batch");
        goto out;
    }
    *s = (store_t){.ctx = ctx, .job_id = job->id};
    snprintf(s->partner_id, sizeof(s->partner_id), "%s", b.partner_id);

    char ts[24], received[24], id[24];
    snprintf(ts, sizeof(ts), "%lld", b.webhook_timestamp);
    snprintf(received, sizeof(received), "%lld", (long long)b.received_us);
    snprintf(id, sizeof(id), "%lld", (long long)job->id);
    /* the body goes as binary: its bytes exactly, whatever they are */
    const char *batch_params[NBATCH_PARAMS] = {b.partner_id, b.webhook_id, ts, b.signature, b.body, received, id};
    int lengths[NBATCH_PARAMS] = {[P_BODY] = (int)b.body_len};
    int formats[NBATCH_PARAMS] = {[P_BODY] = 1};
    const char *vehicle_params[] = {b.col[COL_FLEET].p, b.col[COL_VEHICLE].p};
    const char *fix_params[2 + NCOLS] = {b.partner_id, b.webhook_id};
    for (int i = 0; i < NCOLS; i++)
        fix_params[2 + i] = b.col[i].p;
    fl_db_stmt_t stmts[] = {
        {.sql = batch_sql, .nparams = NBATCH_PARAMS, .values = batch_params, .lengths = lengths, .formats = formats},
        {.sql = vehicles_sql, .nparams = 2, .values = vehicle_params},
        {.sql = fixes_sql, .nparams = 2 + NCOLS, .values = fix_params},
    };
    rc = fl_db_transaction(db, stmts, 3, on_stored, s);
    if (rc != FL_OK) {
        fl_free(s);
        snprintf(err, sizeof(err), "cannot send the batch to the database: %s", fl_strerror(rc));
        fl_job_fail(ctx, err);
    }
out:
    batch_free(&b);
}

int fl_audit_register(fl_jobs_t *jobs, int retention_s, int retention_every_s)
{
    fl_queue_def_t queue = {.name = FL_AUDIT_QUEUE, .concurrency = AUDIT_CONCURRENCY};
    fl_worker_def_t worker = {.kind = FL_AUDIT_KIND, .perform = audit_perform, .timeout_ms = AUDIT_TIMEOUT_MS};
    int rc = fl_jobs_add_queue(jobs, &queue);
    if (rc == FL_OK)
        rc = fl_jobs_add_worker(jobs, &worker);
    if (rc == FL_OK && retention_s > 0)
        rc = fl_retention_register(jobs, retention_s, retention_every_s);
    return rc;
}
