// deploy/nginx/fleetd.conf, the site the runbook tells operators to install, in front of a real
// fleetd: only the addresses, ports and certificate paths are changed (to loopback, free ports and
// a certificate made here with openssl). Through it: HTTP redirects to HTTPS, requests carry a
// request id both logs share, partners' signed batches arrive, a browser-like WebSocket (with an
// Origin) joins a fleet and sees the position, and /metrics and /admin answer only from the
// internal addresses (127.0.0.1 stands for them; 127.0.0.2 is "the internet").
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import WebSocket from 'ws';
import {
    createDatabase,
    describeRun,
    get,
    migrate,
    runCommand,
    runFleetdOk,
    SOURCE_DIR,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
    withTimeout,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };
const MASTER_KEY = randomBytes(32).toString('hex');
const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p)) ?? 'nginx';

const env = {};

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** The shipped site with this machine's ports and certificate; everything else as shipped. */
function siteFor(dir, { fleetdPort, httpPort, httpsPort }) {
    const shipped = readFileSync(path.join(SOURCE_DIR(), 'deploy/nginx/fleetd.conf'), 'utf8');
    const edits = [
        ['server 127.0.0.1:4000;', `server 127.0.0.1:${fleetdPort};`],
        ['    listen 80;\n', `    listen 127.0.0.1:${httpPort};\n`],
        ['    listen [::]:80;\n', ''],
        ['    listen 443 ssl http2;\n', `    listen 127.0.0.1:${httpsPort} ssl http2;\n`],
        ['    listen [::]:443 ssl http2;\n', ''],
        ['/etc/ssl/fleetd/fullchain.pem', path.join(dir, 'cert.pem')],
        ['/etc/ssl/fleetd/privkey.pem', path.join(dir, 'key.pem')],
    ];
    let site = shipped;
    for (const [from, to] of edits) {
        assert.ok(site.includes(from), `deploy/nginx/fleetd.conf no longer has ${JSON.stringify(from)}: update this test`);
        site = site.replaceAll(from, to);
    }
    return site;
}

