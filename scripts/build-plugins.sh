#!/usr/bin/env bash
# Builds every WebAssembly plugin (wasm32-wasip2) into target/plugins/: the shipped plugins
# and the test plugins. Installs the wasm32-wasip2 target on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Plugins ship without debug info: smaller files compile faster on load.
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo

out=target/plugins
wasm=target/wasm32-wasip2/release
mkdir -p "$out"

# The strict rate-limit build (built-in default 5/min) used by the reload tests.
cargo build --quiet --locked --release --target wasm32-wasip2 -p rate-limit --features strict-default
cp "$wasm/rate_limit.wasm" "$out/rate_limit_strict.wasm"

# Every plugin crate in plugins/ and tests/plugins/ (a new one is picked up without editing
# this script): its package name from Cargo.toml, its file named like the crate's library.
packages=()
names=()
for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml; do
  package=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)
  packages+=(-p "$package")
  names+=("${package//-/_}")
done
cargo build --quiet --locked --release --target wasm32-wasip2 "${packages[@]}"
for name in "${names[@]}"; do
  cp "$wasm/$name.wasm" "$out/$name.wasm"
done
ls -l "$out"
