// GET /metrics (CONTRACT.md "Operations"): the Prometheus text format checked by promtool, counters
// that move with the requests and ingest batches sent, and who may read it (FLEETD_METRICS_ACCESS).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { test } from 'node:test';
import {
    assertJsonError,
    createDatabase,
    get,
    migrate,
    postSigned,
    request,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const bearer = (token) => ({ Authorization: `Bearer ${token}` });
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

async function setup(t, env = {}) {
    const db = await createDatabase('metrics', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    const secret = (await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1'])).trim();
    const admin = (await cli(db, ['token', 'create', '--admin', '--name', 'ops'])).trim();
    const reader = (await cli(db, ['token', 'create', '--fleet', 'harbor-1'])).trim();
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_SHARDS: '2', FLEETD_JOBS_POLL_INTERVAL: '100ms', ...env },
    });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    return { db, srv, secret, admin, reader };
}

/** Samples of the exposition: a Map from `name{labels}` (as written) to the number. */
function parse(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        const cut = line.lastIndexOf(' ');
        out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
    }
    return out;
}

async function scrape(port, headers = {}) {
    const res = await get(port, '/metrics', headers);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    return { text: res.text, m: parse(res.text) };
}

function promtool(text) {
    return new Promise((resolve, reject) => {
        const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, out }));
        child.stdin.end(text);
    });
}

const fix = (vehicle) => ({
    fleet_id: 'harbor-1',
    vehicle_id: vehicle,
    lat: 59.3293,
    lng: 18.0686,
    recorded_at: new Date(Date.now() - 60_000).toISOString(),
});

test('GET /metrics: requests, ingest, trackers, jobs and the process, valid for promtool', opts, async (t) => {
    const { srv, secret } = await setup(t);
    const before = (await scrape(srv.port)).m;
    const health = 'fleetd_http_requests_total{route="/health",code="200"}';
    const h0 = before.get(health) ?? 0;
    for (let i = 0; i < 3; i++) assert.equal((await get(srv.port, '/health')).status, 200);
    assert.equal((await get(srv.port, '/no/such/path')).status, 404);

    const batches = [[fix('truck-1'), fix('truck-2')], [fix('truck-3')]];
    for (const fixes of batches) {
        const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes } });
        assert.equal(res.status, 202, res.text);
    }
    const bad = await postSigned(srv.port, { partner: 'acme', secret, body: '{"fixes": [' });
    assertJsonError(bad, 400, 'invalid_json');

    // the audit jobs complete, so the job counts (re-read every 5 s) show them
    await waitFor(async () => ((await scrape(srv.port)).m.get('fleetd_jobs{queue="audit",state="completed"}') ?? 0) >= 2, {
        what: 'two completed audit jobs in fleetd_jobs',
        timeoutMs: 20_000,
        intervalMs: 500,
    });
    const { text, m } = await scrape(srv.port);

    assert.equal(m.get(health), h0 + 3, 'three GET /health counted as 200');
    assert.equal(m.get('fleetd_http_requests_total{route="unmatched",code="404"}'), 1);
    assert.equal(m.get('fleetd_http_requests_total{route="/api/v1/ingest/{partner_id}",code="202"}'), 2);
    assert.equal(m.get('fleetd_http_requests_total{route="/api/v1/ingest/{partner_id}",code="400"}'), 1);
    const inf = m.get('fleetd_http_request_duration_seconds_bucket{route="/health",le="+Inf"}');
    assert.equal(inf, m.get('fleetd_http_request_duration_seconds_count{route="/health"}'));
    assert.ok(inf >= h0 + 3, 'the histogram counts the requests');
    assert.ok(m.get('fleetd_http_request_duration_seconds_sum{route="/health"}') > 0);

    assert.equal(m.get('fleetd_ingest_batches_total{result="accepted"}'), 2);
    assert.equal(m.get('fleetd_ingest_batches_total{result="duplicate"}'), 0);
    assert.equal(m.get('fleetd_ingest_fixes_total'), 3);
    assert.equal(m.get('fleetd_ingest_rejected_total{reason="invalid_json"}'), 1);
    assert.equal(m.get('fleetd_ingest_rejected_total{reason="invalid_signature"}'), 0);

    assert.equal(m.get('fleetd_tree_up'), 1);
    assert.equal(m.get('fleetd_trackers'), 1, 'the tracker of harbor-1 runs');
    assert.ok(m.has('fleetd_tracker_mailbox_messages') && m.has('fleetd_tracker_mailbox_messages_max'));
    assert.equal(m.get('fleetd_supervisor_restarts_total'), 0);
    assert.equal(m.get('fleetd_db_connections{state="up"}'), 2, 'one connection per shard');
    assert.equal(m.get('fleetd_db_connections{state="down"}'), 0);
    assert.ok(m.get('fleetd_jobs_read_age_seconds') < 6);
    assert.equal(m.get('fleetd_websocket_connections'), 0);
    assert.ok(m.has('fleetd_live_positions_coalesced_total'));
    assert.ok(m.get('fleetd_process_resident_memory_bytes') > 1 << 20);
    assert.ok(m.get('fleetd_process_open_fds') > 3);
    const started = m.get('fleetd_process_start_time_seconds');
    assert.ok(Math.abs(started - Date.now() / 1000) < 120, `start time ${started} is about now`);
    assert.ok([...m.keys()].some((k) => /^fleetd_build_info\{version="[^"]+"\}$/.test(k)));

    const check = await promtool(text);
    assert.equal(check.code, 0, `promtool check metrics:\n${check.out}\n${text}`);
    assert.equal(check.out.trim(), '', `promtool has no complaint: ${check.out}`);
});

