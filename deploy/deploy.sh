#!/usr/bin/env bash
# deploy.sh BUILD_DIR: blue/green deploy of a relay build with no downtime.
#
# BUILD_DIR holds one build of the relay, laid out like a colour's directory:
#   bin/relay            the binary
#   plugins/*.wasm       its plugins (relay.yaml refers to them as ../plugins/NAME.wasm)
#   config/relay.yaml    its configuration (deploy/config/relay.yaml is the production one)
#
# Steps, numbered as the script prints them (the active colour is where RELAY_ROOT/relay-active
# points; the other one is the target):
#   1. Check HAProxy's runtime API: servers blue and green in every backend, the target taking
#      no traffic.
#   2. Copy BUILD_DIR beside the target's directory and `relay check-config` it there.
#   3. Stop the target if it still runs; put the new build in its place (its previous build is
#      kept aside until the switch, and put back if anything before it fails).
#   4. Start the target (START_CMD); wait for /readyz 200 on its own port; `relay health` it;
#      check that it shares the active colour's session store (the same
#      `relay_kv_store_info{store}` on both colours' /metrics: the same Redis and namespace).
#   5. Switch: the target leaves maintenance with weight 0 in every backend (checked by HAProxy,
#      sent nothing); once HAProxy's own checks pass steadily it gets its full weight and the
#      old colour drains (every new connection and request goes to the target, Streamable
#      HTTP sessions included: it takes them up from the shared store).
#      Then relay-active moves to the target (atomic rename), which is enabled at boot while
#      the old colour is disabled.
#   6. Retire the old colour: stop it at once (STOP_CMD: SIGTERM; it drains itself: running
#      requests finish, persistent connections close once nothing of theirs runs, and it exits
#      when that is done, within shutdown.grace_secs), then `maint` in every backend.
#
# Until step 5 completes the active colour keeps all traffic: a failure stops the target, puts
# its previous build back, and leaves HAProxy as it was (a failure within step 5 first puts
# HAProxy back). In step 6 the new colour serves already; a failure there says what is left to
# do by hand.
#
# With no relay-active link yet (first install) the build goes to FIRST_COLOUR (blue), nothing
# is drained, and the other colour is put in maintenance.
#
# Settings (environment; all documented in lib/bluegreen.sh):
#   RELAY_ROOT=/opt/relay  ACTIVE_LINK=$RELAY_ROOT/relay-active  CONFIG_PATH=config/relay.yaml
#   RELAY_HOST=127.0.0.1  BLUE_PORT=8001  GREEN_PORT=8002
#   START_CMD='systemctl start relay@%s'  STOP_CMD='systemctl stop relay@%s'
#     (%s colour, %p port, %d directory; e.g. START_CMD='my-start %s' in tests)
#   ENABLE_CMD='systemctl enable --quiet relay@%s'  DISABLE_CMD='systemctl disable --quiet relay@%s'
#     (empty when START_CMD / STOP_CMD are custom)
#   ALIVE_CMD='systemctl is-active --quiet relay@%s'  LOG_CMD='journalctl -u relay@%s -n 20 ...'
#     (a colour that exits while starting is reported at once, with its last log lines)
#   RELAY_BIN=<colour>/bin/relay  RUN_AS=relay (as root)  ENV_DIR=/etc/relay
#   HEALTH_TIMEOUT=5  HEALTH_ARGS=  READY_TIMEOUT=60  SWITCH_TIMEOUT=30  SWITCH_SETTLE=5
#   STOP_TIMEOUT=60  POLL_INTERVAL=1  ALLOW_UNVERIFIED_STORE=0
#   HAPROXY_SOCKET=/run/haproxy/admin.sock  HAPROXY_BACKENDS='relay_http relay_tcp'
#   HAPROXY_STATE_FILE=/var/lib/haproxy/server-state  LOCK_FILE=$RELAY_ROOT/.deploy.lock
#   FIRST_COLOUR=blue     colour of the very first install (no relay-active yet)
#
# Exit status: 0 deployed, 1 failed (the message says in which step and what state is left).
set -euo pipefail

SCRIPT_NAME=deploy
# shellcheck source-path=SCRIPTDIR source=lib/bluegreen.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bluegreen.sh"
FIRST_COLOUR=${FIRST_COLOUR:-blue}

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
BUILD=$1

# What the failure handler has to undo: set as the steps go.
PHASE=prepare     # prepare -> installed -> started -> switching -> switched
TARGET=""
ACTIVE=""
STAGING=""
PREVIOUS=""

cleanup() {
  case $PHASE in
    prepare) ;;
    installed | started | switching)
      if [[ $PHASE == switching ]]; then revert_switch "$TARGET" "$ACTIVE"; fi
      if [[ $PHASE != installed ]] || is_running "$TARGET"; then stop_colour "$TARGET" || warn "stop $TARGET by hand"; fi
      restore_previous
      info "nothing changed for clients: ${ACTIVE:-no colour} still serves"
      ;;
    switched)
      warn "$TARGET serves all new traffic and $ACTIVE_LINK points at it; finish retiring $ACTIVE by hand"
      ;;
  esac
  if [[ -n $STAGING && -d $STAGING ]]; then rm -rf "$STAGING"; fi
}

# Puts the target's previous build back (if there was one) where the failed one is.
restore_previous() {
  [[ -n $PREVIOUS ]] || return 0
  local dir
  dir=$(colour_dir "$TARGET")
  rm -rf "$dir"
  if [[ -d $PREVIOUS ]]; then
    mv "$PREVIOUS" "$dir"
    info "$TARGET's previous build is back in $dir"
  fi
}

