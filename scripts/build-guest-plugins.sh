#!/usr/bin/env bash
# Builds the plugins written in other languages than Rust into target/plugins/:
#   plugins/python/rate-limit       -> target/plugins/rate_limit_py.wasm    (componentize-py)
#   plugins/javascript/echo-adapter -> target/plugins/echo_adapter_js.wasm  (ComponentizeJS)
# Tools: componentize-py (pinned in plugins/python/requirements.txt) in a venv under
# target/guest-tools/py; ComponentizeJS and jco from plugins/javascript/echo-adapter's
# package-lock.json. Installs and builds are skipped when already up to date (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."

# The 0.2 package only: wit/ also holds the frozen 0.1 package (wit/v0.1/), so the tools get
# this file and a fully qualified world, never the directory.
wit=wit/relay-plugin.wit
out=target/plugins
mkdir -p "$out"

# On a fresh machine: Python's venv module and npm come from Debian (skipped when present).
need_apt=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# True when $1 is missing or older than any of the other files.
stale() {
  local target=$1
  shift
  [[ -n "${FORCE:-}" || ! -e "$target" ]] && return 0
  local input
  for input in "$@"; do
    [[ "$input" -nt "$target" ]] && return 0
  done
  return 1
}

# Writes next to the target, then renames: a running relay never sees a half-written file.
publish() {
  mv -f "$1" "$2"
  printf '%-36s %10d bytes\n' "$2" "$(stat -c %s "$2")"
}

# --- Python: componentize-py ---------------------------------------------------------------
venv=target/guest-tools/py
requirements=plugins/python/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" || [[ ! -x "$venv/bin/componentize-py" ]]; then
  echo "installing $(tr '\n' ' ' <"$requirements")into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi

py_src=plugins/python/rate-limit
py_out=$out/rate_limit_py.wasm
if stale "$py_out" "$wit" "$requirements" "$py_src"/*.py; then
  "$venv/bin/componentize-py" --quiet -d "$wit" -w relay:plugin/policy@0.2.0 \
    componentize --python-path "$py_src" app -o "$py_out.tmp"
  publish "$py_out.tmp" "$py_out"
else
  printf '%-36s %10d bytes (up to date)\n' "$py_out" "$(stat -c %s "$py_out")"
fi

# --- JavaScript: ComponentizeJS (StarlingMonkey) ------------------------------------------
js_dir=plugins/javascript/echo-adapter
# npm ci when node_modules is missing or older than the lock (npm writes its own copy of the
# lock into node_modules on every install).
if [[ ! -e "$js_dir/node_modules/.package-lock.json" || "$js_dir/package-lock.json" -nt "$js_dir/node_modules/.package-lock.json" ]]; then
  (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

js_out=$out/echo_adapter_js.wasm
if stale "$js_out" "$wit" "$js_dir/package-lock.json" "$js_dir"/*.js; then
  # Every StarlingMonkey feature is off: the component imports the adapter world's interfaces
  # and no WASI at all (no console, Math.random is deterministic, no timers, no fetch).
  "$js_dir/node_modules/.bin/componentize-js" "$js_dir/echo.js" \
    --wit "$wit" --world-name relay:plugin/adapter@0.2.0 \
    --disable stdio random clocks http fetch-event \
    -o "$js_out.tmp" >/dev/null
  publish "$js_out.tmp" "$js_out"
else
  printf '%-36s %10d bytes (up to date)\n' "$js_out" "$(stat -c %s "$js_out")"
fi
