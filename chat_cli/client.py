"""The asyncio client library of the realm text protocol (port 8000).

    client = await ChatClient.connect("127.0.0.1", 8000, auto_reconnect=True)
    await client.auth("alice", "pw")
    await client.send_private("bob", "halo apa kabar")
    async for ev in client.events():
        ...

ChatClient is the facade; the work is done by its parts: connection.py (the socket, framing,
matching responses to calls, reconnect and re-auth), verbs.py (the verb table: each method's
wire line and the rules of its arguments), files.py (uploads and downloads) and events.py
(typed events and their routing). Here each method builds its line, makes the call and turns
the OK object into the typed result of models.py.

Failures raise realmchat.errors.ChatError (the typed subclass for the code: NotFound,
Unauthenticated, ...); a lost connection fails every pending call with Unavailable.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from ssl import SSLContext
from typing import Any

from realmchat.errors import ChatError, InvalidArgument

from . import files
from .connection import DEFAULT_LINE_LIMIT, Connection, Settings, WireTap
from .events import EventCallback, EventHub
from .files import ProgressCallback, claim_free_name
from .models import (
    Ban,
    ConversationInfo,
    Downloaded,
    Edited,
    Event,
    FileInfo,
    GroupInfo,
    GroupListing,
    HistoryPage,
    Member,
    MemberList,
    Message,
    MessageEvent,
    Moderated,
    Presence,
    SearchHit,
    Sent,
    Session,
    TopicInfo,
    TraceHop,
    Uploaded,
    Waiting,
)
from .verbs import CLEAR, Ref, check_text, check_word, verb

__all__ = ["ChatClient", "ChatError", "EventCallback", "ProgressCallback", "claim_free_name"]


def _setting(name: str) -> Any:
    """An option of the constructor, kept in the connection's Settings (readable and settable)."""
    return property(lambda self: getattr(self._settings, name),
                    lambda self, value: setattr(self._settings, name, value))


def _sent(r: dict[str, Any]) -> Sent:
    return Sent(id=int(r.get("id", 0)), ts=str(r.get("ts", "")))


def _moderated(r: dict[str, Any], group: str, user: str) -> Moderated:
    return Moderated(group=str(r.get("group", group)), user=str(r.get("user", user)), role=str(r.get("role", "")))


def _messages(r: dict[str, Any]) -> list[Message]:
    return [Message.from_wire(m) for m in r.get("messages", []) if isinstance(m, dict)]


def _presence(r: dict[str, Any], default: str) -> str:
    """The new status in an away/back OK: `presence` (`status` is the OK itself)."""
    value = r.get("presence")
    return str(value) if value else default


