#!/usr/bin/env bash
# Make sure Debian's Chromium is installed: the session inspector's tests
# (tests/server/test_inspector_browser.py) drive it headless with Playwright at
# /usr/bin/chromium. As root, or with password-less sudo, it installs it with apt-get;
# otherwise it prints the command to run and fails. CHROMIUM=/path/to/chromium skips it.
set -euo pipefail

if [ -n "${CHROMIUM:-}" ] && [ -x "${CHROMIUM}" ]; then
  exit 0
fi
[ -x /usr/bin/chromium ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the inspector's browser tests need Chromium at /usr/bin/chromium" >&2
  echo "(or CHROMIUM=/path/to/chromium); install it with your package manager." >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "error: the inspector's browser tests need Debian's chromium package" >&2
  echo "install it with:  sudo apt-get install chromium" >&2
  exit 1
fi
echo "installing Debian package: chromium" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  echo "error: /usr/bin/chromium is still missing after apt-get install chromium" >&2
  exit 1
fi
