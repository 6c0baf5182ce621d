#!/usr/bin/env bash
# rollback.sh: send traffic back to the previous colour (the one relay-active does not point at,
# whose install deploy.sh left in place), with no downtime.
#
# Steps, numbered as the script prints them:
#   1. Check HAProxy's runtime API, and that the previous colour's install is there.
#   2. Start the previous colour if it is not running (START_CMD); wait for /readyz 200 on its
#      own port; `relay health` it. If it is not healthy the rollback is refused: HAProxy is not
#      touched, and a colour this script started is stopped again.
#   3. Switch as deploy.sh does: previous colour ready with weight 0, HAProxy's checks pass
#      steadily, full weight, current colour drains; relay-active moves to the previous colour
#      (atomic rename), which is enabled at boot while the current one is disabled.
#   4. Retire the current colour: stop it at once (STOP_CMD: SIGTERM; it drains itself and
#      exits once what it runs is done), `maint` in every backend.
#
# Running it twice goes back and forth: each run swaps the colours.
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
#   RELAY_BIN=<colour>/bin/relay  ENV_DIR=/etc/relay
#   HEALTH_TIMEOUT=5  HEALTH_ARGS=  READY_TIMEOUT=60  SWITCH_TIMEOUT=30  SWITCH_SETTLE=5
#   STOP_TIMEOUT=60  POLL_INTERVAL=1
#   HAPROXY_SOCKET=/run/haproxy/admin.sock  HAPROXY_BACKENDS='relay_http relay_tcp'
#   HAPROXY_STATE_FILE=/var/lib/haproxy/server-state  LOCK_FILE=$RELAY_ROOT/.deploy.lock
#
# Exit status: 0 rolled back, 1 refused or failed (the message says why and what is serving).
set -euo pipefail

SCRIPT_NAME=rollback
# shellcheck source-path=SCRIPTDIR source=lib/bluegreen.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/bluegreen.sh"

if [[ $# -gt 0 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi

# What the failure handler has to undo: set as the steps go.
PHASE=prepare     # prepare -> started -> switching -> switched
STARTED=0         # whether this script started the previous colour
CURRENT=""
TARGET=""

cleanup() {
  case $PHASE in
    started | switching)
      if [[ $PHASE == switching ]]; then revert_switch "$TARGET" "$CURRENT"; fi
      if ((STARTED)); then stop_colour "$TARGET" || warn "stop $TARGET by hand"; fi
      info "rollback refused: traffic untouched, $CURRENT still serves"
      ;;
    switched)
      warn "$TARGET serves all new traffic and $ACTIVE_LINK points at it; finish retiring $CURRENT by hand"
      ;;
  esac
}

need "$CURL" "$SOCAT" flock
take_lock

CURRENT=$(active_colour)
[[ -n $CURRENT ]] || die "$ACTIVE_LINK does not exist: nothing was deployed, nothing to roll back to"
TARGET=$(other_colour "$CURRENT")
echo "[rollback] $CURRENT is active; rolling back to $TARGET (port $(colour_port "$TARGET"))"

step "Checking HAProxy ($HAPROXY_SOCKET) and $TARGET's install"
check_haproxy
[[ -x $(colour_dir "$TARGET")/bin/relay ]] || die "$(colour_dir "$TARGET")/bin/relay is missing: no previous build to roll back to"

step "Checking $TARGET on port $(colour_port "$TARGET")"
PHASE=started
if is_running "$TARGET"; then
  info "$TARGET is running"
else
  start_colour "$TARGET"
  STARTED=1
fi
check_colour "$TARGET" || die "$TARGET is not healthy; refusing to send traffic to it"
check_shared_store "$TARGET" "$CURRENT" || die "$TARGET is not known to share $CURRENT's sessions; refusing to send traffic to it"

step "Switching HAProxy to $TARGET (draining $CURRENT)"
PHASE=switching
switch_traffic "$TARGET" "$CURRENT" || die "HAProxy switch to $TARGET failed"
set_active_link "$TARGET"
PHASE=switched
boot_colour "$TARGET" "$CURRENT"

step "Retiring $CURRENT (it drains itself and stops; then maintenance)"
retire_colour "$CURRENT"

PHASE=finished
echo "[rollback] done: $TARGET serves ($ACTIVE_LINK -> $(colour_dir "$TARGET")); $CURRENT is stopped"
