// `fleetd fleet` and `fleetd partner`: fleets, partners and their signing secrets from the command
// line. A secret is printed once, alone on one line, and stored only encrypted; rotation keeps the
// older secrets valid until `retire`; every change notifies fleetd_partners in its transaction so
// running daemons reload; errors are one line and exit 1 (runtime) or 2 (usage).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import {
    createDatabase,
    describeRun,
    migrate,
    pgConfig,
    runFleetd,
    TEST_TIMEOUT_MS,
    UNREACHABLE_DATABASE_URL,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const SECRET_RE = /^whsec_[A-Za-z0-9+/]{43}=$/;
const MASTER_KEY = randomBytes(32).toString('hex');

async function migratedDb(t) {
    const db = await createDatabase('partners_cli', t);
    await migrate(db);
    return db;
}

function fleetd(db, args, env = {}) {
    return runFleetd(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, ...env } });
}

function oneErrorLine(run) {
    const lines = run.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line on stderr:\n${describeRun(run)}`);
    assert.ok(lines[0].startsWith('fleetd: '), describeRun(run));
    return lines[0];
}

async function ok(db, args, env) {
    const run = await fleetd(db, args, env);
    assert.equal(run.code, 0, `${args.join(' ')}:\n${describeRun(run)}`);
    assert.equal(run.stderr, '', describeRun(run));
    return run;
}

/** Runs a command that must print a new secret alone on one line; returns the secret. */
async function secretFrom(db, args, env) {
    const run = await ok(db, args, env);
    const lines = run.stdout.split('\n');
    assert.deepEqual(lines.slice(1), [''], `the secret alone on one line:\n${describeRun(run)}`);
    assert.match(lines[0], SECRET_RE);
    assert.equal(Buffer.from(lines[0].slice(6), 'base64').length, 32);
    return lines[0];
}

async function failsWith(db, args, code, pattern, env) {
    const run = await fleetd(db, args, env);
    assert.equal(run.code, code, `${args.join(' ')}:\n${describeRun(run)}`);
    assert.match(oneErrorLine(run), pattern);
    assert.equal(run.stdout, '', describeRun(run));
    return run;
}

async function secretRows(db, partner) {
    const res = await db.query(
        `SELECT id, encode(nonce, 'hex') AS nonce, encode(secret_ciphertext, 'hex') AS ciphertext,
                octet_length(nonce) AS nonce_len, octet_length(secret_ciphertext) AS ciphertext_len, retired_at
           FROM partner_secrets WHERE partner_id = $1 ORDER BY id`,
        [partner],
    );
    return res.rows;
}

/** A LISTEN fleetd_partners connection collecting payloads. */
async function listen(db, t) {
    const client = new pg.Client({ ...pgConfig(db.url), connectionTimeoutMillis: 5000 });
    client.on('error', () => {});
    await client.connect();
    t.after(() => client.end().catch(() => {}));
    const payloads = [];
    client.on('notification', (n) => {
        if (n.channel === 'fleetd_partners') payloads.push(n.payload);
    });
    await client.query('LISTEN fleetd_partners');
    return payloads;
}

test('fleetd fleet create and list', opts, async (t) => {
    const db = await migratedDb(t);
    let run = await ok(db, ['fleet', 'create', 'harbor-1', '--name', 'Harbor One']);
    assert.match(run.stdout, /harbor-1/);
    await ok(db, ['fleet', 'create', 'harbor-2']);
    await ok(db, ['fleet', 'create', 'NULL', '--name=odd but valid']);
    await db.query(`INSERT INTO vehicles (id, fleet_id) VALUES ('truck-17', 'harbor-1'), ('van-2', 'harbor-1')`);
    const rows = (await db.query('SELECT id, name FROM fleets ORDER BY id COLLATE "C"')).rows;
    assert.deepEqual(rows, [
        { id: 'NULL', name: 'odd but valid' },
        { id: 'harbor-1', name: 'Harbor One' },
        { id: 'harbor-2', name: null },
    ]);

    await failsWith(db, ['fleet', 'create', 'harbor-1'], 1, /fleet "harbor-1" already exists/);
    assert.equal((await db.query(`SELECT name FROM fleets WHERE id = 'harbor-1'`)).rows[0].name, 'Harbor One');

    run = await ok(db, ['fleet', 'list']);
    const lines = run.stdout.trim().split('\n');
    assert.match(lines[0], /^ID\s+NAME\s+VEHICLES\s+CREATED$/);
    assert.equal(lines.length, 4, describeRun(run));
    assert.match(lines[2], /^harbor-1\s+Harbor One\s+2\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(lines[3], /^harbor-2\s+-\s+0\s+/);

    run = await ok(db, ['fleet', 'list', '--json']);
    const doc = JSON.parse(run.stdout);
    assert.deepEqual(doc.fleets.map((f) => [f.id, f.name, f.vehicles]), [
        ['NULL', 'odd but valid', 0],
        ['harbor-1', 'Harbor One', 2],
        ['harbor-2', null, 0],
    ]);
    assert.match(doc.fleets[1].created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const empty = await migratedDb(t);
    assert.equal((await ok(empty, ['fleet', 'list'])).stdout, 'no fleets\n');
});

test('fleetd partner create prints one secret and stores only its ciphertext', opts, async (t) => {
    const db = await migratedDb(t);
    const notified = await listen(db, t);
    await ok(db, ['fleet', 'create', 'harbor-1']);
    await ok(db, ['fleet', 'create', 'harbor-2']);
    const secret = await secretFrom(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet=harbor-2', '--fleet', 'harbor-1']);

    const rows = await secretRows(db, 'acme');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].nonce_len, 24);
    assert.equal(rows[0].ciphertext_len, 32 + 16);
    assert.equal(rows[0].retired_at, null);
    // the secret, in any form, is nowhere in the table
    const raw = Buffer.from(secret.slice(6), 'base64');
    const dump = JSON.stringify((await db.query(`SELECT *, encode(secret_ciphertext, 'base64') AS b64 FROM partner_secrets`)).rows);
    for (const form of [secret, secret.slice(6), raw.toString('hex'), raw.subarray(0, 8).toString('hex')])
        assert.ok(!dump.includes(form), `partner_secrets holds ${form}`);
    const fleets = (await db.query(`SELECT fleet_id FROM partner_fleets WHERE partner_id = 'acme' ORDER BY fleet_id`)).rows;
    assert.deepEqual(fleets.map((r) => r.fleet_id), ['harbor-1', 'harbor-2']);
    await waitFor(() => notified.includes('acme'), { timeoutMs: 5000, what: 'NOTIFY fleetd_partners acme' });

    // a second partner gets another secret
    const other = await secretFrom(db, ['partner', 'create', 'globex', '--fleet', 'harbor-2']);
    assert.notEqual(other, secret);

    // the master key from a file, with whitespace around it
    const dir = mkdtempSync(join(tmpdir(), 'fleetd-key-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const keyFile = join(dir, 'master.key');
    writeFileSync(keyFile, `  ${MASTER_KEY.toUpperCase()}\n`, { mode: 0o600 });
    await secretFrom(db, ['partner', 'create', 'initech', '--fleet', 'harbor-1'], {
        FLEETD_MASTER_KEY: undefined,
        FLEETD_MASTER_KEY_FILE: keyFile,
    });
});

test('rotate adds a second valid secret, retire leaves the newest, list shows the counts', opts, async (t) => {
    const db = await migratedDb(t);
    const notified = await listen(db, t);
    await ok(db, ['fleet', 'create', 'harbor-1']);
    await ok(db, ['fleet', 'create', 'harbor-2']);
    const first = await secretFrom(db, ['partner', 'create', 'acme', '--fleet', 'harbor-2', '--fleet', 'harbor-1']);
    await secretFrom(db, ['partner', 'create', 'globex', '--fleet', 'harbor-2']);

    const second = await secretFrom(db, ['partner', 'rotate', 'acme']);
    assert.notEqual(second, first);
    let rows = await secretRows(db, 'acme');
    assert.equal(rows.length, 2);
    assert.ok(rows.every((r) => r.retired_at === null), 'both secrets are live after a rotation');
    await waitFor(() => notified.filter((p) => p === 'acme').length === 2, { timeoutMs: 5000, what: 'NOTIFY after rotate' });

    let run = await ok(db, ['partner', 'list', '--json']);
    let doc = JSON.parse(run.stdout);
    assert.deepEqual(doc.partners.map((p) => [p.id, p.secrets, p.retired_secrets, p.fleets]), [
        ['acme', 2, 0, ['harbor-1', 'harbor-2']],
        ['globex', 1, 0, ['harbor-2']],
    ]);

    run = await ok(db, ['partner', 'retire', 'acme']);
    assert.match(run.stdout, /retired 1 older secret/);
    rows = await secretRows(db, 'acme');
    assert.equal(rows.filter((r) => r.retired_at === null).length, 1);
    assert.equal(rows[0].retired_at === null, false, 'the older secret is retired');
    assert.equal(rows[1].retired_at, null, 'the newest stays live');
    await waitFor(() => notified.filter((p) => p === 'acme').length === 3, { timeoutMs: 5000, what: 'NOTIFY after retire' });

    // again: nothing left to retire, still exit 0
    run = await ok(db, ['partner', 'retire', 'acme']);
    assert.match(run.stdout, /nothing to retire/);
    assert.equal((await secretRows(db, 'acme')).filter((r) => r.retired_at === null).length, 1);

    // three rotations, then retire: only the newest of all stays
    for (let i = 0; i < 3; i++) await secretFrom(db, ['partner', 'rotate', 'globex']);
    run = await ok(db, ['partner', 'retire', 'globex']);
    assert.match(run.stdout, /retired 3 older secrets/);
    rows = await secretRows(db, 'globex');
    assert.deepEqual(rows.map((r) => r.retired_at === null), [false, false, false, true]);

    run = await ok(db, ['partner', 'list']);
    const lines = run.stdout.trim().split('\n');
    assert.match(lines[0], /^ID\s+SECRETS\s+RETIRED\s+CREATED\s+NEWEST SECRET\s+FLEETS$/);
    assert.match(lines[1], /^acme\s+1\s+1\s+\S+Z\s+\S+Z\s+harbor-1,harbor-2$/);
    assert.match(lines[2], /^globex\s+1\s+3\s+\S+Z\s+\S+Z\s+harbor-2$/);
    assert.ok(!run.stdout.includes('whsec_'));
    doc = JSON.parse((await ok(db, ['partner', 'list', '--json'])).stdout);
    assert.deepEqual(doc.partners.map((p) => [p.id, p.secrets, p.retired_secrets]), [
        ['acme', 1, 1],
        ['globex', 1, 3],
    ]);
    assert.equal((await ok(db, ['partner', 'list'], { FLEETD_MASTER_KEY: undefined })).code, 0, 'list needs no master key');
});

test('unknown fleets and partners, an existing partner, the database away: exit 1, one line, nothing stored', opts, async (t) => {
    const db = await migratedDb(t);
    await ok(db, ['fleet', 'create', 'harbor-1']);
    await failsWith(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet', 'nope'], 1, /no fleet "nope"/);
    assert.equal((await db.query('SELECT count(*)::int AS n FROM partners')).rows[0].n, 0);
    assert.equal((await db.query('SELECT count(*)::int AS n FROM partner_secrets')).rows[0].n, 0);

    const secret = await secretFrom(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    await failsWith(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1'], 1, /partner "acme" already exists/);
    assert.equal((await secretRows(db, 'acme')).length, 1);
    await failsWith(db, ['partner', 'rotate', 'nobody'], 1, /no partner "nobody"/);
    await failsWith(db, ['partner', 'retire', 'nobody'], 1, /no partner "nobody"/);
    assert.equal((await db.query('SELECT count(*)::int AS n FROM partner_secrets')).rows[0].n, 1);

    for (const args of [['fleet', 'list'], ['partner', 'list'], ['partner', 'rotate', 'acme']]) {
        const down = await runFleetd(args, { databaseUrl: UNREACHABLE_DATABASE_URL, env: { FLEETD_MASTER_KEY: MASTER_KEY } });
        assert.equal(down.code, 1, describeRun(down));
        assert.match(oneErrorLine(down), /cannot connect to the database/);
    }

    // a migrated database is needed
    const bare = await createDatabase('partners_cli_bare', t);
    const run = await runFleetd(['partner', 'list'], { databaseUrl: bare.url });
    assert.equal(run.code, 1, describeRun(run));
    assert.match(oneErrorLine(run), /fleetd migrate/);
    assert.ok(secret);
});

test('the master key: missing is exit 1 naming FLEETD_MASTER_KEY, malformed is 2, another key is refused', opts, async (t) => {
    const db = await migratedDb(t);
    await ok(db, ['fleet', 'create', 'harbor-1']);
    for (const args of [['partner', 'create', 'acme', '--fleet', 'harbor-1'], ['partner', 'rotate', 'acme']]) {
        const run = await failsWith(db, args, 1, /FLEETD_MASTER_KEY/, { FLEETD_MASTER_KEY: undefined });
        assert.ok(!run.stderr.includes(MASTER_KEY));
    }
    await failsWith(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1'], 2, /FLEETD_MASTER_KEY/, {
        FLEETD_MASTER_KEY: 'abc123',
    });
    await failsWith(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1'], 2, /FLEETD_MASTER_KEY_FILE/, {
        FLEETD_MASTER_KEY: undefined,
        FLEETD_MASTER_KEY_FILE: '/nonexistent/fleetd/master.key',
    });
    assert.equal((await db.query('SELECT count(*)::int AS n FROM partners')).rows[0].n, 0);

    // a key that does not open the stored secrets would make secrets no daemon can use
    await secretFrom(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    const otherKey = randomBytes(32).toString('hex');
    const wrong = await failsWith(db, ['partner', 'rotate', 'acme'], 1, /master key does not open/, { FLEETD_MASTER_KEY: otherKey });
    assert.ok(!wrong.stderr.includes(otherKey) && !wrong.stderr.includes(MASTER_KEY));
    await failsWith(db, ['partner', 'create', 'globex', '--fleet', 'harbor-1'], 1, /master key does not open/, {
        FLEETD_MASTER_KEY: otherKey,
    });
    assert.equal((await secretRows(db, 'acme')).length, 1);
    // --force: after replacing the master key on purpose
    await secretFrom(db, ['partner', 'rotate', 'acme', '--force'], { FLEETD_MASTER_KEY: otherKey });
    assert.equal((await secretRows(db, 'acme')).length, 2);
});

test('bad usage is exit 2 with one line; --help describes each command', opts, async (t) => {
    const db = await migratedDb(t);
    const usage = [
        ['fleet'],
        ['fleet', 'remove', 'x'],
        ['fleet', 'create'],
        ['fleet', 'create', 'bad id'],
        ['fleet', 'create', 'x'.repeat(65)],
        ['fleet', 'create', 'a', 'b'],
        ['fleet', 'create', 'a', '--name', 'n'.repeat(257)],
        ['fleet', 'list', '--bogus'],
        ['partner'],
        ['partner', 'delete', 'acme'],
        ['partner', 'create', 'acme'],
        ['partner', 'create', '--fleet', 'harbor-1'],
        ['partner', 'create', 'acme', '--fleet'],
        ['partner', 'create', 'acme', '--fleet', 'bad fleet'],
        ['partner', 'create', 'bad/id', '--fleet', 'harbor-1'],
        ['partner', 'rotate'],
        ['partner', 'rotate', 'a', 'b'],
        ['partner', 'retire', '--force', 'acme'],
        ['partner', 'list', 'acme'],
    ];
    for (const args of usage) {
        const run = await fleetd(db, args);
        assert.equal(run.code, 2, `${args.join(' ')}:\n${describeRun(run)}`);
        oneErrorLine(run);
        assert.equal(run.stdout, '');
    }
    assert.equal((await db.query('SELECT count(*)::int AS n FROM fleets')).rows[0].n, 0);

    for (const [args, pattern] of [
        [['fleet', '--help'], /fleetd fleet create ID/],
        [['fleet', 'create', '--help'], /fleetd fleet list/],
        [['partner', '--help'], /fleetd partner rotate ID/],
        [['partner', 'retire', '-h'], /fleetd partner retire ID/],
    ]) {
        const run = await runFleetd(args);
        assert.equal(run.code, 0, describeRun(run));
        assert.match(run.stdout, pattern);
    }
    const help = await runFleetd(['--help']);
    assert.match(help.stdout, /^\s+fleet\s/m);
    assert.match(help.stdout, /^\s+partner\s/m);
});
