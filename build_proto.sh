#!/usr/bin/env bash
# Generates the Python gRPC code for proto/chat.proto into realmchat/pb/ (not committed).
# The proto is mapped to the virtual path realmchat/pb/chat.proto so that the generated
# chat_pb2_grpc.py imports "from realmchat.pb import chat_pb2" and works as a package.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
mkdir -p realmchat/pb
"$PY" -m grpc_tools.protoc \
  -Irealmchat/pb=proto \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  realmchat/pb/chat.proto
echo "generated: $(ls realmchat/pb/chat_pb2*.py* | tr '\n' ' ')"
