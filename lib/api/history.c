/* GET /api/v1/fleets/{fleet_id}/vehicles/{vehicle_id}/track: a vehicle's stored fixes in a time
 * range (CONTRACT.md "History"), as JSON or as a GeoJSON Feature. One query on the shard's own
 * connection: a range scan of the positions primary key (vehicle_id, recorded_at). */
#include "api_internal.h"

#include "jobs/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LIMIT_DEFAULT = 1000, LIMIT_MAX = 10000 };
#define DEFAULT_SPAN_US (24LL * 3600 * 1000000)
/* No upper bound given: 2100-01-01, far past any fix and still exact as a double in the query. */
#define NO_END_US 4102444800000000LL

/* Ids are [A-Za-z0-9._-] (checked before the query): nothing to escape. */
static void out_quoted(fl_strbuf_t *o, const char *s)
{
    fl_strbuf_add(o, "\"", 1);
    fl_strbuf_str(o, s);
    fl_strbuf_add(o, "\"", 1);
}

static void add_time(fl_strbuf_t *o, int64_t us)
{
    char ts[32];
    fl_time_format_ms(us / 1000 - (us % 1000 < 0 ? 1 : 0), ts);
    out_quoted(o, ts);
}

/* ---- the request ---------------------------------------------------------------------------------- */

typedef struct {
    fl_http_req_t *req;
    const char *fleet_id, *vehicle_id; /* the request's: valid until it is answered */
    int limit;
    bool geojson;
} track_t;

static void bad_parameter(fl_http_req_t *req, const char *message)
{
    fl_http_respond_error(req, 400, "invalid_parameter", message);
}

/* Reads an optional RFC 3339 query parameter; false after answering 400. */
static bool time_param(fl_http_req_t *req, const char *name, bool *given, int64_t *us)
{
    const char *v = fl_http_req_query(req, name);
    *given = v != NULL;
    if (v == NULL)
        return true;
    if (fl_audit_parse_time(v, strlen(v), us) != FL_OK) {
        char message[128];
        snprintf(message, sizeof(message), "%s must be an RFC 3339 time, e.g. 2026-11-23T10:00:00Z", name);
        bad_parameter(req, message);
        return false;
    }
    return true;
}

/* The column numbers of the query below. */
enum { C_FLEET, C_VEHICLE, C_LAT, C_LNG, C_RECORDED, C_RECEIVED, C_SPEED, C_HEADING, C_ACCURACY };

static const char track_sql[] =
    "SELECT f.id IS NOT NULL, v.id IS NOT NULL, p.lat, p.lng,"
    " (extract(epoch FROM p.recorded_at) * 1000000)::bigint, (extract(epoch FROM p.received_at) * 1000000)::bigint,"
    " p.speed_kmh, p.heading_deg, p.accuracy_m"
    " FROM (SELECT 1) one"
    " LEFT JOIN fleets f ON f.id = $1"
    " LEFT JOIN vehicles v ON v.id = $2 AND v.fleet_id = f.id"
    " LEFT JOIN LATERAL ("
    "  SELECT lat, lng, recorded_at, received_at, speed_kmh, heading_deg, accuracy_m FROM positions"
    "   WHERE vehicle_id = v.id"
    "     AND recorded_at >= 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'"
    "     AND recorded_at < 'epoch'::timestamptz + $4::bigint * interval '1 microsecond'"
    "   ORDER BY recorded_at LIMIT $5::int) p ON true";

static void add_number(fl_strbuf_t *o, const char *key, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return;
    char num[32];
    fl_format_double(strtod(PQgetvalue(res, row, col), NULL), num);
    fl_strbuf_add(o, ",\"", 2);
    fl_strbuf_str(o, key);
    fl_strbuf_add(o, "\":", 2);
    fl_strbuf_str(o, num);
}

