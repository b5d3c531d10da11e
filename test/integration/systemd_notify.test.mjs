// fleetd under systemd, without systemd: fleetd writes to a NOTIFY_SOCKET that the test binds (with
// test/support/notify_sink, since node has no unix datagram sockets) and gets WATCHDOG_USEC as
// systemd would set it for WatchdogSec=. READY=1 once it serves, WATCHDOG=1 every half interval
// while every event loop answers (and not while one is stuck: the Debug-build SIGUSR2 drill blocks
// shard 0 for 2 s), STOPPING=1 on SIGTERM. Also SIGHUP: it reloads the log level from the
// FLEETD_CONFIG file and logs fleetd.reloaded without dropping a keep-alive connection or a WebSocket.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import {
    accessLines,
    connect,
    createDatabase,
    delay,
    describeRun,
    get,
    migrate,
    requireEnv,
    runFleetd,
    startFleetd,
    tempDir,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const WATCHDOG_MS = 1000; // fleetd pings every 500 ms

/** Binds a unix datagram socket in a temp dir; messages: [{at, text}] with newlines shown as '|'. */
async function notifySink(t) {
    const path = join(tempDir(t), 'notify.sock');
    const child = spawn(requireEnv('FLEETD_NOTIFY_SINK'), [path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const messages = [];
    let listening = false;
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
        partial += d;
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
            const line = partial.slice(0, nl);
            partial = partial.slice(nl + 1);
            if (line === 'LISTENING') listening = true;
            else messages.push({ at: performance.now(), text: line });
        }
    });
    const exited = new Promise((resolve) => child.on('close', resolve));
    t.after(async () => {
        child.kill('SIGTERM');
        await exited;
    });
    await waitFor(() => listening, { what: 'notify_sink listening' });
    const pings = () => messages.filter((m) => m.text === 'WATCHDOG=1');
    return { path, messages, pings };
}

async function fleetdWithSink(t, sink, env = {}) {
    const db = await createDatabase('notify', t);
    await migrate(db);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: { NOTIFY_SOCKET: sink.path, FLEETD_SHARDS: '2', ...env },
    });
    return { db, srv };
}

/** The longest pause between consecutive pings among those received after `since`. */
function longestGap(pings, since) {
    const at = pings.filter((p) => p.at >= since).map((p) => p.at);
    let gap = 0;
    for (let i = 1; i < at.length; i++) gap = Math.max(gap, at[i] - at[i - 1]);
    return gap;
}

test('READY=1 once it serves, WATCHDOG=1 each half interval, STOPPING=1 on SIGTERM', opts, async (t) => {
    const sink = await notifySink(t);
    const { srv } = await fleetdWithSink(t, sink, { WATCHDOG_USEC: String(WATCHDOG_MS * 1000) });

    const ready = await waitFor(() => sink.messages.find((m) => m.text.startsWith('READY=1')), { what: 'READY=1' });
    // whoever waits for READY=1 (systemd, then a deploy script) finds /ready answering
    const res = await get(srv.port, '/ready');
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json?.status, 'ready', res.text);
    const enabled = await srv.waitForLog('watchdog.enabled');
    assert.equal(enabled.interval_ms, WATCHDOG_MS);
    assert.equal(enabled.ping_every_ms, WATCHDOG_MS / 2);

    await delay(3000);
    const pings = sink.pings();
    assert.ok(pings.length >= 4, `at least 4 pings in 3 s at a 500 ms period, got ${pings.length}`);
    assert.ok(pings[0].at >= ready.at, 'the first ping comes after READY=1');
    assert.ok(longestGap(pings, 0) < WATCHDOG_MS, `no gap of a whole interval between pings: ${longestGap(pings, 0)} ms`);
    assert.ok(!sink.messages.some((m) => m.text.startsWith('STOPPING=1')), 'no STOPPING=1 before SIGTERM');

    await srv.stop();
    await waitFor(() => sink.messages.some((m) => m.text.startsWith('STOPPING=1')), { what: 'STOPPING=1', timeoutMs: 2000 });
    const stopping = sink.messages.findIndex((m) => m.text.startsWith('STOPPING=1'));
    const readyAt = sink.messages.findIndex((m) => m.text.startsWith('READY=1'));
    assert.ok(readyAt < stopping, 'READY=1 before STOPPING=1');
    assert.equal(sink.messages.filter((m) => m.text.startsWith('READY=1')).length, 1, 'READY=1 once');
});

