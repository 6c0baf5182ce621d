#!/usr/bin/env bash
# The cost of a relay hop, measured in one run on one machine: the same `relay-load rate` load
# against the fast echo backend directly, through the relay (WebSocket and HTTP upstream; no
# plugins, with token-auth + rate-limit at a limit that never triggers, with interceptors bound
# elsewhere and bound here) and through HAProxy (`mode http` and `mode tcp`), each at 4 and 32
# connections. Prints throughput, p50/p99 latency and the CPU time the serving processes spent
# per call (from /proc/PID/stat), the relay's ratios to direct and to HAProxy `mode http`, the
# relay at 1 and at 2 server cores, `hold` at 1,000 sessions and at the file-descriptor limit,
# a soak (64 connections, memory after warm-up and at the end), and the reference scenario at
# 1,000 clients (and the same clients against a server that only answers: the floor of this
# machine). Last, one row per performance goal (issue 25) with its figure and met/missed.
#
# Usage: scripts/bench.sh
#   BENCH_SECS=5          seconds per rate run
#   BENCH_SOAK_SECS=60    seconds of the soak run (64 connections)
#   BENCH_PASSES=2        runs every path/connections row that many times, interleaved, and
#                         reports their mean (the small differences, such as an unbound
#                         interceptor's, drown in this VM's run-to-run noise otherwise)
#   BENCH_BASELINE=/path/to/an/older/relay
#                         also runs that binary's ws>ws and http>http in the same run, for a
#                         before/after of a change (e.g. `git stash; cargo build --release -p relay;
#                         cp target/release/relay /tmp/relay-before; git stash pop`)
#   BENCH_SERVER_CPUS=2-9 BENCH_LOAD_CPUS=10-15
#                         taskset CPU lists for the servers (backend, relays, HAProxy) and for
#                         the load generators; unset, everything shares every core.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${BENCH_SECS:-5}
SOAK_SECS=${BENCH_SOAK_SECS:-$((SECS * 12))}
PASSES=${BENCH_PASSES:-1}
# Prefixes that put a server or a load generator on its CPU list (nothing when unset).
SERVE=(); LOAD=()
[ -n "${BENCH_SERVER_CPUS:-}" ] && SERVE=(taskset -c "$BENCH_SERVER_CPUS")
[ -n "${BENCH_LOAD_CPUS:-}" ] && LOAD=(taskset -c "$BENCH_LOAD_CPUS")
ulimit -n "$(ulimit -Hn)"   # every process started here may use the whole file-descriptor limit

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; fi
./scripts/build-plugins.sh >/dev/null
cargo build --release --locked -p relay -p relay-load -p relay-tests --bins >/dev/null 2>&1 || cargo build --release --locked -p relay -p relay-load -p relay-tests --bins
BIN=target/release
WORK=$(mktemp -d); [ -n "${BENCH_KEEP:-}" ] && echo "work dir: $WORK"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
# CPU ticks (user + system) of a process; 100 ticks a second.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

BACKEND=$(free_port); BACKEND_LINES=$(free_port)
"${SERVE[@]}" $BIN/echo-backend --port "$BACKEND" --line-port "$BACKEND_LINES" >/dev/null &
BACKEND_PID=$!; PIDS+=("$BACKEND_PID")
wait_port "$BACKEND"; wait_port "$BACKEND_LINES"

