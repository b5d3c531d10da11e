#!/usr/bin/env bash
# test/bench/live.sh: live fan-out over Phoenix Channels v2 (/socket/websocket), in one run.
#  1. ingest-to-subscriber latency: N WebSocket subscribers (BENCH_SUBSCRIBERS, default 1000 and
#     10000) join fleet:bench-1; signed single-fix batches (test/bench/ingest-gen.mjs, each fix a
#     new vehicle so its position names it) are posted at BENCH_RATE/s for BENCH_SECONDS; p50/p99/
#     max of (arrival at a subscriber - write of the request) over every (subscriber, position)
#     pair, the 202 latency, and how many pairs never arrived;
#  2. memory per idle subscribed WebSocket: fleetd's RSS (VmRSS, smaps_rollup) before and with
#     BENCH_IDLE_CONNS joined, idle connections (heartbeats every 30 s) spread over
#     BENCH_IDLE_FLEETS fleets, from source addresses 127.0.0.2..; kernel memory apart (TCP pages
#     of /proc/net/sockstat, Slab of /proc/meminfo).
# The client is test/bench/live_client.c (target live_client, epoll, one process per <= 10,000
# connections). Everything runs on 127.0.0.0/8, bounded in time, and is stopped on exit.
#
# Usage: test/bench/live.sh
#   BENCH_SUBSCRIBERS="1000 10000"  BENCH_RATE=20  BENCH_SECONDS=10  BENCH_GRACE=10 (s after the last 202)
#   BENCH_IDLE_CONNS=50000  BENCH_IDLE_FLEETS=50  BENCH_IDLE_SNDBUF=4096 (FLEETD_LIVE_SNDBUF of phase 2)
#   BENCH_IDLE_HOLD=40 (s held after all joined: one heartbeat round and more)   BENCH_PHASES="latency memory"
#   BENCH_BUILD_DIR  (default build-release; must hold fleetd and live_client: -DFLEETD_TESTS=ON)
#   FLEETD_SHARDS (default nproc)   BENCH_KEEP=1 keeps the temp dir (logs, client output)
# The connection count of phase 2 is capped by the open-file limit (ulimit -Hn) of this shell:
# fleetd holds one descriptor per connection. The run says when it capped it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000 10000}
RATE=${BENCH_RATE:-20}
SECONDS_=${BENCH_SECONDS:-10}
GRACE=${BENCH_GRACE:-10}
IDLE_CONNS=${BENCH_IDLE_CONNS:-50000}
IDLE_FLEETS=${BENCH_IDLE_FLEETS:-50}
IDLE_SNDBUF=${BENCH_IDLE_SNDBUF:-4096}
IDLE_HOLD=${BENCH_IDLE_HOLD:-40}
PHASES=${BENCH_PHASES:-latency memory}
KEEP=${BENCH_KEEP:-0}
SHARDS=${FLEETD_SHARDS:-$(nproc)}
BUILD=${BENCH_BUILD_DIR:-$ROOT/build-release}
FLEETD=$BUILD/fleetd
CLIENT=$BUILD/live_client

for v in RATE SECONDS_ GRACE IDLE_CONNS IDLE_FLEETS IDLE_HOLD; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || fl_die "BENCH_${v%_} must be a positive integer, not '${!v}'"
done
for n in $SUBSCRIBERS; do [[ $n =~ ^[1-9][0-9]*$ ]] || fl_die "BENCH_SUBSCRIBERS: '$n' is not a count"; done
((IDLE_FLEETS <= 1000)) || fl_die "BENCH_IDLE_FLEETS: at most 1000 (fleets per token)"
for tool in node curl ss; do command -v "$tool" >/dev/null || fl_die "$tool is missing"; done
[[ -x $FLEETD && -x $CLIENT ]] || fl_die "no fleetd or live_client in $BUILD: cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DFLEETD_TESTS=ON && cmake --build build-release -j2 --target fleetd live_client (or set BENCH_BUILD_DIR)"
[[ -d $ROOT/test/node_modules/standardwebhooks ]] || fl_die "test/node_modules/standardwebhooks is missing: (cd test && npm ci)"
if ! grep -q '^CMAKE_BUILD_TYPE:STRING=Rel' "$BUILD/CMakeCache.txt" 2>/dev/null; then
    fl_warn "$BUILD is not a Release build: figures are meaningless"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-live-bench.XXXXXX")
