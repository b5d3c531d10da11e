#!/usr/bin/env bash
# test/bench/runtime.sh: the runtime's messages/s, cross-shard cast latency, and memory per idle
# actor and per tracked vehicle (test/bench/runtime_bench.c), run BENCH_REPEAT times; prints each
# run and a Markdown table of the medians against the issue's targets.
#
# Usage:  test/bench/runtime.sh [runtime_bench options...]     (from anywhere)
#   BENCH_REPEAT=3           runs; the median of each figure is reported
#   BENCH_BUILD_DIR          default build-bench: a Release build with FLEETD_TESTS=ON (runtime_bench
#                            is added by test/CMakeLists.txt, which only exists with tests on;
#                            build-release is usually configured with FLEETD_TESTS=OFF for http.sh)
#   DATABASE_URL             a PostgreSQL superuser URL for the tracker's memory figure; when unset,
#                            a throwaway cluster is started for the run (scripts/lib/common.sh) and
#                            removed at the end
#   BENCH_DB=off             no database at all: the tracker figure is skipped
#   BENCH_KEEP=1             keep the temporary directory (each run's full output)
#   BENCH_COMMIT             what to print as the commit (default: git rev-parse in the tree)
# Options after the script name go to runtime_bench, e.g. --duration=5 --only=cross,latency
# (runtime_bench --help lists them).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

