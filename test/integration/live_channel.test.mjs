// Live positions over Phoenix Channels v2 (CONTRACT.md "Live") with the official `phoenix` npm
// client, unchanged: join with a snapshot, a signed ingest arriving as a `position` event, a
// disconnect, missed positions, a rejoin with last_seq that replays exactly the missed ones,
// refusals, heartbeats, Presence, and the raw frames for what the client library hides.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Presence, Socket } from 'phoenix';
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

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** Fleets harbor-1 and harbor-2, partner acme writing both, tokens, and a running fleetd. */
async function setup(t, env = {}) {
    const db = await createDatabase('live', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    await cli(db, ['fleet', 'create', 'harbor-2']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet', 'harbor-2']);
    const anna = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'anna']);
    const bo = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'bo']);
    const other = await cli(db, ['token', 'create', '--fleet', 'harbor-2', '--name', 'other']);
    const admin = await cli(db, ['token', 'create', '--admin', '--name', 'root']);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_INGEST_RATE: '1000', ...env },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    return { db, srv, secret, tokens: { anna, bo, other, admin } };
}

let minute = 0;
/** A signed batch of fixes for harbor-1 (or fleet), each a new recorded_at so none is stale. */
async function ingest(env, fixes, fleet = 'harbor-1') {
    const base = Date.now() - 3_600_000 + ++minute * 1000;
    const body = {
        fixes: fixes.map((f, i) => ({
            fleet_id: fleet,
            recorded_at: new Date(base + i).toISOString(),
            speed_kmh: 30,
            heading_deg: 90,
            ...f,
        })),
    };
    const res = await postSigned(env.srv.port, { partner: 'acme', secret: env.secret, body });
    assert.equal(res.status, 202, res.text);
}

/** A phoenix Socket to the server, with the `ws` package as its WebSocket (node has none of its own). */
function socketTo(env, token) {
    const params = token === undefined ? {} : { token };
    const socket = new Socket(`ws://127.0.0.1:${env.srv.port}/socket`, {
        params,
        transport: WebSocket,
        reconnectAfterMs: () => 100,
        rejoinAfterMs: () => 100,
        heartbeatIntervalMs: 1000,
    });
    socket.connect();
    return socket;
}

/** Joins channel; resolves with the reply's response, rejects with the error response. */
function join(channel) {
    return withTimeout(
        new Promise((resolve, reject) => {
            channel
                .join()
                .receive('ok', resolve)
                .receive('error', (e) => reject(Object.assign(new Error(`join refused: ${JSON.stringify(e)}`), { response: e })))
                .receive('timeout', () => reject(new Error('join timed out')));
        }),
        10_000,
        'join',
    );
}

/** Collects `position` events of a channel. */
function collect(channel) {
    const positions = [];
    channel.on('position', (p) => positions.push(p));
    return positions;
}

