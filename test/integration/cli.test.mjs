// The command line: help, exit codes, settings from the environment and from FLEETD_CONFIG.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { describeRun, runFleetd, tempDir, TEST_TIMEOUT_MS, UNREACHABLE_DATABASE_URL } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

/** NAME=VALUE lines of `fleetd config` as a Map. */
function parseConfig(stdout) {
    const map = new Map();
    for (const line of stdout.split('\n')) {
        if (line === '') continue;
        const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
        assert.ok(m, `fleetd config printed a line that is not NAME=VALUE: ${JSON.stringify(line)}`);
        map.set(m[1], m[2]);
    }
    return map;
}

/** Exactly one line on stderr, starting "fleetd: ". */
function assertOneErrorLine(run) {
    const lines = run.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `expected one line on stderr:\n${describeRun(run)}`);
    assert.ok(lines[0].startsWith('fleetd: '), `stderr line starts with "fleetd: ":\n${describeRun(run)}`);
    return lines[0];
}

test('fleetd --help prints usage naming the commands and exits 0', opts, async () => {
    const run = await runFleetd(['--help']);
    assert.equal(run.code, 0, describeRun(run));
    assert.match(run.stdout, /usage/i, describeRun(run));
    for (const cmd of ['serve', 'migrate', 'config']) assert.match(run.stdout, new RegExp(`\\b${cmd}\\b`), `--help names ${cmd}`);
});

for (const cmd of ['serve', 'migrate', 'config']) {
    test(`fleetd ${cmd} --help prints its usage and exits 0 without touching the database`, opts, async () => {
        // An unreachable database must not matter: help is not a run.
        const run = await runFleetd([cmd, '--help'], { databaseUrl: UNREACHABLE_DATABASE_URL, timeoutMs: 10_000 });
        assert.equal(run.code, 0, describeRun(run));
        assert.ok(!run.timedOut, describeRun(run));
        assert.match(run.stdout, /usage/i, describeRun(run));
        assert.match(run.stdout, new RegExp(`\\b${cmd}\\b`), describeRun(run));
    });
}

test('an unknown command exits 2 and names the command on stderr', opts, async () => {
    const run = await runFleetd(['frobnicate']);
    assert.equal(run.code, 2, describeRun(run));
    assert.match(run.stderr, /frobnicate/, describeRun(run));
    assert.equal(run.stdout, '', 'nothing on stdout');
});

// A bad value stops fleetd before it does anything: exit 2 and one stderr line naming the setting.
// `serve` is the command that matters (a typo in a unit file); it must not start listening.
const badSettings = [
    ['FLEETD_MAX_HEADERS', 'abc'],
    ['FLEETD_MAX_HEADERS', '100000000'],
    ['FLEETD_MAX_HEADER_BYTES', '16 parsecs'],
    ['FLEETD_MAX_BODY_BYTES', '-1'],
    ['FLEETD_HEADER_TIMEOUT', 'soon'],
    ['FLEETD_KEEPALIVE_TIMEOUT', '0ms'],
    ['FLEETD_LOG_FORMAT', 'xml'],
    ['FLEETD_ACCESS_LOG', 'maybe'],
    ['FLEETD_MAX_CONNECTIONS', '0'],
];
for (const [name, value] of badSettings) {
    test(`fleetd serve with ${name}=${JSON.stringify(value)} exits 2 naming the setting`, opts, async () => {
        const run = await runFleetd(['serve'], {
            env: { [name]: value, FLEETD_LISTEN: '127.0.0.1:0' },
            databaseUrl: UNREACHABLE_DATABASE_URL,
            timeoutMs: 10_000,
        });
        assert.ok(!run.timedOut, `fleetd kept running with ${name}=${value}:\n${describeRun(run)}`);
        assert.equal(run.code, 2, describeRun(run));
        const line = assertOneErrorLine(run);
        assert.ok(line.includes(name), `the error line names ${name}: ${line}`);
    });
}

