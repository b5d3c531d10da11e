// Status reads (CONTRACT.md "Status"): GET /api/v1/fleets/{fleet_id}/status from the tracker's
// memory after signed ingest: the exact JSON, ETag and 304 (If-None-Match lists, W/ and *), 401 with
// WWW-Authenticate: Bearer for every kind of missing or bad token (revoked ones included), 404 for
// a fleet that does not exist and for one the token may not see, admin tokens reading any fleet,
// and reads during a tracker restart that never fail.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
    assertJsonError,
    assertRequestId,
    createDatabase,
    describeRun,
    get,
    migrate,
    postSigned,
    request,
    runFleetd,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const UTC_MS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

const statusPath = (fleet) => `/api/v1/fleets/${fleet}/status`;
const bearer = (token) => ({ Authorization: `Bearer ${token}` });

const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** Fleets harbor-1 (partner acme writes it), harbor-2 (empty) and other; tokens for harbor-1, for
 * other, and admin; a running fleetd with two shards. */
async function setup(t, env = {}) {
    const db = await createDatabase('status', t);
    await migrate(db);
    for (const fleet of ['harbor-1', 'harbor-2', 'other']) await cli(db, ['fleet', 'create', fleet]);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet', 'other']);
    const tokens = {
        harbor: await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--fleet', 'harbor-2', '--name', 'harbor desk']),
        other: await cli(db, ['token', 'create', '--fleet', 'other']),
        admin: await cli(db, ['token', 'create', '--admin']),
    };
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_SHARDS: '2', FLEETD_JOBS_POLL_INTERVAL: '100ms', ...env },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    const ingest = async (fixes) => {
        const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes } });
        assert.equal(res.status, 202, res.text);
    };
    return { db, srv, tokens, ingest };
}

/** Reads the status until pred(res) holds (the snapshot is rebuilt within a few ms of a change). */
async function statusWhen(port, fleet, token, pred, what) {
    let last;
    await waitFor(
        async () => {
            last = await get(port, statusPath(fleet), bearer(token));
            return last.status === 200 && pred(last.json);
        },
        { what: `${what}; last: ${last?.status} ${last?.text}` },
    );
    return last;
}

/** recorded_at text for a time `ago` ms back, in UTC with ms, or with an offset and microseconds. */
function isoAgo(ago) {
    return new Date(Date.now() - ago).toISOString();
}
function withOffset(iso, micros) {
    // 2026-11-23T10:00:00.123Z -> 2026-11-23T11:00:00.123456+01:00 (the same instant)
    const d = new Date(iso);
    const local = new Date(d.getTime() + 3600_000).toISOString().replace('Z', '');
    return `${local}${micros}+01:00`;
}

