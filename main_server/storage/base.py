"""The storage interface and its records. Engines raise realmchat.errors types (NotFound,
AlreadyExists, PermissionDenied, ...) so callers never see a driver's exception."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

_last_stamp: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-24T07:42:01.123Z. Formatted once per
    millisecond: every stored message asks, thousands of times a second."""
    global _last_stamp
    ms, stamp = time.time_ns() // 1_000_000, _last_stamp
    if ms != stamp[0]:
        s, frac = divmod(ms, 1000)
        stamp = _last_stamp = (ms, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:03d}Z")
    return stamp[1]


@dataclass(frozen=True, slots=True)
class User:
    key: str
    name: str
    pw_hash: str


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    user_key: str
    user_name: str
    realm: str
    # Epoch seconds: the session's age is checked on every use (engines' clocks differ slightly).
    created: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    sender: str
    text: str
    ts: str
    to: str = ""     # private: the recipient's name
    group: str = ""  # group: the group's name
    reply_to: int = 0    # the message this one answers (0: none)
    edited: str = ""     # when the text was last edited ("" = never)
    deleted: bool = False  # a tombstone: the text is then empty
    # (emoji, (user name, ...)) pairs, emoji in order, users in order
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mention: bool = False  # the reader is named in the text as @user (per reader)


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a history window: a message id, or a time (utc_now_iso's form, which sorts
    as text); the end itself left out unless inclusive."""

    id: int = 0
    ts: str = ""
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    """Which messages of one conversation a history read returns, oldest first: those after
    `after` and before `before` (an end None is open), at most `limit`: the newest of them
    (nearest `before`) when `newest`, else the oldest (nearest `after`)."""

    limit: int
    after: Bound | None = None
    before: Bound | None = None
    newest: bool = True

    @classmethod
    def paged(cls, limit: int, before: int = 0, after: int = 0) -> Window:
        """History's id paging: the newest `limit`, or those just before / just after an id."""
        return cls(limit, Bound(id=after) if after else None, Bound(id=before) if before else None, not after)


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: int
    sender: str
    to: str
    to_key: str
    name: str
    size: int
    sha256: str
    ts: str
    group: str = ""      # a group file: the group's name (to and to_key are then empty)
    group_key: str = ""


@dataclass(frozen=True, slots=True)
class GroupRecord:
    key: str
    name: str
    mode: str = "public"  # "public" or "private"
    topic: str = ""
    key_hash: str = field(default="", repr=False)  # the join key's password hash; "" = no key
    created: str = ""   # ISO-8601 UTC
    topic_by: str = ""  # who set the topic last, and when ("": not known, e.g. set before it was kept)
    topic_at: str = ""

    @property
    def has_key(self) -> bool:
        return bool(self.key_hash)


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One of the caller's groups."""

    name: str
    role: str
    members: int


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A group as the directory (listgroups) shows it."""

    name: str
    mode: str
    topic: str
    members: int


@dataclass(frozen=True, slots=True)
class MemberInfo:
    key: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban in force in a group: the user, who banned them, why ("" if not said) and when."""

    user: str
    by: str
    reason: str
    ts: str


@dataclass(frozen=True, slots=True)
class Roll:
    """A group's members, best role first, and its bans when the reader may see them (None
    when not asked for or not allowed): one consistent read."""

    group: GroupRecord
    members: list[MemberInfo]
    banned: list[BanRecord] | None


@dataclass(frozen=True, slots=True)
class RoomChange:
    """What a room operation did: to whom (`user`, its key and role afterwards), and the
    members who hear of it (keys, read in the same transaction). changed=False: nothing
    happened (joining twice), so nobody is told."""

    group: GroupRecord
    user: str = ""
    user_key: str = ""
    role: str = ""
    members: list[str] = field(default_factory=list)
    changed: bool = True
    unreferenced: list[str] = field(default_factory=list)  # sha256 of stored files nothing refers to now
    moderators: list[str] = field(default_factory=list)  # set_group_key: the owner's and admins' keys


