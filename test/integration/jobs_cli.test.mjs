// `fleetd jobs`: the listing (table and --json), retry and cancel, their exit codes and what they
// change in the database.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createDatabase, describeRun, migrate, runFleetd, TEST_TIMEOUT_MS, UNREACHABLE_DATABASE_URL } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

/** A migrated database with jobs in every state; returns {db, ids} (ids by a label). */
async function jobsDatabase(t) {
    const db = await createDatabase('jobs_cli', t);
    await migrate(db);
    const rows = [
        ['avail', 'audit', 'audit', 'available', 0, 20, '[]', null, null],
        ['sched', 'audit', 'audit', 'scheduled', 0, 20, '[]', null, null],
        ['exec', 'audit', 'audit', 'executing', 1, 20, '[]', 'node-1', null],
        ['done', 'audit', 'audit', 'completed', 1, 20, '[]', 'node-1', null],
        ['retry', 'mail', 'send', 'retryable', 2, 5,
            '[{"attempt":1,"at":"2026-11-23T10:00:00.000Z","error":"smtp down"},' +
            '{"attempt":2,"at":"2026-11-23T10:00:01.000Z","error":"smtp still down"}]', 'node-2', null],
        ['dead', 'mail', 'send', 'discarded', 3, 3,
            '[{"attempt":3,"at":"2026-11-23T09:00:00.000Z","error":"mailbox full\\nno retry"}]', 'node-2', 'now()'],
        ['gone', 'mail', 'send', 'cancelled', 0, 20, '[]', null, null],
    ];
    const ids = {};
    for (const [label, queue, kind, state, attempt, max, errors, by] of rows) {
        const res = await db.query(
            `INSERT INTO jobs (queue, kind, state, attempt, max_attempts, errors, attempted_by, attempted_at,
                               lease_until, scheduled_at, discarded_at, cancelled_at, completed_at, args)
             VALUES ($1, $2, $3::text::job_state, $4::int, $5, $6::jsonb, $7, CASE WHEN $4::int > 0 THEN now() END,
                     CASE WHEN $3::text = 'executing' THEN now() + interval '1 minute' END,
                     CASE WHEN $3::text = 'scheduled' THEN now() + interval '1 hour' ELSE now() END,
                     CASE WHEN $3::text = 'discarded' THEN now() END, CASE WHEN $3::text = 'cancelled' THEN now() END,
                     CASE WHEN $3::text = 'completed' THEN now() END, jsonb_build_object('label', $8::text))
             RETURNING id`,
            [queue, kind, state, attempt, max, errors, by, label],
        );
        ids[label] = Number(res.rows[0].id);
    }
    return { db, ids };
}

async function stateOf(db, id) {
    const res = await db.query('SELECT state::text, attempt, max_attempts, scheduled_at <= now() AS due FROM jobs WHERE id = $1', [id]);
    return res.rows[0];
}

