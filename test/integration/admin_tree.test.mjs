// The supervision tree of a running daemon: GET /admin/tree, `fleetd tree`, a drill restart of one
// child (POST /admin/tree/{id}/restart, `fleetd tree restart`), and the root giving up after too many
// restarts, which ends the process with status 1 (systemd restarts it). The admin routes need an
// admin bearer token: 401 without a valid one, 403 for a token that is not admin.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
    assertJsonError,
    createDatabase,
    describeRun,
    get,
    migrate,
    request,
    runFleetd,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

const createToken = (db, args) => runFleetdOk(['token', 'create', ...args], { databaseUrl: db.url });

/** A migrated database, an admin token (admin) and a running fleetd. */
async function migratedDaemon(t, { env = {}, expectExit = 0 } = {}) {
    const db = await createDatabase('tree', t);
    await migrate(db);
    const admin = await createToken(db, ['--admin', '--name', 'ops']);
    const srv = await startFleetd({
        t,
        databaseUrl: db.url,
        expectExit,
        env: { FLEETD_SHARDS: '2', FLEETD_DB_HEALTH_INTERVAL: '200ms', ...env },
    });
    // the admin token is checked against the database (then cached per shard for 5 s)
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200' });
    return { db, srv, admin };
}

const bearer = (token) => ({ Authorization: `Bearer ${token}` });

function restart(port, id, token) {
    return request(port, { method: 'POST', path: `/admin/tree/${id}/restart`, headers: { 'Content-Length': '0', ...bearer(token) } });
}

function find(node, id) {
    if (node.id === id) return node;
    for (const c of node.children ?? []) {
        const found = find(c, id);
        if (found) return found;
    }
    return null;
}

function assertNodeShape(node) {
    for (const field of ['id', 'kind', 'status', 'restarts', 'last_crash', 'uptime_s']) assert.ok(field in node, `${node.id} has ${field}`);
    if (node.kind === 'supervisor') {
        assert.ok(['one_for_one', 'one_for_all', 'rest_for_one'].includes(node.strategy), `${node.id} strategy`);
        assert.ok(Array.isArray(node.children), `${node.id} children`);
        node.children.forEach(assertNodeShape);
    } else {
        assert.equal(node.kind, 'actor');
        assert.equal(typeof node.mailbox, 'number', `${node.id} mailbox`);
        assert.equal(typeof node.handled, 'number', `${node.id} handled`);
    }
}

async function tree(port, token) {
    const res = await get(port, '/admin/tree', bearer(token));
    assert.equal(res.status, 200, res.text);
    return res.json;
}

test('GET /admin/tree: root, then db, pubsub, jobs, trackers, endpoint, with one db and pubsub actor per shard', opts, async (t) => {
    const { srv, admin } = await migratedDaemon(t);
    const root = await tree(srv.port, admin);
    assert.equal(root.id, 'root');
    assert.equal(root.kind, 'supervisor');
    assert.equal(root.status, 'running');
    assert.deepEqual(root.children.map((c) => c.id), ['db', 'pubsub', 'jobs', 'trackers', 'endpoint']);
    assertNodeShape(root);
    assert.deepEqual(find(root, 'db').children.map((c) => c.id), ['db:0', 'db:1']);
    assert.deepEqual(find(root, 'pubsub').children.map((c) => c.id), ['pubsub:0', 'pubsub:1']);
    const trackers = find(root, 'trackers');
    assert.deepEqual(trackers.children.map((c) => [c.id, c.kind, c.dynamic]), [['trackers:0', 'supervisor', true], ['trackers:1', 'supervisor', true]]);
    for (const id of ['db:0', 'db:1', 'pubsub:0', 'endpoint']) {
        const n = find(root, id);
        assert.equal(n.status, 'running', `${id} running`);
        assert.equal(n.restarts, 0);
        assert.equal(n.last_crash, null);
    }
});

