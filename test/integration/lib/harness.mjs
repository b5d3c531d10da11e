// Shared helpers for the integration tests: the real fleetd binary, a real PostgreSQL, raw HTTP.
//
// Environment (set by test/CMakeLists.txt and scripts/test):
//   FLEETD_BIN         the built binary
//   FLEETD_SOURCE_DIR  the source tree (docs/configuration.md)
//   DATABASE_URL       a superuser libpq URL of a throwaway cluster (database postgres)
//   FLEETD_TEST_PG     a script: `$FLEETD_TEST_PG stop|start|restart` for that cluster
//
// Every wait here is bounded, every child process and socket is tracked and torn down even when a
// test fails: node 20's test runner never exits while a handle is open, so a leak would hang ctest.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { Webhook } from 'standardwebhooks';

export { delay };

/** Per-test timeout for node:test; no test should come near it, it only turns a hang into a failure. */
export const TEST_TIMEOUT_MS = 120_000;

/** X-Request-Id as the contract defines a valid one. */
export const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

export function requireEnv(name) {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set: run the integration tests through ctest (scripts/test)`);
    return value;
}

export const FLEETD_BIN = () => requireEnv('FLEETD_BIN');
export const SOURCE_DIR = () => requireEnv('FLEETD_SOURCE_DIR');

/** A DATABASE_URL on which nothing listens: a socket directory that does not exist. */
export const UNREACHABLE_DATABASE_URL = 'postgresql:///postgres?host=/nonexistent/fleetd-integration-test&user=postgres&connect_timeout=2';

// ---- bookkeeping: everything started here is stopped here -------------------------------------------------

const liveChildren = new Set(); // ChildProcess
const liveServers = new Set(); // the objects startFleetd returns
const liveConns = new Set(); // Conn

function killAllChildren() {
    for (const child of liveChildren) {
        try {
            child.kill('SIGKILL');
        } catch {
            /* already gone */
        }
    }
}
// Set while this process has the shared cluster stopped (clusterCtl): whatever ends the process
// starts it again, so the tests that follow find it up.
let clusterStoppedByUs = false;
function restartClusterSync() {
    if (!clusterStoppedByUs) return;
    clusterStoppedByUs = false;
    spawnSync(`${process.env.FLEETD_TEST_PG} start`, { shell: true, stdio: 'ignore', timeout: 60_000 });
}
process.on('exit', () => {
    killAllChildren();
    restartClusterSync();
});
// Interrupted (Ctrl-C, ctest's timeout): no fleetd is left behind holding a port or a database.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
        killAllChildren();
        restartClusterSync();
        process.exit(128 + { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 }[sig]);
    });
}

// Registered at import, so it is the first root-level `after` hook of every file: servers are stopped
// gracefully (stop() is idempotent, so a file's own after(() => srv.stop()) still sees the same result),
// then stray sockets and processes go. The last line of defence: should some handle still keep the
// event loop alive, exit anyway instead of hanging until ctest's timeout.
after(async () => {
    const errors = [];
    for (const srv of [...liveServers]) {
        try {
            await srv.stop();
        } catch (err) {
            errors.push(err);
        }
    }
    for (const conn of [...liveConns]) conn.destroy();
    for (const child of [...liveChildren]) child.kill('SIGKILL');
    setTimeout(() => {
        process.stderr.write('harness: handles still open 60 s after the tests ended; exiting\n');
        process.exit(process.exitCode ?? 1);
    }, 60_000).unref();
    if (errors.length) throw errors[0];
});

// ---- waiting ----------------------------------------------------------------------------------------------

/**
 * Polls fn until it returns a truthy value (returned) or timeoutMs passes (throws, with the last value or
 * error in the message). fn may be async; an exception from fn counts as "not yet".
 */
export async function waitFor(fn, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}) {
    const deadline = performance.now() + timeoutMs;
    let last;
    let lastErr;
    for (;;) {
        try {
            last = await fn();
            lastErr = undefined;
            if (last) return last;
        } catch (err) {
            lastErr = err;
        }
        if (performance.now() >= deadline) {
            const detail = lastErr ? `last error: ${lastErr.stack || lastErr}` : `last value: ${inspectShort(last)}`;
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${detail}`);
        }
        await delay(intervalMs);
    }
}

