"""Protobuf records -> the text protocol's JSON objects."""

from __future__ import annotations

from typing import Any

from realmchat.pb import chat_pb2 as pb


def message_dict(m: pb.Message) -> dict[str, Any]:
    d: dict[str, Any] = {"id": m.id, "from": getattr(m, "from")}
    if m.group:
        d["group"] = m.group
    else:
        d["to"] = m.to
    d["text"] = m.text
    d["ts"] = m.ts
    return d


def file_dict(f: pb.FileInfo) -> dict[str, Any]:
    return {"id": f.id, "from": getattr(f, "from"), "name": f.name, "size": f.size, "sha256": f.sha256,
            "ts": f.ts}
