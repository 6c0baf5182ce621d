# shellcheck shell=bash
# Blue/green steps shared by deploy.sh and rollback.sh: the settings, and the checks and
# switches both scripts make. Sourced by them, never run on its own.
#
# Settings: every one can be set in the environment; the defaults match deploy/README.md's
# install (units relay@blue / relay@green, HAProxy with deploy/haproxy/haproxy.cfg).
#
#   RELAY_ROOT          /opt/relay                  install root: RELAY_ROOT/blue, RELAY_ROOT/green
#   ACTIVE_LINK         $RELAY_ROOT/relay-active    symlink to the colour taking traffic; the
#                                                   scripts read the active colour from it
#   CONFIG_PATH         config/relay.yaml           relay.yaml inside a colour's directory
#   RELAY_HOST          127.0.0.1                   where the colours listen (checks go there)
#   BLUE_PORT           8001                        blue's port (RELAY_PORT in /etc/relay/blue.env)
#   GREEN_PORT          8002                        green's port (RELAY_PORT in /etc/relay/green.env)
#   BLUE_METRICS        (RELAY_METRICS_LISTEN in    HOST:PORT of a colour's private /metrics, read
#   GREEN_METRICS        ENV_DIR/COLOUR.env)        for the drain's progress while it stops; else
#                                                   its main port (needs no token only when open)
#   START_CMD           systemctl start relay@%s    starts a colour; %s = colour, %p = its port,
#   STOP_CMD            systemctl stop relay@%s     %d = its directory; run with `bash -c`
#   ENABLE_CMD          systemctl enable --quiet relay@%s    the colour that takes traffic starts
#   DISABLE_CMD         systemctl disable --quiet relay@%s   at boot, the other does not; both are
#                                                   empty (nothing done) when START_CMD / STOP_CMD
#                                                   are not the systemctl defaults; a failure is
#                                                   only a warning
#   ALIVE_CMD           systemctl is-active --quiet relay@%s   exits non-zero once a started
#                                                   colour's process has exited (wait_ready then
#                                                   stops waiting at once); empty (not checked)
#                                                   when START_CMD is not the systemctl default
#   PID_CMD             systemctl show -p MainPID --value relay@%s   prints the PID of a
#                                                   colour's process: the process listening on
#                                                   its port must be that one (ss) before the
#                                                   colour is checked, given a token or traffic;
#                                                   empty (not checked) when START_CMD is custom
#   LOG_CMD             journalctl -u relay@%s -n 20 --no-pager -o cat   prints a colour's last
#                                                   log lines (shown when it exits at start);
#                                                   empty when START_CMD is custom
#   RELAY_BIN           (the colour's bin/relay)    relay binary for `check-config` and `health`
#   RUN_AS              relay (when run as root)    user that runs `relay check-config` (so the
#                                                   plugin cache it fills stays the relay's);
#                                                   empty: the current user
#   ENV_DIR             /etc/relay                  COLOUR.env files: `relay check-config` runs
#                                                   with the target's, as the service will; and
#                                                   RELAY_AUTH_TOKEN is read from there for
#                                                   `relay health` unless set
#   HEALTH_TIMEOUT      5                           seconds per answer for `relay health`
#   HEALTH_ARGS         (none)                      more `relay health` arguments, e.g. "--tls --ca F
#                                                   --servername relay.example.com [--cert F --key F]"
#   READY_TIMEOUT       60                          seconds for a started colour's /readyz to say 200
#   SWITCH_TIMEOUT      30                          seconds for HAProxy's checks to pass for the
#                                                   new colour (it gets no traffic meanwhile)
#   SWITCH_SETTLE       5                           ...and to keep passing that long; must exceed
#                                                   fall x inter in haproxy.cfg (2 x 2 s)
#   STOP_TIMEOUT        60                          seconds for a stopped colour to stop answering;
#                                                   the old colour drains itself on SIGTERM (its
#                                                   running requests finish within shutdown.
#                                                   grace_secs, 30 s in deploy/config/relay.yaml),
#                                                   so keep this above that grace
#   POLL_INTERVAL       1                           seconds between polls
#                                                   (all durations are whole seconds)
#   HAPROXY_SOCKET      $RELAY_LB_SOCKET or /run/haproxy/admin.sock   runtime API (level admin);
#                                                   tcp:HOST:PORT for one served over TCP
#   HAPROXY_BACKENDS    "relay_http relay_tcp"      backends holding servers named blue and green
#   HAPROXY_STATE_FILE  $RELAY_LB_STATE_FILE or /var/lib/haproxy/server-state
#                                                   `show servers state` is saved here after each
#                                                   change (haproxy.cfg loads it on start/reload);
#                                                   empty: not saved
#   LOCK_FILE           $RELAY_ROOT/.deploy.lock    one deploy or rollback at a time
#   SOCAT, CURL         socat, curl                 the tools used

