// Error responses: every one is JSON {"error":{"code","message"}} with the right status and headers.
// (Limits: http_limits; deadlines: http_timeouts; connection limit: http_concurrency.)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertJsonError, buildRequest, connect, rawExchange, request, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
let srv;

before(async () => {
    srv = await startFleetd();
});
after(() => srv?.stop());

const JSON_BODY = '{"hello":"world"}';

test('404 not_found for an unknown path, and the connection stays usable', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const res = await conn.request({ path: '/no/such/thing' });
    assertJsonError(res, 404, 'not_found');
    const again = await conn.request({ path: '/health' });
    assert.equal(again.status, 200, 'a request after the 404 on the same connection');
});

test('405 method_not_allowed with Allow for POST /health with a JSON body', opts, async (t) => {
    const conn = await connect(srv.port, t);
    const res = await conn.request({
        method: 'POST',
        path: '/health',
        headers: { 'Content-Type': 'application/json' },
        body: JSON_BODY,
    });
    assertJsonError(res, 405, 'method_not_allowed');
    const allow = (res.headers.allow ?? '').split(',').map((m) => m.trim().toUpperCase());
    assert.ok(allow.includes('GET'), `Allow lists GET: ${res.headers.allow}`);
    assert.ok(!allow.includes('POST'), `Allow does not list POST: ${res.headers.allow}`);
    const again = await conn.request({ path: '/health' });
    assert.equal(again.status, 200, 'the body of the 405 request was consumed: the next request parses');
});

test('405 for DELETE /ready (no body)', opts, async () => {
    const res = await request(srv.port, { method: 'DELETE', path: '/ready' });
    assertJsonError(res, 405, 'method_not_allowed');
    assert.ok(/\bGET\b/.test(res.headers.allow ?? ''), `Allow lists GET: ${res.headers.allow}`);
});

test('400 bad_request for a malformed request line, then the connection is closed', opts, async () => {
    const r = await rawExchange(srv.port, ['THIS IS NOT HTTP\r\n\r\n'], { readUntilClose: true, timeout: 5000 });
    assert.equal(r.responses.length, 1, `one response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 400, 'bad_request');
    assert.ok(r.closed, 'the server closed the connection');
});

test('400 bad_request for a header line without a colon, then the connection is closed', opts, async () => {
    const r = await rawExchange(srv.port, ['GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nthis line has no colon\r\n\r\n'], {
        readUntilClose: true,
        timeout: 5000,
    });
    assert.equal(r.responses.length, 1, `one response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 400, 'bad_request');
    assert.ok(r.closed, 'the server closed the connection');
});

test('400 bad_request for a Content-Length that is not a number, then the connection is closed', opts, async () => {
    const r = await rawExchange(
        srv.port,
        ['POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: lots\r\n\r\n{}'],
        { readUntilClose: true, timeout: 5000 },
    );
    assert.equal(r.responses.length, 1, `one response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 400, 'bad_request');
    assert.ok(r.closed, 'the server closed the connection');
});

test('411 length_required for a POST with neither Content-Length nor chunked', opts, async () => {
    const r = await rawExchange(srv.port, ['POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n'], {
        timeout: 5000,
    });
    assert.equal(r.responses.length, 1, `one response: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 411, 'length_required');
});

test('415 unsupported_media_type for a text/plain body', opts, async () => {
    const res = await request(srv.port, { method: 'POST', path: '/health', headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
    assertJsonError(res, 415, 'unsupported_media_type');
});

test('415 for a body without Content-Type', opts, async () => {
    const res = await request(srv.port, { method: 'POST', path: '/health', body: JSON_BODY });
    assertJsonError(res, 415, 'unsupported_media_type');
});

test('415 is checked before routing: unknown path with a text/plain body', opts, async () => {
    const res = await request(srv.port, { method: 'POST', path: '/no/such/thing', headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
    assertJsonError(res, 415, 'unsupported_media_type');
});

test('application/json with a charset parameter is JSON (405, not 415)', opts, async () => {
    const res = await request(srv.port, {
        method: 'POST',
        path: '/health',
        headers: { 'Content-Type': 'application/json; charset=utf-8' },
        body: JSON_BODY,
    });
    assertJsonError(res, 405, 'method_not_allowed');
});

test('error responses carry a Content-Length matching the body', opts, async (t) => {
    const conn = await connect(srv.port, t);
    await conn.write(buildRequest({ path: '/no/such/thing' }));
    const [res] = await conn.readResponses(1);
    assert.equal(Number(res.headers['content-length']), res.body.length, `Content-Length: ${JSON.stringify(res.headers)}`);
    assert.ok(res.body.length > 0);
});
