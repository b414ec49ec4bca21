"""The GUI's state as plain data: what the views render. The controller is the only writer.

No Flet and no network here, so the state (and the controller that feeds it) is testable
against a real stack without a browser.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum

from chat_cli.models import Ban, FileInfo, GroupInfo, Member, Presence, SearchHit, Waiting
from realmchat.display import sanitize


class Status(StrEnum):
    """The connection as the user sees it (the status chip in the header)."""

    OFFLINE = "offline"            # not connected (connect screen)
    CONNECTING = "connecting"
    ONLINE = "online"              # connected and logged in
    CONNECTED = "connected"        # connected, not logged in yet
    RECONNECTING = "reconnecting"  # lost the realm; the library is trying again
    DEGRADED = "main unreachable"  # the realm is there but answers UNAVAILABLE: its main server is down


class Kind(StrEnum):
    PRIVATE = "private"
    GROUP = "group"


def conv_key(kind: Kind, name: str) -> str:
    """Names are unique ignoring case (PROTOCOL.md), so keys are case-folded: 'Bob' and 'bob'
    are one conversation."""
    return f"{'#' if kind is Kind.GROUP else '@'}{name.casefold()}"


def _local(ts: datetime, tz: tzinfo | None) -> datetime:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(tz)


def local_time(ts: datetime | None, now: datetime | None = None, tz: tzinfo | None = None) -> str:
    """A timestamp in the viewer's time zone (`tz`: the browser's; None: this machine's):
    'HH:MM' today, 'Mon DD HH:MM' otherwise. Conversations add date separators, so their
    lines use `clock` instead."""
    if ts is None:
        return ""
    local = _local(ts, tz)
    now = _local(now or datetime.now(UTC), tz)
    if local.date() == now.date():
        return local.strftime("%H:%M")
    return local.strftime("%b %d %H:%M")


def clock(ts: datetime | None, tz: tzinfo | None = None) -> str:
    """'HH:MM' in the viewer's time zone."""
    return _local(ts, tz).strftime("%H:%M") if ts is not None else ""


def day_label(ts: datetime, now: datetime | None = None, tz: tzinfo | None = None) -> str:
    """The date separator of a conversation: 'Today', 'Yesterday', 'Monday, November 30' within
    a week, 'November 30, 2026' before."""
    day = _local(ts, tz).date()
    today = _local(now or datetime.now(UTC), tz).date()
    delta = (today - day).days
    if delta == 0:
        return "Today"
    if delta == 1:
        return "Yesterday"
    if 1 < delta < 7:
        return f"{day:%A}, {day:%B} {day.day}"
    return f"{day:%B} {day.day}, {day.year}"


def local_date(ts: datetime | None, tz: tzinfo | None = None) -> date | None:
    """The calendar day of `ts` in the viewer's time zone (None for a line without time)."""
    return _local(ts, tz).date() if ts is not None else None


class LineKind(StrEnum):
    TEXT = "text"
    FILE = "file"
    NOTICE = "notice"  # e.g. "you joined the group"


@dataclass
class ChatLine:
    """One row of a conversation."""

    sender: str
    text: str
    ts: datetime | None
    own: bool = False
    id: int | None = None             # server id once stored; None while sending
    kind: LineKind = LineKind.TEXT
    pending: bool = False             # own message sent, OK not received yet
    error: str = ""                   # own message that the realm refused
    file: FileInfo | None = None
    reply_to: int | None = None       # the id of the message this one answers
    edited: bool = False
    deleted: bool = False             # a tombstone: "message deleted", text empty
    reactions: dict[str, list[str]] = field(default_factory=dict)  # emoji -> users, in order
    mention: bool = False             # names the viewer as @user

    @property
    def time_label(self) -> str:
        return local_time(self.ts)

    @property
    def actionable(self) -> bool:
        """A stored message that can be replied to, reacted to (and edited or deleted)."""
        return self.id is not None and self.kind is not LineKind.NOTICE and not self.deleted and not self.pending

    def reacted(self, emoji: str, user: str) -> bool:
        return any(u.casefold() == user.casefold() for u in self.reactions.get(emoji, ()))

    def set_reaction(self, emoji: str, user: str, on: bool) -> None:
        users = [u for u in self.reactions.get(emoji, []) if u.casefold() != user.casefold()]
        if on:
            users.append(user)
        if users:
            self.reactions[emoji] = users
        else:
            self.reactions.pop(emoji, None)

    @property
    def snippet(self) -> str:
        """One line of at most 80 characters, for a reply quote or preview."""
        if self.deleted:
            return "message deleted"
        text = " ".join(self.text.split())
        return text[:79] + "…" if len(text) > 80 else text