RELAY_ROOT=${RELAY_ROOT:-/opt/relay}
ACTIVE_LINK=${ACTIVE_LINK:-$RELAY_ROOT/relay-active}
CONFIG_PATH=${CONFIG_PATH:-config/relay.yaml}
RELAY_HOST=${RELAY_HOST:-127.0.0.1}
BLUE_PORT=${BLUE_PORT:-8001}
GREEN_PORT=${GREEN_PORT:-8002}
BLUE_METRICS=${BLUE_METRICS:-}
GREEN_METRICS=${GREEN_METRICS:-}
START_CMD=${START_CMD:-systemctl start relay@%s}
STOP_CMD=${STOP_CMD:-systemctl stop relay@%s}
# Enabling follows the service commands: systemd's by default, nothing when START_CMD is custom.
if [[ -z ${ENABLE_CMD+set} ]]; then
  ENABLE_CMD=
  if [[ $START_CMD == "systemctl start relay@%s" ]]; then ENABLE_CMD="systemctl enable --quiet relay@%s"; fi
fi
if [[ -z ${DISABLE_CMD+set} ]]; then
  DISABLE_CMD=
  if [[ $STOP_CMD == "systemctl stop relay@%s" ]]; then DISABLE_CMD="systemctl disable --quiet relay@%s"; fi
fi
# Watching a colour's process follows the service commands too.
if [[ -z ${ALIVE_CMD+set} ]]; then
  ALIVE_CMD=
  if [[ $START_CMD == "systemctl start relay@%s" ]]; then ALIVE_CMD="systemctl is-active --quiet relay@%s"; fi
fi
if [[ -z ${PID_CMD+set} ]]; then
  PID_CMD=
  if [[ $START_CMD == "systemctl start relay@%s" ]]; then PID_CMD="systemctl show -p MainPID --value relay@%s"; fi
fi
if [[ -z ${LOG_CMD+set} ]]; then
  LOG_CMD=
  if [[ $START_CMD == "systemctl start relay@%s" ]]; then LOG_CMD="journalctl -u relay@%s -n 20 --no-pager -o cat"; fi
fi
RELAY_BIN=${RELAY_BIN:-}
if [[ -z ${RUN_AS+set} ]]; then
  RUN_AS=
  if [[ $EUID -eq 0 ]] && id relay >/dev/null 2>&1; then RUN_AS=relay; fi
fi
ENV_DIR=${ENV_DIR:-/etc/relay}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-5}
HEALTH_ARGS=${HEALTH_ARGS:-}
READY_TIMEOUT=${READY_TIMEOUT:-60}
SWITCH_TIMEOUT=${SWITCH_TIMEOUT:-30}
SWITCH_SETTLE=${SWITCH_SETTLE:-5}
ALLOW_UNVERIFIED_STORE=${ALLOW_UNVERIFIED_STORE:-0}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
POLL_INTERVAL=${POLL_INTERVAL:-1}
HAPROXY_SOCKET=${HAPROXY_SOCKET:-${RELAY_LB_SOCKET:-/run/haproxy/admin.sock}}
HAPROXY_BACKENDS=${HAPROXY_BACKENDS:-relay_http relay_tcp}
HAPROXY_STATE_FILE=${HAPROXY_STATE_FILE-${RELAY_LB_STATE_FILE-/var/lib/haproxy/server-state}}
LOCK_FILE=${LOCK_FILE:-$RELAY_ROOT/.deploy.lock}
SOCAT=${SOCAT:-socat}
CURL=${CURL:-curl}

read -r -a BACKENDS <<<"$HAPROXY_BACKENDS"
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}
STEP_NO=0
STEP="starting"

# ---- output and failure -----------------------------------------------------------------------

# A numbered step; its name is also what a failure reports.
step() {
  STEP_NO=$((STEP_NO + 1))
  STEP=$1
  printf '[%s] %d. %s\n' "$SCRIPT_NAME" "$STEP_NO" "$1"
}

