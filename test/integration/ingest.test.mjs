// Signed ingest (CONTRACT.md "Ingest") against the real binary: batches signed by the reference
// `standardwebhooks` npm package, every row of the contract's status table, rotation, idempotency,
// stale fixes, vehicles bound to their first fleet, and a partner created while fleetd runs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
    assertJsonError,
    createDatabase,
    get,
    migrate,
    request,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** A migrated database with fleets harbor-1 and harbor-2, partner acme writing harbor-1, and a running fleetd. */
async function setup(t, env = {}) {
    const db = await createDatabase('ingest', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    await cli(db, ['fleet', 'create', 'harbor-2']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_JOBS_POLL_INTERVAL: '100ms', ...env },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    return { db, srv, secret };
}

let counter = 0;
function fix(over = {}) {
    return {
        fleet_id: 'harbor-1',
        vehicle_id: 'truck-17',
        lat: 59.3293,
        lng: 18.0686,
        recorded_at: new Date(Date.now() - 60_000).toISOString(),
        speed_kmh: 42.5,
        heading_deg: 270,
        accuracy_m: 5,
        ...over,
    };
}

/** POSTs body (an object or raw string) signed with secret by the reference library. */
async function post(port, { partner = 'acme', secret, body, id, at = new Date(), headers = {}, tamper } = {}) {
    const raw = typeof body === 'string' ? body : JSON.stringify(body);
    const msgId = id ?? `msg_${process.pid}_${++counter}`;
    const signature = secret ? new Webhook(secret).sign(msgId, at, raw) : 'v1,AAAA';
    let h = {
        'Content-Type': 'application/json',
        'webhook-id': msgId,
        'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
        'webhook-signature': signature,
        ...headers,
    };
    let sent = raw;
    if (tamper) ({ headers: h, body: sent } = tamper({ headers: h, body: raw }));
    const res = await request(port, { method: 'POST', path: `/api/v1/ingest/${partner}`, headers: h, body: sent });
    return { res, msgId };
}

async function latest(db, vehicle) {
    const r = await db.query('SELECT lat, recorded_at FROM vehicle_latest WHERE vehicle_id = $1', [vehicle]);
    return r.rows[0];
}

test('202: a batch signed by the standardwebhooks package is stored, once', opts, async (t) => {
    const { db, srv, secret } = await setup(t);
    const body = { fixes: [fix(), fix({ vehicle_id: 'van-2', lat: 59.31, speed_kmh: undefined })] };
    const { res, msgId } = await post(srv.port, { secret, body });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.json, { accepted: 2 });
    // durable when acknowledged: the audit job is committed, with the request as signed
    const job = (await db.query(`SELECT args FROM jobs WHERE unique_key = $1`, [`ingest:acme:${msgId}`])).rows[0];
    assert.ok(job, 'the audit job exists as soon as the 202 is sent');
    assert.equal(job.args.body, JSON.stringify(body));
    // the audit worker stores the fixes and the raw request
    await waitFor(async () => Number((await db.query('SELECT count(*) FROM positions')).rows[0].count) === 2, { what: 'positions' });
    const batch = (await db.query('SELECT body FROM ingest_batches WHERE webhook_id = $1', [msgId])).rows[0];
    assert.equal(batch.body.toString(), JSON.stringify(body));

    // the same webhook-id again: duplicate, nothing stored twice
    const again = await post(srv.port, { secret, body, id: msgId });
    assert.equal(again.res.status, 202, again.res.text);
    assert.deepEqual(again.res.json, { accepted: 2, duplicate: true });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(Number((await db.query('SELECT count(*) FROM positions')).rows[0].count), 2);
    assert.equal(Number((await db.query('SELECT count(*) FROM ingest_batches')).rows[0].count), 1);
});

