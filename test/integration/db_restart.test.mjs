// The database goes away under a running fleetd and comes back.
//
// RUN SERIAL: this file stops the shared PostgreSQL cluster ($FLEETD_TEST_PG stop), which would break any
// test running at the same time; ctest must run it alone:
//   set_tests_properties(integration.db_restart PROPERTIES RUN_SERIAL TRUE)
// The cluster is always started again, even when the test fails.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clusterCtl, clusterUp, createDatabase, delay, get, migrate, startFleetd, TEST_TIMEOUT_MS, waitFor } from './lib/harness.mjs';

const FAST_CHECKS = {
    FLEETD_DB_HEALTH_INTERVAL: '200ms',
    FLEETD_DB_RECONNECT_MIN: '50ms',
    FLEETD_DB_RECONNECT_MAX: '500ms',
    FLEETD_DB_CONNECT_TIMEOUT: '1s',
};

/** Must be the first of a test's after hooks (they run in order): the cluster is started again before
 * its database is dropped, whatever happened. */
function restartClusterAfter(t) {
    t.after(async () => {
        if (!(await clusterUp())) await clusterCtl('start', { check: false });
        await waitFor(clusterUp, { timeoutMs: 30_000, intervalMs: 200, what: 'the cluster to be up again' });
    });
}

async function readyStatus(srv, status) {
    const r = await get(srv.port, '/ready');
    return r.status === status ? r : null;
}

test('/ready follows the database down and up; /health stays 200', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    restartClusterAfter(t);
    const db = await createDatabase('db_restart', t);
    await migrate(db);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: FAST_CHECKS,
    });

    await waitFor(() => readyStatus(srv, 200), { timeoutMs: 10_000, what: '/ready 200 before the outage' });

    await clusterCtl('stop');
    const down = await waitFor(() => readyStatus(srv, 503), { timeoutMs: 5000, what: '/ready 503 after the database stopped' });
    assert.equal(down.json?.status, 'not_ready', down.text);
    assert.ok(Array.isArray(down.json.reasons) && down.json.reasons.length > 0, down.text);
    assert.ok(down.json.reasons.some((r) => /database/i.test(r)), `a reason names the database: ${down.text}`);

    // The process keeps serving while the database is away, for longer than a few health checks.
    for (let i = 0; i < 5; i++) {
        const health = await get(srv.port, '/health');
        assert.equal(health.status, 200, `/health during the outage: ${health.text}`);
        assert.deepEqual(health.json, { status: 'ok' });
        await delay(200);
    }
    assert.equal((await get(srv.port, '/ready')).status, 503, 'still not ready while the database is down');
    assert.equal(srv.exitInfo, null, 'fleetd is still running');

    await clusterCtl('start');
    const up = await waitFor(() => readyStatus(srv, 200), { timeoutMs: 15_000, intervalMs: 100, what: '/ready 200 after the database came back' });
    assert.equal(up.json?.status, 'ready', up.text);
});

test('fleetd started while the database is down becomes ready once it is up', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    restartClusterAfter(t);
    const db = await createDatabase('db_late', t);
    await migrate(db);
    await clusterCtl('stop');
    const srv = await startFleetd({ t, databaseUrl: db.url, env: FAST_CHECKS });
    assert.equal((await get(srv.port, '/health')).status, 200, '/health while the database is down');
    const down = await waitFor(() => readyStatus(srv, 503), { timeoutMs: 5000, what: '/ready 503 with the database down' });
    assert.ok(down.json?.reasons?.some((r) => /database/i.test(r)), `a reason names the database: ${down.text}`);

    await clusterCtl('start');
    const up = await waitFor(() => readyStatus(srv, 200), { timeoutMs: 15_000, intervalMs: 100, what: '/ready 200 once the database is up' });
    assert.equal(up.json?.status, 'ready', up.text);
});
