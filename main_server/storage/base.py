"""The storage interface and its records. Engines raise realmchat.errors types (NotFound,
AlreadyExists, PermissionDenied, ...) so callers never see a driver's exception."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-24T07:42:01.123Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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


@dataclass(frozen=True, slots=True)
class GroupRecord:
    key: str
    name: str


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    role: str
    members: int


@dataclass(frozen=True, slots=True)
class Stored:
    """A message just stored, with its recipients. Each recipient has an undelivered entry
    until a push or an inbox response carrying it is written to their client (mark_delivered):
    a crash between the commit and the write loses nothing."""

    message: MessageRecord
    recipients: list[str]


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
    @abstractmethod
    async def store_private(self, sender: User, to_key: str, text: str) -> Stored: ...

    @abstractmethod
    async def store_group(self, sender: User, group_key: str, text: str) -> Stored: ...

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
    async def get_messages(self, ids: list[int]) -> list[MessageRecord]:
        """The messages with these ids (another replica stored them and asks us to push)."""

    @abstractmethod
    async def history_private(self, a_key: str, b_key: str, limit: int) -> list[MessageRecord]: ...

    @abstractmethod
    async def history_group(self, user_key: str, group_key: str, limit: int) -> list[MessageRecord]: ...

    # groups
    @abstractmethod
    async def create_group(self, key: str, name: str, owner: User) -> GroupRecord: ...

    @abstractmethod
    async def get_group(self, key: str) -> GroupRecord | None: ...

    @abstractmethod
    async def join_group(self, key: str, user: User) -> GroupRecord: ...

    @abstractmethod
    async def leave_group(self, key: str, user: User) -> GroupRecord: ...

    @abstractmethod
    async def list_groups(self, user_key: str) -> list[GroupInfo]: ...

    # files
    @abstractmethod
    async def add_file(self, sender: User, to: User, name: str, size: int, sha256: str) -> FileRecord: ...

    @abstractmethod
    async def pending_files(self, user_key: str) -> list[FileRecord]: ...

    @abstractmethod
    async def get_file(self, file_id: int) -> FileRecord | None: ...

    @abstractmethod
    async def mark_downloaded(self, file_id: int) -> None: ...
