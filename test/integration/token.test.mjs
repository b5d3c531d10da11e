// Operator bearer tokens: `fleetd token create` prints one token and stores only its hash; the
// daemon takes it as `Authorization: Bearer`, answers 401 + WWW-Authenticate without a valid one and
// 404 fleet_not_found for a fleet the token may not see (as for one that does not exist).
// `fleetd token list` shows tokens without their secret; `fleetd token revoke` ends one, in the
// daemon within its token cache's 5 s, or at once on SIGHUP; open WebSockets and event streams of a
// revoked token end at their next heartbeat or keep-alive.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';
import WebSocket from 'ws';
import {
    assertJsonError,
    createDatabase,
    describeRun,
    get,
    migrate,
    runFleetd,
    startFleetd,
    TEST_TIMEOUT_MS,
    UNREACHABLE_DATABASE_URL,
    waitFor,
    withTimeout,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const TOKEN_RE = /^fl_[A-Za-z0-9_-]{43}$/;
const bearer = (token) => ({ Authorization: `Bearer ${token}` });

async function fleetsDb(t) {
    const db = await createDatabase('token', t);
    await migrate(db);
    await db.query(`INSERT INTO fleets (id) VALUES ('harbor-1'), ('harbor-2'), ('other');
                    INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1'), ('ferry-1', 'harbor-2'), ('van-9', 'other')`);
    return db;
}

async function createToken(db, args) {
    const run = await runFleetd(['token', 'create', ...args], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    assert.equal(run.stderr, '', describeRun(run));
    const lines = run.stdout.split('\n');
    assert.deepEqual(lines.slice(1), [''], `the token alone on one line:\n${describeRun(run)}`);
    assert.match(lines[0], TOKEN_RE);
    return lines[0];
}

function oneErrorLine(run) {
    const lines = run.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line on stderr:\n${describeRun(run)}`);
    assert.ok(lines[0].startsWith('fleetd: '), describeRun(run));
    return lines[0];
}

test('fleetd token create prints a token and stores only its SHA-256 with its fleets', opts, async (t) => {
    const db = await fleetsDb(t);
    const scoped = await createToken(db, ['--fleet', 'harbor-1', '--fleet=harbor-2', '--name', 'night shift']);
    const admin = await createToken(db, ['--admin']);
    assert.notEqual(scoped, admin);

    const rows = (await db.query('SELECT id, name, admin, encode(token_hash, \'hex\') AS hash, revoked_at FROM tokens ORDER BY id')).rows;
    assert.equal(rows.length, 2);
    assert.equal(rows[0].hash, createHash('sha256').update(scoped).digest('hex'));
    assert.equal(rows[0].name, 'night shift');
    assert.equal(rows[0].admin, false);
    assert.equal(rows[1].hash, createHash('sha256').update(admin).digest('hex'));
    assert.equal(rows[1].admin, true);
    assert.equal(rows[1].name, null);
    const fleets = (await db.query('SELECT fleet_id FROM token_fleets WHERE token_id = $1 ORDER BY fleet_id', [rows[0].id])).rows;
    assert.deepEqual(fleets.map((r) => r.fleet_id), ['harbor-1', 'harbor-2']);
    // the token itself is nowhere in the database
    const dump = JSON.stringify((await db.query('SELECT * FROM tokens')).rows);
    assert.ok(!dump.includes(scoped.slice(3)) && !dump.includes(admin.slice(3)));
});

test('fleetd token create: an unknown fleet is exit 1 with one line and stores nothing; bad usage is exit 2', opts, async (t) => {
    const db = await fleetsDb(t);
    const unknown = await runFleetd(['token', 'create', '--fleet', 'harbor-1', '--fleet', 'nope'], { databaseUrl: db.url });
    assert.equal(unknown.code, 1, describeRun(unknown));
    assert.match(oneErrorLine(unknown), /no fleet "nope"/);
    assert.equal(unknown.stdout, '');
    assert.equal((await db.query('SELECT count(*)::int AS n FROM tokens')).rows[0].n, 0);

    for (const args of [[], ['--admin', '--fleet', 'harbor-1'], ['--fleet'], ['--fleet', 'bad id'], ['--bogus'], ['revoke'], ['revoke', 'a', 'b'],
        ['revoke', '--admin'], ['revoke', 'x'.repeat(257)], ['list', '--bogus'], ['frobnicate'], ['ls']]) {
        const action = ['revoke', 'list', 'frobnicate', 'ls'].includes(args[0]);
        const run = await runFleetd(['token', ...(action ? args : ['create', ...args])], { databaseUrl: db.url });
        assert.equal(run.code, 2, `${args.join(' ')}:\n${describeRun(run)}`);
        oneErrorLine(run);
        assert.equal(run.stdout, '');
    }
    const down = await runFleetd(['token', 'create', '--admin'], { databaseUrl: UNREACHABLE_DATABASE_URL });
    assert.equal(down.code, 1, describeRun(down));
    assert.match(oneErrorLine(down), /cannot connect to the database/);

    const noAction = await runFleetd(['token'], { databaseUrl: db.url });
    assert.equal(noAction.code, 2, describeRun(noAction));
    assert.match(oneErrorLine(noAction), /expected create, revoke or list/);

    const help = await runFleetd(['token', '--help']);
    assert.equal(help.code, 0, describeRun(help));
    for (const usage of [/fleetd token create/, /fleetd token revoke ID_OR_NAME/, /fleetd token list \[--json\]/]) assert.match(help.stdout, usage);
});

test('bearer tokens on a fleet route: 401 without a valid one, 404 for a fleet the token may not see', opts, async (t) => {
    const db = await fleetsDb(t);
    const scoped = await createToken(db, ['--fleet', 'harbor-1']);
    const admin = await createToken(db, ['--admin']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_SHARDS: '2' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });
    const track = (fleet, vehicle) => `/api/v1/fleets/${fleet}/vehicles/${vehicle}/track`;

    const missing = await get(srv.port, track('harbor-1', 'truck-17'));
    assertJsonError(missing, 401, 'unauthorized');
    assert.equal(missing.headers['www-authenticate'], 'Bearer');

    const forged = 'fl_' + 'A'.repeat(43);
    for (const headers of [bearer(forged), bearer('not-a-token'), bearer(scoped + 'x'), { Authorization: `Basic ${scoped}` }]) {
        const res = await get(srv.port, track('harbor-1', 'truck-17'), headers);
        assertJsonError(res, 401, 'unauthorized');
        assert.match(res.headers['www-authenticate'], /^Bearer\b/);
    }

    // the scheme is case-insensitive
    assert.equal((await get(srv.port, track('harbor-1', 'truck-17'), { Authorization: `bearer ${scoped}` })).status, 200);
    assert.equal((await get(srv.port, track('harbor-1', 'truck-17'), bearer(scoped))).status, 200);
    // another fleet, and a fleet that does not exist: the same answer
    const other = await get(srv.port, track('other', 'van-9'), bearer(scoped));
    assertJsonError(other, 404, 'fleet_not_found');
    const none = await get(srv.port, track('no-such-fleet', 'x'), bearer(scoped));
    assertJsonError(none, 404, 'fleet_not_found');
    assert.equal(other.json.error.message.replace('other', 'F'), none.json.error.message.replace('no-such-fleet', 'F'));

    // an admin token sees every fleet that exists
    assert.equal((await get(srv.port, track('other', 'van-9'), bearer(admin))).status, 200);
    assertJsonError(await get(srv.port, track('no-such-fleet', 'x'), bearer(admin)), 404, 'fleet_not_found');

    // a revoked token stops working once the short cache (5 s) has let it go
    const revokedAt = Date.now();
    const revoke = await runFleetd(['token', 'revoke', (await tokenRow(db, scoped)).id], { databaseUrl: db.url });
    assert.equal(revoke.code, 0, describeRun(revoke));
    const deadline = Date.now() + 8000;
    let status;
    do {
        status = (await get(srv.port, track('harbor-1', 'truck-17'), bearer(scoped))).status;
    } while (status === 200 && Date.now() < deadline && (await new Promise((r) => setTimeout(r, 200, true))));
    assert.equal(status, 401);
    assert.ok(Date.now() - revokedAt < 7000, `refused ${Date.now() - revokedAt} ms after the revocation`);
});

async function tokenRow(db, token) {
    const rows = (await db.query('SELECT * FROM tokens WHERE token_hash = sha256($1::bytea)', [Buffer.from(token)])).rows;
    assert.equal(rows.length, 1);
    return rows[0];
}

test('fleetd token list: id, name, admin, fleets, created, revoked; never a token or its hash', opts, async (t) => {
    const db = await fleetsDb(t);
    const empty = await runFleetd(['token', 'list'], { databaseUrl: db.url });
    assert.equal(empty.code, 0, describeRun(empty));
    assert.equal(empty.stdout, 'no tokens\n');
    assert.deepEqual(JSON.parse((await runFleetd(['token', 'list', '--json'], { databaseUrl: db.url })).stdout), { tokens: [] });

    const scoped = await createToken(db, ['--fleet', 'harbor-2', '--fleet', 'harbor-1', '--name', 'night shift']);
    const admin = await createToken(db, ['--admin']);
    const odd = await createToken(db, ['--fleet', 'other', '--name', 'line\nbreak']);
    const revoke = await runFleetd(['token', 'revoke', 'night shift'], { databaseUrl: db.url });
    assert.equal(revoke.code, 0, describeRun(revoke));
    const rows = (await db.query(`SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created,
        to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS revoked, encode(token_hash, 'hex') AS hash
        FROM tokens ORDER BY id`)).rows;

    const json = await runFleetd(['token', 'list', '--json'], { databaseUrl: db.url });
    assert.equal(json.code, 0, describeRun(json));
    assert.deepEqual(JSON.parse(json.stdout), {
        tokens: [
            { id: Number(rows[0].id), name: 'night shift', admin: false, fleets: ['harbor-1', 'harbor-2'], created_at: rows[0].created, revoked_at: rows[0].revoked },
            { id: Number(rows[1].id), name: null, admin: true, fleets: [], created_at: rows[1].created, revoked_at: null },
            { id: Number(rows[2].id), name: 'line\nbreak', admin: false, fleets: ['other'], created_at: rows[2].created, revoked_at: null },
        ],
    });
    assert.match(rows[0].revoked, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const table = await runFleetd(['token', 'list'], { databaseUrl: db.url });
    assert.equal(table.code, 0, describeRun(table));
    const lines = table.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 4, `a header and one line per token (a name's line break is not printed):\n${table.stdout}`);
    assert.match(lines[0], /^ID\s+ADMIN\s+CREATED\s+REVOKED\s+FLEETS\s+NAME$/);
    assert.match(lines[1], new RegExp(`^${rows[0].id}\\s+no\\s+${rows[0].created}\\s+${rows[0].revoked}\\s+harbor-1,harbor-2\\s+night shift$`));
    assert.match(lines[2], new RegExp(`^${rows[1].id}\\s+yes\\s+${rows[1].created}\\s+-\\s+\\(all\\)\\s+-$`));
    assert.match(lines[3], /\sother\s+line\?break$/);
    for (const out of [json.stdout, table.stdout]) {
        for (const secret of [scoped, admin, odd]) assert.ok(!out.includes(secret.slice(3, 20)), 'no token in the listing');
        for (const r of rows) assert.ok(!out.includes(r.hash.slice(0, 16)), 'no hash in the listing');
    }
});

test('fleetd token revoke: by id or name, once; unknown and ambiguous names are one line and exit 1', opts, async (t) => {
    const db = await fleetsDb(t);
    const a = await createToken(db, ['--fleet', 'harbor-1', '--name', 'desk']);
    const b = await createToken(db, ['--fleet', 'harbor-2', '--name', 'desk']);
    const c = await createToken(db, ['--admin', '--name', 'ops']);
    const [ra, rb, rc] = [await tokenRow(db, a), await tokenRow(db, b), await tokenRow(db, c)];
    const revoke = (what) => runFleetd(['token', 'revoke', String(what)], { databaseUrl: db.url });

    const unknown = await revoke('nobody');
    assert.equal(unknown.code, 1, describeRun(unknown));
    assert.match(oneErrorLine(unknown), /^fleetd: token revoke: no token with the id or name "nobody" \(see fleetd token list\)$/);
    const unknownId = await revoke('999999');
    assert.equal(unknownId.code, 1, describeRun(unknownId));
    oneErrorLine(unknownId);

    const ambiguous = await revoke('desk');
    assert.equal(ambiguous.code, 1, describeRun(ambiguous));
    assert.match(oneErrorLine(ambiguous), new RegExp(`"desk" names 2 live tokens \\(ids ${ra.id}, ${rb.id}\\); give the id`));
    assert.equal((await db.query('SELECT count(*)::int AS n FROM tokens WHERE revoked_at IS NOT NULL')).rows[0].n, 0, 'nothing revoked');

    const byId = await revoke(ra.id);
    assert.equal(byId.code, 0, describeRun(byId));
    assert.equal(byId.stdout, `token ${ra.id} revoked; running daemons refuse it within 5 s (at once after SIGHUP)\n`);
    const first = (await tokenRow(db, a)).revoked_at;
    assert.ok(first instanceof Date);
    // now "desk" names one live token
    const byName = await revoke('desk');
    assert.equal(byName.code, 0, describeRun(byName));
    assert.match(byName.stdout, new RegExp(`^token ${rb.id} revoked`));
    // again: nothing changes, and it says so
    const twice = await revoke(ra.id);
    assert.equal(twice.code, 0, describeRun(twice));
    assert.match(twice.stdout, new RegExp(`^token ${ra.id} was already revoked at \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\n$`));
    assert.equal((await tokenRow(db, a)).revoked_at.getTime(), first.getTime(), 'the first revocation time stays');
    const desk = await revoke('desk');
    assert.equal(desk.code, 0, describeRun(desk));
    assert.match(desk.stdout, /was already revoked/);
    assert.equal((await tokenRow(db, c)).revoked_at, null, 'the others untouched');
    assert.equal(rc.revoked_at, null);
});

test('SIGHUP makes a revocation take effect at once on every shard', opts, async (t) => {
    const db = await fleetsDb(t);
    const scoped = await createToken(db, ['--fleet', 'harbor-1', '--name', 'desk']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_SHARDS: '2' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });
    const path = '/api/v1/fleets/harbor-1/vehicles/truck-17/track';
    // each request comes on a new connection: the kernel spreads them over both shards' caches
    for (let i = 0; i < 20; i++) assert.equal((await get(srv.port, path, bearer(scoped))).status, 200);

    const revoke = await runFleetd(['token', 'revoke', 'desk'], { databaseUrl: db.url });
    assert.equal(revoke.code, 0, describeRun(revoke));
    // still cached: this is what SIGHUP is for
    assert.equal((await get(srv.port, path, bearer(scoped))).status, 200, 'the cached verdict stands until SIGHUP or 5 s');
    srv.child.kill('SIGHUP');
    await srv.waitForLog('fleetd.reloaded');
    for (let i = 0; i < 20; i++) {
        const res = await get(srv.port, path, bearer(scoped));
        assertJsonError(res, 401, 'unauthorized');
        assert.equal(res.headers['www-authenticate'], 'Bearer error="invalid_token"');
    }
});

test('a revoked token ends its live sessions: the WebSocket at its next heartbeat (1008), the event stream at its next keep-alive', opts, async (t) => {
    const db = await fleetsDb(t);
    const desk = await createToken(db, ['--fleet', 'harbor-1', '--name', 'desk']);
    const keep = await createToken(db, ['--fleet', 'harbor-1', '--name', 'keep']);
    const srv = await startFleetd({ t, databaseUrl: db.url });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });

    const joined = async (token) => {
        const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket/websocket?vsn=2.0.0&token=${token}`);
        const frames = [];
        ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
        const closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve([code, reason.toString()])));
        await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
        ws.send(JSON.stringify(['1', '1', 'fleet:harbor-1', 'phx_join', {}]));
        await waitFor(() => frames.some((f) => f[1] === '1' && f[4]?.status === 'ok'), { what: 'join ok' });
        t.after(() => ws.terminate());
        return { ws, frames, closed, heartbeat: (ref) => ws.send(JSON.stringify([null, ref, 'phoenix', 'heartbeat', {}])) };
    };
    const revoked = await joined(desk);
    const kept = await joined(keep);
    const stream = await new Promise((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port: srv.port, path: '/api/v1/fleets/harbor-1/events', headers: bearer(desk) }, (res) => {
            res.setEncoding('utf8');
            res.on('data', () => {});
            resolve({ res, ended: new Promise((done) => res.once('close', () => done(Date.now()))) });
        });
        req.once('error', reject);
        t.after(() => req.destroy());
    });
    assert.equal(stream.res.statusCode, 200);

    // before the revocation a heartbeat changes nothing
    revoked.heartbeat('2');
    await waitFor(() => revoked.frames.some((f) => f[1] === '2'), { what: 'heartbeat reply' });
    assert.equal(revoked.ws.readyState, WebSocket.OPEN);

    const run = await runFleetd(['token', 'revoke', 'desk'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    srv.child.kill('SIGHUP'); // the caches forget at once (else within 5 s)
    await srv.waitForLog('fleetd.reloaded');
    const revokedAt = Date.now();
    revoked.heartbeat('3');
    kept.heartbeat('3');
    assert.deepEqual(await withTimeout(revoked.closed, 5000, 'the revoked socket to close'), [1008, 'token revoked']);
    await waitFor(() => kept.frames.some((f) => f[1] === '3'), { what: 'the other token\'s heartbeat reply' });
    assert.equal(kept.ws.readyState, WebSocket.OPEN, 'another token\'s socket stays');

    const endedAt = await withTimeout(stream.ended, 20_000, 'the revoked event stream to end (keep-alive every 15 s)');
    assert.ok(endedAt - revokedAt <= 16_000, `ended ${endedAt - revokedAt} ms after the revocation`);
    assertJsonError(await get(srv.port, '/api/v1/fleets/harbor-1/events', bearer(desk)), 401, 'unauthorized');
    await srv.waitForLog((e) => e.event === 'live.token_revoked' && /event stream/.test(e.message));
});