before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fleetd-nginx-'));
    env.dir = dir;
    chmodSync(dir, 0o755); // nginx's workers (nobody when started as root) read the certificate
    for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) {
        mkdirSync(path.join(dir, sub));
        chmodSync(path.join(dir, sub), 0o777);
    }
    const cert = await runCommand('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
        '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ]);
    assert.equal(cert.code, 0, describeRun(cert));
    chmodSync(path.join(dir, 'key.pem'), 0o644);

    env.db = await createDatabase('nginx_site');
    await migrate(env.db);
    await cli(env.db, ['fleet', 'create', 'harbor-1']);
    env.secret = await cli(env.db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    env.token = await cli(env.db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'anna']);
    env.admin = await cli(env.db, ['token', 'create', '--admin', '--name', 'oncall']);
    env.srv = await startFleetd({ databaseUrl: env.db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });
    await waitFor(async () => (await get(env.srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });

    env.httpPort = await freePort();
    env.httpsPort = await freePort();
    writeFileSync(path.join(dir, 'site.conf'), siteFor(dir, { fleetdPort: env.srv.port, httpPort: env.httpPort, httpsPort: env.httpsPort }));
    const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
        .map((kind, i) => `    ${kind}_temp_path ${path.join(dir, ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'][i])};`)
        .join('\n');
    writeFileSync(
        path.join(dir, 'nginx.conf'),
        `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\ndaemon off;\n` +
            `events { worker_connections 256; }\n` +
            `http {\n    access_log off;\n${temp}\n    include ${dir}/site.conf;\n}\n`,
    );
    const args = ['-p', dir, '-c', path.join(dir, 'nginx.conf')];
    const check = await runCommand(NGINX, [...args, '-t']);
    assert.equal(check.code, 0, `nginx -t refuses the site:\n${describeRun(check)}`);
    env.nginx = spawn(NGINX, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    env.nginxErr = '';
    env.nginx.stderr.setEncoding('utf8').on('data', (d) => (env.nginxErr += d));
    await waitFor(
        () =>
            new Promise((resolve) => {
                const s = net.connect(env.httpsPort, '127.0.0.1', () => {
                    s.destroy();
                    resolve(true);
                });
                s.once('error', () => resolve(false));
            }),
        { what: `nginx listening on ${env.httpsPort}; stderr: ${env.nginxErr}`, timeoutMs: 10_000 },
    );
});

after(async () => {
    if (env.nginx && env.nginx.exitCode === null) {
        const exited = new Promise((resolve) => env.nginx.once('exit', resolve));
        env.nginx.kill('SIGQUIT');
        await withTimeout(exited, 10_000, 'nginx to stop');
    }
    try {
        await env.srv?.stop(); // asserts exit status 0 (and, under ASan, no leak)
    } finally {
        await env.db?.drop();
        if (env.dir) rmSync(env.dir, { recursive: true, force: true });
    }
});

/** One request through nginx (HTTPS unless tls is false; the test certificate is self-signed). */
function viaNginx(reqPath, { method = 'GET', headers = {}, body, from = '127.0.0.1', tls = true } = {}) {
    const mod = tls ? https : http;
    const port = tls ? env.httpsPort : env.httpPort;
    return new Promise((resolve, reject) => {
        const req = mod.request(
            { host: '127.0.0.1', port, path: reqPath, method, headers, localAddress: from, rejectUnauthorized: false, agent: false },
            (res) => {
                let text = '';
                res.setEncoding('utf8');
                res.on('data', (d) => (text += d));
                res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
            },
        );
        req.once('error', reject);
        req.end(body);
    });
}

/** A signed batch of one fix, as a partner posts it. */
function signedBatch(vehicle, lat) {
    const body = JSON.stringify({
        fixes: [{ fleet_id: 'harbor-1', vehicle_id: vehicle, lat, lng: 18.07, recorded_at: new Date(Date.now() - 1000).toISOString() }],
    });
    const id = `msg_nginx_${randomBytes(6).toString('hex')}`;
    const at = new Date();
    return {
        body,
        headers: {
            'Content-Type': 'application/json',
            'webhook-id': id,
            'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
            'webhook-signature': new Webhook(env.secret).sign(id, at, body),
        },
    };
}

test('plain HTTP is redirected to HTTPS; over HTTPS fleetd answers with the request id nginx made or was given', opts, async () => {
    const plain = await viaNginx('/health', { tls: false });
    assert.equal(plain.status, 301);
    assert.match(plain.headers.location, /^https:\/\/127\.0\.0\.1\/health$/);

    const health = await viaNginx('/health');
    assert.equal(health.status, 200, health.text);
    assert.deepEqual(JSON.parse(health.text), { status: 'ok' });
    assert.match(health.headers['x-request-id'], /^[0-9a-f]{32}$/, "nginx's $request_id, echoed by fleetd");
    assert.match(health.headers['strict-transport-security'] ?? '', /max-age=/);
    const given = await viaNginx('/ready', { headers: { 'X-Request-Id': 'nginx-site-test-1' } });
    assert.equal(given.status, 200, given.text);
    assert.equal(given.headers['x-request-id'], 'nginx-site-test-1');
});

test('a browser-like WebSocket (Origin = the site) joins through nginx and sees a batch a partner posted through it', opts, async (t) => {
    const origin = `https://127.0.0.1:${env.httpsPort}`;
    const ws = new WebSocket(`wss://127.0.0.1:${env.httpsPort}/socket/websocket?vsn=2.0.0&token=${env.token}`, {
        origin,
        rejectUnauthorized: false,
    });
    t.after(() => ws.terminate());
    const frames = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    const opened = new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
        ws.once('error', reject);
    });
    await withTimeout(opened, 10_000, 'the WebSocket through nginx');
    ws.send(JSON.stringify(['1', '1', 'fleet:harbor-1', 'phx_join', {}]));
    await waitFor(() => frames.some((f) => f[1] === '1' && f[4]?.status === 'ok'), { what: 'join ok through nginx' });

    const batch = signedBatch('truck-via-nginx', 59.31);
    const res = await viaNginx('/api/v1/ingest/acme', { method: 'POST', headers: batch.headers, body: batch.body });
    assert.equal(res.status, 202, res.text);
    await waitFor(() => frames.some((f) => f[3] === 'position' && f[4].vehicle_id === 'truck-via-nginx'), { what: 'the position through nginx' });

    // another site's page may not open one (fleetd's same-origin rule sees the Host nginx passes on)
    const foreign = new WebSocket(`wss://127.0.0.1:${env.httpsPort}/socket/websocket?vsn=2.0.0&token=${env.token}`, {
        origin: 'https://evil.example',
        rejectUnauthorized: false,
    });
    const refused = await withTimeout(
        new Promise((resolve) => {
            foreign.once('unexpected-response', (req, r) => resolve(r.statusCode));
            foreign.once('open', () => resolve('open'));
            foreign.once('error', () => resolve('error'));
        }),
        10_000,
        'the foreign origin answer',
    );
    foreign.terminate();
    assert.equal(refused, 403);
});

test('/metrics and /admin answer from the internal side only; nginx refuses them elsewhere', opts, async () => {
    const internal = await viaNginx('/metrics');
    assert.equal(internal.status, 200, internal.text.slice(0, 300));
    assert.match(internal.text, /^# (HELP|TYPE) fleetd_/m);
    const tree = await viaNginx('/admin/tree', { headers: { Authorization: `Bearer ${env.admin}` } });
    assert.equal(tree.status, 200, tree.text.slice(0, 300));
    assert.equal(JSON.parse(tree.text).id, 'root');

    for (const route of ['/metrics', '/admin/tree', '/admin']) {
        const outside = await viaNginx(route, { from: '127.0.0.2', headers: { Authorization: `Bearer ${env.admin}` } });
        assert.equal(outside.status, 403, `${route} from 127.0.0.2: ${outside.status}`);
    }
    // the rest of the site is public
    const status = await viaNginx('/api/v1/fleets/harbor-1/status', { from: '127.0.0.2', headers: { Authorization: `Bearer ${env.token}` } });
    assert.equal(status.status, 200, status.text);
});

test('a body over 1 MiB is refused by nginx before fleetd reads it (413)', opts, async () => {
    // announced, not sent: nginx answers from the Content-Length alone
    const res = await viaNginx('/api/v1/ingest/acme', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Content-Length': String(1024 * 1024 + 1) },
    });
    assert.equal(res.status, 413);
});