test('401: a changed byte in the body, the id or the timestamp; an unknown partner answers the same', opts, async (t) => {
    const { srv, secret } = await setup(t);
    const body = { fixes: [fix()] };
    const flip = (s) => s.slice(0, -2) + (s.at(-2) === '1' ? '2' : '1') + s.at(-1);
    const cases = [
        ({ headers, body: b }) => ({ headers, body: b.replace('59.3293', '59.3294') }),
        ({ headers, body: b }) => ({ headers: { ...headers, 'webhook-id': headers['webhook-id'] + 'x' }, body: b }),
        ({ headers, body: b }) => ({ headers: { ...headers, 'webhook-timestamp': String(Number(headers['webhook-timestamp']) - 1) }, body: b }),
        ({ headers, body: b }) => ({ headers: { ...headers, 'webhook-signature': flip(headers['webhook-signature']) }, body: b }),
    ];
    const answers = [];
    for (const tamper of cases) {
        const { res } = await post(srv.port, { secret, body, tamper });
        assertJsonError(res, 401, 'invalid_signature');
        answers.push(res.json.error.message);
    }
    const unknown = await post(srv.port, { partner: 'nobody', secret, body });
    assertJsonError(unknown.res, 401, 'invalid_signature');
    assert.ok(answers.every((m) => m === unknown.res.json.error.message), 'the same words for an unknown partner and a bad signature');
    const missing = await post(srv.port, { secret, body, headers: { 'webhook-signature': '' } });
    assertJsonError(missing.res, 401, 'invalid_signature');
});

test('401 timestamp_out_of_range; 400 invalid_json and invalid_payload; 415; 413 before the body', opts, async (t) => {
    const { srv, secret } = await setup(t);
    const old = await post(srv.port, { secret, body: { fixes: [fix()] }, at: new Date(Date.now() - 301_000) });
    assertJsonError(old.res, 401, 'timestamp_out_of_range');
    const ahead = await post(srv.port, { secret, body: { fixes: [fix()] }, at: new Date(Date.now() + 301_000) });
    assertJsonError(ahead.res, 401, 'timestamp_out_of_range');

    assertJsonError((await post(srv.port, { secret, body: '{"fixes": [' })).res, 400, 'invalid_json');
    assertJsonError((await post(srv.port, { secret, body: { vehicles: [] } })).res, 400, 'invalid_payload');
    assertJsonError((await post(srv.port, { secret, body: { fixes: [] } })).res, 400, 'invalid_payload');

    const text = await post(srv.port, { secret, body: { fixes: [fix()] }, headers: { 'Content-Type': 'text/plain' } });
    assertJsonError(text.res, 415, 'unsupported_media_type');

    // one byte over 1 MiB, refused from its Content-Length alone
    const big = 'x'.repeat(1024 * 1024 + 1);
    const tooBig = await post(srv.port, { secret, body: big });
    assertJsonError(tooBig.res, 413, 'payload_too_large');
});

test('422 invalid_fix lists every problem; nothing of the batch is stored', opts, async (t) => {
    const { db, srv, secret } = await setup(t);
    const body = {
        fixes: [
            fix(),
            fix({ vehicle_id: 'van-2', lat: 91 }),
            fix({ vehicle_id: 'van-3', recorded_at: new Date(Date.now() + 6 * 60_000).toISOString() }),
            fix({ vehicle_id: 'van-4', heading_deg: 360 }),
        ],
    };
    const { res } = await post(srv.port, { secret, body });
    assertJsonError(res, 422, 'invalid_fix');
    const problems = res.json.error.details.map((d) => `${d.index}:${d.field}`).sort();
    assert.deepEqual(problems, ['1:lat', '2:recorded_at', '3:heading_deg']);
    for (const d of res.json.error.details) assert.equal(typeof d.problem, 'string');
    assert.equal(Number((await db.query('SELECT count(*) FROM jobs WHERE queue = $1', ['audit'])).rows[0].count), 0);

    const many = { fixes: Array.from({ length: 1001 }, (_, i) => fix({ vehicle_id: `v-${i}` })) };
    const over = await post(srv.port, { secret, body: many });
    assert.ok([400, 422].includes(over.res.status), `1001 fixes refused: ${over.res.status} ${over.res.text.slice(0, 200)}`);
    const exactly = { fixes: Array.from({ length: 1000 }, (_, i) => fix({ vehicle_id: `v-${i}` })) };
    const ok = await post(srv.port, { secret, body: exactly });
    assert.equal(ok.res.status, 202, ok.res.text.slice(0, 300));
    assert.deepEqual(ok.res.json, { accepted: 1000 });
});

