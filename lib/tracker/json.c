/* The tracker's JSON: a vehicle object as in CONTRACT.md "Status", a position event (the same
 * plus seq) and the fleet's status document. Written by hand into one buffer because it is
 * produced on every change and must be exactly the contract's shape; readers parse it with any
 * JSON library (the tests use jansson). */
#include "tracker_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Optional fields are floats: the shortest text that reads back to the same float. */
static void format_float(float v, char out[32])
{
    for (int prec = 6; prec <= 9; prec++) { /* 6 digits hold any float a partner sends as text */
        snprintf(out, 32, "%.*g", prec, (double)v);
        if (strtof(out, NULL) == v)
            return;
    }
}

/* Ids are checked against [A-Za-z0-9._-] on the way in; escaping anyway keeps a bug there from
 * turning into broken JSON here. */
void fl_json_string(fl_strbuf_t *b, const char *s)
{
    fl_strbuf_add(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char esc[2] = {'\\', (char)*c};
            fl_strbuf_add(b, esc, 2);
        } else if (*c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", *c);
            fl_strbuf_add(b, esc, 6);
        } else {
            fl_strbuf_add(b, (const char *)c, 1);
        }
    }
    fl_strbuf_add(b, "\"", 1);
}

static void add_time(fl_strbuf_t *b, int64_t us)
{
    char ts[32];
    fl_time_format_ms(us / 1000 - (us % 1000 < 0 ? 1 : 0), ts);
    fl_strbuf_add(b, "\"", 1);
    fl_strbuf_str(b, ts);
    fl_strbuf_add(b, "\"", 1);
}

void fl_vehicle_json(fl_strbuf_t *b, const char *vehicle_id, const vehicle_t *v, uint64_t seq)
{
    char num[32];
    fl_strbuf_str(b, "{\"vehicle_id\":");
    fl_json_string(b, vehicle_id);
    fl_strbuf_str(b, ",\"lat\":");
    fl_format_double(v->lat, num);
    fl_strbuf_str(b, num);
    fl_strbuf_str(b, ",\"lng\":");
    fl_format_double(v->lng, num);
    fl_strbuf_str(b, num);
    fl_strbuf_str(b, ",\"recorded_at\":");
    add_time(b, v->recorded_us);
    fl_strbuf_str(b, ",\"received_at\":");
    add_time(b, v->received_us);
    if (v->has & FL_FIX_SPEED) {
        format_float(v->speed_kmh, num);
        fl_strbuf_str(b, ",\"speed_kmh\":");
        fl_strbuf_str(b, num);
    }
    if (v->has & FL_FIX_HEADING) {
        format_float(v->heading_deg, num);
        fl_strbuf_str(b, ",\"heading_deg\":");
        fl_strbuf_str(b, num);
    }
    if (v->has & FL_FIX_ACCURACY) {
        format_float(v->accuracy_m, num);
        fl_strbuf_str(b, ",\"accuracy_m\":");
        fl_strbuf_str(b, num);
    }
    if (seq) {
        snprintf(num, sizeof(num), "%llu", (unsigned long long)seq);
        fl_strbuf_str(b, ",\"seq\":");
        fl_strbuf_str(b, num);
    }
    fl_strbuf_add(b, "}", 1);
}

typedef struct {
    const char *id;
    const vehicle_t *v;
} sorted_t;

typedef struct {
    sorted_t *items;
    int n;
} collect_t;

static void collect(const char *key, void *value, void *arg)
{
    collect_t *c = arg;
    c->items[c->n++] = (sorted_t){key, value};
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const sorted_t *)a)->id, ((const sorted_t *)b)->id);
}

fl_blob_t *fl_status_json(const char *fleet_id, fl_map_t *vehicles)
{
    size_t n = fl_map_count(vehicles);
    collect_t c = {.items = fl_malloc((n ? n : 1) * sizeof(sorted_t))};
    if (c.items == NULL)
        return NULL;
    fl_map_foreach(vehicles, collect, &c);
    qsort(c.items, n, sizeof(sorted_t), by_id);
    /* updated_at: the newest recorded_at among the vehicles' current fixes (CONTRACT.md's example:
     * the time of the latest position), so a reloaded tracker shows the same value as before */
    int64_t updated_us = 0;
    for (size_t i = 0; i < n; i++)
        if (c.items[i].v->recorded_us > updated_us)
            updated_us = c.items[i].v->recorded_us;

    fl_strbuf_t b = {0};
    fl_strbuf_reserve(&b, 96 + n * 200);
    char num[32];
    fl_strbuf_str(&b, "{\"fleet_id\":");
    fl_json_string(&b, fleet_id);
    snprintf(num, sizeof(num), "%zu", n);
    fl_strbuf_str(&b, ",\"vehicle_count\":");
    fl_strbuf_str(&b, num);
    fl_strbuf_str(&b, ",\"updated_at\":");
    if (updated_us)
        add_time(&b, updated_us);
    else
        fl_strbuf_str(&b, "null");
    fl_strbuf_str(&b, ",\"vehicles\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            fl_strbuf_add(&b, ",", 1);
        fl_vehicle_json(&b, c.items[i].id, c.items[i].v, 0);
    }
    fl_strbuf_str(&b, "]}");
    fl_free(c.items);
    fl_blob_t *blob = b.failed ? NULL : fl_blob_from(b.p, b.len);
    fl_free(b.p);
    return blob;
}
