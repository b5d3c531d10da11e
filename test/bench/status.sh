#!/usr/bin/env bash
# test/bench/status.sh: status reads of a 50-vehicle fleet, fleetd `GET /api/v1/fleets/bench-1/status`
# (the tracker's snapshot, from memory) against nginx serving the very same bytes as a static file,
# with the same wrk settings in one run, both requests carrying `Authorization: Bearer TOKEN`.
#
# It prepares the fleet, then hands over to test/bench/http.sh, which does the measuring (fairness
# rules, ABBA runs, CPU per request, the Markdown table: see its header):
#   1. a throwaway PostgreSQL (fsync on), `fleetd migrate`, a fleet, a partner and a token for the
#      fleet made with the CLI;
#   2. a fleetd of its own takes one signed batch of BENCH_VEHICLES fixes (the reference
#      `standardwebhooks` package signs it) and stays up until the audit worker has stored them, so
#      the measured fleetd's tracker loads the fleet from vehicle_latest;
#   3. http.sh with BENCH_PATH = the status route, BENCH_HEADER = the Authorization header,
#      BENCH_DATABASE_URL = this database, and nginx given an ETag and `Cache-Control: no-cache`
#      like fleetd's (BENCH_NGINX_CONF). fleetd's body is fetched once and written as nginx's file.
#
# Usage: test/bench/status.sh
#   BENCH_VEHICLES=50        vehicles in the fleet (one fix each, every optional field set)
#   BENCH_ACCESS_LOG=off     as http.sh (default here: off only)
#   BENCH_THREADS BENCH_CONNECTIONS BENCH_DURATION BENCH_WARMUP BENCH_REPEAT BENCH_NGINX_SENDFILE
#   FLEETD_BIN               default build-release/fleetd (a Release build)
#   FLEETD_SHARDS NGINX_BIN BENCH_KEEP   passed to http.sh unchanged
# Targets (issue 6): fleetd >= 1.0x nginx's req/s, p99 <= 2 ms.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

VEHICLES=${BENCH_VEHICLES:-50}
KEEP=${BENCH_KEEP:-0}
FLEETD=${FLEETD_BIN:-$ROOT/build-release/fleetd}
if ! [[ $VEHICLES =~ ^[1-9][0-9]*$ ]] || ((VEHICLES > 1000)); then
    fl_die "BENCH_VEHICLES must be 1 to 1000 (one batch), not '$VEHICLES'"
fi
for tool in node curl ss; do command -v "$tool" >/dev/null || fl_die "$tool is missing"; done
[[ -x $FLEETD ]] || fl_die "no fleetd at $FLEETD: cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DFLEETD_TESTS=OFF && cmake --build build-release -j2 (or set FLEETD_BIN)"
[[ -d $ROOT/test/node_modules/standardwebhooks ]] || fl_die "test/node_modules/standardwebhooks is missing: (cd test && npm ci)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-status-bench.XXXXXX")
chmod 755 "$tmp" # the postgres user (as root) must traverse it
pgdata=$tmp/pg
pg_started=0
FLEETD_PID=

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    fl_stop_pid "$FLEETD_PID"
    ((pg_started)) && fl_pg_discard "$pgdata"
    if [[ $KEEP == 1 ]]; then printf 'kept %s\n' "$tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- database, fleet, partner, token --------------------------------------------------------
fl_say "database: throwaway PostgreSQL in $pgdata"
pg_started=1
fl_pg_init "$pgdata"
fl_pg_start "$pgdata"
fl_pg_createdb "$pgdata" fleetd_bench
DATABASE_URL=$(fl_pg_url "$pgdata" fleetd_bench)
FLEETD_MASTER_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export DATABASE_URL FLEETD_MASTER_KEY
unset FLEETD_CONFIG
cli() { "$FLEETD" "$@" 2>>"$tmp/cli.log" || fl_die "fleetd $* failed: $(tail -3 "$tmp/cli.log")"; }
cli migrate >/dev/null
cli fleet create bench-1 >/dev/null
SECRET=$(cli partner create bench --fleet bench-1)
TOKEN=$(cli token create --fleet bench-1 --name bench)
[[ $SECRET == whsec_* && $TOKEN == fl_* ]] || fl_die "the CLI printed no secret or token"

# ---- one signed batch of VEHICLES fixes, stored by a fleetd of its own ------------------------
PORT=$(comm -23 <(seq 20000 29999) <(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u) | shuf -n1)
FLEETD_LISTEN=127.0.0.1:$PORT FLEETD_SHARDS=1 FLEETD_JOBS_POLL_INTERVAL=100ms "$FLEETD" serve >"$tmp/fleetd.prepare.log" 2>&1 &
FLEETD_PID=$!
for ((i = 0; i < 150; i++)); do
    curl -fso /dev/null "http://127.0.0.1:$PORT/ready" && break
    kill -0 "$FLEETD_PID" 2>/dev/null || fl_die "fleetd exited: $(tail -5 "$tmp/fleetd.prepare.log")"
    sleep 0.1
done
# (from test/, where the evaluated module finds test/node_modules)
# shellcheck disable=SC2016 # JavaScript, not shell
(cd "$ROOT/test" && SECRET=$SECRET URL="http://127.0.0.1:$PORT/api/v1/ingest/bench" VEHICLES=$VEHICLES node --input-type=module -e '
import { Webhook } from "standardwebhooks";
const n = Number(process.env.VEHICLES), at = new Date(), fixes = [];
for (let i = 0; i < n; i++) {
    fixes.push({ fleet_id: "bench-1", vehicle_id: `truck-${String(i).padStart(3, "0")}`,
        lat: +(59.3 + i * 0.0013).toFixed(6), lng: +(18.05 + i * 0.0021).toFixed(6),
        recorded_at: new Date(at.getTime() - 1000 - i * 37).toISOString(),
        speed_kmh: 20 + (i % 40), heading_deg: (i * 29) % 360, accuracy_m: 3 + (i % 7) });
}
const body = JSON.stringify({ fixes }), id = `status-bench-${at.getTime()}`;
const res = await fetch(process.env.URL, { method: "POST", body, headers: { "Content-Type": "application/json",
    "webhook-id": id, "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
    "webhook-signature": new Webhook(process.env.SECRET).sign(id, at, body) } });
if (res.status !== 202) { console.error(`ingest answered ${res.status}: ${await res.text()}`); process.exit(1); }
') || fl_die "the signed batch was refused"
for ((i = 0; i < 300; i++)); do
    stored=$(psql "$DATABASE_URL" -XAtqc "SELECT count(*) FROM vehicle_latest WHERE fleet_id = 'bench-1'")
    ((stored == VEHICLES)) && break
    sleep 0.1
done
((stored == VEHICLES)) || fl_die "the audit worker stored $stored of $VEHICLES vehicles in 30 s"
fl_stop_pid "$FLEETD_PID"
FLEETD_PID=
fl_say "fleet bench-1: $VEHICLES vehicles stored; measuring with test/bench/http.sh"

# ---- the measurement --------------------------------------------------------------------------
BENCH_PATH=/api/v1/fleets/bench-1/status \
    BENCH_HEADER="Authorization: Bearer $TOKEN" \
    BENCH_DATABASE_URL=$DATABASE_URL \
    BENCH_NGINX_CONF='etag on; add_header Cache-Control no-cache;' \
    BENCH_ACCESS_LOG=${BENCH_ACCESS_LOG:-off} \
    FLEETD_BIN=$FLEETD \
    "$ROOT/test/bench/http.sh"
