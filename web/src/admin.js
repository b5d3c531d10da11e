// The on-call view of the supervision tree: sign in with an admin token, poll GET /admin/tree every
// second, show every supervisor and actor nested (status, restarts and the last crash, mailbox,
// messages handled, uptime, memory), flash what changed since the last poll, and restart one child
// as a drill (POST /admin/tree/{id}/restart). The same table as `fleetd tree`.
import { api } from './api.js';
import { session, takeFragment } from './session.js';

const POLL_MS = 1000;
const SUMMARISE_OVER = 20; // a supervisor with more children shows its SUMMARY_SHOWN busiest...
const SUMMARY_SHOWN = 10; // ...and every one not running, unless "Show every child" is ticked
const MAILBOX_WARN = 100;

const $ = (id) => document.getElementById(id);

const page = {
    token: null,
    timer: null,
    polling: false,
    rows: new Map(), // id -> {tr, cells, last}
    tree: null,
};

// ---- text ---------------------------------------------------------------------------------------

function duration(s) {
    s = Math.max(0, Math.floor(s));
    if (s >= 86400) return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
    if (s >= 3600) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
    if (s >= 60) return `${Math.floor(s / 60)}m${s % 60}s`;
    return `${s}s`;
}

function bytes(b) {
    if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(1)} GiB`;
    if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(1)} MiB`;
    if (b >= 2 ** 10) return `${(b / 2 ** 10).toFixed(1)} KiB`;
    return `${b} B`;
}

function crashText(crash) {
    if (!crash) return '';
    const at = Date.parse(crash.at);
    const ago = Number.isNaN(at) ? 'at an unknown time' : `${duration((Date.now() - at) / 1000)} ago`;
    return `${ago}: ${crash.reason}`;
}

// ---- the rows -----------------------------------------------------------------------------------

const running = (n) => n.status === 'running';

/** The children to show: all, or the busiest by mailbox and those not running; plus how many are not. */
function visibleChildren(children, all) {
    if (all || children.length <= SUMMARISE_OVER) return { shown: children, more: 0, moreMailbox: 0 };
    const ranked = children.map((c, i) => ({ c, i })).sort((a, b) => (b.c.mailbox ?? 0) - (a.c.mailbox ?? 0) || a.i - b.i);
    const shown = [];
    let more = 0;
    let moreMailbox = 0;
    ranked.forEach(({ c }, rank) => {
        if (rank < SUMMARY_SHOWN || !running(c)) shown.push(c);
        else {
            more++;
            moreMailbox = Math.max(moreMailbox, c.mailbox ?? 0);
        }
    });
    return { shown, more, moreMailbox };
}

/** The tree as a flat list of rows: {node, lines, parent} or {more, moreMailbox, lines, key}. */
function flatten(root, all) {
    const out = [];
    const walk = (node, prefix, last, isRoot, parent) => {
        out.push({ node, parent, lines: isRoot ? '' : prefix + (last ? '└─ ' : '├─ ') });
        const sub = isRoot ? '' : prefix + (last ? '   ' : '│  ');
        const { shown, more, moreMailbox } = visibleChildren(node.children ?? [], all);
        shown.forEach((c, i) => walk(c, sub, i === shown.length - 1 && !more, false, node.id));
        if (more) out.push({ key: `more:${node.id}`, more, moreMailbox, lines: sub + '└─ ' });
    };
    walk(root, '', true, true, null);
    return out;
}

const COLUMNS = ['name', 'type', 'status', 'uptime', 'restarts', 'crash', 'mailbox', 'handled', 'memory', 'action'];

function makeRow(id, restartable) {
    const tr = document.createElement('tr');
    tr.dataset.id = id;
    const cells = {};
    for (const col of COLUMNS) {
        const td = document.createElement('td');
        td.className = col;
        tr.append(td);
        cells[col] = td;
    }
    const lines = document.createElement('span');
    lines.className = 'lines';
    const name = document.createElement('span');
    name.className = 'id';
    cells.name.append(lines, name);
    if (restartable) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'restart';
        button.textContent = 'Restart';
        button.title = `Restart ${id} as a drill: its supervisor starts it again`;
        button.addEventListener('click', () => restart(id, button));
        cells.action.append(button);
    }
    return { tr, cells, last: {} };
}

/** Sets a cell's text; a value that differs from the last poll's flashes (not on the first draw). */
function setCell(row, col, text, { flash = true } = {}) {
    const td = row.cells[col];
    const target = col === 'name' ? td.querySelector('.id') : td;
    if (row.last[col] === text) return;
    const first = !(col in row.last);
    row.last[col] = text;
    target.textContent = text;
    if (flash && !first) {
        td.classList.remove('changed');
        void td.offsetWidth; // restart the animation
        td.classList.add('changed');
    }
}

function fillNode(row, node, lines) {
    const sup = node.kind === 'supervisor';
    row.tr.classList.toggle('supervisor', sup);
    row.cells.name.querySelector('.lines').textContent = lines;
    setCell(row, 'name', node.id, { flash: false });
    setCell(row, 'type', sup ? (node.dynamic ? 'dynamic' : node.strategy) : 'actor', { flash: false });
    setCell(row, 'status', node.status);
    row.cells.status.dataset.status = node.status;
    setCell(row, 'uptime', duration(node.uptime_s ?? 0), { flash: false });
    setCell(row, 'restarts', String(node.restarts ?? 0));
    row.cells.restarts.classList.toggle('warn', (node.restarts ?? 0) > 0);
    setCell(row, 'crash', crashText(node.last_crash), { flash: Boolean(node.last_crash) && row.last.crashAt !== node.last_crash.at });
    row.last.crashAt = node.last_crash?.at;
    setCell(row, 'mailbox', sup ? '' : String(node.mailbox ?? 0), { flash: false });
    row.cells.mailbox.classList.toggle('warn', !sup && (node.mailbox ?? 0) >= MAILBOX_WARN);
    setCell(row, 'handled', sup ? '' : String(node.handled ?? 0), { flash: false });
    setCell(row, 'memory', bytes(node.memory ?? 0), { flash: false });
}

