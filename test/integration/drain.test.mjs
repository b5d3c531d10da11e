// SIGTERM in the middle of a busy shift (issue 7, "Graceful shutdown"): partners posting signed
// batches, operators subscribed over WebSocket, and a request half sent. fleetd must answer the
// request in flight with /ready 503 "draining", close every WebSocket with 1001, exit 0, and lose
// nothing it acknowledged: every fix that got a 202 is in `positions` once a fleetd runs the
// audit jobs again.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import WebSocket from 'ws';
import {
    Conn,
    createDatabase,
    delay,
    get,
    migrate,
    pgQuery,
    postSigned,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
    withTimeout,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const POSTERS = 4; // concurrent partners' connections
const BATCH = 10; // fixes per batch

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** A joined Phoenix v2 socket on fleet:harbor-1; `closed` resolves with [code, reason]. */
async function subscriber(port, token, ref) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0&token=${token}`);
    const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve([code, reason.toString()])));
    const replied = new Promise((resolve) =>
        ws.on('message', (data) => {
            const frame = JSON.parse(data.toString());
            if (frame[1] === ref && frame[3] === 'phx_reply') resolve(frame[4]);
        }),
    );
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    ws.send(JSON.stringify([ref, ref, 'fleet:harbor-1', 'phx_join', {}]));
    const reply = await withTimeout(replied, 10_000, 'join reply');
    assert.equal(reply.status, 'ok', JSON.stringify(reply));
    return { ws, closed };
}

/**
 * One partner connection's loop: signed batches of new fixes until stopped. Returns what it learnt:
 * the fixes acknowledged (202) and how every other attempt ended. Once fleetd drains, refusals are
 * expected (connection refused, reset, or 503); none of those batches may show up as acknowledged.
 */
async function poster(port, secret, n, state) {
    const acked = [];
    const other = [];
    for (let b = 0; !state.stop; b++) {
        const base = Date.parse('2026-11-23T08:00:00Z') + b * BATCH * 1000;
        const fixes = Array.from({ length: BATCH }, (_, i) => ({
            fleet_id: 'harbor-1',
            vehicle_id: `van-${n}`,
            lat: 59.3 + (b % 100) / 1000,
            lng: 18.07 + i / 1000,
            recorded_at: new Date(base + i * 1000).toISOString(),
        }));
        try {
            const res = await postSigned(port, { partner: 'acme', secret, body: { fixes } });
            if (res.status === 202) acked.push(...fixes);
            else other.push(`${res.status} ${res.text.slice(0, 120)}`);
        } catch (err) {
            other.push(err.code ?? err.message);
            if (state.terminated) break; // the listener is gone for good
            await delay(5);
        }
    }
    return { acked, other };
}

test('SIGTERM under ingest load: the request in flight sees /ready 503 draining, every WebSocket gets 1001, every 202 is stored', opts, async (t) => {
    const db = await createDatabase('drain', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    const token = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'anna']);
    const env = { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_INGEST_RATE: '100000', FLEETD_SHUTDOWN_TIMEOUT: '20s' };
    const srv = await startFleetd({ t, databaseUrl: db.url, env });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });

    const subs = [];
    for (let i = 1; i <= 3; i++) subs.push(await subscriber(srv.port, token, String(i)));
    const half = await Conn.open(srv.port);
    t.after(() => half.destroy());
    await half.write('GET /ready HTTP/1.1\r\nHost: fleetd\r\n');

    const state = { stop: false, terminated: false };
    const posters = Array.from({ length: POSTERS }, (_, n) => poster(srv.port, secret, n, state));
    await waitFor(
        async () => {
            const { rows } = await pgQuery(db.url, "SELECT count(*)::int AS count FROM jobs WHERE queue = 'audit'");
            const [{ count }] = rows;
            return count >= 20;
        },
        { what: '20 acknowledged batches before SIGTERM', timeoutMs: 30_000, intervalMs: 100 },
    );

    const stopped = srv.stop();
    await srv.waitForLog('fleetd.draining');
    state.terminated = true;
    await half.write('\r\n');
    const [ready] = await half.readResponses(1, { timeoutMs: 10_000 });
    assert.equal(ready.status, 503, ready.text);
    assert.ok(ready.json.reasons.some((r) => /drain/i.test(r)), ready.text);
    assert.match(ready.headers.connection ?? '', /close/i);

    const result = await stopped;
    assert.equal(result.code, 0);
    state.stop = true;
    const runs = await Promise.all(posters);
    for (const { closed } of subs) {
        const [code, reason] = await withTimeout(closed, 5000, 'close frame');
        assert.equal(code, 1001, reason);
    }
    const acked = runs.flatMap((r) => r.acked);
    const refused = runs.flatMap((r) => r.other);
    assert.ok(acked.length >= 20 * BATCH, `acknowledged ${acked.length} fixes`);
    for (const why of refused) assert.match(why, /^(503 |ECONNREFUSED|ECONNRESET|EPIPE|connection closed|write failed)/, `unexpected outcome: ${why}`);

    // A new fleetd runs whatever audit jobs the first left; then every acknowledged fix is stored.
    const again = await startFleetd({ t, databaseUrl: db.url, env });
    const want = new Set(acked.map((f) => `${f.vehicle_id}@${Date.parse(f.recorded_at)}`));
    let stored = new Set();
    await waitFor(
        async () => {
            const { rows } = await pgQuery(
                db.url,
                "SELECT vehicle_id, (extract(epoch FROM recorded_at) * 1000)::bigint AS ms FROM positions WHERE fleet_id = 'harbor-1'",
            );
            stored = new Set(rows.map((r) => `${r.vehicle_id}@${r.ms}`));
            return [...want].every((k) => stored.has(k));
        },
        { what: 'every acknowledged fix in positions', timeoutMs: 30_000, intervalMs: 200 },
    ).catch((err) => {
        const missing = [...want].filter((k) => !stored.has(k));
        throw new Error(`${err.message}: ${missing.length} of ${want.size} missing, e.g. ${missing.slice(0, 5).join(', ')}`);
    });
    await again.stop();
});
