// `fleetd tree` as the on-call engineer reads it: the table of a running daemon after an ingest
// (supervisors, trackers, tree lines), colours only when asked for or on a terminal, --watch with a
// bounded --count, the one-line errors with the contract's exit codes, a drill through
// `fleetd tree restart` that shows up as restarts 1 and the crash reason, and the trackers of a big
// fleet summarised. The JSON route itself is covered by admin_tree.test.mjs.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
    createDatabase,
    describeRun,
    get,
    migrate,
    postSigned,
    runFleetd,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const ANSI = /\x1b\[/;

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/**
 * A migrated database with `fleets` fleets (harbor-1 ...), partner acme writing all of them, an admin
 * token, an operator token, and fleetd on one shard (every tracker under trackers:0) with one fix
 * ingested for each fleet. tree(args, env) runs `fleetd tree` against it with the admin token.
 */
async function setup(t, { fleets = 1 } = {}) {
    const db = await createDatabase('tree_cli', t);
    await migrate(db);
    const ids = Array.from({ length: fleets }, (_, i) => `harbor-${i + 1}`);
    for (const id of ids) await cli(db, ['fleet', 'create', id]);
    const secret = await cli(db, ['partner', 'create', 'acme', ...ids.flatMap((id) => ['--fleet', id])]);
    const admin = await cli(db, ['token', 'create', '--admin', '--name', 'oncall']);
    const operator = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'ops']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_SHARDS: '1' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    const fixes = ids.map((id, i) => ({
        fleet_id: id,
        vehicle_id: `truck-${i + 1}`,
        lat: 59.3 + i / 1000,
        lng: 18.07,
        recorded_at: new Date(Date.now() - 5000).toISOString(),
    }));
    const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes } });
    assert.equal(res.status, 202, res.text);
    const url = `http://127.0.0.1:${srv.port}`;
    const tree = (args = [], env = {}) => runFleetd(['tree', '--url', url, ...args], { env: { FLEETD_ADMIN_TOKEN: admin, LC_ALL: 'C', ...env } });
    return { db, srv, url, admin, operator, tree };
}

/** The rows of the table that name a tracker of one fleet. */
const trackerRows = (stdout) => stdout.split('\n').filter((l) => /\btracker:harbor-\d+\b/.test(l));

