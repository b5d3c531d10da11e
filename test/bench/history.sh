#!/usr/bin/env bash
# History reads and retention on a large positions table (docs/performance.md, "History and
# retention"). Creates a database on the DATABASE_URL cluster (a superuser URL), migrates it with
# FLEETD_BIN, loads BENCH_ROWS fixes (500 vehicles, one fix each every 30 days / (BENCH_ROWS / 500): 86.4 s at 15 M, written
# in arrival order as the audit worker writes them), then prints:
#   1. EXPLAIN (ANALYZE, BUFFERS) of the history route's query for 42, 1,000 and 10,000 fixes;
#      with BENCH_COLD=1 and FLEETD_TEST_PG (test/support/pg.sh), once after a restart of the
#      cluster and a drop of the page cache (root), then again warm;
#   2. retention: the oldest day deleted by the retention worker's statement (5,000 rows each), a
#      VACUUM, one new day written into the freed space, and the next day deleted again.
# The database is dropped at the end unless BENCH_KEEP=1.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL to a superuser libpq URL}"
: "${FLEETD_BIN:?set FLEETD_BIN to the fleetd binary}"
rows=${BENCH_ROWS:-15000000}
db=fleetd_bench_history
# the same URL or conninfo, naming the bench database
if [[ "$DATABASE_URL" == postgres*://* ]]; then
    url=$(python3 -c 'import sys; b, s, q = sys.argv[1].partition("?"); sch, rest = b.split("://", 1)
print(sch + "://" + rest.split("/", 1)[0] + "/" + sys.argv[2] + s + q)' "$DATABASE_URL" "$db")
else
    url="$DATABASE_URL dbname=$db"
fi
psql_admin() { psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_db() { psql "$url" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
[[ "${BENCH_KEEP:-0}" == 1 ]] || trap 'psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
DATABASE_URL=$url "$FLEETD_BIN" migrate 2>/dev/null

echo "== loading $rows fixes"
psql_db <<SQL
\timing on
-- indexes are built after the load (as a restore would): faster, and the same shape as steady state
ALTER TABLE positions DROP CONSTRAINT positions_pkey, DROP CONSTRAINT positions_vehicle_id_fkey, DROP CONSTRAINT positions_fleet_id_fkey;
DROP INDEX positions_recorded_at, positions_batch;
INSERT INTO fleets SELECT 'fleet-' || f FROM generate_series(0, 9) f;
INSERT INTO vehicles SELECT 'vehicle-' || v, 'fleet-' || (v % 10) FROM generate_series(0, 499) v;
INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, speed_kmh, heading_deg, accuracy_m, batch_id)
SELECT 'vehicle-' || (g % 500), now() - interval '30 days' + (g / 500) * interval '1 s' * (2592000.0 * 500 / $rows) + (g % 500) * interval '1 ms',
       'fleet-' || (g % 500 % 10), 59 + random(), 18 + random(), now() - interval '30 days' + (g / 500) * interval '1 s' * (2592000.0 * 500 / $rows) + interval '1 s',
       random() * 100, random() * 359, 5, g / 1000
  FROM generate_series(0, $rows - 1) g;
ALTER TABLE positions ADD CONSTRAINT positions_pkey PRIMARY KEY (vehicle_id, recorded_at)
    INCLUDE (lat, lng, received_at, speed_kmh, heading_deg, accuracy_m);
CREATE INDEX positions_recorded_at ON positions (recorded_at);
CREATE INDEX positions_batch ON positions (batch_id);
ALTER TABLE positions ADD FOREIGN KEY (vehicle_id) REFERENCES vehicles (id) ON DELETE CASCADE,
                      ADD FOREIGN KEY (fleet_id) REFERENCES fleets (id) ON DELETE CASCADE;
VACUUM ANALYZE positions;
\timing off
SELECT pg_size_pretty(pg_relation_size('positions')) AS heap, pg_size_pretty(pg_relation_size('positions_pkey')) AS pkey,
       pg_size_pretty(pg_relation_size('positions_recorded_at')) AS recorded_at, pg_size_pretty(pg_relation_size('positions_batch')) AS batch;
SQL

# The route's query (lib/api/history.c), for vehicle-123 of fleet-3.
explain() {
    psql_db <<'SQL'
PREPARE track(text, text, bigint, bigint, int) AS
SELECT f.id IS NOT NULL, v.id IS NOT NULL, p.lat, p.lng, (extract(epoch FROM p.recorded_at) * 1000000)::bigint,
       (extract(epoch FROM p.received_at) * 1000000)::bigint, p.speed_kmh, p.heading_deg, p.accuracy_m
  FROM (SELECT 1) one LEFT JOIN fleets f ON f.id = $1 LEFT JOIN vehicles v ON v.id = $2 AND v.fleet_id = f.id
  LEFT JOIN LATERAL (SELECT lat, lng, recorded_at, received_at, speed_kmh, heading_deg, accuracy_m FROM positions
     WHERE vehicle_id = v.id AND recorded_at >= 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'
       AND recorded_at < 'epoch'::timestamptz + $4::bigint * interval '1 microsecond' ORDER BY recorded_at LIMIT $5::int) p ON true;
SET plan_cache_mode = force_custom_plan;
SELECT (extract(epoch FROM now() - interval '10 days') * 1e6)::bigint AS t0,
       (extract(epoch FROM now() - interval '31 days') * 1e6)::bigint AS t1 \gset
\echo -- one hour (42 fixes)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE track('fleet-3', 'vehicle-123', :t0, :t0 + 3600000000, 1001);
\echo -- one day (1,000 fixes)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE track('fleet-3', 'vehicle-123', :t0, :t0 + 86400000000, 1001);
\echo -- limit 10,000 over all 30 days
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE track('fleet-3', 'vehicle-123', :t1, :t1 + 3456000000000, 10001);
SQL
}

if [[ "${BENCH_COLD:-0}" == 1 ]]; then
    echo "== history, cold: cluster restarted, page cache dropped"
    "${FLEETD_TEST_PG:?BENCH_COLD=1 needs FLEETD_TEST_PG}" restart >/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches
    explain
fi
echo "== history, warm"
explain >/dev/null
explain

# The retention worker's statement (lib/jobs/retention.c), repeated until it deletes less than a batch.
retention() {
    local age=$1 n total=0 statements=0 t0 t1
    t0=$(date +%s%N)
    while :; do
        n=$(psql_db -At -c "WITH gone AS (DELETE FROM positions WHERE ctid = ANY (ARRAY(
              SELECT ctid FROM positions WHERE recorded_at < now() - interval '$age' LIMIT 5000)) RETURNING 1)
            SELECT count(*) FROM gone")
        total=$((total + n)) statements=$((statements + 1))
        ((n == 5000)) || break
    done
    t1=$(date +%s%N)
    echo "deleted $total fixes older than $age in $statements statements, $(((t1 - t0) / 1000000)) ms (including one psql start per statement)"
}

echo "== retention"
retention '29 days'
psql_db -c '\timing on' -c 'VACUUM positions'
echo "one new day into the freed space:"
psql_db -c '\timing on' -c "INSERT INTO positions (vehicle_id, recorded_at, fleet_id, lat, lng, received_at, batch_id)
    SELECT 'vehicle-' || (g % 500), now() + interval '1 day' + (g / 500) * interval '1 s' * (2592000.0 * 500 / $rows) + (g % 500) * interval '1 ms',
           'fleet-' || (g % 500 % 10), 59.5, 18.5, now(), 900000000 + g / 1000 FROM generate_series(0, $rows / 30 - 1) g"
retention '28 days'
