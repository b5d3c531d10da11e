// Many connections at once, and the connection limit: past FLEETD_MAX_CONNECTIONS a new connection gets
// 503 with Retry-After and is closed (not left hanging).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertJsonError, Conn, connect, startFleetd, TEST_TIMEOUT_MS, waitFor } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

test('1000 concurrent keep-alive connections each get 200', opts, async (t) => {
    const N = 1000;
    const srv = await startFleetd({ t, env: { FLEETD_MAX_CONNECTIONS: '5000', FLEETD_ACCESS_LOG: 'false' } });
    const conns = [];
    t.after(() => conns.forEach((c) => c.destroy()));
    // Open them all before any request, so they are open at the same time.
    const opened = await Promise.allSettled(Array.from({ length: N }, () => Conn.open(srv.port, { timeoutMs: 30_000 })));
    for (const o of opened) if (o.status === 'fulfilled') conns.push(o.value);
    const failed = opened.filter((o) => o.status === 'rejected');
    assert.equal(failed.length, 0, `connections that failed to open: ${failed.length}; first: ${failed[0]?.reason}`);

    const results = await Promise.allSettled(conns.map((c, i) => c.request({ path: '/health', headers: { 'X-Request-Id': `c-${i}` } }, { timeoutMs: 30_000 })));
    const statuses = new Map();
    results.forEach((r, i) => {
        const key = r.status === 'fulfilled' ? (r.value.headers['x-request-id'] === `c-${i}` ? r.value.status : 'wrong id') : `error: ${r.reason.message.slice(0, 80)}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
    });
    assert.deepEqual(Object.fromEntries(statuses), { 200: N }, 'every connection got its 200');
    assert.equal(conns.filter((c) => c.closed).length, 0, 'every connection is still open (keep-alive)');

    // All still usable: a second round on the same sockets.
    const second = await Promise.allSettled(conns.map((c) => c.request({ path: '/health' }, { timeoutMs: 30_000 })));
    assert.equal(second.filter((r) => r.status === 'fulfilled' && r.value.status === 200).length, N, 'a second request on each connection');
});

test('past FLEETD_MAX_CONNECTIONS a new connection gets 503 unavailable with Retry-After and is closed', opts, async (t) => {
    const MAX = 4;
    const srv = await startFleetd({ t, env: { FLEETD_MAX_CONNECTIONS: String(MAX) } });
    const held = [];
    for (let i = 0; i < MAX; i++) {
        const conn = await connect(srv.port, t);
        // A request on each makes sure fleetd has accepted and counted it.
        assert.equal((await conn.request({ path: '/health' })).status, 200, `connection ${i + 1} of ${MAX}`);
        held.push(conn);
    }

    const extra = await connect(srv.port, t);
    await extra.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const [res] = await extra.readResponses(1, { timeoutMs: 5000 });
    assertJsonError(res, 503, 'unavailable');
    assert.match(res.headers['retry-after'] ?? '', /^\d+$/, `Retry-After is a number of seconds: ${JSON.stringify(res.headers)}`);
    await extra.waitForClose(5000);

    // The held connections are unaffected.
    for (const conn of held) assert.equal((await conn.request({ path: '/health' })).status, 200);
    // and the refusal is counted where the 5xx alerts look
    const metrics = await held[0].request({ path: '/metrics' });
    assert.equal(metrics.status, 200);
    const refused = /^fleetd_http_requests_total\{route="unmatched",code="503"\} (\d+)$/m.exec(metrics.text);
    assert.ok(refused && Number(refused[1]) >= 1, `the 503 is in /metrics: ${refused?.[0]}`);

    // Closing one frees a slot: a new connection is served again (fleetd notices the close promptly).
    held.pop().destroy();
    const res2 = await waitFor(async () => {
        const conn = await connect(srv.port, t);
        try {
            const r = await conn.request({ path: '/health' }, { timeoutMs: 2000 });
            return r.status === 200 ? r : null;
        } finally {
            conn.destroy();
        }
    }, { timeoutMs: 5000, intervalMs: 100, what: 'a connection to be served after one was closed' });
    assert.deepEqual(res2.json, { status: 'ok' });
});