/* {"fleet_id","vehicle_id","fixes":[vehicle objects as in status],"next_from"} */
static void write_json(fl_strbuf_t *o, const track_t *t, const PGresult *res, int n)
{
    fl_strbuf_str(o, "{\"fleet_id\":");
    out_quoted(o, t->fleet_id);
    fl_strbuf_str(o, ",\"vehicle_id\":");
    out_quoted(o, t->vehicle_id);
    fl_strbuf_str(o, ",\"fixes\":[");
    for (int i = 0; i < n; i++) {
        fl_strbuf_str(o, i ? ",{\"vehicle_id\":" : "{\"vehicle_id\":");
        out_quoted(o, t->vehicle_id);
        add_number(o, "lat", res, i, C_LAT);
        add_number(o, "lng", res, i, C_LNG);
        fl_strbuf_str(o, ",\"recorded_at\":");
        add_time(o, strtoll(PQgetvalue(res, i, C_RECORDED), NULL, 10));
        fl_strbuf_str(o, ",\"received_at\":");
        add_time(o, strtoll(PQgetvalue(res, i, C_RECEIVED), NULL, 10));
        add_number(o, "speed_kmh", res, i, C_SPEED);
        add_number(o, "heading_deg", res, i, C_HEADING);
        add_number(o, "accuracy_m", res, i, C_ACCURACY);
        fl_strbuf_add(o, "}", 1);
    }
    fl_strbuf_str(o, "]");
}

static void write_coordinates(fl_strbuf_t *o, const PGresult *res, int i)
{
    char lat[32], lng[32];
    fl_format_double(strtod(PQgetvalue(res, i, C_LAT), NULL), lat);
    fl_format_double(strtod(PQgetvalue(res, i, C_LNG), NULL), lng);
    fl_strbuf_add(o, "[", 1);
    fl_strbuf_str(o, lng);
    fl_strbuf_add(o, ",", 1);
    fl_strbuf_str(o, lat);
    fl_strbuf_add(o, "]", 1);
}

/* A Feature: a LineString of [lng, lat] (RFC 7946 wants two positions or more: one fix is a
 * Point, none a null geometry), the fixes' recorded_at in properties.times, one per position. */
static void write_geojson(fl_strbuf_t *o, const track_t *t, const PGresult *res, int n)
{
    fl_strbuf_str(o, "{\"type\":\"Feature\",\"geometry\":");
    if (n == 0) {
        fl_strbuf_str(o, "null");
    } else if (n == 1) {
        fl_strbuf_str(o, "{\"type\":\"Point\",\"coordinates\":");
        write_coordinates(o, res, 0);
        fl_strbuf_str(o, "}");
    } else {
        fl_strbuf_str(o, "{\"type\":\"LineString\",\"coordinates\":[");
        for (int i = 0; i < n; i++) {
            if (i)
                fl_strbuf_add(o, ",", 1);
            write_coordinates(o, res, i);
        }
        fl_strbuf_str(o, "]}");
    }
    fl_strbuf_str(o, ",\"properties\":{\"fleet_id\":");
    out_quoted(o, t->fleet_id);
    fl_strbuf_str(o, ",\"vehicle_id\":");
    out_quoted(o, t->vehicle_id);
    fl_strbuf_str(o, ",\"times\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            fl_strbuf_add(o, ",", 1);
        add_time(o, strtoll(PQgetvalue(res, i, C_RECORDED), NULL, 10));
    }
    fl_strbuf_str(o, "]");
}

static void on_track(const PGresult *res, int status, const char *err, void *arg)
{
    track_t *t = arg;
    fl_http_req_t *req = t->req;
    if (status != FL_OK) {
        fl_log(FL_LOG_WARN, "history.query_failed", FL_MSG("a track could not be read"), FL_RID(fl_http_req_id(req)),
               FL_STR("error", err ? err : fl_strerror(status)));
        fl_http_set_header(req, "Retry-After", "1");
        fl_http_respond_error(req, 503, "unavailable", "the history cannot be read now (database unavailable)");
        goto out;
    }
    char message[160];
    if (PQgetvalue(res, 0, C_FLEET)[0] != 't') {
        snprintf(message, sizeof(message), "no fleet \"%.64s\" for this token", t->fleet_id);
        fl_http_respond_error(req, 404, "fleet_not_found", message);
        goto out;
    }
    if (PQgetvalue(res, 0, C_VEHICLE)[0] != 't') {
        snprintf(message, sizeof(message), "no vehicle \"%.64s\" in fleet \"%.64s\"", t->vehicle_id, t->fleet_id);
        fl_http_respond_error(req, 404, "vehicle_not_found", message);
        goto out;
    }
    /* one row with NULLs when the vehicle has no fix in the range; limit + 1 rows when there are more */
    int n = PQntuples(res);
    if (n == 1 && PQgetisnull(res, 0, C_RECORDED))
        n = 0;
    bool more = n > t->limit;
    if (more)
        n = t->limit;
    fl_strbuf_t o = {0};
    if (t->geojson)
        write_geojson(&o, t, res, n);
    else
        write_json(&o, t, res, n);
    fl_strbuf_str(&o, ",\"next_from\":");
    if (more)
        add_time(&o, strtoll(PQgetvalue(res, n, C_RECORDED), NULL, 10));
    else
        fl_strbuf_str(&o, "null");
    fl_strbuf_str(&o, t->geojson ? "}}" : "}");
    if (o.failed) {
        fl_free(o.p);
        fl_http_respond_error(req, 503, "unavailable", "out of memory while writing the track");
        goto out;
    }
    fl_http_respond_ref(req, 200, t->geojson ? "application/geo+json" : "application/json", o.p, o.len, fl_free, o.p);
out:
    fl_free(t);
}

