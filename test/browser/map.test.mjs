// The operators' live map in a real browser: Debian's chromium, headless, driven by playwright-core,
// against the real fleetd and PostgreSQL. An operator signs in with a token, picks the fleet, sees the
// vehicle where its signed fix put it, then watches the marker move when a new signed fix arrives.
// A screenshot is kept as a test artifact (<build>/test-artifacts/map.png).
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
const A = { lat: 59.3293, lng: 18.0686 };
const B = { lat: 59.3381, lng: 18.0812 };

/** `fleetd ARGS` against db with this file's master key; its stdout (a secret, a token). */
const cli = (db, args) => runFleetdOk(args, { databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY } });

/** Where the page has truck-17: Leaflet's lat/lng and its projected point, and the marker element's centre. */
async function markerOf(page, id) {
    return page.evaluate((vid) => {
        const m = window.fleetdMap.marker(vid);
        const el = document.querySelector(`.vmark[data-vehicle-id="${vid}"]`);
        if (!m || !el) return null;
        const box = el.getBoundingClientRect();
        const arrow = el.querySelector('.arrow');
        return { ...m, cx: box.left + box.width / 2, cy: box.top + box.height / 2, rotate: arrow.getAttribute('transform') };
    }, id);
}

const near = (a, b) => Math.abs(a - b) < 1e-9;

const until = makeUntil(
    () => ({
        connection: document.getElementById('conn')?.textContent,
        notice: document.getElementById('notice')?.textContent,
        signin: document.getElementById('signin-error')?.textContent,
        vehicles: window.fleetdMap?.vehicles(),
    }),
);

/**
 * A browser (see openBrowser), then fleets harbor-1 ("Harbor One") and harbor-2, partner acme writing
 * both, a token "ops" holding both, and fleetd with no tiles. post(fix) signs and posts one fix of
 * harbor-1 (truck-17 unless it says otherwise).
 */
async function setup(t, shot) {
    // the browser first: its after-hook (screenshot, close) then runs before fleetd is stopped
    const browser = await openBrowser(t, shot);
    const db = await createDatabase('map', t);
    await migrate(db);
    await cli(db, ['fleet', 'create', 'harbor-1', '--name', 'Harbor One']);
    await cli(db, ['fleet', 'create', 'harbor-2']);
    const secret = await cli(db, ['partner', 'create', 'acme', '--fleet', 'harbor-1', '--fleet', 'harbor-2']);
    const token = await cli(db, ['token', 'create', '--fleet', 'harbor-2', '--fleet', 'harbor-1', '--name', 'ops']);
    // FLEETD_MAP_TILES empty: no tile server (the map must work without one, and this machine reaches none)
    const srv = await startFleetd({ t, databaseUrl: db.url, env: { FLEETD_MASTER_KEY: MASTER_KEY, FLEETD_MAP_TILES: '' } });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });
    const post = async (fix) => {
        const res = await postSigned(srv.port, {
            partner: 'acme',
            secret,
            body: { fixes: [{ fleet_id: 'harbor-1', vehicle_id: 'truck-17', speed_kmh: 42, ...fix }] },
        });
        assert.equal(res.status, 202, res.text);
    };
    return { ...browser, db, srv, token, post };
}

test('sign in, pick the fleet, see the vehicle, watch it move when a signed fix arrives', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { page, problems, outside, db, srv, token, post } = await setup(t, 'map.png');
    await post({ ...A, heading_deg: 270, recorded_at: new Date(Date.now() - 5000).toISOString() });
    // a vehicle silent for three minutes: greyed with the page's default of 60 s
    await post({ vehicle_id: 'van-3', lat: 59.32, lng: 18.05, recorded_at: new Date(Date.now() - 180_000).toISOString() });

    await page.goto(`${srv.url}/`);

    // signing in
    await page.locator('#signin').waitFor({ state: 'visible', timeout: 10_000 });
    await page.fill('#token', 'fl_not-a-token');
    await page.click('#signin button[type=submit]');
    await until(page, () => /refused/.test(document.getElementById('signin-error').textContent), 'the refusal of a wrong token');
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.token')), null, 'a refused token is not kept');
    await page.fill('#token', token);
    await page.click('#signin button[type=submit]');
    await page.locator('#main').waitFor({ state: 'visible', timeout: 10_000 });
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.token')), token, 'the token is kept in the browser');

    // the fleet picker lists the token's fleets; the first is open, harbor-1 is picked
    const options = await page.$$eval('#fleet option', (os) => os.map((o) => [o.value, o.textContent]));
    assert.deepEqual(options, [['harbor-1', 'Harbor One (harbor-1)'], ['harbor-2', 'harbor-2']]);
    await page.selectOption('#fleet', 'harbor-2');
    await until(page, () => window.fleetdMap.fleet() === 'harbor-2', 'harbor-2 to open');
    await page.selectOption('#fleet', 'harbor-1');
    await until(page, () => window.fleetdMap.fleet() === 'harbor-1', 'harbor-1 to open');

    // the marker where the first fix put it, turned to its heading; the list has speed and age
    const first = await waitFor(async () => {
        const m = await markerOf(page, 'truck-17');
        return m && near(m.lat, A.lat) && near(m.lng, A.lng) && m;
    }, { what: 'the truck-17 marker at A', timeoutMs: 15_000 });
    assert.equal(first.rotate, 'rotate(270)');
    assert.ok(Math.abs(first.cx - first.x) < 1.5 && Math.abs(first.cy - first.y) < 1.5, `marker drawn at its point: ${JSON.stringify(first)}`);
    const row = page.locator('#vehicles li[data-vehicle-id="truck-17"]');
    assert.equal(await row.locator('.speed').textContent(), '42 km/h');
    assert.match(await row.locator('.age').textContent(), /^\d+ s ago$/);
    assert.equal(await row.evaluate((li) => li.classList.contains('stale')), false, 'a fresh vehicle is not greyed');
    await until(page, () => document.querySelector('#vehicles li[data-vehicle-id="van-3"]')?.classList.contains('stale'), 'van-3 greyed');
    assert.ok(await page.$('.vmark.stale[data-vehicle-id="van-3"]'), 'the stale vehicle\'s marker is greyed too');

    // live: the channel joins, Presence shows who watches, and a new signed fix moves the marker
    await until(page, () => window.fleetdMap.connection() === 'live', 'the live connection (/socket/websocket)', null, 15_000);
    await until(page, () => /ops/.test(document.getElementById('watchers').textContent), 'Presence to show ops watching');
    await post({ ...B, heading_deg: 45, speed_kmh: 55, recorded_at: new Date().toISOString() });
    const moved = await waitFor(async () => {
        const m = await markerOf(page, 'truck-17');
        return m && near(m.lat, B.lat) && near(m.lng, B.lng) && m;
    }, { what: 'the truck-17 marker to move to B', timeoutMs: 10_000 });
    assert.equal(moved.rotate, 'rotate(45)');
    assert.ok(Math.abs(moved.cx - moved.x) < 1.5 && Math.abs(moved.cy - moved.y) < 1.5, `marker drawn at its new point: ${JSON.stringify(moved)}`);
    assert.ok(Math.hypot(moved.x - first.x, moved.y - first.y) > 5, 'the marker moved on screen');
    assert.equal(await row.locator('.speed').textContent(), '55 km/h');

    // clicking the vehicle draws its recent track from the history route (once the audit worker stored both fixes)
    await waitFor(async () => (await db.query("SELECT count(*)::int AS n FROM positions WHERE vehicle_id = 'truck-17'")).rows[0].n === 2, {
        what: 'both fixes in positions',
    });
    await row.locator('button').click();
    await until(page, () => /2 fixes in the last hour/.test(document.getElementById('track-text').textContent), 'the track of 2 fixes');
    assert.ok(await page.$('path.track-line'), 'the track is drawn');

    assert.deepEqual(problems, [], 'no page errors or CSP violations');
    assert.deepEqual(outside, [], 'the page asked for nothing outside fleetd');
});

