"""A bounded memory of message ids already handed out: the realm per connection and chat_cli per
client drop a repeat (a message that came back after a relink or a realm's crash)."""

from __future__ import annotations

from collections import deque


class SeenIds:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def first_sight(self, msg_id: int) -> bool:
        """True the first time msg_id is seen (among the last `capacity` ids)."""
        if msg_id in self._ids:
            return False
        self._ids.add(msg_id)
        self._order.append(msg_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        self._ids.clear()
        self._order.clear()
