// History: GET /api/v1/fleets/{fleet_id}/vehicles/{vehicle_id}/track, from positions, as JSON and
// as GeoJSON, with from/to/limit, for a token that holds the fleet.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertJsonError, createDatabase, describeRun, get, migrate, runFleetd, startFleetd, TEST_TIMEOUT_MS, waitFor } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** A daemon over a database with two fleets, their vehicles, 30 fixes of truck-17 (one every 10 s
 * from 10:00:00.123456Z, odd ones with speed and heading), one of van-9 in fleet other, and a
 * token for harbor-1. */
async function setup(t) {
    const db = await createDatabase('history', t);
    await migrate(db);
    await db.query(`
        INSERT INTO fleets (id) VALUES ('harbor-1'), ('other');
        INSERT INTO partners (id) VALUES ('acme');
        INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1'), ('quiet-1', 'harbor-1'), ('van-9', 'other');
        INSERT INTO ingest_batches (id, partner_id, webhook_id, webhook_timestamp, signature, body, received_at, job_id)
            VALUES (1, 'acme', 'm1', 1795428000, 'v1,x', '\\x7b7d', '2026-11-23T10:10:00.5Z', 1);
        INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, speed_kmh, heading_deg, accuracy_m, batch_id)
            SELECT 'truck-17', '2026-11-23T10:00:00.123456Z'::timestamptz + i * interval '10 s', 'harbor-1',
                   59.3293 + i * 0.0001, 18.0686 - i * 0.0001, '2026-11-23T10:10:00.5Z',
                   CASE WHEN i % 2 = 1 THEN 42.5 END, CASE WHEN i % 2 = 1 THEN 270 END, NULL, 1
              FROM generate_series(0, 29) i;
        INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, batch_id)
            VALUES ('van-9', '2026-11-23T10:00:00Z', 'other', 1, 2, '2026-11-23T10:00:01Z', 1);`);
    const run = await runFleetd(['token', 'create', '--fleet', 'harbor-1', '--name', 'ops'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    const token = run.stdout.trim();
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_SHARDS: '2' } });
    // until each shard's connection is up, a route that needs the database answers 503
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });
    const track = (query = '', vehicle = 'truck-17', fleet = 'harbor-1') =>
        get(srv.port, `/api/v1/fleets/${fleet}/vehicles/${vehicle}/track${query}`, { Authorization: `Bearer ${token}` });
    return { db, srv, token, track };
}

const WHOLE = '?from=2026-11-23T10:00:00Z&to=2026-11-23T11:00:00Z';

test('JSON: the fixes in ascending recorded_at, each a status vehicle object, times in UTC with ms', opts, async (t) => {
    const { track } = await setup(t);
    const res = await track(WHOLE);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'], /^application\/json/);
    const body = res.json;
    assert.deepEqual(Object.keys(body), ['fleet_id', 'vehicle_id', 'fixes', 'next_from']);
    assert.equal(body.fleet_id, 'harbor-1');
    assert.equal(body.vehicle_id, 'truck-17');
    assert.equal(body.next_from, null);
    assert.equal(body.fixes.length, 30);
    assert.deepEqual(body.fixes[0], {
        vehicle_id: 'truck-17', lat: 59.3293, lng: 18.0686,
        recorded_at: '2026-11-23T10:00:00.123Z', received_at: '2026-11-23T10:10:00.500Z',
    });
    assert.deepEqual(body.fixes[1], {
        vehicle_id: 'truck-17', lat: 59.3294, lng: 18.0685,
        recorded_at: '2026-11-23T10:00:10.123Z', received_at: '2026-11-23T10:10:00.500Z', speed_kmh: 42.5, heading_deg: 270,
    });
    for (let i = 1; i < body.fixes.length; i++) assert.ok(body.fixes[i].recorded_at > body.fixes[i - 1].recorded_at, 'ascending');
    for (const f of body.fixes) assert.match(f.recorded_at, TIME_RE);
});