function inspectShort(v) {
    let s;
    try {
        s = typeof v === 'string' ? v : JSON.stringify(v);
    } catch {
        s = String(v);
    }
    return s && s.length > 2000 ? s.slice(0, 2000) + '...' : s;
}

/** Resolves when the promise does, rejects after ms with a message naming what was awaited. */
export function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        }),
    ]).finally(() => clearTimeout(timer));
}

// ---- PostgreSQL -------------------------------------------------------------------------------------------

/** Parses a libpq key=value conninfo into a node-postgres config. */
function parseConninfo(text) {
    const out = {};
    const re = /\s*([A-Za-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'|(\S*))/g;
    let m;
    while ((m = re.exec(text))) {
        const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[4];
        out[m[1]] = value;
    }
    const map = { host: 'host', port: 'port', user: 'user', password: 'password', dbname: 'database' };
    const cfg = {};
    for (const [k, v] of Object.entries(out)) if (map[k]) cfg[map[k]] = k === 'port' ? Number(v) : v;
    return cfg;
}

function isUri(url) {
    return /^postgres(ql)?:\/\//.test(url);
}

/** node-postgres client config for a libpq URI or conninfo. */
export function pgConfig(url) {
    return isUri(url) ? { connectionString: url } : parseConninfo(url);
}

/** The same connection string naming another database. */
export function withDatabaseName(url, dbname) {
    if (isUri(url)) {
        const u = new URL(url);
        u.pathname = '/' + encodeURIComponent(dbname);
        u.searchParams.delete('dbname');
        return u.toString();
    }
    if (/(^|\s)dbname\s*=/.test(url)) return url.replace(/(^|\s)dbname\s*=\s*('(?:[^'\\]|\\.)*'|\S*)/, `$1dbname=${dbname}`);
    return `${url} dbname=${dbname}`;
}

/** Runs one query on a fresh connection (closed afterwards); returns the pg result. */
export async function pgQuery(url, sql, params = []) {
    const client = new pg.Client({ ...pgConfig(url), connectionTimeoutMillis: 5000 });
    client.on('error', () => {}); // a server going away between queries is reported by the query
    await client.connect();
    try {
        return await client.query(sql, params);
    } finally {
        await client.end().catch(() => {});
    }
}

/**
 * Creates a database with a unique name on the DATABASE_URL cluster. Returns
 * {name, url, query(sql, params), drop()}. With t, the database is dropped when the test ends;
 * otherwise call drop() (e.g. from an after hook). drop() waits (bounded) for the cluster to be up,
 * so it also works right after a test that stopped and restarted it.
 */
export async function createDatabase(tag, t) {
    const admin = requireEnv('DATABASE_URL');
    const safeTag = String(tag).toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 20);
    const name = `fleetd_it_${safeTag}_${process.pid}_${randomBytes(4).toString('hex')}`;
    await pgQuery(admin, `CREATE DATABASE "${name}"`);
    const url = withDatabaseName(admin, name);
    let dropped = false;
    const db = {
        name,
        url,
        query: (sql, params) => pgQuery(url, sql, params),
        async drop() {
            if (dropped) return;
            // A server still using the database is stopped first (its own stop() later checks its exit
            // status): dropping the database under it would only make noise in its log.
            for (const srv of [...liveServers]) if (srv.env.DATABASE_URL === url) await srv.stop({ expectCode: null });
            await waitFor(() => pgQuery(admin, 'SELECT 1').then(() => true), {
                timeoutMs: 30_000,
                intervalMs: 200,
                what: `the cluster to accept connections before dropping ${name}`,
            });
            await pgQuery(admin, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
            dropped = true;
        },
    };
    if (t) t.after(() => db.drop());
    return db;
}

/** Tables in the public schema, sorted. */
export async function listTables(db) {
    const res = await db.query(
        `SELECT table_name FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`,
    );
    return res.rows.map((r) => r.table_name);
}

/** Rows of schema_migrations, ordered by version, with applied_at as an ISO string. */
export async function migrationRows(db) {
    const res = await db.query('SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version');
    return res.rows.map((r) => ({
        version: Number(r.version),
        name: r.name,
        checksum: Buffer.isBuffer(r.checksum) ? r.checksum.toString('hex') : String(r.checksum),
        applied_at: r.applied_at instanceof Date ? r.applied_at.toISOString() : String(r.applied_at),
    }));
}

/** `fleetd migrate` on db; asserts exit 0. Returns the run. */
export async function migrate(db) {
    const run = await runFleetd(['migrate'], { databaseUrl: db.url });
    assert.equal(run.code, 0, `fleetd migrate failed:\n${describeRun(run)}`);
    return run;
}

// ---- processes --------------------------------------------------------------------------------------------

/**
 * The environment fleetd sees: ours without any fleetd setting or DATABASE_URL (so a developer's shell
 * cannot change the outcome), plus the given ones. A value of undefined removes a variable.
 */
function childEnv(env = {}, databaseUrl) {
    const out = {};
    for (const [k, v] of Object.entries(process.env)) {
        if (k.startsWith('FLEETD_') || k === 'DATABASE_URL') continue;
        out[k] = v;
    }
    if (databaseUrl !== undefined) out.DATABASE_URL = databaseUrl;
    for (const [k, v] of Object.entries(env)) {
        if (v === undefined) delete out[k];
        else out[k] = String(v);
    }
    return out;
}

export function describeRun(run) {
    return `exit code: ${run.code} signal: ${run.signal}${run.timedOut ? ' (timed out, killed)' : ''}\n` +
        `--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
}

/** Runs a command to completion (SIGKILL after timeoutMs). Returns {code, signal, stdout, stderr, timedOut}. */
export function runCommand(cmd, args, { env, timeoutMs = 20_000, shell = false } = {}) {
    return new Promise((resolve) => {
        const child = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], shell });
        liveChildren.add(child);
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
        }, timeoutMs);
        child.on('error', (err) => {
            stderr += `spawn error: ${err.message}\n`;
        });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            liveChildren.delete(child);
            resolve({ code, signal, stdout, stderr, timedOut });
        });
    });
}

/**
 * Runs `fleetd ARGS` to completion. env adds settings; databaseUrl sets DATABASE_URL (default: none,
 * i.e. not set). Returns {code, signal, stdout, stderr, timedOut}.
 */
export function runFleetd(args, { env = {}, databaseUrl, timeoutMs = 20_000 } = {}) {
    return runCommand(FLEETD_BIN(), args, { env: childEnv(env, databaseUrl), timeoutMs });
}

/** runFleetd that must succeed (exit 0); returns its stdout, trimmed (a token, a secret, ...). */
export async function runFleetdOk(args, opts = {}) {
    const run = await runFleetd(args, opts);
    assert.equal(run.code, 0, `fleetd ${args.join(' ')}:\n${describeRun(run)}`);
    return run.stdout.trim();
}

/** `$FLEETD_TEST_PG stop|start|restart`; asserts success unless check is false. */
export async function clusterCtl(action, { check = true, timeoutMs = 60_000 } = {}) {
    const script = requireEnv('FLEETD_TEST_PG');
    if (action === 'stop') clusterStoppedByUs = true;
    const run = await runCommand(`${script} ${action}`, [], { shell: true, timeoutMs });
    if (action !== 'stop' && run.code === 0) clusterStoppedByUs = false;
    if (check) assert.equal(run.code, 0, `FLEETD_TEST_PG ${action} failed:\n${describeRun(run)}`);
    return run;
}

/** True when the DATABASE_URL cluster answers a query. */
export async function clusterUp() {
    try {
        await pgQuery(requireEnv('DATABASE_URL'), 'SELECT 1');
        return true;
    } catch {
        return false;
    }
}

/**
 * Starts `fleetd serve` on a free port with JSON logs and waits (bounded) for http.listening.
 * Options: env (extra settings), databaseUrl (default: DATABASE_URL of the test cluster), t (stop the
 * server when that test ends), startTimeoutMs.
 * Returns {port, url, child, logs, waitForLog(pred, timeoutMs), stop({expectCode, timeoutMs}), exited}.
 *  - logs: every stderr line so far, parsed (non-JSON lines as {raw}); it keeps growing.
 *  - waitForLog(pred): pred is an event name or a function of the entry; resolves with the first
 *    matching entry, already logged or to come; rejects on timeout or if fleetd exits first.
 *  - stop(): SIGTERM, wait, SIGKILL after timeoutMs; asserts the exit code (default 0; null: do not
 *    check). Idempotent: later calls return (and check) the same result.
 */
export async function startFleetd({ env = {}, databaseUrl, t, startTimeoutMs = 20_000, args = ['serve'], expectExit = 0 } = {}) {
    const url = databaseUrl === undefined ? requireEnv('DATABASE_URL') : databaseUrl;
    const childEnvironment = childEnv(
        { FLEETD_LISTEN: '127.0.0.1:0', FLEETD_LOG_FORMAT: 'json', ...env },
        url,
    );
    const child = spawn(FLEETD_BIN(), args, { env: childEnvironment, stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);

    const logs = [];
    const waiters = new Set();
    let stdout = '';
    let partial = '';
    let exitInfo = null;
    let exitResolve;
    const exited = new Promise((resolve) => (exitResolve = resolve));

    const onLine = (line) => {
        if (line === '') return;
        let entry;
        try {
            entry = JSON.parse(line);
            if (entry === null || typeof entry !== 'object') entry = { raw: line };
        } catch {
            entry = { raw: line };
        }
        logs.push(entry);
        for (const w of [...waiters]) w.check(entry);
    };
    child.stderr.setEncoding('utf8').on('data', (d) => {
        partial += d;
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
            onLine(partial.slice(0, nl));
            partial = partial.slice(nl + 1);
        }
    });
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.on('error', (err) => onLine(JSON.stringify({ raw: `spawn error: ${err.message}` })));
    child.on('close', (code, signal) => {
        if (partial) onLine(partial);
        partial = '';
        exitInfo = { code, signal };
        liveChildren.delete(child);
        for (const w of [...waiters]) w.exit();
        exitResolve(exitInfo);
    });

    const logTail = (n = 30) => logs.slice(-n).map((e) => (e.raw !== undefined ? e.raw : JSON.stringify(e))).join('\n');

    function waitForLog(pred, timeoutMs = 10_000) {
        const match = typeof pred === 'function' ? pred : (e) => e.event === pred;
        const what = typeof pred === 'function' ? pred.toString() : `event ${pred}`;
        const found = logs.find((e) => safe(match, e));
        if (found) return Promise.resolve(found);
        return new Promise((resolve, reject) => {
            const w = {
                check(entry) {
                    if (safe(match, entry)) done(null, entry);
                },
                exit() {
                    done(new Error(`fleetd exited (${JSON.stringify(exitInfo)}) before logging ${what}\n--- log ---\n${logTail()}`));
                },
            };
            const timer = setTimeout(
                () => done(new Error(`timed out after ${timeoutMs} ms waiting for a log line: ${what}\n--- log ---\n${logTail()}`)),
                timeoutMs,
            );
            function done(err, entry) {
                clearTimeout(timer);
                waiters.delete(w);
                if (err) reject(err);
                else resolve(entry);
            }
            waiters.add(w);
            if (exitInfo) w.exit();
        });
    }

    let stopPromise = null;
    const server = {
        child,
        logs,
        env: childEnvironment,
        waitForLog,
        logTail,
        exited,
        get stdout() {
            return stdout;
        },
        get exitInfo() {
            return exitInfo;
        },
        port: undefined,
        url: undefined,
        async stop({ expectCode = 0, timeoutMs = 15_000 } = {}) {
            if (!stopPromise) stopPromise = doStop(timeoutMs);
            const result = await stopPromise;
            if (expectCode !== null) {
                assert.ok(!result.killed, `fleetd did not exit within ${timeoutMs} ms of SIGTERM; killed\n--- log ---\n${logTail()}`);
                assert.equal(
                    result.code,
                    expectCode,
                    `fleetd exit: ${JSON.stringify(result)}, expected code ${expectCode}\n--- log ---\n${logTail()}`,
                );
            }
            return result;
        },
    };

    async function doStop(timeoutMs) {
        let killed = false;
        if (!exitInfo) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => {
                killed = true;
                child.kill('SIGKILL');
            }, timeoutMs);
            await exited;
            clearTimeout(timer);
        }
        liveServers.delete(server);
        for (const conn of [...liveConns]) if (conn.port === server.port) conn.destroy();
        return { ...exitInfo, killed };
    }

    liveServers.add(server);
    if (t) t.after(() => server.stop({ expectCode: expectExit }));

    let listening;
    try {
        listening = await waitForLog('http.listening', startTimeoutMs);
    } catch (err) {
        await server.stop({ expectCode: null });
        throw err;
    }
    const m = /:(\d+)$/.exec(String(listening.addr ?? ''));
    if (!m) {
        await server.stop({ expectCode: null });
        throw new Error(`http.listening has no addr host:port: ${JSON.stringify(listening)}`);
    }
    server.port = Number(m[1]);
    server.url = `http://127.0.0.1:${server.port}`;
    server.listening = listening;
    return server;
}

function safe(fn, arg) {
    try {
        return fn(arg);
    } catch {
        return false;
    }
}

/** The http.access entries logged so far with this request id. */
export function accessLines(server, requestId) {
    return server.logs.filter((e) => e.event === 'http.access' && e.request_id === requestId);
}

/** A scratch directory removed when the test ends. */
export function tempDir(t) {
    const dir = mkdtempSync(join(tmpdir(), 'fleetd-it-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
}

// ---- raw HTTP ---------------------------------------------------------------------------------------------

/**
 * Builds one HTTP/1.1 request. headers is an object or a list of [name, value]; Host is added unless
 * given; Content-Length is added for a body unless a Content-Length or Transfer-Encoding header is given.
 */
export function buildRequest({ method = 'GET', path = '/', headers = {}, body, version = 'HTTP/1.1' } = {}) {
    const list = Array.isArray(headers) ? [...headers] : Object.entries(headers);
    const has = (name) => list.some(([k]) => k.toLowerCase() === name);
    if (!has('host')) list.unshift(['Host', '127.0.0.1']);
    const bodyBuf = body === undefined ? null : Buffer.isBuffer(body) ? body : Buffer.from(String(body));
    if (bodyBuf && !has('content-length') && !has('transfer-encoding')) list.push(['Content-Length', String(bodyBuf.length)]);
    const head = `${method} ${path} ${version}\r\n` + list.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n';
    return bodyBuf ? Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]) : Buffer.from(head, 'latin1');
}

/** A chunked body: Transfer-Encoding chunked framing of the given pieces, terminated. */
export function chunked(pieces) {
    const parts = pieces.map((p) => {
        const b = Buffer.isBuffer(p) ? p : Buffer.from(p);
        return Buffer.concat([Buffer.from(b.length.toString(16) + '\r\n'), b, Buffer.from('\r\n')]);
    });
    return Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
}

/**
 * Parses as many complete HTTP/1.x responses as buf holds.
 * opts.head(i): true when response i answers a HEAD (no body whatever the headers say);
 * opts.closed: the connection is closed, so a response without length ends at the end of buf.
 * Returns {responses, consumed, error}: error set when the bytes are not HTTP.
 * A response: {version, status, reason, headers (lower-case names; repeated ones joined by ", "),
 * headerList [[name, value]], body (Buffer), text, json (parsed or undefined), raw (Buffer)}.
 */
export function parseResponses(buf, { head = () => false, closed = false, startIndex = 0 } = {}) {
    const responses = [];
    let pos = 0;
    for (;;) {
        if (pos >= buf.length) break;
        const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
        if (end < 0) {
            if (!/^HTTP\/1\.[01] /.test(buf.subarray(pos, pos + 9).toString('latin1')) && buf.length - pos >= 9)
                return { responses, consumed: pos, error: `not an HTTP response at byte ${pos}: ${JSON.stringify(buf.subarray(pos, pos + 80).toString('latin1'))}` };
            break;
        }
        const lines = buf.subarray(pos, end).toString('latin1').split('\r\n');
        const sm = /^(HTTP\/1\.[01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
        if (!sm) return { responses, consumed: pos, error: `bad status line: ${JSON.stringify(lines[0])}` };
        const headers = {};
        const headerList = [];
        for (const line of lines.slice(1)) {
            const c = line.indexOf(':');
            if (c <= 0) return { responses, consumed: pos, error: `bad header line: ${JSON.stringify(line)}` };
            const name = line.slice(0, c).trim();
            const value = line.slice(c + 1).trim();
            headerList.push([name, value]);
            const key = name.toLowerCase();
            headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
        }
        const status = Number(sm[2]);
        let bodyStart = end + 4;
        let body;
        let next;
        const index = startIndex + responses.length;
        if (head(index) || (status >= 100 && status < 200) || status === 204 || status === 304) {
            body = Buffer.alloc(0);
            next = bodyStart;
        } else if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
            const pieces = [];
            let p = bodyStart;
            let complete = false;
            for (;;) {
                const le = buf.indexOf('\r\n', p, 'latin1');
                if (le < 0) break;
                const size = parseInt(buf.subarray(p, le).toString('latin1').split(';')[0], 16);
                if (Number.isNaN(size)) return { responses, consumed: pos, error: 'bad chunk size' };
                if (size === 0) {
                    // optional trailer fields, then an empty line
                    const te = buf.indexOf('\r\n\r\n', le, 'latin1');
                    if (te >= 0) {
                        next = te + 4;
                        complete = true;
                    }
                    break;
                }
                if (le + 2 + size + 2 > buf.length) break;
                pieces.push(buf.subarray(le + 2, le + 2 + size));
                p = le + 2 + size + 2;
            }
            if (!complete) break;
            body = Buffer.concat(pieces);
        } else if (headers['content-length'] !== undefined) {
            const len = Number(headers['content-length']);
            if (!Number.isInteger(len) || len < 0) return { responses, consumed: pos, error: `bad Content-Length ${headers['content-length']}` };
            if (bodyStart + len > buf.length) break;
            body = buf.subarray(bodyStart, bodyStart + len);
            next = bodyStart + len;
        } else {
            if (!closed) break;
            body = buf.subarray(bodyStart);
            next = buf.length;
        }
        const text = body.toString('utf8');
        let json;
        try {
            json = JSON.parse(text);
        } catch {
            json = undefined;
        }
        responses.push({
            version: sm[1],
            status,
            reason: sm[3] ?? '',
            headers,
            headerList,
            body,
            text,
            json,
            raw: buf.subarray(pos, next),
        });
        pos = next;
    }
    return { responses, consumed: pos, error: null };
}

/**
 * One client TCP connection with a receive buffer. Times are performance.now() milliseconds.
 * closedAt is when the server's FIN or RST arrived (or the socket otherwise ended).
 */
export class Conn {
    static open(port, { timeoutMs = 10_000 } = {}) {
        return new Promise((resolve, reject) => {
            const socket = net.connect({ host: '127.0.0.1', port });
            const timer = setTimeout(() => {
                socket.destroy();
                reject(new Error(`connect to 127.0.0.1:${port} timed out after ${timeoutMs} ms`));
            }, timeoutMs);
            socket.once('connect', () => {
                clearTimeout(timer);
                socket.removeListener('error', onError);
                resolve(new Conn(socket, port));
            });
            const onError = (err) => {
                clearTimeout(timer);
                reject(err);
            };
            socket.once('error', onError);
        });
    }

    constructor(socket, port) {
        this.socket = socket;
        this.port = port;
        this.localPort = socket.localPort;
        this.buf = Buffer.alloc(0);
        this.offset = 0; // bytes of buf already returned by readResponses
        this.responsesRead = 0;
        this.closed = false;
        this.closedAt = null;
        this.error = null;
        this.openedAt = performance.now();
        this.firstDataAt = null;
        this.listeners = new Set();
        socket.setNoDelay(true);
        socket.on('data', (d) => {
            if (this.firstDataAt === null) this.firstDataAt = performance.now();
            this.buf = Buffer.concat([this.buf, d]);
            this.notify();
        });
        const markClosed = () => {
            if (!this.closed) {
                this.closed = true;
                this.closedAt = performance.now();
            }
            this.notify();
        };
        socket.on('end', markClosed);
        socket.on('close', () => {
            markClosed();
            liveConns.delete(this);
        });
        socket.on('error', (err) => {
            this.error = this.error ?? err;
            markClosed();
        });
        liveConns.add(this);
    }

    notify() {
        for (const fn of [...this.listeners]) fn();
    }

    /** Writes bytes; resolves true once handed to the kernel, false when the connection is gone. */
    write(data) {
        if (this.closed || this.socket.destroyed) return Promise.resolve(false);
        return new Promise((resolve) => {
            this.socket.write(data, (err) => {
                if (err) this.error = this.error ?? err;
                resolve(!err);
            });
        });
    }

    /** Waits until cond() is true (checked on every event); throws on timeout. */
    until(cond, timeoutMs, what) {
        if (cond()) return Promise.resolve();
        return new Promise((resolve, reject) => {
            const check = () => {
                if (cond()) done(null);
            };
            const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
            const done = (err) => {
                clearTimeout(timer);
                this.listeners.delete(check);
                if (err) reject(err);
                else resolve();
            };
            this.listeners.add(check);
        });
    }

    /** Bytes received and not yet consumed by readResponses. */
    pending() {
        return this.buf.subarray(this.offset);
    }

    /**
     * Waits for n complete responses after those already read, consumes and returns them.
     * head: list of booleans (or a function of the index within this read) marking HEAD requests.
     * Throws when the connection closes first, the bytes are not HTTP, or on timeout.
     */
    async readResponses(n = 1, { timeoutMs = 10_000, head = [] } = {}) {
        const isHead = typeof head === 'function' ? head : (i) => Boolean(head[i]);
        let parsed;
        const enough = () => {
            parsed = parseResponses(this.pending(), { head: isHead, closed: this.closed });
            return parsed.error || parsed.responses.length >= n || this.closed;
        };
        try {
            await this.until(enough, timeoutMs, `${n} response(s) on port ${this.port}`);
        } catch (err) {
            err.message += `; got ${parsed?.responses.length ?? 0}; bytes so far: ${JSON.stringify(this.pending().toString('latin1').slice(0, 3000))}`;
            throw err;
        }
        if (parsed.error) throw new Error(`${parsed.error}; bytes: ${JSON.stringify(this.pending().toString('latin1').slice(0, 3000))}`);
        if (parsed.responses.length < n)
            throw new Error(
                `connection closed after ${parsed.responses.length} of ${n} response(s)` +
                    `${this.error ? ` (${this.error.code || this.error.message})` : ''}; ` +
                    `bytes: ${JSON.stringify(this.pending().toString('latin1').slice(0, 3000))}`,
            );
        const responses = parsed.responses.slice(0, n);
        const used = responses.reduce((sum, r) => sum + r.raw.length, 0);
        this.offset += used;
        this.responsesRead += n;
        return responses;
    }

    /** One request and its response on this connection. */
    async request(opts = {}, { timeoutMs = 10_000 } = {}) {
        const ok = await this.write(buildRequest(opts));
        if (!ok && !this.pending().length) throw new Error(`write failed: ${this.error?.message ?? 'connection closed'}`);
        const [res] = await this.readResponses(1, { timeoutMs, head: [opts.method === 'HEAD'] });
        return res;
    }

    /** Resolves with closedAt once the server has closed; throws after timeoutMs. */
    async waitForClose(timeoutMs = 10_000) {
        await this.until(() => this.closed, timeoutMs, `the server to close the connection (port ${this.port})`);
        return this.closedAt;
    }

    destroy() {
        this.socket.destroy();
        liveConns.delete(this);
    }
}

/** Opens a connection that is destroyed when test t ends. */
export async function connect(port, t, opts) {
    const conn = await Conn.open(port, opts);
    if (t) t.after(() => conn.destroy());
    return conn;
}

/**
 * Sends chunks over a fresh connection, waiting delays[i] ms before chunk i (a number: between every two
 * chunks), stopping early when the server closes. Then reads: until the server closes (readUntilClose),
 * or until `responses` complete responses arrived, or the connection closed, within timeout ms from the
 * last write.
 * Returns {data, text, responses, closed, closedAt, sentAt[], firstSentAt, lastSentAt, chunksSent,
 * error} with times in ms relative to the connection being established.
 */
export async function rawExchange(port, chunks, { delays = 0, readUntilClose = false, timeout = 10_000, responses = 1, head = [] } = {}) {
    const conn = await Conn.open(port);
    try {
        const t0 = conn.openedAt;
        const sentAt = [];
        for (let i = 0; i < chunks.length; i++) {
            const wait = Array.isArray(delays) ? delays[i] ?? 0 : i > 0 ? delays : 0;
            if (wait > 0) await delay(wait);
            if (conn.closed) break;
            const at = performance.now() - t0;
            if (!(await conn.write(chunks[i]))) break;
            sentAt.push(at);
        }
        const isHead = (i) => Boolean(head[i]);
        try {
            if (readUntilClose) await conn.waitForClose(timeout);
            else
                await conn.until(
                    () => conn.closed || parseResponses(conn.buf, { head: isHead }).responses.length >= responses,
                    timeout,
                    `${responses} response(s)`,
                );
        } catch {
            /* reported through closed / responses */
        }
        const parsed = parseResponses(conn.buf, { head: isHead, closed: conn.closed });
        return {
            data: conn.buf,
            text: conn.buf.toString('latin1'),
            responses: parsed.responses,
            parseError: parsed.error,
            closed: conn.closed,
            closedAt: conn.closed ? conn.closedAt - t0 : null,
            sentAt,
            firstSentAt: sentAt[0] ?? null,
            lastSentAt: sentAt.length ? sentAt[sentAt.length - 1] : null,
            chunksSent: sentAt.length,
            error: conn.error,
        };
    } finally {
        conn.destroy();
    }
}

/**
 * One request on a fresh connection (Connection: close unless keepAlive); returns the parsed response
 * plus {closed}. opts: method, path, headers, body.
 */
export async function request(port, opts = {}, { timeoutMs = 10_000, keepAlive = false } = {}) {
    const headers = Array.isArray(opts.headers) ? [...(opts.headers ?? [])] : Object.entries(opts.headers ?? {});
    if (!keepAlive && !headers.some(([k]) => k.toLowerCase() === 'connection')) headers.push(['Connection', 'close']);
    const conn = await Conn.open(port);
    try {
        await conn.write(buildRequest({ ...opts, headers }));
        const [res] = await conn.readResponses(1, { timeoutMs, head: [opts.method === 'HEAD'] });
        return res;
    } finally {
        conn.destroy();
    }
}

/** GET path on a fresh connection. */
export function get(port, path, headers = {}) {
    return request(port, { method: 'GET', path, headers });
}

let signedCounter = 0;

/**
 * POSTs a batch to /api/v1/ingest/{partner} as a partner does: signed with secret ("whsec_...") by the
 * reference `standardwebhooks` package. body: an object (sent as JSON) or a raw string; id: the
 * webhook-id (default: unique per call); at: the signing time. Returns the response, as request().
 */
export function postSigned(port, { partner, secret, body, id, at = new Date() }) {
    const raw = typeof body === 'string' ? body : JSON.stringify(body);
    const msgId = id ?? `msg_${process.pid}_${++signedCounter}`;
    return request(port, {
        method: 'POST',
        path: `/api/v1/ingest/${partner}`,
        headers: {
            'Content-Type': 'application/json',
            'webhook-id': msgId,
            'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
            'webhook-signature': new Webhook(secret).sign(msgId, at, raw),
        },
        body: raw,
    });
}

// ---- assertions -------------------------------------------------------------------------------------------

/** A response that is a fleetd error: status, JSON body {"error":{"code","message"}}, X-Request-Id. */
export function assertJsonError(res, status, code) {
    const where = `response: ${res.status} ${JSON.stringify(res.headers)} ${res.text.slice(0, 500)}`;
    assert.equal(res.status, status, `status; ${where}`);
    assert.match(res.headers['content-type'] ?? '', /^application\/json\b/i, `Content-Type; ${where}`);
    assert.ok(res.json && typeof res.json === 'object', `body is JSON; ${where}`);
    assert.ok(res.json.error && typeof res.json.error === 'object', `body has "error"; ${where}`);
    assert.equal(res.json.error.code, code, `error.code; ${where}`);
    assert.equal(typeof res.json.error.message, 'string', `error.message; ${where}`);
    assert.ok(res.json.error.message.length > 0, `error.message is not empty; ${where}`);
    assertRequestId(res);
}

/** The response carries a valid X-Request-Id; returns it. */
export function assertRequestId(res) {
    const rid = res.headers['x-request-id'];
    assert.ok(rid !== undefined, `X-Request-Id missing on ${res.status} ${JSON.stringify(res.headers)}`);
    assert.match(rid, REQUEST_ID_RE, 'X-Request-Id is 1..128 of [A-Za-z0-9._:-]');
    return rid;
}

/** Asserts the Content-Length header matches the body actually received (for non-HEAD responses). */
export function assertContentLength(res) {
    assert.ok(res.headers['content-length'] !== undefined || /chunked/i.test(res.headers['transfer-encoding'] ?? ''),
        `response has neither Content-Length nor chunked: ${JSON.stringify(res.headers)}`);
    if (res.headers['content-length'] !== undefined) assert.equal(Number(res.headers['content-length']), res.body.length);
}
