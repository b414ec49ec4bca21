"""Presence and push. A channel is one event stream: a realm's link (carrying events for every
session the realm opened) or one grpcurl subscriber. Sessions attach to channels; an event for
some users becomes one Event per channel listing that channel's target sessions, so a message
to many users on one realm crosses the wire once."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from realmchat.pb import chat_pb2 as pb

from .metrics import CHANNELS, EVENT_QUEUE, SESSIONS

log = logging.getLogger(__name__)


class PresenceObserver(Protocol):
    def attached(self, session_id: int, user_name: str, realm: str) -> None: ...

    def detached(self, session_id: int) -> None: ...


@dataclass(slots=True)
class Outgoing:
    event: pb.Event
    message_id: int = 0  # 0: nothing to mark delivered (file events)
    # Users this event delivers the message to: marked delivered once it is sent.
    users: list[str] = field(default_factory=list)
    queued: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Channel:
    id: str
    realm: str
    max_queue: int
    queue: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)
    sessions: dict[int, str] = field(default_factory=dict)  # session id -> user key
    closed: bool = False
    # Realm links acknowledge what they received: batch seq -> its events, until acknowledged.
    seq: int = 0
    unacked: dict[int, list[Outgoing]] = field(default_factory=dict)
    unacked_events: int = 0

    def put(self, item: Outgoing) -> bool:
        if self.closed:
            return False
        if self.queue.qsize() + self.unacked_events >= self.max_queue:
            # The realm does not keep up: drop its stream (it reconnects and its sessions get
            # what they missed: it stayed undelivered).
            log.warning("channel %s (%s) overloaded: closing it", self.id[:8], self.realm)
            self.close()
            return False
        self.queue.put_nowait(item)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Hub:
    def __init__(self, max_queue: int = 100_000) -> None:
        self.max_queue = max_queue
        self.channels: dict[str, Channel] = {}
        self._online: dict[str, dict[int, Channel]] = {}  # user key -> {session id: channel}
        self._names: dict[str, str] = {}
        # user key -> {message id: events queued or sent but not yet marked delivered}; inbox
        # skips these so a message is never both pushed and returned by inbox.
        self._inflight: dict[str, dict[int, int]] = {}
        self.observer: PresenceObserver | None = None  # other replicas, told of (de)attachments
        SESSIONS.set_function(lambda: sum(len(ch.sessions) for ch in list(self.channels.values())))
        CHANNELS.set_function(lambda: len(self.channels))
        EVENT_QUEUE.set_function(lambda: sum(ch.queue.qsize() for ch in list(self.channels.values())))

    def open_channel(self, realm: str) -> Channel:
        ch = Channel(id=secrets.token_urlsafe(18), realm=realm, max_queue=self.max_queue)
        self.channels[ch.id] = ch
        return ch

    def close_channel(self, ch: Channel) -> None:
        """Detaches every session of the channel; what it never sent stays undelivered."""
        ch.close()
        self.channels.pop(ch.id, None)
        for sid, user_key in list(ch.sessions.items()):
            self.detach(sid, user_key)
        while not ch.queue.empty():
            item = ch.queue.get_nowait()
            if item is not None:
                self.settle(item)
        for items in ch.unacked.values():  # sent, but never acknowledged: still undelivered
            for item in items:
                self.settle(item)
        ch.unacked.clear()

    def attach(self, ch: Channel, session_id: int, user_key: str, user_name: str) -> None:
        # A session lives on one channel at a time: a realm reconnect moves it.
        self.detach(session_id, user_key)
        ch.sessions[session_id] = user_key
        self._online.setdefault(user_key, {})[session_id] = ch
        self._names[user_key] = user_name
        if self.observer is not None:
            self.observer.attached(session_id, user_name, ch.realm)

    def detach(self, session_id: int, user_key: str) -> None:
        sessions = self._online.get(user_key)
        if not sessions:
            return
        ch = sessions.pop(session_id, None)
        if ch is not None:
            ch.sessions.pop(session_id, None)
            if self.observer is not None:
                self.observer.detached(session_id)
        if not sessions:
            del self._online[user_key]
            self._names.pop(user_key, None)

    def is_online(self, user_key: str) -> bool:
        return user_key in self._online

    def inflight(self, user_key: str) -> frozenset[int]:
        return frozenset(self._inflight.get(user_key, ()))

    def settle(self, item: Outgoing) -> None:
        """The event was sent (and is being marked delivered) or dropped: no longer in flight."""
        for u in item.users:
            ids = self._inflight.get(u)
            if ids is None:
                continue
            n = ids.get(item.message_id, 0) - 1
            if n > 0:
                ids[item.message_id] = n
            else:
                ids.pop(item.message_id, None)
                if not ids:
                    del self._inflight[u]

    def local_sessions(self) -> list[tuple[int, str, str]]:
        """(session id, user key, user name) of every attached session."""
        return [(sid, u, self._names.get(u, u)) for u, sessions in list(self._online.items()) for sid in sessions]

    def local_presence(self) -> list[tuple[int, str, str]]:
        return [(sid, self._names.get(u, u), ch.realm) for u, sessions in list(self._online.items())
                for sid, ch in sessions.items()]

    def who(self, remote: set[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        out: set[tuple[str, str]] = set(remote or ())
        for user_key, sessions in list(self._online.items()):
            name = self._names.get(user_key, user_key)
            for ch in sessions.values():
                out.add((name, ch.realm))
        return sorted(out, key=lambda p: (p[0].lower(), p[1]))

    def push(self, user_keys: list[str], fill: Callable[[pb.Event], None], exclude_session: int = 0,
             message_id: int = 0, track: frozenset[str] = frozenset()) -> None:
        """Queues one event per channel for the users' sessions (except exclude_session). Users
        in `track` have an undelivered entry for message_id, marked once the event is sent."""
        per_channel: dict[Channel, tuple[list[int], list[str]]] = {}
        for u in user_keys:
            sessions = self._online.get(u)
            if not sessions:
                continue
            for sid, ch in sessions.items():
                if sid == exclude_session or ch.closed:
                    continue
                sids, users = per_channel.setdefault(ch, ([], []))
                sids.append(sid)
                if u in track and (not users or users[-1] != u):
                    users.append(u)
        for ch, (sids, users) in per_channel.items():
            ev = pb.Event(session_ids=sids)
            fill(ev)
            for u in users:
                ids = self._inflight.setdefault(u, {})
                ids[message_id] = ids.get(message_id, 0) + 1
            item = Outgoing(ev, message_id, users)
            if not ch.put(item):
                self.settle(item)
