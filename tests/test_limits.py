"""Bounded reading: over-long lines are refused and discarded to their newline; memory stays
bounded while a 200 MiB file passes through realm and main."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable

import psutil

from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]


async def test_300kb_line_without_newline_is_refused_and_connection_stays_usable(stack: Stack) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    await c.send_raw(b"y" * 300_000)
    r = await c.response()
    assert r["code"] == "RESOURCE_EXHAUSTED" and "line too long" in r["message"]
    await c.send_raw(b"\n")
    assert (await c.ok("ping"))["pong"] is True


async def test_tail_of_an_overlong_line_is_never_executed(stack: Stack, uname: Names) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    victim = uname("tail")
    await c.send_raw(b"x" * 70_000 + f" register {victim} pw-secret\n".encode()
                     + b"z" * 65_536 + f"register {victim} pw-secret\n".encode() + b"ping\n")
    assert (await c.response())["code"] == "RESOURCE_EXHAUSTED"
    assert (await c.response())["code"] == "RESOURCE_EXHAUSTED"  # exactly 64 KiB + tail: too long too
    assert (await c.response())["pong"] is True
    await c.err(f"auth {victim} pw-secret", "UNAUTHENTICATED")  # neither tail registered anything


async def test_line_at_the_limit_is_accepted(stack: Stack) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    line = b"ping" + b" " * (64 * 1024 - 4)
    assert len(line) == 64 * 1024
    await c.send_raw(line + b"\n")
    assert (await c.response())["pong"] is True


class PeakRss:
    """Samples the RSS of processes in a thread; peak growth over the starting RSS."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.start = {k: p.memory_info().rss for k, p in self.procs.items()}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for k, p in self.procs.items():
                self.peak[k] = max(self.peak[k], p.memory_info().rss)

    def growth_mib(self) -> dict[str, float]:
        self._stop.set()
        self._t.join()
        return {k: (self.peak[k] - self.start[k]) / 2**20 for k in self.procs}


async def test_200mib_file_through_realm_and_main_in_bounded_memory(stack: Stack, uname: Names) -> None:
    a, b = uname("big_a"), uname("big_b")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    size = 200 * 2**20
    block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB of non-trivial bytes
    sha = hashlib.sha256()
    meter = PeakRss({"main": stack.main.pid, "alpha": stack.realms["alpha"].pid,
                     "beta": stack.realms["beta"].pid})
    await ca.send_raw(f"sendfile {b} big.bin {size}\n".encode())
    for i in range(200):
        chunk = bytes([i]) + block[1:]
        sha.update(chunk)
        ca.writer.write(chunk)
        await ca.writer.drain()
    r = await ca.response(timeout=120)
    assert r["size"] == size and r["sha256"] == sha.hexdigest()
    assert (await cb.event())["id"] == r["id"]
    head = await cb.ok(f"receivefile {r['id']}")
    got = hashlib.sha256()
    left = head["size"]
    while left:
        data = await asyncio.wait_for(cb.reader.read(min(left, 1 << 20)), 30)
        assert data
        got.update(data)
        left -= len(data)
    assert got.hexdigest() == sha.hexdigest()
    await cb.ok("ping")
    growth = meter.growth_mib()
    print(f"RSS growth during 200 MiB up+down: {growth}")
    assert all(g < 50 for g in growth.values()), growth
