// /health (the process serves) and /ready (database reachable, migrations current).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
    assertContentLength,
    assertRequestId,
    Conn,
    connect,
    createDatabase,
    get,
    migrate,
    startFleetd,
    TEST_TIMEOUT_MS,
    UNREACHABLE_DATABASE_URL,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const FAST_CHECKS = { FLEETD_DB_HEALTH_INTERVAL: '200ms', FLEETD_DB_RECONNECT_MIN: '50ms', FLEETD_DB_RECONNECT_MAX: '500ms' };

function assertNotReady(res, pattern) {
    assert.equal(res.status, 503, res.text);
    assert.match(res.headers['content-type'] ?? '', /^application\/json\b/i);
    assert.equal(res.json?.status, 'not_ready', res.text);
    assert.ok(Array.isArray(res.json.reasons) && res.json.reasons.length > 0, `reasons is a non-empty array: ${res.text}`);
    assert.ok(res.json.reasons.every((r) => typeof r === 'string' && r.length > 0), `reasons are sentences: ${res.text}`);
    assert.ok(res.json.reasons.some((r) => pattern.test(r)), `a reason matches ${pattern}: ${res.text}`);
    assertRequestId(res);
}

test('startup: http.listening names the address and the number of shards', opts, async (t) => {
    const srv = await startFleetd({ t, env: { FLEETD_SHARDS: '2' }, databaseUrl: UNREACHABLE_DATABASE_URL });
    assert.equal(srv.listening.addr, `127.0.0.1:${srv.port}`);
    assert.equal(srv.listening.shards, 2);
    for (const field of ['ts', 'level', 'message']) assert.ok(field in srv.listening, `log lines have "${field}": ${JSON.stringify(srv.listening)}`);
});

test('GET /health is 200 {"status":"ok"}; HEAD /health has the headers and no body', opts, async (t) => {
    const srv = await startFleetd({ t });
    const conn = await connect(srv.port, t);
    const res = await conn.request({ path: '/health' });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'] ?? '', /^application\/json\b/i);
    assert.deepEqual(res.json, { status: 'ok' });
    assertContentLength(res);
    assertRequestId(res);

    const head = await conn.request({ method: 'HEAD', path: '/health' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], res.headers['content-length'], 'HEAD gives the Content-Length of the GET');
    assert.equal(head.body.length, 0);
    // Had HEAD sent a body, its bytes would come before this response and break its parse.
    const after = await conn.request({ path: '/health', headers: { 'X-Request-Id': 'after-head' } });
    assert.equal(after.status, 200);
    assert.equal(after.headers['x-request-id'], 'after-head');
    assert.deepEqual(after.json, { status: 'ok' });
});

test('fleetd starts without a database: /health 200, /ready 503 naming the database', opts, async (t) => {
    const srv = await startFleetd({ t, databaseUrl: UNREACHABLE_DATABASE_URL, env: FAST_CHECKS });
    assert.equal((await get(srv.port, '/health')).status, 200);
    const res = await waitFor(async () => {
        const r = await get(srv.port, '/ready');
        return r.status === 503 && r.json?.reasons?.some((x) => /database/i.test(x)) ? r : null;
    }, { timeoutMs: 5000, what: '/ready 503 naming the database' });
    assertNotReady(res, /database/i);
});

test('/ready is 503 on an unmigrated database, and 200 once `fleetd migrate` ran', opts, async (t) => {
    const db = await createDatabase('ready_unmigrated', t);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: FAST_CHECKS });
    // Before the first check fleetd may not know yet; once it has connected it must name the migrations.
    const res = await waitFor(async () => {
        const r = await get(srv.port, '/ready');
        return r.status === 503 && r.json?.reasons?.some((x) => /migrat/i.test(x)) ? r : null;
    }, { timeoutMs: 5000, what: '/ready 503 naming migrations' });
    assertNotReady(res, /migrat/i);

    await migrate(db);
    const ready = await waitFor(async () => {
        const r = await get(srv.port, '/ready');
        return r.status === 200 ? r : null;
    }, { timeoutMs: 5000, what: '/ready 200 after migrate' });
    assert.equal(ready.json?.status, 'ready', ready.text);
    assert.match(ready.headers['content-type'] ?? '', /^application\/json\b/i);
});

test('/ready is 200 {"status":"ready"} on a migrated database', opts, async (t) => {
    const db = await createDatabase('ready_migrated', t);
    await migrate(db);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: FAST_CHECKS });
    const res = await waitFor(async () => {
        const r = await get(srv.port, '/ready');
        return r.status === 200 ? r : null;
    }, { timeoutMs: 5000, what: '/ready 200' });
    assert.equal(res.json?.status, 'ready', res.text);
    assertRequestId(res);
});

test('SIGTERM stops fleetd with exit status 0; the port no longer accepts connections', opts, async (t) => {
    const srv = await startFleetd({ t });
    const conn = await connect(srv.port, t);
    assert.equal((await conn.request({ path: '/health' })).status, 200);
    const { code, signal } = await srv.stop(); // SIGTERM; asserts exit status 0 within its bound
    assert.equal(code, 0);
    assert.equal(signal, null);
    await assert.rejects(Conn.open(srv.port, { timeoutMs: 2000 }), /ECONNREFUSED/, 'nothing listens on the port any more');
});
