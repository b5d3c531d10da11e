/* cmd/fleetd/demo_routes.c: the demo's distances, bearings, interpolation along a loop, and the
 * simulated vehicles' speed, heading and positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "demo_routes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void assert_near(double got, double want, double tolerance)
{
    if (fabs(got - want) > tolerance)
        fail_msg("got %.9f, want %.9f (+- %g)", got, want, tolerance);
}

static void distance_matches_known_lengths(void **state)
{
    (void)state;
    /* one degree of latitude is about 111.2 km on the mean sphere; a degree of longitude shrinks with cos(lat) */
    assert_near(demo_distance_m((demo_point_t){59, 18}, (demo_point_t){60, 18}), 111195, 5);
    assert_near(demo_distance_m((demo_point_t){0, 0}, (demo_point_t){0, 1}), 111195, 5);
    assert_near(demo_distance_m((demo_point_t){60, 18}, (demo_point_t){60, 19}), 111195 * cos(60 * M_PI / 180), 50);
    assert_near(demo_distance_m((demo_point_t){59.3, 18.07}, (demo_point_t){59.3, 18.07}), 0, 1e-9);
    /* symmetric */
    demo_point_t a = {59.31975, 18.07190}, b = {59.32540, 18.07620};
    assert_near(demo_distance_m(a, b), demo_distance_m(b, a), 1e-6);
}

static void bearing_points_the_way_of_travel(void **state)
{
    (void)state;
    demo_point_t c = {59.3, 18.0};
    assert_near(demo_bearing_deg(c, (demo_point_t){59.4, 18.0}), 0, 1e-9);
    assert_near(demo_bearing_deg(c, (demo_point_t){59.3, 18.1}), 90, 0.05); /* a great circle starts a hair north of east */
    assert_near(demo_bearing_deg(c, (demo_point_t){59.2, 18.0}), 180, 1e-9);
    assert_near(demo_bearing_deg(c, (demo_point_t){59.3, 17.9}), 270, 0.05);
    assert_near(demo_bearing_deg(c, (demo_point_t){59.4, 18.1961}), 45, 0.5); /* equal metres north and east */
    assert_near(demo_bearing_deg(c, c), 0, 0);
    /* a hair west of north is just under 360, never 360 */
    double h = demo_bearing_deg(c, (demo_point_t){59.4, 17.9999999});
    assert_true(h < 360 && h > 359.99);
}

/* A square loop of 4 points, each side about 1112 m (0.01 degree of latitude; the longitude step is
 * widened by 1/cos(lat) to match). */
static demo_route_t square(void)
{
    double dlng = 0.01 / cos(59.3 * M_PI / 180);
    demo_point_t pts[] = {{59.30, 18.0}, {59.31, 18.0}, {59.31, 18.0 + dlng}, {59.30, 18.0 + dlng}};
    demo_route_t r;
    assert_true(demo_route_init(&r, "square", pts, 4));
    return r;
}

static void route_length_is_the_closed_loop(void **state)
{
    (void)state;
    demo_route_t r = square();
    assert_int_equal(r.n, 4);
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += demo_distance_m(r.points[i], r.points[(i + 1) % 4]);
    assert_near(r.length_m, sum, 1e-6);
    assert_near(r.length_m, 4 * 1112, 10);
    assert_near(r.start_m[0], 0, 0);
    assert_near(r.start_m[4], r.length_m, 1e-9);
}

static void route_refuses_too_few_too_many_or_no_length(void **state)
{
    (void)state;
    demo_route_t r;
    demo_point_t same[3] = {{59.3, 18.0}, {59.3, 18.0}, {59.3, 18.0}};
    demo_point_t many[DEMO_ROUTE_MAX_POINTS + 1];
    for (int i = 0; i < DEMO_ROUTE_MAX_POINTS + 1; i++)
        many[i] = (demo_point_t){59.3 + i * 0.001, 18.0};
    assert_false(demo_route_init(&r, "one", same, 1));
    assert_false(demo_route_init(&r, "still", same, 3));
    assert_false(demo_route_init(&r, "many", many, DEMO_ROUTE_MAX_POINTS + 1));
    assert_true(demo_route_init(&r, "enough", many, DEMO_ROUTE_MAX_POINTS));
}

