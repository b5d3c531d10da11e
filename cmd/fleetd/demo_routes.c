/* The demo's routes and vehicles (demo_routes.h). The waypoints are approximate street corners
 * around Stockholm's harbour, enough for vehicles that visibly drive along streets and quays. */
#include "demo_routes.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EARTH_RADIUS_M 6371008.8
#define DEG            (M_PI / 180.0)

double demo_distance_m(demo_point_t a, demo_point_t b)
{
    double dlat = (b.lat - a.lat) * DEG, dlng = (b.lng - a.lng) * DEG;
    double h = sin(dlat / 2) * sin(dlat / 2) + cos(a.lat * DEG) * cos(b.lat * DEG) * sin(dlng / 2) * sin(dlng / 2);
    return 2 * EARTH_RADIUS_M * asin(sqrt(h > 1 ? 1 : h));
}

double demo_bearing_deg(demo_point_t a, demo_point_t b)
{
    double phi1 = a.lat * DEG, phi2 = b.lat * DEG, dlng = (b.lng - a.lng) * DEG;
    double y = sin(dlng) * cos(phi2);
    double x = cos(phi1) * sin(phi2) - sin(phi1) * cos(phi2) * cos(dlng);
    if (x == 0 && y == 0)
        return 0;
    double h = fmod(atan2(y, x) / DEG + 360.0, 360.0);
    return h >= 360.0 ? 0 : h; /* fmod of a value just under 360 + 360 can round up to 360 */
}

bool demo_route_init(demo_route_t *r, const char *name, const demo_point_t *points, int n)
{
    if (n < 2 || n > DEMO_ROUTE_MAX_POINTS)
        return false;
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->n = n;
    memcpy(r->points, points, (size_t)n * sizeof(*points));
    for (int i = 0; i < n; i++)
        r->start_m[i + 1] = r->start_m[i] + demo_distance_m(points[i], points[(i + 1) % n]);
    r->length_m = r->start_m[n];
    return r->length_m > 0;
}

demo_point_t demo_route_at(const demo_route_t *r, double s)
{
    s = fmod(s, r->length_m);
    if (s < 0)
        s += r->length_m;
    int lo = 0, hi = r->n - 1; /* the last segment starting at or before s */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (r->start_m[mid] <= s)
            lo = mid;
        else
            hi = mid - 1;
    }
    demo_point_t a = r->points[lo], b = r->points[(lo + 1) % r->n];
    double seg = r->start_m[lo + 1] - r->start_m[lo];
    double f = seg > 0 ? (s - r->start_m[lo]) / seg : 0;
    if (f > 1)
        f = 1;
    return (demo_point_t){a.lat + (b.lat - a.lat) * f, a.lng + (b.lng - a.lng) * f};
}

/* ---- the built-in routes ---- */

#define P(lat, lng)                                                                                                                \
    {                                                                                                                              \
        lat, lng                                                                                                                   \
    }

static const demo_point_t gamla_stan[] = {
    P(59.31975, 18.07190), P(59.32230, 18.07430), P(59.32540, 18.07620), P(59.32720, 18.07420),
    P(59.32830, 18.06880), P(59.32650, 18.06500), P(59.32420, 18.06590), P(59.32180, 18.06790),
};
static const demo_point_t sodermalm_quay[] = {
    P(59.31920, 18.07400), P(59.31860, 18.08200), P(59.31700, 18.09050), P(59.31560, 18.09550),
    P(59.31390, 18.09250), P(59.31400, 18.08350), P(59.31380, 18.07350), P(59.31650, 18.07240),
};
static const demo_point_t norrmalm[] = {
    P(59.33060, 18.05800), P(59.33380, 18.05650), P(59.33560, 18.05950), P(59.33640, 18.06350), P(59.33700, 18.07000),
    P(59.33560, 18.07360), P(59.33300, 18.07350), P(59.33160, 18.06990), P(59.32980, 18.06660), P(59.32970, 18.06160),
};
static const demo_point_t strandvagen[] = {
    P(59.33270, 18.07720), P(59.33200, 18.08500), P(59.33170, 18.09450), P(59.33110, 18.09900),
    P(59.32830, 18.09820), P(59.32520, 18.09620), P(59.32450, 18.09950), P(59.32750, 18.10100),
    P(59.33140, 18.09960), P(59.33230, 18.09000), P(59.33300, 18.08000),
};
static const demo_point_t frihamnen[] = {
    P(59.34280, 18.11820), P(59.34500, 18.12300), P(59.34850, 18.11700), P(59.35080, 18.10880),
    P(59.34700, 18.10300), P(59.34290, 18.10100), P(59.34120, 18.10800),
};
static const demo_point_t kungsholmen[] = {
    P(59.32960, 18.06000), P(59.32770, 18.05470), P(59.32620, 18.04600), P(59.32520, 18.03300),
    P(59.33180, 18.03050), P(59.33110, 18.04200), P(59.33030, 18.05100),
};

