// Request size limits: header bytes and count (431), body size (413), each just under and over.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { performance } from 'node:perf_hooks';
import { assertJsonError, buildRequest, chunked, connect, rawExchange, request, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MAX_HEADER_BYTES = 1024;
const MAX_HEADERS = 8;
const MAX_BODY_BYTES = 1024;
let srv;

before(async () => {
    srv = await startFleetd({
        env: {
            FLEETD_MAX_HEADER_BYTES: '1KiB',
            FLEETD_MAX_HEADERS: String(MAX_HEADERS),
            FLEETD_MAX_BODY_BYTES: '1KiB',
            // Long deadlines, so that a limit answered late would show up as a timeout of the test's own
            // bounded read, not as a 408.
            FLEETD_BODY_TIMEOUT: '60s',
            FLEETD_HEADER_TIMEOUT: '60s',
        },
    });
});
after(() => srv?.stop());

/** Host and count-1 filler fields: count header fields in all (add one for Connection: close). */
function headerList(count) {
    const list = [['Host', '127.0.0.1']];
    for (let i = 1; i < count; i++) list.push([`X-Filler-${i}`, 'x']);
    return list;
}

test(`${MAX_HEADERS} header fields are accepted`, opts, async () => {
    const res = await request(srv.port, { path: '/health', headers: headerList(MAX_HEADERS - 1).concat([['Connection', 'close']]) });
    assert.equal(res.status, 200, res.text);
});

test(`${MAX_HEADERS + 1} header fields: 431 headers_too_large`, opts, async () => {
    const res = await request(srv.port, { path: '/health', headers: headerList(MAX_HEADERS).concat([['Connection', 'close']]) });
    assertJsonError(res, 431, 'headers_too_large');
});

test('many more header fields than allowed: 431', opts, async () => {
    const res = await request(srv.port, { path: '/health', headers: headerList(200) });
    assertJsonError(res, 431, 'headers_too_large');
});

test('a request head well under the byte limit is accepted', opts, async () => {
    const req = buildRequest({ path: '/health', headers: { 'X-Pad': 'p'.repeat(MAX_HEADER_BYTES / 2), Connection: 'close' } });
    assert.ok(req.length < MAX_HEADER_BYTES);
    const r = await rawExchange(srv.port, [req]);
    assert.equal(r.responses[0]?.status, 200, r.text);
});

test('a request head over the byte limit: 431 headers_too_large', opts, async () => {
    const req = buildRequest({ path: '/health', headers: { 'X-Pad': 'p'.repeat(MAX_HEADER_BYTES * 2), Connection: 'close' } });
    const r = await rawExchange(srv.port, [req], { timeout: 5000 });
    assert.equal(r.responses.length, 1, `a response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 431, 'headers_too_large');
});

test('a request head far over the byte limit (never ending) is refused, not buffered', opts, async () => {
    // Header bytes keep coming without the blank line; fleetd must answer once past the limit.
    const chunks = ['GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n'];
    for (let i = 0; i < 64; i++) chunks.push(`X-More-${i}: ${'m'.repeat(500)}\r\n`);
    const r = await rawExchange(srv.port, chunks, { readUntilClose: true, timeout: 5000 });
    assert.ok(r.responses.length >= 1, `a response: ${JSON.stringify(r.text.slice(0, 500))}`);
    assertJsonError(r.responses[0], 431, 'headers_too_large');
});

test('a body of exactly the limit is accepted (405 from the route, not 413)', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const body = '"' + 'b'.repeat(MAX_BODY_BYTES - 2) + '"';
    const res = await conn.request({ method: 'POST', path: '/health', headers: { 'Content-Type': 'application/json' }, body });
    assertJsonError(res, 405, 'method_not_allowed');
});

test('Content-Length one over the limit: 413 payload_too_large', opts, async () => {
    const body = '"' + 'b'.repeat(MAX_BODY_BYTES - 1) + '"';
    const res = await request(srv.port, { method: 'POST', path: '/health', headers: { 'Content-Type': 'application/json' }, body });
    assertJsonError(res, 413, 'payload_too_large');
});

test('413 arrives before the body is sent (huge Content-Length, headers only)', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const started = performance.now();
    await conn.write(
        'POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n',
    );
    // Nothing of the body is ever sent: the answer must come from the headers alone, well before any
    // timeout (the body deadline is 60 s).
    const [res] = await conn.readResponses(1, { timeoutMs: 5000 });
    assertJsonError(res, 413, 'payload_too_large');
    assert.ok(performance.now() - started < 5000);
});

test('a chunked body over the limit: 413 payload_too_large', opts, async () => {
    const head = 'POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
    const pieces = Array.from({ length: 8 }, () => 'c'.repeat(MAX_BODY_BYTES / 4)); // twice the limit
    const body = chunked(pieces);
    // Sent in a few writes; fleetd may answer as soon as the limit is crossed and stop reading.
    const r = await rawExchange(srv.port, [head, body.subarray(0, 700), body.subarray(700, 1400), body.subarray(1400)], { timeout: 5000 });
    assert.ok(r.responses.length >= 1, `a response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 413, 'payload_too_large');
});

test('a chunked body under the limit is accepted (405 from the route, not 413)', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const head = 'POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
    await conn.write(Buffer.concat([Buffer.from(head), chunked(['"', 'c'.repeat(300), 'c'.repeat(300), '"'])]));
    const [res] = await conn.readResponses(1);
    assertJsonError(res, 405, 'method_not_allowed');
});
