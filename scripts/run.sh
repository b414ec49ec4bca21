#!/usr/bin/env bash
# Starts the whole system on the embedded SQLite default: a main server, one realm and the GUI
# in web mode. Ctrl-C (or SIGTERM) stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-./data}; main_port=${2:-8080}; realm_port=${3:-8000}; realm=${4:-alpha}; gui_port=${5:-8550}
PY=.venv/bin/python
mkdir -p "$data"
# The realm credential main expects from realms: made once, kept in the data dir (mode 0600).
"$PY" -c 'import sys; from pathlib import Path; from realmchat.realmauth import ensure_secret; ensure_secret(Path(sys.argv[1]))' "$data/realm-secret"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
"$PY" -m main_server --host 127.0.0.1 --port "$main_port" --data-dir "$data" &
pids+=($!)
"$PY" -m realm_server --host 127.0.0.1 --port "$realm_port" --main "127.0.0.1:$main_port" --name "$realm" \
  --secret-file "$data/realm-secret" &
pids+=($!)
FLET_WEB_NO_CDN=1 "$PY" -m gui --web --host 127.0.0.1 --port "$gui_port" --realm "127.0.0.1:$realm_port" &
pids+=($!)
echo "realmchat: main on 127.0.0.1:$main_port (gRPC), realm '$realm' on 127.0.0.1:$realm_port (try: nc localhost $realm_port), GUI on http://127.0.0.1:$gui_port/"
wait -n