#define ROUTE(name, pts)                                                                                                           \
    {                                                                                                                              \
        name, pts, (int)(sizeof(pts) / sizeof(pts[0]))                                                                             \
    }
static const struct {
    const char *name;
    const demo_point_t *points;
    int n;
} route_table[] = {
    ROUTE("gamla-stan", gamla_stan),   ROUTE("sodermalm-quay", sodermalm_quay), ROUTE("norrmalm", norrmalm),
    ROUTE("strandvagen", strandvagen), ROUTE("frihamnen", frihamnen),           ROUTE("kungsholmen", kungsholmen),
};
#define NROUTES (int)(sizeof(route_table) / sizeof(route_table[0]))

const demo_route_t *demo_routes(int *n)
{
    static demo_route_t routes[NROUTES];
    static bool ready;
    if (!ready) {
        for (int i = 0; i < NROUTES; i++)
            demo_route_init(&routes[i], route_table[i].name, route_table[i].points, route_table[i].n);
        ready = true;
    }
    *n = NROUTES;
    return routes;
}

/* ---- vehicles ---- */

/* A number in [0, 1) from a vehicle's index and a salt: the same on every run. */
static double unit(int i, uint64_t salt)
{
    uint64_t z = (uint64_t)i * 0x9e3779b97f4a7c15ULL + salt * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0; /* 2^53 */
}

void demo_vehicle_make(demo_vehicle_t *v, int i)
{
    static const char *const kinds[] = {"van", "truck", "taxi", "bus"};
    int nroutes;
    const demo_route_t *routes = demo_routes(&nroutes);
    memset(v, 0, sizeof(*v));
    snprintf(v->id, sizeof(v->id), "demo-%s-%02d", kinds[i % 4], i + 1);
    v->route = &routes[i % nroutes];
    v->offset_m = unit(i, 1) * v->route->length_m;
    double mean_kmh = 30 + 20 * unit(i, 2);                          /* 30 .. 50 */
    double swing_kmh = fmin(10, fmin(mean_kmh - 22, 58 - mean_kmh)); /* stays within 22 .. 58 */
    v->mean_ms = mean_kmh / 3.6;
    v->swing_ms = swing_kmh / 3.6;
    v->period_s = 45 + 75 * unit(i, 3);
    v->phase = 2 * M_PI * unit(i, 4);
    v->direction = unit(i, 5) < 0.5 ? 1 : -1;
    v->accuracy_m = 3 + 5 * unit(i, 6);
}

/* Distance travelled along the route at t: the integral of mean + swing * cos(2 pi t / period + phase). */
static double travelled_m(const demo_vehicle_t *v, double t)
{
    double w = 2 * M_PI / v->period_s;
    return v->offset_m + v->direction * (v->mean_ms * t + v->swing_ms / w * sin(w * t + v->phase));
}

static double round_to(double x, double step)
{
    return round(x / step) * step;
}

void demo_vehicle_fix(const demo_vehicle_t *v, double t, demo_fix_t *out)
{
    demo_point_t now = demo_route_at(v->route, travelled_m(v, t));
    demo_point_t before = demo_route_at(v->route, travelled_m(v, t - 1));
    double w = 2 * M_PI / v->period_s;
    double speed_kmh = (v->mean_ms + v->swing_ms * cos(w * t + v->phase)) * 3.6;
    double heading = round_to(demo_bearing_deg(before, now), 0.1);
    out->lat = round_to(now.lat, 1e-6);
    out->lng = round_to(now.lng, 1e-6);
    out->speed_kmh = fmin(DEMO_SPEED_MAX_KMH, fmax(DEMO_SPEED_MIN_KMH, round_to(speed_kmh, 0.1)));
    out->heading_deg = heading >= 360 ? 0 : heading;
    out->accuracy_m = round_to(v->accuracy_m + 1.5 * sin(t / 23.0 + v->phase), 0.1);
}