chmod 755 "$tmp"
pgdata=$tmp/pg
pg_started=0
FLEETD_PID=
CLIENT_PIDS=()

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$? real p
    trap - EXIT INT TERM
    for p in "${CLIENT_PIDS[@]}"; do fl_stop_pid "$p"; done
    fl_stop_pid "$FLEETD_PID"
    if ((pg_started)); then
        real=$(readlink -f "$pgdata" 2>/dev/null || true)
        (fl_pg_stop "$pgdata" immediate) >/dev/null 2>&1 || true
        if [[ -n $real && $real != "$tmp"/* && $real == /var/tmp/fleetd-* ]]; then rm -rf "$real"; fi
    fi
    if [[ $KEEP == 1 ]]; then printf 'kept %s\n' "$tmp" >&2; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- limits ---------------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" # fleetd and the clients inherit it
NOFILE=$(ulimit -n)
PER_CLIENT=$((NOFILE - 64 < 10000 ? NOFILE - 64 : 10000))
# fleetd's own descriptors: listener, database connections, event fds, log; 200 is ample
IDLE_CAP=$((NOFILE - 200))
IDLE_N=$IDLE_CONNS
if ((IDLE_N + IDLE_FLEETS > IDLE_CAP)); then
    IDLE_N=$((IDLE_CAP - IDLE_FLEETS))
    fl_warn "open files are limited to $NOFILE per process here (ulimit -Hn; raising it needs CAP_SYS_RESOURCE): phase 2 opens $IDLE_N connections, not $IDLE_CONNS"
fi

# ---- database, fleets, partner, token ---------------------------------------------------------
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
fleet_args=(--fleet bench-1)
idle_topics=
for ((f = 1; f <= IDLE_FLEETS; f++)); do
    cli fleet create "idle-$f" >/dev/null
    fleet_args+=(--fleet "idle-$f")
    idle_topics+=${idle_topics:+,}fleet:idle-$f
done
SECRET=$(cli partner create bench --fleet bench-1)
[[ $SECRET == whsec_* ]] || fl_die "fleetd partner create printed no secret"
TOKEN=$(cli token create "${fleet_args[@]}" --name bench)
[[ -n $TOKEN ]] || fl_die "fleetd token create printed no token"
WSPATH="/socket/websocket?vsn=2.0.0&token=$TOKEN"

# ---- fleetd ---------------------------------------------------------------------------------
PORT=
start_fleetd() { # start_fleetd LOG [VAR=value...]: a fresh fleetd serve
    local log=$1 i
    shift
    PORT=$(comm -23 <(seq 20000 29999) <(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u) | shuf -n1)
    env FLEETD_LISTEN="127.0.0.1:$PORT" FLEETD_SHARDS="$SHARDS" FLEETD_INGEST_RATE=0 FLEETD_ACCESS_LOG=false \
        FLEETD_MAX_CONNECTIONS=$((NOFILE + 1000)) "$@" "$FLEETD" serve >"$log" 2>&1 &
    FLEETD_PID=$!
    for ((i = 0; i < 150; i++)); do
        curl -fso /dev/null "http://127.0.0.1:$PORT/ready" && return 0
        kill -0 "$FLEETD_PID" 2>/dev/null || fl_die "fleetd exited: $(tail -5 "$log")"
        sleep 0.1
    done
    fl_die "fleetd not ready after 15 s"
}
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
rollup_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
sockstat_tcp_pages() { awk '$1 == "TCP:" {for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
meminfo_kib() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }
PAGE=$(getconf PAGESIZE)

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
fl_say "fleetd $FLEETD ($SHARDS shards), commit $commit, $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), open files $NOFILE, $(date -u +%Y-%m-%dT%H:%MZ)"
fl_note "load average: $(cat /proc/loadavg)"

# ---- 1: ingest-to-subscriber latency ----------------------------------------------------------
declare -A RES
if [[ " $PHASES " == *" latency "* ]]; then
    for n in $SUBSCRIBERS; do
        ((n + 64 <= NOFILE)) || fl_die "$n subscribers need more than $NOFILE open files in one client"
        start_fleetd "$tmp/fleetd-lat-$n.log"
        nreq=$((RATE * SECONDS_))
        gen="SECRET=$SECRET PARTNER=bench FLEET=bench-1 HOSTPORT=127.0.0.1:$PORT PREFIX=p$n VEHICLES=$nreq node $ROOT/test/bench/ingest-gen.mjs $tmp/req-$n $nreq 1"
        fl_say "latency: $n subscribers on fleet:bench-1, $nreq single-fix batches at $RATE/s (load $(cut -d' ' -f1-3 /proc/loadavg))"
        timeout $((600 + SECONDS_ + GRACE)) "$CLIENT" --port "$PORT" --path "$WSPATH" --conns "$n" --topics fleet:bench-1 \
            --srcs 8 --requests "$tmp/req-$n" --gen-cmd "$gen" --prefix "p$n" --rate "$RATE" --grace "$GRACE" \
            --fleetd-pid "$FLEETD_PID" >"$tmp/lat-$n.out" 2>"$tmp/lat-$n.err" &
        CLIENT_PIDS=($!)
        wait "${CLIENT_PIDS[0]}" || fl_die "live_client failed: $(tail -5 "$tmp/lat-$n.err")"
        CLIENT_PIDS=()
        grep -E '^(READY|PROGRESS)' "$tmp/lat-$n.out" | tail -3 | sed 's/^/    /'
        RES[$n]=$(grep '^RESULT ' "$tmp/lat-$n.out") || fl_die "no RESULT: $(tail -5 "$tmp/lat-$n.err")"
        fl_note "${RES[$n]}"
        [[ ${RES[$n]} == *" subscribers=0 "* ]] && fl_die "no subscriber joined: $(head -3 "$tmp/lat-$n.err")"
        [[ -s $tmp/lat-$n.err ]] && fl_note "client stderr: $(sort "$tmp/lat-$n.err" | uniq -c | sort -rn | head -3 | tr '\n' ';')"
        fl_note "fleetd warnings: $(grep -o '"event":"[^"]*"' "$tmp/fleetd-lat-$n.log" | sort | uniq -c | sort -rn | head -5 | tr '\n' ' ')"
        fl_stop_pid "$FLEETD_PID"
        FLEETD_PID=
    done
fi

# ---- 2: memory per idle subscribed WebSocket ---------------------------------------------------
if [[ " $PHASES " == *" memory "* ]]; then
    start_fleetd "$tmp/fleetd-mem.log" FLEETD_LIVE_SNDBUF="$IDLE_SNDBUF"
    fl_say "memory: $IDLE_N idle subscribers over $IDLE_FLEETS fleets, FLEETD_LIVE_SNDBUF=$IDLE_SNDBUF (load $(cut -d' ' -f1-3 /proc/loadavg))"
    # one subscriber per fleet first, so that the fleets' trackers and topics are up in the baseline
    "$CLIENT" --port "$PORT" --path "$WSPATH" --conns "$IDLE_FLEETS" --topics "$idle_topics" --hold 100000 >"$tmp/warm.out" 2>&1 &
    CLIENT_PIDS=($!)
    for ((i = 0; i < 600; i++)); do
        grep -q '^READY' "$tmp/warm.out" && break
        sleep 0.1
    done
    grep '^READY' "$tmp/warm.out" | sed 's/^/    warm-up: /'
    sleep 2
    rss0=$(status_kib "$FLEETD_PID" VmRSS)
    anon0=$(rollup_kib "$FLEETD_PID" Anonymous)
    tcp0=$(sockstat_tcp_pages)
    slab0=$(meminfo_kib Slab)
    fds0=$(find "/proc/$FLEETD_PID/fd" -mindepth 1 | wc -l)
    fl_note "before: fleetd VmRSS $rss0 KiB, anonymous $anon0 KiB, $fds0 open files; TCP $tcp0 pages, Slab $slab0 KiB"
    nproc_clients=$(((IDLE_N + PER_CLIENT - 1) / PER_CLIENT))
    per=$(((IDLE_N + nproc_clients - 1) / nproc_clients))
    t_join=$(date +%s.%N)
    for ((c = 0; c < nproc_clients; c++)); do
        m=$((per < IDLE_N - c * per ? per : IDLE_N - c * per))
        # each client its own 8 source addresses: 127.0.0.(2 + 8c) ..
        "$CLIENT" --port "$PORT" --path "$WSPATH" --conns "$m" --topics "$idle_topics" --srcs 8 --inflight 200 \
            --hold 100000 >"$tmp/idle-$c.out" 2>"$tmp/idle-$c.err" &
        CLIENT_PIDS+=($!)
    done
    for ((i = 0; i < 9000; i++)); do # 15 min at most
        ready=$(cat "$tmp"/idle-*.out | grep -c '^READY' || true)
        ((ready == nproc_clients)) && break
        sleep 0.1
    done
    ((ready == nproc_clients)) || fl_die "the clients did not all join in 15 minutes"
    t_ready=$(date +%s.%N)
    joined=$(cat "$tmp"/idle-*.out | awk '/^READY/ {split($2, a, "="); s += a[2]} END {print s + 0}')
    fl_note "joined $joined of $IDLE_N in $(awk -v a="$t_join" -v b="$t_ready" 'BEGIN {printf "%.1f", b - a}') s: $(grep -h '^READY' "$tmp"/idle-*.out | tr '\n' ';')"
    ((joined > 0)) || fl_die "no subscriber joined: $(head -3 "$tmp/idle-0.err")"
    [[ -s $tmp/idle-0.err ]] && fl_note "client stderr: $(cat "$tmp"/idle-*.err | sed 's/[0-9]\+/N/g' | sort | uniq -c | sort -rn | head -3 | tr '\n' ';')"
    measure() { # measure LABEL
        local rss anon rssanon tcp slab sunr fds
        rss=$(status_kib "$FLEETD_PID" VmRSS)
        rssanon=$(status_kib "$FLEETD_PID" RssAnon)
        anon=$(rollup_kib "$FLEETD_PID" Anonymous)
        tcp=$(sockstat_tcp_pages)
        slab=$(meminfo_kib Slab)
        sunr=$(meminfo_kib SUnreclaim)
        fds=$(find "/proc/$FLEETD_PID/fd" -mindepth 1 | wc -l)
        fl_note "$1: fleetd VmRSS $rss KiB (RssAnon $rssanon), anonymous $anon KiB, $fds open files; TCP $tcp pages, Slab $slab KiB (unreclaimable $sunr)"
        MEM_LINE="$rss $anon $tcp $slab $sunr $fds"
    }
    sleep 5
    measure "joined + 5 s"
    sleep $((IDLE_HOLD > 5 ? IDLE_HOLD - 5 : 0))
    measure "joined + $IDLE_HOLD s"
    alive=$(($(find "/proc/$FLEETD_PID/fd" -mindepth 1 | wc -l) - fds0))
    read -r rss1 anon1 tcp1 slab1 _ _ <<<"$MEM_LINE"
    cat "$tmp"/idle-*.out | grep -E '^(PROGRESS)' | tail -2 | sed 's/^/    /' || true
    fl_note "fleetd warnings: $(grep -o '"event":"[^"]*"' "$tmp/fleetd-mem.log" | sort | uniq -c | sort -rn | head -5 | tr '\n' ' ')"
    for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${CLIENT_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    CLIENT_PIDS=()
fi

# ---- summary ------------------------------------------------------------------------------------
fl_say "summary"
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }
if [[ " $PHASES " == *" latency "* ]]; then
    printf '| subscribers | positions | pairs received | missing | p50 ms | p99 ms | max ms | 202 p50 ms | 202 p99 ms | join s | fleetd CPU | client CPU | idle | target |\n'
    printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    for n in $SUBSCRIBERS; do
        r=${RES[$n]}
        w=$(kv "$r" window_s)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %.0f%% | %s%% | %s |\n' "$(kv "$r" subscribers)" "$(kv "$r" requests)" \
            "$(kv "$r" pairs)" "$(kv "$r" missing)" "$(kv "$r" lat_p50_ms)" "$(kv "$r" lat_p99_ms)" "$(kv "$r" lat_max_ms)" \
            "$(kv "$r" ack_p50_ms)" "$(kv "$r" ack_p99_ms)" "$(kv "$r" join_s)" \
            "$(awk -v c="$(kv "$r" fleetd_cpu_s)" -v w="$w" 'BEGIN {print 100 * c / w}')" \
            "$(awk -v c="$(kv "$r" client_cpu_s)" -v w="$w" 'BEGIN {print 100 * c / w}')" "$(kv "$r" machine_idle_pct)" \
            "$(awk -v p="$(kv "$r" lat_p99_ms)" -v n="$n" 'BEGIN {print (n < 10000) ? "-" : (p <= 50 ? "p99 <= 50 ms: met" : "p99 <= 50 ms: MISSED")}')"
    done
    fl_note "CPU columns: share of one CPU over the posting window (2 CPUs = 200%); idle: the machine's idle share"
fi
if [[ " $PHASES " == *" memory "* ]]; then
    printf '\n| connections | fleetd RSS before | with them | per connection | anonymous per connection | kernel TCP buffers per conn. | Slab per conn. | target |\n'
    printf '|---:|---:|---:|---:|---:|---:|---:|---|\n'
    awk -v n="$alive" -v r0="$rss0" -v r1="$rss1" -v a0="$anon0" -v a1="$anon1" -v t0="$tcp0" -v t1="$tcp1" \
        -v s0="$slab0" -v s1="$slab1" -v pg="$PAGE" 'BEGIN {
            per = (r1 - r0) * 1024 / n
            printf "| %d | %.1f MiB | %.1f MiB | %.0f B | %.0f B | %.0f B | %.0f B | %s |\n", n, r0 / 1024, r1 / 1024, per,
                (a1 - a0) * 1024 / n, (t1 - t0) * pg / n, (s1 - s0) * 1024 / n, per <= 2048 ? "<= 2 KiB: met" : "<= 2 KiB: MISSED" }'
    fl_note "connections: fleetd's open files with them minus before ($alive); both sides' sockets are on this machine, so the kernel figures count the client's end too"
    fl_note "FLEETD_LIVE_SNDBUF=$IDLE_SNDBUF; $IDLE_FLEETS fleets (one subscriber each already in the baseline)"
fi
fl_note "load average now: $(cat /proc/loadavg)"