# A relay in front of the backend: $1 name, $2 backend URL, $3 extra relay.yaml.
start_relay() {
  local dir="$WORK/$1" port; port=$(free_port)
  mkdir -p "$dir"
  printf 'listen: {host: 127.0.0.1, port: %s}\nlogging: {level: warn}\nlimits: {max_sessions: 200000, max_sessions_per_principal: 200000, max_sessions_per_address: 200000, max_pending_per_address: 100000}\n%s' "$port" "$3" >"$dir/relay.yaml"
  # The echo backend keeps no state per session, so a WebSocket one takes a session per worker
  # (session_per_worker); the baseline build (BENCH_BASELINE) may predate the option.
  local per_worker=""
  if [[ $2 == ws://* && -z ${RELAY_BIN:-} ]]; then per_worker='    session_per_worker: true\n'; fi
  if [ -n "$2" ]; then printf "backends:\n  - name: echo\n    url: %s\n$per_worker" "$2"; else echo 'backends: []'; fi >"$dir/backends.yaml"
  RELAY_RATE_LIMIT=1000000000 BENCH_TOKEN=bench-token "${SERVE[@]}" "${RELAY_BIN:-$BIN/relay}" serve --config "$dir/relay.yaml" >/dev/null 2>"$dir/relay.log" &
  PIDS+=("$!"); eval "${1}_PID=$!; ${1}_PORT=$port"
  wait_port "$port"
  # Wait until the backend is connected: one echo call answers.
  for _ in $(seq 100); do
    "${LOAD[@]}" $BIN/relay-load --clients 1 --tool echo --args '{"message":"up"}' --json ${4:+--token "$4"} \
      "tcp://127.0.0.1:$port" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
PLUGINS=$(cat <<EOF
plugins:
  - {name: auth, world: auth, path: $PWD/target/plugins/token_auth.wasm, grants: {env: [BENCH_TOKEN]}, config: {tokens: [{token_env: BENCH_TOKEN, principal: bench, roles: [admin]}]}}
  - {name: rate-limit, world: policy, path: $PWD/target/plugins/rate_limit.wasm, grants: {clock: true, env: [RELAY_RATE_LIMIT]}}
EOF
)
start_relay RWS "ws://127.0.0.1:$BACKEND/ws" ""
start_relay RHTTP "http://127.0.0.1:$BACKEND/mcp" ""
start_relay RPLUG "ws://127.0.0.1:$BACKEND/ws" "$PLUGINS" bench-token
if [ -n "${BENCH_BASELINE:-}" ]; then
  RELAY_BIN=$BENCH_BASELINE start_relay BWS "ws://127.0.0.1:$BACKEND/ws" ""
  RELAY_BIN=$BENCH_BASELINE start_relay BHTTP "http://127.0.0.1:$BACKEND/mcp" ""
fi
# tool-filter and redact bound to another backend (what unbound calls pay: a glob match each and
# the caller's view of the catalog, looked up), and redact bound to this one.
start_relay RINTO "ws://127.0.0.1:$BACKEND/ws" "plugins:
  - {name: filter, world: interceptor, path: $PWD/target/plugins/tool_filter.wasm, bind: {backends: [other]}, config: {deny: [{tools: ['*']}], rename: {echo: other_echo}}}
  - {name: redact, world: interceptor, path: $PWD/target/plugins/redact.wasm, bind: {backends: [other]}}
"
start_relay RREDACT "ws://127.0.0.1:$BACKEND/ws" "plugins:
  - {name: redact, world: interceptor, path: $PWD/target/plugins/redact.wasm, bind: {backends: [echo]}}
"
# redact as its README configures it: its result hook only (it never changes a request).
start_relay RREDACTR "ws://127.0.0.1:$BACKEND/ws" "plugins:
  - {name: redact, world: interceptor, path: $PWD/target/plugins/redact.wasm, bind: {backends: [echo], hooks: [result]}}
"
# The relay serving an adapter plugin's tool itself (no backend): its `echo` answers in-process.
start_relay RADAPT "" "plugins:
  - {name: adapter, world: adapter, path: $PWD/target/plugins/echo_adapter.wasm, config: {prefix: ''}}
"

HTTPMODE=$(free_port); TCPMODE=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
  maxconn 9000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend http_mode
  mode http
  bind 127.0.0.1:$HTTPMODE
  default_backend echo_http
backend echo_http
  mode http
  server echo 127.0.0.1:$BACKEND
frontend tcp_mode
  mode tcp
  bind 127.0.0.1:$TCPMODE
  default_backend echo_tcp
backend echo_tcp
  mode tcp
  server echo 127.0.0.1:$BACKEND
EOF
"${SERVE[@]}" haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 &
HAPROXY_PID=$!; PIDS+=("$HAPROXY_PID")
wait_port "$HTTPMODE"; wait_port "$TCPMODE"

RESULTS="$WORK/results.tsv"
KIB=$(python3 -c 'print("x" * 1024)')
# The same size with an e-mail address in it: redact reads and masks every one of these.
KIB_MAIL=$(python3 -c 'print("x" * 1008 + " ann@example.com")')
# run NAME URL CONNECTIONS "PIDS THAT SERVE" [extra relay-load args]
run() {
  local name=$1 url=$2 conns=$3 serving=$4; shift 4
  local before=() pid i=0 cpu=0
  for pid in $serving; do before+=("$(ticks "$pid")"); done
  local json; json=$("${LOAD[@]}" $BIN/relay-load --scenario rate --connections "$conns" --duration "$SECS" \
    --tool echo --args "${ARGS:-{\"message\":\"bench\"\}}" --json "$@" "$url")
  for pid in $serving; do cpu=$((cpu + $(ticks "$pid") - before[i])); i=$((i + 1)); done
  python3 - "$name" "$conns" "$cpu" "$json" >>"$RESULTS" <<'PY'
import json, sys
name, conns, ticks, summary = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
calls = max(summary["successes"], 1)
errors = ",".join(f"{kind}:{e['count']}" for kind, e in summary["errors"].items()) or "0"
print("\t".join(map(str, [name, conns, round(summary["calls_per_s"]), summary["latency_ms"]["p50"],
      summary["latency_ms"]["p99"], round(ticks * 10000 / calls, 1), errors])))
PY
}

for pass in $(seq "$PASSES"); do
for conns in 4 32; do
  run "direct ws" "ws://127.0.0.1:$BACKEND/ws" $conns "$BACKEND_PID"
  run "direct http" "http://127.0.0.1:$BACKEND/mcp" $conns "$BACKEND_PID"
  run "relay ws>ws" "ws://127.0.0.1:$RWS_PORT/ws" $conns "$RWS_PID $BACKEND_PID"
  run "relay http>http" "http://127.0.0.1:$RHTTP_PORT/mcp" $conns "$RHTTP_PID $BACKEND_PID"
  if [ -n "${BENCH_BASELINE:-}" ]; then
    run "baseline ws>ws" "ws://127.0.0.1:$BWS_PORT/ws" $conns "$BWS_PID $BACKEND_PID"
    run "baseline http>http" "http://127.0.0.1:$BHTTP_PORT/mcp" $conns "$BHTTP_PID $BACKEND_PID"
  fi
  run "relay ws>ws +auth+rl" "ws://127.0.0.1:$RPLUG_PORT/ws" $conns "$RPLUG_PID $BACKEND_PID" --token bench-token
  run "relay ws>ws +2 unbound" "ws://127.0.0.1:$RINTO_PORT/ws" $conns "$RINTO_PID $BACKEND_PID"
  # redact on a 1 KiB text result, against the plain relay with the same result.
  ARGS="{\"message\":\"$KIB\"}" run "relay ws>ws 1KiB" "ws://127.0.0.1:$RWS_PORT/ws" $conns "$RWS_PID $BACKEND_PID"
  ARGS="{\"message\":\"$KIB\"}" run "relay ws>ws +redact 1KiB" "ws://127.0.0.1:$RREDACT_PORT/ws" $conns "$RREDACT_PID $BACKEND_PID"
  ARGS="{\"message\":\"$KIB\"}" run "relay ws>ws +redact result" "ws://127.0.0.1:$RREDACTR_PORT/ws" $conns "$RREDACTR_PID $BACKEND_PID"
  ARGS="{\"message\":\"$KIB_MAIL\"}" run "relay ws>ws +redact masked" "ws://127.0.0.1:$RREDACTR_PORT/ws" $conns "$RREDACTR_PID $BACKEND_PID"
  run "haproxy http ws" "ws://127.0.0.1:$HTTPMODE/ws" $conns "$HAPROXY_PID $BACKEND_PID"
  run "haproxy http http" "http://127.0.0.1:$HTTPMODE/mcp" $conns "$HAPROXY_PID $BACKEND_PID"
  run "haproxy tcp ws" "ws://127.0.0.1:$TCPMODE/ws" $conns "$HAPROXY_PID $BACKEND_PID"
done
done

# What the relay spends answering GET /healthz (its floor per request), for the adapter row.
healthz() {
  local before; before=$(ticks "$RADAPT_PID")
  local requests; requests=$(wrk -t1 -c32 -d"${SECS}s" "http://127.0.0.1:$RADAPT_PORT/healthz" | awk '/requests in/ {print $1}')
  python3 -c "import sys; print('healthz\t32\t%d\t0\t0\t%.1f\t0' % ($requests / $SECS, ($(ticks "$RADAPT_PID") - $before) * 10000 / max($requests, 1)))" >>"$RESULTS"
}
run "relay adapter (ws)" "ws://127.0.0.1:$RADAPT_PORT/ws" 32 "$RADAPT_PID"
healthz

# The relay given one core, then all it had (its threads pinned with taskset; the load and the
# backend keep theirs). On the plain path the relay is not what limits the rate where the load
# and the backend share its cores; where the relay does most of the work per call (redact
# masking an address in a 1 KiB result), its rate shows what more cores give it. The CPU column
# of the masked rows counts the relay alone.
ALL_CPUS=$(taskset -pc "$RWS_PID" | sed 's/.*: //')
ONE_CPU=$(python3 -c 'import os, sys; print(min(os.sched_getaffinity(int(sys.argv[1]))))' "$RWS_PID")
for cpus in "$ONE_CPU" "$ALL_CPUS"; do
  label="cores $cpus"; [ "$cpus" = "$ONE_CPU" ] && label="1 core"
  taskset -apc "$cpus" "$RWS_PID" >/dev/null
  run "relay ws>ws, $label" "ws://127.0.0.1:$RWS_PORT/ws" 32 "$RWS_PID $BACKEND_PID"
  taskset -apc "$cpus" "$RREDACTR_PID" >/dev/null
  ARGS="{\"message\":\"$KIB_MAIL\"}" run "relay masking, $label" "ws://127.0.0.1:$RREDACTR_PORT/ws" 32 "$RREDACTR_PID"
done

# Rows measured in several passes: their mean, in the order first measured.
python3 - "$RESULTS" <<'PY'
import sys
groups = {}
for line in open(sys.argv[1]):
    r = line.rstrip("\n").split("\t")
    groups.setdefault((r[0], r[1]), []).append(r)
with open(sys.argv[1], "w") as out:
    for (name, conns), rs in groups.items():
        mean = lambda i: sum(float(r[i]) for r in rs) / len(rs)
        failed = ",".join(sorted({r[6] for r in rs} - {"0"})) or "0"
        print("\t".join([name, conns, str(round(mean(2))), f"{mean(3):.3f}", f"{mean(4):.3f}", f"{mean(5):.1f}", failed]), file=out)
PY
python3 - "$RESULTS" <<'PY'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
print(f"{'path':28} {'conns':>5} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/call':>12} {'failed':>7}")
for r in rows:
    print(f"{r[0]:28} {r[1]:>5} {r[2]:>9} {float(r[3]):8.2f} {float(r[4]):8.2f} {r[5]:>12} {r[6]:>7}")
by = {(r[0], r[1]): float(r[2]) for r in rows}
print("\nrelay throughput as a ratio (same run, same client transport):")
for conns in ("4", "32"):
    for relay, direct, haproxy in (("relay ws>ws", "direct ws", "haproxy http ws"),
                                   ("relay http>http", "direct http", "haproxy http http"),
                                   ("relay ws>ws +auth+rl", "direct ws", "haproxy http ws")):
        r = by[(relay, conns)]
        print(f"  {relay:22} @{conns:>2}: {r / by[(direct, conns)]:.2f}x direct, {r / by[(haproxy, conns)]:.2f}x haproxy mode http")
cpu = {(r[0], r[1]): float(r[5]) for r in rows}
if ("baseline ws>ws", "4") in by:
    print("\nthis build against BENCH_BASELINE (same run):")
    for conns in ("4", "32"):
        for path in ("ws>ws", "http>http"):
            new, old = ("relay " + path, conns), ("baseline " + path, conns)
            print(f"  {path:10} @{conns:>2}: {by[new] / by[old]:.2f}x calls/s, CPU {cpu[new]:.1f} vs {cpu[old]:.1f} µs/call")
PY
echo "(CPU µs/call counts every serving process: the relay or HAProxy plus the backend.)"

# The soak: 64 connections for SOAK_SECS; the relay's resident memory after a quarter of the
# run (warm-up) and at its end.
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo; echo "soak (64 WebSocket connections, ${SOAK_SECS}s):"
"${LOAD[@]}" $BIN/relay-load --scenario rate --connections 64 --duration "$SOAK_SECS" --tool echo \
  --args '{"message":"soak"}' --json "ws://127.0.0.1:$RWS_PORT/ws" >"$WORK/soak.json" &
SOAK_PID=$!
sleep $((SOAK_SECS / 4)); WARM=$(rss_kb "$RWS_PID")
wait "$SOAK_PID"; END=$(rss_kb "$RWS_PID")
python3 - "$WORK/soak.json" "$WARM" "$END" <<'PY'
import json, sys
s, warm, end = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
print(f"  {s['successes']} calls, {s['failures']} failed; relay resident {warm / 1024:.1f} MB after warm-up, {end / 1024:.1f} MB at the end ({(end - warm) / 1024:+.1f} MB)")
PY

echo; echo "hold (WebSocket sessions against the relay):"
LIMIT=$(ulimit -Hn)
for n in 1000 $((LIMIT - 500)); do
  "${LOAD[@]}" $BIN/relay-load --scenario hold --clients "$n" --tool echo --args '{"message":"h"}' --json "ws://127.0.0.1:$RWS_PORT/ws" |
    python3 -c '
import json, sys
s = json.load(sys.stdin)
held = max(s["sessions_held"], 1)
per = (s["rss_holding"] - s["rss_before"]) / held if s.get("rss_holding") and s.get("rss_before") else 0
print("  %d sessions: %d held, %d answered, %.1f KB resident per session, errors %s"
      % (s["clients"], s["sessions_held"], s["successes"], per / 1024, json.dumps(s["errors"])))
print("hold\t%d\t%.1f" % (s["clients"], per / 1024), file=open(sys.argv[1], "a"))' "$WORK/hold.tsv"
done

echo; echo "reference scenario (1000 clients, newline JSON-RPC, relay_get_status):"
"${LOAD[@]}" $BIN/relay-load --scenario reference --clients 1000 "tcp://127.0.0.1:$RWS_PORT" | tee "$WORK/reference.txt" | sed 's/^/  /'
# The floor: the same clients against a server that only answers (the echo backend's newline
# port, with an answer of the status answer's size), on the same cores, just after.
STATUS_SIZED=$(python3 -c 'print("x" * 1700)')
echo "  the same clients against the echo backend's newline port (a server that only answers):"
"${LOAD[@]}" $BIN/relay-load --scenario reference --clients 1000 --tool echo --args "{\"message\":\"$STATUS_SIZED\"}" \
  "tcp://127.0.0.1:$BACKEND_LINES" | tee "$WORK/reference-floor.txt" | sed 's/^/    /'

# One row per goal of issue 25, from the figures above (same run).
echo; echo "goals (issue 25), measured in this run:"
python3 - "$RESULTS" "$WORK/hold.tsv" "$WORK/soak.json" "$WARM" "$END" "$WORK/reference.txt" "$ALL_CPUS" \
  "$WORK/reference-floor.txt" <<'PY'
import json, re, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
calls = {(r[0], r[1]): float(r[2]) for r in rows}
p50 = {(r[0], r[1]): float(r[3]) for r in rows}
cpu = {(r[0], r[1]): float(r[5]) for r in rows}
hold = [line.split("\t") for line in open(sys.argv[2])]
soak, warm, end = json.load(open(sys.argv[3])), int(sys.argv[4]), int(sys.argv[5])
avg = re.search(r"avg ([0-9.]+)", open(sys.argv[6]).read())
all_cpus = sys.argv[7]
floor = re.search(r"avg ([0-9.]+)", open(sys.argv[8]).read())

def goal(name, met, figure):
    print(f"  {'met   ' if met else 'MISSED'} {name:46} {figure}")

for conns in ("4", "32"):
    r, h = ("relay http>http", conns), ("haproxy http http", conns)
    goal(f"1. http>http >= 1.0x HAProxy http @{conns}",
         calls[r] >= calls[h] and cpu[r] <= cpu[h] and p50[r] <= p50[h],
         f"{calls[r] / calls[h]:.2f}x calls/s; CPU {cpu[r]:.1f} vs {cpu[h]:.1f} µs/call; p50 {p50[r]:.2f} vs {p50[h]:.2f} ms")
for conns in ("4", "32"):
    r, h = ("relay ws>ws", conns), ("haproxy http ws", conns)
    goal(f"2. ws>ws >= 1.1x HAProxy http (ws) @{conns}", calls[r] >= 1.1 * calls[h],
         f"{calls[r] / calls[h]:.2f}x calls/s; CPU {cpu[r]:.1f} vs {cpu[h]:.1f} µs/call")
for conns in ("4", "32"):
    plain = ("relay ws>ws", conns)
    ratio = calls[("relay ws>ws +auth+rl", conns)] / calls[plain]
    goal(f"3. token-auth + rate-limit >= 0.9x plain @{conns}", ratio >= 0.9,
         f"{ratio:.2f}x calls/s, {cpu[('relay ws>ws +auth+rl', conns)] - cpu[plain]:+.1f} µs/call")
    unbound = ("relay ws>ws +2 unbound", conns)
    extra, ratio = cpu[unbound] - cpu[plain], calls[unbound] / calls[plain]
    goal(f"3. 2 unbound interceptors ~ none @{conns}", extra <= 1 and ratio >= 0.97,
         f"{extra:+.1f} µs/call, {ratio:.2f}x calls/s (goal <= +1 µs, >= 0.97x)")
    kib = ("relay ws>ws 1KiB", conns)
    extra = cpu[("relay ws>ws +redact 1KiB", conns)] - cpu[kib]
    goal(f"3. redact bound, 1 KiB result @{conns}", extra <= 5, f"{extra:+.1f} µs/call (goal <= +5)")
    extra = cpu[("relay ws>ws +redact result", conns)] - cpu[kib]
    goal(f"3. redact, hooks: [result], 1 KiB @{conns}", extra <= 5, f"{extra:+.1f} µs/call (goal <= +5)")
    # Not a goal: what a result with something to mask costs (it is read and rewritten).
    extra = cpu[("relay ws>ws +redact masked", conns)] - cpu[kib]
    print(f"  (info) {f'3. redact masking an address in 1 KiB @{conns}':46} {extra:+.1f} µs/call")
extra = cpu[("relay adapter (ws)", "32")] - cpu[("healthz", "32")]
goal("4. adapter served directly, above GET /healthz", extra <= 5, f"{extra:.1f} µs/call (goal <= 5)")
if avg:
    goal("5. reference, 1000 newline clients, avg", float(avg.group(1)) < 50, f"{float(avg.group(1)):.1f} ms (goal < 50)")
if floor:
    print(f"  (info) {'5. the same clients, a server that only answers':46} {float(floor.group(1)):.1f} ms")
def cores_used(row):
    return calls[row] * cpu[row] / 1e6
one, many = ("relay masking, 1 core", "32"), (f"relay masking, cores {all_cpus}", "32")
goal(f"6. scales with cores (1 -> {all_cpus}), relay-bound", calls[many] > calls[one] * 1.1,
     f"{calls[one]:.0f} -> {calls[many]:.0f} calls/s ({calls[many] / calls[one]:.2f}x); "
     f"the relay used {cores_used(one):.2f} -> {cores_used(many):.2f} cores")
one, many = calls[("relay ws>ws, 1 core", "32")], calls[(f"relay ws>ws, cores {all_cpus}", "32")]
print(f"  (info) {f'6. plain ws>ws (1 -> {all_cpus}), load-bound here':46} {one:.0f} -> {many:.0f} calls/s ({many / one:.2f}x)")
for _, clients, per in hold:
    goal(f"7. idle session <= 8 KB ({clients} held)", float(per) <= 8, f"{float(per):.1f} KB")
growth = (end - warm) / max(warm, 1)
goal("7. soak flat after warm-up", growth <= 0.05 and soak["failures"] == 0,
     f"{warm / 1024:.1f} -> {end / 1024:.1f} MB over {soak['successes']} calls ({growth * 100:+.1f}%)")
PY
