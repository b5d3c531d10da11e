# shellcheck shell=bash
# Shared by scripts/run, scripts/test and test/support/pg.sh: installing what is missing,
# building, and private PostgreSQL clusters. Source it; it only defines variables and
# functions. The fl_pg_* functions print nothing on success (callers print the steps) and
# one line on stderr when they fail.

[[ -n "${_FL_COMMON_LOADED:-}" ]] && return 0
_FL_COMMON_LOADED=1

FL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
FL_PG_PORT_DEFAULT=5433

fl_say() { printf '==> %s\n' "$*"; }
fl_note() { printf '    %s\n' "$*"; }
fl_warn() { printf 'warning: %s\n' "$*" >&2; }
fl_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
fl_as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fl_die "need root for: $*  (run as root, or install sudo)"
    fi
}

# Prints the last lines of a log after a failed step.
_fl_show_log() {
    local log=$1 lines=${2:-80}
    [[ -f "$log" ]] || return 0
    printf -- '---- last %s lines of %s ----\n' "$lines" "$log" >&2
    tail -n "$lines" "$log" >&2
    printf -- '----\n' >&2
}

# ---------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------

# Reads scripts/deps/debian-NAME.txt: "package [command]" per line, # comments.
# Prints the packages wanted on this machine (a package whose command is already on PATH
# is skipped, so an existing node is not replaced by Debian's).
_fl_deps_wanted() {
    local file=$FL_ROOT/scripts/deps/debian-$1.txt pkg cmd
    [[ -f "$file" ]] || fl_die "missing package list $file"
    while read -r pkg cmd _; do
        [[ -z "$pkg" || "$pkg" == \#* ]] && continue
        if [[ -n "$cmd" && "$cmd" != \#* ]] && command -v "$cmd" >/dev/null 2>&1; then
            continue
        fi
        printf '%s\n' "$pkg"
    done <"$file"
}

# shellcheck disable=SC2120 # the options are optional
# fl_install_deps [--test] [--bench]
# Installs the missing Debian packages (one dpkg-query when nothing is missing: no apt, no
# network), the npm packages of web/ (the live map the build copies) and, with --test, those
# of test/.
fl_install_deps() {
    local lists=(build) arg
    for arg in "$@"; do
        case $arg in
        --test) lists+=(test) ;;
        --bench) lists+=(bench) ;;
        *) fl_die "fl_install_deps: unknown option $arg" ;;
        esac
    done

    local wanted=() list pkg
    for list in "${lists[@]}"; do
        while read -r pkg; do wanted+=("$pkg"); done < <(_fl_deps_wanted "$list")
    done

    if ! command -v dpkg-query >/dev/null 2>&1; then
        fl_warn "not a Debian system: make sure these are installed: ${wanted[*]}"
    else
        local installed=" " missing=() name status
        while read -r name status; do
            [[ "$status" == ii* ]] && installed+="$name "
        done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${wanted[@]}" 2>/dev/null || true)
        for pkg in "${wanted[@]}"; do
            [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg")
        done

        if ((${#missing[@]} == 0)); then
            fl_say "packages: all ${#wanted[@]} present"
        else
            _fl_apt_install "${missing[@]}"
        fi
    fi

    _fl_npm_install web
    if [[ " ${lists[*]} " == *" test "* ]]; then
        _fl_npm_install test
    fi
}

_fl_apt_install() {
    local log rc=0 pkg
    log=$(mktemp "${TMPDIR:-/tmp}/fleetd-apt.XXXXXX.log")
    fl_say "packages: installing $* (log: $log)"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -o DPkg::Lock::Timeout=300)
    fl_as_root "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    if ((rc == 0)); then
        fl_as_root "${apt[@]}" install --no-install-recommends "$@" >>"$log" 2>&1 || rc=$?
    fi
    if ((rc != 0)); then
        _fl_show_log "$log" 40
        fl_die "apt-get failed (exit $rc) installing: $*"
    fi
    for pkg in "$@"; do
        # The nginx package starts the distribution's site on port 80; the benchmark
        # runs its own nginx, so stop that one again.
        [[ "$pkg" == nginx* ]] && _fl_stop_distro_nginx
    done
    rm -f "$log"
}

_fl_stop_distro_nginx() {
    local pidfile=/run/nginx.pid pid
    [[ -f "$pidfile" ]] || return 0
    fl_as_root service nginx stop >/dev/null 2>&1 || true
    if [[ -f "$pidfile" ]]; then
        pid=$(<"$pidfile")
        if [[ "$pid" =~ ^[0-9]+$ ]]; then fl_as_root kill "$pid" 2>/dev/null || true; fi
    fi
    fl_note "stopped the nginx service the package started"
}

# _fl_npm_install DIR: npm ci in DIR (test, web) when node_modules is missing or older than
# package.json / the lock; nothing (no network) when it is up to date.
_fl_npm_install() {
    local name=$1 dir=$FL_ROOT/$1 stamp log rc=0
    [[ -f "$dir/package.json" ]] || return 0
    stamp=$dir/node_modules/.fleetd-installed
    if [[ -f "$stamp" && ! "$dir/package.json" -nt "$stamp" &&
        (! -f "$dir/package-lock.json" || ! "$dir/package-lock.json" -nt "$stamp") ]]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || fl_die "npm is not installed (needed for $name/)"
    log=$(mktemp "${TMPDIR:-/tmp}/fleetd-npm.XXXXXX.log")
    local cmd=(npm ci)
    [[ -f "$dir/package-lock.json" ]] || cmd=(npm install)
    fl_say "node modules: ${cmd[*]} in $name/"
    (cd "$dir" && "${cmd[@]}" --no-audit --no-fund --loglevel=error) >"$log" 2>&1 || rc=$?
    if ((rc != 0)); then
        _fl_show_log "$log" 40
        fl_die "${cmd[*]} failed in $name/ (exit $rc)"
    fi
    touch "$stamp"
    rm -f "$log"
}

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------

# fl_build DIR BUILD_TYPE [extra cmake args...]
# Configures DIR (relative to the repo root unless absolute) when it was never configured
# or its settings (build type, CC, extra args) changed, then builds. Output goes to
# DIR/configure.log and DIR/build.log; the tail is shown on failure, warnings always.
fl_build() {
    local dir=$1 type=$2
    shift 2
    [[ "$dir" == /* ]] || dir=$FL_ROOT/$dir
    local stamp=$dir/.fleetd-configured cache=$dir/CMakeCache.txt rel=${dir#"$FL_ROOT"/}
    local want
    want=$(printf 'type=%s\ncc=%s\nargs=%s' "$type" "${CC:-}" "$*")

    if [[ ! -f "$cache" || ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
        mkdir -p "$dir"
        # A different compiler or generator needs a fresh cache; other changes do not.
        if [[ -f "$cache" ]] && { ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Unix Makefiles' "$cache" ||
            [[ ! -f "$stamp" || "$(grep '^cc=' "$stamp")" != "cc=${CC:-}" ]]; }; then
            rm -rf "$cache" "$dir/CMakeFiles"
        fi
        fl_say "configure: $rel ($type${CC:+, CC=$CC}${*:+, $*})"
        if ! cmake -S "$FL_ROOT" -B "$dir" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE="$type" \
            -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "$@" >"$dir/configure.log" 2>&1; then
            _fl_show_log "$dir/configure.log" 60
            rm -f "$stamp"
            fl_die "cmake configure failed for $rel"
        fi
        printf '%s' "$want" >"$stamp"
    fi

    fl_say "build: $rel ($type, $(nproc) jobs)"
    if ! cmake --build "$dir" -j"$(nproc)" >"$dir/build.log" 2>&1; then
        grep -E ': (fatal )?error|undefined reference' "$dir/build.log" | head -n 40 >&2 || true
        _fl_show_log "$dir/build.log" 80
        fl_die "build failed in $rel (full log: $dir/build.log)"
    fi
    if grep -q 'warning:' "$dir/build.log"; then
        fl_note "compiler warnings (full log: $dir/build.log):"
        grep 'warning:' "$dir/build.log" | sort -u | head -n 40 | sed 's/^/    /'
    fi
    [[ -x "$dir/fleetd" ]] || fl_die "the build finished but $rel/fleetd is missing"
}

# ---------------------------------------------------------------------------------------
# Private PostgreSQL clusters
#
# A cluster lives in DATADIR and listens only on a Unix socket (no TCP), in DATADIR/socket,
# or in /tmp/fleetd-pg-HASH when that path would be too long for a socket. Local trust
# authentication: whoever can reach the socket directory (its owner, and root) is superuser.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system
# user; when that user cannot reach DATADIR (a repo under /root), the data lives in
# /var/tmp/fleetd-HASH and DATADIR is a symlink to it.
# DATADIR/fleetd.conf holds our server settings; DATADIR/fleetd.env what clients need
# (socket directory, port, role).
# ---------------------------------------------------------------------------------------

_fl_pg_bindir() {
    if [[ -n "${FLEETD_PG_BIN:-}" ]]; then
        printf '%s\n' "$FLEETD_PG_BIN"
        return 0
    fi
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1)" == "$d" ]]; then
            best=$d
        fi
    done
    if [[ -z "$best" ]] && command -v pg_ctl >/dev/null 2>&1; then
        best=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    fi
    [[ -n "$best" ]] || fl_die "PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package"
    printf '%s\n' "$best"
}

_fl_hash() { printf '%s' "$1" | sha256sum | cut -c1-12; }

_fl_abspath() {
    if [[ "$1" == /* ]]; then printf '%s\n' "$1"; else printf '%s\n' "$PWD/$1"; fi
}

# The real data directory behind DATADIR (follows the fallback symlink).
_fl_pg_dir() {
    local d
    d=$(_fl_abspath "${1%/}")
    if [[ -L "$d" ]]; then readlink -f "$d"; else printf '%s\n' "$d"; fi
}

# Runs a command as the owner of the server: postgres when we are root, else ourselves.
_fl_pg_as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Makes a directory for the server, owned by the server's user, mode 700.
_fl_pg_mkdir() {
    mkdir -p "$1"
    if ((EUID == 0)); then chown postgres:postgres "$1"; fi
    chmod 700 "$1"
}

# Loads DATADIR/fleetd.env into _FL_PG_SOCK, _FL_PG_PORT, _FL_PG_ROLE.
_fl_pg_load() {
    local data=$1 key value
    _FL_PG_SOCK="" _FL_PG_PORT="" _FL_PG_ROLE=""
    [[ -f "$data/fleetd.env" ]] || fl_die "no fleetd cluster at $data (fl_pg_init makes one)"
    while IFS='=' read -r key value; do
        case $key in
        socket) _FL_PG_SOCK=$value ;;
        port) _FL_PG_PORT=$value ;;
        role) _FL_PG_ROLE=$value ;;
        esac
    done <"$data/fleetd.env"
    [[ -n "$_FL_PG_SOCK" && -n "$_FL_PG_PORT" && -n "$_FL_PG_ROLE" ]] || fl_die "$data/fleetd.env is incomplete"
}

# fl_pg_init DATADIR [--throwaway]
# Creates the cluster unless DATADIR already holds one. --throwaway turns fsync and
# full_page_writes off (faster, not crash-safe: for test clusters only).
fl_pg_init() {
    local req throwaway=0 data bin role port sock log
    req=$(_fl_abspath "${1%/}")
    [[ "${2:-}" == --throwaway ]] && throwaway=1
    data=$(_fl_pg_dir "$req")
    [[ -f "$data/PG_VERSION" && -f "$data/fleetd.env" ]] && return 0
    bin=$(_fl_pg_bindir) || exit 1

    if ((EUID == 0)); then
        id -u postgres >/dev/null 2>&1 || fl_die "no postgres system user (install the postgresql package)"
        _fl_pg_mkdir "$data"
        if ! runuser -u postgres -- test -w "$data" -a -x "$data" 2>/dev/null; then
            # postgres cannot traverse a parent directory: keep the data where it can.
            local fallback
            fallback=/var/tmp/fleetd-$(_fl_hash "$req")
            rmdir "$data" 2>/dev/null || fl_die "postgres cannot reach $data and it is not empty"
            _fl_pg_mkdir "$fallback"
            ln -s "$fallback" "$req"
            data=$fallback
        fi
        role=postgres
    else
        _fl_pg_mkdir "$data"
        role=$(id -un)
    fi
    if [[ -n "$(ls -A "$data")" ]]; then
        fl_die "$data is not empty and holds no fleetd cluster; remove it or choose another directory"
    fi

    port=${FLEETD_PG_PORT:-$FL_PG_PORT_DEFAULT}
    sock=$data/socket
    # sun_path holds 108 bytes; keep well under it, and keep the path free of characters
    # that unix_socket_directories or a URL would need quoted.
    if ((${#sock} + 16 >= 100)) || [[ ! "$sock" =~ ^[A-Za-z0-9/._-]+$ ]]; then
        sock=/tmp/fleetd-pg-$(_fl_hash "$data")
    fi

    local locale=C
    [[ "$(locale -a 2>/dev/null)" =~ (^|$'\n')C\.(UTF-8|utf8)($|$'\n') ]] && locale=C.UTF-8
    log=$(mktemp "${TMPDIR:-/tmp}/fleetd-initdb.XXXXXX.log")
    local args=(-D "$data" -U "$role" --encoding=UTF8 --locale="$locale" --auth-local=trust --auth-host=reject)
    ((throwaway)) && args+=(--no-sync)
    if ! _fl_pg_as_owner "$bin/initdb" "${args[@]}" >"$log" 2>&1; then
        _fl_show_log "$log" 30
        fl_die "initdb failed for $data"
    fi
    rm -f "$log"

    {
        echo "# Written by scripts/lib/common.sh (fl_pg_init): a private cluster, no TCP."
        echo "listen_addresses = ''"
        echo "port = $port"
        echo "unix_socket_directories = '$sock'"
        echo "max_connections = 300"
        echo "logging_collector = off"
        if ((throwaway)); then
            echo "# throwaway test cluster: speed over crash safety"
            echo "fsync = off"
            echo "full_page_writes = off"
        fi
    } >"$data/fleetd.conf"
    printf "\ninclude_if_exists = 'fleetd.conf'\n" >>"$data/postgresql.conf"
    printf 'socket=%s\nport=%s\nrole=%s\n' "$sock" "$port" "$role" >"$data/fleetd.env"
    if ((EUID == 0)); then chown postgres:postgres "$data/fleetd.conf" "$data/fleetd.env"; fi
}

# True when the postmaster recorded in DATADIR/postmaster.pid is alive.
fl_pg_is_running() {
    local data pid
    data=$(_fl_pg_dir "$1")
    [[ -f "$data/postmaster.pid" ]] || return 1
    pid=$(head -n1 "$data/postmaster.pid" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres ]]
}

_fl_pg_wait_ready() {
    local data=$1 bin=$2 i
    for ((i = 0; i < 300; i++)); do
        "$bin/pg_isready" -q -h "$_FL_PG_SOCK" -p "$_FL_PG_PORT" -U "$_FL_PG_ROLE" -d postgres && return 0
        fl_pg_is_running "$data" || break
        sleep 0.2
    done
    _fl_show_log "$data/postgresql.log" 30
    fl_die "PostgreSQL in $data did not become ready"
}

# fl_pg_start DATADIR: starts the cluster unless it runs; returns once it accepts connections.
fl_pg_start() {
    local data bin
    data=$(_fl_pg_dir "$1")
    _fl_pg_load "$data"
    bin=$(_fl_pg_bindir) || exit 1

    if [[ ! -d "$_FL_PG_SOCK" ]]; then
        _fl_pg_mkdir "$_FL_PG_SOCK"
    elif [[ "$(stat -c %u "$_FL_PG_SOCK")" != "$(stat -c %u "$data")" ]]; then
        fl_die "socket directory $_FL_PG_SOCK belongs to another user than the cluster"
    fi

    if ! fl_pg_is_running "$data"; then
        # After a crash or a reboot the pid in postmaster.pid may belong to another process
        # now, and the server would refuse to start: the files are stale, remove them.
        rm -f "$data/postmaster.pid" "$_FL_PG_SOCK/.s.PGSQL.$_FL_PG_PORT" "$_FL_PG_SOCK/.s.PGSQL.$_FL_PG_PORT.lock"
        if ! _fl_pg_as_owner "$bin/pg_ctl" start -D "$data" -l "$data/postgresql.log" -w -t 120 -s >/dev/null 2>&1; then
            _fl_show_log "$data/postgresql.log" 30
            fl_die "PostgreSQL did not start (data: $data)"
        fi
    fi
    _fl_pg_wait_ready "$data" "$bin"
}

# fl_pg_stop DATADIR [fast|immediate|smart]: stops the cluster if it runs, and waits.
fl_pg_stop() {
    local data mode=${2:-fast} bin
    data=$(_fl_pg_dir "$1")
    [[ -f "$data/PG_VERSION" ]] || return 0
    fl_pg_is_running "$data" || return 0
    bin=$(_fl_pg_bindir) || exit 1
    if ! _fl_pg_as_owner "$bin/pg_ctl" stop -D "$data" -m "$mode" -w -t 120 -s >/dev/null 2>&1; then
        fl_pg_is_running "$data" && fl_die "PostgreSQL in $data did not stop"
    fi
    return 0
}

# fl_pg_discard DATADIR: stops the cluster at once and removes its data, also when fl_pg_init
# put it behind a symlink in /var/tmp (as root). For throwaway clusters (benchmarks).
fl_pg_discard() {
    local data=$1 real
    real=$(readlink -f "$data" 2>/dev/null || true)
    (fl_pg_stop "$data" immediate) >/dev/null 2>&1 || true
    if [[ -n $real && $real != "$data" && $real == /var/tmp/fleetd-* ]]; then rm -rf "$real"; fi
    rm -rf "$data"
}

# fl_stop_pid PID: SIGTERM, then SIGKILL after 10 s; reaps it. Only for a child of this shell.
fl_stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

_fl_urlencode() {
    local s=$1 out="" c i
    local LC_ALL=C
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9._~/-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# fl_pg_url DATADIR DBNAME: a libpq URI (also read by node-postgres and node's URL) for
# DBNAME as the cluster's superuser, through the socket.
fl_pg_url() {
    local data
    data=$(_fl_pg_dir "$1")
    _fl_pg_load "$data"
    # No user@ before the empty host: WHATWG URL parsers (node's new URL) reject that form.
    printf 'postgresql:///%s?host=%s&port=%s&user=%s\n' "$(_fl_urlencode "$2")" "$(_fl_urlencode "$_FL_PG_SOCK")" \
        "$_FL_PG_PORT" "$(_fl_urlencode "$_FL_PG_ROLE")"
}

# fl_pg_env DATADIR: prints PGHOST, PGPORT, PGUSER and PGDATABASE (postgres) as shell
# assignments, so that a bare psql reaches the cluster.
fl_pg_env() {
    local data
    data=$(_fl_pg_dir "$1")
    _fl_pg_load "$data"
    printf 'PGHOST=%q\nPGPORT=%q\nPGUSER=%q\nPGDATABASE=postgres\n' "$_FL_PG_SOCK" "$_FL_PG_PORT" "$_FL_PG_ROLE"
}

# fl_pg_createdb DATADIR DBNAME: creates the database unless it exists (cluster running).
fl_pg_createdb() {
    local data bin found
    data=$(_fl_pg_dir "$1")
    _fl_pg_load "$data"
    bin=$(_fl_pg_bindir) || exit 1
    local conn=(-h "$_FL_PG_SOCK" -p "$_FL_PG_PORT" -U "$_FL_PG_ROLE")
    found=$(printf "SELECT 1 FROM pg_database WHERE datname = :'name';\n" |
        "$bin/psql" -X -q -tA "${conn[@]}" -d postgres -v ON_ERROR_STOP=1 -v name="$2") ||
        fl_die "cannot query the databases of the cluster in $data"
    [[ "$found" == 1 ]] && return 0
    "$bin/createdb" "${conn[@]}" "$2" || fl_die "createdb $2 failed"
}