test('the exact JSON of the contract after signed ingest: sorted vehicles, optional fields only when sent', opts, async (t) => {
    const { srv, tokens, ingest } = await setup(t);

    // a fleet with no fixes yet
    const empty = await get(srv.port, statusPath('harbor-2'), bearer(tokens.harbor));
    assert.equal(empty.status, 200, empty.text);
    assert.equal(empty.text, '{"fleet_id":"harbor-2","vehicle_count":0,"updated_at":null,"vehicles":[]}');

    const truckAt = isoAgo(60_000);
    const vanAt = isoAgo(50_000);
    const busAt = isoAgo(40_000);
    await ingest([
        { fleet_id: 'harbor-1', vehicle_id: 'van-2', lat: -33.8688, lng: 151.2093, recorded_at: withOffset(vanAt, '456') },
        { fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.3293, lng: 18.0686, recorded_at: truckAt, speed_kmh: 42.5, heading_deg: 270, accuracy_m: 5 },
    ]);
    await ingest([{ fleet_id: 'harbor-1', vehicle_id: 'bus-9', lat: 0, lng: -0.5, recorded_at: busAt, heading_deg: 0 }]);

    const res = await statusWhen(srv.port, 'harbor-1', tokens.harbor, (j) => j.vehicle_count === 3, 'three vehicles');
    assert.match(res.headers['content-type'], /^application\/json\b/);
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.match(res.headers.etag, /^"[^"]+"$/);
    assertRequestId(res);

    const received = Object.fromEntries(res.json.vehicles.map((v) => [v.vehicle_id, v.received_at]));
    for (const at of Object.values(received)) {
        assert.match(at, UTC_MS_RE);
        assert.ok(Math.abs(Date.parse(at) - Date.now()) < 30_000, `received_at is about now: ${at}`);
    }
    const updated = busAt; // the newest recorded_at (CONTRACT.md's example), not a received_at
    const expected =
        `{"fleet_id":"harbor-1","vehicle_count":3,"updated_at":"${updated}","vehicles":[` +
        `{"vehicle_id":"bus-9","lat":0,"lng":-0.5,"recorded_at":"${busAt}","received_at":"${received['bus-9']}","heading_deg":0},` +
        `{"vehicle_id":"truck-17","lat":59.3293,"lng":18.0686,"recorded_at":"${truckAt}","received_at":"${received['truck-17']}",` +
        `"speed_kmh":42.5,"heading_deg":270,"accuracy_m":5},` +
        `{"vehicle_id":"van-2","lat":-33.8688,"lng":151.2093,"recorded_at":"${vanAt}","received_at":"${received['van-2']}"}]}`;
    assert.equal(res.text, expected);
    assert.equal(Number(res.headers['content-length']), Buffer.byteLength(expected));

    // an older fix never moves a vehicle back; a newer one does, and only it
    await ingest([{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 1, lng: 1, recorded_at: isoAgo(120_000) }]);
    const newer = isoAgo(10_000);
    await ingest([{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.5, lng: 18.5, recorded_at: newer }]);
    const moved = await statusWhen(srv.port, 'harbor-1', tokens.harbor, (j) => j.vehicles[1].recorded_at === newer, 'truck-17 moved');
    const truck = moved.json.vehicles[1];
    assert.deepEqual(Object.keys(truck), ['vehicle_id', 'lat', 'lng', 'recorded_at', 'received_at'], 'optional fields of the new fix only');
    assert.deepEqual([truck.lat, truck.lng], [59.5, 18.5]);
    assert.deepEqual(moved.json.vehicles.map((v) => v.vehicle_id), ['bus-9', 'truck-17', 'van-2']);
    assert.equal(moved.json.updated_at, newer);

    // HEAD: the same headers, no body
    const head = await request(srv.port, { method: 'HEAD', path: statusPath('harbor-1'), headers: bearer(tokens.harbor) });
    assert.equal(head.status, 200);
    assert.equal(head.headers.etag, moved.headers.etag);
    assert.equal(head.body.length, 0);
});

test('ETag on every 200; If-None-Match (one tag, a list, W/, *) gives 304 with no body until the fleet changes', opts, async (t) => {
    const { srv, tokens, ingest } = await setup(t);
    await ingest([{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.3, lng: 18.0, recorded_at: isoAgo(30_000) }]);
    const first = await statusWhen(srv.port, 'harbor-1', tokens.harbor, (j) => j.vehicle_count === 1, 'one vehicle');
    const etag = first.headers.etag;
    assert.match(etag, /^"[^"]+"$/);
    const again = await get(srv.port, statusPath('harbor-1'), bearer(tokens.harbor));
    assert.equal(again.headers.etag, etag, 'the same snapshot, the same ETag');
    assert.equal(again.text, first.text);

    for (const inm of [etag, `W/${etag}`, `"nope", ${etag}`, `W/"a",W/${etag} , "b"`, '*', ` ${etag}`]) {
        const res = await get(srv.port, statusPath('harbor-1'), { ...bearer(tokens.harbor), 'If-None-Match': inm });
        assert.equal(res.status, 304, `If-None-Match: ${inm}: ${res.status} ${res.text}`);
        assert.equal(res.body.length, 0);
        assert.equal(res.headers.etag, etag);
        assert.equal(res.headers['cache-control'], 'no-cache');
        assert.equal(res.headers['content-length'], undefined, '304 carries no Content-Length');
    }
    for (const inm of ['"nope"', 'W/"nope", "other"', etag.slice(0, -2) + '"', 'garbage', `"${etag}"`]) {
        const res = await get(srv.port, statusPath('harbor-1'), { ...bearer(tokens.harbor), 'If-None-Match': inm });
        assert.equal(res.status, 200, `If-None-Match: ${inm}`);
        assert.equal(res.text, first.text);
    }
    // the tag does not stand in for authorisation
    assertJsonError(await get(srv.port, statusPath('harbor-1'), { 'If-None-Match': etag }), 401, 'unauthorized');
    assertJsonError(await get(srv.port, statusPath('harbor-1'), { ...bearer(tokens.other), 'If-None-Match': '*' }), 404, 'fleet_not_found');

    // a change: a new tag, and the old one no longer matches
    await ingest([{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.4, lng: 18.1, recorded_at: isoAgo(20_000) }]);
    const changed = await statusWhen(srv.port, 'harbor-1', tokens.harbor, (j) => j.vehicles[0].lat === 59.4, 'the new position');
    assert.notEqual(changed.headers.etag, etag);
    const stale = await get(srv.port, statusPath('harbor-1'), { ...bearer(tokens.harbor), 'If-None-Match': etag });
    assert.equal(stale.status, 200);
    assert.equal(stale.text, changed.text);
});

