// Operator bearer tokens: `fleetd token create` prints one token and stores only its hash; the
// daemon takes it as `Authorization: Bearer`, answers 401 + WWW-Authenticate without a valid one and
// 404 fleet_not_found for a fleet the token may not see (as for one that does not exist).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
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
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const TOKEN_RE = /^fl_[A-Za-z0-9_-]{43}$/;

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

    for (const args of [[], ['--admin', '--fleet', 'harbor-1'], ['--fleet'], ['--fleet', 'bad id'], ['--bogus'], ['revoke']]) {
        const run = await runFleetd(['token', ...(args[0] === 'revoke' ? args : ['create', ...args])], { databaseUrl: db.url });
        assert.equal(run.code, 2, `${args.join(' ')}:\n${describeRun(run)}`);
        oneErrorLine(run);
        assert.equal(run.stdout, '');
    }
    const down = await runFleetd(['token', 'create', '--admin'], { databaseUrl: UNREACHABLE_DATABASE_URL });
    assert.equal(down.code, 1, describeRun(down));
    assert.match(oneErrorLine(down), /cannot connect to the database/);

    const help = await runFleetd(['token', '--help']);
    assert.equal(help.code, 0, describeRun(help));
    assert.match(help.stdout, /fleetd token create/);
});

test('bearer tokens on a fleet route: 401 without a valid one, 404 for a fleet the token may not see', opts, async (t) => {
    const db = await fleetsDb(t);
    const scoped = await createToken(db, ['--fleet', 'harbor-1']);
    const admin = await createToken(db, ['--admin']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_SHARDS: '2' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });
    const track = (fleet, vehicle) => `/api/v1/fleets/${fleet}/vehicles/${vehicle}/track`;
    const bearer = (token) => ({ Authorization: `Bearer ${token}` });

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
    await db.query('UPDATE tokens SET revoked_at = now() WHERE token_hash = sha256($1::bytea)', [Buffer.from(scoped)]);
    const deadline = Date.now() + 8000;
    let status;
    do {
        status = (await get(srv.port, track('harbor-1', 'truck-17'), bearer(scoped))).status;
    } while (status === 200 && Date.now() < deadline && (await new Promise((r) => setTimeout(r, 200, true))));
    assert.equal(status, 401);
});
