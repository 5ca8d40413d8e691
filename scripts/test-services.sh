#!/usr/bin/env bash
# Makes sure the services the test suite needs are up, and prints the environment the tests
# should use (eval it): moto for the AWS tests, and PostgreSQL: the one at $JIT_TEST_PG_URL (default
# 127.0.0.1:5432, user postgres) if it answers; else this machine's own cluster, started; else a
# throwaway cluster made with initdb as the postgres user on port 55432. The outage test also
# makes clusters of its own, so PostgreSQL's server programs (initdb, pg_ctl) must be here too.
set -euo pipefail

say() { echo "test-services: $*" >&2; }

# moto, the AWS stand-in the aws_iam tests run (each test starts its own server, with signature
# checking on): on PATH, else installed once into target/moto-venv from PyPI.
moto="$(command -v moto_server || true)"
if [ -n "$moto" ] && ! "$moto" --help >/dev/null 2>&1; then
  moto="" # a shim with nothing behind it
fi
if [ -z "$moto" ]; then
  venv="$PWD/target/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    say "installing moto into $venv (first run only)"
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q 'moto[server]==5.2.6' >&2
  fi
  moto="$venv/bin/moto_server"
fi
echo "export JIT_TEST_MOTO='$moto'"

url="${JIT_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

answers() { # url
  psql "$1" -qtAc 'select 1' >/dev/null 2>&1
}

has_server_programs() {
  command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! command -v psql >/dev/null 2>&1 || ! has_server_programs; then
  say "PostgreSQL's programs not found; installing PostgreSQL from Debian's packages"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

if answers "$url"; then
  say "PostgreSQL answers at $url"
  echo "export JIT_TEST_PG_URL='$url'"
  exit 0
fi

# The machine's own cluster, if it has one that is merely stopped.
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    say "starting the system cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 2>&1 || true
  done
  for _ in $(seq 1 20); do
    answers "$url" && { say "PostgreSQL answers at $url"; echo "export JIT_TEST_PG_URL='$url'"; exit 0; }
    sleep 0.5
  done
fi

# A throwaway cluster of our own.
port=55432
url="postgres://postgres@127.0.0.1:${port}/postgres"
if answers "$url"; then
  say "throwaway PostgreSQL already answers at $url"
  echo "export JIT_TEST_PG_URL='$url'"
  exit 0
fi
bindir=""
for candidate in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" /usr/lib/postgresql/*/bin; do
  [ -x "$candidate/initdb" ] && { bindir="$candidate"; break; }
done
if [ -z "$bindir" ]; then
  say "no initdb found; installing PostgreSQL from Debian's packages"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
fi
data=/tmp/jitbot-test-pg
run_as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /tmp postgres
  run_as_pg=(runuser -u postgres --)
fi
if [ ! -f "$data/PG_VERSION" ]; then
  say "creating a throwaway cluster in $data"
  mkdir -p "$data" && chown "$( [ "$(id -u)" = 0 ] && echo postgres || id -un )" "$data"
  "${run_as_pg[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
say "starting the throwaway cluster on 127.0.0.1:$port"
"${run_as_pg[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
  -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300" start >&2
answers "$url" || { say "PostgreSQL did not come up; see $data/server.log"; exit 1; }
echo "export JIT_TEST_PG_URL='$url'"
