#!/usr/bin/env bash
# Starts the whole system on the embedded SQLite default: a main server, one realm and the GUI
# in web mode. Ctrl-C (or SIGTERM) stops all three. A main that exits is started again (the realm
# and the GUI keep their users); if the realm or the GUI dies, the others are stopped and the
# reason is printed.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-./data}; main_port=${2:-8080}; realm_port=${3:-8000}; realm=${4:-alpha}; gui_port=${5:-8550}
# IRC clients (docs/IRC.md) on the realm's --irc-port; 0 turns the IRC listener off.
irc_port=${6:-${REALMCHAT_REALM_IRC_PORT:-6667}}
PY=.venv/bin/python
host=127.0.0.1

# Every port is checked before anything starts: a busy one is one line naming the port and the
# make variable that changes it, and nothing is left running.
specs=("main:$main_port:MAIN_PORT" "realm:$realm_port:REALM_PORT" "gui:$gui_port:GUI_PORT")
[ "$irc_port" != 0 ] && specs+=("irc:$irc_port:IRC_PORT")
busy=$("$PY" - "$host" "${specs[@]}" <<'PYEOF'
import socket, sys
host = sys.argv[1]
for spec in sys.argv[2:]:
    name, port, var = spec.split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, int(port)))
    except OSError as e:
        print(f"realmchat: port {port} ({name}) is not free ({e.strerror}): "
              f"pick another with {var}=, e.g. make run {var}={int(port) + 1}")
        break
    finally:
        s.close()
PYEOF
)
if [ -n "$busy" ]; then
  echo "$busy" >&2
  exit 1
fi

mkdir -p "$data"
# The realm credential main expects from realms: made once, kept in the data dir (mode 0600).
"$PY" -c 'import sys; from pathlib import Path; from realmchat.realmauth import ensure_secret; ensure_secret(Path(sys.argv[1]))' "$data/realm-secret"
declare -A names=()
pids=()
stop() {
  trap - INT TERM EXIT
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap 'stop; exit 0' INT TERM
trap stop EXIT
start() {  # start NAME COMMAND...
  local name=$1; shift
  "$@" &
  pids+=($!); names[$!]=$name
}
start_main() {
  start "main server" "$PY" -m main_server --host "$host" --port "$main_port" --data-dir "$data"
}
start_main
start "realm server" "$PY" -m realm_server --host "$host" --port "$realm_port" --main "$host:$main_port" --name "$realm" \
  --irc-port "$irc_port" --secret-file "$data/realm-secret"
start "GUI" env FLET_WEB_NO_CDN=1 "$PY" -m gui --web --host "$host" --port "$gui_port" --realm "$host:$realm_port"

# The banner only once all three accept connections.
wait_ports=("$main_port" "$realm_port" "$gui_port")
[ "$irc_port" != 0 ] && wait_ports+=("$irc_port")
for port in "${wait_ports[@]}"; do
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && break
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { wait "$pid"; code=$?
        echo "realmchat: the ${names[$pid]} exited (code $code) while starting; stopping the others" >&2; exit 1; }
    done
    sleep 0.1
  done
done
irc_note=""
[ "$irc_port" != 0 ] && irc_note=", IRC on $host:$irc_port"
echo "realmchat: main on $host:$main_port (gRPC), realm '$realm' on $host:$realm_port (try: nc localhost $realm_port)$irc_note, GUI on http://$host:$gui_port/ - Ctrl-C stops all three"

# main is restarted when it exits (killed, crashed, or stopped by hand to restart it): the realm
# keeps its connections and resumes every session on the new main, so no web user is logged out.
# A main that keeps dying (5 exits within 60 s) is not a restart but a fault: everything stops.
restarts=()
while true; do
  wait -n -p dead "${pids[@]}"
  code=$?
  if [ "${names[$dead]:-}" = "main server" ]; then
    now=$SECONDS
    recent=()
    for t in "${restarts[@]}"; do [ $((now - t)) -lt 60 ] && recent+=("$t"); done
    restarts=("${recent[@]}" "$now")
    if [ ${#restarts[@]} -le 5 ]; then
      echo "realmchat: the main server exited (code $code); starting it again (the realm and the GUI keep their users)" >&2
      keep=()
      for pid in "${pids[@]}"; do [ "$pid" != "$dead" ] && keep+=("$pid"); done
      pids=("${keep[@]}")
      unset "names[$dead]"
      start_main
      continue
    fi
    echo "realmchat: the main server exited (code $code) 5 times within 60 s; stopping the others" >&2
    exit 1
  fi
  echo "realmchat: the ${names[$dead]:-a server} exited (code $code); stopping the others" >&2
  exit 1
done
