// The operators' live map: sign in with a token, pick a fleet, watch its vehicles move.
// The token comes from the form or from the URL fragment and is kept in this browser (session.js).
import { api } from './api.js';
import { LiveFleet } from './live.js';
import { FleetMap } from './map.js';
import { VehicleList } from './vehicles.js';
import { session, takeFragment } from './session.js';

const FLEET_KEY = 'fleetd.fleet';
const STALE_KEY = 'fleetd.staleAfter';
const TRACK_SPAN_MS = 60 * 60 * 1000;

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: 'Reconnecting…',
    resynced: 'Live · resynced',
    refused: 'Not allowed',
};

const page = {
    config: { map_tiles: '', map_attribution: '' },
    token: null,
    fleet: null,
    live: null,
    map: null,
    list: null,
    vehicles: new Map(), // vehicle_id -> latest vehicle object
    selected: null,
    trackRequest: 0,
};

// ---- small views ------------------------------------------------------------------------------

function notice(text) {
    $('notice').textContent = text || '';
}

function showConnection(state, detail) {
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = STATE_TEXT[state] + (detail ? ` (${detail})` : '');
}

function showWatchers(list) {
    const el = $('watchers');
    el.replaceChildren();
    if (!list.length) return;
    el.append('Watching: ');
    list.forEach(({ name, count }, i) => {
        const who = document.createElement('span');
        who.className = 'who';
        who.textContent = count > 1 ? `${name} ×${count}` : name;
        el.append(who);
        if (i < list.length - 1) el.append(', ');
    });
}

function showCount() {
    $('count').textContent = page.vehicles.size ? `(${page.vehicles.size})` : '';
    $('empty').hidden = page.vehicles.size > 0;
}

// ---- vehicles -----------------------------------------------------------------------------------

function upsertVehicle(v) {
    const known = page.vehicles.get(v.vehicle_id);
    // a late event never moves a vehicle back in time
    if (known && Date.parse(known.recorded_at) > Date.parse(v.recorded_at)) return;
    page.vehicles.set(v.vehicle_id, v);
    page.map.upsert(v);
    page.list.upsert(v);
}

function replaceVehicles(vehicles) {
    const fresh = new Set(vehicles.map((v) => v.vehicle_id));
    const gone = [...page.vehicles.keys()].some((id) => !fresh.has(id));
    if (gone) {
        page.vehicles.clear();
        page.map.clear();
        page.list.clear();
    }
    const first = page.map.markers.size === 0;
    for (const v of vehicles) upsertVehicle(v);
    if (first) page.map.fit();
    if (gone && page.selected) {
        page.map.setSelected(page.selected);
        page.list.setSelected(page.selected);
    }
    showCount();
}

async function select(id) {
    page.selected = id;
    page.map.setSelected(id);
    page.list.setSelected(id);
    page.map.panTo(id);
    const ticket = ++page.trackRequest;
    $('track').hidden = false;
    $('track-text').textContent = `${id}: loading the last hour…`;
    try {
        const feature = await api.track(page.token, page.fleet, id, new Date(Date.now() - TRACK_SPAN_MS));
        if (ticket !== page.trackRequest) return;
        const n = page.map.showTrack(id, feature);
        const more = feature.properties && feature.properties.next_from ? ' (first 10,000)' : '';
        $('track-text').textContent = `${id}: ${n} fix${n === 1 ? '' : 'es'} in the last hour${more}`;
    } catch (err) {
        if (ticket !== page.trackRequest) return;
        page.map.hideTrack();
        $('track-text').textContent =
            err.code === 'vehicle_not_found' ? `${id}: no stored fixes yet` : `${id}: no track (${err.message})`;
    }
}

function unselect() {
    page.trackRequest++;
    page.selected = null;
    page.map.setSelected(null);
    page.list.setSelected(null);
    page.map.hideTrack();
    $('track').hidden = true;
}

// ---- fleets -------------------------------------------------------------------------------------

