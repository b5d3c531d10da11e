#!/usr/bin/env bash
# test/bench/ingest.sh: signed ingest end to end. The real `fleetd serve` with a throwaway
# PostgreSQL (fsync on), a fleet and a partner made with the CLI, no rate limit, no access log;
# wrk replays pre-signed batches (test/bench/ingest-gen.mjs, the `standardwebhooks` npm package,
# every request with its own webhook-id, each sent once) through test/bench/ingest.lua.
# Reports fixes/s, batches/s, latency p50/p99 and fleetd's (and PostgreSQL's) CPU time per batch
# at each batch size, and, under the same wrk settings in the same run, GET /health for comparison.
#
# Usage: test/bench/ingest.sh
#   BENCH_SIZES="1 10 100"   fixes per batch       BENCH_REPEAT=3     runs per size, median reported
#   BENCH_THREADS=1 BENCH_CONNECTIONS=64 BENCH_DURATION=10 (seconds)   wrk -t / -c / -d
#   BENCH_MAX_RATE=8000 BENCH_MAX_FIXES=100000   batches/s and fixes/s the pre-signed set must last
#                            for: N = min(rate, fixes/size) x duration x 1.2 requests, each sent once;
#                            a run that runs out is refused ("exhausted"): raise them
#   BENCH_PROFILE=1          afterwards, fleetd again under valgrind --tool=callgrind (1 shard),
#                            BENCH_PROFILE_SECONDS=20 of single-fix batches at wrk -c2; prints the
#                            top functions (exclusive and inclusive) from callgrind_annotate
#   BENCH_FSYNC=on           off: fl_pg_init --throwaway (fsync and full_page_writes off)
#   FLEETD_BIN               default build-release/fleetd     FLEETD_SHARDS (default nproc)
#   BENCH_KEEP=1             keep the temp dir (request files, fleetd and PostgreSQL logs)
# Each run prints /proc/loadavg before it; the machine should be otherwise idle (load < 0.5).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

