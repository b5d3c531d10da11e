// Deadlines: the request head must be complete within FLEETD_HEADER_TIMEOUT of its first byte, the body
// within FLEETD_BODY_TIMEOUT of the end of the head. Both are absolute: trickling bytes does not extend
// them (slowloris). Past them: 408 request_timeout and the connection is closed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertJsonError, connect, delay, rawExchange, startFleetd, TEST_TIMEOUT_MS } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const HEADER_TIMEOUT_MS = 1000;
const BODY_TIMEOUT_MS = 1000;
// fleetd may close a little after the deadline (timer granularity, a loaded CI machine), never before
// it and not much after. Times are measured on the client, so a few ms of slack below.
const EARLY_SLACK_MS = 50;
const LATE_SLACK_MS = 2000;
let srv;

before(async () => {
    srv = await startFleetd({
        env: {
            FLEETD_HEADER_TIMEOUT: `${HEADER_TIMEOUT_MS}ms`,
            FLEETD_BODY_TIMEOUT: `${BODY_TIMEOUT_MS}ms`,
            FLEETD_KEEPALIVE_TIMEOUT: '30s',
        },
    });
});
after(() => srv?.stop());

function assertClosedAtDeadline(r, from, deadline, what) {
    assert.ok(r.closed, `the server closed the connection (${what}); received: ${JSON.stringify(r.text)}`);
    const elapsed = r.closedAt - from;
    assert.ok(elapsed >= deadline - EARLY_SLACK_MS, `closed ${elapsed.toFixed(0)} ms after ${what}: before the ${deadline} ms deadline`);
    assert.ok(elapsed <= deadline + LATE_SLACK_MS, `closed ${elapsed.toFixed(0)} ms after ${what}: more than ${LATE_SLACK_MS} ms past the ${deadline} ms deadline`);
}

const TRICKLE_INTERVAL_MS = 200;
// Enough one-byte writes to outlast the deadline and the slack: a server that is not cut off fails the
// test without the client trickling for longer than needed.
const TRICKLE_BYTES = Math.ceil((Math.max(HEADER_TIMEOUT_MS, BODY_TIMEOUT_MS) + LATE_SLACK_MS + 1000) / TRICKLE_INTERVAL_MS);

/** One-byte chunks of the first TRICKLE_BYTES bytes of text. */
function trickle(text) {
    const bytes = [...Buffer.from(text)].map((b) => Buffer.from([b]));
    assert.ok(bytes.length >= TRICKLE_BYTES);
    return bytes.slice(0, TRICKLE_BYTES);
}

test('a client trickling one header byte every 200 ms is cut off at the header deadline with 408', opts, async () => {
    // Never completes the head.
    const chunks = trickle('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Trickle: ' + 'a'.repeat(70));
    const r = await rawExchange(srv.port, chunks, { delays: TRICKLE_INTERVAL_MS, readUntilClose: true, timeout: HEADER_TIMEOUT_MS + LATE_SLACK_MS + 1000 });
    assertClosedAtDeadline(r, r.firstSentAt, HEADER_TIMEOUT_MS, 'the first header byte');
    assert.ok(r.chunksSent < chunks.length, 'the client was cut off before it finished');
    assert.equal(r.responses.length, 1, `a 408 before the close: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 408, 'request_timeout');
});

test('a client that sends part of the head and goes silent gets 408 at the header deadline', opts, async () => {
    const r = await rawExchange(srv.port, ['GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n'], {
        readUntilClose: true,
        timeout: HEADER_TIMEOUT_MS + LATE_SLACK_MS + 1000,
    });
    assertClosedAtDeadline(r, r.firstSentAt, HEADER_TIMEOUT_MS, 'the first header byte');
    assert.equal(r.responses.length, 1, `a 408 before the close: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 408, 'request_timeout');
});

test('a slow head completed within the deadline is served', opts, async () => {
    const chunks = ['GET /hea', 'lth HTTP/1.1\r\nHost: 127', '.0.0.1\r\nConnection: close\r\n\r\n'];
    const r = await rawExchange(srv.port, chunks, { delays: HEADER_TIMEOUT_MS / 4, timeout: 5000 });
    assert.equal(r.responses[0]?.status, 200, JSON.stringify(r.text));
});

test('the header deadline restarts with each request on a keep-alive connection', opts, async (t) => {
    const conn = await connect(srv.port, t);
    assert.equal((await conn.request({ path: '/health' })).status, 200);
    // Idle for longer than the header deadline between requests: only the keep-alive timeout applies.
    await delay(HEADER_TIMEOUT_MS * 1.5);
    assert.ok(!conn.closed, 'still open while idle');
    assert.equal((await conn.request({ path: '/health' })).status, 200, 'the second request is not judged by the first one\'s deadline');
});

const BODY_HEAD = 'POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n';

test('a client trickling the body one byte every 200 ms is cut off at the body deadline with 408', opts, async () => {
    const chunks = [BODY_HEAD, ...trickle('[' + '1,'.repeat(99))]; // fewer than the 200 bytes announced
    const r = await rawExchange(srv.port, chunks, { delays: TRICKLE_INTERVAL_MS, readUntilClose: true, timeout: BODY_TIMEOUT_MS + LATE_SLACK_MS + 1000 });
    assertClosedAtDeadline(r, r.sentAt[0], BODY_TIMEOUT_MS, 'the end of the head');
    assert.ok(r.chunksSent < chunks.length, 'the client was cut off before it finished');
    assert.equal(r.responses.length, 1, `a 408 before the close: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 408, 'request_timeout');
});

test('a client that sends part of the body and goes silent gets 408 at the body deadline', opts, async () => {
    const r = await rawExchange(srv.port, [BODY_HEAD + '[1,2,3'], { readUntilClose: true, timeout: BODY_TIMEOUT_MS + LATE_SLACK_MS + 1000 });
    assertClosedAtDeadline(r, r.sentAt[0], BODY_TIMEOUT_MS, 'the end of the head');
    assert.equal(r.responses.length, 1, `a 408 before the close: ${JSON.stringify(r.text)}`);
    assertJsonError(r.responses[0], 408, 'request_timeout');
});