static void track_authorized(fl_http_req_t *req, const fl_api_token_t *token, void *arg)
{
    (void)token;
    fl_api_t *api = arg;
    const char *fleet_id = fl_http_req_param(req, "fleet_id");
    const char *vehicle_id = fl_http_req_param(req, "vehicle_id");

    const char *format = fl_http_req_query(req, "format");
    bool geojson = format && strcmp(format, "geojson") == 0;
    if (format && !geojson && strcmp(format, "json") != 0) {
        bad_parameter(req, "format must be json or geojson");
        return;
    }
    int limit = LIMIT_DEFAULT;
    const char *lv = fl_http_req_query(req, "limit");
    if (lv) {
        char *end;
        errno = 0;
        long l = strtol(lv, &end, 10);
        if (end == lv || *end || errno || l < 1 || l > LIMIT_MAX) {
            bad_parameter(req, "limit must be a whole number from 1 to 10000");
            return;
        }
        limit = (int)l;
    }
    bool has_from, has_to;
    int64_t from_us = 0, to_us = NO_END_US;
    if (!time_param(req, "from", &has_from, &from_us) || !time_param(req, "to", &has_to, &to_us))
        return;
    if (!has_from)
        from_us = (has_to ? to_us : fl_now_wall_ms() * 1000) - DEFAULT_SPAN_US;
    if (from_us >= to_us) {
        bad_parameter(req, "from must be before to");
        return;
    }
    if (!fl_id_valid(fleet_id) || !fl_id_valid(vehicle_id)) {
        /* an id fleetd never accepts names nothing: answer as for an unknown one */
        char message[160];
        if (!fl_id_valid(fleet_id)) {
            snprintf(message, sizeof(message), "no fleet \"%.64s\" for this token", fleet_id);
            fl_http_respond_error(req, 404, "fleet_not_found", message);
        } else {
            snprintf(message, sizeof(message), "no vehicle \"%.64s\" in fleet \"%s\"", vehicle_id, fleet_id);
            fl_http_respond_error(req, 404, "vehicle_not_found", message);
        }
        return;
    }

    fl_db_t *db = api->deps.db ? fl_db_service_get(api->deps.db, fl_shard_index(fl_http_req_shard(req))) : NULL;
    track_t *t = fl_malloc(sizeof(*t));
    if (t == NULL) {
        fl_http_respond_error(req, 503, "unavailable", "out of memory");
        return;
    }
    *t = (track_t){.req = req, .fleet_id = fleet_id, .vehicle_id = vehicle_id, .limit = limit, .geojson = geojson};
    char from[24], to[24], rows[16];
    snprintf(from, sizeof(from), "%lld", (long long)from_us);
    snprintf(to, sizeof(to), "%lld", (long long)to_us);
    snprintf(rows, sizeof(rows), "%d", limit + 1);
    const char *params[] = {fleet_id, vehicle_id, from, to, rows};
    int rc = db ? fl_db_query(db, track_sql, 5, params, on_track, t) : FL_EUNAVAIL;
    if (rc != FL_OK)
        on_track(NULL, rc, fl_strerror(rc), t);
}

static void get_track(fl_http_req_t *req, void *arg)
{
    fl_api_authorize(arg, req, fl_http_req_param(req, "fleet_id"), track_authorized, arg);
}

int fl_api_history_routes(fl_api_t *api, fl_http_router_t *router)
{
    return fl_http_router_add(router, FL_HTTP_GET, "/api/v1/fleets/{fleet_id}/vehicles/{vehicle_id}/track", get_track, api, 0);
}
