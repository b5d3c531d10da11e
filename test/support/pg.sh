#!/usr/bin/env bash
# Stops and starts the throwaway PostgreSQL of a scripts/test run, for tests of what fleetd
# does while its database is away:  $FLEETD_TEST_PG stop|start|restart|status|url [DB]
# Reads FLEETD_TEST_PGDATA (exported by scripts/test). Works as root or not. Quiet on
# success; `start` and `restart` return once the server accepts connections.
# Concurrent calls are serialised, but a test that stops the database must not run beside
# others that need it (ctest RESOURCE_LOCK postgres).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../../scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"

data=${FLEETD_TEST_PGDATA:?FLEETD_TEST_PGDATA is not set (scripts/test sets it)}
[[ -f "$data/PG_VERSION" ]] || fl_die "no PostgreSQL cluster in FLEETD_TEST_PGDATA=$data"

lockdir=$(dirname "$data")
if [[ -w "$lockdir" ]] && command -v flock >/dev/null 2>&1; then
    exec 9>"$lockdir/pg.lock"
    flock -w 120 9 || fl_die "timed out waiting for another $0 call"
fi

# The lock's descriptor is closed for pg_ctl: a server that inherited it would hold the
# lock for as long as it runs.
case "${1:-}" in
stop) fl_pg_stop "$data" fast 9>&- ;;
start) fl_pg_start "$data" 9>&- ;;
restart)
    fl_pg_stop "$data" fast 9>&-
    fl_pg_start "$data" 9>&-
    ;;
status)
    if fl_pg_is_running "$data"; then
        echo running
    else
        echo stopped
        exit 3
    fi
    ;;
url) fl_pg_url "$data" "${2:-postgres}" ;;
*)
    echo "usage: $0 stop|start|restart|status|url [DBNAME]" >&2
    exit 2
    ;;
esac
