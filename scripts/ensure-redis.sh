#!/usr/bin/env bash
# Make sure the programs the test suite needs from Debian are installed: redis-server and
# redis-cli (the suite starts its own servers, Sentinels and Cluster on loopback ports).
# As root, or with password-less sudo, it installs what is missing with apt-get; otherwise
# it prints the command to run and fails.
set -euo pipefail

# command on PATH : Debian package that provides it
NEEDED="redis-server:redis-server redis-cli:redis-tools"

missing=""
for pair in $NEEDED; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
missing="$(printf '%s\n' $missing | sort -u | tr '\n' ' ')"
missing="${missing% }"
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the tests need redis-server and redis-cli on PATH (Debian: $missing);" >&2
  echo "install Redis with your system's package manager, then run make again." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "error: the tests need Debian packages that are not installed: $missing" >&2
  echo "install them with:  sudo apt-get install $missing" >&2
  exit 1
fi
echo "installing Debian packages: $missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d 101 keeps apt from starting a system-wide redis on port 6379.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086 # $missing is a list of package names
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
for pair in $NEEDED; do
  if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
    echo "error: ${pair%%:*} is still missing after apt-get install ${pair#*:}" >&2
    exit 1
  fi
done