@dataclass(frozen=True, slots=True)
class Stored:
    """A message just stored, with its recipients. Each recipient has an undelivered entry
    until a push or an inbox response carrying it is written to their client (mark_delivered):
    a crash between the commit and the write loses nothing."""

    message: MessageRecord
    recipients: list[str]
    mentioned: list[str] = field(default_factory=list)  # recipients the text names as @user


@dataclass(frozen=True, slots=True)
class MessageChange:
    """What an edit, a delete or a reaction did to a message, and who hears of it: everyone
    who can see the message (keys, read in the same transaction). changed=False: nothing
    happened (a reaction given twice), so nobody is told."""

    message: MessageRecord
    audience: list[str]
    changed: bool = True
    mentioned: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """One of a user's conversations: a private peer or a group they are a member of. `read`
    is the read marker (for a private group, never below the join point); `last` is None when
    nothing was said yet (that the user may see)."""

    peer: str
    peer_key: str
    kind: str  # "user" or "group"
    last: MessageRecord | None
    unread: int
    mentions: int
    read: int
    seen: int = 0  # private: the newest of the user's messages the peer has read (peer's receipts on)


@dataclass(frozen=True, slots=True)
class WaitingCount:
    """Messages waiting undelivered for a user in one conversation (peer: the sender of a
    private message, or the group)."""

    peer: str
    kind: str  # "user" or "group"
    count: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits undelivered for a user: the total, the conversations with the most waiting
    (at most the limit asked for) and how many conversations were left out."""

    total: int = 0
    conversations: list[WaitingCount] = field(default_factory=list)
    unlisted: int = 0


@dataclass(frozen=True, slots=True)
class ReadMark:
    """A read marker after `mark_read`: where it stands now, whether this call moved it, and
    (a private conversation, the marker passed a message from the peer, and the reader has
    receipts on) the newest of the peer's messages it passed: the peer is told `seen`."""

    peer: str
    peer_key: str
    kind: str
    read: int
    moved: bool
    seen_id: int = 0


