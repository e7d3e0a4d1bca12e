#!/usr/bin/env bash
# Make sure the PostgreSQL server programs the test suite needs are installed: initdb and
# pg_ctl (the suite starts its own server in a temp dir on a free loopback port, as the
# `postgres` system user when run as root). Debian keeps them in /usr/lib/postgresql/*/bin;
# the suite looks there and on PATH. As root, or with password-less sudo, it installs
# Debian's postgresql package when they are missing (no cluster is started); otherwise it
# prints the command to run and fails. POSTGRES_URL set: your own server, nothing to do.
set -euo pipefail

[ -n "${POSTGRES_URL:-}" ] && exit 0

have_postgres() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    return 0
  fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_postgres && id postgres >/dev/null 2>&1; then
  exit 0
fi
if have_postgres && [ "$(id -u)" != 0 ]; then
  exit 0  # not root: the server runs as this user, no postgres account needed
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need PostgreSQL's initdb and pg_ctl (Debian: postgresql);" >&2
  echo "install PostgreSQL with your system's package manager, or set POSTGRES_URL." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "error: the tests need a Debian package that is not installed: postgresql" >&2
  echo "install it with:  sudo apt-get install postgresql" >&2
  exit 1
fi
echo "installing Debian packages: postgresql" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d 101 keeps apt from starting a system-wide PostgreSQL on port 5432.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if ! have_postgres; then
  echo "error: initdb is still missing after apt-get install postgresql" >&2
  exit 1
fi
