// Status reads while PostgreSQL is down: a fleet whose tracker is loaded is answered from memory
// (no database on the read path; the token's last verdict stands while it cannot be checked, past
// the cache's 5 s), one whose tracker cannot load answers 503 unavailable with
// Retry-After after FLEETD_STATUS_WAIT, and it reads normally once the database is back. Stops the
// shared cluster: runs alone (RUN_SERIAL in test/CMakeLists.txt).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
    assertJsonError,
    clusterCtl,
    clusterUp,
    createDatabase,
    delay,
    get,
    migrate,
    postSigned,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const MASTER_KEY = randomBytes(32).toString('hex');

test('from memory while the database is down; 503 + Retry-After for a fleet that cannot load; never a 500', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    // first of the after hooks: the cluster is up again before the database is dropped
    t.after(async () => {
        if (!(await clusterUp())) await clusterCtl('start', { check: false });
        await waitFor(clusterUp, { timeoutMs: 30_000, intervalMs: 200, what: 'the cluster to be up again' });
    });
    const db = await createDatabase('status_outage', t);
    await migrate(db);
    const cli = (args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });
    await cli(['fleet', 'create', 'harbor-1']);
    await cli(['fleet', 'create', 'cold']);
    const secret = await cli(['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    const admin = await cli(['token', 'create', '--admin']);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: {
            FLEETD_MASTER_KEY: MASTER_KEY,
            FLEETD_SHARDS: '1', // one token cache: the token checked before the outage stays cached
            FLEETD_STATUS_WAIT: '700ms',
            FLEETD_DB_HEALTH_INTERVAL: '200ms',
            FLEETD_DB_RECONNECT_MIN: '50ms',
            FLEETD_DB_RECONNECT_MAX: '300ms',
        },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    const fix = { fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.3, lng: 18.1, recorded_at: new Date(Date.now() - 1000).toISOString() };
    const posted = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes: [fix] } });
    assert.equal(posted.status, 202, posted.text);
    const path = '/api/v1/fleets/harbor-1/status';
    const auth = { Authorization: `Bearer ${admin}` };
    let before;
    await waitFor(async () => (before = await get(srv.port, path, auth)).json?.vehicle_count === 1, { what: 'the fix in the status' });

    await clusterCtl('stop');
    await waitFor(async () => (await get(srv.port, '/ready')).status === 503, { what: '/ready 503 once the database is gone' });
    // past the token cache's 5 s: the token's last verdict stands while it cannot be checked
    await delay(5500);
    for (let i = 0; i < 5; i++) {
        const res = await get(srv.port, path, auth);
        assert.equal(res.status, 200, `from memory during the outage: ${res.status} ${res.text}`);
        assert.equal(res.text, before.text);
        assert.equal((await get(srv.port, path, { ...auth, 'If-None-Match': before.headers.etag })).status, 304);
    }
    const started = Date.now();
    const cold = await get(srv.port, '/api/v1/fleets/cold/status', auth);
    const waited = Date.now() - started;
    assertJsonError(cold, 503, 'unavailable');
    assert.match(cold.headers['retry-after'] ?? '', /^[1-9]\d*$/);
    assert.ok(waited >= 600 && waited < 5000, `answered after FLEETD_STATUS_WAIT (700 ms), not at once nor never: ${waited} ms`);

    await clusterCtl('start');
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready after the restart', timeoutMs: 20_000 });
    const back = await waitFor(async () => {
        const res = await get(srv.port, '/api/v1/fleets/cold/status', auth);
        return res.status === 200 ? res : null;
    }, { what: 'the cold fleet once the database is back', timeoutMs: 10_000 });
    assert.equal(back.text, '{"fleet_id":"cold","vehicle_count":0,"updated_at":null,"vehicles":[]}');
    assert.deepEqual(srv.logs.filter((e) => e.event === 'http.access' && e.status >= 500 && e.status !== 503), [], 'no 5xx but 503');
});
