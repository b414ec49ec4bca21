#!/usr/bin/env bash
# Starts a main server and one realm on the embedded SQLite default; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-./data}; main_port=${2:-8080}; realm_port=${3:-8000}; realm=${4:-alpha}
PY=.venv/bin/python
mkdir -p "$data"
"$PY" -m main_server --host 127.0.0.1 --port "$main_port" --data-dir "$data" &
main_pid=$!
trap 'kill -TERM $main_pid ${realm_pid:-} 2>/dev/null; wait' INT TERM EXIT
"$PY" -m realm_server --host 127.0.0.1 --port "$realm_port" --main "127.0.0.1:$main_port" --name "$realm" &
realm_pid=$!
echo "realmchat: main on 127.0.0.1:$main_port (gRPC), realm '$realm' on 127.0.0.1:$realm_port (try: nc localhost $realm_port)"
wait -n
