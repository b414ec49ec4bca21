"""Per-connection and per-address limits of the realm: connections per IP, trusted networks that
are exempt from per-IP limits, and flood control (pacing) of each account's commands. Pure
bookkeeping apart from reading a socket's unread byte count; the connection handler applies it."""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import sys
import termios
from collections import Counter

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """'127.0.0.0/8,::1' -> networks; '' -> none. Raises ValueError on a malformed entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def peer_ip(peername: object) -> str:
    """The IP of an asyncio peername ((host, port) or (host, port, flow, scope)); '' if unknown."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return peername[0]
    return ""


class IpTable:
    """Open connections per IP address. Addresses in trusted networks (by default loopback: a
    local TLS terminator or proxy puts every client behind 127.0.0.1) are exempt."""

    def __init__(self, max_per_ip: int, trusted: tuple[IpNetwork, ...]) -> None:
        self.max_per_ip = max_per_ip
        self.trusted = trusted
        self._open: Counter[str] = Counter()

    def is_trusted(self, ip: str) -> bool:
        if not ip:
            return True  # not an IP socket (nothing to count by)
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:a.b.c.d counts as a.b.c.d
        return any(addr in net or (mapped is not None and mapped in net) for net in self.trusted)

    def open(self, ip: str) -> bool:
        """Counts a new connection; False (not counted) when the address is at its limit."""
        if self.max_per_ip > 0 and not self.is_trusted(ip) and self._open[ip] >= self.max_per_ip:
            return False
        self._open[ip] += 1
        return True

    def close(self, ip: str) -> None:
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]

    def count(self, ip: str) -> int:
        return self._open.get(ip, 0)


class Pacer:
    """Flood control by pacing (IRC "fakelag", as ngIRCd and Solanum do it): every command costs
    one command token and its line's bytes in byte tokens, each bucket refilled at its rate and
    holding at most its burst. A command over the rate is not refused: the bucket goes into debt
    and the caller waits until the debt is paid before running it, and while it waits it reads
    nothing from the client, so TCP pushes back on a client that sends faster. One Pacer is
    shared by all connections of an account (and one per connection before login)."""

    __slots__ = ("byte_burst", "byte_rate", "bytes", "cmd_burst", "cmd_rate", "cmds", "stamp")

    def __init__(self, cmd_rate: float, cmd_burst: int, byte_rate: float, byte_burst: int, now: float) -> None:
        self.cmd_rate, self.cmd_burst = cmd_rate, float(max(cmd_burst, 1))
        self.byte_rate, self.byte_burst = byte_rate, float(max(byte_burst, 1))
        self.cmds, self.bytes = self.cmd_burst, self.byte_burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            dt = now - self.stamp
            self.cmds = min(self.cmd_burst, self.cmds + dt * self.cmd_rate)
            self.bytes = min(self.byte_burst, self.bytes + dt * self.byte_rate)
            self.stamp = now

    def delay(self, now: float, nbytes: int) -> float:
        """Charges one command of nbytes now; the seconds to wait before running it (0: at once)."""
        self._refill(now)
        wait = 0.0
        if self.cmd_rate > 0:
            self.cmds -= 1
            if self.cmds < 0:
                wait = -self.cmds / self.cmd_rate
        if self.byte_rate > 0:
            self.bytes -= nbytes
            if self.bytes < 0:
                wait = max(wait, -self.bytes / self.byte_rate)
        return wait

    def idle(self, now: float) -> bool:
        """Both buckets are full: the pacer remembers nothing and may be dropped."""
        self._refill(now)
        return ((self.cmd_rate <= 0 or self.cmds >= self.cmd_burst)
                and (self.byte_rate <= 0 or self.bytes >= self.byte_burst))


def unread_bytes(buffered: int, transport: asyncio.BaseTransport) -> int:
    """What the client has sent that the realm has not read yet: `buffered` (read from the
    socket, not yet parsed) plus the kernel's receive queue (FIONREAD). -1 if unknown."""
    n = buffered
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        return n
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):  # ValueError: the socket closed meanwhile (descriptor -1)
        return n
    return n + int.from_bytes(buf, sys.byteorder, signed=True)
