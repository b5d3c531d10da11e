#!/usr/bin/env bash
# test/bench/http.sh: the HTTP core's throughput and latency, fleetd `GET /health` against nginx
# serving the very same bytes as a static file, measured with wrk on 127.0.0.1 in one run.
#
# Usage:  test/bench/http.sh                 (from anywhere; it finds the repository itself)
#   BENCH_THREADS=1 BENCH_CONNECTIONS=64 BENCH_DURATION=10s   wrk -t / -c / -d, same for both servers
#   BENCH_WARMUP=2s          a wrk run of this length, discarded, before every measured run
#   BENCH_REPEAT=3           measured runs per server, interleaved A B B A A B ...; the median is reported
#   BENCH_ACCESS_LOG=both    off | on | both: access log off on both servers, on on both, or both variants
#   BENCH_SERVERS="fleetd nginx"   measure only one side with BENCH_SERVERS=nginx (e.g. fleetd not built)
#   FLEETD_BIN               default build-release/fleetd if present, else build/fleetd
#   FLEETD_SHARDS            fleetd's event-loop threads and nginx's worker_processes (default nproc)
#   NGINX_BIN                default: nginx on PATH, else /usr/sbin/nginx
#   BENCH_NGINX_SENDFILE=on  nginx's sendfile and tcp_nopush; off: nginx reads the (cached) file and
#                            writes headers and body in one writev, fewer syscalls for a 15-byte file
#   BENCH_KEEP=1             keep the temporary directory (configs, logs, raw wrk output)
#   BENCH_PATH=/health       the path measured on both servers (test/bench/status.sh: a fleet's status)
#   BENCH_HEADER=            one request header both servers get from wrk and curl, e.g.
#                            "Authorization: Bearer fl_..." (nginx ignores it; it is on the wire)
#   BENCH_DATABASE_URL=      fleetd's DATABASE_URL (default: a socket directory that does not exist)
#   BENCH_NGINX_CONF=        directives inside nginx's location for the path, e.g. "etag on;"
#
# Fairness: what both sides get, so the ratio measures the servers and not their settings.
#   - Same bytes: fleetd is started first; its /health body is saved byte for byte as nginx's file,
#     and its Content-Type is nginx's default_type. nginx's optional headers that fleetd has no
#     counterpart for are off (server_tokens, etag, Accept-Ranges via max_ranges 0); Last-Modified
#     stays (nginx always sends it for a file). Both responses are printed once with curl -si, and
#     the bytes per response (wrk bytes read / responses) are in the table.
#   - Same parallelism: nginx worker_processes = FLEETD_SHARDS (default nproc). Both use one
#     listening socket per worker (SO_REUSEPORT: fleetd by design, nginx with `listen ... reuseport`).
#   - Same logging: BENCH_ACCESS_LOG=off -> FLEETD_ACCESS_LOG=false and nginx `access_log off`;
#     on -> FLEETD_ACCESS_LOG=true with fleetd's JSON log lines appended to a file in the temp dir,
#     and nginx `access_log FILE combined` (unbuffered: one write per request, like fleetd) in the
#     same temp dir. The lines written are counted after each run to show both really logged.
#   - Keep-alive on both: nginx keepalive_requests 10000000 and keepalive_timeout 75s, so nginx
#     never closes a connection mid-run (fleetd has no per-connection request limit). wrk's read
#     errors would show a server closing connections.
#   - nginx at its best for a static file: sendfile on, tcp_nopush on, open_file_cache on (the fd
#     and stat stay cached for the whole run), no gzip, no error-page or log_not_found work.
#     Per request that is recv, setsockopt(TCP_CORK), writev(headers), sendfile(body), setsockopt:
#     five syscalls where fleetd (today) makes three: recv, getrandom (request id), sendmsg. For
#     so small a file BENCH_NGINX_SENDFILE=off may suit nginx better (recv, pread, writev): run
#     both before quoting a ratio.
#   - Same client: identical wrk settings, 127.0.0.1, ports picked free below the ephemeral range.
#     Each measured run starts with a warm-up; the sides alternate (ABBA) to spread drift evenly.
#   - Same machine state: both servers are running while either is measured (the idle one costs
#     nothing); wrk and the measured server share the CPUs. On a 2-core machine wrk (one thread by
#     default) takes about one core, so req/s is a figure for the pair wrk + server; the ratio and
#     the server's CPU time per request (from /proc, utime + stime of all its threads or workers;
#     softirq time, charged to no task, is not in it) are the figures that compare the servers.
#     Every run also reports what other processes and the hypervisor (steal) took from the
#     machine meanwhile, and flags the run when that is over 10% (steal 5%): not a clean figure.
#   - fleetd runs with DATABASE_URL at a socket directory that does not exist: /health needs no
#     database; fleetd only logs reconnect attempts (with backoff, a few lines per run).
#
# The script starts its own nginx (config, pid file, error log and temp paths in a temp dir) and
# fleetd, and stops both on exit, including on Ctrl-C; nothing is left running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

