// Ingest while PostgreSQL is down: 503 unavailable with Retry-After (never a false 202), and once
// the database is back the same batch is accepted. Stops the shared cluster: runs alone
// (RUN_SERIAL in test/CMakeLists.txt).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
    assertJsonError,
    clusterCtl,
    createDatabase,
    describeRun,
    get,
    migrate,
    request,
    runFleetd,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');

test('503 with Retry-After while the database is down; the same batch is accepted once it is back', opts, async (t) => {
    const db = await createDatabase('ingest_outage', t);
    await migrate(db);
    const env = { FLEETD_MASTER_KEY: MASTER_KEY };
    for (const args of [['fleet', 'create', 'harbor-1'], ['partner', 'create', 'acme', '--fleet', 'harbor-1']]) {
        const run = await runFleetd(args, { databaseUrl: db.url, env });
        assert.equal(run.code, 0, describeRun(run));
        if (args[0] === 'partner') env.SECRET = run.stdout.trim();
    }
    const secret = env.SECRET;
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: {
            FLEETD_MASTER_KEY: MASTER_KEY,
            FLEETD_JOBS_COMMIT_TIMEOUT: '1s',
            FLEETD_DB_HEALTH_INTERVAL: '200ms',
            FLEETD_DB_RECONNECT_MIN: '50ms',
            FLEETD_DB_RECONNECT_MAX: '300ms',
        },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });

    const body = JSON.stringify({
        fixes: [{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.3, lng: 18.1, recorded_at: new Date(Date.now() - 1000).toISOString() }],
    });
    const send = (id) => {
        const at = new Date();
        return request(srv.port, {
            method: 'POST',
            path: '/api/v1/ingest/acme',
            headers: {
                'Content-Type': 'application/json',
                'webhook-id': id,
                'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
                'webhook-signature': new Webhook(secret).sign(id, at, body),
            },
            body,
        }, { timeoutMs: 10_000 });
    };

    t.after(() => clusterCtl('start', { check: false }));
    await clusterCtl('stop');
    const started = Date.now();
    const res = await send('outage-1');
    assertJsonError(res, 503, 'unavailable');
    assert.match(res.headers['retry-after'] ?? '', /^[1-9]\d*$/);
    assert.ok(Date.now() - started < 5000, 'answered within the commit timeout, not left hanging');

    await clusterCtl('start');
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready after the restart', timeoutMs: 20_000 });
    const again = await send('outage-1');
    assert.equal(again.status, 202, again.text);
    assert.deepEqual(again.json, { accepted: 1 }, 'the refused batch had not been stored: not a duplicate');
    const rows = await db.query("SELECT count(*) FROM jobs WHERE unique_key = 'ingest:acme:outage-1'");
    assert.equal(Number(rows.rows[0].count), 1);
});
