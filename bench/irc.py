"""The generator's IRC client, for the peer comparison (`--peer ngircd`): the same job as
bench.client.Client, spoken in IRC (RFC 2812) instead of the realm text protocol.

A chat message is "PRIVMSG <partner> :t=<scheduled ns> w=<sender worker> s=<seq> p=<phase>",
the same text as ours, so the receiving process times it the same way (scheduled send -> line
read at the recipient, one CLOCK_MONOTONIC for every generator process).

IRC answers nothing to a PRIVMSG that went through, so there is no OK: a message counts as
"acked" when it is written (IRC promises no more; whatever is not received is reported lost),
and the closed loop bounds messages sent but not yet received by their recipient. Each client's
partner lives in the same generator process (bench.peer places them so), so the receipt frees
the sender's slot directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import cast

from .client import Sending

# ":nick!user@host PRIVMSG target :t=... w=... s=... p=..."
PRIVMSG_RE = re.compile(rb"^:[^ ]+ PRIVMSG [^ ]+ :t=(\d+) w=(\d+) s=(\d+) p=(\d+)")
# ":server 401 me target :No such nick": any 4xx/5xx numeric is an error reply
NUMERIC_RE = re.compile(rb"^:[^ ]+ ([0-9]{3}) ")
WELCOME = b"001"
END_OF_MOTD = (b"376", b"422")  # end of MOTD / no MOTD: registration output is complete


class IrcClient(asyncio.Protocol):
    """One registered IRC connection: answers PINGs, reports PRIVMSGs carrying a timestamp,
    counts error numerics against the phase it is sending in."""

    def __init__(self, cid: int, nick: str, on_message: Callable[[IrcClient, re.Match[bytes], int], None]) -> None:
        self.cid = cid
        self.user = nick
        self.on_message = on_message
        self.prefix = b""  # b"PRIVMSG partner :"
        self.partner: IrcClient | None = None  # the client that receives this one's messages
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        loop = asyncio.get_running_loop()
        self.hello: asyncio.Future[bytes] = loop.create_future()  # resolved once registered
        self.closed: asyncio.Future[None] = loop.create_future()
        self.sending: Sending | None = None  # the phase of the last message sent
        self.errors: list[bytes] = []  # error numerics outside a phase (registration)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"NICK %s\r\nUSER %s 0 * :bench\r\n" % (self.user.encode(), self.user.encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"irc client {self.user}: connection lost ({exc}) "
                                                     f"before registration; {self.errors[:1]}"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.rest:
            data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            line = line.rstrip(b"\r")
            m = PRIVMSG_RE.match(line)
            if m is not None:
                self.on_message(self, m, now)
                continue
            if line.startswith(b"PING "):
                assert self.transport is not None
                self.transport.write(b"PONG " + line[5:] + b"\r\n")
                continue
            n = NUMERIC_RE.match(line)
            if n is not None:
                code = n.group(1)
                if code in END_OF_MOTD and not self.hello.done():
                    self.hello.set_result(line)
                elif code[:1] in b"45":
                    self.error(line)
            elif line.startswith(b"ERROR "):
                self.error(line)

    def error(self, line: bytes) -> None:
        s = self.sending
        if s is not None:
            # In a phase, the only commands are PRIVMSGs: this one was answered, with an error
            # (401 no such nick...), and will not be received either.
            s.errors += 1
            s.in_flight -= 1
            if len(s.error_samples) < 5:
                s.error_samples.append(line.decode(errors="replace")[:300])
            if s.in_flight <= 0:
                s.idle.set()
        else:
            self.errors.append(line)
        if not self.hello.done():
            self.hello.set_exception(RuntimeError(f"irc client {self.user}: {line.decode(errors='replace')}"))

    def send_message(self, sending: Sending, sched_ns: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.sending = sending
        seq = sending.next_seq()
        sending.written(seq)
        self.transport.write(b"%st=%d w=%d s=%d p=%d\r\n" % (self.prefix, sched_ns, sending.wid, seq, sending.phase))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.write(b"QUIT\r\n")
            self.transport.close()
