"""Disk full, on a real 20 MiB tmpfs as main's data dir: writes fail with a clear
RESOURCE_EXHAUSTED (never INTERNAL), nothing partial is left (no record, no temp file), reads keep
working, and everything works again once space comes back. With the default guard main refuses
new data while less than --min-free-bytes is free; with the guard off (0) the same holds for the
real ENOSPC / SQLITE_FULL errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from realmchat.rpc import EARLY_END

from .hardutil import tmp_files
from .stack import Stack, start_stack
from .textclient import TextClient, login

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")
MIB = 1 << 20


def free_bytes(d: Path) -> int:
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def fill(d: Path, leave: int) -> None:
    """Grows d/filler until only about `leave` bytes stay free."""
    filler = d / "filler"
    have = filler.stat().st_size if filler.exists() else 0
    target = max(0, have + free_bytes(d) - leave)
    with filler.open("ab") as f:
        f.truncate(target)
        if target > have:
            os.posix_fallocate(f.fileno(), have, target - have)


def empty(d: Path) -> None:
    (d / "filler").unlink(missing_ok=True)


def stack_on(d: Path, min_free: int) -> Stack:
    return start_stack(d / "data", realms=("alpha",), main_extra=(*CHEAP, "--min-free-bytes", str(min_free)))


def objects(s: Stack) -> list[Path]:
    return sorted(p for p in (s.data_dir / "files" / "objects").rglob("*") if p.is_file())


def assert_clear_refusal(r: dict) -> None:
    """An upload main refused for disk space. Its RESOURCE_EXHAUSTED reaches the realm unless
    grpcio's write race (grpc/grpc#36066, see realmchat.rpc) replaces it while the realm is still
    sending: then the realm says UNAVAILABLE, with a message that says what happened."""
    assert r["status"] == "ERROR", r
    if r["code"] == "RESOURCE_EXHAUSTED":
        assert "disk" in r["message"], r
    else:
        assert r["code"] == "UNAVAILABLE" and r["message"] == EARLY_END, r


async def upload(c: TextClient, to: str, size: int) -> dict:
    await c.send_raw(f"sendfile {to} f.bin {size}\n".encode())
    block = b"\xa5" * MIB
    left = size
    while left:
        n = min(left, MIB)
        c.writer.write(block[:n])
        await c.writer.drain()
        left -= n
    return await c.response(timeout=30)


async def test_guard_refuses_new_data_before_the_disk_is_full(tmpfs: Path, uname: Names) -> None:
    s = stack_on(tmpfs, 1 * MIB)
    try:
        a, b = uname("dfa"), uname("dfb")
        ca = await login(*s.realm("alpha"), a)
        cb = await login(*s.realm("alpha"), b)
        await cb.ok("logout")
        fill(tmpfs, 3 * MIB)
        r = await upload(ca, b, 5 * MIB)  # does not fit: refused from the declared size
        assert_clear_refusal(r)
        assert tmp_files(s.data_dir) == [] and objects(s) == []
        kept = [(await ca.ok(f"sendprivate {b} fits {i}"))["id"] for i in range(3)]
        fill(tmpfs, MIB // 2)  # under the reserve
        for line in (f"sendprivate {b} no room", "creategroup roomless", f"register {uname('dfx')} pw-secret"):
            r = await ca.cmd(line)
            assert r["code"] == "RESOURCE_EXHAUSTED" and "low on disk space" in r["message"], (line, r)
        await ca.ok("who")                      # reads still work
        await cb.ok(f"auth {b} pw-secret")      # and so do logins
        await cb.ok("logout")
        empty(tmpfs)                            # space comes back
        kept.append((await ca.ok(f"sendprivate {b} after"))["id"])
        assert (await upload(ca, b, 5 * MIB))["size"] == 5 * MIB
        await ca.ok("creategroup roomful")
        await cb.ok(f"auth {b} pw-secret")
        assert [m["id"] for m in (await cb.ok("inbox"))["messages"]] == kept
        assert len((await cb.ok("receivefile"))["files"]) == 1
    finally:
        s.stop()


async def test_real_enospc_is_a_clear_error_and_recovers(tmpfs: Path, uname: Names) -> None:
    s = stack_on(tmpfs, 0)  # guard off: main meets the full disk itself
    try:
        a, b = uname("ena"), uname("enb")
        ca = await login(*s.realm("alpha"), a)
        cb = await login(*s.realm("alpha"), b)
        await cb.ok("logout")
        fill(tmpfs, 1 * MIB)
        r = await upload(ca, b, 3 * MIB)  # the disk fills up in the middle of the upload
        assert_clear_refusal(r)
        assert tmp_files(s.data_dir) == [] and objects(s) == []
        fill(tmpfs, 0)
        acked: list[int] = []
        for i in range(40):
            r = await ca.cmd(f"sendprivate {b} {i} {'x' * 4000}")
            if r["status"] == "OK":
                acked.append(r["id"])
            else:
                assert r["code"] in ("RESOURCE_EXHAUSTED", "UNAVAILABLE") and "disk" in r["message"], r
        assert len(acked) < 40, "the disk never filled up"
        empty(tmpfs)
        acked.append((await ca.ok(f"sendprivate {b} recovered"))["id"])
        assert (await upload(ca, b, 3 * MIB))["size"] == 3 * MIB
        await cb.ok(f"auth {b} pw-secret")
        got = [m["id"] for m in (await cb.ok("inbox"))["messages"]]
        assert got == acked  # every acknowledged message, once; nothing that was refused
        assert s.main.proc.poll() is None
    finally:
        s.stop()
