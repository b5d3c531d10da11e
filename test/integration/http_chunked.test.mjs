// Chunked request bodies are decoded, and the connection stays usable after them.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertJsonError, connect, delay, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
let srv;

before(async () => {
    srv = await startFleetd();
});
after(() => srv?.stop());

const HEAD = 'POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';

test('a chunked POST is parsed (405 from the route) and a GET follows on the same socket', opts, async (t) => {
    const conn = await connect(srv.port, t);
    await conn.write(HEAD + '5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n');
    const [res] = await conn.readResponses(1);
    assertJsonError(res, 405, 'method_not_allowed');
    const next = await conn.request({ path: '/health', headers: { 'X-Request-Id': 'after-chunked' } });
    assert.equal(next.status, 200, 'the GET after the chunked body');
    assert.deepEqual(next.json, { status: 'ok' });
    assert.equal(next.headers['x-request-id'], 'after-chunked');
});

test('a chunked body arriving in pieces split inside the framing is parsed', opts, async (t) => {
    const conn = await connect(srv.port, t);
    // Chunk sizes in hex (upper and lower case), a chunk extension, and a trailer field.
    const body = 'A\r\n{"abc":12,\r\nf;name=value\r\n"def":[1,2,3,4,\r\n3\r\n5]}\r\n0\r\nX-Trailer: yes\r\n\r\n';
    const pieces = [HEAD.slice(0, 30), HEAD.slice(30), body.slice(0, 1), body.slice(1, 4), body.slice(4, 20), body.slice(20, 37), body.slice(37)];
    for (const p of pieces) {
        await conn.write(p);
        await delay(20); // separate reads on the server
    }
    const [res] = await conn.readResponses(1);
    assertJsonError(res, 405, 'method_not_allowed');
    const next = await conn.request({ path: '/health' });
    assert.equal(next.status, 200, 'the GET after the chunked body');
});

test('a malformed chunk size is a 400 and the connection is closed', opts, async (t) => {
    const conn = await connect(srv.port, t);
    await conn.write(HEAD + 'zz\r\nhello\r\n0\r\n\r\n');
    const [res] = await conn.readResponses(1, { timeoutMs: 5000 });
    assertJsonError(res, 400, 'bad_request');
    await conn.waitForClose(5000);
});
