"""Typed results and events of the chat_cli library.

Every dataclass is built from one wire object with `from_wire(obj)`; unknown extra fields are
ignored (the protocol may grow) and the original object is kept in `raw` for callers that want
a field this version does not model yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


def parse_ts(ts: str) -> datetime | None:
    """An ISO-8601 UTC timestamp ("2026-11-24T07:42:01.123Z") as an aware datetime, or None if
    the server sent something unparsable (shown raw rather than failing the whole call)."""
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else 0


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    return "" if value is None else str(value)


def _reactions(value: Any) -> dict[str, tuple[str, ...]]:
    """{"EMOJI": ["user", ...]} as emoji -> users (in the server's order); emojis nobody uses
    any more are left out."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for emoji, users in value.items():
        if isinstance(users, list | tuple):
            names = tuple(str(u) for u in users if u is not None and str(u))
            if names:
                out[str(emoji)] = names
    return out


def _same_name(a: str | None, b: str | None) -> bool:
    # Names are unique ignoring case (realmchat.names).
    return a is not None and b is not None and a.casefold() == b.casefold()


@dataclass(frozen=True, slots=True)
class Message:
    """A private message (`to` set, `group` None) or a group message (`group` set, `to` None).

    Version 2 ("messages have a life"): `reply_to` is the id of the message this one answers;
    `edited` the time of the last edit ("" if never edited); `deleted` True for a tombstone
    (text then empty); `reactions` emoji -> the users who reacted with it; `mention` True when
    the message was pushed to a user it names as @user.
    """

    id: int
    sender: str
    text: str
    ts: str
    to: str | None = None
    group: str | None = None
    reply_to: int | None = None
    edited: str = ""
    deleted: bool = False
    reactions: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    mention: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_group(self) -> bool:
        return self.group is not None

    @property
    def time(self) -> datetime | None:
        return parse_ts(self.ts)

    @property
    def is_edited(self) -> bool:
        return bool(self.edited)

    def peer(self, me: str | None) -> str:
        """The conversation this message belongs to, seen by `me`: "#group" for a group, else
        the other user (the recipient of what `me` sent, the sender otherwise)."""
        if self.group is not None:
            return "#" + self.group
        if _same_name(self.sender, me):
            return self.to or ""
        return self.sender

    def names(self, user: str | None) -> bool:
        """True if the text mentions `user` as @user (the server's `mention` flag, or the text
        itself for messages fetched by history or sent by this session)."""
        if self.deleted:
            return False
        if self.mention:
            return True
        if not user:
            return False
        low = self.text.casefold()
        needle = "@" + user.casefold()
        start = 0
        while (i := low.find(needle, start)) >= 0:
            end = i + len(needle)
            before_ok = i == 0 or not (low[i - 1].isalnum() or low[i - 1] in "_.-")
            after_ok = end == len(low) or not (low[end].isalnum() or low[end] in "_-")
            if before_ok and after_ok:
                return True
            start = end
        return False

    def reacted(self, emoji: str, user: str | None) -> bool:
        """True if `user` reacted with `emoji`."""
        return any(_same_name(u, user) for u in self.reactions.get(emoji, ()))

    def with_edit(self, text: str, edited: str) -> Message:
        """This message after an EditedEvent."""
        return replace(self, text=text, edited=edited or self.edited or "edited")

    def with_deleted(self) -> Message:
        """The tombstone of this message after a DeletedEvent."""
        return replace(self, text="", deleted=True, reactions={}, mention=False)

    def with_reaction(self, emoji: str, user: str, on: bool) -> Message:
        """This message after a ReactionEvent (idempotent: adding twice or removing what is
        not there changes nothing)."""
        reactions = dict(self.reactions)
        users = [u for u in reactions.get(emoji, ()) if not _same_name(u, user)]
        if on:
            users.append(user)
        if users:
            reactions[emoji] = tuple(users)
        else:
            reactions.pop(emoji, None)
        return replace(self, reactions=reactions)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Message:
        group = obj.get("group")
        deleted = obj.get("deleted") is True
        return cls(
            id=_int(obj, "id"),
            sender=_str(obj, "from"),
            text="" if deleted else _str(obj, "text"),
            ts=_str(obj, "ts"),
            to=None if group is not None else _str(obj, "to"),
            group=None if group is None else str(group).lstrip("#"),
            reply_to=_int(obj, "reply_to") or None,
            edited=_str(obj, "edited") if obj.get("edited") not in (None, False, "") else "",
            deleted=deleted,
            reactions=_reactions(obj.get("reactions")),
            mention=obj.get("mention") is True,
            raw=obj,
        )


class HistoryPage(list[Message]):
    """The result of history(): the messages (oldest first) of one page, and `more`: True when
    older (for `before`, or a plain call) or newer (for `after`) messages exist beyond it. It is
    a list, so code that treated history() as a list of messages keeps working."""

    more: bool

    def __init__(self, messages: list[Message] | None = None, more: bool = False) -> None:
        super().__init__(messages or [])
        self.more = more

    @property
    def messages(self) -> list[Message]:
        return list(self)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: the message and the conversation it is in (`peer`: "#group" for a
    group, else the other user; `kind` "group" or "user"), ready to open."""

    message: Message
    peer: str
    kind: str  # "user" | "group"

    @property
    def group(self) -> str | None:
        return self.message.group


@dataclass(frozen=True, slots=True)
class Edited:
    """The OK of edit: the message id and the time of the edit."""

    id: int
    edited: str


@dataclass(frozen=True, slots=True)
class TraceHop:
    """One hop of a message's way (`trace`): `step` is stored, pushed, written, dropped,
    returned, inbox or delivered; `users` whom it concerns; `realm` and `sessions` only where
    they are yours; `why` what ended a delivery or why a message still waits."""

    at: str
    step: str
    users: tuple[str, ...] = ()
    realm: str = ""
    sessions: tuple[int, ...] = ()
    why: str = ""

    @property
    def time(self) -> datetime | None:
        return parse_ts(self.at)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceHop:
        return cls(str(d.get("at", "")), str(d.get("step", "")), tuple(str(u) for u in d.get("users", ())),
                   str(d.get("realm", "")), tuple(int(x) for x in d.get("sessions", ())), str(d.get("why", "")))


@dataclass(frozen=True, slots=True)
class Sent:
    """The OK of sendprivate / sendgroup: the stored message's id and timestamp."""

    id: int
    ts: str

    @property
    def time(self) -> datetime | None:
        return parse_ts(self.ts)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file waiting for (or pushed to) the user. `name` is a bare name chosen by the sender:
    never trust it as a path (receive_file strips it again)."""

    id: int
    sender: str
    name: str
    size: int
    sha256: str
    ts: str = ""
    group: str | None = None  # set for a file sent to a group (every member may download it)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def time(self) -> datetime | None:
        return parse_ts(self.ts)

    @property
    def is_group(self) -> bool:
        return self.group is not None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> FileInfo:
        group = obj.get("group")
        return cls(
            id=_int(obj, "id"),
            sender=_str(obj, "from"),
            name=_str(obj, "name"),
            size=_int(obj, "size"),
            sha256=_str(obj, "sha256"),
            ts=_str(obj, "ts"),
            group=None if group in (None, "") else str(group).lstrip("#"),
            raw=obj,
        )


@dataclass(frozen=True, slots=True)
class Uploaded:
    """The OK of sendfile: what the realm stored (its sha256 matched the local one)."""

    id: int
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A file written by receive_file: `path` is where it landed (a free name, never an
    existing file), its sha256 was verified against the server's."""

    file: FileInfo
    path: str

    @property
    def sha256(self) -> str:
        return self.file.sha256


class Status(StrEnum):
    """A user's presence (protocol version 2)."""

    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Presence:
    """One row of `who`: an online user and the realm of their session; `status` "online" or
    "away" and the away `message` when the realm says (version 2)."""

    user: str
    realm: str
    status: str = Status.ONLINE
    message: str = ""

    @property
    def away(self) -> bool:
        return self.status == Status.AWAY

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Presence:
        return cls(user=_str(obj, "user"), realm=_str(obj, "realm"), status=_str(obj, "status") or Status.ONLINE,
                   message=_str(obj, "message"))


class ConversationKind(StrEnum):
    USER = "user"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """One row of `conversations`: a conversation the user has (kept by the server, the same on
    every device). `unread` messages after `read` (the id read up to), `mentions` of them name
    the user; `last` the newest message (None for a conversation without messages yet);
    `seen` (private) the newest of the user's own messages the peer has read, 0 when the
    peer's receipts are off, for a group, or with a server that does not say."""

    peer: str
    kind: str  # "user" | "group"
    last: Message | None
    unread: int = 0
    mentions: int = 0
    read: int = 0
    seen: int = 0

    @property
    def is_group(self) -> bool:
        return self.kind == ConversationKind.GROUP

    @property
    def target(self) -> str:
        """The name to give history/read: "#group" for a group, the user name otherwise."""
        return f"#{self.peer}" if self.is_group else self.peer

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ConversationInfo:
        last = obj.get("last")
        return cls(peer=_str(obj, "peer").lstrip("#"), kind=_str(obj, "kind") or ConversationKind.USER,
                   last=Message.from_wire(last) if isinstance(last, dict) and last else None,
                   unread=_int(obj, "unread"), mentions=_int(obj, "mentions"), read=_int(obj, "read"),
                   seen=_int(obj, "seen"))


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One row of `groups`: a group the user belongs to."""

    name: str
    role: str  # "owner" | "admin" | "member"
    members: int
    mode: str = ""   # "public" | "private" (empty from a server that does not say)
    topic: str = ""

    @property
    def can_moderate(self) -> bool:
        """Owner or admin: may invite, kick, ban, set the topic and the key."""
        return self.role in (Role.OWNER, Role.ADMIN)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GroupInfo:
        return cls(name=_str(obj, "group"), role=_str(obj, "role"), members=_int(obj, "members"),
                   mode=_str(obj, "mode"), topic=_str(obj, "topic"))


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class Mode(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class Member:
    """One row of `members GROUP`: a member, their role, and where they are online."""

    user: str
    role: str  # "owner" | "admin" | "member"
    online: bool
    realm: str = ""  # the realm of their session when online

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Member:
        online = obj.get("online")
        return cls(user=_str(obj, "user"), role=_str(obj, "role"),
                   online=online is True or str(online).lower() in ("true", "1"), realm=_str(obj, "realm"))


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban in force in a group, as `members GROUP` shows it to the group's owner and admins:
    who is banned, by whom, why ("" if no reason was given) and when (`at`, ISO-8601 UTC)."""

    user: str
    by: str
    reason: str = ""
    at: str = ""

    @property
    def when(self) -> datetime | None:
        return parse_ts(self.at)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Ban:
        return cls(user=_str(obj, "user"), by=_str(obj, "by"), reason=_str(obj, "reason"), at=_str(obj, "at"))


class MemberList(list[Member]):
    """The result of members(): the members, and `banned`: for the group's owner and admins the
    bans in force (newest first, at most 200; [] when nobody is banned), None for anyone else
    (the server does not tell them). It is a list, so code that treated members() as a list of
    members keeps working."""

    banned: list[Ban] | None

    def __init__(self, members: list[Member] | None = None, banned: list[Ban] | None = None) -> None:
        super().__init__(members or [])
        self.banned = banned

    @property
    def members(self) -> list[Member]:
        return list(self)


@dataclass(frozen=True, slots=True)
class GroupListing:
    """One row of `listgroups`: a public group (or a private one you are in)."""

    name: str
    mode: str  # "public" | "private"
    topic: str
    members: int

    @property
    def private(self) -> bool:
        return self.mode == Mode.PRIVATE

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> GroupListing:
        return cls(name=_str(obj, "group"), mode=_str(obj, "mode") or Mode.PUBLIC, topic=_str(obj, "topic"),
                   members=_int(obj, "members"))


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What `topic GROUP` answers: the topic, who set it and when ("" when the server does not
    know), and the group's mode, whether it has a key and when it was created."""

    group: str
    topic: str
    by: str = ""
    at: str = ""
    mode: str = ""
    has_key: bool = False
    created: str = ""

    @property
    def set_when(self) -> datetime | None:
        return parse_ts(self.at)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> TopicInfo:
        return cls(group=_str(obj, "group"), topic=_str(obj, "topic"), by=_str(obj, "topic_by"),
                   at=_str(obj, "topic_at"), mode=_str(obj, "mode"), has_key=obj.get("has_key") is True,
                   created=_str(obj, "created"))


@dataclass(frozen=True, slots=True)
class Moderated:
    """The OK of invite, kick, ban, unban and role: who was acted on (and their role for role)."""

    group: str
    user: str
    role: str = ""


@dataclass(frozen=True, slots=True)
class WaitingCount:
    """Messages waiting in one conversation: from the user `peer`, or in the group `peer`."""

    peer: str
    kind: str  # "user" | "group"
    count: int

    @property
    def is_group(self) -> bool:
        return self.kind == ConversationKind.GROUP

    @property
    def label(self) -> str:
        """'2 from bob' or '1 in #progjar'."""
        return f"{self.count} in #{self.peer}" if self.is_group else f"{self.count} from {self.peer}"


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waited undelivered for the user when they logged in (the auth reply's `waiting`;
    counted only: the messages still come with `inbox`). The conversations with the most
    waiting are listed; `unlisted` more conversations had some too."""

    total: int = 0
    conversations: tuple[WaitingCount, ...] = ()
    unlisted: int = 0

    @classmethod
    def from_wire(cls, obj: Any) -> Waiting:
        if not isinstance(obj, dict):
            return cls()
        convs = obj.get("conversations")
        listed = tuple(WaitingCount(peer=_str(c, "peer").lstrip("#"), kind=_str(c, "kind") or ConversationKind.USER,
                                    count=_int(c, "count"))
                       for c in (convs if isinstance(convs, list) else []) if isinstance(c, dict))
        return cls(total=_int(obj, "total"), conversations=listed, unlisted=_int(obj, "unlisted"))

    @property
    def headline(self) -> str:
        """'3 messages waiting' ('' when nothing waits)."""
        return f"{self.total} message{'s' if self.total != 1 else ''} waiting" if self.total else ""

    @property
    def where(self) -> str:
        """'2 from bob, 1 in #progjar, and 3 more conversations'."""
        parts = [c.label for c in self.conversations]
        if self.unlisted:
            parts.append(f"and {self.unlisted} more conversation{'s' if self.unlisted != 1 else ''}")
        return ", ".join(parts)

    @property
    def line(self) -> str:
        """'3 messages waiting: 2 from bob, 1 in #progjar' ('' when nothing waits)."""
        where = self.where
        return f"{self.headline}: {where}" if self.total and where else self.headline


@dataclass(frozen=True, slots=True)
class Session:
    """The OK of auth: who, on which realm, and what waited for the user at that moment."""

    user: str
    realm: str
    waiting: Waiting = field(default_factory=Waiting)


# ---- events -------------------------------------------------------------------------------


class ConnState(StrEnum):
    CONNECTED = "connected"          # first connection established (hello received)
    DISCONNECTED = "disconnected"    # the connection was lost; pending calls failed UNAVAILABLE
    RECONNECTING = "reconnecting"    # auto_reconnect is trying (detail says which attempt)
    RECONNECTED = "reconnected"      # back, re-authenticated if credentials were remembered
    CLOSED = "closed"                # close() was called or the server said bye; final event


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A pushed private or group message. `backlog` is True for messages fetched by the
    library's own catch-up after a reconnect (inbox/inboxgroup), not pushed live."""

    message: Message
    backlog: bool = False
    # A carbon: a private message the user sent from another session (its sender is the user;
    # `to` is the peer). The library sets it; such a message belongs to the conversation with
    # `to` and is never unread.
    own: bool = False

    @property
    def kind(self) -> str:
        return "group" if self.message.is_group else "private"

    @property
    def peer(self) -> str:
        """The conversation this message belongs to: the group, else the other user."""
        m = self.message
        if m.group is not None:
            return m.group
        return (m.to or "") if self.own else m.sender

    @property
    def mention(self) -> bool:
        """The message names the user as @user (the realm says so)."""
        return self.message.raw.get("mention") is True


@dataclass(frozen=True, slots=True)
class FileEvent:
    """A file was sent to the user; download it with receive_file(file.id, dest_dir)."""

    file: FileInfo
    kind: str = "file"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """The server ended or changed the session (e.g. state "expired" after the main server lost
    it). With auto_reconnect the library re-authenticates by itself."""

    state: str
    message: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    kind: str = "session"


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """Produced by the library itself (never sent by the server): the connection's state."""

    state: ConnState
    detail: str = ""
    realm: str = ""
    kind: str = "connection"


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event kind this version does not know; tolerated and passed on unchanged."""

    kind: str
    raw: dict[str, Any] = field(default_factory=dict)


class MemberAction(StrEnum):
    JOIN = "join"
    LEAVE = "leave"
    KICK = "kick"
    BAN = "ban"
    UNBAN = "unban"
    INVITE = "invite"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """Someone joined, left, was invited, kicked, banned, unbanned or got a new role in `group`
    (`by` did it; `reason` for kick/ban if given; `role` the new role for "role"). A kicked or
    banned user gets this event about themselves too: they have lost access to the group."""

    group: str
    user: str
    action: str
    by: str = ""
    reason: str = ""
    role: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    kind: str = "member"

    @property
    def removes(self) -> bool:
        """The user is no longer a member after this (leave, kick, ban)."""
        return self.action in (MemberAction.LEAVE, MemberAction.KICK, MemberAction.BAN)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> MemberEvent:
        return cls(group=_str(obj, "group"), user=_str(obj, "user"), action=_str(obj, "action"),
                   by=_str(obj, "by"), reason=_str(obj, "reason"), role=_str(obj, "role"), raw=obj)


@dataclass(frozen=True, slots=True)
class TopicEvent:
    """The topic of `group` was set by `by` (empty: cleared), `at` (ISO-8601 UTC)."""

    group: str
    topic: str
    by: str = ""
    at: str = ""
    kind: str = "topic"


@dataclass(frozen=True, slots=True)
class GroupModeEvent:
    """`by` made `group` "public" or "private"."""

    group: str
    mode: str
    by: str = ""
    kind: str = "groupmode"

    @property
    def private(self) -> bool:
        return self.mode == Mode.PRIVATE


@dataclass(frozen=True, slots=True)
class GroupKeyEvent:
    """`by` set (`has_key`) or cleared the key of `group`; `key` is the key itself, sent only
    to the group's owner and admins ("" for everyone else)."""

    group: str
    has_key: bool
    by: str = ""
    key: str = ""
    kind: str = "groupkey"


@dataclass(frozen=True, slots=True)
class GroupDeletedEvent:
    """The owner deleted `group`: it is gone for every member."""

    group: str
    by: str = ""
    kind: str = "groupdeleted"


@dataclass(frozen=True, slots=True)
class InvitedEvent:
    """`by` invited the user into `group` (a private group can then be joined without a key)."""

    group: str
    by: str = ""
    kind: str = "invited"


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """Another session of the user read the conversation with `peer` up to message `id`."""

    peer: str
    id: int
    kind: str = "read"


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """`by` read the user's private messages up to `id` (sent only while `by` has receipts on)."""

    by: str
    id: int
    kind: str = "seen"


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """`user` is now "online", "away" (with `message`) or "offline"; `realm` of the session."""

    user: str
    status: str
    realm: str = ""
    message: str = ""
    kind: str = "presence"


@dataclass(frozen=True, slots=True)
class TypingEvent:
    """`user` is typing to the user (`peer` is then the typer) or in group `peer`. There is no
    "stopped typing": it is over `expires` seconds after the last one."""

    user: str
    peer: str
    group: bool = False  # set by the library: `peer` is a group (not the user themself)
    expires: float = 5.0  # seconds to show it, unless another one arrives
    kind: str = "typing"

    @property
    def conversation(self) -> str:
        """Where to show it: the group, or the private chat with `user`."""
        return self.peer if self.group else self.user


TYPING_TTL = 5.0  # seconds a typing event stays true

@dataclass(frozen=True, slots=True)
class EditedEvent:
    """Message `id` now reads `text` (edited at `edited`). `group`/`to`/`sender` are set when
    the server says which conversation it is in."""

    id: int
    text: str
    edited: str
    group: str | None = None
    to: str | None = None
    sender: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    kind: str = "edited"

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> EditedEvent:
        group = obj.get("group")
        return cls(id=_int(obj, "id"), text=_str(obj, "text"), edited=_str(obj, "edited"),
                   group=None if group in (None, "") else str(group).lstrip("#"),
                   to=_str(obj, "to") or None, sender=_str(obj, "from"), raw=obj)


@dataclass(frozen=True, slots=True)
class DeletedEvent:
    """Message `id` was deleted by `by` (its author, or a moderator of its group)."""

    id: int
    by: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    kind: str = "deleted"


@dataclass(frozen=True, slots=True)
class ReactionEvent:
    """`user` added (`on` True) or removed (`on` False) the reaction `emoji` on message `id`."""

    id: int
    user: str
    emoji: str
    on: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    kind: str = "reaction"


MessageChange = EditedEvent | DeletedEvent | ReactionEvent
"""The events that change a message already shown."""


def apply_change(msg: Message, ev: MessageChange) -> Message:
    """`msg` after `ev` (which must be about msg.id)."""
    if isinstance(ev, EditedEvent):
        return msg.with_edit(ev.text, ev.edited)
    if isinstance(ev, DeletedEvent):
        return msg.with_deleted()
    return msg.with_reaction(ev.emoji, ev.user, ev.on)


Event = (MessageEvent | FileEvent | SessionEvent | ConnectionEvent | MemberEvent | TopicEvent | GroupDeletedEvent
         | GroupModeEvent | GroupKeyEvent
         | InvitedEvent | ReadEvent | SeenEvent | PresenceEvent | TypingEvent | EditedEvent | DeletedEvent
         | ReactionEvent | OtherEvent)


def event_from_wire(obj: dict[str, Any]) -> Event:
    """The typed event for one server event line (one without a "status" key)."""
    kind = _str(obj, "event")
    if kind in ("private", "group"):
        return MessageEvent(Message.from_wire(obj))
    if kind == "file":
        return FileEvent(FileInfo.from_wire(obj))
    if kind == "member":
        return MemberEvent.from_wire(obj)
    if kind == "topic":
        return TopicEvent(group=_str(obj, "group"), topic=_str(obj, "topic"), by=_str(obj, "by"), at=_str(obj, "at"))
    if kind == "groupmode":
        return GroupModeEvent(group=_str(obj, "group"), mode=_str(obj, "mode"), by=_str(obj, "by"))
    if kind == "groupkey":
        return GroupKeyEvent(group=_str(obj, "group"), has_key=obj.get("has_key") is True, by=_str(obj, "by"),
                             key=_str(obj, "key"))
    if kind == "groupdeleted":
        return GroupDeletedEvent(group=_str(obj, "group"), by=_str(obj, "by"))
    if kind == "invited":
        return InvitedEvent(group=_str(obj, "group"), by=_str(obj, "by"))
    if kind == "read":
        return ReadEvent(peer=_str(obj, "peer").lstrip("#"), id=_int(obj, "id"))
    if kind == "seen":
        return SeenEvent(by=_str(obj, "by"), id=_int(obj, "id"))
    if kind == "presence":
        return PresenceEvent(user=_str(obj, "user"), status=_str(obj, "status") or Status.ONLINE,
                             realm=_str(obj, "realm"), message=_str(obj, "message"))
    if kind == "typing":
        expires = obj.get("expires")
        return TypingEvent(user=_str(obj, "user"), peer=_str(obj, "peer").lstrip("#"),
                           expires=float(expires) if isinstance(expires, int | float) and 0 < expires <= 60
                           else TYPING_TTL)
    if kind == "edited":
        return EditedEvent.from_wire(obj)
    if kind == "deleted":
        return DeletedEvent(id=_int(obj, "id"), by=_str(obj, "by"), raw=obj)
    if kind == "reaction":
        on = obj.get("on")
        return ReactionEvent(id=_int(obj, "id"), user=_str(obj, "user"), emoji=_str(obj, "emoji"),
                             on=on is True or str(on).lower() in ("true", "1"), raw=obj)
    if kind == "session":
        return SessionEvent(state=_str(obj, "state"), message=_str(obj, "message"), raw=obj)
    return OtherEvent(kind=kind, raw=obj)