test('plain output: a header, the supervisors nested with tree lines, the tracker after an ingest, a summary line', opts, async (t) => {
    const { tree } = await setup(t);
    const run = await tree();
    assert.equal(run.code, 0, describeRun(run));
    assert.doesNotMatch(run.stdout, ANSI, 'no colours on a pipe');
    const lines = run.stdout.trimEnd().split('\n');
    assert.match(lines[0], /^NAME\s+TYPE\s+STATUS\s+UPTIME\s+RESTARTS\s+MAILBOX\s+HANDLED\s+MEMORY\s+LAST CRASH$/);
    assert.match(lines[1], /^root\s+one_for_one\s+running\s+\d+s\s+0\s+\d+(\.\d)? (B|KiB|MiB)$/);
    for (const id of ['db', 'pubsub', 'jobs', 'trackers', 'endpoint']) assert.ok(lines.some((l) => new RegExp(`^[|\`]- ${id}\\s+\\S+\\s+running`).test(l)), `${id} under root:\n${run.stdout}`);
    assert.ok(lines.some((l) => /^\|  `- trackers:0\s+dynamic\s+running/.test(l)), `trackers:0, dynamic, nested under trackers:\n${run.stdout}`);
    // the tracker: an actor with its mailbox, the messages it handled (at least the ingest), no crash
    const [row] = trackerRows(run.stdout);
    assert.match(row, /^\|     `- tracker:harbor-1\s+actor\s+running\s+\d+s\s+0\s+\d+\s+[1-9]\d*\s+\d+(\.\d)? (B|KiB|MiB)$/, run.stdout);
    assert.match(lines.at(-1), /^\d+ supervisors, \d+ actors; 0 not running; 0 restarts; mailboxes \d+ in all/);

    // a UTF-8 locale draws box lines
    const boxes = await tree([], { LC_ALL: 'C.UTF-8' });
    assert.equal(boxes.code, 0, describeRun(boxes));
    assert.match(boxes.stdout, /^│  └─ trackers:0 /m);
    assert.match(boxes.stdout, /^│     └─ tracker:harbor-1 /m);
});

test('--color=always paints, --color=never and NO_COLOR do not; --json is the daemon\'s JSON', opts, async (t) => {
    const { tree } = await setup(t);
    const always = await tree(['--color=always']);
    assert.equal(always.code, 0, describeRun(always));
    assert.match(always.stdout, /\x1b\[32mrunning\s*\x1b\[0m/, 'running in green');
    assert.match(always.stdout, /\x1b\[2m/, 'details dimmed');
    const never = await tree(['--color=never']);
    assert.equal(never.code, 0, describeRun(never));
    assert.doesNotMatch(never.stdout, ANSI);
    // the same table once the escapes are taken out: the same rows with the same name, type and status
    // (the counters and memory move between the two runs: the audit job of the setup may be running)
    const rows = (out) => out.split('\n').map((l) => l.split(/\s+/).slice(0, 3).join(' '));
    assert.deepEqual(rows(always.stdout.replace(/\x1b\[[0-9;]*m/g, '')), rows(never.stdout));
    const noColor = await tree(['--color=auto'], { NO_COLOR: '1' });
    assert.doesNotMatch(noColor.stdout, ANSI);
    const bad = await tree(['--color=sometimes']);
    assert.equal(bad.code, 2, describeRun(bad));

    const json = await tree(['--json']);
    assert.equal(json.code, 0, describeRun(json));
    const root = JSON.parse(json.stdout);
    const trackers = root.children.find((c) => c.id === 'trackers').children[0].children;
    assert.deepEqual(trackers.map((c) => c.id), ['tracker:harbor-1']);
});

test('--watch=1 --count 2 prints two trees a second apart, each after a separator', opts, async (t) => {
    const { tree } = await setup(t);
    const started = Date.now();
    const run = await tree(['--watch=1', '--count', '2']);
    const took = Date.now() - started;
    assert.equal(run.code, 0, describeRun(run));
    const separators = run.stdout.split('\n').filter((l) => /^---- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ----$/.test(l));
    assert.equal(separators.length, 2, run.stdout);
    assert.equal(run.stdout.split('\n').filter((l) => /^root\s/.test(l)).length, 2, 'two trees');
    assert.equal(trackerRows(run.stdout).length, 2, 'the tracker in each');
    assert.ok(took >= 1000, `one interval between the two (${took} ms)`);
    const json = await tree(['--json', '--watch=1', '--count=2']);
    assert.equal(json.code, 0, describeRun(json));
    assert.deepEqual(json.stdout.trim().split('\n').map((l) => JSON.parse(l).id), ['root', 'root']);
    for (const bad of [['--watch=0'], ['--watch=x'], ['--count', '0'], ['--count']]) {
        const run = await tree(bad);
        assert.equal(run.code, 2, `${bad.join(' ')}: ${describeRun(run)}`);
        assert.equal(run.stderr.trim().split('\n').length, 1, 'one line');
    }
});

test('errors: no token exits 2, a refused token 1 saying why, an unreachable daemon 1; each one line', opts, async (t) => {
    const { tree, operator, admin } = await setup(t);
    const none = await tree([], { FLEETD_ADMIN_TOKEN: '' });
    assert.equal(none.code, 2, describeRun(none));
    assert.match(none.stderr, /^fleetd: tree: no admin token/);
    const unknown = await tree(['--token', 'fl_' + 'Q'.repeat(43)]);
    assert.equal(unknown.code, 1, describeRun(unknown));
    assert.match(unknown.stderr, /^fleetd: tree: the daemon answered 401: .*unknown or revoked/);
    assert.equal(unknown.stdout, '');
    const notAdmin = await tree([], { FLEETD_ADMIN_TOKEN: operator });
    assert.equal(notAdmin.code, 1, describeRun(notAdmin));
    assert.match(notAdmin.stderr, /^fleetd: tree: the daemon answered 403: .*admin token/);
    // refused while watching: it stops at once rather than retrying
    const watching = await tree(['--watch=1', '--count', '5'], { FLEETD_ADMIN_TOKEN: operator });
    assert.equal(watching.code, 1, describeRun(watching));
    const nobody = await runFleetd(['tree'], { env: { FLEETD_LISTEN: '127.0.0.1:1', FLEETD_ADMIN_TOKEN: admin } });
    assert.equal(nobody.code, 1, describeRun(nobody));
    assert.match(nobody.stderr, /^fleetd: tree: cannot reach the daemon at http:\/\/127\.0\.0\.1:1: /);
    const badId = await tree(['restart', 'tracker:x\r\nX: 1']);
    assert.equal(badId.code, 2, describeRun(badId));
    for (const run of [none, unknown, notAdmin, watching, nobody, badId]) assert.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`);
});

test('a drill through `fleetd tree restart tracker:ID` shows restarts 1, how long ago and why; the tracker comes back equal', opts, async (t) => {
    const { tree, srv, operator } = await setup(t);
    const status = async () => {
        const res = await get(srv.port, '/api/v1/fleets/harbor-1/status', { Authorization: `Bearer ${operator}` });
        assert.equal(res.status, 200, res.text);
        return res.json;
    };
    const before = await status();
    assert.equal(before.vehicles.length, 1, JSON.stringify(before));
    const drill = await tree(['restart', 'tracker:harbor-1']);
    assert.equal(drill.code, 0, describeRun(drill));
    assert.equal(drill.stdout, 'tracker:harbor-1 restarted\n');
    // Reloaded from PostgreSQL (the audit job may not have run yet): the same vehicles, field for field.
    assert.deepEqual((await status()).vehicles, before.vehicles);
    const run = await tree();
    assert.equal(run.code, 0, describeRun(run));
    const [row] = trackerRows(run.stdout);
    assert.match(row, /tracker:harbor-1\s+actor\s+running\s+\d+s\s+1\s+\d+\s+\d+\s+\d+(\.\d)? (B|KiB|MiB)\s+\d+s ago: killed by an operator \(drill\)$/, run.stdout);
    assert.match(run.stdout.trimEnd().split('\n').at(-1), /; 0 not running; 1 restarts;/);
    const painted = await tree(['--color=always']);
    assert.match(painted.stdout, /\x1b\[33m1\x1b\[0m/, 'the restart count stands out');
    const missing = await tree(['restart', 'tracker:nowhere']);
    assert.equal(missing.code, 1, describeRun(missing));
    assert.match(missing.stderr, /^fleetd: tree: the daemon answered 404: no child with id tracker:nowhere/);
});

test('more than 20 trackers under one supervisor: the 10 busiest and "and N more"; --all shows every one', opts, async (t) => {
    const { tree } = await setup(t, { fleets: 23 });
    const run = await tree();
    assert.equal(run.code, 0, describeRun(run));
    assert.equal(trackerRows(run.stdout).length, 10, run.stdout);
    assert.match(run.stdout, /^\|     `- \.\.\. and 13 more \((all running, mailboxes empty|mailboxes up to \d+); --all shows them\)$/m);
    assert.match(run.stdout.trimEnd().split('\n').at(-1), /^\d+ supervisors, \d+ actors;/);
    const all = await tree(['--all']);
    assert.equal(all.code, 0, describeRun(all));
    assert.equal(trackerRows(all.stdout).length, 23);
    assert.doesNotMatch(all.stdout, /more \(/);
});
