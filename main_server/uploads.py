"""Uploads running at once, per user and in total: each holds a temp file, a disk reservation
and a stream, so a user (or everyone together) cannot open them without bound."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from realmchat.errors import ResourceExhausted


class UploadSlots:
    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._by_user: Counter[str] = Counter()
        self._running = 0

    def check(self, user_key: str) -> None:
        """Raises RESOURCE_EXHAUSTED, saying why, if the user could not start an upload now."""
        if self.per_user > 0 and self._by_user[user_key] >= self.per_user:
            raise ResourceExhausted(f"too many uploads at once: at most {self.per_user} per user; "
                                    "wait for one to finish")
        if self.total > 0 and self._running >= self.total:
            raise ResourceExhausted(f"the server is busy with {self.total} uploads: try again in a moment")

    @contextmanager
    def slot(self, user_key: str) -> Iterator[None]:
        self.check(user_key)
        self._by_user[user_key] += 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._by_user[user_key] -= 1
            if self._by_user[user_key] <= 0:
                del self._by_user[user_key]
