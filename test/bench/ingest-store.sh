#!/usr/bin/env bash
# test/bench/ingest-store.sh: durable ingest. The job queue's group-commit enqueue
# (test/bench/ingest_store_bench.c: audit jobs of 100 fixes each, from both shards, closed loop for
# the maximum rate, then an open loop at half of it for the acknowledgement latency, then the audit
# worker turning the jobs into positions) beside `psql \copy` of the very same fixes into a fresh
# positions table on the same cluster, one after the other in each run. Run BENCH_REPEAT times;
# prints each run and a Markdown table of the medians against the issue's targets.
#
# Usage:  test/bench/ingest-store.sh [ingest_store_bench options...]     (from anywhere)
#   BENCH_REPEAT=3           runs per fsync setting; the median of each figure is reported
#   BENCH_FSYNC="on"         fsync settings to run, in order: "on", "off" or "on off" (fsync=off
#                            runs are labelled as such: not durable, for comparison only); needs the
#                            script's own cluster (DATABASE_URL unset)
#   BENCH_PROFILE=1          the cluster preloads pg_stat_statements and tracks commit timestamps:
#                            the report adds the statements' times and each flush's server time;
#                            both cost a little, so the main figures are taken without them
#   BENCH_BUILD_DIR          default build-bench (Release, FLEETD_TESTS=ON: test/CMakeLists.txt adds
#                            the bench targets)
#   DATABASE_URL             a PostgreSQL superuser URL to use instead of a cluster of our own (the
#                            run's databases are created there and dropped at the end)
#   BENCH_KEEP=1             keep the temporary directory (each run's full output, psql's output)
#   BENCH_COMMIT             what to print as the commit (default: git rev-parse in the tree)
# Options after the script name go to ingest_store_bench, e.g. --inflight=32,128 --open=20
# (ingest_store_bench --help lists them).
#
# The cluster: initdb'd for this run in a temporary directory (scripts/lib/common.sh), PostgreSQL's
# defaults plus fl_pg_init's settings (Unix socket only, max_connections 300), and NOT --throwaway:
# fsync and full_page_writes stay on, because durability is what is measured. It is removed at exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

REPEAT=${BENCH_REPEAT:-3}
FSYNC=${BENCH_FSYNC:-on}
PROFILE=${BENCH_PROFILE:-0}
BUILD_DIR=${BENCH_BUILD_DIR:-$ROOT/build-bench}
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR=$ROOT/$BUILD_DIR
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || fl_die "BENCH_REPEAT must be a positive integer"
for v in $FSYNC; do [[ "$v" == on || "$v" == off ]] || fl_die "BENCH_FSYNC takes on and/or off, not '$v'"; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleetd-ingest-bench.XXXXXX")
pgdata=""
own_cluster=0
databases=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((own_cluster == 0)) && [[ -n "${DATABASE_URL:-}" ]]; then
        local db
        for db in "${databases[@]}"; do
            psql "$DATABASE_URL" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
        done
    fi
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
fl_say "build: ingest_store_bench in $BUILD_DIR"
# a target added to test/bench/CMakeLists.txt after the directory was configured needs a re-run of cmake
cmake "$BUILD_DIR" >"$tmp/reconfigure.log" 2>&1 || true
cmake --build "$BUILD_DIR" --target ingest_store_bench -j"$(nproc)" >"$tmp/build.log" 2>&1 ||
    {
        grep -E ': (fatal )?error' "$tmp/build.log" | head -n 20 >&2 || true
        tail -n 20 "$tmp/build.log" >&2
        fl_die "build failed"
    }
BIN=$BUILD_DIR/ingest_store_bench
[[ -x "$BIN" ]] || fl_die "$BIN is missing after the build"

