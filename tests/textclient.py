"""A raw text-protocol client for tests: sends lines, separates responses from events.
Deliberately independent of chat_cli, so the backbone tests exercise the wire itself."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from realmchat.textproto import decode

# Events most tests are not about: presence comes and goes with every login of anyone who
# shares a group or a conversation. Readers set these aside (in `ignored`) unless a test asks
# for them (TextClient.ignore = frozenset()).
IGNORED_EVENTS = frozenset({"presence"})


class TextClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.hello: dict[str, Any] = {}
        self.ignore: frozenset[str] = IGNORED_EVENTS
        self.ignored: list[dict[str, Any]] = []

    def _queue_event(self, obj: dict[str, Any]) -> None:
        if obj["event"] in self.ignore:
            self.ignored.append(obj)
        else:
            self.events.put_nowait(obj)

    @classmethod
    async def connect(cls, host: str, port: int) -> TextClient:
        reader, writer = await asyncio.open_connection(host, port, limit=64 * 1024 * 1024)
        c = cls(reader, writer)
        c.hello = decode(await asyncio.wait_for(reader.readline(), 10))
        assert c.hello.get("event") == "hello", c.hello
        return c

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next response line; events read on the way are queued."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("connection closed")
            obj = json.loads(line)
            if "event" in obj:
                self._queue_event(obj)
                continue
            return obj

    async def cmd(self, line: str, timeout: float = 15.0) -> dict[str, Any]:
        await self.send_raw(line.encode() + b"\n")
        return await self.response(timeout)

    async def ok(self, line: str) -> dict[str, Any]:
        r = await self.cmd(line)
        assert r["status"] == "OK", (line, r)
        return r

    async def err(self, line: str, code: str) -> dict[str, Any]:
        r = await self.cmd(line)
        assert r["status"] == "ERROR" and r["code"] == code, (line, r)
        assert r["message"], r
        return r

    async def event(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next event (reading the socket if none is queued)."""
        if not self.events.empty():
            return self.events.get_nowait()
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError("connection closed")
            obj = json.loads(line)
            if "event" in obj:
                if obj["event"] in self.ignore:
                    self.ignored.append(obj)
                    continue
                return obj
            raise AssertionError(f"unexpected response while waiting for an event: {obj}")

    async def no_event(self, wait: float = 0.3) -> None:
        """Asserts that no event arrives within `wait` seconds."""
        if not self.events.empty():
            raise AssertionError(f"unexpected event {self.events.get_nowait()}")
        deadline = time.monotonic() + wait
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return
            obj = json.loads(line) if line.strip() else None
            if obj is not None and obj.get("event") in self.ignore:
                self.ignored.append(obj)
                continue
            raise AssertionError(f"unexpected line {line!r}")

    async def read_exactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def until_ok(c: TextClient, line: str, within: float = 20.0) -> dict[str, Any]:
    """Repeats a command while main is (re)starting (UNAVAILABLE) until it succeeds."""
    deadline = time.monotonic() + within
    while True:
        r = await c.cmd(line)
        if r["status"] == "OK":
            return r
        assert r["code"] == "UNAVAILABLE", r
        assert time.monotonic() < deadline, f"still unavailable after {within}s"
        await asyncio.sleep(0.1)


async def login(host: str, port: int, user: str, password: str = "pw-secret",
                register: bool = True) -> TextClient:
    c = await TextClient.connect(host, port)
    if register:
        await c.ok(f"register {user} {password}")
    await c.ok(f"auth {user} {password}")
    return c
