"""Password hashing with argon2id, off the event loop and with bounded concurrency (each hash
takes memory_kib of RAM, so a login flood cannot take the box's memory)."""

from __future__ import annotations

import asyncio

import argon2
from argon2.exceptions import InvalidHashError, VerificationError


class PasswordHasher:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 1,
                 concurrency: int = 2) -> None:
        self._ph = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                         parallelism=parallelism)
        self._sem = asyncio.Semaphore(concurrency)
        # Verified against for unknown users, so both failures take the same time.
        self._dummy = self._ph.hash("realmchat-dummy-password")

    async def hash(self, password: str) -> str:
        async with self._sem:
            return await asyncio.to_thread(self._ph.hash, password)

    async def verify(self, pw_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._ph.verify(pw_hash or self._dummy, password) and pw_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        async with self._sem:
            return await asyncio.to_thread(check)