test('fleetd_supervisor_restarts_total counts a drill, and keeps counting it after the tracker stops', opts, async (t) => {
    const { srv, secret, admin } = await setup(t, { FLEETD_TRACKER_IDLE_TIMEOUT: '1s' });
    const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes: [fix('truck-1')] } });
    assert.equal(res.status, 202, res.text);
    const drill = await request(srv.port, { method: 'POST', path: '/admin/tree/tracker:harbor-1/restart', headers: { 'Content-Length': '0', Authorization: `Bearer ${admin}` } });
    assert.equal(drill.status, 200, drill.text);
    assert.equal((await scrape(srv.port)).m.get('fleetd_supervisor_restarts_total'), 1);
    // idle for a second, the tracker stops and leaves the tree; the counter must not go down
    await waitFor(async () => ((await scrape(srv.port)).m.get('fleetd_trackers') ?? 1) === 0, { what: 'the idle tracker to stop', timeoutMs: 15_000 });
    assert.equal((await scrape(srv.port)).m.get('fleetd_supervisor_restarts_total'), 1);
});

test('FLEETD_METRICS_ACCESS=token: 401 without a token, 403 for one that is not admin, 200 for admin', opts, async (t) => {
    const { srv, admin, reader } = await setup(t, { FLEETD_METRICS_ACCESS: 'token' });
    const none = await get(srv.port, '/metrics');
    assertJsonError(none, 401, 'unauthorized');
    assert.match(none.headers['www-authenticate'], /^Bearer/);
    assertJsonError(await get(srv.port, '/metrics', bearer(reader)), 403, 'forbidden');
    assertJsonError(await get(srv.port, '/metrics', bearer('fl_' + 'A'.repeat(43))), 401, 'unauthorized');
    const { m } = await scrape(srv.port, bearer(admin));
    assert.equal(m.get('fleetd_tree_up'), 1);
});

test('FLEETD_METRICS_ACCESS=public lets anyone read; loopback (the default) needs a token from elsewhere', opts, async (t) => {
    const pub = await setup(t, { FLEETD_METRICS_ACCESS: 'public' });
    await scrape(pub.srv.port);

    // the default from a loopback peer needs no token (the first test); from another address it does
    const address = Object.values(networkInterfaces())
        .flat()
        .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    if (!address) {
        t.diagnostic('no non-loopback IPv4 address on this machine: the remote-peer case is not exercised');
        return;
    }
    const { srv, admin } = await setup(t, { FLEETD_LISTEN: '0.0.0.0:0' });
    await scrape(srv.port); // 127.0.0.1
    const url = `http://${address}:${srv.port}/metrics`;
    const anon = await fetch(url);
    assert.equal(anon.status, 401, `from ${address} without a token`);
    const ok = await fetch(url, { headers: bearer(admin) });
    assert.equal(ok.status, 200, `from ${address} with an admin token`);
    assert.match(await ok.text(), /^# HELP fleetd_/m);
});
