"""Rate limits shared by the realm (commands per session, password attempts per IP) and the main
server (failed logins per account). Pure: time comes from a clock function, so tests can drive it.

A token bucket allows `burst` events at once and `rate` per second after that. An attempt limiter
is a token bucket per key (an account, an IP address) with bounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from .errors import ResourceExhausted

Clock = Callable[[], float]


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` tokens per second. rate <= 0 means unlimited."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Takes n tokens if there are that many; False (and nothing taken) otherwise."""
        if self.unlimited:
            return True
        self._refill(now)
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_s(self, now: float, n: float = 1.0) -> float:
        """Seconds until n tokens are there (0 if they already are)."""
        if self.unlimited:
            return 0.0
        self._refill(now)
        return max(0.0, (n - self.tokens) / self.rate)

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


class AttemptLimiter:
    """At most `max_attempts` attempts per key at once, refilled so that `max_attempts` more are
    allowed per `window_s` (a token bucket per key). Callers check() before the expensive work
    (a password hash) and fail() when the attempt counts against the key.

    Memory is bounded: buckets that have refilled are forgotten, and past `max_keys` the oldest
    keys are dropped (an attacker with that many keys only resets its own oldest buckets)."""

    def __init__(self, max_attempts: int, window_s: float, max_keys: int = 100_000,
                 clock: Clock = time.monotonic, detail: str = "") -> None:
        self.max_attempts = max_attempts
        self.rate = max_attempts / window_s if max_attempts > 0 and window_s > 0 else 0.0
        self.max_keys = max_keys
        self.clock = clock
        self.detail = detail
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def retry_after(self, key: str) -> float:
        """Seconds until the key may try again (0: it may now)."""
        b = self._buckets.get(key)
        return b.wait_s(self.clock()) if b is not None else 0.0

    def check(self, key: str) -> None:
        """Raises RESOURCE_EXHAUSTED 'too many attempts, wait N s' while the key has none left.
        The empty key is never limited (callers use it for exempt sources)."""
        if not self.enabled or not key:
            return
        wait = self.retry_after(key)
        if wait > 0:
            raise ResourceExhausted(f"too many attempts, wait {math.ceil(wait)} s"
                                    + (f" ({self.detail})" if self.detail else ""))

    def fail(self, key: str) -> None:
        """Counts one attempt against the key."""
        if not self.enabled or not key:
            return
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = TokenBucket(self.rate, self.max_attempts, now)
        b.take(now)

    def refund(self, key: str) -> None:
        """Gives one attempt back to the key (it turned out not to count)."""
        b = self._buckets.get(key)
        if b is not None:
            b.tokens = min(b.burst, b.tokens + 1.0)

    def reset(self, key: str) -> None:
        """Forgets the key's attempts (after a successful login)."""
        self._buckets.pop(key, None)

    def _prune(self, now: float) -> None:
        for k in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[k]
        excess = len(self._buckets) - self.max_keys + 1
        if excess > 0:
            for k in list(self._buckets)[:excess]:
                del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


class KeyedLocks:
    """One asyncio lock per key, for "at most one attempt in flight per account / per address":
    a second attempt waits for the first one's answer (and is then checked against the limits
    that answer may have used up). Memory is bounded: a key's lock goes away with its last
    holder, and past `max_waiting` waiters on one key a new one is refused at once."""

    def __init__(self, max_waiting: int = 64) -> None:
        self.max_waiting = max_waiting
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, busy_message: str) -> AsyncIterator[None]:
        """Holds the key's lock; the empty key is never locked."""
        if not key:
            yield
            return
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        if users[0] >= self.max_waiting:
            raise ResourceExhausted(busy_message)
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
