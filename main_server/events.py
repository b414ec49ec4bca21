"""The events main pushes, as plain frozen records: the desks decide who gets which, the hub
routes them, main_server/wire.py turns each into protobuf once. What replicas tell each other
(notices: a message or file stored, a live event, a logout, a status) are plain records too,
in the one encoding here (`to_plain` / `from_plain`, JSON-ready; `encode` / `decode`, bytes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from .storage.base import FileRecord, MessageRecord


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """A private message, live (mention: the receiver's flag when it differs from the record's)."""

    message: MessageRecord
    mention: bool | None = None


@dataclass(frozen=True, slots=True)
class GroupMessage:
    message: MessageRecord
    mention: bool | None = None


@dataclass(frozen=True, slots=True)
class FileOffered:
    file: FileRecord


@dataclass(frozen=True, slots=True)
class Edited:
    id: int
    text: str
    edited: str
    mention: bool
    sender: str = ""  # the author (in a group too); private: with `to`, the two parties
    to: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Deleted:
    id: int
    by: str
    sender: str = ""
    to: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Reaction:
    id: int
    user: str
    emoji: str
    on: bool
    sender: str = ""
    to: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    group: str
    user: str
    action: str  # join, leave, kick, ban, unban, invite, role
    by: str
    reason: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class Invited:
    group: str
    by: str


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    topic: str
    by: str
    at: str = ""  # when it was set (ISO-8601 UTC)


@dataclass(frozen=True, slots=True)
class GroupMode:
    """A group was made public or private."""

    group: str
    mode: str
    by: str


@dataclass(frozen=True, slots=True)
class GroupKey:
    """A group's join key was set or cleared: `key` is the key itself for its owner and admins
    (they may set it anyway), "" for every other member."""

    group: str
    has_key: bool
    by: str
    key: str = ""


@dataclass(frozen=True, slots=True)
class GroupDeleted:
    group: str
    by: str


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    status: str  # online, away, offline
    realm: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Typing:
    user: str
    peer: str  # the group, or (private) the user typing


@dataclass(frozen=True, slots=True)
class Read:
    """The reader's own sessions: their read marker in a conversation moved."""

    peer: str
    id: int


@dataclass(frozen=True, slots=True)
class Seen:
    """A read receipt: `by` read the receiver's private messages up to id."""

    by: str
    id: int


Event = (PrivateMessage | GroupMessage | FileOffered | Edited | Deleted | Reaction | Member | Invited | Topic
         | GroupMode | GroupKey | GroupDeleted | Presence | Typing | Read | Seen)

# ---- what replicas tell each other (main_server/cluster.py carries them) ----------------------


@dataclass(frozen=True, slots=True)
class MessageStored:
    """Another replica stored a message for these users (read from storage by id): track, the
    users with an undelivered entry; mentioned, those the text names."""

    id: int
    users: tuple[str, ...]
    track: tuple[str, ...] = ()
    exclude_session: int = 0
    mentioned: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileStored:
    id: int
    users: tuple[str, ...]
    exclude_session: int = 0


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A live notice (no undelivered entry) for these users' sessions on every replica."""

    event: Event
    users: tuple[str, ...]
    exclude_session: int = 0


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """A session ended: no replica may keep it cached or attached."""

    token_hash: str
    session_id: int
    user_key: str


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """A user went away (with a message) or came back."""

    user_key: str
    status: str
    message: str = ""


Notice = MessageStored | FileStored | Broadcast | LoggedOut | StatusChanged

# What travels by value; messages and files themselves travel by id (MessageStored, FileStored).
_BY_NAME: dict[str, type[Any]] = {c.__name__: c for c in (
    Edited, Deleted, Reaction, Member, Invited, Topic, GroupMode, GroupKey, GroupDeleted, Presence, Typing, Read,
    Seen,
    MessageStored, FileStored, Broadcast, LoggedOut, StatusChanged)}


def split(notice: Notice, most: int) -> list[Notice]:
    """A notice for many users as notices for at most `most` each (one NOTIFY payload is small)."""
    users: tuple[str, ...] | None = getattr(notice, "users", None)
    if users is None:
        return [notice]
    out: list[Notice] = []
    for i in range(0, max(len(users), 1), most):
        part = users[i:i + most]
        if isinstance(notice, MessageStored):
            keep = set(part)
            out.append(dataclasses.replace(notice, users=part, track=tuple(u for u in notice.track if u in keep),
                                           mentioned=tuple(u for u in notice.mentioned if u in keep)))
        else:
            out.append(dataclasses.replace(notice, users=part))  # type: ignore[type-var]
    return out


def to_plain(event: Event | Notice) -> dict[str, Any]:
    """An event or notice as JSON-ready values: its type and fields (nested events alike)."""
    name = type(event).__name__
    if name not in _BY_NAME:
        raise TypeError(f"{name} travels between replicas by id, not by value")
    out: dict[str, Any] = {"type": name}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        out[f.name] = to_plain(value) if dataclasses.is_dataclass(value) else value
    return out


def from_plain(data: dict[str, Any]) -> Any:
    """The inverse of to_plain; ValueError for anything that is not a known event or notice."""
    fields = dict(data)
    cls = _BY_NAME.get(fields.pop("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {str(data.get('type'))[:40]!r}")
    for k, v in fields.items():
        if isinstance(v, dict):
            fields[k] = from_plain(v)
        elif isinstance(v, list):
            fields[k] = tuple(v)
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad {cls.__name__} event: {exc}") from None


def encode(event: Event | Notice) -> bytes:
    return orjson.dumps(to_plain(event))


def decode(data: bytes | str) -> Any:
    try:
        plain = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not an event: {exc}") from None
    if not isinstance(plain, dict):
        raise ValueError("not an event: expected an object")
    return from_plain(plain)
