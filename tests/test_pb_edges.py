"""Protobuf stays at main's edges: only the servicer, the relay stream and wire.py import the
generated modules; the desks, the hub and the cluster work on plain records and events."""

from __future__ import annotations

import re
from pathlib import Path

MAIN = Path(__file__).resolve().parent.parent / "main_server"
ALLOWED = {"servicer.py", "relay.py", "wire.py"}
# `from realmchat.pb import chat_pb2 ...`, `from realmchat.pb.chat_pb2 import ...`, `import ...chat_pb2`
_PB_IMPORT = re.compile(r"^\s*(from\s+\S*chat_pb2\S*\s+import|from\s+\S+\s+import\s+[^#\n]*\bchat_pb2"
                        r"|import\s+\S*chat_pb2)", re.MULTILINE)


def test_only_the_edges_import_protobuf() -> None:
    offenders = sorted(str(p.relative_to(MAIN)) for p in MAIN.rglob("*.py")
                       if _PB_IMPORT.search(p.read_text()) and str(p.relative_to(MAIN)) not in ALLOWED)
    assert offenders == [], f"chat_pb2 imported outside {sorted(ALLOWED)}: {offenders}"


def test_the_edges_themselves_are_found() -> None:
    # The pattern is not vacuous: the edges do import protobuf.
    for name in ("servicer.py", "wire.py"):
        assert _PB_IMPORT.search((MAIN / name).read_text()), name


def test_the_desks_exist_one_module_each() -> None:
    desks = {p.stem for p in (MAIN / "domain").glob("*.py")} - {"__init__"}
    assert {"accounts", "delivery", "conversation", "messages", "groups", "files", "notify"} <= desks
    # Only the delivery desk speaks to the ledger.
    for p in (MAIN / "domain").glob("*.py"):
        uses = "ledger" in re.sub(r'"""[\s\S]*?"""|#.*', "", p.read_text())
        assert uses == (p.stem == "delivery"), p.name