async function openFleet(fleetId) {
    if (page.live) page.live.stop();
    page.live = null;
    page.fleet = fleetId;
    localStorage.setItem(FLEET_KEY, fleetId);
    $('fleet').value = fleetId;
    unselect();
    page.vehicles.clear();
    page.map.clear();
    page.list.clear();
    showCount();
    showWatchers([]);
    notice('');

    // The status route draws the markers at once; the channel's snapshot then takes over.
    try {
        const status = await api.status(page.token, fleetId);
        if (page.fleet !== fleetId) return;
        replaceVehicles(status.vehicles);
    } catch (err) {
        if (page.fleet !== fleetId) return;
        if (err.status === 401) return signOut('The token was refused (revoked or unknown): sign in again.');
        if (err.code === 'fleet_not_found') return notice(`Fleet ${fleetId} is not visible to this token.`);
        notice(`No status yet (${err.message}); waiting for the live feed.`);
    }
    if (page.fleet !== fleetId) return;

    const live = new LiveFleet(page.token, fleetId, {
        onState: (state, detail) => page.live === live && showConnection(state, detail),
        onSnapshot: (vehicles) => page.live === live && replaceVehicles(vehicles),
        onPosition: (v) => {
            if (page.live !== live) return;
            upsertVehicle(v);
            showCount();
        },
        onPresence: (list) => page.live === live && showWatchers(list),
        onRefused: (reason) => {
            if (page.live !== live) return;
            if (reason === 'unauthorized') signOut('The token was refused (revoked or unknown): sign in again.');
            else notice(`Fleet ${fleetId} is not visible to this token.`);
        },
    });
    page.live = live;
    live.start();
}

async function loadFleets(wanted) {
    let fleets;
    try {
        fleets = (await api.fleets(page.token)).fleets;
    } catch (err) {
        if (err.status === 401) return signOut('The token was refused (revoked or unknown).');
        return signOut(`Cannot list the fleets: ${err.message}`, false);
    }
    const select = $('fleet');
    select.replaceChildren();
    for (const f of fleets) {
        const option = document.createElement('option');
        option.value = f.fleet_id;
        option.textContent = f.name ? `${f.name} (${f.fleet_id})` : f.fleet_id;
        select.append(option);
    }
    document.querySelector('.picker').hidden = false;
    if (!fleets.length) {
        notice('This token holds no fleet.');
        return;
    }
    const ids = fleets.map((f) => f.fleet_id);
    const stored = localStorage.getItem(FLEET_KEY);
    if (wanted && !ids.includes(wanted)) notice(`Fleet ${wanted} is not visible to this token.`);
    const choice = ids.includes(wanted) ? wanted : ids.includes(stored) ? stored : ids[0];
    await openFleet(choice);
}

// ---- signing in and out ---------------------------------------------------------------------------

function showSignIn(message) {
    $('main').hidden = true;
    $('signout').hidden = true;
    document.querySelector('.picker').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    $('conn').textContent = '';
    $('conn').dataset.state = 'idle';
    showWatchers([]);
    $('token').focus();
}

function signOut(message, forget = true) {
    if (page.live) page.live.stop();
    page.live = null;
    page.fleet = null;
    if (forget) session.forget();
    page.token = forget ? null : page.token;
    showSignIn(message);
}

async function signIn(token, wantedFleet) {
    page.token = token;
    session.keep(token);
    $('signin').hidden = true;
    $('main').hidden = false;
    $('signout').hidden = false;
    if (!page.map) startMap();
    page.map.map.invalidateSize();
    await loadFleets(wantedFleet);
}

function startMap() {
    page.map = new FleetMap($('map'), {
        tiles: page.config.map_tiles,
        attribution: page.config.map_attribution,
        onSelect: select,
    });
    page.list = new VehicleList($('vehicles'), {
        onSelect: select,
        onStale: (id, stale) => page.map.setStale(id, stale),
    });
    const stale = Number(localStorage.getItem(STALE_KEY));
    if (stale >= 5) $('stale').value = String(stale);
    page.list.setStaleAfter(Number($('stale').value));
    setInterval(() => page.list.tick(), 1000);
}

// ---- start ------------------------------------------------------------------------------------------

async function main() {
    $('signin-form').addEventListener('submit', (e) => {
        e.preventDefault();
        const token = $('token').value.trim();
        $('token').value = '';
        if (token) signIn(token, null);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('fleet').addEventListener('change', (e) => openFleet(e.target.value));
    $('fit').addEventListener('click', () => page.map.fit());
    $('track-close').addEventListener('click', unselect);
    $('stale').addEventListener('change', (e) => {
        const s = Math.min(86400, Math.max(5, Number(e.target.value) || 60));
        e.target.value = String(s);
        localStorage.setItem(STALE_KEY, String(s));
        page.list.setStaleAfter(s);
    });

    try {
        page.config = await api.config();
    } catch (err) {
        notice(`No map settings (${err.message}): showing the map without tiles.`);
    }
    const fragment = takeFragment();
    const token = fragment.token || session.token();
    if (token) await signIn(token, fragment.fleet);
    else showSignIn('');
}

// For tests and debugging (read-only views of what the page shows).
window.fleetdMap = {
    marker: (id) => (page.map ? page.map.describe(id) : null),
    vehicles: () => [...page.vehicles.keys()],
    connection: () => $('conn').dataset.state,
    fleet: () => page.fleet,
};

main();