test('fleetd tree prints the indented tree; --json prints the same JSON', opts, async (t) => {
    const { srv, admin } = await migratedDaemon(t);
    const url = `http://127.0.0.1:${srv.port}`;
    const plain = await runFleetd(['tree', '--url', url], { env: { FLEETD_ADMIN_TOKEN: admin, LC_ALL: 'C' } });
    assert.equal(plain.code, 0, describeRun(plain));
    const lines = plain.stdout.trim().split('\n');
    assert.match(lines[0], /^NAME\s+TYPE\s+STATUS\s+UPTIME\s+RESTARTS\s+MAILBOX/);
    assert.match(lines[1], /^root\s+one_for_one\s+running/);
    for (const id of ['db:0', 'db:1', 'pubsub:1', 'trackers:0', 'jobs', 'endpoint']) assert.ok(lines.some((l) => l.includes(` ${id} `)), `a line for ${id}:\n${plain.stdout}`);
    // db:0 nested under db (ASCII lines outside a UTF-8 locale): an actor, running, no restart, mailbox 0
    assert.ok(lines.some((l) => /^\|  \|- db:0\s+actor\s+running\s+\d+s\s+0\s+0\s/.test(l)), `db:0 nested under db with its mailbox:\n${plain.stdout}`);

    const json = await runFleetd(['tree', '--json', '--url', url, '--token', admin]);
    assert.equal(json.code, 0, describeRun(json));
    const parsed = JSON.parse(json.stdout);
    assert.equal(parsed.id, 'root');
    assert.deepEqual(parsed.children.map((c) => c.id), ['db', 'pubsub', 'jobs', 'trackers', 'endpoint']);

    // FLEETD_LISTEN is where it looks by default
    const byEnv = await runFleetd(['tree', '--json'], { env: { FLEETD_LISTEN: `127.0.0.1:${srv.port}`, FLEETD_ADMIN_TOKEN: admin } });
    assert.equal(byEnv.code, 0, describeRun(byEnv));
    assert.equal(JSON.parse(byEnv.stdout).id, 'root');

    const nobody = await runFleetd(['tree', '--url', 'http://127.0.0.1:1', '--token', admin]);
    assert.equal(nobody.code, 1, describeRun(nobody));
    assert.match(nobody.stderr, /^fleetd: tree: cannot reach the daemon/);
    assert.equal(nobody.stderr.trim().split('\n').length, 1, 'one line');
});

test('a drill restarts one child: restarts 1, the reason and time recorded, fleetd still ready', opts, async (t) => {
    const { srv, admin } = await migratedDaemon(t);
    const run = await runFleetd(['tree', 'restart', 'db:1', '--url', `http://127.0.0.1:${srv.port}`], { env: { FLEETD_ADMIN_TOKEN: admin } });
    assert.equal(run.code, 0, describeRun(run));
    assert.equal(run.stdout.trim(), 'db:1 restarted');
    // shard 1's connection is back before its shard can check a token again
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready 200 after the drill' });
    const root = await tree(srv.port, admin);
    const db1 = find(root, 'db:1');
    assert.equal(db1.status, 'running');
    assert.equal(db1.restarts, 1);
    assert.equal(db1.last_crash.reason, 'killed by an operator (drill)');
    assert.match(db1.last_crash.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(find(root, 'db:0').restarts, 0, 'one_for_one: its sibling untouched');
    await srv.waitForLog((e) => e.event === 'sup.restarting' && e.child === 'db:1');

    // The endpoint itself can be restarted without refusing anyone: the listeners stay bound.
    const res = await restart(srv.port, 'endpoint', admin);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json, { id: 'endpoint', status: 'running' });
    assert.equal((await get(srv.port, '/health')).status, 200);

    const missing = await restart(srv.port, 'no-such-child', admin);
    assertJsonError(missing, 404, 'not_found');
});