SIZES=${BENCH_SIZES:-1 10 100}
REPEAT=${BENCH_REPEAT:-3}
THREADS=${BENCH_THREADS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
DURATION=${BENCH_DURATION:-10}
MAX_RATE=${BENCH_MAX_RATE:-8000}
MAX_FIXES=${BENCH_MAX_FIXES:-100000}
PROFILE=${BENCH_PROFILE:-0}
FSYNC=${BENCH_FSYNC:-on}
KEEP=${BENCH_KEEP:-0}
SHARDS=${FLEETD_SHARDS:-$(nproc)}
FLEETD=${FLEETD_BIN:-$ROOT/build-release/fleetd}
HZ=$(getconf CLK_TCK)

for v in REPEAT THREADS CONNECTIONS DURATION MAX_RATE MAX_FIXES; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || fl_die "BENCH_$v must be a positive integer, not '${!v}'"
done
for tool in wrk node curl; do command -v "$tool" >/dev/null || fl_die "$tool is missing"; done
[[ -x $FLEETD ]] || fl_die "no fleetd at $FLEETD: cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DFLEETD_TESTS=OFF && cmake --build build-release -j2 (or set FLEETD_BIN)"
[[ -d $ROOT/test/node_modules/standardwebhooks ]] || fl_die "test/node_modules/standardwebhooks is missing: (cd test && npm ci)"
cache=$(dirname "$FLEETD")/CMakeCache.txt
if [[ -f $cache ]] && ! grep -q '^CMAKE_BUILD_TYPE:STRING=Rel' "$cache"; then
    fl_warn "$FLEETD is not a Release build: figures are meaningless"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-ingest-bench.XXXXXX")
chmod 755 "$tmp" # the postgres user (as root) must traverse it
pgdata=$tmp/pg
pg_started=0
FLEETD_PID=
WRK_PID=

stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$? real
    trap - EXIT INT TERM
    stop_pid "$WRK_PID"
    stop_pid "$FLEETD_PID"
    if ((pg_started)); then
        real=$(readlink -f "$pgdata" 2>/dev/null || true)
        (fl_pg_stop "$pgdata" immediate) >/dev/null 2>&1 || true
        # as root the data may live behind a symlink in /var/tmp (fl_pg_init): remove that too
        if [[ -n $real && $real != "$tmp"/* && $real == /var/tmp/fleetd-* ]]; then rm -rf "$real"; fi
    fi
    if [[ $KEEP == 1 ]]; then printf 'kept %s\n' "$tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- database, fleet, partner ---------------------------------------------------------------
fl_say "database: throwaway PostgreSQL in $pgdata (fsync $FSYNC)"
pg_started=1
if [[ $FSYNC == off ]]; then fl_pg_init "$pgdata" --throwaway; else fl_pg_init "$pgdata"; fi
fl_pg_start "$pgdata"
fl_pg_createdb "$pgdata" fleetd_bench
DATABASE_URL=$(fl_pg_url "$pgdata" fleetd_bench)
POSTMASTER=$(head -n1 "$(readlink -f "$pgdata")/postmaster.pid")
FLEETD_MASTER_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export DATABASE_URL FLEETD_MASTER_KEY
unset FLEETD_CONFIG
"$FLEETD" migrate >"$tmp/cli.log" 2>&1 || fl_die "fleetd migrate failed: $(tail -5 "$tmp/cli.log")"
"$FLEETD" fleet create bench-1 >>"$tmp/cli.log" 2>&1 || fl_die "fleetd fleet create failed"
SECRET=$("$FLEETD" partner create bench --fleet bench-1 2>>"$tmp/cli.log")
[[ $SECRET == whsec_* ]] || fl_die "fleetd partner create printed no secret"

# ---- fleetd ---------------------------------------------------------------------------------
PORT=$(comm -23 <(seq 20000 29999) <(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u) | shuf -n1)
FLEETD_LISTEN=127.0.0.1:$PORT FLEETD_SHARDS=$SHARDS FLEETD_INGEST_RATE=0 FLEETD_ACCESS_LOG=false \
    "$FLEETD" serve >"$tmp/fleetd.log" 2>&1 &
FLEETD_PID=$!
for ((i = 0; i < 150; i++)); do
    curl -fso /dev/null "http://127.0.0.1:$PORT/ready" && break
    kill -0 "$FLEETD_PID" 2>/dev/null || fl_die "fleetd exited: $(tail -5 "$tmp/fleetd.log")"
    sleep 0.1
done
curl -fso /dev/null "http://127.0.0.1:$PORT/ready" || fl_die "fleetd not ready after 15 s"

# ---- helpers --------------------------------------------------------------------------------
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pg_ticks() { # the postmaster (with its reaped children) and every live child: backends, walwriter, ...
    local t c
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$POSTMASTER/stat")
    for c in $(pgrep -P "$POSTMASTER"); do t=$((t + $(ticks "$c" 2>/dev/null || echo 0))); done
    echo "$t"
}
gen() { # gen FILE N SIZE PREFIX
    SECRET=$SECRET PARTNER=bench FLEET=bench-1 HOSTPORT=127.0.0.1:$PORT PREFIX=$4 \
        node "$ROOT/test/bench/ingest-gen.mjs" "$1" "$2" "$3"
}
# run LABEL SIZE [REQFILE]: one measured wrk run; appends "label size batches/s p50 p99 fleetd_us pg_us" to results
run() {
    local label=$1 size=$2 file=${3:-} script f0 f1 p0 p1 out line
    script=$ROOT/test/bench/health.lua
    local url=http://127.0.0.1:$PORT/health
    [[ -n $file ]] && script=$ROOT/test/bench/ingest.lua && url=http://127.0.0.1:$PORT/api/v1/ingest/bench
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    f0=$(ticks "$FLEETD_PID")
    p0=$(pg_ticks)
    REQFILE=$file NTHREADS=$THREADS wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$script" "$url" >"$tmp/wrk.out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || fl_die "wrk failed: $(cat "$tmp/wrk.out")"
    WRK_PID=
    f1=$(ticks "$FLEETD_PID")
    p1=$(pg_ticks)
    line=$(grep '^RESULT ' "$tmp/wrk.out") || fl_die "no RESULT from wrk: $(cat "$tmp/wrk.out")"
    local requests duration_us p50_us p99_us non202 exhausted sockerr kv
    for kv in ${line#RESULT }; do
        case $kv in
        requests=* | duration_us=* | p50_us=* | p99_us=* | non202=* | exhausted=* | sockerr=*) printf -v "${kv%%=*}" '%s' "${kv#*=}" ;;
        esac
    done
    ((exhausted == 0)) || fl_die "$label: the pre-signed requests ran out; raise BENCH_MAX_RATE"
    ((non202 == 0 && sockerr == 0)) || fl_warn "$label: $non202 bad statuses, $sockerr socket errors"
    out=$(awk -v r="$requests" -v d="$duration_us" -v s="$size" -v p50="$p50_us" -v p99="$p99_us" \
        -v fc=$((f1 - f0)) -v pc=$((p1 - p0)) -v hz="$HZ" -v l="$label" \
        'BEGIN { bps = r / (d / 1e6); printf "%s %d %.0f %.0f %.2f %.2f %.0f %.0f", l, s, bps * s, bps, p50 / 1000, p99 / 1000, fc / hz * 1e6 / r, pc / hz * 1e6 / r }')
    local fields
    read -r -a fields <<<"$out"
    printf '%-8s size %-4s %9s fixes/s %8s req/s  p50 %6s ms  p99 %7s ms  fleetd %5s us/req  postgres %5s us/req  load %s\n' \
        "${fields[@]}" "$load"
    echo "$out" >>"$tmp/results"
}

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
fl_say "fleetd $FLEETD ($SHARDS shards), commit $commit, $(nproc) CPUs, wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $(date -u +%Y-%m-%dT%H:%MZ)"
nreq() { # nreq SIZE: how many pre-signed requests a run at this batch size gets
    local r=$((MAX_FIXES / $1))
    ((r < MAX_RATE)) || r=$MAX_RATE
    ((r > 0)) || r=1
    echo $(((r * DURATION * 12 + 9) / 10))
}

# Sanity: one request by hand must be accepted.
gen "$tmp/one.req" 1 1 check
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
head -c -1 "$tmp/one.req" >&3
IFS= read -r status <&3 || true
exec 3>&-
[[ $status == *" 202 "* ]] || fl_die "a signed batch was not accepted: $status"

# Warm-up (discarded): vehicles registered, caches filled, connections open.
gen "$tmp/req" "$(nreq 10)" 10 warm
run warmup 10 "$tmp/req" >/dev/null

for ((rep = 1; rep <= REPEAT; rep++)); do
    for size in $SIZES; do
        gen "$tmp/req" "$(nreq "$size")" "$size" "r$rep-s$size"
        run "ingest" "$size" "$tmp/req"
    done
    run health 0
done

fl_say "medians of $REPEAT runs"
printf '| request | fixes/batch | fixes/s | batches (req)/s | p50 ms | p99 ms | fleetd CPU µs/req | PostgreSQL CPU µs/req |\n|---|---:|---:|---:|---:|---:|---:|---:|\n'
awk '{print $1 ":" $2}' "$tmp/results" | grep -v '^warmup' | sort -u -t: -k2,2n | while read -r key; do
    awk -v k="$key" '$1 ":" $2 == k' "$tmp/results" | awk -v n="$REPEAT" '
        { for (c = 3; c <= 8; c++) v[c, NR] = $c; lab = $1; sz = $2 }
        END {
            for (c = 3; c <= 8; c++) { m = 0; for (i = 1; i <= NR; i++) a[i] = v[c, i];
                for (i = 1; i <= NR; i++) for (j = i + 1; j <= NR; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                med[c] = a[int((NR + 1) / 2)] }
            name = (lab == "health") ? "GET /health" : "POST ingest"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, (lab == "health") ? "-" : sz,
                (lab == "health") ? "-" : med[3], med[4], med[5], med[6], med[7], med[8] }'
done
fl_note "load average now: $(cat /proc/loadavg)"
rm -f "$tmp/req"

# ---- optional profile: callgrind (perf counters are often unavailable in VMs) ----------------
if [[ $PROFILE == 1 ]]; then
    command -v valgrind >/dev/null || fl_die "valgrind is missing"
    stop_pid "$FLEETD_PID"
    FLEETD_PID=
    fl_say "profile: fleetd under callgrind, 1 shard, single-fix batches, wrk -c2 for ${BENCH_PROFILE_SECONDS:-20}s"
    FLEETD_LISTEN=127.0.0.1:$PORT FLEETD_SHARDS=1 FLEETD_INGEST_RATE=0 FLEETD_ACCESS_LOG=false \
        valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$tmp/callgrind.out" "$FLEETD" serve >"$tmp/fleetd-vg.log" 2>&1 &
    FLEETD_PID=$!
    for ((i = 0; i < 600; i++)); do
        curl -fso /dev/null "http://127.0.0.1:$PORT/ready" && break
        kill -0 "$FLEETD_PID" 2>/dev/null || fl_die "fleetd under valgrind exited: $(tail -5 "$tmp/fleetd-vg.log")"
        sleep 0.1
    done
    gen "$tmp/req" 5000 1 prof
    REQFILE=$tmp/req NTHREADS=1 wrk -t1 -c2 -d"${BENCH_PROFILE_SECONDS:-20}s" --timeout 10s \
        -s "$ROOT/test/bench/ingest.lua" "http://127.0.0.1:$PORT/" | grep '^RESULT' || true
    stop_pid "$FLEETD_PID" # SIGTERM: fleetd exits cleanly and callgrind writes its file
    FLEETD_PID=
    fl_say "callgrind: top 30 functions by exclusive cost (instructions)"
    callgrind_annotate "$tmp/callgrind.out" 2>/dev/null | grep -v "^$" | sed -n "1,60p" | tail -35 || true
    fl_say "callgrind: top 40 by inclusive cost"
    callgrind_annotate --inclusive=yes "$tmp/callgrind.out" 2>/dev/null | grep -v "^$" | sed -n "1,70p" | tail -45 || true
    cp "$tmp/callgrind.out" "${TMPDIR:-/tmp}/fleetd-ingest.callgrind.out" && fl_note "profile kept: ${TMPDIR:-/tmp}/fleetd-ingest.callgrind.out"
fi
