// The admin page (GET /admin) in a real browser: Debian's chromium through playwright-core against the
// real fleetd and PostgreSQL. An operator signs in (a fleet token is refused as not admin, an admin
// token is taken), sees the supervision tree live with the root and the tracker a signed fix started,
// restarts the tracker as a drill (accepting the confirm) and sees its restarts become 1 with the
// reason; then fleetd goes away and the page says it cannot reach it. Screenshots are kept in
// <build>/test-artifacts/admin.png and admin-unreachable.png.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { makeUntil, openBrowser } from './lib/browser.mjs';
import {
    createDatabase,
    get,
    migrate,
    postSigned,
    runFleetdOk,
    startFleetd,
    TEST_TIMEOUT_MS,
    waitFor,
} from '../integration/lib/harness.mjs';

const MASTER_KEY = randomBytes(32).toString('hex');

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

const until = makeUntil(
    () => ({
        connection: document.getElementById('conn')?.textContent,
        notice: document.getElementById('notice')?.textContent,
        signin: document.getElementById('signin-error')?.textContent,
        rows: window.fleetdAdmin?.ids(),
    }),
);

/** A browser, fleet harbor-1 with partner acme, an admin and a fleet token, fleetd, and one signed fix (a tracker). */
async function setup(t, shot) {
    const browser = await openBrowser(t, shot); // first: its after-hook runs before fleetd stops
    const db = await createDatabase('admin_page', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1']);
    const admin = await cli(db, ['token', 'create', '--admin', '--name', 'oncall']);
    const operator = await cli(db, ['token', 'create', '--fleet', 'harbor-1', '--name', 'ops']);
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_MAP_TILES: '', FLEETD_SHARDS: '2' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    const fix = { fleet_id: 'harbor-1', vehicle_id: 'truck-17', lat: 59.33, lng: 18.07, recorded_at: new Date(Date.now() - 2000).toISOString() };
    const res = await postSigned(srv.port, { partner: 'acme', secret, body: { fixes: [fix] } });
    assert.equal(res.status, 202, res.text);
    return { ...browser, srv, admin, operator };
}

const rowOf = (page, id) => page.evaluate((i) => window.fleetdAdmin.row(i), id);

test('sign in with an admin token, see the tree live, restart a tracker as a drill: restarts 1', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { page, problems, outside, srv, admin, operator } = await setup(t, 'admin.png');
    await page.goto(`${srv.url}/admin`);
    await page.locator('#signin').waitFor({ state: 'visible', timeout: 10_000 });

    // a fleet token is not enough: said so, and the form stays
    await page.fill('#token', operator);
    await page.click('#signin button[type=submit]');
    await until(page, () => /not an admin token/.test(document.getElementById('signin-error').textContent), 'the refusal of a fleet token');
    assert.ok(await page.locator('#signin').isVisible());

    await page.fill('#token', admin);
    await page.click('#signin button[type=submit]');
    await page.locator('#main').waitFor({ state: 'visible', timeout: 10_000 });
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.token')), admin, 'kept like the map keeps it');
    await until(page, () => window.fleetdAdmin.connection() === 'live', 'the first poll');
    await until(page, () => window.fleetdAdmin.row('tracker:harbor-1') !== null, 'the tracker row');
    const ids = await page.evaluate(() => window.fleetdAdmin.ids());
    for (const id of ['root', 'db', 'db:0', 'db:1', 'jobs', 'trackers', 'endpoint', 'tracker:harbor-1']) assert.ok(ids.includes(id), `${id} in ${ids}`);
    assert.ok(ids.indexOf('root') < ids.indexOf('trackers') && ids.indexOf('trackers') < ids.indexOf('tracker:harbor-1'), 'nested in order');
    const before = await rowOf(page, 'tracker:harbor-1');
    assert.equal(before.status, 'running');
    assert.equal(before.type, 'actor');
    assert.equal(before.restarts, 0);
    assert.equal(before.crash, '');
    assert.match(before.mailbox, /^\d+$/);
    assert.match(before.handled, /^[1-9]\d*$/, 'the tracker handled the ingest');
    assert.match(before.memory, /^\d+(\.\d)? (B|KiB|MiB)$/);
    assert.match(before.uptime, /^\d+s$/);
    const tracker = page.locator('tr[data-id="tracker:harbor-1"]');
    assert.match(await tracker.locator('td.name').textContent(), /└─ tracker:harbor-1$/, 'drawn with tree lines');
    assert.equal(await page.locator('tr[data-id="root"] button.restart').count(), 0, 'the root has no supervisor to restart it');
    assert.equal(await tracker.locator('td.status').getAttribute('data-status'), 'running');

    // live: the tree is polled every second (uptime moves on without a reload)
    await until(page, () => Number(window.fleetdAdmin.row('root').uptime.replace(/s$/, '')) >= 2, 'the uptime to advance');

    // the drill: a confirm first (dismissed: nothing happens), then accepted
    let asked = '';
    page.once('dialog', (d) => {
        asked = d.message();
        return d.dismiss();
    });
    await tracker.locator('button.restart').click();
    await page.waitForTimeout(1500);
    assert.match(asked, /Restart tracker:harbor-1\?/);
    assert.equal((await rowOf(page, 'tracker:harbor-1')).restarts, 0, 'dismissed: not restarted');
    page.once('dialog', (d) => d.accept());
    await tracker.locator('button.restart').click();
    await until(page, () => window.fleetdAdmin.row('tracker:harbor-1')?.restarts === 1, 'restarts 1 on the page');
    const after = await rowOf(page, 'tracker:harbor-1');
    assert.equal(after.status, 'running');
    assert.match(after.crash, /^\d+s ago: killed by an operator \(drill\)$/);
    assert.ok(await tracker.locator('td.restarts').evaluate((td) => td.classList.contains('warn')), 'the count stands out');
    assert.match(await page.textContent('#summary'), /0 not running; 1 restarts;/);
    // fleetd agrees
    const tree = (await get(srv.port, '/admin/tree', { Authorization: `Bearer ${admin}` })).json;
    const node = tree.children.find((c) => c.id === 'trackers').children.flatMap((p) => p.children).find((c) => c.id === 'tracker:harbor-1');
    assert.equal(node.restarts, 1);

    assert.deepEqual(problems, [], 'no page errors or CSP violations');
    assert.deepEqual(outside, [], 'the page asked for nothing outside fleetd');
});

