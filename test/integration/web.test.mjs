// The live map's files (GET /, /config.json, /assets/...) and the fleet picker's route
// (GET /api/v1/fleets), over raw HTTP against the real binary. The page itself is tested in a real
// browser by test/browser/map.test.mjs.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
    assertContentLength,
    assertJsonError,
    createDatabase,
    describeRun,
    get,
    migrate,
    runFleetd,
    startFleetd,
    tempDir,
    TEST_TIMEOUT_MS,
    waitFor,
} from './lib/harness.mjs';

const opts = { timeout: TEST_TIMEOUT_MS };

// No database needed to serve files: fleetd starts while PostgreSQL is unreachable.
const noDb = { databaseUrl: 'postgresql:///postgres?host=/nonexistent/fleetd-web-test&connect_timeout=1' };

test('GET / is the map page: HTML, ETag, revalidation with 304, a strict CSP', opts, async (t) => {
    const srv = await startFleetd({ t, ...noDb, env: { FLEETD_MAP_TILES: 'https://{s}.tiles.example.org/{z}/{x}/{y}.png' } });
    const loaded = await srv.waitForLog('web.loaded');
    assert.ok(loaded.files >= 10, `files loaded: ${JSON.stringify(loaded)}`);

    const res = await get(srv.port, '/');
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assertContentLength(res);
    assert.match(res.text, /<script type="module" src="assets\/app\.js"><\/script>/);
    assert.match(res.headers.etag, /^"[0-9a-f]{32}"$/);
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    const csp = res.headers['content-security-policy'];
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self';/);
    assert.match(csp, /img-src 'self' data: https:\/\/\*\.tiles\.example\.org;/, 'tiles may load from the configured host only');
    assert.match(csp, /frame-ancestors 'none'/);

    for (const inm of [res.headers.etag, `W/${res.headers.etag}`, `"nope", ${res.headers.etag}`, '*']) {
        const again = await get(srv.port, '/', { 'If-None-Match': inm });
        assert.equal(again.status, 304, `If-None-Match: ${inm}`);
        assert.equal(again.body.length, 0);
        assert.equal(again.headers.etag, res.headers.etag);
    }
    assert.equal((await get(srv.port, '/', { 'If-None-Match': '"0000"' })).status, 200);
    assert.equal((await get(srv.port, '/index.html')).text, res.text);
});

test('GET /admin is the admin page under the same CSP; its script is an asset', opts, async (t) => {
    const srv = await startFleetd({ t, ...noDb });
    const res = await get(srv.port, '/admin');
    assert.equal(res.status, 200, res.text.slice(0, 200));
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(res.text, /<script type="module" src="assets\/admin\.js"><\/script>/);
    assert.match(res.text, /<a class="nav" href="\.\/">Live map<\/a>/);
    assert.equal(res.headers['content-security-policy'], (await get(srv.port, '/')).headers['content-security-policy']);
    assert.equal((await get(srv.port, '/admin', { 'If-None-Match': res.headers.etag })).status, 304);
    for (const path of ['/assets/admin.js', '/assets/session.js']) assert.equal((await get(srv.port, path)).status, 200, path);
    assert.match((await get(srv.port, '/')).text, /<a class="nav" href="admin"/, 'the map links to it');
    assertJsonError(await get(srv.port, '/admin.html'), 404, 'not_found');
});

