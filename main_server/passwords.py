"""Password hashing with argon2id, off the event loop and with bounded concurrency (each hash
takes memory_kib of RAM, so a login flood cannot take the box's memory)."""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from realmchat.errors import ResourceExhausted

BUSY = "the server is busy checking passwords: try again in a few seconds"


class PasswordHasher:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 1,
                 concurrency: int = 2, max_queue: int = 32) -> None:
        self._ph = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                         parallelism=parallelism)
        self._sem = asyncio.Semaphore(concurrency)
        # Hashes waiting or running. Past max_queue a request fails fast (RESOURCE_EXHAUSTED)
        # instead of queueing behind a flood; registrations may fill only half of it, so a
        # registration flood never stalls logins.
        self.max_queue = max_queue
        self.pending = 0
        # Verified against for unknown users, so both failures take the same time.
        self._dummy = self._ph.hash("realmchat-dummy-password")

    def _enter(self, limit: int) -> None:
        if 0 < self.max_queue and limit <= self.pending:
            raise ResourceExhausted(BUSY)
        self.pending += 1

    async def hash(self, password: str) -> str:
        self._enter(max(self.max_queue // 2, 1))
        try:
            async with self._sem:
                return await asyncio.to_thread(self._ph.hash, password)
        finally:
            self.pending -= 1

    async def verify(self, pw_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._ph.verify(pw_hash or self._dummy, password) and pw_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        self._enter(self.max_queue)
        try:
            async with self._sem:
                return await asyncio.to_thread(check)
        finally:
            self.pending -= 1