test('the phoenix client joins, gets a snapshot, a position, and after a rejoin exactly the missed ones', opts, async (t) => {
    const env = await setup(t);
    await ingest(env, [{ vehicle_id: 'truck-1', lat: 59.3, lng: 18.0 }]);
    // the fix is shown live once durable: wait until the status read has it
    await waitFor(async () => {
        const r = await get(env.srv.port, '/api/v1/fleets/harbor-1/status', { Authorization: `Bearer ${env.tokens.anna}` });
        return r.status === 200 && r.json.vehicle_count === 1;
    }, { what: 'truck-1 in status' });

    let lastSeq = null;
    const socket = socketTo(env, env.tokens.anna);
    const channel = socket.channel('fleet:harbor-1', () => (lastSeq === null ? {} : { last_seq: lastSeq }));
    const positions = collect(channel);
    const snapshot = await join(channel);
    assert.equal(snapshot.fleet_id, 'harbor-1');
    assert.equal(typeof snapshot.seq, 'number');
    assert.deepEqual(snapshot.vehicles.map((v) => v.vehicle_id), ['truck-1']);
    assert.equal(snapshot.vehicles[0].lat, 59.3);
    lastSeq = snapshot.seq;
    channel.on('position', (p) => (lastSeq = p.seq));

    await ingest(env, [{ vehicle_id: 'truck-1', lat: 59.31, lng: 18.01 }]);
    await waitFor(() => positions.length === 1, { what: 'the live position' });
    assert.equal(positions[0].vehicle_id, 'truck-1');
    assert.equal(positions[0].lat, 59.31);
    assert.equal(positions[0].speed_kmh, 30);
    assert.equal(positions[0].seq, snapshot.seq + 1);

    // away: the socket is gone while three positions happen
    socket.disconnect();
    await waitFor(() => !socket.isConnected(), { what: 'disconnect' });
    await ingest(env, [
        { vehicle_id: 'truck-1', lat: 59.32, lng: 18.02 },
        { vehicle_id: 'truck-2', lat: 59.4, lng: 18.1 },
        { vehicle_id: 'truck-3', lat: 59.5, lng: 18.2 },
    ]);
    await waitFor(async () => {
        const r = await get(env.srv.port, '/api/v1/fleets/harbor-1/status', { Authorization: `Bearer ${env.tokens.anna}` });
        return r.json.vehicle_count === 3;
    }, { what: 'the missed fixes in status' });

    // back: a new socket, the same channel params (last_seq), a replay of exactly the missed three
    const seenBefore = lastSeq;
    const socket2 = socketTo(env, env.tokens.anna);
    t.after(() => socket2.disconnect());
    const channel2 = socket2.channel('fleet:harbor-1', () => ({ last_seq: seenBefore }));
    const replayed = collect(channel2);
    const reply = await join(channel2);
    assert.deepEqual(reply, { fleet_id: 'harbor-1', seq: seenBefore + 3, replayed: 3 });
    await waitFor(() => replayed.length === 3, { what: 'three replayed positions' });
    assert.deepEqual(replayed.map((p) => p.seq), [seenBefore + 1, seenBefore + 2, seenBefore + 3]);
    assert.deepEqual(replayed.map((p) => p.vehicle_id), ['truck-1', 'truck-2', 'truck-3']);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(replayed.length, 3, 'nothing more than the missed ones');

    // live again after the replay
    await ingest(env, [{ vehicle_id: 'truck-2', lat: 59.41, lng: 18.11 }]);
    await waitFor(() => replayed.length === 4, { what: 'a live position after the replay' });
    assert.equal(replayed[3].seq, seenBefore + 4);

    // a last_seq that is long gone (or from a previous run of the tracker) gets a fresh snapshot
    const socket3 = socketTo(env, env.tokens.anna);
    t.after(() => socket3.disconnect());
    const fresh = await join(socket3.channel('fleet:harbor-1', { last_seq: 1 }));
    assert.equal(fresh.seq, seenBefore + 4);
    assert.deepEqual(fresh.vehicles.map((v) => v.vehicle_id), ['truck-1', 'truck-2', 'truck-3']);
    assert.equal(fresh.vehicles.find((v) => v.vehicle_id === 'truck-2').lat, 59.41);
});

test('joins are refused as the contract says: unauthorized, not_found, unmatched topic', opts, async (t) => {
    const env = await setup(t);
    const cases = [
        [undefined, 'fleet:harbor-1', 'unauthorized'],
        ['fl_' + 'A'.repeat(43), 'fleet:harbor-1', 'unauthorized'], // well formed, unknown
        [env.tokens.other, 'fleet:harbor-1', 'not_found'], // a fleet the token may not see
        [env.tokens.anna, 'fleet:nope', 'not_found'],
        [env.tokens.admin, 'fleet:nope', 'not_found'], // an admin, but no such fleet
        [env.tokens.anna, 'room:lobby', 'unmatched topic'],
    ];
    for (const [token, topic, reason] of cases) {
        const socket = socketTo(env, token);
        await assert.rejects(join(socket.channel(topic, {})), (e) => {
            assert.deepEqual(e.response, { reason }, `${topic} with ${token ? token.slice(0, 8) : 'no token'}`);
            return true;
        });
        socket.disconnect();
    }
    // an admin token may join any fleet
    const socket = socketTo(env, env.tokens.admin);
    t.after(() => socket.disconnect());
    const ok = await join(socket.channel('fleet:harbor-2', {}));
    assert.deepEqual(ok, { fleet_id: 'harbor-2', seq: ok.seq, vehicle_count: 0, updated_at: null, vehicles: [] });
});

test('Presence: who watches a fleet, keyed by the token name, joins and leaves', opts, async (t) => {
    const env = await setup(t);
    const a = socketTo(env, env.tokens.anna);
    t.after(() => a.disconnect());
    const channelA = a.channel('fleet:harbor-1', {});
    const presence = new Presence(channelA);
    const names = () =>
        presence
            .list((key, { metas }) => `${key}:${metas.length}`)
            .sort()
            .join(',');
    await join(channelA);
    await waitFor(() => names() === 'anna:1', { what: `presence anna (have ${names()})` });

    const b = socketTo(env, env.tokens.bo);
    const channelB = b.channel('fleet:harbor-1', {});
    await join(channelB);
    await waitFor(() => names() === 'anna:1,bo:1', { what: `presence anna and bo (have ${names()})` });

    // a second socket of the same token: one key, two metas
    const a2 = socketTo(env, env.tokens.anna);
    t.after(() => a2.disconnect());
    await join(a2.channel('fleet:harbor-1', {}));
    await waitFor(() => names() === 'anna:2,bo:1', { what: `two metas for anna (have ${names()})` });

    // leave, then a socket that just goes away
    await new Promise((resolve) => channelB.leave().receive('ok', resolve));
    await waitFor(() => names() === 'anna:2', { what: `bo left (have ${names()})` });
    a2.disconnect();
    await waitFor(() => names() === 'anna:1', { what: `the second anna socket closed (have ${names()})` });
    b.disconnect();
});