function fillMore(row, item) {
    row.tr.classList.add('more');
    row.cells.name.querySelector('.lines').textContent = item.lines;
    const text = item.moreMailbox > 0
        ? `… and ${item.more} more (mailboxes up to ${item.moreMailbox})`
        : `… and ${item.more} more (all running, mailboxes empty)`;
    setCell(row, 'name', text, { flash: false });
}

function totals(root) {
    const t = { supervisors: 0, actors: 0, notRunning: 0, restarts: 0, mailboxes: 0 };
    const walk = (n) => {
        if (n.kind === 'supervisor') t.supervisors++;
        else t.actors++;
        if (!running(n)) t.notRunning++;
        t.restarts += n.restarts ?? 0;
        t.mailboxes += n.mailbox ?? 0;
        (n.children ?? []).forEach(walk);
    };
    walk(root);
    return t;
}

function draw(root) {
    page.tree = root;
    const items = flatten(root, $('all').checked);
    const seen = new Set();
    const order = [];
    for (const item of items) {
        const key = item.key ?? item.node.id;
        seen.add(key);
        let row = page.rows.get(key);
        if (!row) {
            row = makeRow(key, Boolean(item.node && item.parent));
            page.rows.set(key, row);
            if (page.drawn) row.tr.classList.add('new');
        }
        if (item.node) fillNode(row, item.node, item.lines);
        else fillMore(row, item);
        order.push(row.tr);
    }
    for (const [key, row] of page.rows) {
        if (!seen.has(key)) {
            row.tr.remove();
            page.rows.delete(key);
        }
    }
    // re-order only when the order changed, so a button being pressed stays where it is
    const body = $('rows');
    const current = [...body.children];
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) body.replaceChildren(...order);
    page.drawn = true;

    const t = totals(root);
    const summary = $('summary');
    summary.textContent = `${t.supervisors} supervisors, ${t.actors} actors; ${t.notRunning} not running; ` +
        `${t.restarts} restarts; mailboxes ${t.mailboxes} in all`;
    summary.classList.toggle('bad', t.notRunning > 0);
}

// ---- polling ------------------------------------------------------------------------------------

function notice(text) {
    $('notice').textContent = text || '';
}

function showConnection(state, text) {
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = text;
}

async function poll() {
    if (page.polling || !page.token) return;
    page.polling = true;
    const token = page.token;
    try {
        const root = await api.tree(token);
        if (token !== page.token) return;
        draw(root);
        $('main').classList.remove('stale');
        showConnection('live', 'Live');
    } catch (err) {
        if (token !== page.token) return;
        if (err.status === 401) return signOut('The token was refused (revoked or unknown): sign in again.');
        if (err.status === 403) return signOut('This token is not an admin token: the tree needs one (fleetd token create --admin).', false);
        $('main').classList.add('stale');
        showConnection('reconnecting', err.status === 0 ? 'Unreachable' : `Unavailable (${err.status})`);
        notice(err.status === 0 ? 'fleetd cannot be reached: retrying every second; the tree below is the last one seen.'
            : `fleetd answered ${err.status}: ${err.message}`);
        return;
    } finally {
        page.polling = false;
    }
    notice('');
}

async function restart(id, button) {
    if (!window.confirm(`Restart ${id}? Its supervisor kills it and starts it again (a drill).`)) return;
    button.disabled = true;
    notice('');
    try {
        await api.restart(page.token, id); // answers once the child runs again
        await poll(); // its restarts cell flashes
    } catch (err) {
        if (err.status === 401) return signOut('The token was refused (revoked or unknown): sign in again.');
        notice(`${id} was not restarted: ${err.message}`);
    } finally {
        button.disabled = false;
    }
}

// ---- signing in and out -------------------------------------------------------------------------

function stopPolling() {
    clearInterval(page.timer);
    page.timer = null;
}

function showSignIn(message) {
    stopPolling();
    $('main').hidden = true;
    $('signout').hidden = true;
    $('signin').hidden = false;
    $('signin-error').textContent = message || '';
    showConnection('idle', '');
    notice('');
    $('token').focus();
}

/** Back to the form; forget: the token is dropped from this browser too (a 403 keeps it: the map may use it). */
function signOut(message, forget = true) {
    if (forget) session.forget();
    page.token = null;
    for (const row of page.rows.values()) row.tr.remove();
    page.rows.clear();
    page.drawn = false;
    showSignIn(message);
}

function signIn(token) {
    page.token = token;
    session.keep(token);
    $('signin').hidden = true;
    $('main').hidden = false;
    $('signout').hidden = false;
    showConnection('connecting', 'Connecting…');
    stopPolling();
    page.timer = setInterval(poll, POLL_MS);
    poll();
}

function main() {
    $('signin-form').addEventListener('submit', (e) => {
        e.preventDefault();
        const token = $('token').value.trim();
        $('token').value = '';
        if (token) signIn(token);
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('all').addEventListener('change', () => page.tree && draw(page.tree));
    const token = takeFragment().token || session.token();
    if (token) signIn(token);
    else showSignIn('');
}

// For tests and debugging: what the page shows for one child.
window.fleetdAdmin = {
    row: (id) => {
        const row = page.rows.get(id);
        return row ? { ...row.last, status: row.last.status, restarts: Number(row.last.restarts) } : null;
    },
    ids: () => [...page.rows.keys()],
    connection: () => $('conn').dataset.state,
};

main();
