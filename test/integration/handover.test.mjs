// A new fleetd takes over the listening socket from an old one with no refused connection
// (issue 7, "Graceful shutdown and restart"), the way systemd's fleetd.socket does it: a holder
// (test/support/listen_holder.c) owns the socket and starts each fleetd with it (LISTEN_FDS).
// While clients open connection after connection, a second fleetd starts, the first gets SIGTERM,
// drains and exits; every request must be answered 200.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { test } from 'node:test';
import { createDatabase, delay, FLEETD_BIN, get, migrate, requireEnv, TEST_TIMEOUT_MS, waitFor } from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

/** One GET /health on a new connection: 'ok' for a 200, else what went wrong. */
function probe(port) {
    return new Promise((resolve) => {
        const sock = net.connect({ host: '127.0.0.1', port });
        let data = '';
        const done = (what) => {
            sock.destroy();
            resolve(what);
        };
        sock.setTimeout(5000, () => done('timeout'));
        sock.on('error', (e) => done(e.code ?? String(e)));
        sock.on('data', (d) => (data += d));
        sock.on('end', () => done(data.startsWith('HTTP/1.1 200 ') ? 'ok' : `answer: ${data.split('\r\n')[0] || '(empty)'}`));
        sock.on('connect', () => sock.write('GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    });
}

test('a second fleetd takes the socket over while the first drains: no connection refused or reset', opts, async (t) => {
    const db = await createDatabase('handover', t);
    await migrate(db);
    const holder = spawn(requireEnv('FLEETD_LISTEN_HOLDER'), ['--', FLEETD_BIN(), 'serve'], {
        env: { ...process.env, DATABASE_URL: db.url, FLEETD_LOG_FORMAT: 'json', FLEETD_SHUTDOWN_TIMEOUT: '5s', FLEETD_MASTER_KEY: '' },
        stdio: ['pipe', 'pipe', 'pipe'],
    });
    const pids = [];
    t.after(() => {
        for (const pid of pids) {
            try {
                process.kill(pid, 'SIGKILL');
            } catch {
                /* gone */
            }
        }
        holder.kill('SIGKILL');
    });
    const events = [];
    readline.createInterface({ input: holder.stderr }).on('line', (line) => {
        try {
            events.push(JSON.parse(line));
        } catch {
            events.push({ event: 'text', message: line });
        }
    });
    const out = [];
    readline.createInterface({ input: holder.stdout }).on('line', (line) => out.push(line));
    const count = (name) => events.filter((e) => e.event === name).length;
    await waitFor(() => out.some((l) => l.startsWith('port ')), { what: 'the holder bound its socket' });
    const port = Number(out.find((l) => l.startsWith('port ')).slice(5));
    const spawnFleetd = async () => {
        const before = out.length;
        holder.stdin.write('spawn\n');
        await waitFor(() => out.slice(before).some((l) => l.startsWith('pid ')), { what: 'spawned' });
        const pid = Number(out.slice(before).find((l) => l.startsWith('pid ')).slice(4));
        pids.push(pid);
        return pid;
    };

    const first = await spawnFleetd();
    await waitFor(async () => (await get(port, '/ready')).status === 200, { what: 'the first fleetd is ready', timeoutMs: 15_000 });
    const listening = events.find((e) => e.event === 'http.listening');
    assert.equal(listening.socket, 'systemd', 'fleetd used the socket it was given');

    // clients: four at a time, a new connection per request, until told to stop
    const results = [];
    let stop = false;
    const workers = Array.from({ length: 4 }, async () => {
        while (!stop) results.push({ at: Date.now(), what: await probe(port) });
    });

    await delay(300);
    await spawnFleetd();
    await waitFor(() => count('http.listening') === 2, { what: 'the second fleetd serves', timeoutMs: 15_000 });
    await delay(300);
    process.kill(first, 'SIGTERM');
    await waitFor(() => count('fleetd.stopped') === 1, { what: 'the first fleetd stopped', timeoutMs: 15_000 });
    holder.stdin.write('reap\n');
    const stoppedAt = Date.now();
    await delay(700);
    stop = true;
    await Promise.all(workers);

    const failed = results.filter((r) => r.what !== 'ok');
    assert.equal(failed.length, 0, `failed requests: ${JSON.stringify(failed.slice(0, 5))} of ${results.length}`);
    assert.ok(results.length > 50, `enough requests to mean something: ${results.length}`);
    assert.ok(
        results.some((r) => r.at > stoppedAt),
        'requests kept being answered after the first fleetd exited',
    );
    assert.equal((await get(port, '/ready')).status, 200, 'the second fleetd is ready');
});