test('assets: our modules, Leaflet and the phoenix client with their types; Leaflet\'s images', opts, async (t) => {
    const srv = await startFleetd({ t, ...noDb });
    const types = {
        '/assets/app.js': 'text/javascript; charset=utf-8',
        '/assets/live.js': 'text/javascript; charset=utf-8',
        '/assets/phoenix.mjs': 'text/javascript; charset=utf-8',
        '/assets/leaflet.js': 'text/javascript; charset=utf-8',
        '/assets/leaflet.css': 'text/css; charset=utf-8',
        '/assets/app.css': 'text/css; charset=utf-8',
        '/assets/icon.svg': 'image/svg+xml',
        '/assets/images/marker-icon.png': 'image/png',
        '/assets/images/layers.png': 'image/png',
    };
    for (const [path, type] of Object.entries(types)) {
        const res = await get(srv.port, path);
        assert.equal(res.status, 200, `${path}: ${res.text.slice(0, 200)}`);
        assert.equal(res.headers['content-type'], type, path);
        assertContentLength(res);
        assert.ok(res.body.length > 0, path);
        assert.match(res.headers.etag, /^"[0-9a-f]{32}"$/, path);
        const again = await get(srv.port, path, { 'If-None-Match': res.headers.etag });
        assert.equal(again.status, 304, path);
    }
    // the phoenix client as published: an ES module exporting Socket and Presence
    const phoenix = (await get(srv.port, '/assets/phoenix.mjs')).text;
    assert.match(phoenix, /export \{[^}]*Presence[^}]*Socket[^}]*\}/s);
    const png = (await get(srv.port, '/assets/images/marker-icon.png')).body;
    assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'a PNG signature');
    const head = await get(srv.port, '/assets/app.js');
    assert.equal((await get(srv.port, '/assets/app.js')).headers.etag, head.headers.etag, 'the same bytes, the same ETag');
});

test('unknown files and path tricks are 404 JSON errors; nothing outside the web directory is served', opts, async (t) => {
    const srv = await startFleetd({ t, ...noDb });
    for (const path of [
        '/assets/nope.js',
        '/assets/..%2f..%2fetc%2fpasswd',
        '/assets/%2e%2e',
        '/assets/.hidden.js',
        '/assets/images/..%2fapp.js',
        '/assets/app.js%00.png',
        '/assets/package.json',
        '/assets/images',
        '/assets/leaflet.js.map',
    ]) {
        const res = await get(srv.port, path);
        assertJsonError(res, 404, 'not_found');
    }
    // deeper paths, and the source tree's own files, have no route at all
    for (const path of ['/assets/images/x/y.png', '/assets/../../etc/passwd', '/web/src/app.js', '/package.json']) {
        const res = await get(srv.port, path);
        assert.equal(res.status, 404, path);
        assert.equal(res.json.error.code, 'not_found', path);
    }
});

test('GET /config.json carries the tile settings; an empty FLEETD_MAP_TILES means no tiles', opts, async (t) => {
    let srv = await startFleetd({ t, ...noDb });
    let res = await get(srv.port, '/config.json');
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.json.map_tiles, 'https://tile.openstreetmap.org/{z}/{x}/{y}.png', 'OpenStreetMap by default');
    assert.match(res.json.map_attribution, /OpenStreetMap/);
    assert.equal(res.headers['content-security-policy'], undefined, 'a CSP belongs to the page');
    const csp = (await get(srv.port, '/')).headers['content-security-policy'];
    assert.match(csp, /img-src 'self' data: https:\/\/tile\.openstreetmap\.org;/);
    await srv.stop();

    srv = await startFleetd({ t, ...noDb, env: { FLEETD_MAP_TILES: '', FLEETD_MAP_ATTRIBUTION: 'Tiles "by" <b>us</b>' } });
    res = await get(srv.port, '/config.json');
    assert.deepEqual({ ...res.json, version: undefined }, { map_tiles: '', map_attribution: 'Tiles "by" <b>us</b>', version: undefined });
    assert.match((await get(srv.port, '/')).headers['content-security-policy'], /img-src 'self' data:;/);
    await srv.stop();

    srv = await startFleetd({ t, ...noDb, env: { FLEETD_MAP_TILES: '/tiles/{z}/{x}/{y}.png' } });
    assert.equal((await get(srv.port, '/config.json')).json.map_tiles, '/tiles/{z}/{x}/{y}.png');
});

