// fleetd demo against the real daemon: it sets up the demo fleet, partner and token, prints the map's
// URL, and its simulated vehicles reach the fleet's status through signed ingest; a second run changes
// nothing; it waits for a daemon that is not up yet and honours Retry-After.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import {
    createDatabase,
    delay,
    describeRun,
    get,
    migrate,
    runFleetd,
    startFleetd,
    TEST_TIMEOUT_MS,
    tempDir,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const URL_RE = /^http:\/\/127\.0\.0\.1:(\d+)\/#token=(fl_[A-Za-z0-9_-]{43})&fleet=demo-harbor$/;

/** `fleetd demo ARGS` against the daemon at port, token kept in dir; resolves when it exits. */
function demo(db, dir, port, args = [], env = {}) {
    return runFleetd(['demo', '--url', `http://127.0.0.1:${port}`, ...args], {
        databaseUrl: db.url,
        env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_DATA_DIR: dir, ...env },
        timeoutMs: 60_000,
    });
}

/** The map URL the run printed: stdout is that one line. Returns {port, token}. */
function printedUrl(run) {
    const lines = run.stdout.trim().split('\n');
    assert.equal(lines.length, 1, `stdout is the URL alone:\n${describeRun(run)}`);
    const m = URL_RE.exec(lines[0]);
    assert.ok(m, `stdout is the map URL with the token and fleet:\n${describeRun(run)}`);
    return { port: Number(m[1]), token: m[2] };
}

/** The JSON log lines of a run (stderr), parsed. */
function logEvents(run) {
    return run.stderr
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l));
}

async function status(port, token) {
    const res = await get(port, '/api/v1/fleets/demo-harbor/status', { Authorization: `Bearer ${token}` });
    assert.equal(res.status, 200, `status: ${res.status} ${res.text}`);
    return res.json;
}

async function setup(t, env = {}) {
    const db = await createDatabase('demo', t);
    await migrate(db);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, ...env } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    return { db, srv, dir: tempDir(t) };
}

/** How many rows of each kind the demo owns. */
async function demoRows(db) {
    const { rows } = await db.query(`
        SELECT (SELECT count(*) FROM fleets WHERE id = 'demo-harbor')::int AS fleets,
               (SELECT count(*) FROM partners WHERE id = 'demo-gps')::int AS partners,
               (SELECT count(*) FROM partner_fleets WHERE partner_id = 'demo-gps' AND fleet_id = 'demo-harbor')::int AS grants,
               (SELECT count(*) FROM partner_secrets WHERE partner_id = 'demo-gps' AND retired_at IS NULL)::int AS secrets,
               (SELECT count(*) FROM tokens WHERE name = 'demo map')::int AS tokens,
               (SELECT count(*) FROM tokens WHERE name = 'demo map' AND revoked_at IS NULL)::int AS live_tokens,
               (SELECT count(*) FROM vehicles WHERE fleet_id = 'demo-harbor')::int AS vehicles`);
    return rows[0];
}

function assertPlausible(v) {
    assert.match(v.vehicle_id, /^demo-[a-z]+-\d{2}$/);
    assert.ok(v.lat > 59.3 && v.lat < 59.36 && v.lng > 18.0 && v.lng < 18.14, `in central Stockholm: ${JSON.stringify(v)}`);
    assert.ok(v.speed_kmh >= 20 && v.speed_kmh <= 60, `speed 20..60 km/h: ${JSON.stringify(v)}`);
    assert.ok(v.heading_deg >= 0 && v.heading_deg < 360, `heading 0 <= h < 360: ${JSON.stringify(v)}`);
    assert.ok(v.accuracy_m > 0 && v.accuracy_m <= 20, `accuracy: ${JSON.stringify(v)}`);
}