@dataclass
class Conversation:
    kind: Kind
    name: str
    lines: list[ChatLine] = field(default_factory=list)
    unread: int = 0
    mentions: int = 0                 # unread messages that name the user (@user)
    read_id: int = 0                  # read up to this message id (the server's mark)
    seen_id: int = 0                  # private: the peer has read our messages up to this id
    # Who is typing here: user (casefolded) -> (name, until time.monotonic()).
    typing: dict[str, tuple[str, float]] = field(default_factory=dict)
    history_loaded: bool = False
    history_error: str = ""
    # A group the user can no longer use (kicked, banned, deleted): why, shown instead of the
    # composer. Empty while the user is a member.
    closed: str = ""
    more: bool = False            # older messages exist on the server (load them with load_older)
    loading_older: bool = False
    replying_to: int | None = None  # the message the next one sent answers (the reply preview)
    editing: int | None = None      # the own message the composer is editing
    highlight: int | None = None    # a message opened from search, to mark and scroll to
    # The message box belongs to the conversation: what is typed here stays here (and is back
    # when the user returns); it is never sent anywhere else.
    draft: str = ""
    # Counts the changes the app makes to the draft itself (a failed message put back, a
    # retried one taken out, an edit started), so the view knows to show the new text.
    draft_rev: int = 0
    send_error: str = ""            # why the last message sent here failed; "" once one goes through

    def put_draft(self, text: str) -> None:
        """The app (not the user's typing) changes what the message box holds."""
        self.draft = text
        self.draft_rev += 1

    @property
    def key(self) -> str:
        return conv_key(self.kind, self.name)

    @property
    def title(self) -> str:
        return f"# {self.name}" if self.kind is Kind.GROUP else self.name

    @property
    def last(self) -> ChatLine | None:
        return self.lines[-1] if self.lines else None

    @property
    def preview(self) -> str:
        """The latest message, one line, for the side list."""
        last = self.last
        if last is None:
            return ""
        who = "you" if last.own else last.sender
        text = " ".join(last.text.split()) if not last.deleted else "message deleted"
        if last.kind is LineKind.NOTICE:
            return text[:59] + "…" if len(text) > 60 else text
        if len(text) > 60:
            text = text[:59] + "…"
        return f"{who}: {text}" if self.kind is Kind.GROUP or last.own else text

    @property
    def newest_id(self) -> int:
        return max((ln.id for ln in self.lines if ln.id is not None), default=0)

    def seen(self, line: ChatLine) -> bool:
        """An own private message the peer has read (two ticks)."""
        return (self.kind is Kind.PRIVATE and line.own and line.id is not None and not line.pending
                and line.id <= self.seen_id)

    def typing_names(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return [name for name, until in self.typing.values() if until > now]

    @property
    def typing_label(self) -> str:
        """'bob is typing…', 'bob and eve are typing…', or ''."""
        names = self.typing_names()
        if not names:
            return ""
        if len(names) == 1:
            return f"{names[0]} is typing…"
        return f"{', '.join(names[:-1])} and {names[-1]} are typing…"

    @property
    def sort_key(self) -> float:
        last = self.last
        return last.ts.timestamp() if last and last.ts else 0.0

    def find(self, msg_id: int | None) -> ChatLine | None:
        if msg_id is None:
            return None
        for line in self.lines:
            if line.id == msg_id:
                return line
        return None

    @property
    def oldest_id(self) -> int | None:
        ids = [ln.id for ln in self.lines if ln.id is not None and ln.kind is not LineKind.NOTICE]
        return min(ids) if ids else None

    def has_id(self, msg_id: int) -> bool:
        # History and live events overlap (a message can arrive while history loads): ids
        # de-duplicate them.
        return any(line.id == msg_id for line in self.lines)

    def add(self, line: ChatLine) -> bool:
        """Appends in time order; False if a line with that server id is already there."""
        if line.id is not None and self.has_id(line.id):
            return False
        self.lines.append(line)
        if line.ts is not None and len(self.lines) > 1:
            # Keep order by time, pending own lines (no server ts yet) stay at the end. Messages
            # of one millisecond share a timestamp: their server ids (in sending order) decide.
            self.lines.sort(key=lambda ln: (ln.ts is None, ln.ts or datetime.max.replace(tzinfo=UTC), ln.id or 0))
        return True


class TransferState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Transfer:
    """A file going up (send) or coming down (save), with progress for the view."""

    tid: int
    direction: str  # "up" | "down"
    name: str
    peer: str
    size: int
    done_bytes: int = 0
    state: TransferState = TransferState.RUNNING
    error: str = ""
    path: str = ""     # down: where it was saved
    sha256: str = ""

    @property
    def progress(self) -> float:
        if self.state is TransferState.DONE:
            return 1.0
        return min(1.0, self.done_bytes / self.size) if self.size else 0.0


ROLE_ORDER = {"owner": 0, "admin": 1, "member": 2}


def sorted_members(members: list[Member]) -> list[Member]:
    """Owner, admins, members; online first within each; then by name."""
    return sorted(members, key=lambda m: (ROLE_ORDER.get(m.role, 3), not m.online, m.user.casefold()))


@dataclass
class Invitation:
    """An invitation to a group, shown until the user joins or dismisses it."""

    group: str
    by: str


@dataclass
class ChatState:
    status: Status = Status.OFFLINE
    status_detail: str = ""
    host: str = ""
    port: int = 0
    realm: str = ""           # the realm's name from its hello
    user: str = ""
    tz: tzinfo | None = None  # the viewer's time zone (the browser's in web mode)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    current: str | None = None
    online: list[Presence] = field(default_factory=list)
    online_at: datetime | None = None  # when `online` was last fetched
    groups: dict[str, GroupInfo] = field(default_factory=dict)
    incoming_files: dict[int, FileInfo] = field(default_factory=dict)
    saved_files: dict[int, str] = field(default_factory=dict)  # file id -> local path
    transfers: list[Transfer] = field(default_factory=list)
    members: dict[str, list[Member]] = field(default_factory=dict)  # group (casefolded) -> members
    members_error: dict[str, str] = field(default_factory=dict)      # group -> why members failed
    # group (casefolded) -> the bans in force, newest first; only for groups where the server
    # told us (we are owner or admin there)
    banned: dict[str, list[Ban]] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)             # group (casefolded) -> topic
    # group (casefolded) -> who set the topic and when; absent where the server does not know
    # (a topic set before it kept them)
    topic_set: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    invitations: list[Invitation] = field(default_factory=list)
    # Presence from `who` at login, then from presence events: user (casefolded) -> Presence
    # (status "online" / "away" / "offline", realm, away message).
    presence: dict[str, Presence] = field(default_factory=dict)
    away: bool = False        # the user set themself away
    away_message: str = ""
    receipts: bool = True     # senders see when the user reads their private messages
    waiting: Waiting = field(default_factory=Waiting)  # what waited undelivered at login (counted by the server)

    def presence_of(self, user: str) -> Presence | None:
        p = self.presence.get(user.casefold())
        return p if p is not None and p.status != "offline" else None
    search_query: str = ""
    search_scope: str | None = None
    search_results: list[SearchHit] = field(default_factory=list)
    search_error: str = ""
    searching: bool = False

    def find_line(self, msg_id: int) -> tuple[Conversation, ChatLine] | None:
        """The conversation and line of message `msg_id`, wherever it is shown."""
        for conv in self.conversations.values():
            line = conv.find(msg_id)
            if line is not None:
                return conv, line
        return None

    @property
    def logged_in(self) -> bool:
        return bool(self.user)

    def role_in(self, group: str) -> str:
        """The user's role in `group` ("owner", "admin", "member"), "" if not a member. The
        members list is the fresher source (role events update it); the groups list else."""
        for m in self.members.get(group.casefold(), []):
            if m.user.casefold() == self.user.casefold():
                return m.role
        g = self.groups.get(group.casefold())
        return g.role if g else ""

    def can_moderate(self, group: str) -> bool:
        """Owner or admin: invite, kick, ban, topic, key."""
        return self.role_in(group) in ("owner", "admin")

    def topic_of(self, group: str) -> str:
        key = group.casefold()
        if key in self.topics:
            return self.topics[key]
        g = self.groups.get(key)
        return g.topic if g else ""

    def topic_setter(self, group: str, now: datetime | None = None) -> str:
        """'set by alice · 10:42' ('by you' for the viewer); "" when not known."""
        who = self.topic_set.get(group.casefold())
        if who is None or not who[0]:
            return ""
        by = "you" if who[0].casefold() == self.user.casefold() else sanitize(who[0])
        when = local_time(who[1], now, self.tz)
        return f"set by {by}" + (f" · {when}" if when else "")

    def mode_of(self, group: str) -> str:
        """"public" or "private" ("" while the server has not said)."""
        g = self.groups.get(group.casefold())
        return g.mode if g else ""

    def sorted_conversations(self) -> list[Conversation]:
        return sorted(self.conversations.values(), key=lambda c: c.sort_key, reverse=True)

    @property
    def online_stale(self) -> bool:
        """The online list cannot be refreshed now (realm or main down): it shows an old state."""
        return self.status in (Status.RECONNECTING, Status.DEGRADED, Status.OFFLINE)

    @property
    def unread_total(self) -> int:
        return sum(c.unread for c in self.conversations.values())

    @property
    def waiting_line(self) -> str:
        """The side list's line about what waited at login ('' when nothing did)."""
        w = self.waiting
        if not w.total:
            return ""
        return f"{w.headline} when you logged in: {w.where}" if w.where else f"{w.headline} when you logged in"