class Storage(ABC):
    """Everything main keeps durably. All methods are atomic; a write returns after commit."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    # users and sessions
    @abstractmethod
    async def create_user(self, key: str, name: str, pw_hash: str) -> User: ...

    @abstractmethod
    async def get_user(self, key: str) -> User | None: ...

    @abstractmethod
    async def create_session(self, token_hash: str, user: User, realm: str) -> SessionRecord: ...

    @abstractmethod
    async def get_session(self, token_hash: str, max_age_s: float) -> SessionRecord | None: ...

    @abstractmethod
    async def delete_session(self, token_hash: str) -> None: ...

    # messages: every recipient gets an undelivered entry (the sender of a group message not)
    # reply_to: the message answered (the caller checked the sender may see it); mentions: keys
    # of users the text names as @user (only recipients who may read it are flagged).
    @abstractmethod
    async def store_private(self, sender: User, to_key: str, text: str, reply_to: int = 0,
                            mentions: tuple[str, ...] = ()) -> Stored: ...

    @abstractmethod
    async def store_group(self, sender: User, group_key: str, text: str, reply_to: int = 0,
                          mentions: tuple[str, ...] = ()) -> Stored: ...

    @abstractmethod
    async def mark_delivered(self, pairs: list[tuple[str, int]]) -> None:
        """(user key, message id) pairs a push has reached: no longer undelivered."""

    @abstractmethod
    async def peek_inbox(self, user_key: str, limit: int, skip: frozenset[int] = frozenset()
                         ) -> tuple[list[MessageRecord], bool]:
        """Undelivered private messages (oldest first, at most limit), left undelivered (the
        realm's report that it wrote them marks them); and whether more are waiting. Ids in
        skip (in flight right now) are left out."""

    @abstractmethod
    async def peek_inbox_group(self, user_key: str, group_key: str, limit: int,
                               skip: frozenset[int] = frozenset()) -> tuple[list[MessageRecord], bool]: ...

    @abstractmethod
    async def peek_pending(self, user_key: str, limit: int) -> list[MessageRecord]:
        """Undelivered messages of the user, private and group (oldest first, at most limit),
        left undelivered (a push marks them)."""

    @abstractmethod
    async def waiting_for(self, msg_id: int, limit: int) -> list[str]:
        """The user keys that still have message msg_id undelivered (sorted, at most limit)."""

    @abstractmethod
    async def get_messages(self, ids: list[int]) -> list[MessageRecord]:
        """The messages with these ids (another replica stored them and asks us to push)."""

    # History, oldest first: the messages of a window (ids or times; see Window). Deleted
    # messages are tombstones. A group's reads follow rooms.history_floor, as every history.
    @abstractmethod
    async def window_private(self, a_key: str, b_key: str, window: Window) -> list[MessageRecord]: ...

    @abstractmethod
    async def window_group(self, user_key: str, group_key: str, window: Window) -> list[MessageRecord]: ...

    async def history_private(self, a_key: str, b_key: str, limit: int, before: int = 0, after: int = 0
                              ) -> list[MessageRecord]:
        """The newest `limit` messages, or the `limit` just before `before` / after `after` (ids)."""
        return await self.window_private(a_key, b_key, Window.paged(limit, before, after))

    async def history_group(self, user_key: str, group_key: str, limit: int, before: int = 0, after: int = 0
                            ) -> list[MessageRecord]:
        return await self.window_group(user_key, group_key, Window.paged(limit, before, after))

    # the life of a message: every rule (who may see, edit, delete) checked in the transaction
    @abstractmethod
    async def message_for(self, user_key: str, msg_id: int) -> MessageRecord:
        """The message if the user may see it (NotFound otherwise, whether or not it exists)."""

    @abstractmethod
    async def edit_message(self, user: User, msg_id: int, text: str, mentions: tuple[str, ...] = ()
                           ) -> MessageChange: ...

    @abstractmethod
    async def delete_message(self, user: User, msg_id: int) -> MessageChange:
        """The author, or an owner/admin of the message's group. The text is gone, the message
        stays as a tombstone; nobody who has not received it yet ever will."""

    @abstractmethod
    async def react(self, user: User, msg_id: int, emoji: str, on: bool) -> MessageChange: ...

    @abstractmethod
    async def search(self, user_key: str, words: list[str], group_key: str = "", peer_key: str = "",
                     limit: int = 50) -> list[MessageRecord]:
        """Messages the user may read that contain every word, best first (a word ending in `*`
        is a prefix; CJK words are found inside runs of text: storage/searchtext.py).
        group_key / peer_key narrow it to one conversation."""

    @abstractmethod
    async def bulk_load(self, rows: list[tuple[str, str, str, str, str, str, str, str]]) -> None:
        """Messages stored in bulk, delivered already (a benchmark's or an import's load):
        (sender, sender_key, to_name, to_key, group_name, group_key, text, ts) each."""

    # groups (rooms). Every rule is main_server/rooms.py's, applied inside the operation's
    # transaction, so a change and the check that allowed it are one atomic step.
    @abstractmethod
    async def create_group(self, key: str, name: str, owner: User, mode: str = "public",
                           most: int = 0) -> GroupRecord:
        """most: groups one user may be a member of (0 = no limit), checked for the owner."""

    @abstractmethod
    async def get_group(self, key: str) -> GroupRecord | None: ...

    @abstractmethod
    async def join_group(self, key: str, user: User, key_hash: str = "", most: int = 0) -> RoomChange:
        """key_hash: the group key hash that the KEY the user gave was verified against ("" when
        none was given or it did not match); it admits the user only if it still is the key.
        most: groups one user may be a member of (0 = no limit)."""

    @abstractmethod
    async def leave_group(self, key: str, user: User) -> RoomChange: ...

    @abstractmethod
    async def list_groups(self, user_key: str) -> list[GroupInfo]: ...

    @abstractmethod
    async def invite(self, key: str, actor: User, target_key: str) -> RoomChange: ...

    @abstractmethod
    async def kick(self, key: str, actor: User, target_key: str) -> RoomChange: ...

    @abstractmethod
    async def ban(self, key: str, actor: User, target_key: str, reason: str = "") -> RoomChange: ...

    @abstractmethod
    async def unban(self, key: str, actor: User, target_key: str) -> RoomChange: ...

    @abstractmethod
    async def set_role(self, key: str, actor: User, target_key: str, role: str) -> RoomChange: ...

    @abstractmethod
    async def set_topic(self, key: str, actor: User, topic: str) -> RoomChange: ...

    @abstractmethod
    async def set_group_key(self, key: str, actor: User, key_hash: str) -> RoomChange:
        """`moderators` of the change: the owner and admins (they may be told the key)."""

    @abstractmethod
    async def set_group_mode(self, key: str, actor: User, mode: str) -> RoomChange:
        """Public or private (owner/admin); changed=False when it already was. Made private, the
        members keep the history they could read: their join points go back to the start."""

    @abstractmethod
    async def delete_group(self, key: str, actor: User) -> RoomChange:
        """Removes the group with its messages, files, members, bans and invitations;
        `members` are those it had."""

    @abstractmethod
    async def room(self, key: str, user_key: str) -> GroupRecord:
        """The group as the user may see it (a private group: members only)."""

    @abstractmethod
    async def member_group(self, key: str, user_key: str) -> GroupRecord:
        """The group if the user is a member (PermissionDenied otherwise)."""

    @abstractmethod
    async def members(self, key: str, user_key: str, bans: int = 0) -> Roll:
        """The group's members as the user may see them; with bans > 0, its newest bans (at most
        that many) when the user is its owner or an admin, read in the same transaction."""

    @abstractmethod
    async def browse_groups(self, user_key: str, like: str) -> list[RoomInfo]:
        """Public groups and the user's private ones whose key matches the SQL LIKE pattern
        (escape character backslash), by name."""

    # files
    @abstractmethod
    async def add_file(self, sender: User, to: User, name: str, size: int, sha256: str) -> FileRecord: ...

    @abstractmethod
    async def add_group_file(self, sender: User, group_key: str, name: str, size: int, sha256: str
                             ) -> tuple[FileRecord, list[str]]:
        """A file for every member of the group but the sender (members only); returns the
        record and the members it waits for."""

    @abstractmethod
    async def pending_files(self, user_key: str) -> list[FileRecord]: ...

    @abstractmethod
    async def get_file(self, file_id: int) -> FileRecord | None: ...

    @abstractmethod
    async def file_digests(self) -> set[str]:
        """The contents (sha256) that stored files refer to: the file store keeps these."""

    @abstractmethod
    async def open_file(self, file_id: int, user_key: str) -> FileRecord:
        """The file if the user may download it (its recipient; for a group file, by the
        group's rules), else NotFound / PermissionDenied."""

    @abstractmethod
    async def mark_downloaded(self, file_id: int, user_key: str) -> None: ...

    # conversation state (main_server/storage/convops.py, shared by both engines)
    @abstractmethod
    async def conversations(self, user_key: str) -> list[ConversationRecord]:
        """Every conversation of the user, newest first (those with no message last)."""

    @abstractmethod
    async def mark_read(self, user_key: str, peer_key: str, msg_id: int) -> ReadMark:
        """Moves the read marker forward to msg_id (clamped to the conversation's newest
        message); never back. NotFound: no such user or group; PermissionDenied: not a member."""

    @abstractmethod
    async def set_receipts(self, user_key: str, enabled: bool | None) -> bool:
        """Read receipts on or off (None: unchanged); the setting now."""

    @abstractmethod
    async def waiting(self, user_key: str, limit: int) -> Waiting:
        """Counts the user's undelivered messages, by conversation (most first, at most
        `limit` listed), in one query; delivers and marks nothing."""

    @abstractmethod
    async def audience(self, user_key: str) -> list[str]:
        """Users who share a group or a private conversation with the user (presence goes to them)."""