class ChatClient:
    """An asyncio client of one realm.

    Create and connect in one step with `await ChatClient.connect(host, port, **options)`, or
    `client = ChatClient(host, port, **options); await client.open()`. It is also an async
    context manager (`async with await ChatClient.connect(...) as c:` closes on exit).

    Options:
      auto_reconnect: on connection loss, reconnect with exponential backoff (0.2 s .. 5 s),
        re-authenticate with the credentials of the last successful auth(), and (catch_up)
        fetch what was queued meanwhile: inbox and inboxgroup of every group, delivered as
        MessageEvent(backlog=True). The same re-authentication happens when the server reports
        {"event":"session","state":"expired"}.
      on_event: a callback for every event (in addition to events()).
      call_timeout: seconds to wait for any one response (None: wait as long as the connection
        lives); a call that times out raises Unavailable and its late response is dropped.
      line_limit: the longest response line accepted (default 64 MiB).
      wire_tap: sees every raw line sent and received (the terminal's --json mode uses it).
      ssl: a TLS client context (chat_cli.tls.client_context) for a realm that serves TLS;
        None: plain TCP. The certificate is checked against `host` unless server_hostname says
        which name to expect.

    Methods may be called concurrently from many tasks: they are pipelined on the connection and
    each gets its own response. Every method raises ChatError (typed: NotFound, Unauthenticated,
    AlreadyExists, PermissionDenied, InvalidArgument, Unimplemented, ResourceExhausted,
    Unavailable, Internal) with .code and .message.
    """

    host = _setting("host")
    port = _setting("port")
    auto_reconnect = _setting("auto_reconnect")
    catch_up = _setting("catch_up")
    call_timeout = _setting("call_timeout")
    connect_timeout = _setting("connect_timeout")
    line_limit = _setting("line_limit")
    reconnect_min_delay = _setting("reconnect_min_delay")
    reconnect_max_delay = _setting("reconnect_max_delay")
    wire_tap = _setting("wire_tap")
    ssl = _setting("ssl")
    server_hostname = _setting("server_hostname")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        auto_reconnect: bool = False,
        catch_up: bool = True,
        on_event: EventCallback | None = None,
        call_timeout: float | None = None,
        connect_timeout: float = 10.0,
        line_limit: int = DEFAULT_LINE_LIMIT,
        reconnect_min_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        wire_tap: WireTap | None = None,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._settings = Settings(host, port, auto_reconnect, catch_up, call_timeout, connect_timeout, line_limit,
                                  reconnect_min_delay, reconnect_max_delay, wire_tap, ssl, server_hostname)
        self._hub = EventHub(on_event)
        self._conn = Connection(self._settings, self._hub)
        self._conn.relogin = self.auth
        self._conn.catch_up = self._catch_up

    # ---- connection ---------------------------------------------------------------------

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> ChatClient:
        """Connects (waits for the realm's hello) and returns the client. Raises Unavailable if
        the realm cannot be reached within connect_timeout."""
        client = cls(host, port, **options)
        await client.open()
        return client

    async def open(self) -> None:
        """Opens the connection (again, after a close() or an unrecovered loss)."""
        await self._conn.open()

    async def close(self) -> None:
        """Closes the connection for good: no reconnect; pending calls fail with Unavailable;
        events() iterators end after a ConnectionEvent(CLOSED)."""
        await self._conn.close()

    async def __aenter__(self) -> ChatClient:
        if self._conn.link is None:
            await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def on_event(self) -> EventCallback | None:
        return self._hub.on_event

    @on_event.setter
    def on_event(self, callback: EventCallback | None) -> None:
        self._hub.on_event = callback

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def pending_calls(self) -> int:
        """Commands sent and not yet answered (e.g. for a busy indicator)."""
        return self._conn.pending_calls

    @property
    def user(self) -> str | None:
        """The authenticated user of this connection, or None."""
        return self._conn.user

    @property
    def realm(self) -> str:
        """The realm's name from its hello (or from auth)."""
        return self._conn.realm

    def events(self) -> AsyncIterator[Event]:
        """An async iterator over every event from now on (each call gets its own stream, so
        several consumers each see every event). The first subscriber also gets the events that
        arrived while nobody listened. It ends after ConnectionEvent(CLOSED), or after
        DISCONNECTED when auto_reconnect is off."""
        return self._hub.subscribe()

    async def _send(self, wire: str, *args: Any) -> dict[str, Any]:
        """One call of protocol verb `wire` with its arguments (checked by the verb table)."""
        result: dict[str, Any] = await self._conn.call(verb(wire).line(*args))
        return result

    async def command(self, line: str) -> dict[str, Any]:
        """Sends one raw protocol line (no payload: not `sendfile` nor `receivefile ID`) and
        returns the OK object; raises ChatError for an ERROR. For verbs this class lacks."""
        line = line.rstrip("\r\n")
        if "\n" in line or "\r" in line:
            raise InvalidArgument("one command, one line")
        wire = line.strip().split(" ", 1)[0].lower()
        if wire == "sendfile" or (wire == "receivefile" and line.split()[1:]):
            raise InvalidArgument(f"use send_file()/receive_file() for {wire}: it carries a payload")
        if not line.strip():
            raise InvalidArgument("empty command")
        result: dict[str, Any] = await self._conn.call(line)
        return result

    async def _catch_up(self) -> None:
        """After a re-login: what was queued meanwhile, as MessageEvent(backlog=True)."""
        for msg in await self.inbox():
            self._hub.emit(MessageEvent(msg, backlog=True))
        for g in await self.groups():
            for msg in await self.inbox_group(g.name):
                self._hub.emit(MessageEvent(msg, backlog=True))

    # ---- accounts -------------------------------------------------------------------------

    async def register(self, user: str, password: str) -> str:
        """Creates an account; returns the user name as stored. ALREADY_EXISTS, INVALID_ARGUMENT."""
        return str((await self._send("register", user, password)).get("user", user))

    async def auth(self, user: str, password: str) -> Session:
        """Logs in; the credentials are remembered for auto_reconnect. UNAUTHENTICATED. The
        session's `waiting` says how many messages wait and where (nothing is fetched: `inbox`)."""
        r = await self._send("auth", user, password)
        session = Session(user=str(r.get("user", user)), realm=str(r.get("realm", self._conn.realm)),
                          waiting=Waiting.from_wire(r.get("waiting")))
        self._conn.logged_in(user, password, session.user, session.realm)
        return session

    async def logout(self) -> None:
        """Ends the session (the connection stays open) and forgets the credentials."""
        self._conn.logged_out()
        await self._send("logout")
        self._conn.user = None

    async def quit(self) -> None:
        """Says bye: the realm answers and closes the connection; then the client is closed."""
        self._conn.live().expect_close = True
        try:
            await self._send("quit")
        finally:
            await self.close()

    # ---- messages -------------------------------------------------------------------------

    async def send_private(self, to: str, text: str) -> Sent:
        """Sends a private message (single line). NOT_FOUND for an unknown user."""
        return _sent(await self._send("sendprivate", to, text))

    async def send_group(self, group: str, text: str) -> Sent:
        """Sends to a group. NOT_FOUND, PERMISSION_DENIED (not a member)."""
        return _sent(await self._send("sendgroup", group, text))

    async def _paged(self, wire: str, *args: str) -> list[Message]:
        out: list[Message] = []
        while True:
            r = await self._send(wire, *args)
            page = _messages(r)
            out.extend(m for m in page if not m.id or self._conn.seen.first_sight(m.id))
            # "more" means another page waits; an empty page with more=true would loop forever.
            if not r.get("more") or not page:
                return out

    async def inbox(self) -> list[Message]:
        """Private messages not yet delivered to this user (all pages), oldest first."""
        return await self._paged("inbox")

    async def inbox_group(self, group: str) -> list[Message]:
        """Messages of `group` not yet delivered to this user (all pages). NOT_FOUND,
        PERMISSION_DENIED."""
        return await self._paged("inboxgroup", group)

    async def history(self, peer: str, n: int | None = None, before: Ref | None = None,
                      after: Ref | None = None, around: Ref | None = None,
                      between: tuple[Ref, Ref] | None = None) -> HistoryPage:
        """The conversation with a user or a group ("#name" forces a group), delivered or not,
        oldest first: the latest n messages (the server's default if None), or the n just
        before message `before` / just after message `after` (one of the two at most). The
        result is a list of messages with `.more`: True when more exist beyond the page (older
        ones for a plain or `before` call, newer ones for `after`), so scrolling back is
        `history(peer, n, before=page[0].id)` while `more`. A reference may also be a time
        (ISO-8601 UTC); `around` gives n/2 before it and the rest from it on (a message id: that
        message among them), `between` those between two references, counted from the first.
        One of before, after, around and between at most."""
        r = await self._send("history", peer, n, before, after, around, between)
        return HistoryPage(_messages(r), more=r.get("more") is True)

    # ---- messages have a life -------------------------------------------------------------

    async def edit(self, message_id: int, text: str) -> Edited:
        """Replaces the text of your message `message_id` (the author only: PERMISSION_DENIED
        otherwise; NOT_FOUND for an unknown or deleted id). Everyone who can see it gets an
        EditedEvent."""
        r = await self._send("edit", message_id, text)
        return Edited(id=int(r.get("id", message_id)), edited=str(r.get("edited", "")))

    async def delete(self, message_id: int) -> int:
        """Deletes message `message_id` for everyone (its author, or an owner/admin of its
        group); they get a DeletedEvent and see a tombstone. Returns the id."""
        return int((await self._send("delete", message_id)).get("id", message_id))

    async def reply(self, message_id: int, text: str) -> Sent:
        """Answers message `message_id` in its own conversation (private or group): the new
        message carries reply_to=message_id."""
        return _sent(await self._send("reply", message_id, text))

    async def react(self, message_id: int, emoji: str) -> int:
        """Adds your reaction `emoji` (1-16 characters, no spaces) to message `message_id`."""
        return int((await self._send("react", message_id, emoji)).get("id", message_id))

    async def unreact(self, message_id: int, emoji: str) -> int:
        """Removes your reaction `emoji` from message `message_id`."""
        return int((await self._send("unreact", message_id, emoji)).get("id", message_id))

    async def search(self, query: str, scope: str | None = None) -> list[SearchHit]:
        """Messages you may read that match `query`, best first (at most 50), each with its
        conversation. `scope` narrows it to one conversation: "#GROUP" or "@USER" (a bare name
        is taken as a user). Deleted messages are never found."""
        r = await self._send("search", query, scope)
        me = self._conn.user
        return [SearchHit(message=m, peer=m.peer(me), kind="group" if m.is_group else "user") for m in _messages(r)]

    async def trace(self, message_id: int) -> list[TraceHop]:
        """Where message `message_id` went, hop by hop, oldest first: for a message you sent,
        every recipient's hops; for one you received, your own (NOT_FOUND otherwise)."""
        r = await self._send("trace", message_id)
        return [TraceHop.from_dict(h) for h in r.get("hops", ())]

    # ---- groups ---------------------------------------------------------------------------

    async def create_group(self, group: str, private: bool = False) -> str:
        """Creates a group; you become its owner. A private group can be joined only by invited
        users or with its key (set_group_key). Returns the name as stored. ALREADY_EXISTS (a
        group or a user has that name), INVALID_ARGUMENT."""
        return str((await self._send("creategroup", group, private)).get("group", group))

    async def join_group(self, group: str, key: str | None = None) -> str:
        """Joins a group; a private one needs an invitation or its `key`. NOT_FOUND,
        PERMISSION_DENIED (private and not invited, wrong or missing key, banned)."""
        return str((await self._send("joingroup", group, key)).get("group", group))

    async def leave_group(self, group: str) -> str:
        """Leaves a group. NOT_FOUND."""
        return str((await self._send("leavegroup", group)).get("group", group))

    async def groups(self) -> list[GroupInfo]:
        """The user's groups with role and member count (mode and topic when the realm says)."""
        r = await self._send("groups")
        return [GroupInfo.from_wire(g) for g in r.get("groups", []) if isinstance(g, dict)]

    async def list_groups(self, pattern: str | None = None) -> list[GroupListing]:
        """Public groups, plus the private ones you are in; `pattern` filters by name (the
        realm's matching, e.g. `prog*`)."""
        r = await self._send("listgroups", pattern)
        return [GroupListing.from_wire(g) for g in r.get("groups", []) if isinstance(g, dict)]

    async def members(self, group: str) -> MemberList:
        """The members of `group`: role, online, realm. A private group's members are visible
        to its members only (PERMISSION_DENIED). For the group's owner and admins `.banned`
        lists the bans in force (newest first); it is None for everyone else."""
        r = await self._send("members", group)
        banned = r.get("banned")
        return MemberList([Member.from_wire(m) for m in r.get("members", []) if isinstance(m, dict)],
                          [Ban.from_wire(b) for b in banned if isinstance(b, dict)]
                          if isinstance(banned, list) else None)

    async def invite(self, group: str, user: str) -> Moderated:
        """Invites `user` into `group` (owner/admin only); they get an InvitedEvent and may
        then join a private group without its key."""
        return _moderated(await self._send("invite", group, user), group, user)

    async def kick(self, group: str, user: str, reason: str | None = None) -> Moderated:
        """Removes `user` from `group` (owner/admin only, never the owner); they may join
        again. `reason` (one line) is shown to the members."""
        return _moderated(await self._send("kick", group, user, reason), group, user)

    async def ban(self, group: str, user: str, reason: str | None = None) -> Moderated:
        """Bans `user` from `group` (owner/admin only): a ban also kicks, and they cannot join
        again until unbanned."""
        return _moderated(await self._send("ban", group, user, reason), group, user)

    async def unban(self, group: str, user: str) -> Moderated:
        """Lifts a ban (owner/admin only)."""
        return _moderated(await self._send("unban", group, user), group, user)

    async def set_role(self, group: str, user: str, role: str) -> Moderated:
        """Makes a member an "admin" or a plain "member" (owner only)."""
        return _moderated(await self._send("role", group, user, role), group, user)

    async def topic(self, group: str) -> str:
        """The topic of `group` (empty if none)."""
        return str((await self._send("topic", group)).get("topic", "") or "")

    async def topic_info(self, group: str) -> TopicInfo:
        """The topic of `group` with who set it and when, and the group's mode, whether it has
        a key and when it was created."""
        return TopicInfo.from_wire(await self._send("topic", group))

    async def set_topic(self, group: str, text: str) -> str:
        """Sets the topic (owner/admin only; one line); returns it as stored. Every member gets
        a TopicEvent. (The text "-" alone clears it, as clear_topic does.)"""
        return str((await self._send("topic", group, check_text(text))).get("topic", text) or "")

    async def clear_topic(self, group: str) -> None:
        """Removes the topic (owner/admin); members get a TopicEvent with an empty topic."""
        await self._send("topic", group, "-")

    async def set_group_key(self, group: str, key: str) -> str:
        """Sets the key that lets anyone who knows it join the (private) group (owner/admin)."""
        return str((await self._send("groupkey", group, key)).get("group", group))

    async def clear_group_key(self, group: str) -> str:
        """Removes the group's key (owner/admin)."""
        return str((await self._send("groupkey", group, CLEAR)).get("group", group))

    async def set_group_mode(self, group: str, mode: str) -> str:
        """Makes the group "public" or "private" (owner/admin); returns the mode now. Members
        stay; the others get a GroupModeEvent. Private: it leaves other users' listgroups and
        takes an invitation or its key to join; public: anyone may join."""
        return str((await self._send("groupmode", group, mode)).get("mode", mode))

    async def delete_group(self, group: str) -> str:
        """Deletes the group for everyone (owner only); members get a GroupDeletedEvent."""
        return str((await self._send("deletegroup", group)).get("group", group))

    # ---- conversation state (kept by the server, the same on every device) ------------------

    async def conversations(self) -> list[ConversationInfo]:
        """Every conversation the user has, newest first: peer, kind ("user"/"group"), the last
        message, unread and mention counts, the id read up to and (private) how far the peer
        has read the user's own messages (`seen`, while the peer's receipts are on)."""
        r = await self._send("conversations")
        return [ConversationInfo.from_wire(c) for c in r.get("conversations", []) if isinstance(c, dict)]

    async def read(self, peer: str, message_id: int) -> int:
        """Marks the conversation with `peer` (a user, or a group; "#group" accepted) read up to
        `message_id`; returns where the read mark now is (it never moves back). The user's other
        sessions get a ReadEvent; the sender of a private message a SeenEvent (receipts on)."""
        return int((await self._send("read", peer, message_id)).get("read", message_id) or 0)

    async def away(self, message: str | None = None) -> str:
        """Sets the user away (with an optional one-line message); returns the new presence
        ("away")."""
        return _presence(await self._send("away", message), "away")

    async def back(self) -> str:
        """Online again after away(); returns the status."""
        return _presence(await self._send("back"), "online")

    async def typing(self, peer: str) -> None:
        """Tells `peer` (a user, or a group's members) that the user is typing. Not stored; it
        expires after a few seconds, so call it again every ~3 s while the user types."""
        await self._send("typing", peer)

    async def receipts(self, on: bool | None = None) -> bool:
        """Whether senders learn (SeenEvent) when this user reads their private messages: turns
        it on or off, or (None) asks which it is. Returns the setting now."""
        value = (await self._send("receipts", on)).get("receipts", on)
        return value is True or str(value).lower() in ("on", "true", "1")

    # ---- helpers --------------------------------------------------------------------------

    async def who(self) -> list[Presence]:
        """Online users: the realm of each session, status ("online"/"away") and away message."""
        r = await self._send("who")
        return [Presence.from_wire(p) for p in r.get("online", []) if isinstance(p, dict)]

    async def ping(self) -> float:
        """Round trip to the realm, in seconds."""
        start = time.perf_counter()
        await self._send("ping")
        return time.perf_counter() - start

    async def help(self) -> list[str]:
        """The realm's command list."""
        return [str(c) for c in (await self._send("help")).get("commands", [])]

    # ---- files ----------------------------------------------------------------------------

    async def send_group_file(self, group: str, path: str | os.PathLike[str],
                              progress: ProgressCallback | None = None, *, name: str | None = None) -> Uploaded:
        """Uploads a local file to `group` (members only): every member gets a FileEvent whose
        file.group is set, and may download it with receive_file."""
        return await self.send_file("#" + check_word(group, "group").lstrip("#"), path, progress, name=name)

    async def send_file(self, to: str, path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                        *, name: str | None = None) -> Uploaded:
        """Uploads the local file `path` (~ expanded) to user `to` (or to a group: "#GROUP") as
        `name` (default: the file's own name), streaming it in chunks: never read whole into
        memory. Other commands queue behind the upload (events keep flowing). Raises NotFound
        if the local file is missing, InvalidArgument if it is not a regular file, and the
        realm's errors (NOT_FOUND for an unknown user or group, RESOURCE_EXHAUSTED when too
        large). The realm's sha256 is checked against the one computed while sending."""
        return await files.send_file(self._conn, to, path, progress, name)

    async def pending_files(self) -> list[FileInfo]:
        """Files waiting for this user (not yet downloaded)."""
        return await files.pending_files(self._conn)

    async def receive_file(self, file_id: int, dest_dir: str | os.PathLike[str],
                           progress: ProgressCallback | None = None) -> Downloaded:
        """Downloads file `file_id` into `dest_dir` (created if needed; ~ expanded). The bytes
        stream to a hidden temp file, the sha256 is verified, and only then the file gets its
        name: the sender's bare name, or "name (1).ext", "name (2).ext"... if taken. An existing
        file is never overwritten; a failed download leaves nothing behind. NOT_FOUND for an
        unknown id; Internal if the checksum does not match."""
        return await files.receive_file(self._conn, file_id, dest_dir, progress)