REPEAT=${BENCH_REPEAT:-3}
BUILD_DIR=${BENCH_BUILD_DIR:-$ROOT/build-bench}
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR=$ROOT/$BUILD_DIR
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || fl_die "BENCH_REPEAT must be a positive integer"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-runtime-bench.XXXXXX")
pgdata=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$pgdata" ]]; then
        local real
        real=$(readlink -f "$pgdata" 2>/dev/null || true)
        (fl_pg_stop "$pgdata" immediate) >/dev/null 2>&1 || true
        # as root the data may live behind a symlink in /var/tmp (fl_pg_init): remove that too
        if [[ -n "$real" && "$real" != "$tmp"/* && "$real" == /var/tmp/fleetd-* ]]; then rm -rf "$real"; fi
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        printf 'kept %s\n' "$tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build (incremental: only what changed) -------------------------------------------------
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    fl_say "configure: $BUILD_DIR (Release, FLEETD_TESTS=ON)"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DFLEETD_TESTS=ON >"$tmp/configure.log" 2>&1 ||
        {
            tail -n 40 "$tmp/configure.log" >&2
            fl_die "cmake configure failed"
        }
fi
type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD_DIR/CMakeCache.txt")
[[ "$type" == Release ]] || fl_warn "$BUILD_DIR is a $type build: figures are not Release figures"
fl_say "build: runtime_bench in $BUILD_DIR"
cmake --build "$BUILD_DIR" --target runtime_bench -j"$(nproc)" >"$tmp/build.log" 2>&1 ||
    {
        tail -n 40 "$tmp/build.log" >&2
        fl_die "build failed"
    }
BIN=$BUILD_DIR/runtime_bench
[[ -x "$BIN" ]] || fl_die "$BIN is missing after the build"

# ---- database ------------------------------------------------------------------------------
if [[ "${BENCH_DB:-on}" == off ]]; then
    unset DATABASE_URL
elif [[ -z "${DATABASE_URL:-}" ]]; then
    chmod 755 "$tmp" # the postgres user (as root) must traverse it
    pgdata=$tmp/pg
    fl_say "database: throwaway PostgreSQL in $pgdata"
    fl_pg_init "$pgdata" --throwaway
    fl_pg_start "$pgdata"
    DATABASE_URL=$(fl_pg_url "$pgdata" postgres)
    export DATABASE_URL
fi

# ---- runs -----------------------------------------------------------------------------------
if [[ -n "${BENCH_COMMIT:-}" ]]; then
    commit=$BENCH_COMMIT # e.g. a tree exported with git archive, which has no .git
else
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+=" (with uncommitted changes)"; fi
fi
fl_say "runtime_bench: $REPEAT runs, commit $commit, $(date -u +%Y-%m-%dT%H:%MZ)"
for ((i = 1; i <= REPEAT; i++)); do
    printf '\n==== run %d of %d ====  loadavg before: %s\n' "$i" "$REPEAT" "$(cat /proc/loadavg)"
    "$BIN" "$@" | tee "$tmp/run$i.txt" | grep -v '^RESULT '
    printf '==== loadavg after run %d: %s\n' "$i" "$(cat /proc/loadavg)"
done

# ---- medians -----------------------------------------------------------------------------------
# A figure measured in a window where other processes took over 10% of the machine or steal over 5%
# (runtime_bench's NOT CLEAN) is left out of its median when at least one run of it was clean.
for ((i = 1; i <= REPEAT; i++)); do
    awk -v run="$i" '$1 == "RESULT" { print run, $2, $3 }' "$tmp/run$i.txt"
done >"$tmp/results.txt"
# prints: median, then "c/n" (clean runs used / runs), then every run's value (* = not clean)
figure() {
    awk -v k="$1" '
        $2 ~ /\.others_pct$/ { others[$1, substr($2, 1, length($2) - 11)] = $3 }
        $2 ~ /\.steal_pct$/ { steal[$1, substr($2, 1, length($2) - 10)] = $3 }
        $2 == k { val[++n] = $3; run[n] = $1 }
        END {
            if (n == 0) { print "n/a"; exit }
            c = 0
            for (i = 1; i <= n; i++) {
                w = k; ok[i] = 1
                # the window is the key minus its last one or two components
                for (d = 0; d < 2; d++) {
                    sub(/\.[^.]*$/, "", w)
                    if ((run[i], w) in others) {
                        ok[i] = others[run[i], w] <= 10 && steal[run[i], w] <= 5
                        break
                    }
                }
                if (ok[i]) good[++c] = val[i]
                all = all sep val[i] (ok[i] ? "" : "*"); sep = " / "
            }
            m = 0
            if (c == 0) { for (i = 1; i <= n; i++) good[i] = val[i]; m = n } else m = c
            # insertion sort, then the median
            for (i = 2; i <= m; i++) { v = good[i]; for (j = i - 1; j >= 1 && good[j] > v; j--) good[j + 1] = good[j]; good[j + 1] = v }
            med = m % 2 ? good[(m + 1) / 2] : (good[m / 2] + good[m / 2 + 1]) / 2
            printf "%s\t%d/%d\t%s\n", med, c, n, all
        }' "$tmp/results.txt"
}
row() { # label, key, printf format for the median, target
    local out med clean runs
    out=$(figure "$2")
    if [[ "$out" == n/a ]]; then
        printf '| %s | n/a | | %s | |\n' "$1" "${4:-}"
        return
    fi
    IFS=$'\t' read -r med clean runs <<<"$out"
    # shellcheck disable=SC2059 # the format is one of ours, passed by row
    med=$(LC_ALL=C printf "$3" "$med")
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$med" "$clean" "${4:-}" "$runs"
}

printf '\n## Medians of %d runs (commit %s)\n\n' "$REPEAT" "$commit"
printf '| figure | median | clean runs | target | every run (* = not clean) |\n|---|---:|---|---|---|\n'
row 'messages/s within a shard (1 pair, shard 0)' within.1pair.rate '%.0f'
row 'messages/s within shards, each shard to itself (total)' within.both.rate '%.0f'
row 'cross-shard messages/s, 0 -> 1, 1 pair' cross.1way.rate '%.0f' '>= 1,000,000'
row 'cross-shard messages/s, 0 -> 1, 1 pair, 64-byte heap payload' cross.1way_payload.rate '%.0f' '>= 1,000,000'
row 'cross-shard messages/s, both ways, 1 pair each (total)' cross.2way.rate '%.0f' '>= 1,000,000'
row 'cross-shard messages/s, both ways, many pairs (total)' cross.2way_many.rate '%.0f' '>= 1,000,000'
row 'CPU ns per message, within a shard' within.1pair.cpu_ns '%.0f'
row 'CPU ns per message, cross-shard 0 -> 1' cross.1way.cpu_ns '%.0f'
row 'FL_EFULL share of casts, cross-shard 0 -> 1 (%)' cross.1way.efull_pct '%.2f'
row 'FL_EFULL share of casts, both ways many pairs (%)' cross.2way_many.efull_pct '%.2f'
row 'baseline: bare eventfd thread wake-up p50 (us)' latency.raw.p50 '%.1f'
row 'baseline: bare eventfd thread wake-up p99 (us)' latency.raw.p99 '%.1f'
row 'cross-shard cast latency p50, one in flight (us)' latency.idle.p50 '%.1f'
row 'cross-shard cast latency p99, one in flight (us)' latency.idle.p99 '%.1f'
row 'cross-shard cast latency p99.9, one in flight (us)' latency.idle.p999 '%.1f'
row 'cross-shard cast latency p50, one in flight, threads not pinned (us)' latency.unpinned.p50 '%.1f'
row 'cross-shard cast latency p99, one in flight, threads not pinned (us)' latency.unpinned.p99 '%.1f'
row 'cross-shard cast latency p50, probe under load (us)' latency.load.probe.p50 '%.1f'
row 'cross-shard cast latency p99, probe under load (us)' latency.load.probe.p99 '%.1f'
row 'cross-shard cast latency p99.9, probe under load (us)' latency.load.probe.p999 '%.1f'
row 'age of flood messages p50, under load (us)' latency.load.age.p50 '%.1f'
row 'age of flood messages p99, under load (us)' latency.load.age.p99 '%.1f'
row 'age of flood messages p99.9, under load (us)' latency.load.age.p999 '%.1f'
row 'messages/s during the timed load run (total)' latency.load.rate '%.0f'
row 'bytes per idle actor (live heap)' actors.heap_per_actor '%.0f' '<= 1024'
row 'bytes per idle actor (RSS)' actors.rss_per_actor '%.0f' '<= 1024'
row 'bytes per idle actor (fl_actor_stats estimate)' actors.stats_per_actor '%.0f'
row 'bytes per tracked vehicle: state' tracker.state_per_vehicle '%.0f' '<= 200'
row 'bytes per tracked vehicle: state + status snapshot' tracker.state_snapshot_per_vehicle '%.0f' '<= 200'
row 'bytes per tracked vehicle: status snapshot JSON alone' tracker.snapshot_per_vehicle '%.0f'
row 'bytes per tracked vehicle: RSS after malloc_trim' tracker.rss_trimmed_per_vehicle '%.0f'
row 'bytes per tracked vehicle: peak RSS while feeding' tracker.peak_rss_per_vehicle '%.0f'
row 'bytes per tracked vehicle: tracker estimate (fl_actor_stats)' tracker.stats_per_vehicle '%.0f'
row 'fixes/s into one tracker while it grows to N vehicles' tracker.feed.fixes_per_s '%.0f'
row 'tracker CPU us per fix while it grows to N vehicles' tracker.feed.cpu_us_per_fix '%.0f'
row 'one more fix until the new status is readable, at N vehicles (ms)' tracker.rebuild.fix_to_status_ms '%.0f'
unclean=$(awk '$2 == "unclean_windows" { s += $3 } END { print s + 0 }' "$tmp/results.txt")
printf '\nMeasurement windows flagged NOT CLEAN (other processes > 10%% or steal > 5%% of the machine): %s\n' "$unclean"
