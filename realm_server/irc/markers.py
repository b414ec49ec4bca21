"""draft/read-marker on the IRC edge: MARKREAD sets or asks the read marker that every protocol
shares (main's MarkRead and Conversations), and a marker moved on another device reaches this
connection as MARKREAD. IRC names a marker by time, realmchat by message id: History maps one
to the other (the newest message at or before the time)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from realmchat.errors import ChatError
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from . import render
from .casemap import group_to_channel
from .codec import Message, message

if TYPE_CHECKING:
    from ..session import Session
    from ..upstream import Upstream
    from .edge import IrcCodec

CAP = "draft/read-marker"
PAGE = 200  # messages per History page while looking for a time
PAGES = 10  # pages looked at, at most (older times mark nothing)
PENDING_MAX = 64  # markers from other devices waiting to be shown, per connection
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z")


def parse_timestamp(param: str) -> str | None:
    """`timestamp=YYYY-MM-DDThh:mm:ss.sssZ` as server-time (comparable as a string), else None."""
    key, eq, value = param.partition("=")
    if key != "timestamp" or not eq or not TIMESTAMP.fullmatch(value):
        return None
    return render.server_time(value)


def markread(source: str, target: str, ts: str) -> Message:
    """MARKREAD target timestamp=...; `*` alone when there is no marker (as the spec writes it)."""
    return message(source, "MARKREAD", target, f"timestamp={render.server_time(ts)}" if ts else "*")


async def message_at(up: Upstream, token: str, peer: str, msg_id: int) -> pb.Message | None:
    """Message msg_id of the conversation peer, if it is one of it."""
    r = await up.call("History", pb.HistoryRequest(peer=peer, limit=1, before=msg_id + 1), token)
    return r.messages[-1] if r.messages and r.messages[-1].id == msg_id else None


async def newest_until(up: Upstream, token: str, peer: str, ts: str) -> pb.Message | None:
    """The newest message of peer's conversation sent at or before ts."""
    before = 0
    for _ in range(PAGES):
        r = await up.call("History", pb.HistoryRequest(peer=peer, limit=PAGE, before=before), token)
        for m in reversed(r.messages):
            if render.server_time(m.ts) <= ts:
                return m
        if not r.more or not r.messages:
            return None
        before = r.messages[0].id
    return None


async def marker(up: Upstream, token: str, peer: str) -> int:
    """The read marker of peer's conversation (0: none); peer as main takes it (`#group` forces one)."""
    await up.call("History", pb.HistoryRequest(peer=peer, limit=1), token)  # NotFound: no such peer
    group = peer.startswith("#")
    name = name_key(peer.lstrip("#"))
    r = await up.call("Conversations", pb.ConversationsRequest(), token)
    for conv in r.conversations:
        if name_key(conv.peer) == name and (conv.kind == "group" or not group):
            return conv.read
    return 0


async def group_reads(up: Upstream, token: str) -> dict[str, int]:
    """Every group conversation's read marker, by the group's name_key."""
    r = await up.call("Conversations", pb.ConversationsRequest(), token)
    return {name_key(conv.peer): conv.read for conv in r.conversations if conv.kind == "group"}


async def on_join(up: Upstream, token: str, source: str, chan: str, group: str,
                  reads: dict[str, int] | None = None) -> Message:
    """The MARKREAD a joining client gets (before RPL_ENDOFNAMES); reads: group_reads, if known."""
    if reads is None:
        reads = await group_reads(up, token)
    read = reads.get(name_key(group), 0)
    at = await message_at(up, token, "#" + group, read) if read else None
    return markread(source, chan, at.ts if at is not None else "")


class Watcher:
    """Shows markers moved on the user's other devices: the read event names an id, IRC wants
    its time, so each is looked up (one at a time, the newest per conversation kept)."""

    def __init__(self, up: Upstream, s: Session, c: IrcCodec) -> None:
        self.up, self.s, self.c = up, s, c
        self.pending: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

    def moved(self, peer: str, msg_id: int) -> None:
        if CAP not in self.c.caps or (peer not in self.pending and len(self.pending) >= PENDING_MAX):
            return
        self.pending[peer] = max(msg_id, self.pending.get(peer, 0))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._show())

    async def _show(self) -> None:
        while self.pending:
            peer, msg_id = next(iter(self.pending.items()))
            del self.pending[peer]
            try:
                m = await message_at(self.up, self.s.token, peer, msg_id)
            except ChatError:
                continue  # logged out, or main away: a live notice, like the others
            if m is not None:
                target = group_to_channel(m.group) if m.group else peer
                self.s.send_event(markread(self.c.server, target, m.ts).serialize())