test('401 with WWW-Authenticate: Bearer without a valid token, revoked ones included; 404 for unknown and not permitted fleets', opts, async (t) => {
    const { db, srv, tokens } = await setup(t);
    const path = statusPath('harbor-1');
    const missing = await get(srv.port, path);
    assertJsonError(missing, 401, 'unauthorized');
    assert.equal(missing.headers['www-authenticate'], 'Bearer');
    for (const headers of [
        { Authorization: 'Bearer' },
        { Authorization: 'Bearer ' },
        { Authorization: 'Bearer not-a-token' },
        { Authorization: `Basic ${tokens.harbor}` },
        { Authorization: tokens.harbor },
        bearer(tokens.harbor.slice(0, -1)),
        bearer(tokens.harbor + 'A'),
        bearer('fl_' + 'C'.repeat(43)), // well-formed, unknown
    ]) {
        const res = await get(srv.port, path, headers);
        assertJsonError(res, 401, 'unauthorized');
        assert.match(res.headers['www-authenticate'], /^Bearer\b/, JSON.stringify(headers));
        assert.equal(res.headers.etag, undefined);
    }

    // unknown fleet, a fleet of another token, an id fleetd never accepts: one answer
    const notMine = await get(srv.port, statusPath('other'), bearer(tokens.harbor));
    assertJsonError(notMine, 404, 'fleet_not_found');
    const unknown = await get(srv.port, statusPath('no-such-fleet'), bearer(tokens.harbor));
    assertJsonError(unknown, 404, 'fleet_not_found');
    assert.equal(notMine.json.error.message.replace('other', 'F'), unknown.json.error.message.replace('no-such-fleet', 'F'));
    assertJsonError(await get(srv.port, statusPath('no-such-fleet'), bearer(tokens.admin)), 404, 'fleet_not_found');
    assertJsonError(await get(srv.port, statusPath('bad%20id'), bearer(tokens.admin)), 404, 'fleet_not_found');
    assertJsonError(await get(srv.port, statusPath('x'.repeat(65)), bearer(tokens.admin)), 404, 'fleet_not_found');

    // an admin token reads any fleet; the same bytes as the fleet's own token
    const mine = await get(srv.port, path, bearer(tokens.harbor));
    assert.equal(mine.status, 200);
    const byAdmin = await get(srv.port, path, bearer(tokens.admin));
    assert.equal(byAdmin.status, 200);
    assert.equal(byAdmin.text, mine.text);
    assert.equal(byAdmin.headers.etag, mine.headers.etag);
    assert.equal((await get(srv.port, statusPath('other'), bearer(tokens.admin))).status, 200);
    assert.equal((await get(srv.port, statusPath('other'), bearer(tokens.other))).status, 200);

    // revoked: refused once the token cache lets go of it (5 s), at once after SIGHUP
    const revoke = await runFleetd(['token', 'revoke', 'harbor desk'], { databaseUrl: db.url });
    assert.equal(revoke.code, 0, describeRun(revoke));
    srv.child.kill('SIGHUP');
    await srv.waitForLog('fleetd.reloaded');
    for (let i = 0; i < 10; i++) assertJsonError(await get(srv.port, path, bearer(tokens.harbor)), 401, 'unauthorized');
    const revoked = await get(srv.port, path, bearer(tokens.harbor));
    assert.match(revoked.headers['www-authenticate'], /^Bearer\b/);

    // without SIGHUP: within the cache's 5 s (the admin token is cached on both shards first)
    for (let i = 0; i < 10; i++) assert.equal((await get(srv.port, path, bearer(tokens.admin))).status, 200);
    const started = Date.now();
    const other = await runFleetd(['token', 'revoke', (await db.query("SELECT id FROM tokens WHERE admin")).rows[0].id], {
        databaseUrl: db.url,
    });
    assert.equal(other.code, 0, describeRun(other));
    await waitFor(async () => (await get(srv.port, path, bearer(tokens.admin))).status === 401, {
        timeoutMs: 8000,
        intervalMs: 100,
        what: 'the revoked admin token refused within the cache time',
    });
    assert.ok(Date.now() - started <= 7000, `refused after ${Date.now() - started} ms`);
});