test('linked from the map (signed in already), and a daemon that goes away is said to be unreachable', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { page, problems, outside, srv, admin } = await setup(t, 'admin-unreachable.png');
    await page.goto(`${srv.url}/#token=${admin}`);
    await page.locator('#main').waitFor({ state: 'visible', timeout: 10_000 });
    await page.click('a.nav[href="admin"]');
    await page.waitForURL(`${srv.url}/admin`);
    await until(page, () => window.fleetdAdmin.connection() === 'live' && window.fleetdAdmin.row('root') !== null, 'the tree, without signing in again');
    assert.equal(await page.getAttribute('a.nav', 'href'), './', 'and a link back to the map');

    await srv.stop();
    await until(page, () => window.fleetdAdmin.connection() === 'reconnecting', 'the page to notice fleetd is gone', null, 15_000);
    assert.match(await page.textContent('#notice'), /fleetd cannot be reached: retrying every second/);
    assert.equal(await page.textContent('#conn'), 'Unreachable');
    assert.ok(await page.locator('#main').evaluate((m) => m.classList.contains('stale')), 'the last tree is greyed');
    assert.ok((await page.evaluate(() => window.fleetdAdmin.ids())).includes('root'), 'and still shown');

    assert.deepEqual(problems.filter((p) => !/Failed to load resource|ERR_CONNECTION_REFUSED/.test(p)), [], 'no page errors or CSP violations');
    assert.deepEqual(outside, [], 'the page asked for nothing outside fleetd');
});
