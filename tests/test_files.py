"""Binary file transfer through realm and main: exact bytes, sha256, limits and framing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from .stack import Stack
from .textclient import login

Names = Callable[[str], str]

BINARY = b"line one\nsendprivate x pwned\n\x00\x01\xff\r\n" + bytes(range(256)) * 40 + b"\n\n"


async def test_binary_file_round_trip_with_newlines_and_nuls(stack: Stack, uname: Names) -> None:
    a, b = uname("fa"), uname("fb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    sha = hashlib.sha256(BINARY).hexdigest()
    await ca.send_raw(f"sendfile {b} ../../etc/my report.bin {len(BINARY)}\n".encode() + BINARY)
    r = await ca.response()
    assert r == {"status": "OK", "id": r["id"], "name": "my report.bin", "size": len(BINARY), "sha256": sha}
    ev = await cb.event()
    assert ev["event"] == "file" and ev["id"] == r["id"] and ev["from"] == a and ev["sha256"] == sha
    await ca.ok("ping")  # the payload was not parsed as commands
    await ca.no_event()

    files = (await cb.ok("receivefile"))["files"]
    assert [f["id"] for f in files] == [r["id"]]
    head = await cb.ok(f"receivefile {r['id']}")
    assert (head["name"], head["size"], head["sha256"], head["from"]) == ("my report.bin", len(BINARY), sha, a)
    data = await cb.read_exactly(head["size"])
    assert data == BINARY
    assert (await cb.ok("ping"))["pong"] is True  # line mode resumes after the payload
    assert (await cb.ok("receivefile"))["files"] == []  # downloaded: no longer waiting


async def test_file_errors_consume_the_payload(stack: Stack, uname: Names) -> None:
    a, b = uname("fea"), uname("feb")
    ca = await login(*stack.realm("alpha"), a)
    await login(*stack.realm("beta"), b)
    evil = b"sendprivate someone injected\n"
    await ca.send_raw(f"sendfile {uname('nobody')} x.txt {len(evil)}\n".encode() + evil)
    assert (await ca.response())["code"] == "NOT_FOUND"
    await ca.send_raw(f"sendfile {b} .. {len(evil)}\n".encode() + evil)
    assert (await ca.response())["code"] == "INVALID_ARGUMENT"
    await ca.err(f"receivefile {10**9}", "NOT_FOUND")
    await ca.ok("ping")
    # not logged in: the bytes are still consumed, never run as commands
    c = await login(*stack.realm("alpha"), uname("anon"), register=True)
    await c.ok("logout")
    await c.send_raw(f"sendfile {b} x.txt {len(evil)}\n".encode() + evil)
    assert (await c.response())["code"] == "UNAUTHENTICATED"
    await c.ok("ping")


async def test_only_the_recipient_can_download(stack: Stack, uname: Names) -> None:
    a, b, x = uname("oa"), uname("ob"), uname("ox")
    ca = await login(*stack.realm("alpha"), a)
    await login(*stack.realm("beta"), b)
    cx = await login(*stack.realm("beta"), x)
    await ca.send_raw(f"sendfile {b} s.txt 6\nsecret".encode())
    fid = (await ca.response())["id"]
    await cx.err(f"receivefile {fid}", "NOT_FOUND")
    await ca.err(f"receivefile {fid}", "NOT_FOUND")


async def test_file_limit_is_enforced_from_the_declared_size(tmp_path: os.PathLike[str], uname: Names) -> None:
    from .stack import start_stack

    s = start_stack(tmp_path, realms=("alpha",), realm_extra=("--max-file-bytes", "1000"))
    try:
        a, b = uname("la"), uname("lb")
        ca = await login(*s.realm("alpha"), a)
        await login(*s.realm("alpha"), b)
        await ca.send_raw(f"sendfile {b} big.bin 5000\n".encode() + b"\n" * 5000)
        assert (await ca.response())["code"] == "RESOURCE_EXHAUSTED"
        await ca.ok("ping")
        assert not any((tmp_path / "files" / "objects").rglob("*"))  # nothing stored
    finally:
        s.stop()


async def test_empty_file(stack: Stack, uname: Names) -> None:
    a, b = uname("ea"), uname("eb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("alpha"), b)
    r = await ca.ok(f"sendfile {b} empty.txt 0")
    assert r["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (await cb.event())["size"] == 0
    head = await cb.ok(f"receivefile {r['id']}")
    assert head["size"] == 0
    await cb.ok("ping")
