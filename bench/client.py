"""The generator's text-protocol client: an asyncio.Protocol, not StreamReader.readline, because
the generator must stay cheap next to the servers it measures (one split per TCP read instead of
one coroutine step per line, and no JSON parsing of chat events: a regex pulls the send time and
sequence number out of the message text).

A chat message's text is "t=<scheduled CLOCK_MONOTONIC ns> w=<sender worker> s=<seq> p=<phase>".
All generator processes run on one host and share CLOCK_MONOTONIC, so the receiving process
computes end-to-end latency (scheduled send -> pushed event read at the recipient) directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

# Matches private and group events alike: message_dict puts "text" after "to"/"group".
TEXT_RE = re.compile(rb'"text":"t=(\d+) w=(\d+) s=(\d+) p=(\d+)')
EVENT = b'{"event"'
PRESENCE = b'{"event":"presence"'
OK = b'{"status":"OK"'


def grow(buf: bytearray, index: int) -> None:
    """Makes buf[index] addressable (amortised doubling)."""
    if index >= len(buf):
        buf.extend(bytes(max(index + 1 - len(buf), len(buf), 1024)))


@dataclass
class Received:
    """What one generator process saw arrive for one phase."""

    lat_us: array = field(default_factory=lambda: array("q"))
    # sender worker id -> number of deliveries seen for each of its sequence numbers
    counts: dict[int, bytearray] = field(default_factory=dict)
    n: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def add(self, wid: int, seq: int, lat_ns: int, now: int) -> None:
        c = self.counts.get(wid)
        if c is None:
            c = self.counts[wid] = bytearray()
        if seq >= len(c):
            grow(c, seq)
        if c[seq] < 255:
            c[seq] += 1
        self.lat_us.append(lat_ns // 1000)
        self.n += 1
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now


class Sending:
    """One phase's sends from one generator process: sequence numbers, acks and errors."""

    def __init__(self, wid: int, phase: int, closed_loop: bool, end_ns: int) -> None:
        self.wid = wid
        self.phase = phase
        self.closed_loop = closed_loop
        self.end_ns = end_ns
        self.seq = 0
        self.acked = bytearray()
        self.n_acked = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.ack_lat_us: array = array("q")
        self.in_flight = 0
        self.idle = asyncio.Event()

    def next_seq(self) -> int:
        s = self.seq
        self.seq += 1
        self.in_flight += 1
        return s

    def on_response(self, client: Client, seq: int, sched_ns: int, line: bytes, now: int) -> None:
        self.in_flight -= 1
        if line.startswith(OK):
            if seq >= len(self.acked):
                grow(self.acked, seq)
            self.acked[seq] = 1
            self.n_acked += 1
            self.ack_lat_us.append((now - sched_ns) // 1000)
        else:
            self.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(line.decode(errors="replace")[:300])
        if self.closed_loop and 0 < now < self.end_ns:
            # Full speed: the ack frees a slot, which is refilled at once (window of `depth`).
            client.send_message(self, now)
        elif self.in_flight == 0:
            self.idle.set()

    # A protocol without acknowledgements (IRC, bench.irc): a message counts as acked once
    # written, and stays in flight until its recipient read it.

    def written(self, seq: int) -> None:
        if seq >= len(self.acked):
            grow(self.acked, seq)
        self.acked[seq] = 1
        self.n_acked += 1

    def on_delivered(self, sender: Any, now: int) -> None:
        """The recipient read a message `sender` sent in this phase: its slot is free."""
        self.in_flight -= 1
        if self.closed_loop and now < self.end_ns:
            sender.send_message(self, now)
        elif self.in_flight <= 0:
            self.idle.set()


class Client(asyncio.Protocol):
    """One connection. Responses arrive in command order, so a FIFO of what each pending command
    is (a chat send to account, or a future for a control command) pairs them up; that is also
    what allows pipelining."""

    def __init__(self, cid: int, user: str, on_event: Callable[[re.Match[bytes], int], None]) -> None:
        self.cid = cid
        self.user = user
        self.on_event = on_event
        self.prefix = b""  # "sendprivate PEER " / "sendgroup GROUP ": what this client sends
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Any] = deque()
        self.rest = b""
        self.hello: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.presence = 0  # presence events received (workload 8)

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        err = ConnectionError(f"client {self.user}: connection lost ({exc})")
        if not self.hello.done():
            self.hello.set_exception(err)
        while self.pending:
            item = self.pending.popleft()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_exception(err)
            else:
                sending, seq, sched = item
                # now=0: not refilled, and counted as an error, never as an ack
                sending.on_response(self, seq, sched, b'{"status":"ERROR","code":"CONNECTION_LOST"}', 0)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # arrival time of every line in this read
        if self.rest:
            data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            if line.startswith(EVENT):
                if line.startswith(PRESENCE):
                    self.presence += 1
                    continue
                m = TEXT_RE.search(line)
                if m is not None:
                    self.on_event(m, now)
                elif not self.hello.done():
                    self.hello.set_result(line)
                continue
            if not self.pending:
                continue  # a response nobody waits for cannot happen; ignore rather than crash
            item = self.pending.popleft()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(line)
            else:
                sending, seq, sched = item
                sending.on_response(self, seq, sched, line, now)

    # ---- sending ---------------------------------------------------------------------------------

    def command(self, line: str) -> asyncio.Future[bytes]:
        """Sends a control command; the future gets its raw response line."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            fut.set_exception(ConnectionError(f"client {self.user}: connection closed by the realm"))
            return fut
        self.pending.append(fut)
        self.transport.write(line.encode() + b"\n")
        return fut

    def send_message(self, sending: Sending, sched_ns: int) -> None:
        """Sends one timestamped chat message (pipelined: does not wait for the response)."""
        if self.transport is None or self.transport.is_closing():
            return
        seq = sending.next_seq()
        self.pending.append((sending, seq, sched_ns))
        self.transport.write(b"%st=%d w=%d s=%d p=%d\n" % (self.prefix, sched_ns, sending.wid, seq, sending.phase))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