# ---- database ------------------------------------------------------------------------------
if [[ -z "${DATABASE_URL:-}" ]]; then
    chmod 755 "$tmp" # the postgres user (as root) must traverse it
    pgdata=$tmp/pg
    fl_say "database: a PostgreSQL cluster of this run's own in $pgdata (fsync on; removed at exit)"
    fl_pg_init "$pgdata"
    if [[ "$PROFILE" == 1 ]]; then
        printf "shared_preload_libraries = 'pg_stat_statements'\ntrack_commit_timestamp = on\n" >>"$pgdata/fleetd.conf"
    fi
    fl_pg_start "$pgdata"
    own_cluster=1
    DATABASE_URL=$(fl_pg_url "$pgdata" postgres)
    export DATABASE_URL
elif [[ "$FSYNC" != on ]]; then
    fl_die "BENCH_FSYNC=$FSYNC needs the script's own cluster: unset DATABASE_URL"
fi
psql_admin() { psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

# /proc/stat: busy (user nice system irq softirq), iowait, all (incl. idle and steal), in ticks
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8, $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }

# ---- runs -----------------------------------------------------------------------------------
if [[ -n "${BENCH_COMMIT:-}" ]]; then
    commit=$BENCH_COMMIT
else
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+=" (with uncommitted changes)"; fi
fi
fl_say "ingest-store: $REPEAT run(s) per fsync setting ($FSYNC), commit $commit, $(date -u +%Y-%m-%dT%H:%MZ)"
fl_note "this machine: $(nproc) CPUs shared by PostgreSQL, ingest_store_bench and psql; loadavg now $(cut -d' ' -f1-3 /proc/loadavg)"