test('a link with #token opens the fleet; after a dropped connection the page rejoins and replays what it missed', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    const { page, problems, outside, srv, token, post } = await setup(t, 'map-resync.png');
    await post({ ...A, heading_deg: 90, recorded_at: new Date(Date.now() - 2000).toISOString() });

    // every connection to /socket/websocket passes through here: proxied to fleetd, or refused while blocked
    let blocked = false;
    let current = null;
    await page.context().routeWebSocket(/\/socket\/websocket/, (ws) => {
        if (blocked) return ws.close({ code: 1011, reason: 'test: fleetd out of reach' });
        ws.connectToServer();
        current = ws;
    });

    // the link `fleetd demo` prints: signed in and on the fleet at once, the token gone from the address bar
    await page.goto(`${srv.url}/#token=${token}&fleet=harbor-2`);
    await until(page, () => window.fleetdMap.fleet() === 'harbor-2' && window.fleetdMap.connection() === 'live', 'harbor-2, live');
    assert.equal(new URL(page.url()).hash, '', 'the fragment is removed');
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.token')), token);
    await page.selectOption('#fleet', 'harbor-1');
    await until(page, () => window.fleetdMap.fleet() === 'harbor-1' && window.fleetdMap.connection() === 'live', 'harbor-1, live');
    await waitFor(async () => {
        const m = await markerOf(page, 'truck-17');
        return m && near(m.lat, A.lat);
    }, { what: 'truck-17 at A' });

    // a live position, then the connection drops and a fix arrives while the page is away
    await post({ ...B, heading_deg: 180, recorded_at: new Date(Date.now() - 1000).toISOString() });
    await waitFor(async () => near((await markerOf(page, 'truck-17'))?.lat, B.lat), { what: 'truck-17 at B (live)' });
    blocked = true;
    await current.close({ code: 1001, reason: 'test: dropped' });
    await until(page, () => window.fleetdMap.connection() === 'reconnecting', 'the page to notice the drop');
    const C = { lat: 59.3402, lng: 18.0999 };
    await post({ ...C, heading_deg: 10, recorded_at: new Date().toISOString() });
    await waitFor(async () => {
        const res = await get(srv.port, '/api/v1/fleets/harbor-1/status', { Authorization: `Bearer ${token}` });
        return res.json?.vehicles?.some((v) => v.vehicle_id === 'truck-17' && near(v.lat, C.lat));
    }, { what: 'fleetd to have C' });
    assert.ok(near((await markerOf(page, 'truck-17')).lat, B.lat), 'no position reaches a page that is away');

    // back: the client rejoins with last_seq, fleetd replays the one missed position, the page says so
    blocked = false;
    await until(page, () => window.fleetdMap.connection() === 'resynced', 'the rejoin', null, 20_000);
    assert.match(await page.textContent('#conn'), /resynced \(1 missed position replayed\)/);
    const back = await waitFor(async () => {
        const m = await markerOf(page, 'truck-17');
        return m && near(m.lat, C.lat) && near(m.lng, C.lng) && m;
    }, { what: 'truck-17 at C after the rejoin' });
    assert.equal(back.rotate, 'rotate(10)');
    await until(page, () => window.fleetdMap.connection() === 'live', '"live" again after a while', null, 15_000);

    assert.deepEqual(problems, [], 'no page errors or CSP violations');
    assert.deepEqual(outside, [], 'the page asked for nothing outside fleetd');
});
