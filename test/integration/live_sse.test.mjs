// Server-Sent Events (CONTRACT.md "Live"): GET /api/v1/fleets/{id}/events with a bearer token or
// ?token=, a snapshot first, positions with id = seq, Last-Event-ID replaying exactly what was
// missed, and the contract's 401/404 before any stream starts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';
import {
    assertJsonError,
    createDatabase,
    get,
    migrate,
    postSigned,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

async function setup(t) {
    const db = await createDatabase('sse', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    await cli(db, ['fleet', 'create', 'harbor-2']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    const token = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'curl']);
    const other = await cli(db, ['token', 'create', '--fleet', 'harbor-2']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    return { srv, secret, token, other };
}

let second = 0;
async function ingest(env, fixes) {
    const base = Date.now() - 3_600_000 + ++second * 1000;
    const body = { fixes: fixes.map((f, i) => ({ fleet_id: 'harbor-1', recorded_at: new Date(base + i).toISOString(), ...f })) };
    const res = await postSigned(env.srv.port, { partner: 'acme', secret: env.secret, body });
    assert.equal(res.status, 202, res.text);
}

/** Opens an event stream; events are parsed as they arrive ({event, id, data}). */
function openStream(port, path, headers = {}) {
    return new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path, headers: { Accept: 'text/event-stream', ...headers } }, (res) => {
            const events = [];
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (chunk) => {
                buf += chunk;
                let end;
                while ((end = buf.indexOf('\n\n')) >= 0) {
                    const block = buf.slice(0, end);
                    buf = buf.slice(end + 2);
                    const ev = {};
                    for (const line of block.split('\n')) {
                        if (line.startsWith(':')) continue;
                        const colon = line.indexOf(':');
                        const field = line.slice(0, colon);
                        const value = line.slice(colon + 1).replace(/^ /, '');
                        ev[field] = field === 'data' ? JSON.parse(value) : value;
                    }
                    if (ev.event) events.push(ev);
                }
            });
            resolve({ res, events, close: () => req.destroy() });
        });
        req.on('error', reject);
    });
}

test('SSE: a snapshot, then positions with id = seq, then Last-Event-ID replays the missed ones', opts, async (t) => {
    const env = await setup(t);
    await ingest(env, [{ vehicle_id: 'van-1', lat: 10, lng: 20 }]);
    const auth = { Authorization: `Bearer ${env.token}` };
    await waitFor(async () => (await get(env.srv.port, '/api/v1/fleets/harbor-1/status', auth)).json.vehicle_count === 1, {
        what: 'van-1 in status',
    });

    const s = await openStream(env.srv.port, '/api/v1/fleets/harbor-1/events', auth);
    t.after(() => s.close());
    assert.equal(s.res.statusCode, 200);
    assert.match(s.res.headers['content-type'], /^text\/event-stream/);
    await waitFor(() => s.events.length >= 1, { what: 'the snapshot event' });
    const snap = s.events[0];
    assert.equal(snap.event, 'snapshot');
    assert.equal(snap.data.fleet_id, 'harbor-1');
    assert.deepEqual(snap.data.vehicles.map((v) => v.vehicle_id), ['van-1']);
    const seq0 = Number(snap.id);
    assert.ok(seq0 > 0);

    await ingest(env, [{ vehicle_id: 'van-1', lat: 10.5, lng: 20.5 }]);
    await waitFor(() => s.events.length >= 2, { what: 'a position event' });
    assert.equal(s.events[1].event, 'position');
    assert.equal(Number(s.events[1].id), seq0 + 1);
    assert.equal(s.events[1].data.seq, seq0 + 1);
    assert.equal(s.events[1].data.lat, 10.5);
    s.close();

    await ingest(env, [
        { vehicle_id: 'van-2', lat: 11, lng: 21 },
        { vehicle_id: 'van-1', lat: 10.6, lng: 20.6 },
    ]);
    await waitFor(async () => (await get(env.srv.port, '/api/v1/fleets/harbor-1/status', auth)).json.vehicle_count === 2, {
        what: 'van-2 in status',
    });

    // curl-style: the token in the query, and the id of the last event seen
    const r = await openStream(env.srv.port, `/api/v1/fleets/harbor-1/events?token=${env.token}`, { 'Last-Event-ID': String(seq0 + 1) });
    t.after(() => r.close());
    assert.equal(r.res.statusCode, 200);
    await waitFor(() => r.events.length >= 2, { what: 'two replayed positions' });
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(
        r.events.map((e) => [e.event, Number(e.id), e.data.vehicle_id]),
        [
            ['position', seq0 + 2, 'van-2'],
            ['position', seq0 + 3, 'van-1'],
        ],
    );
});

test('SSE refusals: 401 without or with a bad token, 404 for a fleet the token may not see, 400 for a bad Last-Event-ID', opts, async (t) => {
    const env = await setup(t);
    const path = '/api/v1/fleets/harbor-1/events';
    let res = await get(env.srv.port, path);
    assertJsonError(res, 401, 'unauthorized');
    assert.equal(res.headers['www-authenticate'], 'Bearer');
    res = await get(env.srv.port, `${path}?token=fl_${'B'.repeat(43)}`);
    assertJsonError(res, 401, 'unauthorized');
    res = await get(env.srv.port, path, { Authorization: `Bearer ${env.other}` });
    assertJsonError(res, 404, 'fleet_not_found');
    res = await get(env.srv.port, '/api/v1/fleets/nope/events', { Authorization: `Bearer ${env.token}` });
    assertJsonError(res, 404, 'fleet_not_found');
    res = await get(env.srv.port, path, { Authorization: `Bearer ${env.token}`, 'Last-Event-ID': 'abc' });
    assertJsonError(res, 400, 'invalid_last_event_id');
});

test('SSE: a client X-Request-Id of 128 characters is echoed whole and the stream starts', opts, async (t) => {
    const env = await setup(t);
    const id = 's'.repeat(128);
    const s = await openStream(env.srv.port, '/api/v1/fleets/harbor-1/events', { Authorization: `Bearer ${env.token}`, 'X-Request-Id': id });
    t.after(() => s.close());
    assert.equal(s.res.statusCode, 200);
    assert.equal(s.res.headers['x-request-id'], id);
    await waitFor(() => s.events.length >= 1, { what: 'the snapshot event' });
    assert.equal(s.events[0].event, 'snapshot');
});
