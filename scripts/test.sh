#!/usr/bin/env bash
# Runs every test. Installs what the tests need where it is missing:
# PostgreSQL's server binaries (the store tests start a private cluster from
# them, unless TONGBAN_TEST_DATABASE_URL names a server to use).
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
  [ -n "${TONGBAN_TEST_DATABASE_URL:-}" ] && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

if ! have_postgres; then
  echo "Installing PostgreSQL (Debian package postgresql) for the store tests..."
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

cargo test --locked "$@"
