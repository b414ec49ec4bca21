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
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from realmchat.errors import ResourceExhausted
from realmchat.names import name_key
from realmchat.ratelimit import AttemptLimiter, Clock, KeyedLocks

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """'10.0.0.0/8,::1' -> networks; '' -> none. Raises ValueError on a malformed entry."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip())


BUSY = "too many login attempts {what} are waiting: wait for their answers"
BUSY_KEY = "too many group keys tried {what} are waiting: wait for their answers"
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


class _GuessLimits:
    """Two attempt limits checked together (who guesses, and at what or from where), counted
    before the slow hash in the same step as the check, with at most one attempt in flight per
    key of each: what passwords and group keys share."""

    def __init__(self, first: AttemptLimiter, second: AttemptLimiter, busy: tuple[str, str]) -> None:
        self.first, self.second, self.busy = first, second, busy
        self._locks = KeyedLocks()

    @asynccontextmanager
    async def attempt(self, first: str, second: str) -> AsyncIterator[None]:
        # Always first, then second: one order, no deadlock.
        try:
            async with (self._locks.hold("a:" + first if first else "", self.busy[0]),
                        self._locks.hold("b:" + second if second else "", self.busy[1])):
                try:
                    self.first.check(first)
                    self.second.check(second)
                except ResourceExhausted as exc:
                    raise Throttled(exc.message) from None
                self.first.fail(first)
                self.second.fail(second)
                yield
        except ResourceExhausted as exc:
            if isinstance(exc, Throttled) or exc.message in self.busy:
                await asyncio.sleep(TARPIT_S)  # out of the locks: others are not held up
                raise Throttled(exc.message) from None
            raise

    def succeeded(self, first: str, second: str) -> None:
        """A right guess: the first key starts afresh and the second gets its attempt back."""
        self.first.reset(first)
        self.second.refund(second)


class LoginGuard:
    def __init__(self, account_attempts: int, account_window_s: float, peer_attempts: int,
                 peer_window_s: float, trusted: tuple[IpNetwork, ...] = (),
                 clock: Clock = time.monotonic) -> None:
        self.accounts = AttemptLimiter(account_attempts, account_window_s, clock=clock,
                                       detail="failed logins for this account are limited")
        self.peers = AttemptLimiter(peer_attempts, peer_window_s, clock=clock,
                                    detail="login and register attempts from your address are limited")
        self.trusted = trusted
        self._limits = _GuessLimits(self.accounts, self.peers, (BUSY.format(what="for this account"),
                                                                BUSY.format(what="from your address")))

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

    def attempt(self, user: str, peer: str, account: bool = True) -> AbstractAsyncContextManager[None]:
        """One password attempt: waits while the account or the peer has one in flight, then is
        refused (RESOURCE_EXHAUSTED) if either is out of attempts, else counted at once, before
        the hash (check and count with no await between them)."""
        return self._limits.attempt(name_key(user[:64]) if account else "", self.peer_key(peer))

    def succeeded(self, user: str, peer: str) -> None:
        """A right password: the account starts afresh and the peer gets its attempt back."""
        self._limits.succeeded(name_key(user[:64]), self.peer_key(peer))


class GroupKeyGuard:
    """Limits on group keys tried (joingroup GROUP KEY): per account that tries and per group
    tried, like passwords (each try costs main an argon2 hash and tells a guesser something).
    The group's limit is wider: many accounts guessing one group are held back without a single
    one locking everybody out at once."""

    def __init__(self, attempts: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self._limits = _GuessLimits(
            AttemptLimiter(attempts, window_s, clock=clock, detail="group keys tried by your account are limited"),
            AttemptLimiter(attempts * 5, window_s, clock=clock, detail="keys tried for this group are limited"),
            (BUSY_KEY.format(what="by your account"), BUSY_KEY.format(what="for this group")))

    def attempt(self, user_key: str, group_key: str) -> AbstractAsyncContextManager[None]:
        return self._limits.attempt(user_key, group_key)

    def succeeded(self, user_key: str, group_key: str) -> None:
        self._limits.succeeded(user_key, group_key)
