#!/usr/bin/env bash
# Idempotent setup; safe to run again, quick when nothing changed.
#   scripts/setup.sh         what running needs: Debian packages of apt-packages-run.txt (fonts),
#                            a .venv with the project, generated gRPC code. No database server,
#                            no browser.
#   scripts/setup.sh --test  the same, plus the test tools: apt-packages-test.txt (Chromium,
#                            PostgreSQL, nc) and the Python dev dependencies (pytest, ruff, ...).
#   scripts/setup.sh --bench the test setup, plus apt-packages-bench.txt: the IRC server the
#                            benchmark compares with (`python -m bench --peer ngircd`).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=run
[ "${1:-}" = "--test" ] && mode=test
bench=no
[ "${1:-}" = "--bench" ] && { mode=test; bench=yes; }

lists=(scripts/apt-packages-run.txt)
[ "$mode" = test ] && lists+=(scripts/apt-packages-test.txt)
[ "$bench" = yes ] && lists+=(scripts/apt-packages-bench.txt)
missing=()
for list in "${lists[@]}"; do
  while read -r pkg; do
    pkg=${pkg%%#*}; pkg=$(echo "$pkg" | xargs)
    [ -n "$pkg" ] || continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done < "$list"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# One stamp per mode: the test setup includes the run setup, not the other way round.
extras=""; [ "$mode" = test ] && extras="[dev]"
want=$(cat pyproject.toml <(echo "$mode") | sha256sum | cut -d' ' -f1)
stamp=.venv/.setup-stamp-$mode
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages${extras:+ (with the test tools)}"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$extras"
  echo "$want" > "$stamp"
fi
if [ ! -f realmchat/pb/chat_pb2.py ] || [ proto/chat.proto -nt realmchat/pb/chat_pb2.py ]; then
  PYTHON=.venv/bin/python ./build_proto.sh
fi
