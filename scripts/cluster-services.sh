# Throwaway PostgreSQL and NATS servers for scripts/cluster-test and scripts/bench-cluster
# (sourced, not run). The caller sets TMP (a temp dir, removed on exit) and stops what these
# functions start: PostgreSQL with `pg_stop_now`, NATS by the pid in NATS_PID. Each function
# returns non-zero on failure and leaves the reason in a log file under $TMP.
#
# pg_setup           installs Debian's postgresql when initdb is missing, then initdb's and
#                    starts an instance in $TMP/pg (as `nobody` when run as root) on a free
#                    loopback port with its unix socket in $TMP/pgsock. Sets PG_BIN (the tools'
#                    dir), PG_CTL, PG_DATA, PG_PORT, PG_SOCK. Idempotent.
# pg_start/pg_stop   (re)start or stop that instance; pg_stop_now stops it at once (on exit).
# pg_createdb NAME   a database owned by `oxpecker` (trust authentication, loopback).
# nats_start         installs Debian's nats-server when missing, starts `nats-server -js` on a
#                    free loopback port with its store in $TMP/nats; sets NATS_PID and NATS_URL.

PG_CTL=""      # set once a PostgreSQL instance was made here
PG_DATA="$TMP/pg"
NATS_PID=""

# Runs a PostgreSQL tool as the database's owner (`nobody` when we are root).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

# A free loopback TCP port.
free_port() {
  "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (up to 30 s) until 127.0.0.1:PORT accepts connections, while PID lives: wait_port PID PORT.
wait_port() {
  local pid=$1 port=$2
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Installs a Debian package (as root, or with sudo): apt_install PACKAGE.
apt_install() {
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$1"; } \
    >>"$TMP/apt.log" 2>&1
}

# Finds initdb/pg_ctl (PATH, then Debian's versioned dirs).
find_pg_bin() {
  local dir
  # A PATH entry may be a lone symlink: the tools that come with it sit beside its target.
  if command -v initdb >/dev/null 2>&1 && dir="$(dirname "$(readlink -f "$(command -v initdb)")")" &&
    [[ -x "$dir/pg_ctl" && -x "$dir/createdb" ]]; then
    echo "$dir"
    return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [[ -x "$dir/initdb" && -x "$dir/createdb" ]] && { echo "$dir"; return 0; }
  done
  return 1
}

pg_setup() {
  [[ -n "$PG_CTL" ]] && return 0
  if ! PG_BIN="$(find_pg_bin)"; then
    apt_install postgresql && PG_BIN="$(find_pg_bin)" || return 1
  fi
  PG_PORT="$(free_port)"
  PG_SOCK="$TMP/pgsock"
  mkdir -p "$PG_DATA" "$PG_SOCK"
  [[ "$(id -u)" == 0 ]] && chown nobody "$PG_DATA" "$PG_SOCK"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U oxpecker --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$TMP/initdb.log" 2>&1 || return 1
  PG_CTL="$PG_BIN/pg_ctl"
  pg_start
}

# Starts (or restarts) the throwaway instance and waits until it accepts connections.
pg_start() {
  as_pg "$PG_CTL" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_SOCK -c fsync=off" \
    start >>"$TMP/pg_ctl.log" 2>&1
}

pg_stop() {
  as_pg "$PG_CTL" -D "$PG_DATA" -m fast -w stop >>"$TMP/pg_ctl.log" 2>&1
}

pg_stop_now() {
  if [[ -n "$PG_CTL" && -f "$PG_DATA/postmaster.pid" ]]; then
    as_pg "$PG_CTL" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

pg_createdb() {
  as_pg "$PG_BIN/createdb" -h "$PG_SOCK" -p "$PG_PORT" -U oxpecker "$1" >>"$TMP/pg_ctl.log" 2>&1
}

nats_start() {
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server || return 1
  local port
  port="$(free_port)"
  mkdir -p "$TMP/nats"
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$TMP/nats" >"$TMP/nats.log" 2>&1 &
  NATS_PID=$!
  NATS_URL="nats://127.0.0.1:$port"
  wait_port "$NATS_PID" "$port"
}