info() { printf '[%s]    %s\n' "$SCRIPT_NAME" "$*"; }
warn() { printf '[%s]    WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# Stops the script: says why and in which step, runs the script's `cleanup` (which knows what
# to undo at this point), and exits 1. Inside a subshell ($(...)) it only ends the subshell:
# the parent sees the failure and undoes things once.
die() {
  trap - ERR
  set +e
  if [[ ${1-} != "$REPORTED" ]]; then
    if ((STEP_NO == 0)); then
      printf '[%s] FAILED: %s\n' "$SCRIPT_NAME" "$*" >&2
    else
      printf '[%s] FAILED in step %d (%s): %s\n' "$SCRIPT_NAME" "$STEP_NO" "$STEP" "$*" >&2
    fi
  fi
  if [[ $BASHPID != "$$" ]]; then exit "$REPORTED_STATUS"; fi
  if declare -F cleanup >/dev/null; then cleanup; fi
  exit 1
}

# Any command that fails outside a condition ends the script through die (once: a die inside
# $(...) has said why already, and its status tells so).
REPORTED="(reported)"
REPORTED_STATUS=86
on_err() {
  if [[ $1 == "$REPORTED_STATUS" ]]; then die "$REPORTED"; fi
  die "command failed (exit $1, line $2): $3"
}
set -E
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not installed"
  done
}

# ---- colours ----------------------------------------------------------------------------------

valid_colour() { [[ $1 == blue || $1 == green ]]; }
other_colour() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
colour_port() { if [[ $1 == blue ]]; then echo "$BLUE_PORT"; else echo "$GREEN_PORT"; fi; }
colour_dir() { echo "$RELAY_ROOT/$1"; }

# The colour ACTIVE_LINK points at, or nothing when there is no link yet (first install).
active_colour() {
  [[ -L $ACTIVE_LINK ]] || return 0
  local colour
  colour=$(basename "$(readlink "$ACTIVE_LINK")")
  valid_colour "$colour" || die "$ACTIVE_LINK points at $(readlink "$ACTIVE_LINK"), not a blue or green directory"
  echo "$colour"
}

# Points ACTIVE_LINK at COLOUR's directory atomically: a new link under a temporary name,
# renamed over the old one (mv -T), so readers see the old or the new target, never neither.
set_active_link() {
  local tmp="$ACTIVE_LINK.tmp.$$"
  ln -sfn "$(colour_dir "$1")" "$tmp"
  mv -T "$tmp" "$ACTIVE_LINK"
  info "$ACTIVE_LINK -> $(readlink "$ACTIVE_LINK")"
}

# The relay binary that checks COLOUR: RELAY_BIN, else the colour's own.
relay_bin() { echo "${RELAY_BIN:-$(colour_dir "$1")/bin/relay}"; }

# ---- services ---------------------------------------------------------------------------------

# START_CMD or STOP_CMD with %s, %p and %d filled in for COLOUR.
service_cmd() {
  local template=$1 colour=$2 cmd
  cmd=${template//%s/$colour}
  cmd=${cmd//%p/$(colour_port "$colour")}
  cmd=${cmd//%d/$(colour_dir "$colour")}
  echo "$cmd"
}

start_colour() {
  local cmd
  cmd=$(service_cmd "$START_CMD" "$1")
  info "starting $1: $cmd"
  # 9>&-: what it starts must not inherit the deploy lock.
  bash -c "$cmd" 9>&- || die "starting $1 failed: $cmd"
}

# Stops COLOUR and waits until its port stops answering (STOP_TIMEOUT). On SIGTERM the relay
# drains: nothing new starts there, running requests finish (within shutdown.grace_secs),
# persistent connections close once nothing of theirs runs, and it exits as soon as that is
# done; meanwhile its running requests and open sessions are shown.
stop_colour() {
  local cmd waited=0 running sessions started=$SECONDS
  cmd=$(service_cmd "$STOP_CMD" "$1")
  info "stopping $1: $cmd"
  # In the background: `systemctl stop` waits for the exit, and the drain is shown meanwhile.
  bash -c "$cmd" 9>&- &
  local stopper=$!
  while is_running "$1"; do
    if ((waited >= STOP_TIMEOUT)); then
      warn "$1 still answers on port $(colour_port "$1") ${STOP_TIMEOUT}s after the stop command"
      return 1
    fi
    if ((waited % 5 == 0)); then
      running=$(metric "$1" relay_requests_running)
      sessions=$(metric "$1" relay_sessions)
      if [[ -n $running ]]; then info "$1 draining: ${running} requests running, ${sessions:-?} sessions open (${waited}s)"; fi
    fi
    sleep "$POLL_INTERVAL"
    waited=$((waited + POLL_INTERVAL))
  done
  wait "$stopper" || { warn "stopping $1 failed: $cmd"; return 1; }
  info "$1 stopped after $((SECONDS - started))s"
}

# Makes COLOUR the one started at boot (ENABLE_CMD) and OTHER not (DISABLE_CMD), so a reboot
# brings back the colour HAProxy's saved state sends traffic to. Warnings only: traffic has
# moved already.
boot_colour() {
  local cmd
  if [[ -n $ENABLE_CMD ]]; then
    cmd=$(service_cmd "$ENABLE_CMD" "$1")
    if bash -c "$cmd" 9>&-; then info "enabled at boot: $1"; else warn "could not enable $1 at boot: $cmd"; fi
  fi
  if [[ -n $DISABLE_CMD && -n ${2:-} ]]; then
    cmd=$(service_cmd "$DISABLE_CMD" "$2")
    if bash -c "$cmd" 9>&-; then info "disabled at boot: $2"; else warn "could not disable $2 at boot: $cmd"; fi
  fi
}

# ---- checks of a colour -----------------------------------------------------------------------

# HTTP status of GET PATH on COLOUR's port ("000" when nothing answers).
http_status() {
  "$CURL" --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 3 \
    "http://$RELAY_HOST:$(colour_port "$1")$2" 2>/dev/null || true
}

# Whether COLOUR's process is still running (ALIVE_CMD; always yes without one).
colour_alive() {
  [[ -n $ALIVE_CMD ]] || return 0
  bash -c "$(service_cmd "$ALIVE_CMD" "$1")" 9>&- >/dev/null 2>&1
}

# COLOUR's last log lines (LOG_CMD), indented.
colour_log() {
  [[ -n $LOG_CMD ]] || return 0
  bash -c "$(service_cmd "$LOG_CMD" "$1")" 9>&- 2>&1 | tail -n 20 | sed 's/^/    /'
}

# The settings in ENV_DIR/COLOUR.env (systemd EnvironmentFile syntax: KEY=value per line, `#`
# comments, optional quotes), one KEY=value per line, for `env`.
colour_env() {
  local file=$ENV_DIR/$1.env
  [[ -r $file ]] || return 0
  sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*=[[:space:]]*\(.*\)$/\1=\2/p' "$file" |
    sed 's/^\([^=]*\)="\(.*\)"$/\1=\2/; s/^\([^=]*\)='"'"'\(.*\)'"'"'$/\1=\2/'
}

# Whether COLOUR's process answers at all (/healthz says 200 while the process runs).
is_running() { [[ $(http_status "$1" /healthz) == 200 ]]; }

# Waits up to READY_TIMEOUT for COLOUR's /readyz to say 200, and checks that the relay on that
# port calls itself COLOUR (RELAY_INSTANCE), so a port mix-up cannot switch traffic to the
# wrong process. Returns 1 (with the reason) when it does not get there.
wait_ready() {
  local colour=$1 port waited=0 body code instance
  port=$(colour_port "$colour")
  while :; do
    body=$("$CURL" --noproxy '*' -s --max-time 3 -w '\n%{http_code}' "http://$RELAY_HOST:$port/readyz" 2>/dev/null || true)
    code=${body##*$'\n'}
    [[ $code == 200 ]] && break
    if ! colour_alive "$colour"; then
      warn "$colour exited while starting; its last log lines:"
      colour_log "$colour" >&2 || true
      return 1
    fi
    if ((waited >= READY_TIMEOUT)); then
      warn "$colour: GET /readyz on port $port did not say 200 within ${READY_TIMEOUT}s (last status: ${code:-none})"
      return 1
    fi
    sleep "$POLL_INTERVAL"
    waited=$((waited + POLL_INTERVAL))
  done
  instance=$(sed -n 's/.*"instance"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' <<<"${body%$'\n'*}")
  if [[ -z $instance ]]; then
    warn "$colour: /readyz names no instance (RELAY_INSTANCE is not set in its environment)"
  elif [[ $instance != "$colour" ]]; then
    warn "$colour: the relay on port $port says it is \"$instance\": check RELAY_PORT/RELAY_INSTANCE in $ENV_DIR/*.env"
    return 1
  fi
  info "$colour: /readyz 200 on port $port"
}

# The bearer token `relay health` needs when the relay runs token auth: RELAY_AUTH_TOKEN from
# the environment, else from ENV_DIR/COLOUR.env when this user can read it.
health_token() {
  if [[ -n ${RELAY_AUTH_TOKEN:-} ]]; then
    echo "$RELAY_AUTH_TOKEN"
  else
    colour_env "$1" | sed -n 's/^RELAY_AUTH_TOKEN=//p' | tail -n 1
  fi
}

# `relay check-config --config CONFIG` by BIN, with the environment COLOUR's service will have
# (its ENV_DIR file: port, metrics address, tokens), so what check-config passes, serve
# accepts. The settings go through the environment, never a command line (which other users
# can see in ps, for as long as check-config compiles the plugins); run as RUN_AS.
check_config() {
  local colour=$1 bin=$2 config=$3 settings as_user=()
  mapfile -t settings < <(colour_env "$colour")
  if [[ -n $RUN_AS ]]; then as_user=(runuser -u "$RUN_AS" --); fi
  info "relay check-config --config $config (${RUN_AS:+as $RUN_AS, }with $ENV_DIR/$colour.env: ${#settings[@]} settings)"
  (
    for setting in "${settings[@]}"; do export "${setting?}"; done
    export RELAY_INSTANCE="$colour"
    exec "${as_user[@]}" "$bin" check-config --config "$config"
  )
}

# `relay health` against COLOUR (initialize + tools/list over newline JSON-RPC). The token goes
# through the environment, never the command line (which other users can see in ps). Like every
# command of a new build, it runs as RUN_AS (the relay user), never as the deploying root.
relay_health() {
  local colour=$1 bin token extra=() as_user=()
  bin=$(relay_bin "$colour")
  token=$(health_token "$colour")
  read -r -a extra <<<"$HEALTH_ARGS"
  if [[ -n $RUN_AS ]]; then as_user=(runuser -u "$RUN_AS" --); fi
  if [[ -n $token ]]; then
    RELAY_AUTH_TOKEN=$token "${as_user[@]}" "$bin" health --host "$RELAY_HOST" --port "$(colour_port "$colour")" \
      --timeout "$HEALTH_TIMEOUT" "${extra[@]}"
  else
    env -u RELAY_AUTH_TOKEN "${as_user[@]}" "$bin" health --host "$RELAY_HOST" --port "$(colour_port "$colour")" \
      --timeout "$HEALTH_TIMEOUT" "${extra[@]}"
  fi
}

# The PIDs of the processes listening on COLOUR's port (any address), one per line, by ss
# (root sees every process's).
listener_pids() {
  ss -Hltnp "sport = :$(colour_port "$1")" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

# Whether the process listening on COLOUR's port is the colour's own (PID_CMD): the ports are
# unprivileged, and a local user who took one while its colour was stopped (the colour then
# cannot listen there) must get neither the health check's token nor any traffic.
owns_port() {
  [[ -n $PID_CMD ]] || return 0
  local expected listening
  expected=$(bash -c "$(service_cmd "$PID_CMD" "$1")" 9>&- 2>/dev/null || true)
  listening=$(listener_pids "$1" | paste -sd ' ' -)
  if [[ -z $expected || $listening != "$expected" ]]; then
    warn "$1: port $(colour_port "$1") is held by process ${listening:-?}, not (only) by $1's own (${expected:-none}): another program took the port; refusing it"
    return 1
  fi
}

# Ready and healthy: what a colour must be before it gets traffic.
check_colour() {
  wait_ready "$1" || return 1
  owns_port "$1" || return 1
  if ! relay_health "$1"; then
    warn "$1: relay health failed on port $(colour_port "$1")"
    return 1
  fi
  info "$1: relay health OK"
}

# The store COLOUR keeps shared state in: asking for its status makes it read the store now,
# and `relay_kv_store_info{store="..."}` on its /metrics then says which (an id the first
# instance wrote into Redis under its namespace; `none` for the in-memory kv; `unreachable`
# when its Redis did not answer). Empty when COLOUR does not say (a build before the metric,
# or its metrics cannot be read from here). Read from the metrics the relay writes itself,
# never from status JSON, where a backend's serverInfo could say anything. The token, when
# there is one, goes to curl on its standard input, never on a command line.
store_of() {
  metrics_get "$1" status.json /dev/null
  metrics_get "$1" metrics - | sed -n 's/^relay_kv_store_info{store="\([0-9a-z]*\)"} 1$/\1/p' | head -n 1 || true
}

# COLOUR is configured with a shared store it cannot reach now: whether both colours share one
# cannot be told. Refused (status 1) unless ALLOW_UNVERIFIED_STORE=1.
unverified_store() {
  if [[ $ALLOW_UNVERIFIED_STORE == 1 ]]; then
    warn "$1 cannot reach its session store (kv) now: whether both colours share it is not verified (ALLOW_UNVERIFIED_STORE=1)"
    return 0
  fi
  warn "$1 cannot reach its session store (kv) now, so whether both colours share it cannot be told (a different kv.url or kv.namespace would lose every client's session at the switch); bring the store back, or set ALLOW_UNVERIFIED_STORE=1 to switch without knowing"
  return 1
}

# GET PATH from COLOUR's metrics address into OUTPUT (`-`: standard output); nothing when it
# does not answer. The token goes only to the colour's main port (where these need the admin
# role once an auth plugin runs), on curl's standard input: never to a private metrics
# address, which needs none, and which a process other than the colour could hold.
metrics_get() {
  local address token=""
  address=$(colour_metrics "$1")
  if [[ $address == "$RELAY_HOST:$(colour_port "$1")" ]]; then token=$(health_token "$1"); fi
  if [[ -n $token ]]; then printf 'Authorization: Bearer %s\n' "$token"; fi |
    "$CURL" --noproxy '*' -s --max-time 3 -H @- -o "$3" "http://$address/$2" 2>/dev/null || true
}

# TARGET must share ACTIVE's session store before it takes ACTIVE's clients: with another
# Redis or namespace (or none), every Streamable HTTP session, subscription and shared budget
# would be lost at the switch, and the deploy would still say done. Nothing to compare when
# ACTIVE keeps nothing shared; a colour that does not say which store it uses is warned about,
# not refused (a rollback to a build from before this check must go through). A colour that
# cannot reach its store now cannot be compared: refused, unless ALLOW_UNVERIFIED_STORE=1 (a
# deploy made to fix the store's address, during the outage).
check_shared_store() {
  local target=$1 active=$2 theirs ours
  [[ -n $active ]] || return 0
  theirs=$(store_of "$active")
  case $theirs in
    "")
      warn "$active does not say which session store it uses (an older build, or its metrics are not readable here): not compared"
      return 0
      ;;
    none)
      info "$active keeps no shared store: its sessions stay with it"
      return 0
      ;;
    unreachable)
      # Allowed unverified: the target is still looked at (a target keeping none is refused).
      unverified_store "$active" || return 1
      theirs=""
      ;;
  esac
  # A colour just started may take a moment to answer its status (Redis connecting).
  for _ in 1 2 3; do
    ours=$(store_of "$target")
    [[ -z $ours ]] || break
    sleep 1
  done
  if [[ -z $ours ]]; then
    warn "$target does not say which session store it uses (an older build, or its metrics are not readable here): not compared"
    return 0
  fi
  if [[ $ours == none ]]; then
    warn "$target keeps no shared session store (kv) while $active has one: its clients' sessions would be lost"
    return 1
  fi
  if [[ $ours == unreachable ]]; then
    unverified_store "$target"
    return
  fi
  [[ -n $theirs ]] || return 0 # $active's store could not be asked (allowed unverified)
  if [[ $ours != "$theirs" ]]; then
    warn "$target does not share $active's session store (kv.url and kv.namespace must name the same Redis and namespace; $active's store ${theirs:0:12}, $target's ${ours:0:12}): its clients' sessions would be lost"
    return 1
  fi
  info "$target shares $active's session store (${ours:0:12})"
}

# Where COLOUR serves /metrics without a token: its private listener (RELAY_METRICS_LISTEN in
# ENV_DIR/COLOUR.env, as deploy/systemd/*.env set it; BLUE_METRICS / GREEN_METRICS override),
# else its main port (where /metrics needs the admin role once an auth plugin runs).
colour_metrics() {
  local address=""
  case $1 in
    blue) address=$BLUE_METRICS ;;
    green) address=$GREEN_METRICS ;;
  esac
  [[ -n $address ]] || address=$(colour_env "$1" | sed -n 's/^RELAY_METRICS_LISTEN=//p' | tail -n 1)
  echo "${address:-$RELAY_HOST:$(colour_port "$1")}"
}

# One series of COLOUR's /metrics (its first value, as an integer); empty when it does not
# answer.
metric() {
  "$CURL" --noproxy '*' -s --max-time 3 "http://$(colour_metrics "$1")/metrics" 2>/dev/null |
    awk -v name="$2" '$1 == name && !seen { print int($2); seen = 1 }' || true
}

# ---- HAProxy runtime API ----------------------------------------------------------------------

# One runtime API command; prints HAProxy's answer. HAPROXY_SOCKET is a Unix socket path, or
# tcp:HOST:PORT for a runtime API served over TCP (haproxy.cfg's RELAY_LB_ADMIN_ADDR).
haproxy_cmd() {
  local address="UNIX-CONNECT:$HAPROXY_SOCKET"
  if [[ $HAPROXY_SOCKET == tcp:* ]]; then address="TCP:${HAPROXY_SOCKET#tcp:}"; fi
  printf '%s\n' "$1" | "$SOCAT" -t 5 stdio "$address"
}

# `set server BACKEND/SERVER state STATE`; HAProxy answers nothing when it worked.
haproxy_set() {
  local answer
  answer=$(haproxy_cmd "set server $1/$2 state $3") || { warn "HAProxy socket $HAPROXY_SOCKET did not answer"; return 1; }
  if [[ -n ${answer//[[:space:]]/} ]]; then
    warn "HAProxy refused 'set server $1/$2 state $3': $answer"
    return 1
  fi
  info "HAProxy: $1/$2 -> $3"
}

# `set weight BACKEND/SERVER WEIGHT` (100% = the weight haproxy.cfg gives it).
haproxy_weight() {
  local answer
  answer=$(haproxy_cmd "set weight $1/$2 $3") || { warn "HAProxy socket $HAPROXY_SOCKET did not answer"; return 1; }
  if [[ -n ${answer//[[:space:]]/} ]]; then
    warn "HAProxy refused 'set weight $1/$2 $3': $answer"
    return 1
  fi
  info "HAProxy: $1/$2 weight $3"
}

# SERVER's "op_state admin_state" in BACKEND from `show servers state`. op_state 2 = running
# (health checks pass). admin_state is a bit set: 0x01/0x02/0x20/0x40 maintenance, 0x08/0x10
# drain; 0x04 only records that the file said `disabled` and is kept after `state ready`.
server_state() {
  haproxy_cmd "show servers state $1" | awk -v s="$2" '$4 == s { print $6, $7; found = 1 } END { exit !found }'
}

# Whether SERVER takes new traffic in BACKEND (neither in maintenance nor draining).
takes_traffic() {
  local state admin
  state=$(server_state "$1" "$2") || return 1
  admin=${state#* }
  (((admin & 0x7b) == 0))
}

# The socket answers, and every backend has servers blue and green.
check_haproxy() {
  [[ $HAPROXY_SOCKET == tcp:* || -S $HAPROXY_SOCKET ]] || die "no HAProxy runtime socket at $HAPROXY_SOCKET (set HAPROXY_SOCKET)"
  local info_text
  info_text=$(haproxy_cmd "show info" 2>/dev/null || true)
  [[ $info_text == *"Name: "* ]] || die "HAProxy does not answer on $HAPROXY_SOCKET"
  local backend colour state
  for backend in "${BACKENDS[@]}"; do
    for colour in blue green; do
      state=$(server_state "$backend" "$colour") || die "HAProxy has no server $backend/$colour (HAPROXY_BACKENDS=$HAPROXY_BACKENDS)"
      if takes_traffic "$backend" "$colour"; then
        info "HAProxy: $backend/$colour takes traffic (op/admin state $state)"
      else
        info "HAProxy: $backend/$colour takes no new traffic (op/admin state $state)"
      fi
    done
  done
}

# Saves the servers' states where haproxy.cfg's server-state-file reads them back, so a reload
# or restart of HAProxy keeps the colour this script chose.
save_haproxy_state() {
  [[ -n $HAPROXY_STATE_FILE ]] || return 0
  if [[ ! -w $(dirname "$HAPROXY_STATE_FILE") ]]; then
    info "not saving HAProxy state: $(dirname "$HAPROXY_STATE_FILE") is not writable (set HAPROXY_STATE_FILE)"
    return 0
  fi
  if haproxy_cmd "show servers state" >"$HAPROXY_STATE_FILE.tmp"; then
    mv -f "$HAPROXY_STATE_FILE.tmp" "$HAPROXY_STATE_FILE"
    info "HAProxy state saved to $HAPROXY_STATE_FILE"
  else
    rm -f "$HAPROXY_STATE_FILE.tmp"
    warn "could not save HAProxy state to $HAPROXY_STATE_FILE"
  fi
}

# SERVER's "status check_status" in BACKEND from `show stat` (e.g. "UP L7OK", "DOWN L4CON").
server_check() {
  haproxy_cmd "show stat $1 4 -1" | awk -F, -v b="$1" -v s="$2" '$1 == b && $2 == s { print $18, ($37 == "" ? "-" : $37) }'
}

# Waits until HAProxy's own health checks pass for COLOUR in every backend, and keep passing for
# SWITCH_SETTLE seconds (give up after SWITCH_TIMEOUT). A server leaving maintenance is marked
# UP at once, before any check ran; only checks that keep passing for longer than fall x inter
# (2 x 2 s in haproxy.cfg) prove that HAProxy reaches the colour at the address it has.
wait_haproxy_up() {
  local colour=$1 waited=0 good=0 backend state failing
  while :; do
    failing=()
    for backend in "${BACKENDS[@]}"; do
      state=$(server_check "$backend" "$colour") || state=""
      [[ $state == "UP L7OK" ]] || failing+=("$backend ${state:-no answer};")
    done
    if ((${#failing[@]} == 0)); then
      if ((good >= SWITCH_SETTLE)); then
        info "HAProxy's checks pass for $colour in every backend (for ${good}s)"
        return 0
      fi
      good=$((good + POLL_INTERVAL))
    else
      good=0
    fi
    if ((waited >= SWITCH_TIMEOUT)); then
      # A layer-7 failure: HAProxy reaches the colour, which does not answer its check well.
      local hint="check RELAY_LB_${colour^^} in HAProxy's environment"
      if [[ ${failing[*]} == *L7* && ${failing[*]} != *L4* ]]; then
        hint="HAProxy reaches $colour, whose answer to its check fails: is HAProxy's address in $colour's listen.trusted_proxies (it sends a PROXY header; $colour's log says so when not), and does /readyz answer 200?"
      fi
      warn "HAProxy's checks do not pass for $colour within ${SWITCH_TIMEOUT}s (${failing[*]:-not steady for ${SWITCH_SETTLE}s}); $hint"
      return 1
    fi
    sleep "$POLL_INTERVAL"
    waited=$((waited + POLL_INTERVAL))
  done
}

# ---- the switch -------------------------------------------------------------------------------

# Traffic to NEW. First NEW leaves maintenance with weight 0 in every backend: HAProxy checks
# it but sends it nothing. Once the checks pass steadily (wait_haproxy_up), NEW gets its full
# weight and OLD (if any) drains: no new connections or requests go there (Streamable HTTP
# sessions are shared through Redis; the new colour takes them up). Returns 1 if any of it fails; the caller's cleanup
# then calls revert_switch.
switch_traffic() {
  local new=$1 old=${2:-} backend
  for backend in "${BACKENDS[@]}"; do
    haproxy_weight "$backend" "$new" 0 || return 1
    haproxy_set "$backend" "$new" ready || return 1
  done
  wait_haproxy_up "$new" || return 1
  for backend in "${BACKENDS[@]}"; do
    haproxy_weight "$backend" "$new" 100% || return 1
  done
  if [[ -n $old ]]; then
    for backend in "${BACKENDS[@]}"; do
      haproxy_set "$backend" "$old" drain || return 1
    done
  fi
  save_haproxy_state
}

# Undoes a switch that did not complete: OLD ready again, NEW in maintenance (best effort: says
# what it could not do).
revert_switch() {
  local new=$1 old=${2:-} backend ok=1
  for backend in "${BACKENDS[@]}"; do
    if [[ -n $old ]]; then haproxy_set "$backend" "$old" ready || ok=0; fi
    haproxy_set "$backend" "$new" maint || ok=0
    haproxy_weight "$backend" "$new" 100% || ok=0
  done
  save_haproxy_state
  if ((ok)); then
    info "HAProxy restored: ${old:-nothing} serving, $new in maintenance"
  else
    warn "HAProxy could not be fully restored: check 'show servers state' on $HAPROXY_SOCKET"
  fi
}

# After the switch: stop OLD at once (SIGTERM: it drains itself, finishing what runs; its
# Streamable HTTP sessions go on on the new colour, its other clients reconnect there), then
# maintenance in every backend.
retire_colour() {
  local old=$1 backend
  stop_colour "$old" || die "$old did not stop; traffic is on $(other_colour "$old") already. Stop $old by hand, then: set server <backend>/$old state maint"
  for backend in "${BACKENDS[@]}"; do
    haproxy_set "$backend" "$old" maint || die "could not put $backend/$old in maintenance (it is stopped; health checks keep it out)"
  done
  save_haproxy_state
}

# One deploy or rollback at a time.
take_lock() {
  exec 9>>"$LOCK_FILE" || die "cannot open the lock file $LOCK_FILE"
  flock -n 9 || die "another deploy or rollback holds $LOCK_FILE"
}
