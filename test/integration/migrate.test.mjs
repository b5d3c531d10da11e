// `fleetd migrate`: the schema it creates, idempotence, concurrent runs, an unreachable database.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
    createDatabase,
    describeRun,
    listTables,
    migrate,
    migrationRows,
    requireEnv,
    runFleetd,
    TEST_TIMEOUT_MS,
    withDatabaseName,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

const FIRST_MIGRATION_TABLES = ['fleets', 'partners', 'partner_secrets', 'partner_fleets', 'tokens', 'token_fleets', 'vehicles'];

/** What a user reads in the summary of a run that had nothing to do. */
const NOTHING_APPLIED = /\b(no|nothing|none|0)\b|up[ -]to[ -]date|already/i;

function assertWellFormedRows(rows) {
    assert.ok(rows.length >= 1, 'schema_migrations has at least one row');
    assert.equal(rows[0].version, 1, 'the first migration is version 1');
    for (let i = 0; i < rows.length; i++) {
        const r = rows[i];
        if (i > 0) assert.ok(r.version > rows[i - 1].version, `versions increase: ${JSON.stringify(rows)}`);
        assert.ok(r.name && r.name.length > 0, `migration ${r.version} has a name`);
        assert.ok(r.checksum && r.checksum !== 'null' && r.checksum.length > 0, `migration ${r.version} has a checksum`);
        assert.ok(!Number.isNaN(Date.parse(r.applied_at)), `migration ${r.version} has applied_at`);
    }
}

test('migrate creates the tables of the first migration and records it', opts, async (t) => {
    const db = await createDatabase('migrate_tables', t);
    const run = await migrate(db);
    assert.ok(run.stdout.trim().length > 0, `migrate prints a summary on stdout:\n${describeRun(run)}`);
    const tables = await listTables(db);
    for (const name of [...FIRST_MIGRATION_TABLES, 'schema_migrations'])
        assert.ok(tables.includes(name), `table ${name} exists; tables: ${tables.join(', ')}`);
    assertWellFormedRows(await migrationRows(db));
});

test('migrate twice: the second run applies nothing and changes nothing', opts, async (t) => {
    const db = await createDatabase('migrate_twice', t);
    const first = await migrate(db);
    const rowsBefore = await migrationRows(db);
    const tablesBefore = await listTables(db);
    assertWellFormedRows(rowsBefore);

    const second = await migrate(db);
    assert.deepEqual(await migrationRows(db), rowsBefore, 'schema_migrations rows unchanged (same applied_at: nothing re-applied)');
    assert.deepEqual(await listTables(db), tablesBefore, 'same set of tables');

    const summary = second.stdout.trim();
    assert.ok(summary.length > 0, `the second run prints a summary:\n${describeRun(second)}`);
    assert.match(summary, NOTHING_APPLIED, `the second run says nothing was applied:\n${describeRun(second)}`);
    assert.notEqual(summary, first.stdout.trim(), 'the two summaries differ: the first one applied migrations');
});

for (const n of [2, 4]) {
    test(`${n} migrate runs at once on a fresh database all succeed and apply each migration once`, opts, async (t) => {
        const reference = await createDatabase('migrate_ref', t);
        await migrate(reference);
        const expected = await migrationRows(reference);
        const expectedTables = await listTables(reference);

        const db = await createDatabase('migrate_race', t);
        const runs = await Promise.all(Array.from({ length: n }, () => runFleetd(['migrate'], { databaseUrl: db.url, timeoutMs: 60_000 })));
        runs.forEach((run, i) => assert.equal(run.code, 0, `run ${i + 1} of ${n}:\n${describeRun(run)}`));

        const dupes = await db.query('SELECT version, count(*)::int AS n FROM schema_migrations GROUP BY version HAVING count(*) > 1');
        assert.deepEqual(dupes.rows, [], 'no migration recorded twice');
        const rows = await migrationRows(db);
        assert.deepEqual(
            rows.map((r) => [r.version, r.name, r.checksum]),
            expected.map((r) => [r.version, r.name, r.checksum]),
            'the same migrations as a single run',
        );
        assert.deepEqual(await listTables(db), expectedTables, 'the same tables as a single run');
    });
}

const unreachable = [
    ['a URI whose socket directory does not exist', 'postgresql:///postgres?host=/nonexistent/fleetd-it&user=postgres&connect_timeout=2'],
    ['a conninfo whose socket directory does not exist', 'host=/nonexistent/fleetd-it dbname=postgres user=postgres connect_timeout=2'],
];
for (const [what, url] of unreachable) {
    test(`migrate against ${what} exits 1 with one line on stderr`, opts, async () => {
        const run = await runFleetd(['migrate'], { databaseUrl: url, timeoutMs: 30_000 });
        assert.ok(!run.timedOut, describeRun(run));
        assert.equal(run.code, 1, describeRun(run));
        const lines = run.stderr.split('\n').filter((l) => l !== '');
        assert.equal(lines.length, 1, `one line on stderr:\n${describeRun(run)}`);
        assert.ok(lines[0].startsWith('fleetd: '), `the line starts with "fleetd: ":\n${describeRun(run)}`);
    });
}

test('migrate against a database that does not exist exits 1 with one line on stderr', opts, async () => {
    const url = withDatabaseName(requireEnv('DATABASE_URL'), `fleetd_it_missing_${process.pid}`);
    const run = await runFleetd(['migrate'], { databaseUrl: url, timeoutMs: 30_000 });
    assert.equal(run.code, 1, describeRun(run));
    const lines = run.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line on stderr:\n${describeRun(run)}`);
    assert.ok(lines[0].startsWith('fleetd: '), describeRun(run));
});
