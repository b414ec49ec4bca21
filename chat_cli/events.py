"""Events: event lines turned into typed events (models.event_from_wire, plus what only the
client knows: a repeat after a reconnect, a carbon of the user's own message, typing in a
group) and routed to every events() iterator and the on_event callback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from realmchat.seen import SeenIds

from .models import Event, MessageEvent, TypingEvent, event_from_wire

log = logging.getLogger("chat_cli")

# Events kept for the first events() subscriber if nobody listens yet (oldest dropped beyond).
BACKLOG_MAX = 10_000

EventCallback = Callable[[Event], "Awaitable[None] | None"]
"""on_event(event): sync, or async (then run as a task so a slow callback never stalls reading)."""

_END = object()  # ends an events() iterator


def same_name(a: str, b: str) -> bool:
    """Names are unique ignoring case (the protocol)."""
    return a.casefold() == b.casefold()


def typed_event(obj: dict[str, Any], me: str | None, seen: SeenIds) -> Event | None:
    """The typed event of one event line, or None for a line that is no news: the hello (only
    expected at connect) and a message already handed out (`seen` remembers the ids)."""
    if obj.get("event") == "hello":
        return None
    ev = event_from_wire(obj)
    if isinstance(ev, MessageEvent):
        if ev.message.id and not seen.first_sight(ev.message.id):
            return None
        if not ev.message.is_group and me is not None and same_name(ev.message.sender, me):
            # A carbon: sent from another session of ours; it belongs to the chat with `to`.
            ev = dataclasses.replace(ev, own=True)
    elif (isinstance(ev, TypingEvent) and ev.peer and not (me is not None and same_name(ev.peer, me))
          and not same_name(ev.peer, ev.user)):
        ev = dataclasses.replace(ev, group=True)
    return ev


class EventHub:
    """Hands every event to each events() iterator and to the on_event callback. Bounded: with
    no subscriber yet, the newest BACKLOG_MAX wait for the first one."""

    def __init__(self, on_event: EventCallback | None = None) -> None:
        self.on_event = on_event
        self._subscribers: list[asyncio.Queue[Any]] = []
        self._backlog: deque[Event] = deque(maxlen=BACKLOG_MAX)
        self.background: set[asyncio.Task[Any]] = set()

    def subscribe(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if not self._subscribers:
            while self._backlog:
                queue.put_nowait(self._backlog.popleft())
        self._subscribers.append(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Event]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    def emit(self, ev: Event) -> None:
        if self._subscribers:
            for q in self._subscribers:
                q.put_nowait(ev)
        else:
            self._backlog.append(ev)
        if self.on_event is not None:
            try:
                result = self.on_event(ev)
                if inspect.isawaitable(result):
                    self.spawn(result, "on_event")
            except Exception:
                log.exception("on_event callback failed for %r", ev)

    def end(self) -> None:
        """Ends every events() iterator (after the events already queued)."""
        for q in self._subscribers:
            q.put_nowait(_END)

    def spawn(self, aw: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        async def run() -> Any:
            try:
                return await aw
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed", name)
                return None

        task = asyncio.create_task(run(), name=f"chat_cli-{name}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task