static void interpolates_between_points_and_wraps_around(void **state)
{
    (void)state;
    demo_route_t r = square();
    /* the waypoints themselves */
    for (int i = 0; i < 4; i++) {
        demo_point_t p = demo_route_at(&r, r.start_m[i]);
        assert_near(p.lat, r.points[i].lat, 1e-9);
        assert_near(p.lng, r.points[i].lng, 1e-9);
    }
    /* half way along the first side (due north) */
    demo_point_t mid = demo_route_at(&r, r.start_m[1] / 2);
    assert_near(mid.lat, 59.305, 1e-9);
    assert_near(mid.lng, 18.0, 1e-12);
    /* a quarter into the third side (due south from the north-east corner) */
    double s = r.start_m[2] + (r.start_m[3] - r.start_m[2]) / 4;
    demo_point_t q = demo_route_at(&r, s);
    assert_near(q.lat, 59.3075, 1e-9);
    assert_near(q.lng, r.points[2].lng, 1e-12);
    /* past the end comes round again; before the start is the end of the loop */
    demo_point_t again = demo_route_at(&r, 3 * r.length_m + r.start_m[1] / 2);
    assert_near(again.lat, mid.lat, 1e-9);
    assert_near(again.lng, mid.lng, 1e-9);
    demo_point_t back = demo_route_at(&r, -r.start_m[1] / 2); /* on the closing side (east to west), before the start */
    demo_point_t fwd = demo_route_at(&r, r.length_m - r.start_m[1] / 2);
    assert_near(back.lat, fwd.lat, 1e-9);
    assert_near(back.lng, fwd.lng, 1e-9);
    assert_near(back.lat, 59.30, 1e-9);
    /* the distance along the route matches the distance on the ground along one side */
    assert_near(demo_distance_m(r.points[0], demo_route_at(&r, 500)), 500, 0.5);
}

static void builtin_routes_are_loops_near_the_harbour(void **state)
{
    (void)state;
    int n = 0;
    const demo_route_t *routes = demo_routes(&n);
    assert_true(n >= 4);
    for (int i = 0; i < n; i++) {
        assert_true(routes[i].n >= 4);
        assert_true(routes[i].length_m > 1000 && routes[i].length_m < 15000);
        for (int j = 0; j < routes[i].n; j++) {
            /* central Stockholm */
            assert_true(routes[i].points[j].lat > 59.30 && routes[i].points[j].lat < 59.36);
            assert_true(routes[i].points[j].lng > 18.00 && routes[i].points[j].lng < 18.14);
            /* no two consecutive points closer than a street corner, none farther than a long street */
            double d = demo_distance_m(routes[i].points[j], routes[i].points[(j + 1) % routes[i].n]);
            assert_true(d > 50 && d < 2000);
        }
    }
}

