#!/usr/bin/env bash
# Two or more relay builds (or configurations) side by side, measured alternately: the way to see
# a change of a few microseconds per call on a noisy machine, where two runs of scripts/bench.sh
# differ by more than that. One echo backend; one relay per variant, all running at once; then
# ROUNDS times, each variant in turn gets the same `relay-load rate` load, and its relay's CPU
# time (user + system, from /proc) is divided by the calls it answered. Prints each round, then
# each variant's mean.
#
# Usage: scripts/ab.sh CONNS SECS ROUNDS VARIANT...
#   VARIANT is NAME, NAME=/path/to/relay (default: target/release/relay) or
#   NAME=/path/to/relay,/path/to/plugins (default: target/plugins, the *.wasm files that
#   variant loads); NAME picks what it runs, by the words in it (separated by "-"):
#     auth      token-auth          rl      token-auth + rate-limit
#     redact    redact bound to the backend, both call hooks (with "result": its result hook only)
#     1k        a 1 KiB message (and result) instead of a short one
#     lanes     the backend with session_per_worker: true
#     w1, w2    listen.workers: 1 or 2
#     http      the backend over Streamable HTTP (and clients over HTTP) instead of WebSocket
#   Names must differ: e.g. scripts/ab.sh 32 3 4 old=/tmp/relay-before new rl-old=/tmp/relay-before rl-new
#   or, plugins before and after: scripts/ab.sh 32 3 4 redact-1k-old=target/release/relay,/tmp/old redact-1k
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 4)) || { sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 2; }
CONNS=$1 SECS=$2 ROUNDS=$3; shift 3
BIN=target/release PLUGINS=$PWD/target/plugins
cargo build --release --locked -p relay -p relay-load -p relay-tests --bins >/dev/null 2>&1 ||
  cargo build --release --locked -p relay -p relay-load -p relay-tests --bins
WORK=$(mktemp -d) PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
has() { [[ -$1- == *-$2-* ]]; }

BACKEND=$(free_port)
$BIN/echo-backend --port "$BACKEND" >/dev/null & PIDS+=("$!")
wait_port "$BACKEND"
declare -A PID URL TOKEN ARGS
for variant in "$@"; do
  name=${variant%%=*} relay=$BIN/relay plugin_dir=$PLUGINS
  [[ $variant == *=* ]] && relay=${variant#*=}
  [[ $relay == *,* ]] && plugin_dir=${relay#*,} relay=${relay%%,*}
  AUTH="  - {name: auth, world: auth, path: $plugin_dir/token_auth.wasm, grants: {env: [BENCH_TOKEN]}, config: {tokens: [{token_env: BENCH_TOKEN, principal: bench, roles: [admin]}]}}"
  RL="  - {name: rate-limit, world: policy, path: $plugin_dir/rate_limit.wasm, grants: {clock: true, env: [RELAY_RATE_LIMIT]}}"
  REDACT="  - {name: redact, world: interceptor, path: $plugin_dir/redact.wasm, bind: {backends: [echo]}}"
  dir=$WORK/$name port=$(free_port) plugins="" workers=""
  mkdir -p "$dir"
  has "$name" auth && plugins+=$'\n'"$AUTH"
  has "$name" rl && plugins+=$'\n'"$AUTH"$'\n'"$RL"
  has "$name" result && REDACT=${REDACT/\{backends: \[echo\]\}/\{backends: [echo], hooks: [result]\}}
  has "$name" redact && plugins+=$'\n'"$REDACT"
  has "$name" w1 && workers=", workers: 1"
  has "$name" w2 && workers=", workers: 2"
  printf 'listen: {host: 127.0.0.1, port: %s%s}\nlogging: {level: warn}\nlimits: {max_sessions: 200000, max_sessions_per_principal: 200000, max_sessions_per_address: 200000, max_pending_per_address: 100000}\n%s\n' \
    "$port" "$workers" "${plugins:+plugins:$plugins}" >"$dir/relay.yaml"
  if has "$name" http; then
    printf 'backends:\n  - name: echo\n    url: http://127.0.0.1:%s/mcp\n' "$BACKEND"
    URL[$name]=http://127.0.0.1:$port/mcp
  else
    printf 'backends:\n  - name: echo\n    url: ws://127.0.0.1:%s/ws\n' "$BACKEND"
    has "$name" lanes && echo '    session_per_worker: true'
    URL[$name]=ws://127.0.0.1:$port/ws
  fi >"$dir/backends.yaml"
  TOKEN[$name]=""; { has "$name" auth || has "$name" rl; } && TOKEN[$name]=bench-token
  ARGS[$name]='{"message":"bench"}'
  has "$name" 1k && ARGS[$name]="{\"message\":\"$(printf 'x%.0s' $(seq 1024))\"}"
  RELAY_RATE_LIMIT=1000000000 BENCH_TOKEN=bench-token "$relay" serve --config "$dir/relay.yaml" >/dev/null 2>"$dir/log" &
  PIDS+=("$!"); PID[$name]=$!
  wait_port "$port"
done
sleep 1   # the backend connected and the plugins warm

for round in $(seq "$ROUNDS"); do
  for variant in "$@"; do
    name=${variant%%=*}
    before=$(ticks "${PID[$name]}")
    json=$($BIN/relay-load --scenario rate --connections "$CONNS" --duration "$SECS" --tool echo \
      --args "${ARGS[$name]}" --json ${TOKEN[$name]:+--token "${TOKEN[$name]}"} "${URL[$name]}")
    after=$(ticks "${PID[$name]}")
    python3 -c 'import json, sys
d = json.loads(sys.argv[1]); ok = d["successes"]
print("%s\t%d\t%.0f\t%.1f" % (sys.argv[2], int(sys.argv[5]), d["calls_per_s"], (int(sys.argv[4]) - int(sys.argv[3])) * 1e4 / max(ok, 1)))' \
      "$json" "$name" "$before" "$after" "$round" | tee -a "$WORK/rounds.tsv" |
      awk -F'\t' '{printf "round %s  %-24s %8s calls/s  relay %6s µs/call\n", $2, $1, $3, $4}'
  done
done
echo
python3 - "$WORK/rounds.tsv" "$@" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, _, rate, cpu = line.rstrip("\n").split("\t")
    rows[name].append((float(rate), float(cpu)))
for variant in sys.argv[2:]:
    name = variant.split("=")[0]
    r = rows[name]
    print("mean %-24s %8.0f calls/s  relay %5.1f µs/call  (%d rounds)" % (name, sum(a for a, _ in r) / len(r), sum(b for _, b in r) / len(r), len(r)))
PY
