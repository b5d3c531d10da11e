// A slow operator never slows ingest or the others (issue 6, "Fan-out"): while a fast phoenix
// client receives every position in seq order, a subscriber that stops reading gets only the
// latest position per vehicle once it reads again (coalesced, seq still increasing), and one that
// falls too far behind is closed with 1008 and a reason.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Socket } from 'phoenix';
import WebSocket from 'ws';
import {
    createDatabase,
    get,
    migrate,
    postSigned,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
    withTimeout,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const SMALL = 100; // vehicles of harbor-1: a backed-up subscriber keeps up to 100 waiting: fine
const LARGE = 300; // vehicles of harbor-2: more than FLEETD_LIVE_BEHIND_VEHICLES: closed
const ROUNDS = 40; // every vehicle of both fleets moves this many times

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** A raw v2 client that joins topic and then stops reading its socket. */
async function stalledSubscriber(port, token, topic) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0&token=${token}`);
    const frames = [];
    let closed = null;
    const closedP = new Promise((resolve) =>
        ws.on('close', (code, reason) => {
            closed = { code, reason: reason.toString() };
            resolve(closed);
        }),
    );
    ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]));
    await waitFor(() => frames.some((f) => f[1] === '1'), { what: `join ${topic}` });
    const reply = frames.find((f) => f[1] === '1');
    assert.equal(reply[4].status, 'ok', JSON.stringify(reply));
    ws.pause(); // the kernel's buffers fill, then fleetd's output bound, then coalescing
    return { ws, frames, reply, closedP, closed: () => closed };
}

test('a stalled subscriber is coalesced, one far behind is closed, a fast one gets everything', opts, async (t) => {
    const db = await createDatabase('slow', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    await cli(db, ['fleet', 'create', 'harbor-2']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet', 'harbor-2']);
    const token = await cli(db, ['token', 'create', '--admin', '--name', 'ops']);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: {
            FLEETD_MASTER_KEY: MASTER_KEY,
            FLEETD_INGEST_RATE: '100000',
            FLEETD_INGEST_BURST: '100000',
            FLEETD_WS_OUTPUT_MAX: '64KiB',
            FLEETD_LIVE_BEHIND_VEHICLES: '200',
            FLEETD_LIVE_BEHIND_TIMEOUT: '10m',
            FLEETD_LIVE_SNDBUF: '16KiB',
        },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });

    // the fast operator: the official client, reading everything
    const fast = new Socket(`ws://127.0.0.1:${srv.port}/socket`, { params: { token }, transport: WebSocket });
    fast.connect();
    t.after(() => fast.disconnect());
    const channel = fast.channel('fleet:harbor-1', {});
    const seen = [];
    channel.on('position', (p) => seen.push(p));
    const first = await withTimeout(
        new Promise((resolve, reject) => channel.join().receive('ok', resolve).receive('error', reject)),
        10_000,
        'fast join',
    );

    const slow = await stalledSubscriber(srv.port, token, 'fleet:harbor-1');
    const far = await stalledSubscriber(srv.port, token, 'fleet:harbor-2');
    t.after(() => {
        slow.ws.terminate();
        far.ws.terminate();
    });

    // ingest: every round moves each vehicle of both fleets; every batch is acknowledged
    const base = Date.now() - 3_600_000;
    for (let round = 0; round < ROUNDS; round++) {
        const fixes = [];
        const at = new Date(base + round * 1000).toISOString();
        for (let v = 0; v < SMALL; v++) fixes.push({ fleet_id: 'harbor-1', vehicle_id: `s-${v}`, lat: round, lng: v / 10, recorded_at: at });
        for (let v = 0; v < LARGE; v++) fixes.push({ fleet_id: 'harbor-2', vehicle_id: `l-${v}`, lat: round, lng: v / 10, recorded_at: at });
        const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes } });
        assert.equal(res.status, 202, `round ${round}: ${res.text}`);
    }

    // the fast one: every position of harbor-1, in seq order, none missing
    const total = SMALL * ROUNDS;
    await waitFor(() => seen.length >= total, { what: `fast subscriber: ${total} positions (have ${seen.length})`, timeoutMs: 30_000 });
    assert.equal(seen.length, total);
    seen.forEach((p, i) => assert.equal(p.seq, first.seq + 1 + i, `position ${i}`));

    // the one far behind: closed with 1008 and a reason once more than 200 vehicles waited
    const closed = await withTimeout(
        (async () => {
            far.ws.resume();
            return far.closedP;
        })(),
        20_000,
        'the far-behind subscriber is closed',
    );
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /behind/);

    // the stalled one that was not too far: reading again, it gets the latest of every vehicle,
    // with gaps (coalesced) but seq strictly increasing
    slow.ws.resume();
    const latestSeq = first.seq + total;
    await waitFor(() => slow.frames.some((f) => f[3] === 'position' && f[4].seq === latestSeq), {
        what: 'the stalled subscriber catches up to the last seq',
        timeoutMs: 20_000,
    });
    const got = slow.frames.filter((f) => f[3] === 'position').map((f) => f[4]);
    for (let i = 1; i < got.length; i++) assert.ok(got[i].seq > got[i - 1].seq, `seq increases at ${i}`);
    assert.ok(got.length < total, `coalesced: ${got.length} of ${total} positions`);
    const last = new Map();
    for (const p of got) last.set(p.vehicle_id, p);
    assert.equal(last.size, SMALL, 'every vehicle');
    for (const p of last.values()) assert.equal(p.lat, ROUNDS - 1, `${p.vehicle_id} ends at its latest position`);
    assert.equal(slow.closed(), null, 'the slow (not far behind) subscriber stays connected');
});
