"""The GUI's controller: owns one chat_cli ChatClient, turns its events into ChatState, and
offers the operations the views call. Plain asyncio Python: no Flet import, so tests drive it
against a real stack exactly as the views do.

Views subscribe with `subscribe(listener)` and get a Change telling which part of the state
moved; they re-render that part. Operations raise realmchat.errors.ChatError with a message
meant for the user; the view shows it where the user acted (login form, composer, dialog).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from chat_cli import ChatClient
from chat_cli.models import (
    ConnectionEvent,
    ConnState,
    DeletedEvent,
    EditedEvent,
    Event,
    FileEvent,
    FileInfo,
    GroupDeletedEvent,
    GroupKeyEvent,
    GroupModeEvent,
    InvitedEvent,
    MemberEvent,
    Message,
    MessageEvent,
    OtherEvent,
    Presence,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    SearchHit,
    SeenEvent,
    SessionEvent,
    TopicEvent,
    TraceHop,
    TypingEvent,
    parse_ts,
)
from chat_cli.verbs import check_word
from realmchat.display import sanitize
from realmchat.errors import ChatError, InvalidArgument, NotFound, Unavailable, Unimplemented
from realmchat.names import check_name

from .state import (
    ChatLine,
    ChatState,
    Conversation,
    Invitation,
    Kind,
    LineKind,
    Status,
    Transfer,
    TransferState,
    conv_key,
)

log = logging.getLogger("gui.controller")

HISTORY_SIZE = 50           # messages loaded when a conversation opens, and per older page
GAP_FILL = 1000             # messages read at most between a search result's page and the newest shown
COMMON_REACTIONS = ("👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀")
# Presence comes from events (one `who` at login). The realm sends no event when its main server
# goes away or comes back, so a light probe (`groups`, never `who`) keeps the header honest:
PROBE_INTERVAL = 15.0       # seconds between probes while all is well
DEGRADED_INTERVAL = 3.0     # ... while main is unreachable, so "online" comes back soon after it does
WHO_INTERVAL = PROBE_INTERVAL  # the former name
TYPING_EVERY = 3.0          # send `typing` at most this often while the user types
# A typing indicator disappears `expires` seconds (the event says; 5 s) after the last one.


class Change(StrEnum):
    STATUS = "status"                # connection / login state
    CONVERSATIONS = "conversations"  # side list: order, previews, unread counts
    MESSAGES = "messages"            # lines of the current conversation
    ONLINE = "online"
    GROUPS = "groups"
    FILES = "files"                  # incoming files, transfers and their progress
    NOTICE = "notice"                # a one-off message for the user (controller.notice)
    MEMBERS = "members"              # members (roles, online) or topic of a group
    INVITATIONS = "invitations"      # invitations waiting for an answer
    SEARCH = "search"                # search query, results, errors


Listener = Callable[[Change], None]
ClientFactory = Callable[..., ChatClient]


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").casefold() == (b or "").casefold()


def _valid_key(key: str) -> str:
    """A group key ("" for none) checked with the verb table's rule for a word, before a group
    is created with it: a key that cannot be sent must not leave a keyless group behind."""
    key = key.strip()
    if key:
        try:
            check_word(key, "key")
        except InvalidArgument:
            raise InvalidArgument("the key must be one word (no spaces)") from None
    return key


class ChatController:
    def __init__(self, downloads: Path | str = "downloads", *, client_factory: ClientFactory = ChatClient,
                 who_interval: float = WHO_INTERVAL, call_timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None, history_page: int = HISTORY_SIZE) -> None:
        self.history_page = history_page
        self.downloads = Path(downloads).expanduser()
        self.tls = tls
        self.client_factory = client_factory
        self.who_interval = who_interval
        self.call_timeout = call_timeout
        self.state = ChatState()
        self.client: ChatClient | None = None
        self.notice = ""
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._who_task: asyncio.Task[None] | None = None
        self._tids = itertools.count(1)
        self._typing_sent: dict[str, float] = {}  # conversation key -> when `typing` was last sent
        # The server keeps unread counts and read marks (protocol 2); False with an older realm,
        # where the counts are this app's own.
        self.server_state = False

    # ---- listeners ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _changed(self, *changes: Change) -> None:
        for change in changes:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # a broken view must not break the event flow
                    log.exception("listener failed on %s", change)

    def _notify(self, text: str) -> None:
        self.notice = text
        self._changed(Change.NOTICE)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    @staticmethod
    async def _quietly(aw: Any) -> None:
        """For refreshes nobody asked for: a failure (e.g. while reconnecting) is not news."""
        with contextlib.suppress(ChatError):
            await aw

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, ChatError):
                self._notify(exc.message)
            else:
                log.error("background task %s failed", task.get_name(), exc_info=exc)

    # ---- connection --------------------------------------------------------------------------

    def _client(self) -> ChatClient:
        if self.client is None:
            raise Unavailable("not connected: connect to a realm first")
        return self.client

    async def connect(self, host: str, port: int) -> None:
        """Connects to a realm (closing any previous connection). Raises Unavailable with a
        plain message when the realm is down or the address is wrong."""
        host = host.strip()
        if not host:
            raise InvalidArgument("enter the realm's host name or address")
        if not 0 < int(port) < 65536:
            raise InvalidArgument("the port must be a number between 1 and 65535")
        await self.disconnect()
        st = self.state
        st.host, st.port = host, int(port)
        st.status, st.status_detail = Status.CONNECTING, f"connecting to {host}:{port}"
        self._changed(Change.STATUS)
        client = self.client_factory(host, int(port), auto_reconnect=True,
                                     call_timeout=self.call_timeout, connect_timeout=5.0, ssl=self.tls)
        # Events of a client we already replaced (its CLOSED, a late push) must not touch the
        # state of the new session: the handler checks which client it belongs to.
        client.on_event = lambda ev: self._on_event(client, ev)
        try:
            await client.open()
        except ChatError as e:
            st.status, st.status_detail = Status.OFFLINE, e.message
            self._changed(Change.STATUS)
            raise Unavailable(f"cannot reach the realm at {host}:{port}: is it running? ({e.message})") from None
        self.client = client
        st.realm = client.realm
        st.status, st.status_detail = Status.CONNECTED, f"connected to realm {client.realm or '?'}"
        self._changed(Change.STATUS)

    async def disconnect(self) -> None:
        """Closes the connection and forgets everything of the session."""
        client, self.client = self.client, None
        self._stop_who()
        if client is not None:
            # The client's own CLOSED event arrives while we tear down; it is ignored because
            # self.client no longer points to it.
            with contextlib.suppress(Exception):
                await client.close()
        self.state = ChatState(host=self.state.host, port=self.state.port, tz=self.state.tz)
        self._changed(Change.STATUS, Change.CONVERSATIONS, Change.MESSAGES, Change.ONLINE, Change.GROUPS,
                      Change.FILES, Change.MEMBERS, Change.INVITATIONS)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.disconnect()

    # ---- accounts ----------------------------------------------------------------------------

    async def register(self, user: str, password: str) -> str:
        """Creates the account (then log in). Raises AlreadyExists ('name taken') and
        InvalidArgument (bad name, weak password) with the realm's message."""
        user, password = user.strip(), password
        if not user or not password:
            raise InvalidArgument("enter a user name and a password")
        return await self._client().register(user, password)

    async def login(self, user: str, password: str) -> None:
        """Logs in and loads what the side list needs: groups, who is online, messages and files
        that waited while the user was away."""
        user = user.strip()
        if not user or not password:
            raise InvalidArgument("enter a user name and a password")
        session = await self._client().auth(user, password)
        st = self.state
        st.user, st.realm = session.user, session.realm or st.realm
        st.waiting = session.waiting  # counted at login, before _after_login fetches the inbox
        st.status, st.status_detail = Status.ONLINE, f"logged in as {session.user} on realm {st.realm}"
        self._changed(Change.STATUS)
        await self._after_login()
        self._start_who()

    async def _after_login(self) -> None:
        """Fills the side list; each step is independent so one failure does not hide the rest.
        The conversations, their unread and mention counts come from the server (the same on
        every device); presence from one `who`, then from presence events."""
        client = self._client()
        with contextlib.suppress(ChatError):
            await self.refresh_conversations()
        with contextlib.suppress(ChatError):  # the account's setting, chosen on any device
            self.state.receipts = await client.receipts()
            self._changed(Change.STATUS)
        with contextlib.suppress(ChatError):
            await self.refresh_groups()
        with contextlib.suppress(ChatError):
            await self.refresh_online()
        # Messages queued while we were offline (fetching them marks them delivered). The
        # server's counts already include them; an older realm has none, so they count here.
        unread = not self.server_state
        with contextlib.suppress(ChatError):
            for msg in await client.inbox():
                self._add_message(msg, unread=unread)
        for g in list(self.state.groups.values()):
            with contextlib.suppress(ChatError):
                for msg in await client.inbox_group(g.name):
                    self._add_message(msg, unread=unread)
        for g in list(self.state.groups.values()):
            # Every group gets a row in the side list, even a quiet one.
            self._conversation(Kind.GROUP, g.name)
        with contextlib.suppress(ChatError):
            await self.refresh_files(unread=True)
        self._changed(Change.CONVERSATIONS, Change.MESSAGES)

    async def logout(self) -> None:
        """Ends the session and keeps the connection, back to the login form."""
        client = self.client
        self._stop_who()
        if client is not None and client.connected:
            with contextlib.suppress(ChatError):
                await client.logout()
        host, port, realm = self.state.host, self.state.port, self.state.realm
        self.state = ChatState(host=host, port=port, realm=realm, tz=self.state.tz,
                               status=Status.CONNECTED if client and client.connected else Status.OFFLINE,
                               status_detail=f"connected to realm {realm}" if client else "")
        self._changed(Change.STATUS, Change.CONVERSATIONS, Change.MESSAGES, Change.ONLINE, Change.GROUPS,
                      Change.FILES, Change.MEMBERS, Change.INVITATIONS)

    async def refresh_conversations(self) -> None:
        """The user's conversations with the server's unread and mention counts and read marks
        (at login, and after a reconnect: what happened meanwhile on other devices)."""
        try:
            convs = await self._checked(self._client().conversations())
        except Unimplemented:
            self.server_state = False  # an older realm: counts are kept by this app
            return
        self.server_state = True
        for c in convs:
            kind = Kind.GROUP if c.is_group else Kind.PRIVATE
            conv = self._conversation(kind, c.peer)
            if c.last is not None:
                conv.add(self._line(c.last))
            conv.read_id = max(conv.read_id, c.read)
            # The peer's read mark of our messages (receipts on): ticks at once after a login.
            conv.seen_id = max(conv.seen_id, c.seen)
            if self.state.current == conv.key:
                conv.unread = conv.mentions = 0
                self._mark_read(conv)
            else:
                conv.unread, conv.mentions = c.unread, c.mentions
        self._changed(Change.CONVERSATIONS)

    # ---- presence and groups ----------------------------------------------------------------

    async def refresh_online(self) -> None:
        """Who is online (one `who`: at login and after a reconnect); presence events keep it
        current from then on."""
        online = await self._checked(self._client().who())
        self.state.presence = {}
        for p in online:
            self.state.presence[p.user.casefold()] = p
        me = self.state.presence.get(self.state.user.casefold())
        if me is not None:
            self.state.away, self.state.away_message = me.away, me.message if me.away else ""
            self._changed(Change.STATUS)
        self._online_from_presence()
        self.state.online_at = datetime.now(UTC)
        self._changed(Change.ONLINE)

    def _online_from_presence(self) -> None:
        st = self.state
        st.online = sorted((p for p in st.presence.values() if p.status != "offline"),
                           key=lambda p: (p.user.casefold(), p.realm))

    # ---- conversation state: read marks, typing, away, receipts ---------------------------------

    def _mark_read(self, conv: Conversation) -> None:
        """The user is looking at `conv`: tell the server it is read up to its newest message
        (the count clears on every device, the sender of a private message sees it was read)."""
        newest = conv.newest_id
        if not newest or newest <= conv.read_id or not self.state.logged_in or self.client is None:
            return
        conv.read_id = newest
        target = conv.name
        self._spawn(self._quietly(self._client().read(target, newest)), "gui-read")

    def user_typing(self, key: str | None = None) -> None:
        """Called as the user types in a conversation: sends `typing` at most every few seconds."""
        conv = self.conversation(key or self.state.current)
        if conv is None or conv.closed or self.client is None or not self.state.logged_in:
            return
        now = time.monotonic()
        if now - self._typing_sent.get(conv.key, -TYPING_EVERY) < TYPING_EVERY:
            return
        self._typing_sent[conv.key] = now
        self._spawn(self._quietly(self._client().typing(conv.name)), "gui-typing")

    async def set_away(self, message: str = "") -> None:
        """Shows others the user is away, with an optional message."""
        message = " ".join(message.split())
        await self._client().away(message or None)
        self.state.away, self.state.away_message = True, message
        self._changed(Change.STATUS)

    async def set_back(self) -> None:
        await self._client().back()
        self.state.away, self.state.away_message = False, ""
        self._changed(Change.STATUS)

    async def set_receipts(self, on: bool) -> None:
        """Whether senders see when the user reads their private messages."""
        self.state.receipts = await self._client().receipts(on)
        self._changed(Change.STATUS)

    async def _checked(self, aw: Any) -> Any:
        """Runs a call that needs the main server and keeps the header honest: UNAVAILABLE from a
        connected realm means its main server is down (DEGRADED), any answer means it is back.
        The realm sends no event for either, so calls are the only way to know."""
        try:
            result = await aw
        except Unavailable as e:
            client, st = self.client, self.state
            if client is not None and client.connected and st.logged_in and st.status is Status.ONLINE:
                st.status, st.status_detail = Status.DEGRADED, f"the realm cannot reach its main server: {e.message}"
                self._changed(Change.STATUS, Change.ONLINE)
            raise
        except ChatError:
            self._main_answered()
            raise
        self._main_answered()
        return result

    def _main_answered(self) -> None:
        st = self.state
        if st.status is Status.DEGRADED:
            st.status, st.status_detail = Status.ONLINE, f"logged in as {st.user} on realm {st.realm}"
            self._changed(Change.STATUS, Change.ONLINE)
            # What failed or changed while main was away (the open history, counts, presence)
            # is fetched again, as after a reconnect to the realm.
            self._spawn(self._after_reconnect(), "gui-after-main-back")

    async def refresh_groups(self) -> None:
        client = self._client()
        groups = await client.groups()
        if any(not g.mode for g in groups):
            # A realm whose `groups` does not say mode and topic: `listgroups` does (it lists
            # every group the user is in, private ones included).
            with contextlib.suppress(ChatError):
                listed = {x.name.casefold(): x for x in await client.list_groups()}
                groups = [replace(g, mode=g.mode or listed[g.name.casefold()].mode,
                                  topic=g.topic or listed[g.name.casefold()].topic)
                          if g.name.casefold() in listed else g for g in groups]
        self.state.groups = {g.name.casefold(): g for g in groups}
        self._changed(Change.GROUPS)

    def _start_who(self) -> None:
        self._stop_who()
        if self.who_interval > 0:
            self._who_task = asyncio.create_task(self._who_loop(), name="gui-who")

    def _stop_who(self) -> None:
        if self._who_task is not None:
            self._who_task.cancel()
            self._who_task = None

    async def _who_loop(self) -> None:
        """Probes the main server (never `who`: presence comes from events) so that the header
        notices an outage and the recovery; after a recovery presence is fetched once again."""
        while True:
            degraded = self.state.status is Status.DEGRADED
            await asyncio.sleep(min(self.who_interval, DEGRADED_INTERVAL) if degraded else self.who_interval)
            if self.client is not None and self.client.connected and self.state.logged_in:
                with contextlib.suppress(ChatError):
                    await self._checked(self.client.groups())

    async def create_group(self, name: str, private: bool = False, key: str = "") -> Conversation:
        """Creates a group (you own it). A private one is joined by invitation, or with `key`
        when one is given (set right after creating)."""
        name = self._valid_name(name, "group")
        key = _valid_key(key)
        client = self._client()
        created = await client.create_group(name, private=private)
        if key:
            await client.set_group_key(created, key)
        return await self._joined(created)

    async def join_group(self, name: str, key: str = "") -> Conversation:
        """Joins a group; a private one needs an invitation or its key (PermissionDenied with
        the realm's message otherwise)."""
        name = self._valid_name(name, "group")
        key = key.strip()
        joined = await self._client().join_group(name, key or None)
        self._drop_invitation(joined)
        conv = self._conversation(Kind.GROUP, joined)
        conv.closed = ""
        return await self._joined(joined)

    async def _joined(self, name: str) -> Conversation:
        with contextlib.suppress(ChatError):
            await self.refresh_groups()
        conv = self._conversation(Kind.GROUP, name)
        conv.closed = ""
        self._changed(Change.CONVERSATIONS)
        await self.open_conversation(conv.key)
        return conv

    async def leave_group(self, name: str) -> None:
        await self._client().leave_group(name)
        key = conv_key(Kind.GROUP, name)
        self.state.conversations.pop(key, None)
        self.state.members.pop(name.casefold(), None)
        self.state.banned.pop(name.casefold(), None)
        if self.state.current == key:
            self.state.current = None
        with contextlib.suppress(ChatError):
            await self.refresh_groups()
        self._changed(Change.CONVERSATIONS, Change.MESSAGES, Change.GROUPS, Change.MEMBERS)

    # ---- rooms: members, moderation, topic -----------------------------------------------------

    def _group_of(self, group: str | None) -> str:
        """`group`, or the open conversation's group."""
        if group:
            return self._valid_name(group, "group")
        conv = self.current
        if conv is None or conv.kind is not Kind.GROUP:
            raise InvalidArgument("open a group first")
        return conv.name

    async def refresh_members(self, group: str | None = None) -> None:
        """Loads the members of `group` (default: the open one) into state.members, and for an
        owner or admin its bans into state.banned; a refusal (a private group you left) is kept
        in state.members_error for the panel."""
        group = self._group_of(group)
        key = group.casefold()
        try:
            members = await self._checked(self._client().members(group))
        except ChatError as e:
            self.state.members.pop(key, None)
            self.state.banned.pop(key, None)
            self.state.members_error[key] = e.message
            self._changed(Change.MEMBERS)
            raise
        self.state.members[key] = list(members)
        if members.banned is None:  # not a moderator (any more): the server no longer says
            self.state.banned.pop(key, None)
        else:
            self.state.banned[key] = members.banned
        self.state.members_error.pop(key, None)
        self._changed(Change.MEMBERS, Change.GROUPS)

    async def refresh_topic(self, group: str | None = None) -> str:
        """The topic with who set it and when; the group's mode comes with it."""
        group = self._group_of(group)
        info = await self._client().topic_info(group)
        key = group.casefold()
        self.state.topics[key] = info.topic
        self._topic_set_by(key, info.by, info.set_when)
        g = self.state.groups.get(key)
        if g is not None and info.mode and g.mode != info.mode:
            self.state.groups[key] = replace(g, mode=info.mode)
            self._changed(Change.GROUPS)
        self._changed(Change.MEMBERS, Change.MESSAGES)
        return info.topic

    def _topic_set_by(self, key: str, by: str, at: datetime | None) -> None:
        if by:
            self.state.topic_set[key] = (by, at)
        else:
            self.state.topic_set.pop(key, None)

    async def set_topic(self, text: str, group: str | None = None) -> str:
        """Sets the topic (owner/admin); empty clears it. Members see it through the topic event."""
        group = self._group_of(group)
        text = " ".join(text.split())
        if not text or text == "-":
            await self._client().clear_topic(group)
            self.state.topics[group.casefold()] = ""
            self._topic_set_by(group.casefold(), "", None)
            self._own_action(group, "you cleared the topic")
            self._changed(Change.MEMBERS, Change.MESSAGES)
            return ""
        topic = await self._client().set_topic(group, text)
        self.state.topics[group.casefold()] = topic
        self._topic_set_by(group.casefold(), self.state.user, datetime.now(UTC))
        self._own_action(group, f"you set the topic: {topic}")
        self._changed(Change.MEMBERS, Change.MESSAGES)
        return topic

    async def invite(self, user: str, group: str | None = None) -> None:
        group = self._group_of(group)
        user = self._valid_name(user, "user")
        await self._client().invite(group, user)
        self._own_action(group, f"you invited {user}")
        self._spawn(self._quietly(self.refresh_members(group)), "gui-refresh-members")

    async def kick(self, user: str, reason: str = "", group: str | None = None) -> None:
        group = self._group_of(group)
        await self._client().kick(group, user, reason.strip() or None)
        self._own_action(group, f"{user} was kicked by you" + (f": {reason.strip()}" if reason.strip() else ""))
        await self._quietly(self.refresh_members(group))

    async def ban(self, user: str, reason: str = "", group: str | None = None) -> None:
        group = self._group_of(group)
        await self._client().ban(group, user, reason.strip() or None)
        self._own_action(group, f"{user} was banned by you" + (f": {reason.strip()}" if reason.strip() else ""))
        await self._quietly(self.refresh_members(group))

    async def unban(self, user: str, group: str | None = None) -> None:
        group = self._group_of(group)
        user = self._valid_name(user, "user")
        await self._client().unban(group, user)
        self._own_action(group, f"{user} was unbanned by you")
        await self._quietly(self.refresh_members(group))

    async def set_role(self, user: str, role: str, group: str | None = None) -> None:
        """admin or member (owner only)."""
        group = self._group_of(group)
        r = await self._client().set_role(group, user, role)
        self._own_action(group, f"{user} is now {r.role or role} (by you)")
        await self._quietly(self.refresh_members(group))

    async def set_group_key(self, key: str, group: str | None = None) -> None:
        """Sets (or with "" clears) the key that lets people join the group."""
        group = self._group_of(group)
        key = _valid_key(key)
        if key:
            await self._client().set_group_key(group, key)
        else:
            await self._client().clear_group_key(group)

    async def set_group_mode(self, private: bool, group: str | None = None) -> str:
        """Makes the group private or public (owner/admin); its members stay. Returns the mode."""
        group = self._group_of(group)
        mode = await self._client().set_group_mode(group, "private" if private else "public")
        self._mode_is(group, mode)
        self._own_action(group, "you made the group private: others need an invitation or its key"
                         if mode == "private" else "you made the group public: anyone may join")
        return mode

    def _mode_is(self, group: str, mode: str) -> None:
        g = self.state.groups.get(group.casefold())
        if g is not None:
            self.state.groups[group.casefold()] = replace(g, mode=mode)
        self._changed(Change.GROUPS, Change.MEMBERS, Change.MESSAGES)

    def _on_group_mode(self, ev: GroupModeEvent) -> None:
        by = "you" if _same(ev.by, self.state.user) else ev.by
        self._group_notice(ev.group, sanitize(f"{by} made the group private: others need an invitation or its key"
                                              if ev.private else f"{by} made the group public: anyone may join"))
        self._mode_is(ev.group, ev.mode)
        # A groups list asked for before the change may still be on its way with the old mode:
        # one asked now is answered after it, so the last word is the new mode.
        self._spawn(self._quietly(self.refresh_groups()), "gui-refresh-groups")

    def _on_group_key(self, ev: GroupKeyEvent) -> None:
        by = "you" if _same(ev.by, self.state.user) else ev.by
        if not ev.has_key:
            text = f"{by} removed the group's key"
        else:  # the key itself comes to owners and admins only
            text = f"{by} set a key to join the group" + (f": {ev.key}" if ev.key else "")
        self._group_notice(ev.group, sanitize(text))
        self._changed(Change.MESSAGES)

    async def delete_group(self, group: str | None = None) -> None:
        """Deletes the group for everyone (owner only)."""
        group = self._group_of(group)
        await self._client().delete_group(group)
        self._group_gone(group, "you deleted this group")

    async def list_groups(self, pattern: str | None = None) -> list[Any]:
        """Public groups (and private ones you are in), for a group browser."""
        return await self._client().list_groups(pattern)

    def dismiss_invitation(self, group: str) -> None:
        self._drop_invitation(group)

    def _drop_invitation(self, group: str) -> None:
        before = len(self.state.invitations)
        self.state.invitations = [i for i in self.state.invitations if not _same(i.group, group)]
        if len(self.state.invitations) != before:
            self._changed(Change.INVITATIONS)

    def _group_notice(self, group: str, text: str, ts: datetime | None = None) -> Conversation | None:
        """A notice line ("bob joined") in the group's conversation, if the user has it."""
        conv = self.state.conversations.get(conv_key(Kind.GROUP, group))
        if conv is not None:
            # Our own action adds its notice when the realm says OK; if the realm also sends
            # us the event, it is the same line.
            if any(ln.kind is LineKind.NOTICE and ln.text == text for ln in conv.lines[-5:]):
                return conv
            conv.lines.append(ChatLine(sender="", text=text, ts=ts or datetime.now(UTC), kind=LineKind.NOTICE))
        return conv

    def _own_action(self, group: str, text: str) -> None:
        """The notice of something the user did in `group` (the realm may not echo the event to
        the session that acted), and the member count that changed with it."""
        self._group_notice(group, sanitize(text))
        self._spawn(self._quietly(self.refresh_groups()), "gui-refresh-groups")
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    def _group_gone(self, group: str, why: str) -> None:
        """The user lost `group` (kicked, banned, deleted): its conversation stays readable with
        the reason instead of the composer; members and role are forgotten."""
        key = group.casefold()
        self.state.groups.pop(key, None)
        self.state.members.pop(key, None)
        self.state.banned.pop(key, None)
        conv = self.state.conversations.get(conv_key(Kind.GROUP, group))
        if conv is not None:
            conv.closed = why
        self._changed(Change.GROUPS, Change.MEMBERS, Change.MESSAGES, Change.CONVERSATIONS)

    def _on_member(self, ev: MemberEvent) -> None:
        me = self.state.user
        who = "you" if _same(ev.user, me) else ev.user
        by = "you" if _same(ev.by, me) else ev.by
        reason = f": {ev.reason}" if ev.reason else ""
        text = {
            "join": f"{who} joined",
            "leave": f"{who} left",
            "kick": f"{who} {'were' if who == 'you' else 'was'} kicked by {by}{reason}",
            "ban": f"{who} {'were' if who == 'you' else 'was'} banned by {by}{reason}",
            "unban": f"{who} {'were' if who == 'you' else 'was'} unbanned by {by}",
            "invite": f"{by} invited {who}",
            "role": f"{who} {'are' if who == 'you' else 'is'} now {ev.role or 'member'} (by {by})",
        }.get(ev.action, f"{who}: {ev.action}")
        conv = self._group_notice(ev.group, sanitize(text))
        key = ev.group.casefold()
        if _same(ev.user, me) and ev.removes:
            if ev.action != "leave":
                self._notify(f"you were {'kicked' if ev.action == 'kick' else 'banned'} from #{ev.group} "
                             f"by {ev.by}{reason}")
            self._group_gone(ev.group, f"you were {'kicked' if ev.action == 'kick' else 'banned'}"
                                       f" by {ev.by}{reason}" if ev.action != "leave" else "you left this group")
            return
        # Someone else came, went or changed role: the members panel follows (its online state
        # and realm come from the server, so it is fetched again, and the count with it).
        members = self.state.members.get(key)
        if members is not None:
            if ev.removes:
                self.state.members[key] = [m for m in members if not _same(m.user, ev.user)]
            elif ev.action == "role" and ev.role:
                self.state.members[key] = [replace(m, role=ev.role) if _same(m.user, ev.user) else m
                                           for m in members]
        if members is not None or self.state.current == conv_key(Kind.GROUP, ev.group):
            # Also when the panel's first load is still on its way: it may have been answered
            # before this change and would keep the old state.
            self._spawn(self._quietly(self.refresh_members(ev.group)), "gui-refresh-members")
        if ev.action in ("join", "leave", "kick", "ban", "role"):
            self._spawn(self._quietly(self.refresh_groups()), "gui-refresh-groups")
        self._changed(Change.MEMBERS, Change.GROUPS,
                      *([Change.MESSAGES] if conv is not None and conv.key == self.state.current else []))

    def _on_topic(self, ev: TopicEvent) -> None:
        self.state.topics[ev.group.casefold()] = ev.topic
        self._topic_set_by(ev.group.casefold(), ev.by if ev.topic else "", parse_ts(ev.at))
        by = "you" if _same(ev.by, self.state.user) else ev.by
        self._group_notice(ev.group, sanitize(f"{by} set the topic: {ev.topic}" if ev.topic
                                              else f"{by} cleared the topic"))
        self._changed(Change.MEMBERS, Change.MESSAGES)

    def _on_read(self, ev: ReadEvent) -> None:
        """The user read a conversation on another device: its counts follow."""
        conv = (self.state.conversations.get(conv_key(Kind.PRIVATE, ev.peer))
                or self.state.conversations.get(conv_key(Kind.GROUP, ev.peer)))
        if conv is None:
            return
        conv.read_id = max(conv.read_id, ev.id)
        if ev.id >= conv.newest_id:
            conv.unread = conv.mentions = 0
        else:
            later = [ln for ln in conv.lines if ln.id is not None and ln.id > ev.id and not ln.own
                     and ln.kind is not LineKind.NOTICE]
            conv.unread = min(conv.unread, len(later))
            conv.mentions = min(conv.mentions, conv.unread)
        self._changed(Change.CONVERSATIONS)

    def _on_presence(self, ev: PresenceEvent) -> None:
        st = self.state
        if ev.status == "offline":
            st.presence.pop(ev.user.casefold(), None)
            for conv in st.conversations.values():
                conv.typing.pop(ev.user.casefold(), None)
        else:
            st.presence[ev.user.casefold()] = Presence(user=ev.user, realm=ev.realm, status=ev.status,
                                                       message=ev.message)
        if _same(ev.user, st.user):
            st.away = ev.status == "away"  # set on another device
            st.away_message = ev.message if st.away else ""
            self._changed(Change.STATUS)
        self._online_from_presence()
        self._changed(Change.ONLINE)

    def _heard_from(self, user: str) -> None:
        """Someone whose presence we were not told (presence goes only to people who already
        share a group or a conversation) just wrote: they are online."""
        if user and not _same(user, self.state.user) and user.casefold() not in self.state.presence:
            self.state.presence[user.casefold()] = Presence(user=user, realm="")
            self._online_from_presence()
            self._changed(Change.ONLINE)

    def _on_typing(self, ev: TypingEvent) -> None:
        if _same(ev.user, self.state.user):
            return
        self._heard_from(ev.user)
        key = conv_key(Kind.GROUP, ev.peer) if ev.group else conv_key(Kind.PRIVATE, ev.user)
        conv = self.state.conversations.get(key)
        if conv is None:
            return
        conv.typing[ev.user.casefold()] = (ev.user, time.monotonic() + ev.expires)
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)
        self._spawn(self._typing_expires(conv, ev.user.casefold(), ev.expires), "gui-typing-expiry")

    async def _typing_expires(self, conv: Conversation, who: str, after: float) -> None:
        await asyncio.sleep(after + 0.05)
        entry = conv.typing.get(who)
        if entry is not None and entry[1] <= time.monotonic():
            del conv.typing[who]
            self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    def _on_invited(self, ev: InvitedEvent) -> None:
        if not any(_same(i.group, ev.group) for i in self.state.invitations):
            self.state.invitations.append(Invitation(group=ev.group, by=ev.by))
        self._changed(Change.INVITATIONS)

    # ---- conversations -----------------------------------------------------------------------

    @staticmethod
    def _valid_name(name: str, what: str) -> str:
        name = name.strip().lstrip("#@") if what == "group" else name.strip().lstrip("@")
        try:
            check_name(name, what)
        except ChatError as e:
            raise InvalidArgument(e.message) from None
        return name

    def _conversation(self, kind: Kind, name: str) -> Conversation:
        key = conv_key(kind, name)
        conv = self.state.conversations.get(key)
        if conv is None:
            conv = Conversation(kind=kind, name=name)
            self.state.conversations[key] = conv
        return conv

    def conversation(self, key: str | None) -> Conversation | None:
        return self.state.conversations.get(key) if key else None

    @property
    def current(self) -> Conversation | None:
        return self.conversation(self.state.current)

    def close_conversation(self) -> None:
        """Back to the list (phone layout): no conversation is open, so new messages count as
        unread again."""
        self.state.current = None
        self._changed(Change.CONVERSATIONS, Change.MESSAGES)

    async def start_private(self, user: str) -> Conversation:
        """Opens (creating if needed) the private chat with `user`; NotFound if no such user."""
        user = self._valid_name(user, "user")
        if _same(user, self.state.user):
            raise InvalidArgument("that is you: pick someone else to chat with")
        key = conv_key(Kind.PRIVATE, user)
        if key not in self.state.conversations:
            # history doubles as the existence check (NOT_FOUND for an unknown name).
            msgs = await self._client().history(user, self.history_page)
            if any(m.is_group for m in msgs):
                raise NotFound(f"{user} is a group, not a user: join it instead")
            conv = self._conversation(Kind.PRIVATE, user)
            self._fill_history(conv, msgs)
            self._changed(Change.CONVERSATIONS)
        await self.open_conversation(key)
        return self.state.conversations[key]

    async def open_conversation(self, key: str) -> Conversation:
        """Makes `key` the current conversation, clears its unread count and loads its history
        the first time (failure is shown in the conversation, not raised)."""
        conv = self.state.conversations.get(key)
        if conv is None:
            raise NotFound(f"no conversation {key}")
        self.state.current = key
        conv.unread = conv.mentions = 0
        self._mark_read(conv)
        self._changed(Change.CONVERSATIONS, Change.MESSAGES)
        if conv.kind is Kind.GROUP and not conv.closed:
            # Counts, roles, online marks and the topic: fetched when a group is looked at, then
            # kept current by member and topic events.
            self._spawn(self._quietly(self.refresh_groups()), "gui-refresh-groups")
            self._spawn(self._quietly(self.refresh_members(conv.name)), "gui-refresh-members")
            self._spawn(self._quietly(self.refresh_topic(conv.name)), "gui-refresh-topic")
        if not conv.history_loaded:
            await self.load_history(conv)
            if self.state.current == key:
                self._mark_read(conv)
        return conv

    @staticmethod
    def _peer(conv: Conversation) -> str:
        return f"#{conv.name}" if conv.kind is Kind.GROUP else conv.name

    async def load_history(self, conv: Conversation) -> None:
        try:
            msgs = await self._client().history(self._peer(conv), self.history_page)
        except ChatError as e:
            conv.history_error = f"could not load the history: {e.message}"
        else:
            self._fill_history(conv, msgs)
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    def _merge(self, conv: Conversation, m: Message) -> bool:
        """Adds message `m`, or brings the line already shown up to date with it (history is
        the source of truth: edits, deletions and reactions made while this client was away
        arrive that way). True if a line was added."""
        line = self._line(m)
        if conv.add(line):
            return True
        shown = conv.find(m.id)
        if shown is not None and shown.kind is not LineKind.FILE:
            shown.text, shown.edited, shown.deleted = line.text, line.edited, line.deleted
            shown.reactions, shown.mention, shown.reply_to = line.reactions, line.mention, line.reply_to
        return False

    def _fill_history(self, conv: Conversation, msgs: list[Message]) -> None:
        for m in msgs:
            self._merge(conv, m)
        conv.history_loaded, conv.history_error = True, ""
        conv.more = bool(getattr(msgs, "more", False))

    async def load_older(self, key: str | None = None) -> int:
        """Loads the page of messages just before the oldest one shown (scrolling back);
        returns how many were added. Does nothing while a page loads or when none is left."""
        conv = self.conversation(key or self.state.current)
        if conv is None or not conv.more or conv.loading_older or conv.closed:
            return 0
        oldest = conv.oldest_id
        if oldest is None:
            return 0
        conv.loading_older = True
        self._changed(Change.MESSAGES)
        added = 0
        try:
            page = await self._client().history(self._peer(conv), self.history_page, before=oldest)
            for m in page:
                added += self._merge(conv, m)
            conv.more = page.more and bool(page)
        finally:
            conv.loading_older = False
            self._changed(Change.MESSAGES)
        return added

    def _line(self, m: Message) -> ChatLine:
        own = _same(m.sender, self.state.user)
        return ChatLine(sender=m.sender, text=m.text, ts=m.time, own=own, id=m.id, reply_to=m.reply_to,
                        edited=m.is_edited, deleted=m.deleted,
                        reactions={e: list(u) for e, u in m.reactions.items()},
                        mention=not own and m.names(self.state.user))

    def _add_message(self, m: Message, unread: bool) -> Conversation:
        """Adds a message to its conversation. One the user sent from another device (a carbon:
        `from` is the user) goes to the chat with its `to`, as the user's own line."""
        if m.is_group:
            conv = self._conversation(Kind.GROUP, m.group or "")
        else:
            peer = m.to if _same(m.sender, self.state.user) else m.sender
            conv = self._conversation(Kind.PRIVATE, peer or m.sender)
        line = self._line(m)
        if conv.add(line) and not line.own:
            conv.typing.pop(m.sender.casefold(), None)
            if unread and self.state.current != conv.key:
                conv.unread += 1
                if m.raw.get("mention") is True:
                    conv.mentions += 1
        return conv

    async def send(self, text: str, key: str | None = None) -> ChatLine:
        """Sends `text` to the current (or given) conversation. The line shows at once as
        pending; it gets its id and server time on OK, or an error mark if refused."""
        conv = self.conversation(key or self.state.current)
        if conv is None:
            raise InvalidArgument("open a conversation first")
        text = " ".join(text.splitlines()).strip()  # the protocol carries one line per message
        if not text:
            raise InvalidArgument("the message is empty")
        try:
            if conv.editing is not None:
                target = conv.find(conv.editing)
                if target is not None:
                    await self.edit_message(target.id or 0, text, conv.key)
                    self._sent_here(conv)
                    return target
                conv.editing = None
            reply_to, conv.replying_to = conv.replying_to, None
            line = ChatLine(sender=self.state.user, text=text, ts=datetime.now(UTC), own=True, pending=True,
                            reply_to=reply_to)
            conv.lines.append(line)
            await self._deliver(conv, line)
        except ChatError as e:
            # The failure belongs to this conversation, wherever the user is by now: its
            # "not sent" line, and the text back in its own box (unless something new was
            # typed there meanwhile).
            conv.send_error = e.message
            if not conv.draft.strip():
                conv.put_draft(text)
            self._changed(Change.MESSAGES)
            raise
        self._sent_here(conv)
        return line

    def _sent_here(self, conv: Conversation, text: str | None = None) -> None:
        """A message went through in `conv`: its "not sent" line goes; with `text` (a retried
        line), so does that text if it is still waiting in the box."""
        conv.send_error = ""
        if text is not None and conv.draft.strip() == text:
            conv.put_draft("")
        self._changed(Change.MESSAGES)

    def set_draft(self, text: str, key: str | None = None) -> None:
        """What the user typed in a conversation's message box (the view reports each change):
        kept with that conversation until it is sent."""
        conv = self.conversation(key or self.state.current)
        if conv is not None:
            conv.draft = text

    # ---- messages have a life ----------------------------------------------------------------

    def start_reply(self, msg_id: int, key: str | None = None) -> None:
        """The next message sent in the conversation answers `msg_id` (the reply preview)."""
        conv = self.conversation(key or self.state.current)
        if conv is None or conv.find(msg_id) is None:
            raise InvalidArgument("that message is not in this conversation")
        conv.replying_to, conv.editing = msg_id, None
        self._changed(Change.MESSAGES)

    def cancel_reply(self, key: str | None = None) -> None:
        conv = self.conversation(key or self.state.current)
        if conv is not None and (conv.replying_to is not None or conv.editing is not None):
            if conv.editing is not None:
                conv.put_draft("")  # the box held the message being edited
            conv.replying_to = conv.editing = None
            self._changed(Change.MESSAGES)

    def start_edit(self, msg_id: int, key: str | None = None) -> str:
        """The composer edits own message `msg_id`; returns its text (to put in the box)."""
        conv = self.conversation(key or self.state.current)
        line = conv.find(msg_id) if conv is not None else None
        if conv is None or line is None or not line.own or line.deleted:
            raise InvalidArgument("you can edit only your own messages")
        conv.editing, conv.replying_to = msg_id, None
        conv.put_draft(line.text)
        self._changed(Change.MESSAGES)
        return line.text

    def _located(self, msg_id: int) -> tuple[Conversation, ChatLine] | None:
        return self.state.find_line(msg_id)

    async def edit_message(self, msg_id: int, text: str, key: str | None = None) -> None:
        """Changes the text of own message `msg_id` (the others see it live)."""
        text = " ".join(text.splitlines()).strip()
        if not text:
            raise InvalidArgument("the message is empty: delete it instead")
        await self._checked(self._client().edit(msg_id, text))
        found = self._located(msg_id)
        if found is not None:
            conv, line = found
            line.text, line.edited = text, True
            if conv.editing == msg_id:
                conv.editing = None
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    async def trace_message(self, msg_id: int) -> list[TraceHop]:
        """Where message `msg_id` went, hop by hop (one you sent or received)."""
        hops: list[TraceHop] = await self._checked(self._client().trace(msg_id))
        return hops

    async def delete_message(self, msg_id: int) -> None:
        """Deletes message `msg_id` for everyone (own messages; any in a group you moderate)."""
        await self._checked(self._client().delete(msg_id))
        self._tombstone(msg_id)
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    def _tombstone(self, msg_id: int) -> None:
        found = self._located(msg_id)
        if found is not None:
            conv, line = found
            line.text, line.deleted, line.reactions = "", True, {}
            if conv.replying_to == msg_id:
                conv.replying_to = None
            if conv.editing == msg_id:
                conv.editing = None

    async def toggle_reaction(self, msg_id: int, emoji: str) -> bool:
        """Adds the user's reaction `emoji` to `msg_id`, or takes it back if already there;
        returns whether it is on now."""
        found = self._located(msg_id)
        on = not (found is not None and found[1].reacted(emoji, self.state.user))
        client = self._client()
        await self._checked(client.react(msg_id, emoji) if on else client.unreact(msg_id, emoji))
        found = self._located(msg_id)
        if found is not None:
            found[1].set_reaction(emoji, self.state.user, on)
        self._changed(Change.MESSAGES)
        return on

    async def search(self, query: str, scope: str | None = None) -> list[SearchHit]:
        """Messages the user may read matching `query` (scope "#GROUP" or "@USER"), best first;
        kept in state.search_results for the view."""
        query = " ".join(query.split())
        st = self.state
        st.search_query, st.search_scope, st.search_error = query, scope, ""
        if not query:
            st.search_results = []
            self._changed(Change.SEARCH)
            return []
        st.searching = True
        self._changed(Change.SEARCH)
        try:
            hits = await self._checked(self._client().search(query, scope))
        except ChatError as e:
            st.search_results, st.search_error = [], e.message
            raise
        else:
            st.search_results = hits
        finally:
            st.searching = False
            self._changed(Change.SEARCH)
        return hits

    def clear_search(self) -> None:
        st = self.state
        st.search_query, st.search_results, st.search_error = "", [], ""
        self._changed(Change.SEARCH)

    async def open_hit(self, hit: SearchHit) -> Conversation:
        """Opens the conversation of a search result and marks the message: when it is not
        shown yet, the page around it is loaded (history `around` its id), then what lies
        between that page and the messages shown (at most GAP_FILL of them)."""
        if hit.kind == "group":
            conv = self._conversation(Kind.GROUP, hit.peer.lstrip("#"))
        else:
            conv = self._conversation(Kind.PRIVATE, hit.peer)
        conv.highlight = hit.message.id
        await self.open_conversation(conv.key)
        if conv.find(hit.message.id) is None:
            shown = conv.oldest_id
            try:
                page = await self._client().history(self._peer(conv), self.history_page, around=hit.message.id)
                for m in page:
                    self._merge(conv, m)
                if page and shown is not None and page[-1].id < shown:
                    for m in await self._client().history(self._peer(conv), GAP_FILL, between=(page[-1].id, shown)):
                        self._merge(conv, m)
                conv.more = conv.more or page.more  # older ones, if any, come on scroll
            except ChatError as e:
                conv.history_error = f"could not load the history around the result: {e.message}"
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)
        return conv

    def _on_change(self, ev: EditedEvent | DeletedEvent | ReactionEvent) -> None:
        found = self._located(ev.id)
        if found is None:
            return  # not shown here: its current state comes with the history when opened
        conv, line = found
        if isinstance(ev, EditedEvent):
            line.text, line.edited = ev.text, True
            line.mention = not line.own and Message(id=0, sender="", text=ev.text, ts="").names(self.state.user)
        elif isinstance(ev, DeletedEvent):
            self._tombstone(ev.id)
        else:
            line.set_reaction(ev.emoji, ev.user, ev.on)
        changes = [Change.CONVERSATIONS] if conv.last is line else []
        if conv.key == self.state.current:
            changes.append(Change.MESSAGES)
        self._changed(*changes)

    async def retry(self, line: ChatLine, key: str | None = None) -> ChatLine:
        """Sends a line that failed again (its Retry button) to the conversation it was written
        for, whichever is open now (`key` is not needed); raises like send."""
        # By identity: an equal line may be in another conversation (the same text sent twice).
        conv = next((c for c in self.state.conversations.values() if any(ln is line for ln in c.lines)), None)
        if conv is None:
            raise InvalidArgument("that message is no longer in the conversation")
        if not line.error:
            return line
        try:
            await self._deliver(conv, line)
        except ChatError as e:
            conv.send_error = e.message
            self._changed(Change.MESSAGES)
            raise
        self._sent_here(conv, line.text)
        return line

    async def _deliver(self, conv: Conversation, line: ChatLine) -> None:
        line.pending, line.error = True, ""
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)
        try:
            client = self._client()
            if line.reply_to is not None:
                sent = await self._checked(client.reply(line.reply_to, line.text))
            elif conv.kind is Kind.GROUP:
                sent = await self._checked(client.send_group(conv.name, line.text))
            else:
                sent = await self._checked(client.send_private(conv.name, line.text))
        except ChatError as e:
            line.pending, line.error = False, e.message
            self._changed(Change.MESSAGES)
            raise
        line.pending, line.id = False, sent.id
        line.ts = sent.time or line.ts
        self._changed(Change.MESSAGES, Change.CONVERSATIONS)

    # ---- files -------------------------------------------------------------------------------

    async def refresh_files(self, unread: bool = False) -> None:
        """Files waiting for the user; at login they count as unread like waiting messages."""
        files = await self._client().pending_files()
        self.state.incoming_files = {f.id: f for f in files}
        for f in files:
            self._file_line(f, unread=unread)
        self._changed(Change.FILES, Change.CONVERSATIONS, Change.MESSAGES)

    def _file_line(self, f: FileInfo, unread: bool) -> None:
        """A received file also shows as a line in its conversation: the group's for a group
        file, else the private chat with its sender."""
        conv = self._conversation(Kind.GROUP, f.group) if f.group else self._conversation(Kind.PRIVATE, f.sender)
        if any(ln.file is not None and ln.file.id == f.id for ln in conv.lines):
            return
        own = _same(f.sender, self.state.user)
        conv.add(ChatLine(sender=f.sender, text=f"sent a file: {sanitize(f.name)} ({human_size(f.size)})",
                          ts=f.time, kind=LineKind.FILE, file=f, own=own))
        if unread and not own and self.state.current != conv.key:
            conv.unread += 1

    def _progress(self, t: Transfer) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            t.done_bytes, t.size = done, total or t.size
            self._changed(Change.FILES)

        return progress

    def track_transfer(self, direction: str, name: str, peer: str, size: int) -> Transfer:
        """A transfer the view drives itself (the browser uploading to the web server, before
        send_file), shown with the others."""
        t = Transfer(tid=next(self._tids), direction=direction, name=name, peer=peer, size=size)
        self.state.transfers.append(t)
        self._changed(Change.FILES)
        return t

    def update_transfer(self, t: Transfer, *, done_bytes: int | None = None, error: str = "",
                        finished: bool = False) -> None:
        if done_bytes is not None:
            t.done_bytes = done_bytes
        if error:
            t.state, t.error = TransferState.FAILED, error
        elif finished:
            t.state = TransferState.DONE
        self._changed(Change.FILES)

    def forget_transfer(self, t: Transfer) -> None:
        with contextlib.suppress(ValueError):
            self.state.transfers.remove(t)
        self._changed(Change.FILES)

    def mark_saved(self, file_id: int, where: str) -> None:
        """Records where a received file ended up (the web view hands it to the browser)."""
        self.state.saved_files[file_id] = where
        self._changed(Change.FILES, Change.MESSAGES)

    async def send_file(self, to: str, path: Path | str, name: str | None = None) -> Transfer:
        """Uploads a local file to user `to`, or to a group as "#GROUP" (progress in
        state.transfers). Shows a file line in that conversation when stored; raises the
        realm's error otherwise."""
        group = to.startswith("#")
        to = self._valid_name(to, "group" if group else "user")
        p = Path(path)
        # Only for the progress bar before the first chunk; chat_cli reports the real size.
        size = await asyncio.to_thread(lambda: p.stat().st_size if p.is_file() else 0)
        t = Transfer(tid=next(self._tids), direction="up", name=name or p.name, peer=to, size=size)
        self.state.transfers.append(t)
        self._changed(Change.FILES)
        try:
            up = await self._client().send_file(f"#{to}" if group else to, p, self._progress(t), name=name)
        except ChatError as e:
            t.state, t.error = TransferState.FAILED, e.message
            self._changed(Change.FILES)
            raise
        t.state, t.sha256, t.name = TransferState.DONE, up.sha256, up.name
        conv = self._conversation(Kind.GROUP if group else Kind.PRIVATE, to)
        now = datetime.now(UTC)
        # The file's id rides along, so the same file pushed back (a group's own copy) is one line.
        info = FileInfo(id=up.id, sender=self.state.user, name=up.name, size=up.size, sha256=up.sha256,
                        ts=now.isoformat(), group=to if group else None)
        if not any(ln.file is not None and ln.file.id == up.id for ln in conv.lines):
            conv.add(ChatLine(sender=self.state.user, text=f"sent a file: {sanitize(up.name)} ({human_size(up.size)})",
                              ts=now, own=True, kind=LineKind.FILE, file=info))
        self._changed(Change.FILES, Change.MESSAGES, Change.CONVERSATIONS)
        return t

    async def save_file(self, file_id: int, dest_dir: Path | str | None = None) -> Transfer:
        """Downloads an incoming file into the downloads directory; chat_cli verifies the
        sha256 before the file gets its name. Returns the finished transfer (path set)."""
        info = self.state.incoming_files.get(file_id)
        t = Transfer(tid=next(self._tids), direction="down", name=info.name if info else f"file {file_id}",
                     peer=info.sender if info else "", size=info.size if info else 0)
        self.state.transfers.append(t)
        self._changed(Change.FILES)
        try:
            got = await self._client().receive_file(file_id, Path(dest_dir or self.downloads), self._progress(t))
        except ChatError as e:
            t.state, t.error = TransferState.FAILED, e.message
            self._changed(Change.FILES)
            raise
        t.state, t.path, t.sha256 = TransferState.DONE, got.path, got.sha256
        self.state.saved_files[file_id] = got.path
        self.state.incoming_files.pop(file_id, None)
        self._changed(Change.FILES, Change.MESSAGES)
        return t

    # ---- events from the client --------------------------------------------------------------

    def _on_event(self, client: ChatClient, ev: Event) -> None:
        """Called by chat_cli's reader for every event, in order. Never raises."""
        if client is not self.client:
            return
        if isinstance(ev, ConnectionEvent):
            self._on_connection(ev)
            return
        if not self.state.logged_in:
            return
        if isinstance(ev, MessageEvent):
            if not ev.backlog and not ev.own:
                self._heard_from(ev.message.sender)
            conv = self._add_message(ev.message, unread=True)
            if conv.key == self.state.current:
                self._mark_read(conv)  # arrived in the conversation the user is looking at
            elif ev.own:
                conv.read_id = max(conv.read_id, ev.message.id)  # what we wrote elsewhere is read
            self._changed(Change.CONVERSATIONS, *([Change.MESSAGES] if conv.key == self.state.current else []))
        elif isinstance(ev, ReadEvent):
            self._on_read(ev)
        elif isinstance(ev, SeenEvent):
            conv = self.state.conversations.get(conv_key(Kind.PRIVATE, ev.by))
            if conv is not None and ev.id > conv.seen_id:
                conv.seen_id = ev.id
                self._changed(Change.MESSAGES)
        elif isinstance(ev, PresenceEvent):
            self._on_presence(ev)
        elif isinstance(ev, TypingEvent):
            self._on_typing(ev)
        elif isinstance(ev, EditedEvent | DeletedEvent | ReactionEvent):
            self._on_change(ev)
        elif isinstance(ev, FileEvent):
            self.state.incoming_files[ev.file.id] = ev.file
            self._file_line(ev.file, unread=True)
            self._changed(Change.FILES, Change.CONVERSATIONS, Change.MESSAGES)
        elif isinstance(ev, MemberEvent):
            self._on_member(ev)
        elif isinstance(ev, TopicEvent):
            self._on_topic(ev)
        elif isinstance(ev, GroupModeEvent):
            self._on_group_mode(ev)
        elif isinstance(ev, GroupKeyEvent):
            self._on_group_key(ev)
        elif isinstance(ev, GroupDeletedEvent):
            by = "you" if _same(ev.by, self.state.user) else ev.by
            self._group_notice(ev.group, sanitize(f"{by} deleted this group"))
            self._group_gone(ev.group, f"{by} deleted this group")
        elif isinstance(ev, InvitedEvent):
            self._on_invited(ev)
        elif isinstance(ev, SessionEvent):
            self._notify(f"session {ev.state}: {ev.message}" if ev.message else f"session {ev.state}")
        elif isinstance(ev, OtherEvent) and ev.kind == "shutdown":
            self._notify(f"the realm is shutting down: {ev.raw.get('message') or 'it will be back soon'}")

    def _on_connection(self, ev: ConnectionEvent) -> None:
        st = self.state
        if ev.state is ConnState.DISCONNECTED:
            st.status, st.status_detail = Status.RECONNECTING, f"connection lost: {ev.detail}"
        elif ev.state is ConnState.RECONNECTING:
            st.status, st.status_detail = Status.RECONNECTING, f"reconnecting to {st.host}:{st.port} ({ev.detail})"
        elif ev.state is ConnState.RECONNECTED:
            client = self.client
            if client is not None and client.user:
                st.status, st.status_detail = Status.ONLINE, f"reconnected to realm {ev.realm}"
                st.realm = ev.realm or st.realm
                self._spawn(self._after_reconnect(), "gui-after-reconnect")
            else:
                # Re-authentication failed (or we were not logged in): back to the login form.
                was_user = st.user
                st.user = ""
                st.status, st.status_detail = Status.CONNECTED, ev.detail
                if was_user:
                    self._notify(f"reconnected, but logged out: {ev.detail}")
        elif ev.state is ConnState.CLOSED:
            st.status, st.status_detail = Status.OFFLINE, "disconnected"
        # The online list says whether it is current (it is not while the realm is gone).
        self._changed(Change.STATUS, Change.ONLINE)

    async def _after_reconnect(self) -> None:
        """Backlog messages come as events (chat_cli catches up); refresh what has no events
        (counts read elsewhere meanwhile, presence changes missed while away)."""
        with contextlib.suppress(ChatError):
            await self.refresh_conversations()
        with contextlib.suppress(ChatError):
            await self.refresh_groups()
        with contextlib.suppress(ChatError):
            await self.refresh_online()
        with contextlib.suppress(ChatError):
            await self.refresh_files()
        # Messages sent to an open conversation while we were away may have been delivered to
        # no one (pushed to our dead socket is impossible; queued ones come via catch-up), but
        # history is the source of truth: reload the open one.
        conv = self.current
        if conv is not None:
            await self.load_history(conv)
            if conv.kind is Kind.GROUP and not conv.closed:
                await self._quietly(self.refresh_members(conv.name))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


__all__ = ["Change", "ChatController", "human_size", "parse_ts"]
