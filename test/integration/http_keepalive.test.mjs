// Keep-alive: one socket serves many requests; idle connections are closed after
// FLEETD_KEEPALIVE_TIMEOUT; Connection: close and HTTP/1.0 are honoured.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { performance } from 'node:perf_hooks';
import { assertJsonError, assertContentLength, buildRequest, connect, delay, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const KEEPALIVE_MS = 1000;
let srv;

before(async () => {
    srv = await startFleetd({ env: { FLEETD_KEEPALIVE_TIMEOUT: `${KEEPALIVE_MS}ms` } });
});
after(() => srv?.stop());

test('one connection serves 100 requests in a row', opts, async (t) => {
    const conn = await connect(srv.port, t);
    for (let i = 0; i < 100; i++) {
        const kind = i % 3;
        if (kind === 0) {
            const res = await conn.request({ path: '/health', headers: { 'X-Request-Id': `ka-${i}` } });
            assert.equal(res.status, 200, `request ${i}`);
            assert.deepEqual(res.json, { status: 'ok' });
            assert.equal(res.headers['x-request-id'], `ka-${i}`);
            assertContentLength(res);
        } else if (kind === 1) {
            const res = await conn.request({ path: `/missing/${i}` });
            assertJsonError(res, 404, 'not_found');
        } else {
            const res = await conn.request({ method: 'HEAD', path: '/health' });
            assert.equal(res.status, 200, `request ${i}`);
        }
        assert.ok(!conn.closed, `the connection is still open after request ${i}`);
    }
    assert.equal(conn.pending().length, 0, 'no stray bytes after the last response');
});

test('an idle keep-alive connection is closed after the keep-alive timeout', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const res = await conn.request({ path: '/health' });
    assert.equal(res.status, 200);
    const idleFrom = performance.now();
    await conn.waitForClose(KEEPALIVE_MS + 5000);
    const idle = conn.closedAt - idleFrom;
    assert.ok(idle >= KEEPALIVE_MS - 50, `closed after ${idle.toFixed(0)} ms idle, before the ${KEEPALIVE_MS} ms keep-alive timeout`);
    assert.ok(idle <= KEEPALIVE_MS + 2000, `closed after ${idle.toFixed(0)} ms idle, long after the ${KEEPALIVE_MS} ms keep-alive timeout`);
});

test('requests spaced under the keep-alive timeout keep the connection open', opts, async (t) => {
    const conn = await connect(srv.port, t);
    // 6 requests 400 ms apart: 2 s in all, twice the timeout, but never idle for longer than it.
    for (let i = 0; i < 6; i++) {
        if (i > 0) await delay(KEEPALIVE_MS * 0.4);
        assert.ok(!conn.closed, `open before request ${i}`);
        const res = await conn.request({ path: '/health' });
        assert.equal(res.status, 200, `request ${i}`);
    }
});

test('a request with Connection: close gets its response, then the connection is closed', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const res = await conn.request({ path: '/health', headers: { Connection: 'close' } });
    assert.equal(res.status, 200);
    // Well before the keep-alive timeout.
    await conn.waitForClose(KEEPALIVE_MS / 2);
});

test('an HTTP/1.0 request without keep-alive gets its response, then the connection is closed', opts, async (t) => {
    const conn = await connect(srv.port, t);
    await conn.write(buildRequest({ path: '/health', version: 'HTTP/1.0' }));
    const [res] = await conn.readResponses(1, { timeoutMs: 5000 });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { status: 'ok' });
    await conn.waitForClose(KEEPALIVE_MS / 2);
});