THREADS=${BENCH_THREADS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
REPEAT=${BENCH_REPEAT:-3}
ACCESS_LOG=${BENCH_ACCESS_LOG:-both}
SERVERS=${BENCH_SERVERS:-fleetd nginx}
KEEP=${BENCH_KEEP:-0}
NGINX_SENDFILE=${BENCH_NGINX_SENDFILE:-on}
START_TIMEOUT=${BENCH_START_TIMEOUT:-15}
URL_PATH=${BENCH_PATH:-/health}
HEADER=${BENCH_HEADER:-}
NGINX_CONF=${BENCH_NGINX_CONF:-}
NPROC=$(nproc)
SHARDS=${FLEETD_SHARDS:-$NPROC}
[[ $SHARDS == 0 ]] && SHARDS=$NPROC # fleetd reads 0 as "one per online CPU"
DEFAULT_BODY='{"status":"ok"}'
DEFAULT_TYPE='application/json'

die() {
    printf 'http.sh: %s\n' "$*" >&2
    exit 2
}
note() { printf '%s\n' "$*"; }

# ---- arguments and tools ---------------------------------------------------------------------
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer, not '$THREADS'"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer, not '$CONNECTIONS'"
((CONNECTIONS >= THREADS)) || die "BENCH_CONNECTIONS ($CONNECTIONS) must be >= BENCH_THREADS ($THREADS)"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive integer, not '$REPEAT'"
[[ $SHARDS =~ ^[1-9][0-9]*$ ]] || die "FLEETD_SHARDS must be a positive integer, not '$SHARDS'"
[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "BENCH_DURATION must look like 10s, 1m, not '$DURATION'"
[[ $WARMUP =~ ^[0-9]+[smh]?$ ]] || die "BENCH_WARMUP must look like 2s or 0, not '$WARMUP'"
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] || die "BENCH_NGINX_SENDFILE must be on or off, not '$NGINX_SENDFILE'"
[[ $URL_PATH =~ ^(/[A-Za-z0-9._-]+)+$ ]] || die "BENCH_PATH must be a path of [A-Za-z0-9._-] segments, not '$URL_PATH'"
[[ -z $HEADER || $HEADER =~ ^[A-Za-z0-9-]+:\ [[:print:]]+$ ]] || die "BENCH_HEADER must look like 'Name: value'"
HEADER_ARGS=() # for wrk and curl alike
[[ -z $HEADER ]] || HEADER_ARGS=(-H "$HEADER")
case $ACCESS_LOG in
off) VARIANTS=(off) ;;
on) VARIANTS=(on) ;;
both) VARIANTS=(off on) ;;
*) die "BENCH_ACCESS_LOG must be off, on or both, not '$ACCESS_LOG'" ;;
esac
read -r -a SERVER_LIST <<<"$SERVERS"
((${#SERVER_LIST[@]} > 0)) || die "BENCH_SERVERS is empty"
for s in "${SERVER_LIST[@]}"; do
    [[ $s == fleetd || $s == nginx ]] || die "BENCH_SERVERS: unknown server '$s' (fleetd, nginx)"
done
has_server() {
    local s
    for s in "${SERVER_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

for tool in wrk curl ss awk sort; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install wrk curl iproute2 gawk coreutils)"
done

if has_server nginx; then
    NGINX=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
    [[ -x $NGINX ]] || die "nginx not found (apt-get install nginx-light, or set NGINX_BIN)"
fi

if has_server fleetd; then
    if [[ -n ${FLEETD_BIN:-} ]]; then
        FLEETD=$FLEETD_BIN
    elif [[ -x $ROOT/build-release/fleetd ]]; then
        FLEETD=$ROOT/build-release/fleetd
    else
        FLEETD=$ROOT/build/fleetd
    fi
    if [[ ! -x $FLEETD ]]; then
        cat >&2 <<EOF
http.sh: no fleetd binary at $FLEETD.
Build a Release binary first:
    cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DFLEETD_TESTS=OFF && cmake --build build-release -j$NPROC
(from $ROOT), or point FLEETD_BIN at one. To measure nginx alone: BENCH_SERVERS=nginx $0
EOF
        exit 2
    fi
    FLEETD_BUILD="unknown build type"
    cache=$(dirname "$FLEETD")/CMakeCache.txt
    if [[ -f $cache ]]; then
        build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
        sanitize=$(sed -n 's/^FLEETD_SANITIZE:[A-Z]*=//p' "$cache")
        FLEETD_BUILD="CMAKE_BUILD_TYPE=${build_type:-none}${sanitize:+, FLEETD_SANITIZE=$sanitize}"
        if [[ -n $sanitize || $build_type == Debug || -z $build_type ]]; then
            printf 'http.sh: WARNING: %s is not an optimised build (%s): figures will be meaningless.\n' \
                "$FLEETD" "$FLEETD_BUILD" >&2
        fi
    fi
fi

# ---- temp dir and clean-up -------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-bench.XXXXXX")
FLEETD_PID=
NGINX_PID=
NGINX_WORKERS=()
WRK_PID=
NOISY_RUNS=0

# Ask politely, then insist; only the processes this script started, by pid.
stop_pid() {
    local pid=$1 i
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then return 0; fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_fleetd() {
    stop_pid "$FLEETD_PID"
    FLEETD_PID=
}

stop_nginx() {
    local w
    stop_pid "$NGINX_PID" # TERM: nginx's master stops its workers before it exits
    for w in "${NGINX_WORKERS[@]}"; do
        if kill -0 "$w" 2>/dev/null; then kill -KILL "$w" 2>/dev/null || true; fi
    done
    NGINX_PID=
    NGINX_WORKERS=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$WRK_PID"
    stop_fleetd
    stop_nginx
    if [[ $KEEP == 1 ]]; then
        note "temporary files kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ---------------------------------------------------------------------------------
# A free TCP port below the ephemeral range, so it cannot collide with wrk's client sockets.
free_port() {
    local lo p i
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
    ((lo > 11000)) || lo=32768
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + RANDOM % (lo - 10000)))
        if [[ -z $(ss -Htan "( sport = :$p or dport = :$p )") ]]; then
            echo "$p"
            return 0
        fi
    done
    die "found no free port"
}

# Waits until URL answers 200, bounded; fails with the log's tail if PID dies or time runs out.
wait_http() {
    local name=$1 pid=$2 url=$3 log=$4 i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            printf 'http.sh: %s exited during start-up; the end of %s:\n' "$name" "$log" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        curl -sf -o /dev/null --max-time 1 "${HEADER_ARGS[@]}" "$url" && return 0
        sleep 0.1
    done
    printf 'http.sh: %s did not answer %s within %ss; the end of %s:\n' "$name" "$url" "$START_TIMEOUT" "$log" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
}

# CPU time (clock ticks, user + system, all threads) of the given pids.
cpu_ticks() {
    local pid total=0 stat rest
    local -a f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${stat##*) } # fields after "(comm) ": state is field 3, utime 14, stime 15
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# Ticks of the whole machine (first line of /proc/stat): user + nice + system, irq + softirq, steal.
# Interrupt time is apart: the kernel charges it to no task, so it cannot be told apart per process.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4, $7 + $8, $9; exit }' /proc/stat; }

# CPU seconds (user + system) of this shell's reaped children, i.e. wrk, from the output of `times`
# (which must run in this shell, not in a $(...) subshell, to see them).
children_cpu() { awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } printf "%.3f\n", t }' "$1"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- fleetd ----------------------------------------------------------------------------------
FLEETD_LOG=$TMP/fleetd.log
start_fleetd() {
    local access=$1 port key
    port=$(free_port)
    key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    : >"$FLEETD_LOG"
    # Appending (O_APPEND) lets the log be truncated between runs while fleetd writes to it.
    env -u FLEETD_CONFIG -u FLEETD_MASTER_KEY_FILE \
        DATABASE_URL="${BENCH_DATABASE_URL:-postgresql:///fleetd?host=$TMP/no-postgres-here&connect_timeout=1}" \
        FLEETD_MASTER_KEY="$key" \
        FLEETD_LISTEN="127.0.0.1:$port" \
        FLEETD_SHARDS="$SHARDS" \
        FLEETD_LOG_FORMAT=json \
        FLEETD_LOG_LEVEL=info \
        FLEETD_ACCESS_LOG="$([[ $access == on ]] && echo true || echo false)" \
        "$FLEETD" serve </dev/null >>"$FLEETD_LOG" 2>&1 &
    FLEETD_PID=$!
    FLEETD_URL="http://127.0.0.1:$port$URL_PATH"
    wait_http fleetd "$FLEETD_PID" "$FLEETD_URL" "$FLEETD_LOG"
    FLEETD_LISTENING=$(grep -m1 '"http.listening"' "$FLEETD_LOG" || true)
    cp "$FLEETD_LOG" "$TMP/fleetd.start.$access.log" # the log itself is emptied between runs
}

# ---- nginx -----------------------------------------------------------------------------------
NGX=$TMP/nginx
NGINX_LOG=$NGX/access.log
mkdir -p "$NGX/www" "$NGX/tmp"
start_nginx() {
    local access=$1 body_file=$2 content_type=$3 port user_line="" log_line="access_log off;" conns nofile
    port=$(free_port)
    mkdir -p "$(dirname "$NGX/www$URL_PATH")"
    cp "$body_file" "$NGX/www$URL_PATH"
    [[ $(id -u) == 0 ]] && user_line="user root;" # the temp dir is 0700 root: workers must read it
    [[ $access == on ]] && log_line="access_log $NGINX_LOG combined;"
    : >"$NGINX_LOG"
    conns=$((CONNECTIONS + 128 > 1024 ? CONNECTIONS + 128 : 1024))
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    cat >"$NGX/nginx.conf" <<EOF
# Written by test/bench/http.sh; see its header for why each setting.
worker_processes $SHARDS;
$user_line
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
worker_rlimit_nofile $nofile;
events {
    worker_connections $conns;
}
http {
    types { }
    default_type "$content_type";
    charset off;
    server_tokens off;
    etag off;
    max_ranges 0;
    sendfile $NGINX_SENDFILE;
    tcp_nopush $NGINX_SENDFILE;
    tcp_nodelay on;
    gzip off;
    keepalive_timeout 75s;
    keepalive_requests 10000000;
    open_file_cache max=64 inactive=10m;
    open_file_cache_valid 10m;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    log_not_found off;
    $log_line
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    server {
        listen 127.0.0.1:$port reuseport;
        root $NGX/www;
        location = $URL_PATH { $NGINX_CONF }
    }
}
EOF
    if ! "$NGINX" -t -q -p "$NGX/" -e "$NGX/error.log" -c "$NGX/nginx.conf" 2>"$NGX/test.log"; then
        cat "$NGX/test.log" "$NGX/error.log" >&2 2>/dev/null || true
        die "nginx rejected the generated config $NGX/nginx.conf"
    fi
    "$NGINX" -p "$NGX/" -e "$NGX/error.log" -c "$NGX/nginx.conf" </dev/null >>"$NGX/stdout.log" 2>&1 &
    NGINX_PID=$!
    NGINX_URL="http://127.0.0.1:$port$URL_PATH"
    wait_http nginx "$NGINX_PID" "$NGINX_URL" "$NGX/error.log"
    mapfile -t NGINX_WORKERS < <(ps -o pid= --ppid "$NGINX_PID" | tr -d ' ')
}

# ---- measurement -----------------------------------------------------------------------------
# Only a done() hook: wrk stays on its fast path (no per-request Lua) and prints exact figures.
cat >"$TMP/summary.lua" <<'EOF'
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format(
    "BENCH requests=%.0f duration_us=%.0f bytes=%.0f p50_us=%.0f p99_us=%.0f max_us=%.0f " ..
    "connect=%d read=%d write=%d status=%d timeout=%d\n",
    s.requests, s.duration, s.bytes, lat:percentile(50), lat:percentile(99), lat.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

RESULTS=$TMP/results
mkdir -p "$RESULTS" "$TMP/wrk"

# wrk in the background and `wait`: a trapped signal (Ctrl-C, TERM) interrupts `wait` at once,
# whereas bash would defer the trap until a foreground wrk had run its full duration.
run_wrk() {
    local out=$1 rc=0
    shift
    wrk "$@" >"$out" &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
}

# Each measured server must have lived through the whole run, or its figures mean nothing.
check_alive() {
    local server=$1 pid
    shift
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && continue
        printf 'http.sh: %s (pid %s) exited during the run; see %s\n' "$server" "$pid" \
            "$([[ $server == fleetd ]] && echo "$FLEETD_LOG" || echo "$NGX/error.log")" >&2
        exit 1
    done
}

url_of() { if [[ $1 == fleetd ]]; then echo "$FLEETD_URL"; else echo "$NGINX_URL"; fi; }
pids_of() { if [[ $1 == fleetd ]]; then echo "$FLEETD_PID"; else echo "$NGINX_PID" "${NGINX_WORKERS[@]}"; fi; }
log_lines() {
    if [[ $1 == fleetd ]]; then grep -c '"http.access"' "$FLEETD_LOG" || true; else wc -l <"$NGINX_LOG"; fi
}
truncate_logs() { : >"$FLEETD_LOG" && : >"$NGINX_LOG"; }

measure() {
    local variant=$1 server=$2 run=$3 url out pids line
    url=$(url_of "$server")
    read -r -a pids <<<"$(pids_of "$server")"
    if [[ $WARMUP != 0 && $WARMUP != 0[smh] ]]; then
        run_wrk /dev/null -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${HEADER_ARGS[@]}" "$url"
    fi
    truncate_logs
    out=$TMP/wrk/$variant.$server.$run.txt
    local m0 m1 w0 w1 c0 c1 other noisy
    times >"$TMP/times.0"
    read -r -a m0 <<<"$(machine_ticks)"
    c0=$(cpu_ticks "${pids[@]}")
    run_wrk "$out" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$TMP/summary.lua" "${HEADER_ARGS[@]}" "$url"
    c1=$(cpu_ticks "${pids[@]}")
    read -r -a m1 <<<"$(machine_ticks)"
    times >"$TMP/times.1"
    w0=$(children_cpu "$TMP/times.0")
    w1=$(children_cpu "$TMP/times.1")
    check_alive "$server" "${pids[@]}"
    line=$(grep '^BENCH ' "$out") || die "no summary in wrk's output $out"
    local -A m=()
    local kv requests duration_us bytes p50 p99 errors logged=- sample=
    for kv in ${line#BENCH }; do m[${kv%%=*}]=${kv#*=}; done
    requests=${m[requests]} duration_us=${m[duration_us]} bytes=${m[bytes]} p50=${m[p50_us]} p99=${m[p99_us]}
    errors=$((m[connect] + m[read] + m[write] + m[status] + m[timeout]))
    if [[ $variant == on ]]; then
        logged=$(log_lines "$server")
        ((run > 1)) || sample=$(if [[ $server == fleetd ]]; then grep -m1 '"http.access"' "$FLEETD_LOG"; else head -n1 "$NGINX_LOG"; fi)
    fi
    awk -v r="$requests" -v d="$duration_us" -v b="$bytes" -v ticks="$((c1 - c0))" -v hz="$CLK_TCK" \
        -v p50="$p50" -v p99="$p99" -v err="$errors" -v dir="$RESULTS/$variant.$server" 'BEGIN {
        rps = r / (d / 1e6); mibs = b / (d / 1e6) / 1048576; cpu = ticks / hz
        printf "%.1f\n", rps >> (dir ".rps");  printf "%.0f\n", p50 >> (dir ".p50")
        printf "%.0f\n", p99 >> (dir ".p99");  printf "%.3f\n", mibs >> (dir ".mibs")
        printf "%.1f\n", (r ? b / r : 0) >> (dir ".bpr"); printf "%.3f\n", (r ? cpu * 1e6 / r : 0) >> (dir ".cpu")
        printf "%d\n", err >> (dir ".err")
    }'
    awk -v s="$server" -v run="$run" -v n="$REPEAT" -v r="$requests" -v d="$duration_us" -v b="$bytes" \
        -v ticks="$((c1 - c0))" -v hz="$CLK_TCK" -v p50="$p50" -v p99="$p99" -v err="$errors" -v logged="$logged" 'BEGIN {
        rps = r / (d / 1e6); cpu = ticks / hz
        printf "  %-6s run %d/%d: %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %7.2f MiB/s  %5.1f B/resp  server CPU %5.2f s (%.2f us/req)  errors %d",
            s, run, n, rps, p50 / 1000, p99 / 1000, b / (d / 1e6) / 1048576, (r ? b / r : 0), cpu, (r ? cpu * 1e6 / r : 0), err
        if (logged != "-") printf "  log lines %d", logged
        printf "\n"
    }'
    # What else ran during the measurement: machine busy time minus the server's and wrk's, in
    # percent of the machine's capacity over the run; and the hypervisor's steal time.
    read -r noisy other < <(awk -v busy="$((m1[0] - m0[0]))" -v irq="$((m1[1] - m0[1]))" -v steal="$((m1[2] - m0[2]))" -v srv="$((c1 - c0))" \
        -v wrk="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" -v hz="$CLK_TCK" -v d="$duration_us" -v n="$NPROC" 'BEGIN {
        cap = n * d / 1e6; o = (busy / hz - srv / hz - wrk) / cap * 100; st = steal / hz / cap * 100
        if (o < 0) o = 0
        printf "%d wrk CPU %.2f s; machine: irq+softirq %.0f%%, other processes %.0f%%, steal %.0f%%\n",
            (o > 10 || st > 5), wrk, irq / hz / cap * 100, o, st }')
    note "    $other"
    if ((noisy)); then
        NOISY_RUNS=$((NOISY_RUNS + 1))
        note "    ^ WARNING: other processes (or the hypervisor) took CPU during this run: its figures are not clean"
    fi
    [[ -z $sample ]] || note "    its first access log line: $sample"
    ((errors == 0)) || note "    ^ wrk errors: connect ${m[connect]}, read ${m[read]}, write ${m[write]}, non-2xx/3xx ${m[status]}, timeout ${m[timeout]}; see $out"
    truncate_logs
}

med() { median <"$RESULTS/$1"; }

report() {
    local variant=$1 s
    note ""
    note "Summary, access log $variant: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, median of $REPEAT run(s)"
    note ""
    note "| access log | server | req/s | p50 ms | p99 ms | transfer MiB/s | bytes/response | server CPU us/req | errors (all runs) |"
    note "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SERVER_LIST[@]}"; do
        awk -v v="$variant" -v s="$s" -v rps="$(med "$variant.$s.rps")" -v p50="$(med "$variant.$s.p50")" \
            -v p99="$(med "$variant.$s.p99")" -v mibs="$(med "$variant.$s.mibs")" -v bpr="$(med "$variant.$s.bpr")" \
            -v cpu="$(med "$variant.$s.cpu")" -v err="$(awk '{ t += $1 } END { print t + 0 }' "$RESULTS/$variant.$s.err")" \
            'BEGIN { printf "| %s | %s | %.0f | %.3f | %.3f | %.2f | %.1f | %.2f | %d |\n", v, s, rps, p50 / 1000, p99 / 1000, mibs, bpr, cpu, err }'
    done
    if has_server fleetd && has_server nginx; then
        awk -v v="$variant" \
            -v fr="$(med "$variant.fleetd.rps")" -v nr="$(med "$variant.nginx.rps")" \
            -v f50="$(med "$variant.fleetd.p50")" -v n50="$(med "$variant.nginx.p50")" \
            -v f99="$(med "$variant.fleetd.p99")" -v n99="$(med "$variant.nginx.p99")" \
            -v fm="$(med "$variant.fleetd.mibs")" -v nm="$(med "$variant.nginx.mibs")" \
            -v fc="$(med "$variant.fleetd.cpu")" -v nc="$(med "$variant.nginx.cpu")" '
            function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
            BEGIN { printf "| %s | fleetd/nginx | %s | %s | %s | %s | | %s | |\n", v, ratio(fr, nr), ratio(f50, n50), ratio(f99, n99), ratio(fm, nm), ratio(fc, nc) }'
        note ""
        note "fleetd/nginx: req/s and transfer above 1x mean fleetd is faster; latency and CPU per request below 1x mean fleetd is better."
    fi
}

# ---- run -------------------------------------------------------------------------------------
note "fleetd HTTP bench: GET $URL_PATH${HEADER:+ with ${HEADER%%:*}}, fleetd vs nginx (static file, same bytes)"
note "  machine: $NPROC CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)"
note "  NOTE: wrk and the server share these $NPROC CPU(s) (wrk -t$THREADS, server $SHARDS thread(s)/worker(s));"
note "        req/s is a figure for the pair; compare the fleetd/nginx ratio and the server CPU per request."
note "  wrk: $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2); settings -t$THREADS -c$CONNECTIONS -d$DURATION, warm-up $WARMUP, $REPEAT run(s) per server"
has_server nginx && note "  nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes $SHARDS, sendfile $NGINX_SENDFILE"
has_server fleetd && note "  fleetd: $FLEETD ($("$FLEETD" --version 2>/dev/null || echo '?'); $FLEETD_BUILD), FLEETD_SHARDS=$SHARDS"
note "  access log variants: ${VARIANTS[*]}; load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

headers_shown=0
for variant in "${VARIANTS[@]}"; do
    note ""
    note "== access log $variant =="
    body=$TMP/body
    content_type=$DEFAULT_TYPE
    printf '%s' "$DEFAULT_BODY" >"$body"
    if has_server fleetd; then
        start_fleetd "$variant"
        note "fleetd up (pid $FLEETD_PID) at $FLEETD_URL${FLEETD_LISTENING:+; log: $FLEETD_LISTENING}"
        # nginx serves exactly what fleetd answers: same body bytes, same Content-Type.
        curl -sf -o "$body" "${HEADER_ARGS[@]}" "$FLEETD_URL"
        content_type=$(curl -sf -o /dev/null -w '%{content_type}' "${HEADER_ARGS[@]}" "$FLEETD_URL")
        [[ -n $content_type ]] || content_type=$DEFAULT_TYPE
    fi
    if has_server nginx; then
        start_nginx "$variant" "$body" "$content_type"
        note "nginx up (pid $NGINX_PID, workers ${NGINX_WORKERS[*]}) at $NGINX_URL"
    fi
    if ((headers_shown == 0)); then
        headers_shown=1
        for s in "${SERVER_LIST[@]}"; do
            url=$(url_of "$s")
            note ""
            note "--- $s: curl -si $url"
            curl -si "${HEADER_ARGS[@]}" "$url" | tr -d '\r' | cut -c1-400 # a long body: its first 400 characters
            note ""
            note "--- $s: $(curl -s -o /dev/null -w '%{size_header} header bytes + %{size_download} body bytes' "${HEADER_ARGS[@]}" "$url");" \
                "connections opened for 2 requests: $(curl -s -o /dev/null -o /dev/null -w '%{num_connects} ' "${HEADER_ARGS[@]}" "$url" "$url")(1 0 = keep-alive)"
        done
        if has_server fleetd && has_server nginx; then
            if cmp -s <(curl -s "${HEADER_ARGS[@]}" "$FLEETD_URL") <(curl -s "${HEADER_ARGS[@]}" "$NGINX_URL"); then
                note "--- bodies are byte-identical"
            else
                note "--- WARNING: the bodies differ"
            fi
        fi
    fi
    note ""
    for ((run = 1; run <= REPEAT; run++)); do
        order=("${SERVER_LIST[@]}")
        if ((run % 2 == 0 && ${#order[@]} == 2)); then order=("${order[1]}" "${order[0]}"); fi # ABBA
        for s in "${order[@]}"; do
            measure "$variant" "$s" "$run"
        done
    done
    report "$variant"
    stop_fleetd
    stop_nginx
done
note ""
if ((NOISY_RUNS > 0)); then
    note "WARNING: $NOISY_RUNS measured run(s) shared the machine with other load (>10% of its CPU) or steal (>5%);"
    note "         run again on a quiet machine before quoting these figures."
fi
note "done; fleetd and nginx stopped."