test('403 for another fleet; 422 for a vehicle of another fleet; a stale fix never moves its vehicle back', opts, async (t) => {
    const { db, srv, secret } = await setup(t);
    const other = await post(srv.port, { secret, body: { fixes: [fix({ fleet_id: 'harbor-2' })] } });
    assertJsonError(other.res, 403, 'fleet_not_allowed');

    // truck-17 registers with harbor-1 through its first fix
    const now = Date.now();
    const first = await post(srv.port, { secret, body: { fixes: [fix({ recorded_at: new Date(now - 10_000).toISOString(), lat: 59.5 })] } });
    assert.equal(first.res.status, 202, first.res.text);
    await cli(db, ['partner', 'create', 'globex', '--fleet', 'harbor-2']).then(async (s2) => {
        await waitFor(async () => (await post(srv.port, { partner: 'globex', secret: s2, body: { fixes: [fix({ fleet_id: 'harbor-2', vehicle_id: 'boat-1' })] } })).res.status === 202,
            { what: 'globex accepted (a partner created while fleetd runs)', timeoutMs: 10_000 });
        const stolen = await post(srv.port, { partner: 'globex', secret: s2, body: { fixes: [fix({ fleet_id: 'harbor-2' })] } });
        assertJsonError(stolen.res, 422, 'invalid_fix');
        assert.equal(stolen.res.json.error.details[0].field, 'fleet_id');
    });

    await waitFor(async () => (await latest(db, 'truck-17'))?.lat === 59.5, { what: 'truck-17 stored' });
    const stale = await post(srv.port, { secret, body: { fixes: [fix({ recorded_at: new Date(now - 60_000).toISOString(), lat: 1.5 })] } });
    assert.equal(stale.res.status, 202, stale.res.text);
    await waitFor(async () => Number((await db.query("SELECT count(*) FROM positions WHERE vehicle_id = 'truck-17'")).rows[0].count) === 2,
        { what: 'the stale fix kept in history' });
    assert.equal((await latest(db, 'truck-17')).lat, 59.5, 'the vehicle did not move back');
});

test('rotation: old and new secrets pass, a retired one fails', opts, async (t) => {
    const { db, srv, secret } = await setup(t);
    const newer = await cli(db, ['partner', 'rotate', 'acme']);
    assert.notEqual(newer, secret);
    await waitFor(async () => (await post(srv.port, { secret: newer, body: { fixes: [fix()] } })).res.status === 202,
        { what: 'the new secret accepted after the NOTIFY', timeoutMs: 10_000 });
    assert.equal((await post(srv.port, { secret, body: { fixes: [fix({ vehicle_id: 'van-2' })] } })).res.status, 202);
    await cli(db, ['partner', 'retire', 'acme']);
    await waitFor(async () => (await post(srv.port, { secret, body: { fixes: [fix({ vehicle_id: 'van-3' })] } })).res.status === 401,
        { what: 'the retired secret refused', timeoutMs: 10_000 });
    assert.equal((await post(srv.port, { secret: newer, body: { fixes: [fix({ vehicle_id: 'van-4' })] } })).res.status, 202);
});

test('429 rate_limited with Retry-After past the partner rate', opts, async (t) => {
    const { srv, secret } = await setup(t, { FLEETD_INGEST_RATE: '1', FLEETD_INGEST_BURST: '2' });
    const statuses = [];
    let limited;
    for (let i = 0; i < 4; i++) {
        const { res } = await post(srv.port, { secret, body: { fixes: [fix({ vehicle_id: `r-${i}` })] } });
        statuses.push(res.status);
        if (res.status === 429) limited = res;
    }
    assert.deepEqual(statuses.slice(0, 2), [202, 202]);
    assert.ok(limited, `a 429 among ${statuses}`);
    assertJsonError(limited, 429, 'rate_limited');
    assert.match(limited.headers['retry-after'] ?? '', /^[1-9]\d*$/);
});