static void vehicles_are_the_same_on_every_run_and_spread_out(void **state)
{
    (void)state;
    demo_vehicle_t a, b;
    char seen[40][32];
    for (int i = 0; i < 40; i++) {
        demo_vehicle_make(&a, i);
        demo_vehicle_make(&b, i);
        assert_memory_equal(&a, &b, sizeof(a));
        assert_true(a.id[0] != '\0' && strlen(a.id) <= 64);
        assert_true(strspn(a.id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == strlen(a.id));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(a.id, seen[j]);
        snprintf(seen[i], sizeof(seen[i]), "%s", a.id);
        assert_true(a.direction == 1 || a.direction == -1);
        assert_true(a.offset_m >= 0 && a.offset_m < a.route->length_m);
    }
    demo_vehicle_t v0, v6;
    demo_vehicle_make(&v0, 0);
    demo_vehicle_make(&v6, 6);
    assert_ptr_equal(v0.route, v6.route); /* round-robin over the routes ... */
    assert_true(fabs(v0.offset_m - v6.offset_m) > 1);
}

static void fixes_move_at_the_speed_they_report(void **state)
{
    (void)state;
    const double t0 = 1795000000.0; /* late 2026, Unix seconds: the demo's clock */
    for (int i = 0; i < 36; i++) {
        demo_vehicle_t v;
        demo_vehicle_make(&v, i);
        demo_fix_t prev;
        demo_vehicle_fix(&v, t0, &prev);
        for (int k = 1; k <= 300; k++) {
            double t = t0 + k * 0.5;
            demo_fix_t f;
            demo_vehicle_fix(&v, t, &f);
            assert_true(f.speed_kmh >= DEMO_SPEED_MIN_KMH && f.speed_kmh <= DEMO_SPEED_MAX_KMH);
            assert_true(f.heading_deg >= 0 && f.heading_deg < 360);
            assert_true(f.accuracy_m > 0 && f.accuracy_m <= 100);
            assert_true(f.lat > 59.30 && f.lat < 59.36 && f.lng > 18.0 && f.lng < 18.14);
            /* in half a second it covers at most what its speeds allow (a corner only shortens the straight line) */
            double moved = demo_distance_m((demo_point_t){prev.lat, prev.lng}, (demo_point_t){f.lat, f.lng});
            assert_true(moved > 0.5);
            assert_true(moved <= DEMO_SPEED_MAX_KMH / 3.6 * 0.5 + 0.5);
            prev = f;
        }
    }
}

static void heading_follows_the_movement(void **state)
{
    (void)state;
    const double t0 = 1795000000.0;
    int checked = 0;
    for (int i = 0; i < 36; i++) {
        demo_vehicle_t v;
        demo_vehicle_make(&v, i);
        for (int k = 0; k < 200; k++) {
            double t = t0 + k * 7.3;
            demo_fix_t before, now;
            demo_vehicle_fix(&v, t - 1, &before);
            demo_vehicle_fix(&v, t, &now);
            double moved = demo_distance_m((demo_point_t){before.lat, before.lng}, (demo_point_t){now.lat, now.lng});
            if (moved < 8) /* a tight corner: the chord is short and rounding dominates */
                continue;
            double want = demo_bearing_deg((demo_point_t){before.lat, before.lng}, (demo_point_t){now.lat, now.lng});
            double diff = fabs(now.heading_deg - want);
            if (diff > 180)
                diff = 360 - diff;
            assert_true(diff < 2.0); /* the fix is rounded to 1e-6 degrees (~0.1 m) */
            checked++;
        }
    }
    assert_true(checked > 36 * 150);
}

static void speed_is_the_rate_of_travel(void **state)
{
    (void)state;
    const double t0 = 1795000000.0;
    demo_vehicle_t v;
    demo_vehicle_make(&v, 3);
    /* along a straight stretch, distance over 0.2 s matches the reported speed */
    int checked = 0;
    for (int k = 0; k < 400 && checked < 50; k++) {
        double t = t0 + k * 3.1;
        demo_fix_t a, b, c;
        demo_vehicle_fix(&v, t, &a);
        demo_vehicle_fix(&v, t + 0.1, &b);
        demo_vehicle_fix(&v, t + 0.2, &c);
        double hb = demo_bearing_deg((demo_point_t){a.lat, a.lng}, (demo_point_t){b.lat, b.lng});
        double hc = demo_bearing_deg((demo_point_t){b.lat, b.lng}, (demo_point_t){c.lat, c.lng});
        if (fabs(hb - hc) > 1) /* a corner */
            continue;
        double kmh = demo_distance_m((demo_point_t){a.lat, a.lng}, (demo_point_t){c.lat, c.lng}) / 0.2 * 3.6;
        assert_near(kmh, a.speed_kmh, 3.5); /* 1e-6 degree rounding over ~2.5 m, plus the speed's change in 0.2 s */
        checked++;
    }
    assert_int_equal(checked, 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(distance_matches_known_lengths),
        cmocka_unit_test(bearing_points_the_way_of_travel),
        cmocka_unit_test(route_length_is_the_closed_loop),
        cmocka_unit_test(route_refuses_too_few_too_many_or_no_length),
        cmocka_unit_test(interpolates_between_points_and_wraps_around),
        cmocka_unit_test(builtin_routes_are_loops_near_the_harbour),
        cmocka_unit_test(vehicles_are_the_same_on_every_run_and_spread_out),
        cmocka_unit_test(fixes_move_at_the_speed_they_report),
        cmocka_unit_test(heading_follows_the_movement),
        cmocka_unit_test(speed_is_the_rate_of_travel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
