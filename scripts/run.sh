#!/usr/bin/env bash
# Runs the relay with the shipped configuration (config/relay.yaml), building the plugins it
# loads first. Extra arguments go to `relay serve` (e.g. --log-format json).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-plugins.sh >/dev/null
exec cargo run --quiet --release --locked -p relay -- serve --config config/relay.yaml "$@"