csv=$tmp/fixes.csv
cols="vehicle_id, recorded_at, fleet_id, lat, lng, received_at, speed_kmh, heading_deg, accuracy_m, batch_id"
: >"$tmp/results.txt"
for variant in $FSYNC; do
    if ((own_cluster)); then
        psql_admin -c "ALTER SYSTEM SET fsync = $variant" -c "SELECT pg_reload_conf()" >/dev/null
        sleep 0.5
    fi
    now=$(psql_admin -At -c "SHOW fsync")
    [[ "$now" == "$variant" ]] || fl_die "fsync is $now, wanted $variant"
    for ((i = 1; i <= REPEAT; i++)); do
        label="fsync $variant, run $i of $REPEAT"
        [[ $variant == on ]] || label="fsync off (NOT DURABLE, for comparison), run $i of $REPEAT"
        prefix=fleetd_bench_ingest_${variant}_${i}_$$
        databases+=("${prefix}_queue" "${prefix}_copy")
        out=$tmp/$variant.run$i.txt
        printf '\n==== %s ====  loadavg before: %s\n' "$label" "$(cat /proc/loadavg)"
        # fleetd's own log lines (JSON, warnings and errors only) go to a file; a count by event follows
        "$BIN" --db-prefix="$prefix" --csv="$csv" --profile="$PROFILE" --label="$label" "$@" 2>"$tmp/$variant.run$i.log" |
            tee "$out" | grep --line-buffered -v -e '^RESULT ' -e '^COPY_CONNINFO ' ||
            {
                tail -n 20 "$tmp/$variant.run$i.log" >&2
                fl_die "ingest_store_bench failed"
            }
        if [[ -s "$tmp/$variant.run$i.log" ]]; then
            printf '  fleetd log lines during the run, by event: %s\n' \
                "$(sed -n 's/.*"event":"\([^"]*\)".*/\1/p' "$tmp/$variant.run$i.log" | sort | uniq -c | awk '{ printf "%s%s x%d", (NR > 1 ? ", " : ""), $2, $1 }')"
        fi
        conninfo=$(sed -n 's/^COPY_CONNINFO //p' "$out")
        [[ -n "$conninfo" ]] || fl_die "ingest_store_bench gave no COPY_CONNINFO"

        # psql \copy of the same fixes into the fresh positions table of NAME_copy (same schema,
        # same fleets and vehicles), as one COPY statement: one transaction, one commit
        psql "$conninfo" -X -q -v ON_ERROR_STOP=1 -c CHECKPOINT
        read -r b0 w0 t0 <<<"$(machine_ticks)"
        s0=$(date +%s%N)
        psql "$conninfo" -X -v ON_ERROR_STOP=1 -c '\timing on' \
            -c "\\copy positions ($cols) FROM '$csv' WITH (FORMAT csv)" >"$tmp/$variant.copy$i.txt" 2>&1 ||
            {
                cat "$tmp/$variant.copy$i.txt" >&2
                fl_die "psql \\copy failed"
            }
        s1=$(date +%s%N)
        read -r b1 w1 t1 <<<"$(machine_ticks)"
        rows=$(psql "$conninfo" -X -At -c "SELECT count(*) FROM positions")
        ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$tmp/$variant.copy$i.txt" | tail -n1)
        [[ -n "$ms" ]] || ms=$(((s1 - s0) / 1000000))
        awk -v rows="$rows" -v ms="$ms" -v wall="$(((s1 - s0) / 1000000))" -v busy="$((b1 - b0))" -v io="$((w1 - w0))" \
            -v all="$((t1 - t0))" 'BEGIN {
            printf "\n  psql \\copy positions (...) FROM csv: %d rows in %.0f ms (psql \\timing; %d ms with psql start) = %.0f fixes/s\n", rows, ms, wall, rows / (ms / 1000)
            printf "    machine during the copy: busy %.0f%%, iowait %.0f%% (all processes; psql and the backend)\n", all ? busy / all * 100 : 0, all ? io / all * 100 : 0
            printf "RESULT copy.rows %d rows\nRESULT copy.ms %.1f ms\nRESULT copy.fixes_per_s %.1f fixes/s\n", rows, ms, rows / (ms / 1000)
            printf "RESULT copy.busy_pct %.1f %%\n", all ? busy / all * 100 : 0
        }' | tee -a "$out" | grep -v '^RESULT '
        awk '$1 == "RESULT" && $2 == "max.fixes_per_s" { m = $3 } $1 == "RESULT" && $2 == "copy.fixes_per_s" { c = $3 }
            END { if (c > 0) { printf "  enqueue max / \\copy: %.2fx\nRESULT ratio.enqueue_over_copy %.4f x\n", m / c, m / c } }' "$out" |
            tee -a "$out" | grep -v '^RESULT '
        csv_rows=$(awk '$1 == "RESULT" && $2 == "csv.rows" { printf "%d", $3 }' "$out")
        [[ "$csv_rows" == "$rows" ]] || fl_warn "the CSV held $csv_rows fixes but positions has $rows"

        psql_admin -c "DROP DATABASE IF EXISTS ${prefix}_queue WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${prefix}_copy WITH (FORCE)"
        rm -f "$csv"
        printf '==== loadavg after: %s\n' "$(cat /proc/loadavg)"
        awk -v v="$variant" -v run="$i" '$1 == "RESULT" { print v, run, $2, $3 }' "$out" >>"$tmp/results.txt"
    done
done

# ---- medians -----------------------------------------------------------------------------------
# prints: median, then every run's value (* = a run with a measurement window NOT CLEAN: other
# processes over 10% of the machine or steal over 5%)
figure() {
    awk -v v="$1" -v k="$2" '
        $1 == v && $3 == "unclean_windows" { bad[$2] = $4 > 0 }
        $1 == v && $3 == k { val[++n] = $4; run[n] = $2 }
        END {
            if (n == 0) { print "n/a"; exit }
            for (i = 1; i <= n; i++) { all = all sep val[i] (bad[run[i]] ? "*" : ""); sep = " / "; s[i] = val[i] }
            for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
            med = n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
            printf "%s\t%s\n", med, all
        }' "$tmp/results.txt"
}
row() { # variant, label, key, printf format, target
    local out med runs
    out=$(figure "$1" "$3")
    if [[ "$out" == n/a ]]; then
        printf '| %s | n/a | %s | |\n' "$2" "${5:-}"
        return
    fi
    IFS=$'\t' read -r med runs <<<"$out"
    # shellcheck disable=SC2059 # the format is one of ours, passed by row
    med=$(LC_ALL=C printf "$4" "$med")
    printf '| %s | %s | %s | %s |\n' "$2" "$med" "${5:-}" "$runs"
}

for variant in $FSYNC; do
    printf '\n## Medians of %d runs, fsync %s%s (commit %s)\n\n' "$REPEAT" "$variant" \
        "$(if [[ $variant == off ]]; then echo ': NOT DURABLE, for comparison only'; fi)" "$commit"
    printf '| figure | median | target | every run (* = run with a window not clean) |\n|---|---:|---|---|\n'
    row "$variant" 'enqueue: maximum sustained rate, closed loop (fixes/s)' max.fixes_per_s '%.0f'
    row "$variant" '  in flight at the maximum (batches)' max.inflight '%.0f'
    while read -r k; do
        row "$variant" "  closed loop, $k in flight (fixes/s)" "closed.k$k.fixes_per_s" '%.0f'
        row "$variant" "  closed loop, $k in flight: ack p99 (ms)" "closed.k$k.ack.p99" '%.1f'
    done < <(awk -v v="$variant" '$1 == v && $3 ~ /^closed\.k[0-9]+\.fixes_per_s$/ { k = $3; sub(/^closed\.k/, "", k); sub(/\..*/, "", k); print k }' \
        "$tmp/results.txt" | sort -un)
    row "$variant" 'psql \copy of the same rows (fixes/s)' copy.fixes_per_s '%.0f'
    row "$variant" 'enqueue max / \copy' ratio.enqueue_over_copy '%.2fx' '>= 0.5x'
    row "$variant" 'open loop at half the maximum: scheduled (fixes/s)' open.rate_fixes_per_s '%.0f'
    row "$variant" '  acknowledged durable in the window (fixes/s)' open.acked_fixes_per_s '%.0f'
    row "$variant" '  ack latency p50 (ms)' open.ack.p50 '%.2f'
    row "$variant" '  ack latency p99 (ms)' open.ack.p99 '%.2f' '<= 25 ms'
    row "$variant" '  ack latency p99.9 (ms)' open.ack.p999 '%.2f'
    row "$variant" '  ack latency max (ms)' open.ack.max '%.2f'
    row "$variant" '  from scheduled arrival p99 (ms)' open.sched.p99 '%.2f'
    row "$variant" '  errors (enqueues)' open.errors '%.0f' '0'
    row "$variant" '  committer: jobs per flush (mean)' flush.open.mean_jobs '%.1f'
    row "$variant" '  committer: ms from one flush to the next (mean)' flush.open.ms_between '%.1f'
    row "$variant" '  CPU: this process (% of machine)' open.self_pct '%.0f'
    row "$variant" '  CPU: PostgreSQL (% of machine)' open.pg_pct '%.0f'
    row "$variant" 'audit worker: jobs -> positions (fixes/s)' drain.fixes_per_s '%.0f'
    row "$variant" 'batch: request body (bytes)' batch.body_bytes '%.0f'
    row "$variant" 'batch: job args (bytes)' batch.args_bytes '%.0f'
    row "$variant" 'batch: job args stored, jsonb after TOAST (bytes)' jobs.args_stored_bytes '%.0f'
    row "$variant" 'batch: building one (body, HMAC, fl_audit_args), CPU (us)' batch.build_us '%.0f'
done
printf '\nFull per-K closed-loop figures, flush sizes and CPU shares are in each run above.\n'
unclean=$(awk '$3 == "unclean_windows" { s += $4 } END { print s + 0 }' "$tmp/results.txt")
printf 'Measurement windows flagged NOT CLEAN (other processes > 10%% or steal > 5%% of the machine): %s\n' "$unclean"
printf 'loadavg at the end: %s\n' "$(cat /proc/loadavg)"
