"""What a history read asks for, on plain records and without I/O: references (a message or a
time), the forms of a request (id paging, before/after a reference, around one, between two)
and the storage windows each form reads. Times are ISO-8601 UTC, the form messages carry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from realmchat.errors import InvalidArgument

from ..storage.base import Bound, ConversationRecord, MessageRecord, Window

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:Z|\+00:00)")
TIME_HINT = "ISO-8601 UTC, e.g. 2026-11-24T07:42:01.123Z"
ACTIVE_MAX = 1000  # conversations one activity listing may be limited to


def parse_time(text: str) -> str:
    """A client's time as storage keeps times (milliseconds, 'Z'), which sort as text."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise InvalidArgument(f"a time is {TIME_HINT}, not {text[:40]!r}")
    try:
        datetime(*(int(g) for g in m.groups()[:6]))
    except ValueError:
        raise InvalidArgument(f"no such time: {text[:40]!r}") from None
    frac = ((m.group(7) or "") + "000")[:3]
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}.{frac}Z"


@dataclass(frozen=True, slots=True)
class Ref:
    """A point in a conversation as a client names it: one of its messages (id) or a time."""

    id: int = 0
    ts: str = ""


@dataclass(frozen=True, slots=True)
class Point:
    """A reference checked: a message of the conversation (its id and time) or a time (id 0)."""

    id: int
    ts: str

    def bound(self, inclusive: bool = False) -> Bound:
        return Bound(id=self.id, inclusive=inclusive) if self.id else Bound(ts=self.ts, inclusive=inclusive)

    def key(self) -> tuple[str, int]:
        """Its place in time; a message after every other at the same millisecond it has no id for."""
        return self.ts, self.id or (1 << 63)


@dataclass(frozen=True, slots=True)
class HistoryAsk:
    """One history request; at most one form (see `form`)."""

    limit: int = 0
    before: int = 0  # id paging: plain bounds, any id
    after: int = 0
    before_ref: Ref | None = None
    after_ref: Ref | None = None
    around: Ref | None = None
    start: Ref | None = None
    end: Ref | None = None

    def form(self) -> str:
        """latest, before, after, before_ref, after_ref, around or between."""
        given = [
            name
            for name, v in (
                ("before", self.before),
                ("after", self.after),
                ("before_ref", self.before_ref),
                ("after_ref", self.after_ref),
                ("around", self.around),
            )
            if v
        ]
        if self.start is not None or self.end is not None:
            if self.start is None or self.end is None:
                raise InvalidArgument("between needs both references: start and end")
            given.append("between")
        if len(given) > 1:
            raise InvalidArgument(f"one history form at a time, not {' and '.join(given)}")
        if self.before < 0 or self.after < 0:
            raise InvalidArgument("a message id is a positive number")
        return given[0] if given else "latest"

    def refs(self) -> list[Ref]:
        return [r for r in (self.before_ref, self.after_ref, self.around, self.start, self.end) if r is not None]


def check_ref(ref: Ref) -> Ref:
    """The reference with its time in storage's form; InvalidArgument if it names nothing."""
    if ref.id and ref.ts:
        raise InvalidArgument("a reference is a message id or a time, not both")
    if ref.id:
        if ref.id < 0:
            raise InvalidArgument("a message id is a positive number")
        return ref
    if not ref.ts:
        raise InvalidArgument("an empty reference: give a message id or a time")
    return Ref(ts=parse_time(ref.ts))


@dataclass(frozen=True, slots=True)
class Read:
    """A window to read and how to keep `limit` of what it returns (one more is asked for, to
    know whether more lie beyond): the newest (nearest its `before`) or the oldest."""

    window: Window
    limit: int

    def keep(self, msgs: list[MessageRecord]) -> tuple[list[MessageRecord], bool]:
        if not self.limit:
            return [], bool(msgs)
        return (msgs[-self.limit :] if self.window.newest else msgs[: self.limit]), len(msgs) > self.limit


def reads(ask: HistoryAsk, form: str, limit: int, points: dict[str, Point]) -> list[Read]:
    """The windows one form reads, oldest side first; points: the form's references checked."""
    if form in ("latest", "before", "after"):
        return [Read(Window.paged(limit + 1, ask.before, ask.after), limit)]
    if form == "before_ref":
        return [Read(Window(limit + 1, before=points["before_ref"].bound()), limit)]
    if form == "after_ref":
        return [Read(Window(limit + 1, after=points["after_ref"].bound(), newest=False), limit)]
    if form == "around":
        p, older = points["around"], limit // 2
        return [
            Read(Window(older + 1, before=p.bound()), older),
            Read(Window(limit - older + 1, after=p.bound(inclusive=True), newest=False), limit - older),
        ]
    start, end = points["start"], points["end"]
    forward = start.key() <= end.key()
    lo, hi = (start, end) if forward else (end, start)
    return [Read(Window(limit + 1, after=lo.bound(), before=hi.bound(), newest=not forward), limit)]


def active_between(
    convs: list[ConversationRecord], after: str, before: str, limit: int, oldest: bool
) -> list[ConversationRecord]:
    """The conversations whose newest message (that the user may see) was sent strictly between
    the two times (either "" = open), newest first; at most limit (0: all) of the newest, or with
    oldest of the oldest. Every conversation with no window asked for."""
    if not 0 <= limit <= ACTIVE_MAX:
        raise InvalidArgument(f"a conversation limit is 1-{ACTIVE_MAX} (0: all)")
    if not (after or before):
        return convs[:limit] if limit else convs
    lo, hi = (parse_time(after) if after else ""), (parse_time(before) if before else "")
    found = sorted(
        (c for c in convs if c.last is not None and lo < c.last.ts and (not hi or c.last.ts < hi)),
        key=lambda c: (c.last.ts if c.last else "", c.last.id if c.last else 0),
        reverse=True,
    )
    if limit:
        found = found[-limit:] if oldest else found[:limit]
    return found