test('from is inclusive, to exclusive, any RFC 3339 offset; limit cuts and next_from continues', opts, async (t) => {
    const { track } = await setup(t);
    // 12:00:10.123456+02:00 is fix 1 exactly; 10:01:00.123456Z is fix 6, excluded
    let res = await track('?from=2026-11-23T12:00:10.123456%2B02:00&to=2026-11-23T10:01:00.123456Z');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.fixes.map((f) => f.recorded_at.slice(14, 19)), ['00:10', '00:20', '00:30', '00:40', '00:50']);

    const pages = [];
    let next = '2026-11-23T10:00:00Z';
    for (let i = 0; i < 5 && next; i++) {
        res = await track(`?from=${encodeURIComponent(next)}&to=2026-11-23T11:00:00Z&limit=7`);
        assert.equal(res.status, 200, res.text);
        assert.ok(res.json.fixes.length <= 7);
        pages.push(...res.json.fixes);
        next = res.json.next_from;
        if (next) assert.match(next, TIME_RE);
    }
    assert.equal(next, null, 'five pages of 7 hold 30 fixes');
    assert.equal(pages.length, 30);
    assert.equal(new Set(pages.map((f) => f.recorded_at)).size, 30);

    res = await track(WHOLE + '&limit=10000');
    assert.equal(res.json.fixes.length, 30);
    // a range with nothing, and a vehicle with no fix at all
    res = await track('?from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z');
    assert.deepEqual(res.json, { fleet_id: 'harbor-1', vehicle_id: 'truck-17', fixes: [], next_from: null });
    res = await track(WHOLE, 'quiet-1');
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.fixes, []);
    // without from: the 24 hours before to
    res = await track('?to=2026-11-23T10:00:30Z');
    assert.equal(res.json.fixes.length, 3);
});

test('format=geojson: a Feature with a LineString of [lng, lat] and the times in properties', opts, async (t) => {
    const { track } = await setup(t);
    let res = await track(WHOLE + '&format=geojson&limit=3');
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'], /^application\/geo\+json/);
    assert.deepEqual(res.json, {
        type: 'Feature',
        geometry: { type: 'LineString', coordinates: [[18.0686, 59.3293], [18.0685, 59.3294], [18.0684, 59.3295]] },
        properties: {
            fleet_id: 'harbor-1', vehicle_id: 'truck-17',
            times: ['2026-11-23T10:00:00.123Z', '2026-11-23T10:00:10.123Z', '2026-11-23T10:00:20.123Z'],
            next_from: '2026-11-23T10:00:30.123Z',
        },
    });
    res = await track('?from=2026-11-23T10:00:00Z&to=2026-11-23T10:00:05Z&format=geojson');
    assert.deepEqual(res.json.geometry, { type: 'Point', coordinates: [18.0686, 59.3293] });
    assert.deepEqual(res.json.properties.times, ['2026-11-23T10:00:00.123Z']);
    res = await track('?from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00Z&format=geojson');
    assert.equal(res.json.geometry, null);
    assert.deepEqual(res.json.properties.times, []);
});

test('400 invalid_parameter for a bad from, to, limit or format; 404 for an unknown vehicle or one of another fleet', opts, async (t) => {
    const { track, srv } = await setup(t);
    for (const q of ['?from=yesterday', '?to=2026-11-23', '?from=2026-11-23T10:00:00', '?limit=0', '?limit=10001', '?limit=ten',
        '?limit=5x', '?format=kml', '?from=2026-11-23T11:00:00Z&to=2026-11-23T10:00:00Z']) {
        const res = await track(q);
        assertJsonError(res, 400, 'invalid_parameter');
    }
    assertJsonError(await track(WHOLE, 'no-such-vehicle'), 404, 'vehicle_not_found');
    assertJsonError(await track(WHOLE, 'van-9'), 404, 'vehicle_not_found'); // it exists, in fleet other
    assertJsonError(await track(WHOLE, 'bad%20id'), 404, 'vehicle_not_found');
    assertJsonError(await track(WHOLE, 'van-9', 'other'), 404, 'fleet_not_found'); // the token does not hold other
    // no token at all comes first
    assertJsonError(await get(srv.port, '/api/v1/fleets/harbor-1/vehicles/truck-17/track?limit=0'), 401, 'unauthorized');
});
