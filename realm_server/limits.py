"""Per-connection and per-address limits of the realm: connections per IP, trusted networks that
are exempt from per-IP limits, and flood control of each session's commands. Pure bookkeeping
(no I/O); the realm's connection handler applies the verdicts."""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter

from realmchat.ratelimit import TokenBucket

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


class Verdict(enum.Enum):
    RUN = "run"        # within the rate: run the command
    REFUSE = "refuse"  # over the rate: answer RESOURCE_EXHAUSTED, keep the connection
    KICK = "kick"      # sustained abuse: disconnect


class FloodGuard:
    """Flood control of one session: commands come out of a token bucket (`rate` per second,
    `burst` at once). A command over the rate is refused; each refusal takes a strike from a
    second bucket (`strikes` at once, refilled over `strike_window_s`), and a session that runs
    out of strikes keeps flooding after being told to stop: it is disconnected."""

    def __init__(self, rate: float, burst: int, strikes: int, now: float, strike_window_s: float = 10.0) -> None:
        self.commands = TokenBucket(rate, burst, now)
        self.strikes = TokenBucket(strikes / strike_window_s if strikes > 0 else 0.0, strikes, now)
        self.kick_enabled = strikes > 0

    def admit(self, now: float) -> Verdict:
        if self.commands.take(now):
            return Verdict.RUN
        if self.kick_enabled and not self.strikes.take(now):
            return Verdict.KICK
        return Verdict.REFUSE

    def retry_after(self, now: float) -> float:
        return self.commands.wait_s(now)
