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
from datetime import datetime

from realmchat.errors import NotFound, Unauthenticated, Unavailable
from realmchat.names import name_key

from .. import events
from ..config import MainConfig
from ..hub import Channel, Hub
from ..ledger import Entry, Ledger, Outcome
from ..storage.base import MessageRecord, Storage
from ..trace import (
    DELIVERED,
    DROPPED,
    INBOX,
    LINK_CLOSED,
    NOT_WRITTEN,
    PUSHED,
    RETURNED,
    SESSION_LEFT,
    STORED,
    WRITTEN,
    Hop,
    Trace,
    as_sender,
    seen_by,
    waiting_why,
)
from .accounts import Caller
from .notify import Notify

log = logging.getLogger(__name__)

REPUSH_DELAY_S = 0.05
PUSH_PENDING_MAX_BYTES = 32 * 1024  # well under any realm's per-connection send queue
RELINKING = "the realm is reconnecting to the main server; try again shortly"
WAITING_LISTED = 200  # users a trace lists as still waiting for one message


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


def iso_seconds(ts: str) -> float:
    """A stored timestamp (storage.base.utc_now_iso) as unix time."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# What an inbox page reads from storage: skip (ids in flight) -> (messages, more beyond them).
PeekPage = Callable[[frozenset[int]], Awaitable[tuple[list[MessageRecord], bool]]]


class Delivery:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, notify: Notify, trace: Trace) -> None:
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
        self.trace = trace
        self._realms: dict[str, str] = {}  # channel id -> its realm, for the trace
        hub.tracker = self

    # ---- what the hub tells (hub.Tracker) ----------------------------------------------------

    def channel_opened(self, channel_id: str, realm: str) -> None:
        self.ledger.open(channel_id)
        self._realms[channel_id] = realm

    def channel_closed(self, channel_id: str) -> None:
        """What the channel never wrote goes back to undelivered."""
        self._on_outcome(self.ledger.close(channel_id), self._realms.pop(channel_id, ""), LINK_CLOSED)

    def session_left(self, channel_id: str, session_id: int) -> None:
        # A closing channel detaches its sessions first (it has left hub.channels by then).
        why = SESSION_LEFT if channel_id in self.hub.channels else LINK_CLOSED
        self._on_outcome(self.ledger.session_closed(channel_id, session_id), self._realms.get(channel_id, ""), why)

    def record(self, channel_id: str, targets: dict[int, str], entries: dict[str, list[int]]) -> int:
        seq = self.ledger.record(channel_id, targets, entries)
        if entries:
            realm = self._realms.get(channel_id, "")
            for msg in next(iter(entries.values())):  # one message's (see hub.Tracker.record)
                self.trace.note(msg, PUSHED, entries.keys(), realm, targets)
        return seq

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
            for msg in ids:
                self.trace.note(msg, PUSHED, (user,), channel.realm, {sid: user}, "an inbox page")
            return Page(page, more or cut, seq, channel.id)
        link = f"call-{next(self._direct_calls)}"
        ledger.open(link)
        done = ledger.written(link, ledger.record(link, {sid: user}, {user: ids}), sid)
        self.trace.note_entries(done.delivered, WRITTEN, sessions={sid: user}, why="an inbox page answered directly")
        self._on_outcome(done)
        ledger.close(link)
        return Page(page, more or cut)

    # ---- traces --------------------------------------------------------------------------------

    async def trace_of(self, caller: Caller | None, msg_id: int) -> list[Hop]:
        """The hops of message msg_id: for its sender, every recipient's (without their realms or
        sessions); for a recipient, their own; for an operator (caller None), all of them."""
        if caller is None:
            found = await self.storage.get_messages([msg_id])
            if not found:
                raise NotFound(f"no message {msg_id}")
            m = found[0]
        else:
            m = await self.storage.message_for(caller.session.user_key, msg_id)
        hops = self.trace.hops(msg_id)
        now = self.trace.clock()
        for user in await self.storage.waiting_for(msg_id, WAITING_LISTED):
            hops.append(Hop(now, INBOX, (user,), why=waiting_why(hops, user)))
        sender = name_key(m.sender)
        stored = Hop(iso_seconds(m.ts), STORED, (sender,))
        if caller is None:
            return [stored, *hops]
        me = caller.session.user_key
        return [stored, *(as_sender(hops, me) if me == sender else seen_by(hops, me))]

    # ---- acks and what they decide -------------------------------------------------------------

    def close_channel(self, channel: Channel) -> None:
        self.hub.close_channel(channel)

    def acked(self, link_id: str, written: list[tuple[int, int]], dropped: list[tuple[int, int]],
              written_all: list[int], elsewhere: Sequence[Entry]) -> bool:
        """A realm's report on its link's deliveries (see main_server/ledger.py); elsewhere:
        entries written on a link of that realm that has closed since. False: the link is
        closed, and what it carried went back to undelivered already."""
        ledger, trace = self.ledger, self.trace
        if elsewhere:
            out = ledger.written_elsewhere(elsewhere)
            trace.note_entries(out.delivered, WRITTEN, why="written from a link that has closed since")
            self._on_outcome(out)
        if link_id not in self.hub.channels:
            return False
        realm = self._realms.get(link_id, "")
        out = Outcome()
        for seq in written_all:
            done = ledger.written_all(link_id, seq)
            trace.note_entries(done.delivered, WRITTEN, realm)
            out.add(done)
        for seq, sid in written:
            done = ledger.written(link_id, seq, sid)
            if done.delivered:
                trace.note_entries(done.delivered, WRITTEN, realm, {sid: done.delivered[0][0]})
            out.add(done)
        for seq, sid in dropped:
            out.add(ledger.dropped(link_id, seq, sid))
        self._on_outcome(out, realm, NOT_WRITTEN)
        return True

    def handed_over(self, channel: Channel, seq: int, session_ids: Iterable[int]) -> None:
        """A subscriber's transport took the event (grpcurl): as far as main can tell, written."""
        out = Outcome()
        for sid in session_ids:
            out.add(self.ledger.written(channel.id, seq, sid))
        self.trace.note_entries(out.delivered, WRITTEN, channel.realm, why="handed to a subscriber")
        self._on_outcome(out)

    def _on_outcome(self, out: Outcome, realm: str = "", why: str = "") -> None:
        """Acts on what the ledger decided; why: what ended the deliveries that returned entries."""
        if not out:
            return
        if out.returned:
            self.trace.note_entries(out.returned, DROPPED, realm, why=why or NOT_WRITTEN)
            self.trace.note_entries(out.returned, RETURNED)
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
                self.trace.note_entries(pairs, DELIVERED)
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