test('the demo sets up its fleet, prints the map URL, and its vehicles move on the fleet status', opts, async (t) => {
    const { db, srv, dir } = await setup(t);
    const first = await demo(db, dir, srv.port, ['--duration', '4', '--interval-ms', '500']);
    assert.equal(first.code, 0, describeRun(first));
    const { port, token } = printedUrl(first);
    assert.equal(port, srv.port);

    // the token is kept for the next run, readable by its owner only
    const file = join(dir, 'demo-token');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8'), `${token}\n`);

    const events = logEvents(first).map((e) => e.event);
    assert.ok(events.includes('demo.started') && events.includes('demo.posting') && events.includes('demo.stopped'), events.join(' '));
    const stopped = logEvents(first).find((e) => e.event === 'demo.stopped');
    // 4 s at 500 ms: about 8 batches of 36 (the first goes at once)
    assert.ok(stopped.batches >= 5 && stopped.batches <= 9, JSON.stringify(stopped));
    assert.equal(stopped.fixes, stopped.batches * 36);

    // every batch is durable: the positions are in PostgreSQL
    const { rows } = await db.query(
        `SELECT count(*)::int AS n, count(DISTINCT p.vehicle_id)::int AS vehicles FROM positions p
           JOIN vehicles v ON v.id = p.vehicle_id WHERE v.fleet_id = 'demo-harbor'`,
    );
    assert.equal(rows[0].vehicles, 36);
    assert.equal(rows[0].n, stopped.fixes);

    const s1 = await status(srv.port, token);
    assert.equal(s1.fleet_id, 'demo-harbor');
    assert.equal(s1.vehicle_count, 36);
    assert.equal(s1.vehicles.length, 36);
    assert.equal(new Set(s1.vehicles.map((v) => v.vehicle_id)).size, 36);
    s1.vehicles.forEach(assertPlausible);
    // the token holds this fleet only
    const other = await get(srv.port, '/api/v1/fleets/some-other-fleet/status', { Authorization: `Bearer ${token}` });
    assert.equal(other.status, 404);

    const before = await demoRows(db);
    assert.deepEqual(before, { fleets: 1, partners: 1, grants: 1, secrets: 1, tokens: 1, live_tokens: 1, vehicles: 36 });

    // a second run while we watch: the same URL, nothing new in the database, and the vehicles move on
    const second = demo(db, dir, srv.port, ['--duration', '4', '--interval-ms', '500']);
    const a = await waitFor(
        async () => {
            const s = await status(srv.port, token);
            return s.updated_at > s1.updated_at ? s : null;
        },
        { what: 'the second run to post', timeoutMs: 15_000, intervalMs: 100 },
    );
    await delay(1200);
    const b = await status(srv.port, token);
    assert.ok(b.updated_at > a.updated_at, `${a.updated_at} then ${b.updated_at}`);
    const where = new Map(a.vehicles.map((v) => [v.vehicle_id, v]));
    let moved = 0;
    for (const v of b.vehicles) {
        assertPlausible(v);
        const was = where.get(v.vehicle_id);
        assert.ok(was, v.vehicle_id);
        assert.ok(v.recorded_at > was.recorded_at, `${v.vehicle_id}: ${was.recorded_at} then ${v.recorded_at}`);
        if (v.lat !== was.lat || v.lng !== was.lng) moved++;
        // at most 60 km/h for the time between the two fixes, with slack for rounding
        const seconds = (Date.parse(v.recorded_at) - Date.parse(was.recorded_at)) / 1000;
        const metres = Math.hypot((v.lat - was.lat) * 111_195, (v.lng - was.lng) * 111_195 * Math.cos((v.lat * Math.PI) / 180));
        assert.ok(metres <= (60 / 3.6) * seconds + 1, `${v.vehicle_id} moved ${metres} m in ${seconds} s`);
        assert.ok(metres >= (20 / 3.6) * seconds * 0.5, `${v.vehicle_id} moved only ${metres} m in ${seconds} s`);
    }
    assert.equal(moved, 36);

    const again = await second;
    assert.equal(again.code, 0, describeRun(again));
    assert.deepEqual(printedUrl(again), { port: srv.port, token });
    assert.deepEqual(await demoRows(db), before);
});

test('without its token file the demo makes a new token and revokes the old one', opts, async (t) => {
    const { db, srv, dir } = await setup(t);
    const first = await demo(db, dir, srv.port, ['--setup-only']);
    assert.equal(first.code, 0, describeRun(first));
    const old = printedUrl(first).token;
    assert.equal((await status(srv.port, old)).vehicle_count, 0); // set up, nothing posted

    unlinkSync(join(dir, 'demo-token'));
    const second = await demo(db, dir, srv.port, ['--setup-only']);
    assert.equal(second.code, 0, describeRun(second));
    const fresh = printedUrl(second).token;
    assert.notEqual(fresh, old);
    assert.equal(readFileSync(join(dir, 'demo-token'), 'utf8'), `${fresh}\n`);
    const rows = await demoRows(db);
    assert.equal(rows.tokens, 2);
    assert.equal(rows.live_tokens, 1);
    assert.equal(rows.secrets, 1);
    // the daemon's token cache lasts a few seconds: the revoked token is refused after that
    await waitFor(async () => (await get(srv.port, '/api/v1/fleets/demo-harbor/status', { Authorization: `Bearer ${old}` })).status === 401, {
        what: 'the old demo token to be refused',
        timeoutMs: 15_000,
        intervalMs: 250,
    });
    assert.equal((await status(srv.port, fresh)).fleet_id, 'demo-harbor');

    // a file that holds no token is replaced as well
    writeFileSync(join(dir, 'demo-token'), 'not a token\n', { mode: 0o600 });
    const third = await demo(db, dir, srv.port, ['--setup-only']);
    assert.equal(third.code, 0, describeRun(third));
    assert.notEqual(printedUrl(third).token, fresh);
    assert.equal((await demoRows(db)).live_tokens, 1);
});

