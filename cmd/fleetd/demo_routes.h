/* The demo's simulated vehicles (fleetd demo): closed routes through Stockholm's harbour streets
 * and where a vehicle on them is at a given time. Everything is a pure function of the time, so a
 * demo started again carries on where the vehicles would be, and fixes only ever move forward. */
#ifndef FLEETD_DEMO_ROUTES_H
#define FLEETD_DEMO_ROUTES_H

#include <stdbool.h>

#define DEMO_ROUTE_MAX_POINTS 24
#define DEMO_SPEED_MIN_KMH    20.0
#define DEMO_SPEED_MAX_KMH    60.0

typedef struct {
    double lat, lng; /* degrees */
} demo_point_t;

/* A closed polyline: after the last point the route goes back to the first. */
typedef struct {
    const char *name;
    int n;
    demo_point_t points[DEMO_ROUTE_MAX_POINTS];
    double start_m[DEMO_ROUTE_MAX_POINTS + 1]; /* distance along the route where segment i starts; [n] = length */
    double length_m;
} demo_route_t;

typedef struct {
    char id[32];
    const demo_route_t *route;
    double offset_m;   /* where along the route it is at t = 0 */
    double mean_ms;    /* mean speed, m/s */
    double swing_ms;   /* the speed goes up and down by this much ... */
    double period_s;   /* ... over this period */
    double phase;      /* radians */
    int direction;     /* +1: the route's order; -1: the other way round */
    double accuracy_m; /* typical accuracy of its receiver */
} demo_vehicle_t;

typedef struct {
    double lat, lng, speed_kmh, heading_deg, accuracy_m;
} demo_fix_t;

/* Great-circle distance in metres (haversine, mean Earth radius). */
double demo_distance_m(demo_point_t a, demo_point_t b);
/* Initial bearing from a to b in degrees, 0 <= h < 360 (0 north, 90 east); 0 when a == b. */
double demo_bearing_deg(demo_point_t a, demo_point_t b);
/* Fills a route from n points (2 .. DEMO_ROUTE_MAX_POINTS, not all the same): false otherwise. */
bool demo_route_init(demo_route_t *r, const char *name, const demo_point_t *points, int n);
/* The point s metres along the route (any s: the route is a loop), interpolated linearly between
 * its points. */
demo_point_t demo_route_at(const demo_route_t *r, double s);
/* The built-in routes (initialised on first use; not thread-safe before that). */
const demo_route_t *demo_routes(int *n);
/* Vehicle i of a demo (0-based): its id, route and driving style, the same for the same i on
 * every run. */
void demo_vehicle_make(demo_vehicle_t *v, int i);
/* Where v is at t seconds (any origin; the demo uses Unix time), its speed (from the movement:
 * DEMO_SPEED_MIN_KMH..MAX), heading (from where it was a second earlier) and accuracy, rounded as
 * the demo sends them. */
void demo_vehicle_fix(const demo_vehicle_t *v, double t, demo_fix_t *out);

#endif
