// X-Request-Id: echoed when valid, generated otherwise, and the same id in the request's access log line.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { accessLines, assertRequestId, connect, rawExchange, request, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
let srv;

before(async () => {
    srv = await startFleetd({ env: { FLEETD_ACCESS_LOG: 'true' } });
});
after(() => srv?.stop());

const valid = [
    ['a simple id', 'abc-123'],
    ['every allowed character', 'AZaz09._:-'],
    ['a UUID', '3f1c2a9e-8b7d-4c6e-9f0a-1b2c3d4e5f60'],
    ['one character', 'x'],
    ['128 characters', 'r'.repeat(128)],
];
for (const [what, id] of valid) {
    test(`a valid X-Request-Id (${what}) is echoed`, opts, async () => {
        const res = await request(srv.port, { path: '/health', headers: { 'X-Request-Id': id } });
        assert.equal(res.status, 200);
        assert.equal(res.headers['x-request-id'], id);
    });
}

const invalid = [
    ['129 characters', 'r'.repeat(129)],
    ['a space', 'has space'],
    ['a slash', 'a/b'],
    ['a quote', 'a"b'],
    ['a non-ASCII byte', 'caf\u00e9'],
    ['empty', ''],
];
for (const [what, id] of invalid) {
    test(`an invalid X-Request-Id (${what}) is replaced by a generated one`, opts, async () => {
        const res = await request(srv.port, { path: '/health', headers: [['X-Request-Id', id]] });
        assert.equal(res.status, 200);
        const rid = assertRequestId(res);
        assert.notEqual(rid, id);
    });
}

test('without X-Request-Id each response gets a distinct generated id', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const ids = new Set();
    for (let i = 0; i < 20; i++) {
        const res = await conn.request({ path: '/health' });
        ids.add(assertRequestId(res));
    }
    assert.equal(ids.size, 20, 'all distinct');
});

test('error responses carry X-Request-Id too, including a request fleetd could not parse', opts, async () => {
    const notFound = await request(srv.port, { path: '/nope', headers: { 'X-Request-Id': 'err-404' } });
    assert.equal(notFound.status, 404);
    assert.equal(notFound.headers['x-request-id'], 'err-404');
    const r = await rawExchange(srv.port, ['BROKEN\r\n\r\n'], { readUntilClose: true, timeout: 5000 });
    assert.equal(r.responses[0]?.status, 400, r.text);
    assertRequestId(r.responses[0]);
});

test('each request has one http.access log line with its request id, method, path, status, bytes, duration, peer', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const cases = [
        { req: { path: '/health', headers: { 'X-Request-Id': 'access-ok' } }, status: 200 },
        { req: { path: '/not/here', headers: { 'X-Request-Id': 'access-404' } }, status: 404 },
        { req: { method: 'HEAD', path: '/health', headers: { 'X-Request-Id': 'access-head' } }, status: 200 },
        { req: { path: '/health' }, status: 200 }, // a generated id
    ];
    for (const c of cases) {
        const res = await conn.request(c.req);
        assert.equal(res.status, c.status);
        const rid = assertRequestId(res);
        const line = await srv.waitForLog((e) => e.event === 'http.access' && e.request_id === rid, 5000);
        assert.equal(line.method, c.req.method ?? 'GET');
        assert.equal(line.path, c.req.path);
        assert.equal(line.status, c.status);
        assert.equal(typeof line.bytes, 'number');
        // Whether bytes counts the head or only the body is fleetd's choice; either way a response with a
        // body has some.
        if (c.req.method !== 'HEAD') assert.ok(line.bytes > 0, `bytes counts the response: ${JSON.stringify(line)}`);
        else assert.ok(line.bytes >= 0, `bytes: ${JSON.stringify(line)}`);
        assert.equal(typeof line.duration_ms, 'number');
        assert.ok(line.duration_ms >= 0 && line.duration_ms < 5000, `duration_ms: ${JSON.stringify(line)}`);
        assert.equal(typeof line.peer, 'string');
        assert.ok(line.peer.includes('127.0.0.1'), `peer names the client address: ${JSON.stringify(line)}`);
    }
    // One line per request, not more: a later request's line is a barrier for any duplicate.
    const barrier = await conn.request({ path: '/health', headers: { 'X-Request-Id': 'access-barrier' } });
    assert.equal(barrier.status, 200);
    await srv.waitForLog((e) => e.event === 'http.access' && e.request_id === 'access-barrier', 5000);
    for (const id of ['access-ok', 'access-404', 'access-head']) assert.equal(accessLines(srv, id).length, 1, `one access line for ${id}`);
});

test('with FLEETD_ACCESS_LOG=false no http.access line is written', opts, async (t) => {
    const quiet = await startFleetd({ t, env: { FLEETD_ACCESS_LOG: 'false' } });
    const res = await request(quiet.port, { path: '/health', headers: { 'X-Request-Id': 'quiet-1' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-request-id'], 'quiet-1');
    await quiet.stop(); // flushes everything it would have logged
    assert.equal(quiet.logs.filter((e) => e.event === 'http.access').length, 0);
});
