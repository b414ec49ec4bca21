"""Routing and presence. A channel is one event stream: a realm's link (carrying events for every
session the realm opened) or one grpcurl subscriber. Sessions attach to channels; an event for
some users becomes one Event per channel listing that channel's target sessions, so a message
to many users on one realm crosses the wire once. What each event carries for delivery is the
tracker's business: the delivery desk (main_server/domain/delivery.py) follows every channel,
session and push the hub tells it of."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import wire
from .events import Event
from .metrics import CHANNELS, EVENT_QUEUE, SESSIONS

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """What the hub tells delivery: channels opening and closing, sessions leaving them, and
    every push, which gets its seq from the tracker."""

    def channel_opened(self, channel_id: str, realm: str) -> None: ...

    def channel_closed(self, channel_id: str) -> None: ...

    def session_left(self, channel_id: str, session_id: int) -> None: ...

    def record(self, channel_id: str, targets: dict[int, str], entries: dict[str, list[int]]) -> int:
        """A push about to be queued; returns its seq. Its entries are one message's: every
        user's id list is the same one."""
        ...

    def backlog(self, channel_id: str) -> int:
        """Pushes on the channel not yet reported written or dropped."""
        ...


class PresenceObserver(Protocol):
    def attached(self, session_id: int, user_name: str, realm: str) -> None: ...

    def detached(self, session_id: int) -> None: ...


@dataclass(slots=True)
class Outgoing:
    event: wire.PbEvent  # its seq is set: the tracker knows what it carries
    size: int  # serialized bytes, to bound a stream message
    queued: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Channel:
    id: str
    realm: str
    max_queue: int
    queue: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)
    sessions: dict[int, str] = field(default_factory=dict)  # session id -> user key
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Hub:
    def __init__(self, max_queue: int = 100_000) -> None:
        self.max_queue = max_queue
        self.channels: dict[str, Channel] = {}
        self.tracker: Tracker | None = None  # set by the delivery desk before any channel opens
        self._online: dict[str, dict[int, Channel]] = {}  # user key -> {session id: channel}
        self._names: dict[str, str] = {}
        self.observer: PresenceObserver | None = None  # other replicas, told of (de)attachments
        # A user's first session attached here (online=True, with its realm) or their last one
        # left (online=False): the service turns it into presence events.
        self.on_presence: Callable[[str, str, str, bool], None] = lambda user_key, name, realm, online: None
        SESSIONS.set_function(lambda: sum(len(ch.sessions) for ch in list(self.channels.values())))
        CHANNELS.set_function(lambda: len(self.channels))
        EVENT_QUEUE.set_function(lambda: sum(ch.queue.qsize() for ch in list(self.channels.values())))

    def open_channel(self, realm: str) -> Channel:
        ch = Channel(id=secrets.token_urlsafe(18), realm=realm, max_queue=self.max_queue)
        self.channels[ch.id] = ch
        self._tracker.channel_opened(ch.id, ch.realm)
        return ch

    @property
    def _tracker(self) -> Tracker:
        if self.tracker is None:
            raise RuntimeError("the hub has no delivery tracker")
        return self.tracker

    def close_channel(self, ch: Channel) -> None:
        """Detaches every session of the channel; what it never wrote stays undelivered."""
        ch.close()
        self.channels.pop(ch.id, None)
        for sid, user_key in list(ch.sessions.items()):
            self.detach(sid, user_key)
        while not ch.queue.empty():
            ch.queue.get_nowait()
        self._tracker.channel_closed(ch.id)

    def attach(self, ch: Channel, session_id: int, user_key: str, user_name: str) -> None:
        # A session lives on one channel at a time: a realm reconnect moves it.
        self.detach(session_id, user_key)
        ch.sessions[session_id] = user_key
        first = user_key not in self._online
        self._online.setdefault(user_key, {})[session_id] = ch
        self._names[user_key] = user_name
        if self.observer is not None:
            self.observer.attached(session_id, user_name, ch.realm)
        if first:
            self.on_presence(user_key, user_name, ch.realm, True)

    def detach(self, session_id: int, user_key: str) -> None:
        sessions = self._online.get(user_key)
        if not sessions:
            return
        ch = sessions.pop(session_id, None)
        if ch is not None:
            ch.sessions.pop(session_id, None)
            self._tracker.session_left(ch.id, session_id)
            if self.observer is not None:
                self.observer.detached(session_id)
        if not sessions:
            del self._online[user_key]
            name = self._names.pop(user_key, user_key)
            self.on_presence(user_key, name, "", False)

    def channel_of(self, session_id: int, user_key: str) -> Channel | None:
        return self._online.get(user_key, {}).get(session_id)

    def is_online(self, user_key: str) -> bool:
        return user_key in self._online

    def realm_of(self, user_key: str) -> str:
        """The realm of one of the user's sessions here ('' if none)."""
        sessions = self._online.get(user_key)
        return next(iter(sessions.values())).realm if sessions else ""

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

    def push(self, user_keys: list[str], event: Event, exclude_session: int = 0,
             message_id: int = 0, track: frozenset[str] = frozenset()) -> None:
        """Queues one event per channel for the users' sessions (except exclude_session). Users
        in `track` have an undelivered entry for message_id: the tracker follows it. The event
        becomes protobuf once, however many channels get it."""
        per_channel: dict[Channel, dict[int, str]] = {}
        for u in user_keys:
            sessions = self._online.get(u)
            if not sessions:
                continue
            for sid, ch in sessions.items():
                if sid != exclude_session and not ch.closed:
                    targets = per_channel.get(ch)
                    if targets is None:
                        targets = per_channel[ch] = {}
                    targets[sid] = u
        template = None
        tracker = self._tracker
        for ch, targets in per_channel.items():
            if ch.queue.qsize() + tracker.backlog(ch.id) >= ch.max_queue:
                # The realm does not keep up: drop its stream (it relinks; what it missed stayed
                # undelivered and is pushed again on resume).
                log.warning("channel %s (%s) overloaded: closing it", ch.id[:8], ch.realm)
                self.close_channel(ch)
                continue
            # One id list shared by every user (the tracker never changes it).
            entries = (dict.fromkeys(track.intersection(targets.values()), [message_id])  # noqa: RUF024
                       if message_id and track else {})
            if template is None:
                template = wire.event_template(event)
            ev = wire.channel_event(template, list(targets), tracker.record(ch.id, targets, entries))
            ch.queue.put_nowait(Outgoing(ev, ev.ByteSize()))