test('fleetd jobs prints the counts per queue and state, then the failing jobs with their last error', opts, async (t) => {
    const { db, ids } = await jobsDatabase(t);
    const run = await runFleetd(['jobs'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    const lines = run.stdout.split('\n');
    assert.match(lines[0], /^QUEUE\s+AVAILABLE\s+SCHEDULED\s+EXECUTING\s+RETRYABLE\s+COMPLETED\s+DISCARDED\s+CANCELLED$/, describeRun(run));
    assert.match(lines[1], /^audit\s+1\s+1\s+1\s+0\s+1\s+0\s+0$/, describeRun(run));
    assert.match(lines[2], /^mail\s+0\s+0\s+0\s+1\s+0\s+1\s+1$/, describeRun(run));
    const failing = lines.slice(lines.findIndex((l) => l.startsWith('ID ')) + 1).filter((l) => l !== '');
    assert.equal(failing.length, 2, describeRun(run));
    // newest first: the retryable one failed last (its attempted_at is the same, the id breaks the tie)
    const byId = Object.fromEntries(failing.map((l) => [Number(l.split(/\s+/)[0]), l]));
    assert.match(byId[ids.retry], /mail\s+send\s+retryable\s+2\/5\s+2026-11-23T10:00:01\.000Z\s+smtp still down$/);
    assert.match(byId[ids.dead], /discarded\s+3\/3\s+2026-11-23T09:00:00\.000Z\s+mailbox full no retry$/);
    assert.equal(run.stderr, '', describeRun(run));
});

test('fleetd jobs --json gives the same as one JSON document', opts, async (t) => {
    const { db, ids } = await jobsDatabase(t);
    const run = await runFleetd(['jobs', '--json'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    const doc = JSON.parse(run.stdout);
    assert.deepEqual(doc.queues, [
        { queue: 'audit', available: 1, scheduled: 1, executing: 1, retryable: 0, completed: 1, discarded: 0, cancelled: 0 },
        { queue: 'mail', available: 0, scheduled: 0, executing: 0, retryable: 1, completed: 0, discarded: 1, cancelled: 1 },
    ]);
    const retry = doc.failing.find((f) => f.id === ids.retry);
    assert.equal(retry.state, 'retryable');
    assert.equal(retry.attempt, 2);
    assert.equal(retry.max_attempts, 5);
    assert.equal(retry.error, 'smtp still down');
    assert.match(retry.retry_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const dead = doc.failing.find((f) => f.id === ids.dead);
    assert.equal(dead.error, 'mailbox full\nno retry');
    assert.equal(doc.failing.length, 2);

    const limited = await runFleetd(['jobs', '--json', '--limit', '1'], { databaseUrl: db.url });
    assert.equal(JSON.parse(limited.stdout).failing.length, 1, describeRun(limited));
});

test('fleetd jobs on an empty queue says so', opts, async (t) => {
    const db = await createDatabase('jobs_cli_empty', t);
    await migrate(db);
    const run = await runFleetd(['jobs'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    assert.equal(run.stdout, 'no jobs\n');
    const json = await runFleetd(['jobs', '--json'], { databaseUrl: db.url });
    assert.deepEqual(JSON.parse(json.stdout), { queues: [], failing: [] });
});

test('fleetd jobs retry puts a discarded job back to available with one more attempt', opts, async (t) => {
    const { db, ids } = await jobsDatabase(t);
    const run = await runFleetd(['jobs', 'retry', String(ids.dead)], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    assert.match(run.stdout, new RegExp(`job ${ids.dead} is available again`));
    assert.deepEqual(await stateOf(db, ids.dead), { state: 'available', attempt: 3, max_attempts: 4, due: true });
    const errors = (await db.query('SELECT errors, discarded_at FROM jobs WHERE id = $1', [ids.dead])).rows[0];
    assert.equal(errors.errors.length, 1, 'the history of errors is kept');
    assert.equal(errors.discarded_at, null);

    // a retryable job with attempts left keeps its max_attempts and runs now; a cancelled one comes back
    assert.equal((await runFleetd(['jobs', 'retry', String(ids.retry)], { databaseUrl: db.url })).code, 0);
    assert.deepEqual(await stateOf(db, ids.retry), { state: 'available', attempt: 2, max_attempts: 5, due: true });
    assert.equal((await runFleetd(['jobs', 'retry', String(ids.gone)], { databaseUrl: db.url })).code, 0);
    assert.equal((await stateOf(db, ids.gone)).state, 'available');
});

test('fleetd jobs retry refuses other states and unknown ids with exit 1', opts, async (t) => {
    const { db, ids } = await jobsDatabase(t);
    for (const label of ['done', 'exec', 'avail', 'sched']) {
        const run = await runFleetd(['jobs', 'retry', String(ids[label])], { databaseUrl: db.url });
        assert.equal(run.code, 1, describeRun(run));
        assert.match(run.stderr, /^fleetd: jobs retry: job \d+ is \w+; only discarded, retryable or cancelled jobs can be retried\n$/);
    }
    const unknown = await runFleetd(['jobs', 'retry', '999999'], { databaseUrl: db.url });
    assert.equal(unknown.code, 1, describeRun(unknown));
    assert.equal(unknown.stderr, 'fleetd: jobs retry: no job 999999\n');
    assert.equal((await stateOf(db, ids.done)).state, 'completed');
});

test('fleetd jobs cancel cancels any job but a completed one', opts, async (t) => {
    const { db, ids } = await jobsDatabase(t);
    for (const label of ['avail', 'sched', 'retry', 'dead']) {
        const run = await runFleetd(['jobs', 'cancel', String(ids[label])], { databaseUrl: db.url });
        assert.equal(run.code, 0, describeRun(run));
        assert.match(run.stdout, new RegExp(`^job ${ids[label]} cancelled`));
        const row = (await db.query('SELECT state::text, cancelled_at IS NOT NULL AS at FROM jobs WHERE id = $1', [ids[label]])).rows[0];
        assert.deepEqual(row, { state: 'cancelled', at: true });
    }
    // a running job: cancelled, its lease dropped, and the output says its worker is not interrupted
    const exec = await runFleetd(['jobs', 'cancel', String(ids.exec)], { databaseUrl: db.url });
    assert.equal(exec.code, 0, describeRun(exec));
    assert.match(exec.stdout, /running on node node-1/);
    const row = (await db.query('SELECT state::text, lease_until FROM jobs WHERE id = $1', [ids.exec])).rows[0];
    assert.deepEqual(row, { state: 'cancelled', lease_until: null });

    const again = await runFleetd(['jobs', 'cancel', String(ids.gone)], { databaseUrl: db.url });
    assert.equal(again.code, 0, describeRun(again));
    assert.match(again.stdout, /already cancelled/);

    const done = await runFleetd(['jobs', 'cancel', String(ids.done)], { databaseUrl: db.url });
    assert.equal(done.code, 1, describeRun(done));
    assert.match(done.stderr, /is completed; only not completed jobs can be cancelled/);
    assert.equal((await stateOf(db, ids.done)).state, 'completed');
    const unknown = await runFleetd(['jobs', 'cancel', '424242'], { databaseUrl: db.url });
    assert.equal(unknown.code, 1, describeRun(unknown));
    assert.equal(unknown.stderr, 'fleetd: jobs cancel: no job 424242\n');
});

test('fleetd jobs: usage errors exit 2, an unreachable database exits 1, --help exits 0', opts, async (t) => {
    const db = await createDatabase('jobs_cli_usage', t);
    await migrate(db);
    for (const args of [['jobs', 'retry'], ['jobs', 'cancel', 'abc'], ['jobs', 'retry', '0'], ['jobs', 'frob'],
        ['jobs', '--limit', 'x'], ['jobs', 'retry', '1', '--json'], ['jobs', 'cancel', '1', '2']]) {
        const run = await runFleetd(args, { databaseUrl: db.url });
        assert.equal(run.code, 2, `${args.join(' ')}:\n${describeRun(run)}`);
        assert.match(run.stderr, /^fleetd: .+\n$/, describeRun(run));
        assert.equal(run.stdout, '');
    }
    const down = await runFleetd(['jobs'], { databaseUrl: UNREACHABLE_DATABASE_URL, timeoutMs: 15_000 });
    assert.equal(down.code, 1, describeRun(down));
    assert.match(down.stderr, /^fleetd: cannot connect to the database: .+\n$/);

    const unmigrated = await createDatabase('jobs_cli_bare', t);
    const bare = await runFleetd(['jobs'], { databaseUrl: unmigrated.url });
    assert.equal(bare.code, 1, describeRun(bare));
    assert.match(bare.stderr, /run fleetd migrate first/);

    for (const args of [['jobs', '--help'], ['jobs', 'retry', '--help'], ['jobs', 'cancel', '--help']]) {
        const help = await runFleetd(args, { databaseUrl: UNREACHABLE_DATABASE_URL });
        assert.equal(help.code, 0, describeRun(help));
        assert.match(help.stdout, /^Usage: fleetd jobs/);
        assert.match(help.stdout, /fleetd jobs retry ID/);
        assert.match(help.stdout, /fleetd jobs cancel ID/);
    }
    const top = await runFleetd(['--help']);
    assert.match(top.stdout, /\bjobs\b/);
});
