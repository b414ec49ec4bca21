"""Conversation state: presence (coalesced, main_server/presence.py) and away messages, read
markers and seen receipts, typing notices, the conversation list."""

from __future__ import annotations

import asyncio
import logging
import time

from realmchat.errors import InvalidArgument, PermissionDenied
from realmchat.names import check_name, name_key

from .. import events, presence, rooms
from ..hub import Hub
from ..storage.base import ConversationRecord, ReadMark, Storage
from .accounts import Caller
from .history import active_between
from .notify import Notify

log = logging.getLogger(__name__)

TYPING_INTERVAL_S = 2.0  # at most one typing notice per user and conversation forwarded in this time
TYPING_EXPIRES_S = 5  # what clients are told: a typing notice stands for about this long
TYPING_MAX = 100_000  # bound on remembered (user, conversation) pairs


def peer_key(peer: str) -> str:
    return name_key(check_name(peer.removeprefix("#"), "user or group"))


class Conversation:
    def __init__(self, storage: Storage, hub: Hub, notify: Notify) -> None:
        self.storage = storage
        self.hub = hub
        self.notify = notify
        # Presence (coalesced), away messages of users online here or on other replicas, and
        # when each typing notice was forwarded.
        self.presence = presence.Coalescer()
        self._status: dict[str, tuple[str, str]] = {}  # user key -> (away, message)
        self._typing: dict[tuple[str, str], float] = {}
        self._presence_tasks: set[asyncio.Task[None]] = set()
        self.presence_sent = 0  # presence events queued for sessions (bench, metrics)
        hub.on_presence = self._on_presence

    # ---- presence ----------------------------------------------------------------------------

    def who(self) -> list[tuple[str, str]]:
        cluster = self.notify.cluster
        return self.hub.who(cluster.who() if cluster is not None else None)

    def who_status(self) -> list[tuple[str, str, str, str]]:
        """`who` with each user's status (online or away) and away message."""
        out = []
        for name, realm in self.who():
            status, message = self._status.get(name_key(name), (presence.ONLINE, ""))
            out.append((name, realm, status, message))
        return out

    def _on_presence(self, user_key: str, name: str, realm: str, online: bool) -> None:
        """The hub saw a user's first session attach or their last one leave (here)."""
        if online:
            status, message = self._status.get(user_key, (presence.ONLINE, ""))
            self._presence(user_key, name, presence.State(status, realm, message))
            return
        cluster = self.notify.cluster
        if cluster is None:
            self._gone(user_key, name)
            return
        # Whether another replica still has a session is known once our detach has its place
        # among theirs (two last sessions ending at once on two replicas: one of them tells).

        def settled(last: bool) -> None:
            if last and not self.hub.is_online(user_key) and name not in cluster.online_names():
                self._gone(user_key, name)

        cluster.settle_detach(name, settled)

    def _gone(self, user_key: str, name: str) -> None:
        """The user has no session anywhere now."""
        # Away lasts until back or until the last session ends (the other replicas forget it too).
        if self._status.pop(user_key, None) is not None and (cluster := self.notify.cluster) is not None:
            cluster.publish_notice(events.StatusChanged(user_key, presence.ONLINE))
        self._presence(user_key, name, presence.State(presence.OFFLINE))

    def _presence(self, user_key: str, name: str, state: presence.State) -> None:
        delay = self.presence.update(user_key, state, time.monotonic())
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self._start_presence_flush, user_key, name)

    def _start_presence_flush(self, user_key: str, name: str) -> None:
        task = asyncio.create_task(self._flush_presence(user_key, name))
        self._presence_tasks.add(task)
        task.add_done_callback(self._presence_tasks.discard)

    async def _flush_presence(self, user_key: str, name: str) -> None:
        state = self.presence.take(user_key, time.monotonic())
        if state is None:
            return
        try:
            targets = await self.notify.audience_online(user_key)
        except Exception:
            log.exception("presence of %s: reading who shares a conversation failed", user_key)
            return
        if not targets:
            return
        self.presence_sent += len(targets)
        self.notify.send(targets, events.Presence(name, state.status, state.realm, state.message), 0)

    async def set_status(self, caller: Caller, away: bool, message: str) -> tuple[str, str]:
        key = caller.session.user_key
        message = rooms.check_text(message, "away message", presence.STATUS_MESSAGE_MAX_BYTES) if away else ""
        if away:
            self._status[key] = (presence.AWAY, message)
        else:
            self._status.pop(key, None)
        status = presence.AWAY if away else presence.ONLINE
        if (cluster := self.notify.cluster) is not None:
            cluster.publish_notice(events.StatusChanged(key, status, message))
        realm = self.hub.realm_of(key) or caller.session.realm
        self._presence(key, caller.session.user_name, presence.State(status, realm, message))
        return status, message

    def status_elsewhere(self, user_key: str, status: str, message: str) -> None:
        """Another replica's user went away or came back."""
        if status == presence.AWAY:
            self._status[user_key] = (presence.AWAY, message)
        else:
            self._status.pop(user_key, None)

    # ---- read markers, receipts, typing --------------------------------------------------------

    async def conversations(self, caller: Caller, active_after: str = "", active_before: str = "", limit: int = 0,
                            oldest: bool = False) -> list[ConversationRecord]:
        """Every conversation, newest first; or those active between two times (history.active_between)."""
        convs = await self.storage.conversations(caller.session.user_key)
        return active_between(convs, active_after, active_before, limit, oldest)

    async def mark_read(self, caller: Caller, peer: str, msg_id: int) -> ReadMark:
        if msg_id < 0:
            raise InvalidArgument("ID is a message id (a whole number)")
        me = caller.session.user_key
        mark = await self.storage.mark_read(me, peer_key(peer), msg_id)
        if mark.moved:
            self.notify.send([me], events.Read(mark.peer, mark.read), caller.session.id)
            if mark.seen_id:
                self.notify.send([mark.peer_key], events.Seen(caller.session.user_name, mark.seen_id), 0)
        return mark

    async def set_receipts(self, caller: Caller, enabled: bool | None) -> bool:
        """Turns read receipts on or off (None: leaves them); returns the setting now."""
        return await self.storage.set_receipts(caller.session.user_key, enabled)

    async def typing(self, caller: Caller, peer: str) -> bool:
        """Forwards a typing notice to the peer or the group's members (not stored); at most one
        per TYPING_INTERVAL_S per user and conversation, the rest are accepted and dropped."""
        me = caller.session.user_key
        key = peer_key(peer)
        now = time.monotonic()
        last = self._typing.get((me, key))
        if last is not None and now - last < TYPING_INTERVAL_S:
            return False
        if await self.storage.get_user(key) is not None and not peer.startswith("#"):
            targets = [key] if key != me else []
            e = events.Typing(caller.session.user_name, caller.session.user_name)
        else:
            roll = await self.storage.members(key, me)
            g, members = roll.group, roll.members
            if me not in {m.key for m in members}:
                raise PermissionDenied(f"you are not a member of {g.name!r}: joingroup first")
            targets = [m.key for m in members if m.key != me]
            e = events.Typing(caller.session.user_name, g.name)
        if len(self._typing) >= TYPING_MAX:
            self._typing = {k: t for k, t in self._typing.items() if now - t < TYPING_INTERVAL_S}
        self._typing[(me, key)] = now
        self.notify.send(targets, e, 0)
        return True
