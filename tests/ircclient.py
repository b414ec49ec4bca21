"""A tiny IRC client for tests: its own parser (independent of realm_server/irc, so the tests
check the wire, not the edge's codec against itself) over a raw asyncio socket."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field


@dataclass
class Line:
    command: str
    params: list[str]
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def nick(self) -> str:
        return self.source.split("!", 1)[0]


def parse_line(raw: str) -> Line:
    """RFC 1459 with IRCv3 tags; enough for what a server sends."""
    rest = raw
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        tag_part, _, rest = rest[1:].partition(" ")
        for item in tag_part.split(";"):
            k, _, v = item.partition("=")
            tags[k] = v.replace("\\s", " ").replace("\\:", ";").replace("\\\\", "\\")
    source = ""
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
    trailing = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    parts = rest.split()
    params = parts[1:] + ([trailing] if trailing is not None else [])
    return Line(parts[0].upper(), params, source, tags, raw)


class IrcClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[Line] = []  # every line read, in order

    @classmethod
    async def connect(cls, host: str, port: int) -> IrcClient:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, line: str) -> None:
        await self.send_raw(line.encode() + b"\r\n")

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, timeout: float = 10.0) -> Line:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise ConnectionError("connection closed")
        assert raw.endswith(b"\r\n"), raw
        ln = parse_line(raw[:-2].decode())
        self.seen.append(ln)
        if ln.command == "PING":  # what a real client does
            await self.send(f"PONG :{ln.params[-1]}")
        return ln

    async def until(self, *commands: str, timeout: float = 10.0) -> Line:
        """Reads until a line with one of these commands (or numerics) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            ln = await self.line(max(0.01, deadline - time.monotonic()))
            if ln.command in commands:
                return ln

    async def collect(self, end: str, timeout: float = 10.0) -> list[Line]:
        """Every line up to and including the first `end` command."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            ln = await self.line(max(0.01, deadline - time.monotonic()))
            out.append(ln)
            if ln.command == end:
                return out

    async def quiet(self, wait: float = 0.5) -> list[Line]:
        """What arrives within `wait` seconds."""
        out = []
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(await self.line(max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                return out

    async def register(self, nick: str, password: str | None = None, caps: tuple[str, ...] = ()) -> list[Line]:
        """CAP LS, REQ caps, PASS, NICK, USER, CAP END; returns the lines up to 376/422."""
        await self.send("CAP LS 302")
        await self.until("CAP")
        if caps:
            await self.send("CAP REQ :" + " ".join(caps))
            ack = await self.until("CAP")
            assert ack.params[1] == "ACK", ack
        if password is not None:
            await self.send(f"PASS {password}")
        await self.send(f"NICK {nick}")
        await self.send(f"USER {nick} 0 * :{nick}")
        await self.send("CAP END")
        return await self.collect_welcome()

    async def collect_welcome(self) -> list[Line]:
        out = []
        while True:
            ln = await self.line()
            out.append(ln)
            if ln.command in ("376", "422"):
                return out
            assert ln.command not in ("464", "904", "ERROR"), ln

    async def sasl(self, nick: str, account: str, password: str, caps: tuple[str, ...] = ()) -> list[Line]:
        """SASL PLAIN during CAP negotiation; returns the lines up to 903/904 then continues."""
        await self.send("CAP LS 302")
        await self.until("CAP")
        await self.send("CAP REQ :" + " ".join(("sasl", *caps)))
        ack = await self.until("CAP")
        assert ack.params[1] == "ACK", ack
        await self.send(f"NICK {nick}")
        await self.send(f"USER {nick} 0 * :{nick}")
        await self.send("AUTHENTICATE PLAIN")
        plus = await self.until("AUTHENTICATE")
        assert plus.params == ["+"], plus
        blob = base64.b64encode(f"\0{account}\0{password}".encode()).decode()
        await self.send(f"AUTHENTICATE {blob}")
        out = []
        while True:
            ln = await self.line()
            out.append(ln)
            if ln.command in ("903", "904"):
                return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
