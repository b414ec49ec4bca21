"""Limits on password attempts in main, applied to every path (relayed by a realm or direct
gRPC): per account and per peer address, counted BEFORE the password hash in the same step as
the check (no await in between, so concurrent guesses cannot all pass the check first), and at
most one attempt in flight per account and per peer (a second one is refused at once instead of
queueing behind the slow hash). A relayed call has no peer of its own: the realm limits its
clients per IP, and main limits the account."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from realmchat.errors import ResourceExhausted
from realmchat.names import name_key
from realmchat.ratelimit import AttemptLimiter, Clock, KeyedLocks

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """'10.0.0.0/8,::1' -> networks; '' -> none. Raises ValueError on a malformed entry."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


BUSY = "too many login attempts {what} are waiting: wait for their answers"
# A caller over a limit gets its refusal after this long: refusals are cheap but not free, and a
# client that retries at once would otherwise make main answer thousands of them per second.
TARPIT_S = 1.0


class Throttled(ResourceExhausted):
    """Refused for being over a limit (answered after TARPIT_S, outside any lock)."""


def peer_ip(peer: str) -> str:
    """The address of a grpc peer string ('ipv4:1.2.3.4:5', 'ipv6:[::1]:5'); the whole string
    for other transports (unix sockets); '' for none."""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    return peer


class LoginGuard:
    def __init__(self, account_attempts: int, account_window_s: float, peer_attempts: int,
                 peer_window_s: float, trusted: tuple[IpNetwork, ...] = (),
                 clock: Clock = time.monotonic) -> None:
        self.accounts = AttemptLimiter(account_attempts, account_window_s, clock=clock,
                                       detail="failed logins for this account are limited")
        self.peers = AttemptLimiter(peer_attempts, peer_window_s, clock=clock,
                                    detail="login and register attempts from your address are limited")
        self.trusted = trusted
        self._locks = KeyedLocks()

    def peer_key(self, peer: str) -> str:
        """The key a direct caller counts under; '' (not limited) for relayed calls and trusted nets."""
        ip = peer_ip(peer)
        if not ip or not self.trusted:
            return ip
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        return "" if any(addr in net for net in self.trusted) else ip

    @asynccontextmanager
    async def attempt(self, user: str, peer: str, account: bool = True) -> AsyncIterator[None]:
        """One password attempt: waits while the account or the peer has one in flight, then is
        refused (RESOURCE_EXHAUSTED) if either is out of attempts, else counted at once, before
        the hash (check and count with no await between them)."""
        acct = name_key(user[:64]) if account else ""
        pk = self.peer_key(peer)
        # Always account, then peer: one order, no deadlock.
        try:
            async with (self._locks.hold("a:" + acct if acct else "", BUSY.format(what="for this account")),
                        self._locks.hold("p:" + pk if pk else "", BUSY.format(what="from your address"))):
                try:
                    self.accounts.check(acct)
                    self.peers.check(pk)
                except ResourceExhausted as exc:
                    raise Throttled(exc.message) from None
                self.accounts.fail(acct)
                self.peers.fail(pk)
                yield
        except ResourceExhausted as exc:
            if isinstance(exc, Throttled) or exc.message.startswith("too many login attempts"):
                await asyncio.sleep(TARPIT_S)  # out of the locks: others are not held up
                raise Throttled(exc.message) from None
            raise

    def succeeded(self, user: str, peer: str) -> None:
        """A right password: the account starts afresh and the peer gets its attempt back."""
        self.accounts.reset(name_key(user[:64]))
        self.peers.refund(self.peer_key(peer))