need "$CURL" "$SOCAT" flock
[[ -d $BUILD ]] || die "$BUILD is not a directory"
BUILD=$(cd "$BUILD" && pwd)
# The build is run (as the relay user) and installed (by root): anyone who could change it
# between the build and here would get their code run. Every part of it must belong to the
# deploying user and be writable by no one else, the directory above it included (a /tmp path
# made with `mkdir -p` by someone else is refused; use `mktemp -d`).
foreign=$(find "$BUILD" "$(dirname "$BUILD")" -maxdepth 0 \( ! -user "$(id -u)" -a ! -user 0 \) -print -quit)
[[ -z $foreign ]] || die "$foreign is not owned by $(id -un) (or root): refusing a build others could have changed"
foreign=$(find "$BUILD" \( ! -user "$(id -u)" -o -perm -g+w -o -perm -o+w \) ! -type l -print -quit)
[[ -z $foreign ]] || die "$foreign is owned by someone else or writable by others: refusing a build others could have changed (build into a fresh mktemp -d directory)"
[[ -x $BUILD/bin/relay ]] || die "$BUILD/bin/relay is missing or not executable"
[[ -f $BUILD/$CONFIG_PATH ]] || die "$BUILD/$CONFIG_PATH is missing"
compgen -G "$BUILD/plugins/*.wasm" >/dev/null || warn "$BUILD/plugins holds no .wasm file"
[[ -d $RELAY_ROOT ]] || die "$RELAY_ROOT does not exist (see deploy/README.md, first install)"
take_lock

ACTIVE=$(active_colour)
if [[ -n $ACTIVE ]]; then
  TARGET=$(other_colour "$ACTIVE")
  echo "[deploy] $ACTIVE is active; deploying $BUILD to $TARGET (port $(colour_port "$TARGET"))"
else
  TARGET=$FIRST_COLOUR
  valid_colour "$TARGET" || die "FIRST_COLOUR must be blue or green"
  echo "[deploy] no $ACTIVE_LINK yet: first install, deploying $BUILD to $TARGET (port $(colour_port "$TARGET"))"
fi
TARGET_DIR=$(colour_dir "$TARGET")

step "Checking HAProxy ($HAPROXY_SOCKET)"
check_haproxy
if [[ -n $ACTIVE ]]; then
  for backend in "${BACKENDS[@]}"; do
    if takes_traffic "$backend" "$TARGET"; then
      die "HAProxy sends new traffic to $backend/$TARGET, but $ACTIVE_LINK says $ACTIVE is active: put $TARGET in maint (or fix the link) first"
    fi
  done
  is_running "$ACTIVE" || warn "$ACTIVE (active) does not answer on port $(colour_port "$ACTIVE"); deploying anyway"
fi

step "Copying the build and checking its configuration"
STAGING="$RELAY_ROOT/.$TARGET.new"
rm -rf "$STAGING"
mkdir -p "$STAGING"
cp -R "$BUILD/." "$STAGING/"
# Owned by whoever deploys (root in production), readable by the relay user, writable by none.
chmod -R u+rwX,go+rX,go-w "$STAGING"
check_bin=${RELAY_BIN:-$STAGING/bin/relay}
check_config "$TARGET" "$check_bin" "$STAGING/$CONFIG_PATH" || die "relay check-config refused the new configuration"

step "Installing the build as $TARGET ($TARGET_DIR)"
if is_running "$TARGET"; then
  info "$TARGET still runs (no traffic reaches it); stopping it first"
  stop_colour "$TARGET" || die "$TARGET did not stop"
fi
if [[ -e $TARGET_DIR ]]; then
  PREVIOUS="$RELAY_ROOT/.$TARGET.previous"
  rm -rf "$PREVIOUS"
  mv "$TARGET_DIR" "$PREVIOUS"
fi
PHASE=installed
mv "$STAGING" "$TARGET_DIR"
STAGING=""
info "installed $(du -sh "$TARGET_DIR" | cut -f1) in $TARGET_DIR"

step "Starting $TARGET and checking it on port $(colour_port "$TARGET")"
PHASE=started
start_colour "$TARGET"
check_colour "$TARGET" || die "$TARGET is not healthy; it gets no traffic"
check_shared_store "$TARGET" "$ACTIVE" || die "$TARGET is not known to share $ACTIVE's sessions; it gets no traffic"

step "Switching HAProxy to $TARGET${ACTIVE:+ (draining $ACTIVE)}"
PHASE=switching
switch_traffic "$TARGET" "$ACTIVE" || die "HAProxy switch to $TARGET failed"
set_active_link "$TARGET"
PHASE=switched
boot_colour "$TARGET" "$ACTIVE"
if [[ -n $PREVIOUS ]]; then rm -rf "$PREVIOUS"; fi

if [[ -n $ACTIVE ]]; then
  step "Retiring $ACTIVE (it drains itself and stops; then maintenance)"
  retire_colour "$ACTIVE"
else
  other=$(other_colour "$TARGET")
  if is_running "$other"; then
    warn "$other runs although there was no $ACTIVE_LINK; its HAProxy state is left as it is"
  else
    for backend in "${BACKENDS[@]}"; do haproxy_set "$backend" "$other" maint || die "could not put $backend/$other in maintenance"; done
    save_haproxy_state
  fi
fi

PHASE=finished
echo "[deploy] done: $TARGET serves ($ACTIVE_LINK -> $TARGET_DIR)${ACTIVE:+; $ACTIVE is stopped and kept for rollback.sh}"