test('Presence diffs are batched: ten watchers joining at once reach an observer in fewer diffs than joins, every one named', opts, async (t) => {
    const env = await setup(t);
    const observer = await rawSocket(env, `vsn=2.0.0&token=${env.tokens.anna}`);
    t.after(() => observer.ws.terminate());
    observer.send(['1', '1', 'fleet:harbor-1', 'phx_join', {}]);
    await observer.next((f) => f[1] === '1', 'join reply');
    await observer.next((f) => f[3] === 'presence_state', 'presence_state');
    await observer.next((f) => f[3] === 'presence_diff', 'the diff of its own join');

    const watchers = await Promise.all(Array.from({ length: 10 }, () => rawSocket(env, `vsn=2.0.0&token=${env.tokens.bo}`)));
    t.after(() => watchers.forEach((w) => w.ws.terminate()));
    watchers.forEach((w) => w.send(['1', '1', 'fleet:harbor-1', 'phx_join', {}]));
    const joined = new Set();
    let diffs = 0;
    await waitFor(
        () => {
            for (let f; (f = observer.frames.findIndex((x) => x[3] === 'presence_diff')) >= 0; ) {
                const [frame] = observer.frames.splice(f, 1);
                diffs++;
                assert.deepEqual(Object.keys(frame[4].leaves), []);
                for (const meta of frame[4].joins.bo?.metas ?? []) joined.add(meta.phx_ref);
            }
            return joined.size === 10;
        },
        { what: 'ten joins of bo in presence_diff frames' },
    );
    assert.ok(diffs < 10, `${diffs} diffs for 10 joins`);
});

test('Presence: a watcher that joins and leaves within one batch is still reported gone to one that saw it', opts, async (t) => {
    const env = await setup(t);
    const a = await rawSocket(env, `vsn=2.0.0&token=${env.tokens.anna}`);
    const b = await rawSocket(env, `vsn=2.0.0&token=${env.tokens.bo}`);
    t.after(() => [a, b].forEach((s) => s.ws.terminate()));
    a.send(['1', '1', 'fleet:harbor-1', 'phx_join', {}]);
    await a.next((f) => f[1] === '1', 'a joined');
    b.send(['1', '1', 'fleet:harbor-1', 'phx_join', {}]);
    await b.next((f) => f[1] === '1', 'b joined');
    const state = await b.next((f) => f[3] === 'presence_state', "b's presence_state");
    const annaRefs = (state[4].anna?.metas ?? []).map((m) => m.phx_ref);
    assert.equal(annaRefs.length, 1, `b sees anna watching: ${JSON.stringify(state[4])}`);
    a.ws.close(); // most likely within the same 100 ms batch as both joins
    await waitFor(
        () => b.frames.some((f) => f[3] === 'presence_diff' && (f[4].leaves.anna?.metas ?? []).some((m) => m.phx_ref === annaRefs[0])),
        { what: "a presence_diff telling b that anna's connection left" },
    );
});

test('a client X-Request-Id of 128 characters is echoed on the 101 whole (the handshake still completes)', opts, async (t) => {
    const env = await setup(t);
    const id = 'r'.repeat(128);
    const ws = new WebSocket(`ws://127.0.0.1:${env.srv.port}/socket/websocket?vsn=2.0.0&token=${env.tokens.anna}`, { headers: { 'X-Request-Id': id } });
    t.after(() => ws.terminate());
    const upgraded = new Promise((resolve, reject) => {
        ws.once('upgrade', resolve);
        ws.once('error', reject);
    });
    const opened = new Promise((resolve) => ws.once('open', resolve));
    const res = await withTimeout(upgraded, 5000, 'the upgrade');
    assert.equal(res.headers['x-request-id'], id);
    await withTimeout(opened, 5000, 'open');
});

