#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (the official MCP
# SDK clients and reference server from npm, the Python SDK from PyPI), builds the workspace
# and runs unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
# Observability tests: promtool checks the shipped alert rules, a real Prometheus scrapes a relay.
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_apt+=(prometheus)
# The status page is checked in a real headless browser.
command -v chromium >/dev/null || need_apt+=(chromium)
# TLS tests probe the listener with openssl s_client (protocol versions, suites, rotation).
command -v openssl >/dev/null || need_apt+=(openssl)
# Shared state: a real Redis (redis-cli comes with it) for the kv tests.
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need_apt+=(redis-server)
# deploy/: HAProxy runs the shipped config, systemd-analyze checks the units, the scripts
# speak to HAProxy's runtime API with socat and check ports with curl.
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v socat >/dev/null || need_apt+=(socat)
command -v curl >/dev/null || need_apt+=(curl)
# deploy.sh checks that a colour's port is held by the colour's own process with ss.
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

log "npm test clients (tests/clients)"
npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error

log "python test client (tests/clients/.venv)"
if [ ! -x tests/clients/.venv/bin/python ]; then
  python3 -m venv tests/clients/.venv || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv tests/clients/.venv; }
fi
tests/clients/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

log "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Every plugin crate (plugins/ and tests/plugins/), found rather than listed.
PLUGINS=()
for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml; do
  PLUGINS+=(-p "$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)")
done
cargo clippy --release --target wasm32-wasip2 --locked "${PLUGINS[@]}" -- -D warnings

log "plugins (wasm32-wasip2)"
./scripts/build-plugins.sh
log "plugins in Python and JavaScript (componentize-py, ComponentizeJS)"
./scripts/build-guest-plugins.sh

# One profile for everything (release): wasmtime is built once, and plugin calls run at
# production speed in the end-to-end tests.
log "build"
cargo build --release --all-targets --locked

log "tests"
# Plugin logic natively (the plugins themselves run in the end-to-end tests).
# (Crates that opt out with `test = false`, like the test plugins, have no unit tests to run.)
SHIPPED=()
for manifest in plugins/*/Cargo.toml; do
  SHIPPED+=(-p "$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)")
done
cargo test --release --locked --lib "${SHIPPED[@]}"
# The host and the end-to-end tests. libtest has no per-test timeout: a test that hangs would
# hold the run until CI's own limit. They take a few minutes; past TEST_LIMIT the run stops
# and says so (the hung test is the one libtest reported "running for over 60 seconds").
TEST_LIMIT=${TEST_LIMIT:-40m}
status=0
timeout --kill-after=30s "$TEST_LIMIT" cargo test --release --locked "$@" || status=$?
if ((status == 124 || status == 137)); then
  echo "tests still running after $TEST_LIMIT: stopped (a hung test; see 'has been running for over 60 seconds' above)" >&2
  # The relays the tests start run in process groups of their own (a test's drop kills each
  # with its backends), out of the timeout's reach: stop what is left of this tree's binaries.
  pkill -f "^$PWD/target/release/" || true
fi
exit "$status"