test('the demo waits for a daemon that is not up yet', opts, async (t) => {
    const db = await createDatabase('demo_wait', t);
    await migrate(db);
    const dir = tempDir(t);
    const port = await freePort();
    const run = demo(db, dir, port, ['--duration', '9', '--interval-ms', '500']);
    await delay(4000); // past the 3 s in which a daemon starting beside the demo is waited for without a warning
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_LISTEN: `127.0.0.1:${port}` } });
    const done = await run;
    assert.equal(done.code, 0, describeRun(done));
    const events = logEvents(done);
    const waiting = events.find((e) => e.event === 'demo.waiting');
    assert.ok(waiting, describeRun(done));
    assert.match(waiting.message, /not answering yet/);
    assert.ok(events.findIndex((e) => e.event === 'demo.posting') > events.indexOf(waiting), describeRun(done));
    assert.ok(events.find((e) => e.event === 'demo.stopped').batches >= 3, describeRun(done));
    assert.equal((await status(srv.port, printedUrl(done).token)).vehicle_count, 36);
});

test('the demo slows down when the daemon answers 429 with Retry-After', opts, async (t) => {
    // one batch a second, no burst: at 100 ms the demo is over the rate at once
    const { db, srv, dir } = await setup(t, { FLEETD_INGEST_RATE: '1', FLEETD_INGEST_BURST: '1' });
    const run = await demo(db, dir, srv.port, ['--duration', '4', '--interval-ms', '100', '--vehicles', '5']);
    assert.equal(run.code, 0, describeRun(run));
    const events = logEvents(run);
    assert.ok(events.some((e) => e.event === 'demo.waiting' && e.status === 429), describeRun(run));
    const limited = srv.logs.filter((e) => e.event === 'ingest.rejected' && e.reason === 'rate_limited').length;
    const sent = events.find((e) => e.event === 'demo.stopped').batches;
    // honouring Retry-After (1 s) it tries about once a second: a handful of 429s, not ten a second
    assert.ok(sent >= 2 && sent <= 6, `accepted ${sent}`);
    assert.ok(limited >= 1 && limited <= 6, `rate_limited answers: ${limited}`);
});

test('fleetd demo refuses bad usage, a missing master key and the wrong one', opts, async (t) => {
    const db = await createDatabase('demo_usage', t);
    await migrate(db);
    const dir = tempDir(t);
    const help = await runFleetd(['demo', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: fleetd demo/);
    assert.match(help.stdout, /--vehicles N/);

    for (const args of [['--vehicles', '0'], ['--vehicles', '1001'], ['--interval-ms', '50'], ['--duration', 'x'], ['--url', 'https://x:1'], ['--bogus']]) {
        const run = await demo(db, dir, 1, args);
        assert.equal(run.code, 2, `${args.join(' ')}: ${describeRun(run)}`);
        assert.match(run.stderr, /^fleetd: demo: /);
    }
    const nowhere = await runFleetd(['demo', '--setup-only'], { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });
    assert.equal(nowhere.code, 2, describeRun(nowhere));
    assert.match(nowhere.stderr, /FLEETD_DATA_DIR/);

    const nokey = await demo(db, dir, 1, ['--setup-only'], { FLEETD_MASTER_KEY: undefined });
    assert.equal(nokey.code, 1, describeRun(nokey));
    assert.match(nokey.stderr, /master key/i);

    const ok = await demo(db, dir, 1, ['--setup-only']);
    assert.equal(ok.code, 0, describeRun(ok));
    const wrong = await demo(db, dir, 1, ['--setup-only'], { FLEETD_MASTER_KEY: randomBytes(32).toString('hex') });
    assert.equal(wrong.code, 1, describeRun(wrong));
    assert.match(wrong.stderr, /master key does not open/);
    assert.equal(wrong.stdout, '');
    assert.equal((await demoRows(db)).secrets, 1); // nothing was added under the wrong key
});

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}