test('a tile URL that is not a template is a configuration error (exit 2, one line)', opts, async () => {
    for (const bad of ['tile.example.org/{z}/{x}/{y}.png', 'https://tiles.example.org/map.png', "https://x.org/{z}/{x}/{y}.png' onerror='"]) {
        const run = await runFleetd(['serve'], { ...noDb, env: { FLEETD_MAP_TILES: bad, FLEETD_LISTEN: '127.0.0.1:0' } });
        assert.equal(run.code, 2, `${bad}\n${describeRun(run)}`);
        assert.match(run.stderr, /FLEETD_MAP_TILES/);
    }
});

test('FLEETD_WEB_DIR: another directory is served; one without index.html makes GET / a 503', opts, async (t) => {
    const dir = tempDir(t);
    mkdirSync(join(dir, 'assets', 'images'), { recursive: true });
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>custom</title>');
    writeFileSync(join(dir, 'assets', 'x.js'), 'export const x = 1;\n');
    writeFileSync(join(dir, 'assets', 'notes.txt'), 'not a type the map serves');
    let srv = await startFleetd({ t, ...noDb, env: { FLEETD_WEB_DIR: dir } });
    assert.equal((await srv.waitForLog('web.loaded')).dir, dir);
    assert.equal((await get(srv.port, '/')).text, '<!doctype html><title>custom</title>');
    assert.equal((await get(srv.port, '/assets/x.js')).text, 'export const x = 1;\n');
    assertJsonError(await get(srv.port, '/assets/notes.txt'), 404, 'not_found');
    assertJsonError(await get(srv.port, '/assets/app.js'), 404, 'not_found');
    await srv.stop();

    const empty = join(dir, 'assets');
    srv = await startFleetd({ t, ...noDb, env: { FLEETD_WEB_DIR: empty } });
    const warned = await srv.waitForLog('web.missing');
    assert.equal(warned.dir, empty);
    const res = await get(srv.port, '/');
    assertJsonError(res, 503, 'unavailable');
    assert.ok(res.json.error.message.includes(empty), res.json.error.message);
    assertJsonError(await get(srv.port, '/assets/x.js'), 503, 'unavailable');
    assert.equal((await get(srv.port, '/health')).status, 200, 'fleetd serves everything else');
});

test('GET /api/v1/fleets: the fleets a token holds (all for an admin), 401 without a valid token', opts, async (t) => {
    const db = await createDatabase('web_fleets', t);
    await migrate(db);
    const cli = async (args) => {
        const run = await runFleetd(args, { databaseUrl: db.url });
        assert.equal(run.code, 0, describeRun(run));
        return run.stdout.trim();
    };
    await cli(['fleet', 'create', 'harbor-1', '--name', 'Harbor "One"']);
    await cli(['fleet', 'create', 'harbor-2']);
    await cli(['fleet', 'create', 'airport']);
    const ops = await cli(['token', 'create', '--fleet', 'harbor-2', '--fleet', 'harbor-1', '--name', 'ops']);
    const admin = await cli(['token', 'create', '--admin']);
    const srv = await startFleetd({ t, databaseUrl: db.url });
    await waitFor(async () => (await get(srv.port, '/ready')).status === 200, { what: '/ready', timeoutMs: 15_000 });

    let res = await get(srv.port, '/api/v1/fleets', { Authorization: `Bearer ${ops}` });
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.deepEqual(res.json, { fleets: [{ fleet_id: 'harbor-1', name: 'Harbor "One"' }, { fleet_id: 'harbor-2' }] });

    res = await get(srv.port, '/api/v1/fleets', { Authorization: `Bearer ${admin}` });
    assert.deepEqual(res.json.fleets.map((f) => f.fleet_id), ['airport', 'harbor-1', 'harbor-2']);

    res = await get(srv.port, '/api/v1/fleets');
    assertJsonError(res, 401, 'unauthorized');
    assert.match(res.headers['www-authenticate'], /^Bearer/);
    assertJsonError(await get(srv.port, '/api/v1/fleets', { Authorization: 'Bearer fl_nope' }), 401, 'unauthorized');
    const unknown = `fl_${'A'.repeat(43)}`;
    assertJsonError(await get(srv.port, '/api/v1/fleets', { Authorization: `Bearer ${unknown}` }), 401, 'unauthorized');
});
