"""Delivery: live pushes of messages, what is pending for a session that (re)attaches, the
realm's acks, and the persistence of what the ledger decided. It owns the delivery ledger
(main_server/ledger.py) and is its only caller: the hub tells it of channels, sessions and
pushes as its Tracker."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from realmchat.errors import Unauthenticated, Unavailable

from .. import events
from ..config import MainConfig
from ..hub import Channel, Hub
from ..ledger import Entry, Ledger, Outcome
from ..storage.base import MessageRecord, Storage
from .accounts import Caller
from .notify import Notify

log = logging.getLogger(__name__)

REPUSH_DELAY_S = 0.05
PUSH_PENDING_MAX_BYTES = 32 * 1024  # well under any realm's per-connection send queue
RELINKING = "the realm is reconnecting to the main server; try again shortly"


@dataclass(frozen=True, slots=True)
class Page:
    """Messages for a reply. `delivery` (seq on link `delivery_link`): the realm reports back
    whether it wrote them to the client; until then they stay undelivered."""

    messages: list[MessageRecord]
    more: bool = False
    delivery: int = 0
    delivery_link: str = ""


def fit_bytes(msgs: list[MessageRecord], max_bytes: int, newest: bool = False) -> tuple[list[MessageRecord], bool]:
    """The oldest (or newest) messages whose encoded size stays under max_bytes (always at least
    one), so that no reply comes near the transport's message cap; and whether any were cut."""
    total = 0
    kept: list[MessageRecord] = []
    for m in reversed(msgs) if newest else msgs:
        size = len(m.text.encode()) + len(m.sender) + len(m.to) + len(m.group) + len(m.ts) + 32
        if kept and total + size > max_bytes:
            break
        total += size
        kept.append(m)
    return (kept[::-1] if newest else kept), len(kept) < len(msgs)


# What an inbox page reads from storage: skip (ids in flight) -> (messages, more beyond them).
PeekPage = Callable[[frozenset[int]], Awaitable[tuple[list[MessageRecord], bool]]]