test('a stuck event loop stops the pings for longer than the interval; they resume when it answers', opts, async (t) => {
    const sink = await notifySink(t);
    const { srv } = await fleetdWithSink(t, sink, { WATCHDOG_USEC: String(WATCHDOG_MS * 1000) });
    await waitFor(() => sink.pings().length >= 2, { what: 'two pings before the drill' });

    const before = performance.now();
    srv.child.kill('SIGUSR2'); // Debug builds: block shard 0 for 2 s
    await srv.waitForLog('watchdog.drill');
    const stalled = await srv.waitForLog('watchdog.stalled', 3000);
    assert.equal(stalled.shard, 0);
    await srv.waitForLog('watchdog.recovered', 5000);
    await waitFor(() => sink.pings().filter((p) => p.at > before).length >= 3, { what: 'pings after the stall', timeoutMs: 5000 });
    const gap = longestGap(sink.pings(), before - WATCHDOG_MS);
    // systemd would have killed it: no ping for more than WatchdogSec
    assert.ok(gap > WATCHDOG_MS, `the pings paused for more than ${WATCHDOG_MS} ms while shard 0 was blocked: ${gap} ms`);
    assert.equal((await get(srv.port, '/health')).status, 200);
});

test('no WATCHDOG_USEC (or one meant for another process): READY=1 but no pings', opts, async (t) => {
    const sink = await notifySink(t);
    // WATCHDOG_PID names the process the watchdog is for; systemd sets it to fleetd's own pid
    const { srv } = await fleetdWithSink(t, sink, { WATCHDOG_USEC: '400000', WATCHDOG_PID: '1' });
    await waitFor(() => sink.messages.some((m) => m.text.startsWith('READY=1')), { what: 'READY=1' });
    await delay(1000);
    assert.equal(sink.pings().length, 0, 'no WATCHDOG=1');
    assert.ok(!srv.logs.some((e) => e.event === 'watchdog.enabled'));
});

test('without NOTIFY_SOCKET fleetd serves as before', opts, async (t) => {
    const srv = await startFleetd({ t, env: { NOTIFY_SOCKET: undefined, WATCHDOG_USEC: '400000' } });
    assert.equal((await get(srv.port, '/health')).status, 200);
    assert.ok(!srv.logs.some((e) => /^systemd\./.test(e.event ?? '')), 'no notification errors');
});

test('SIGHUP: fleetd.reloaded with the log level from FLEETD_CONFIG; keep-alive and WebSocket connections survive', opts, async (t) => {
    const db = await createDatabase('sighup', t);
    await migrate(db);
    const run = await runFleetd(['fleet', 'create', 'harbor-1'], { databaseUrl: db.url });
    assert.equal(run.code, 0, describeRun(run));
    const token = (await runFleetd(['token', 'create', '--fleet', 'harbor-1', '--name', 'hup'], { databaseUrl: db.url })).stdout.trim();
    const config = join(tempDir(t), 'fleetd.conf');
    writeFileSync(config, 'FLEETD_LOG_LEVEL=info\n');
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_CONFIG: config, FLEETD_LOG_LEVEL: undefined } });

    const conn = await connect(srv.port, t);
    assert.equal((await conn.request({ path: '/health', headers: { 'X-Request-Id': 'hup-1' } })).status, 200);
    await waitFor(() => accessLines(srv, 'hup-1').length === 1, { what: 'info: http.access is written' });

    const ws = new WebSocket(`ws://127.0.0.1:${srv.port}/socket/websocket?vsn=2.0.0&token=${token}`);
    t.after(() => ws.terminate());
    const frames = [];
    let closed = null;
    ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
    ws.on('close', (code) => (closed = code));
    await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
    });
    const heartbeat = async (ref) => {
        ws.send(JSON.stringify([null, ref, 'phoenix', 'heartbeat', {}]));
        await waitFor(() => frames.some((f) => f[1] === ref), { what: `heartbeat reply ${ref}` });
    };
    await heartbeat('1');

    writeFileSync(config, 'FLEETD_LOG_LEVEL=warn\n');
    srv.child.kill('SIGHUP');
    const reloaded = await srv.waitForLog('fleetd.reloaded');
    assert.equal(reloaded.log_level, 'warn');
    assert.equal(reloaded.tokens, 'forgotten');

    // the same connections carry on
    assert.equal((await conn.request({ path: '/health', headers: { 'X-Request-Id': 'hup-2' } })).status, 200);
    await heartbeat('2');
    assert.equal(closed, null, 'the WebSocket is still open');
    assert.equal(conn.closed ?? false, false);
    await delay(200);
    assert.equal(accessLines(srv, 'hup-2').length, 0, 'warn: http.access (info) is no longer written');

    // a bad value keeps the level and says why
    writeFileSync(config, 'FLEETD_LOG_LEVEL=loud\n');
    srv.child.kill('SIGHUP');
    const failed = await srv.waitForLog('fleetd.reload_config');
    assert.match(failed.error, /FLEETD_LOG_LEVEL/);

    writeFileSync(config, 'FLEETD_LOG_LEVEL=debug\n');
    srv.child.kill('SIGHUP');
    await srv.waitForLog((e) => e.event === 'fleetd.reloaded' && e.log_level === 'debug');
    assert.equal((await conn.request({ path: '/health', headers: { 'X-Request-Id': 'hup-3' } })).status, 200);
    await waitFor(() => accessLines(srv, 'hup-3').length === 1, { what: 'http.access again at debug' });
    await heartbeat('3');
    assert.equal(closed, null, 'the WebSocket is still open');
});
