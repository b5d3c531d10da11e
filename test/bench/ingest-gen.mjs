// test/bench/ingest-gen.mjs: writes N signed ingest requests, raw HTTP/1.1, each followed by a NUL
// byte, for test/bench/ingest.lua to replay with wrk. Every request has its own webhook-id and a
// Standard Webhooks signature (the reference `standardwebhooks` package, as the integration tests)
// over its exact body. Fixes: VEHICLES vehicles (prefix PREFIX) in turn, recorded_at increasing
// by STEP_MS per fix and ending at most one second before now, positions drifting slowly.
//
// Usage: node ingest-gen.mjs OUT N SIZE   (env: SECRET, PARTNER, FLEET, HOSTPORT, PREFIX, VEHICLES)
import { openSync, writeSync, closeSync } from 'node:fs';
import { Webhook } from 'standardwebhooks';

const [out, nArg, sizeArg] = process.argv.slice(2);
const n = Number(nArg);
const size = Number(sizeArg);
const { SECRET, PARTNER = 'bench', FLEET = 'bench-1', HOSTPORT = '127.0.0.1', PREFIX = 'v' } = process.env;
const vehicles = Number(process.env.VEHICLES ?? 50);
if (!out || !(n > 0) || !(size > 0) || !SECRET) {
    console.error('usage: SECRET=whsec_... node ingest-gen.mjs OUT N SIZE');
    process.exit(2);
}
const wh = new Webhook(SECRET);
const now = Date.now();
const total = n * size;
// Spread the fixes over at most 20 minutes before now, at most one second apart.
const stepMs = Math.min(1000, (20 * 60 * 1000) / total);
const start = now - 1000 - total * stepMs;
const at = new Date(now);
const ts = String(Math.floor(now / 1000));
const fd = openSync(out, 'w');
let k = 0;
let chunks = [];
let pending = 0;
for (let i = 0; i < n; i++) {
    const fixes = [];
    for (let j = 0; j < size; j++, k++) {
        const v = k % vehicles;
        const lap = Math.floor(k / vehicles);
        fixes.push({
            fleet_id: FLEET,
            vehicle_id: `${PREFIX}-${v}`,
            lat: +(59.3 + v * 0.001 + lap * 0.00001).toFixed(6),
            lng: +(18.0 + v * 0.001 + lap * 0.00001).toFixed(6),
            recorded_at: new Date(start + k * stepMs).toISOString(),
            speed_kmh: 30 + (k % 40),
            heading_deg: (lap * 7) % 360,
            accuracy_m: 5,
        });
    }
    const body = JSON.stringify({ fixes });
    const id = `msg_${PREFIX}_${i}`;
    const sig = wh.sign(id, at, body);
    const req =
        `POST /api/v1/ingest/${PARTNER} HTTP/1.1\r\nHost: ${HOSTPORT}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nwebhook-id: ${id}\r\nwebhook-timestamp: ${ts}\r\n` +
        `webhook-signature: ${sig}\r\n\r\n${body}\0`;
    chunks.push(req);
    pending += req.length;
    if (pending > 1 << 20) {
        writeSync(fd, chunks.join(''));
        chunks = [];
        pending = 0;
    }
}
writeSync(fd, chunks.join(''));
closeSync(fd);