class Delivery:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, notify: Notify) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.notify = notify
        self._delivered: list[Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._returned: set[str] = set()  # users with entries back in undelivered
        self._repusher: asyncio.Task[None] | None = None
        self._direct_calls = itertools.count(1)
        self.ledger = Ledger()
        hub.tracker = self

    # ---- what the hub tells (hub.Tracker) ----------------------------------------------------

    def channel_opened(self, channel_id: str) -> None:
        self.ledger.open(channel_id)

    def channel_closed(self, channel_id: str) -> None:
        """What the channel never wrote goes back to undelivered."""
        self._on_outcome(self.ledger.close(channel_id))

    def session_left(self, channel_id: str, session_id: int) -> None:
        self._on_outcome(self.ledger.session_closed(channel_id, session_id))

    def record(self, channel_id: str, targets: dict[int, str], entries: dict[str, list[int]]) -> int:
        return self.ledger.record(channel_id, targets, entries)

    def backlog(self, channel_id: str) -> int:
        return self.ledger.pending(channel_id)

    # ---- pushes ------------------------------------------------------------------------------

    def push_message(self, m: MessageRecord, users: list[str], track: set[str] | frozenset[str] | list[str],
                     exclude_session: int, publish: bool = True, mentioned: Iterable[str] = ()) -> None:
        named = set(mentioned)
        # Users the text names get the message flagged ("mention": true): a push of its own.
        plain, flagged = [u for u in users if u not in named], [u for u in users if u in named]
        for group_users, flag in ((plain, None), (flagged, True)):
            if not group_users:
                continue
            event = events.GroupMessage(m, flag) if m.group else events.PrivateMessage(m, flag)
            self.hub.push(group_users, event, exclude_session, m.id, frozenset(track))
        if publish and (cluster := self.notify.cluster) is not None:
            cluster.publish_message(m.id, users, list(track), exclude_session, named)

    async def push_pending(self, user_key: str) -> None:
        """Pushes the user's undelivered messages to their attached sessions, as if live: a
        resumed session (what arrived while its realm was cut off) or a user whose delivery was
        dropped while they still have a connection. Nothing in flight is pushed twice."""
        ledger = self.ledger
        ledger.begin_read(user_key)
        msgs: list[MessageRecord] = []
        try:
            msgs = await self.storage.peek_pending(user_key, self.config.inbox_page)
        finally:
            fresh = set(ledger.end_read(user_key, [m.id for m in msgs]))
        # A bounded burst: a connection's send queue must not overflow on it (what is left waits
        # for inbox, which pages).
        for m in fit_bytes([m for m in msgs if m.id in fresh], PUSH_PENDING_MAX_BYTES)[0]:
            self.push_message(m, [user_key], {user_key}, exclude_session=0, publish=False)

    async def on_message_notice(self, local: list[str], msg_id: int, track: list[str], exclude_session: int,
                                mentioned: Iterable[str]) -> None:
        """Another replica stored a message for users attached here."""
        for m in await self.storage.get_messages([msg_id]):
            self.push_message(m, local, [u for u in track if u in local], exclude_session, publish=False,
                              mentioned=mentioned)

    async def push_all_pending(self) -> None:
        """Pushes every attached session's undelivered messages (another replica died and may
        have stored messages for them that it never announced). Realms drop repeats."""
        for user_key in {u for _, u, _ in self.hub.local_sessions()}:
            await self.push_pending(user_key)

    async def resume(self, tokens: list[str], channel: Channel,
                     caller: Callable[[str], Awaitable[Caller]]) -> list[int]:
        """Attaches the sessions of the tokens a relinking realm names, and pushes what waits."""
        ids: list[int] = []
        for token in tokens:
            try:
                c = await caller(token)
            except Unauthenticated:
                ids.append(0)
                continue
            self.hub.attach(channel, c.session.id, c.session.user_key, c.session.user_name)
            ids.append(c.session.id)
            await self.push_pending(c.session.user_key)
        return ids

    # ---- inbox pages -------------------------------------------------------------------------

    async def inbox_page(self, caller: Caller, peek: PeekPage) -> Page:
        """A page of undelivered messages. Through a realm, its entries stay undelivered until the
        realm reports the response written (the page is a delivery on the session's link);
        answered directly (grpcurl), they are delivered as the page is returned."""
        sid, user = caller.session.id, caller.session.user_key
        if caller.via_realm and self.hub.channel_of(sid, user) is None:
            raise Unavailable(RELINKING)
        ledger = self.ledger
        ledger.begin_read(user)
        msgs: list[MessageRecord] = []
        try:
            msgs, more = await peek(ledger.in_flight(user))
        finally:
            fresh = set(ledger.end_read(user, [m.id for m in msgs]))
        page, cut = fit_bytes([m for m in msgs if m.id in fresh], self.config.reply_max_bytes)
        ids = [m.id for m in page]
        if caller.via_realm:
            channel = self.hub.channel_of(sid, user)
            if channel is None:  # the link closed while storage answered
                raise Unavailable(RELINKING)
            seq = ledger.record(channel.id, {sid: user}, {user: ids} if ids else {})
            return Page(page, more or cut, seq, channel.id)
        link = f"call-{next(self._direct_calls)}"
        ledger.open(link)
        self._on_outcome(ledger.written(link, ledger.record(link, {sid: user}, {user: ids}), sid))
        ledger.close(link)
        return Page(page, more or cut)

    # ---- acks and what they decide -------------------------------------------------------------

    def close_channel(self, channel: Channel) -> None:
        self.hub.close_channel(channel)

    def acked(self, link_id: str, written: list[tuple[int, int]], dropped: list[tuple[int, int]],
              written_all: list[int], elsewhere: Sequence[Entry]) -> bool:
        """A realm's report on its link's deliveries (see main_server/ledger.py); elsewhere:
        entries written on a link of that realm that has closed since. False: the link is
        closed, and what it carried went back to undelivered already."""
        ledger = self.ledger
        if elsewhere:
            self._on_outcome(ledger.written_elsewhere(elsewhere))
        if link_id not in self.hub.channels:
            return False
        out = Outcome()
        for seq in written_all:
            out.add(ledger.written_all(link_id, seq))
        for seq, sid in written:
            out.add(ledger.written(link_id, seq, sid))
        for seq, sid in dropped:
            out.add(ledger.dropped(link_id, seq, sid))
        self._on_outcome(out)
        return True

    def handed_over(self, channel: Channel, seq: int, session_ids: Iterable[int]) -> None:
        """A subscriber's transport took the event (grpcurl): as far as main can tell, written."""
        out = Outcome()
        for sid in session_ids:
            out.add(self.ledger.written(channel.id, seq, sid))
        self._on_outcome(out)

    def _on_outcome(self, out: Outcome) -> None:
        if not out:
            return
        if out.delivered:
            self._delivered.extend(out.delivered)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_delivered())
        for user, _ in out.returned:
            if self.hub.is_online(user):
                self._returned.add(user)
        if self._returned and (self._repusher is None or self._repusher.done()):
            self._repusher = asyncio.create_task(self._repush())

    async def _flush_delivered(self) -> None:
        while self._delivered:
            pairs, self._delivered = self._delivered, []
            try:
                await self.storage.mark_delivered(pairs)
            except Exception:
                # They stay undelivered: inbox or the next resume brings them (at least once).
                log.exception("marking %d deliveries failed", len(pairs))
            finally:
                self.ledger.committed(pairs)

    async def _repush(self) -> None:
        """Entries that went back to undelivered while their user is still online are pushed
        again. The short wait lets a burst of drops (a session closing) settle first, and keeps
        a session the realm does not know yet from bouncing deliveries at full speed."""
        while self._returned:
            await asyncio.sleep(REPUSH_DELAY_S)
            users, self._returned = self._returned, set()
            for user in users:
                if self.hub.is_online(user):
                    try:
                        await self.push_pending(user)
                    except Exception:
                        log.exception("pushing returned messages to %s failed", user)

    async def flush(self) -> None:
        """Waits until every sent event is marked delivered (graceful shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