test('too many restarts: the root gives up and fleetd exits 1 for systemd to restart it', opts, async (t) => {
    const { srv, admin } = await migratedDaemon(t, { expectExit: 1 });
    // The root allows 3 restarts in 5 s; the 4th makes it give up.
    for (let i = 0; i < 3; i++) {
        const res = await restart(srv.port, 'jobs', admin);
        assert.equal(res.status, 200, res.text);
    }
    await restart(srv.port, 'jobs', admin).catch(() => null);
    const failed = await srv.waitForLog('fleetd.root_failed', 10_000);
    assert.match(failed.reason, /max restart intensity/);
    const exit = await srv.exited;
    assert.equal(exit.code, 1, 'exit status 1 without being signalled');
});

test('the admin routes need an admin token: 401 without a valid one, 403 for an operator token; fleetd tree says so', opts, async (t) => {
    const { db, srv, admin } = await migratedDaemon(t);
    await db.query("INSERT INTO fleets (id) VALUES ('harbor-1')");
    const operator = await createToken(db, ['--fleet', 'harbor-1']);
    const revoked = await createToken(db, ['--admin', '--name', 'gone']);
    const revoke = await runFleetd(['token', 'revoke', 'gone'], { databaseUrl: db.url });
    assert.equal(revoke.code, 0, describeRun(revoke));

    for (const [what, headers] of [
        ['no header', {}],
        ['another scheme', { Authorization: `Basic ${admin}` }],
        ['malformed', bearer('fl_short')],
        ['unknown', bearer('fl_' + 'B'.repeat(43))],
        ['revoked', bearer(revoked)],
    ]) {
        const res = await get(srv.port, '/admin/tree', headers);
        assertJsonError(res, 401, 'unauthorized');
        assert.match(res.headers['www-authenticate'], /^Bearer\b/, what);
        const post = await request(srv.port, { method: 'POST', path: '/admin/tree/db:0/restart', headers: { 'Content-Length': '0', ...headers } });
        assertJsonError(post, 401, 'unauthorized');
    }
    const forbidden = await get(srv.port, '/admin/tree', bearer(operator));
    assertJsonError(forbidden, 403, 'forbidden');
    assert.equal(forbidden.headers['www-authenticate'], 'Bearer error="insufficient_scope"');
    assertJsonError(await restart(srv.port, 'db:0', operator), 403, 'forbidden');
    assert.equal((await tree(srv.port, admin)).id, 'root');
    // nothing was restarted by the refused requests
    assert.equal(find(await tree(srv.port, admin), 'db:0').restarts, 0);

    const url = `http://127.0.0.1:${srv.port}`;
    const none = await runFleetd(['tree', '--url', url], { env: { FLEETD_ADMIN_TOKEN: '' } });
    assert.equal(none.code, 2, describeRun(none));
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^fleetd: tree: no admin token: set FLEETD_ADMIN_TOKEN or give --token/);
    assert.equal(none.stderr.trim().split('\n').length, 1, 'one line');
    const junk = await runFleetd(['tree', '--url', url, '--token', 'x\r\nX-Evil: 1']);
    assert.equal(junk.code, 2, describeRun(junk));
    assert.equal(junk.stderr.trim().split('\n').length, 1, 'one line');

    const refused = await runFleetd(['tree', '--url', url], { env: { FLEETD_ADMIN_TOKEN: operator } });
    assert.equal(refused.code, 1, describeRun(refused));
    assert.match(refused.stderr, /^fleetd: tree: the daemon answered 403: this route needs an admin token/);
    assert.equal(refused.stderr.trim().split('\n').length, 1, 'one line');
    const stale = await runFleetd(['tree', '--url', url, '--token', revoked]);
    assert.equal(stale.code, 1, describeRun(stale));
    assert.match(stale.stderr, /^fleetd: tree: the daemon answered 401/);

    // --token wins over the environment
    const both = await runFleetd(['tree', '--json', '--url', url, '--token', admin], { env: { FLEETD_ADMIN_TOKEN: operator } });
    assert.equal(both.code, 0, describeRun(both));
    assert.equal(JSON.parse(both.stdout).id, 'root');
});