/** A raw WebSocket (the `ws` package) speaking the v2 serializer by hand. */
async function rawSocket(env, query) {
    const ws = new WebSocket(`ws://127.0.0.1:${env.srv.port}/socket/websocket?${query}`);
    const frames = [];
    const waiting = [];
    ws.on('message', (data) => {
        frames.push(JSON.parse(data.toString()));
        for (const w of waiting.splice(0)) w();
    });
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    const next = async (pred, what) => {
        await waitFor(() => frames.some(pred), { what });
        return frames.splice(frames.findIndex(pred), 1)[0];
    };
    return { ws, frames, next, send: (msg) => ws.send(JSON.stringify(msg)) };
}

test('raw frames: heartbeat, join reply shape, phx_leave then phx_close, bad frames close the socket', opts, async (t) => {
    const env = await setup(t);
    const s = await rawSocket(env, `vsn=2.0.0&token=${env.tokens.anna}`);
    t.after(() => s.ws.terminate());

    s.send([null, '1', 'phoenix', 'heartbeat', {}]);
    assert.deepEqual(await s.next((f) => f[1] === '1', 'heartbeat reply'), [null, '1', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);

    s.send(['3', '3', 'fleet:harbor-1', 'phx_join', {}]);
    const reply = await s.next((f) => f[1] === '3', 'join reply');
    assert.deepEqual(reply.slice(0, 4), ['3', '3', 'fleet:harbor-1', 'phx_reply']);
    assert.equal(reply[4].status, 'ok');
    assert.equal(reply[4].response.fleet_id, 'harbor-1');
    const state = await s.next((f) => f[3] === 'presence_state', 'presence_state');
    assert.equal(state[0], '3');
    assert.deepEqual(Object.keys(state[4]), ['anna']);

    await ingest(env, [{ vehicle_id: 'truck-9', lat: 1.5, lng: 2.5 }]);
    const pos = await s.next((f) => f[3] === 'position', 'a position');
    assert.deepEqual(pos.slice(0, 3), [null, null, 'fleet:harbor-1']);
    assert.equal(pos[4].vehicle_id, 'truck-9');
    assert.equal(pos[4].seq, reply[4].response.seq + 1);

    s.send(['3', '4', 'fleet:harbor-1', 'phx_leave', {}]);
    assert.deepEqual(await s.next((f) => f[1] === '4', 'leave reply'), ['3', '4', 'fleet:harbor-1', 'phx_reply', { status: 'ok', response: {} }]);
    assert.deepEqual(await s.next((f) => f[3] === 'phx_close', 'phx_close'), ['3', '3', 'fleet:harbor-1', 'phx_close', {}]);

    s.send(['5', '5', 'fleet:harbor-1', 'shout', {}]);
    assert.deepEqual((await s.next((f) => f[1] === '5', 'reply to an event on a topic not joined'))[4], {
        status: 'error',
        response: { reason: 'unmatched topic' },
    });

    const closed = new Promise((resolve) => s.ws.once('close', (code, reason) => resolve([code, reason.toString()])));
    s.ws.send('{"not":"an array"}');
    const [code] = await withTimeout(closed, 5000, 'close after a bad frame');
    assert.equal(code, 1008);

    // the v1 serializer is not spoken; a malformed token is refused before the upgrade
    for (const [query, status] of [
        ['vsn=1.0.0', 400],
        ['vsn=2.0.0&token=nope', 401],
    ]) {
        const res = await get(env.srv.port, `/socket/websocket?${query}`, {
            Connection: 'Upgrade',
            Upgrade: 'websocket',
            'Sec-WebSocket-Version': '13',
            'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        });
        assert.equal(res.status, status, query);
    }
});

test('SIGTERM closes every WebSocket with 1001 and fleetd stops well before its shutdown timeout', opts, async (t) => {
    const env = await setup(t, { FLEETD_SHUTDOWN_TIMEOUT: '20s' });
    const sockets = [];
    for (let i = 0; i < 3; i++) {
        const s = await rawSocket(env, `vsn=2.0.0&token=${env.tokens.anna}`);
        s.send([String(i), String(i), 'fleet:harbor-1', 'phx_join', {}]);
        await s.next((f) => f[1] === String(i), 'join reply');
        sockets.push({ s, closed: new Promise((resolve) => s.ws.once('close', (code, reason) => resolve([code, reason.toString()]))) });
    }
    const started = Date.now();
    const result = await env.srv.stop();
    assert.equal(result.code, 0);
    for (const { closed } of sockets) {
        const [code, reason] = await withTimeout(closed, 5000, 'close frame');
        assert.equal(code, 1001, reason);
        assert.match(reason, /shutting down/);
    }
    assert.ok(Date.now() - started < 10_000, `stopped in ${Date.now() - started} ms, not after the 20 s timeout`);
});
