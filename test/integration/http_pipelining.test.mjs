// Pipelining: requests sent back to back without waiting are answered in order, on one connection.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { buildRequest, connect, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
let srv;

before(async () => {
    srv = await startFleetd();
});
after(() => srv?.stop());

// A mix of handlers, fast and slow (/ready looks at the database state), with and without bodies, so a
// server answering in completion order rather than request order would be caught.
function pipeline(n, tag) {
    const kinds = [
        { method: 'GET', path: '/health', expect: [200] },
        { method: 'GET', path: '/ready', expect: [200, 503] },
        { method: 'GET', path: '/no-such-path', expect: [404] },
        { method: 'HEAD', path: '/health', expect: [200] },
        { method: 'POST', path: '/health', body: '{"n":1}', headers: { 'Content-Type': 'application/json' }, expect: [405] },
    ];
    return Array.from({ length: n }, (_, i) => {
        const k = kinds[i % kinds.length];
        const id = `${tag}-${String(i).padStart(2, '0')}`;
        return { ...k, id, bytes: buildRequest({ method: k.method, path: k.path, body: k.body, headers: { ...k.headers, 'X-Request-Id': id } }) };
    });
}

async function sendAndCheck(t, reqs, writes) {
    const conn = await connect(srv.port, t);
    for (const w of writes) assert.ok(await conn.write(w), 'write');
    const responses = await conn.readResponses(reqs.length, { timeoutMs: 10_000, head: reqs.map((r) => r.method === 'HEAD') });
    responses.forEach((res, i) => {
        assert.equal(res.headers['x-request-id'], reqs[i].id, `response ${i} answers request ${i} (${reqs[i].method} ${reqs[i].path})`);
        assert.ok(reqs[i].expect.includes(res.status), `response ${i} (${reqs[i].method} ${reqs[i].path}): status ${res.status}`);
    });
    assert.ok(!conn.closed, 'the connection is still open');
    const last = await conn.request({ path: '/health', headers: { 'X-Request-Id': 'after-pipeline' } });
    assert.equal(last.status, 200);
    assert.equal(last.headers['x-request-id'], 'after-pipeline');
}

test('20 requests in one write get 20 responses in order', opts, async (t) => {
    const reqs = pipeline(20, 'pipe');
    await sendAndCheck(t, reqs, [Buffer.concat(reqs.map((r) => r.bytes))]);
});

test('20 pipelined requests split into odd-sized writes get 20 responses in order', opts, async (t) => {
    const reqs = pipeline(20, 'split');
    const all = Buffer.concat(reqs.map((r) => r.bytes));
    // Pieces of 1..23 bytes: request lines, headers and bodies broken at every kind of place.
    const writes = [];
    for (let pos = 0, size = 1; pos < all.length; pos += size, size = (size % 23) + 1) writes.push(all.subarray(pos, pos + size));
    await sendAndCheck(t, reqs, writes);
});