test('reads while the tracker restarts (a drill) and as it starts: always 200 with the whole fleet, never 500', opts, async (t) => {
    const { srv, tokens, ingest } = await setup(t);
    const fixes = [];
    for (let i = 0; i < 20; i++) {
        fixes.push({ fleet_id: 'harbor-1', vehicle_id: `v-${String(i).padStart(2, '0')}`, lat: 59 + i / 100, lng: 18, recorded_at: isoAgo(30_000) });
    }
    await ingest(fixes);
    const before = await statusWhen(srv.port, 'harbor-1', tokens.harbor, (j) => j.vehicle_count === 20, 'twenty vehicles');

    const etags = new Set([before.headers.etag]);
    // the tracker itself five times, then each shard's partition of trackers (a dynamic supervisor:
    // restarted empty, so the next read starts the tracker again; meanwhile the partition is away)
    const drills = ['tracker:harbor-1', 'tracker:harbor-1', 'tracker:harbor-1', 'tracker:harbor-1', 'tracker:harbor-1', 'trackers:0', 'trackers:1'];
    for (const [round, child] of drills.entries()) {
        const drill = request(srv.port, {
            method: 'POST',
            path: `/admin/tree/${child}/restart`,
            headers: { 'Content-Length': '0', ...bearer(tokens.admin) },
        });
        const reads = [];
        for (let i = 0; i < 8; i++) reads.push(get(srv.port, statusPath('harbor-1'), bearer(i % 2 ? tokens.admin : tokens.harbor)));
        const restarted = await drill;
        assert.equal(restarted.status, 200, restarted.text);
        reads.push(get(srv.port, statusPath('harbor-1'), bearer(tokens.harbor)));
        for (const res of await Promise.all(reads)) {
            assert.equal(res.status, 200, `round ${round}: ${res.status} ${res.text}`);
            assert.equal(res.text, before.text, 'the reloaded tracker shows the same fleet');
            etags.add(res.headers.etag);
        }
    }
    const after = await get(srv.port, statusPath('harbor-1'), bearer(tokens.harbor));
    assert.equal(after.text, before.text);
    assert.notEqual(after.headers.etag, before.headers.etag, 'a restarted tracker gives a new ETag');
    const stale = await get(srv.port, statusPath('harbor-1'), { ...bearer(tokens.harbor), 'If-None-Match': before.headers.etag });
    assert.equal(stale.status, 200, "a tag from the tracker's previous life does not match");
    assert.ok(etags.size >= 2, 'the tags changed with the restarts');

    // a fleet whose tracker has never run: concurrent first reads start it once and wait for its load
    const cold = await Promise.all([1, 2, 3, 4].map(() => get(srv.port, statusPath('other'), bearer(tokens.other))));
    for (const res of cold) assert.equal(res.text, '{"fleet_id":"other","vehicle_count":0,"updated_at":null,"vehicles":[]}');
    assert.equal(new Set(cold.map((r) => r.headers.etag)).size, 1, 'one tracker, one snapshot');
    const access = srv.logs.filter((e) => e.event === 'http.access');
    assert.ok(access.length >= 50, 'the access log is on');
    assert.deepEqual(access.filter((e) => e.status >= 500), [], 'no 5xx answered');
});