test('fleetd config prints every setting as NAME=VALUE, the same settings as --markdown documents', opts, async () => {
    const run = await runFleetd(['config']);
    assert.equal(run.code, 0, describeRun(run));
    const values = parseConfig(run.stdout);
    for (const name of ['DATABASE_URL', 'FLEETD_LISTEN', 'FLEETD_MAX_HEADERS', 'FLEETD_HEADER_TIMEOUT', 'FLEETD_CONFIG'])
        assert.ok(values.has(name), `fleetd config lists ${name}`);
    const md = await runFleetd(['config', '--markdown']);
    assert.equal(md.code, 0, describeRun(md));
    const documented = [...md.stdout.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((m) => m[1]);
    assert.deepEqual([...values.keys()].sort(), [...documented].sort(), 'config and config --markdown list the same settings');
});

test('FLEETD_CONFIG file is applied, and the environment overrides it', opts, async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'fleetd.env');
    writeFileSync(
        file,
        [
            '# fleetd settings for the integration test',
            '',
            'FLEETD_MAX_HEADERS=32',
            'FLEETD_KEEPALIVE_TIMEOUT=7s',
            'FLEETD_LOG_LEVEL=warn',
            'FLEETD_LISTEN="127.0.0.1:4999"',
            '',
        ].join('\n'),
    );
    const baseline = parseConfig((await runFleetd(['config'])).stdout);
    const run = await runFleetd(['config'], { env: { FLEETD_CONFIG: file, FLEETD_LOG_LEVEL: 'error' } });
    assert.equal(run.code, 0, describeRun(run));
    const values = parseConfig(run.stdout);

    // The test means something only if the file's values differ from the defaults.
    assert.notEqual(baseline.get('FLEETD_MAX_HEADERS'), '32');
    assert.notEqual(baseline.get('FLEETD_KEEPALIVE_TIMEOUT'), '7s');
    assert.notEqual(baseline.get('FLEETD_LOG_LEVEL'), 'error');

    assert.equal(values.get('FLEETD_MAX_HEADERS'), '32', 'from the file');
    assert.equal(values.get('FLEETD_KEEPALIVE_TIMEOUT'), '7s', 'from the file');
    assert.equal(values.get('FLEETD_LISTEN'), '127.0.0.1:4999', 'from the file, quotes removed');
    assert.equal(values.get('FLEETD_LOG_LEVEL'), 'error', 'the environment overrides the file');
    assert.equal(values.get('FLEETD_HEADER_TIMEOUT'), baseline.get('FLEETD_HEADER_TIMEOUT'), 'unset: the default');
});

test('a bad value inside the FLEETD_CONFIG file exits 2 naming the setting', opts, async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'fleetd.env');
    writeFileSync(file, 'FLEETD_LOG_LEVEL=info\nFLEETD_MAX_HEADERS=lots\n');
    const run = await runFleetd(['config'], { env: { FLEETD_CONFIG: file } });
    assert.equal(run.code, 2, describeRun(run));
    const line = assertOneErrorLine(run);
    assert.ok(line.includes('FLEETD_MAX_HEADERS'), `names the setting: ${line}`);
});

test('a FLEETD_CONFIG file that does not exist exits 2 naming FLEETD_CONFIG', opts, async (t) => {
    const dir = tempDir(t);
    const run = await runFleetd(['config'], { env: { FLEETD_CONFIG: join(dir, 'missing.env') } });
    assert.equal(run.code, 2, describeRun(run));
    const line = assertOneErrorLine(run);
    assert.ok(line.includes('FLEETD_CONFIG'), `names the setting: ${line}`);
});

test('fleetd config never prints secrets', opts, async () => {
    const password = 'pw-do-not-print-7f3a';
    const masterKey = 'ab'.repeat(32);
    const run = await runFleetd(['config'], {
        env: { FLEETD_MASTER_KEY: masterKey },
        databaseUrl: `postgresql://fleetd:${password}@127.0.0.1:1/fleetd`,
    });
    assert.equal(run.code, 0, describeRun(run));
    assert.ok(!run.stdout.includes(password), 'the database password is not printed');
    assert.ok(!run.stdout.includes(masterKey), 'the master key is not printed');
    const values = parseConfig(run.stdout);
    assert.notEqual(values.get('FLEETD_MASTER_KEY'), '', 'a set secret is shown as set, not as empty');
});
