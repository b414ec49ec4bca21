"""The realm's half of delivery, with no I/O: no sockets, no tasks, no gRPC, no clock of its own.
The connection, its writer and the upstream tell it what happened (a delivery written, dropped,
the link changed, a report failed, a logout) and it answers with what to do: the deliveries to
report and how, the queued lines to cut. main_server/ledger.py is main's half.

A delivery (a push, an inbox page) carries a Tag. It is written once the client's TCP has
acknowledged every byte of its line, dropped when that can no longer happen: the session was
gone or closed, its queue was cut, the session logged out with it still queued, the connection
ended first. A message main sends again after a relink is not written twice: its repeat is
settled with the first copy (written once everything queued before it is, dropped with it).

Reports go to main by (seq, session) on the link that carried them, one seq for a fan-out all of
whose targets were written. Once that link is not the current one, or main answered that it has
closed it, its seqs mean nothing to main any more: what was written there is named by its
messages (user and message ids) instead, and what was dropped there still goes to that link
(main may not have closed it yet; if it has, it gave those back already)."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, TypeVar

ACK_MAX = 20_000  # deliveries per report call
ENTRIES_MAX = 50_000  # message ids named per report call (far under the relay's 1 MiB)
ACK_STALL_S = 0.25  # a closing connection whose acknowledgements stop this long is settled


class Tag(NamedTuple):
    """One delivery to one session, as main will hear of it."""

    link: str  # the link it came on
    seq: int  # main's delivery seq on that link
    session_id: int
    user: str  # who the session was logged in as ("" when no session took it)
    ids: tuple[int, ...]  # the messages it carries (named once its link has closed)


Report = Callable[[list[Tag], list[Tag]], None]  # (written, dropped)
_new_tag = tuple.__new__  # for the hot path: Tag(...) runs a Python-level __new__, at twice the cost


def page_tag(link: str, seq: int, session_id: int, user: str, ids: Iterable[int]) -> Tag | None:
    """An inbox page's delivery; None when main follows none (an empty page)."""
    return Tag(link, seq, session_id, user, tuple(ids)) if seq else None


def late_page(link: str, seq: int, session_id: int) -> Tag | None:
    """A page main answered after the realm gave up on it: never written, so dropped, and with
    nothing written there is nothing to name."""
    return Tag(link, seq, session_id, "", ()) if seq else None


# ---- pushes ------------------------------------------------------------------------------------


class Recipient(Protocol):
    """A session as fan-out sees it."""

    user: str

    @property
    def is_closed(self) -> bool: ...

    def first_sight(self, msg_id: int) -> bool: ...


R = TypeVar("R", bound=Recipient)


class FanOut(NamedTuple, Generic[R]):
    """What to do with one event from main, session by session."""

    write: list[tuple[R, Tag | None]]  # queue the event line (tag None: nothing to report)
    repeat: list[tuple[R, Tag]]  # already sent to that session: queue a repeat, no bytes
    dropped: list[Tag]  # report dropped now: no session here takes it


# ---- one connection's queue ----------------------------------------------------------------------


@dataclass(slots=True)
class Tagged:
    """A queued event or response line; `tag` when it is a delivery main waits to hear about."""

    line: bytes
    tag: Tag | None
    event: bool  # events are for the session that was logged in when they were queued
    msg_id: int = 0  # the message an event carries
    # A message this session was sent already (main sent it again after a relink): no bytes,
    # only a place in the queue, so that it is settled with everything before it, the first
    # copy included.
    repeat: bool = False


class Admit(enum.Enum):
    QUEUE = "queue"
    DROP = "drop"  # the connection is closed: report it dropped
    CUT = "cut"  # the client does not read its events: report it dropped and drop the connection


def admit_event(closed: bool, queued_lines: int, event_bytes: int, size: int, max_lines: int,
                max_bytes: int) -> Admit:
    """Whether an event of `size` bytes joins a queue holding `queued_lines` lines, `event_bytes`
    of them events. Only events count towards the byte bound: replies the client asked for are
    bounded by the reader waiting for room instead."""
    if closed:
        return Admit.DROP
    if queued_lines >= max_lines or event_bytes + size > max_bytes:
        return Admit.CUT
    return Admit.QUEUE


def cut_at_logout(queue: Iterable[object]) -> tuple[list[object], list[Tagged]]:
    """(kept, cut) of a queue whose session logs out. Events after the last response (or
    payload, or close) are cut: the connection may log in as someone else next, and they come
    back to their user. Those queued before it stay: that response, which the old session asked
    for, goes out anyway, and an inbox page among them may leave out a message such an event
    carries. A repeat goes with its first copy: cut if that was cut here, else kept (the copy
    was written already, or stays queued)."""
    items = list(queue)
    last = max((i for i, item in enumerate(items) if not (isinstance(item, Tagged) and item.event)), default=-1)
    kept: list[object] = items[:last + 1]
    cut: list[Tagged] = []
    gone: set[int] = set()  # messages whose first copies are cut here
    for item in items[last + 1:]:
        assert isinstance(item, Tagged)
        if not item.repeat or item.msg_id in gone:
            if item.msg_id:
                gone.add(item.msg_id)
            cut.append(item)
        else:
            kept.append(item)
    return kept, cut


def ended(queue: Iterable[object]) -> list[Tag]:
    """A connection that ends with these items still queued: none of them was written."""
    return [item.tag for item in queue if isinstance(item, Tagged) and item.tag is not None]


class InFlight:
    """Deliveries handed to the socket whose bytes the client's TCP has not acknowledged yet, by
    the end offset of their line in everything sent."""

    __slots__ = ("_pending", "_sent")

    def __init__(self) -> None:
        self._sent = 0  # bytes handed to the transport
        # (end offset, tag), in order; None while empty (an idle connection holds no deque)
        self._pending: deque[tuple[int, Tag]] | None = None

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, nbytes: int, tags: Sequence[tuple[int, Tag]] = ()) -> None:
        """nbytes handed to the transport; tags with the end of their line within them (a line
        fully acknowledged was delivered even when the rest of the write was not)."""
        if tags:
            if self._pending is None:
                self._pending = deque()
            for end, tag in tags:
                self._pending.append((self._sent + end, tag))
        self._sent += nbytes

    def release(self, unacked: int, exact: bool = True) -> list[Tag]:
        """Tags whose bytes were all acknowledged, given that the last `unacked` bytes sent were
        not. Not exact (TLS: the kernel counts records, not these bytes): only "none" is known."""
        pending = self._pending
        if not pending:
            return []
        done = self._sent - unacked if exact else (self._sent if unacked == 0 else 0)
        out: list[Tag] = []
        while pending and pending[0][0] <= done:
            out.append(pending.popleft()[1])
        if not pending:
            self._pending = None
        return out

    def take_all(self) -> list[Tag]:
        """Everything still pending, which will now never be acknowledged (the connection is
        reset, so these bytes never arrive after being reported dropped)."""
        out = [t for _, t in self._pending] if self._pending else []
        self._pending = None
        return out


class CloseWait:
    """How long a closing connection waits for the client's last acknowledgements: while its TCP
    acknowledges more and more, up to the deadline; once nothing changes for ACK_STALL_S and
    nothing is in flight (whatever is unacknowledged never left this host), no longer. The
    clock is the caller's."""

    __slots__ = ("_changed", "_deadline", "_left")

    def __init__(self, now: float, grace: float, stall_timeout: float) -> None:
        self._deadline = now + (max(grace, stall_timeout) if grace else 0)
        self._left = -1  # bytes outstanding at the last look
        self._changed = now

    def expired(self, now: float) -> bool:
        return now >= self._deadline

    def stalled(self, now: float, outstanding: int, in_doubt: int) -> bool:
        """outstanding: bytes written and not acknowledged; in_doubt: those of them the kernel
        has transmitted (they may have reached the client though no ACK says so yet)."""
        if outstanding != self._left:
            self._left, self._changed = outstanding, now
            return False
        return now - self._changed > ACK_STALL_S and not in_doubt


# ---- the realm's reports to main -------------------------------------------------------------


class WrittenAll(NamedTuple):
    """A fan-out every target of which was written: one seq says so (tags: to name them should
    the link close)."""

    link: str
    seq: int
    tags: list[Tag]


@dataclass(slots=True)
class Batch:
    """Reports taken to be sent in one go."""

    written: list[Tag]
    dropped: list[Tag]
    written_all: list[WrittenAll]


@dataclass(slots=True)
class AckCall:
    """One report call to main."""

    link_id: str
    written: list[Tag] = field(default_factory=list)  # by (seq, session)
    dropped: list[Tag] = field(default_factory=list)  # by (seq, session)
    written_all: list[int] = field(default_factory=list)  # seqs
    entries: list[tuple[str, list[int]]] = field(default_factory=list)  # (user, message ids) named


class Reports:
    """What the realm did with its deliveries, until main has heard it."""

    __slots__ = ("_ack_max", "_closed_links", "_dropped", "_entries_max", "_expect", "_written", "_written_all")

    def __init__(self, ack_max: int = ACK_MAX, entries_max: int = ENTRIES_MAX) -> None:
        self._ack_max = ack_max
        self._entries_max = entries_max
        self._written: list[Tag] = []
        self._dropped: list[Tag] = []
        self._written_all: list[WrittenAll] = []
        # Fan-outs: (link, seq) -> [targets not yet reported, written tags so far]. When every
        # target was written, one seq says so instead of a pair per session.
        self._expect: dict[tuple[str, int], tuple[list[int], list[Tag]]] = {}
        # Links main said it closed while this realm still used them (it froze, say): what was
        # written on them is named instead.
        self._closed_links: set[str] = set()

    def __bool__(self) -> bool:
        """Something is waiting to be sent."""
        return bool(self._written or self._dropped or self._written_all)

    def fan_out(self, link: str, seq: int, msg_id: int, session_ids: Sequence[int],
                lookup: Callable[[int], R | None]) -> FanOut[R]:
        """An event from main for these sessions (seq 0: no delivery to report; msg_id 0: it
        carries no message). A session that is not (or no longer) here drops it, and main gives
        it back to the user; one that was sent that message already gets a repeat."""
        if seq and len(session_ids) > 1:
            self._expect[(link, seq)] = ([len(session_ids)], [])
        write: list[tuple[R, Tag | None]] = []
        repeat: list[tuple[R, Tag]] = []
        dropped: list[Tag] = []
        ids = (msg_id,) if msg_id else ()
        # The hot path of every push: locals, and tags made as the tuples they are (a third of
        # the cost of Tag(...)).
        for sid in session_ids:
            r = lookup(sid)
            tag = _new_tag(Tag, (link, seq, sid, r.user if r is not None else "", ids)) if seq else None
            if r is None or r.is_closed:
                if tag is not None:
                    dropped.append(tag)
            elif msg_id and not r.first_sight(msg_id):
                if tag is not None:
                    repeat.append((r, tag))
            else:
                write.append((r, tag))
        return FanOut(write, repeat, dropped)

    def add(self, written: Iterable[Tag], dropped: Iterable[Tag]) -> None:
        """Deliveries written and dropped (each reported once)."""
        expect = self._expect
        for tag in written:
            e = expect.get((tag.link, tag.seq))
            if e is None:
                self._written.append(tag)
                continue
            e[0][0] -= 1
            e[1].append(tag)
            if not e[0][0]:
                del expect[(tag.link, tag.seq)]
                self._written_all.append(WrittenAll(tag.link, tag.seq, e[1]))
        for tag in dropped:
            e = expect.pop((tag.link, tag.seq), None)
            if e is not None:  # not all written: this fan-out is reported pair by pair
                self._written += e[1]
            self._dropped.append(tag)

    def awaiting(self) -> int:
        """Fan-outs still waiting for one of their sessions to write or drop."""
        return len(self._expect)

    def flush(self) -> None:
        """Before a Logout: half-reported fan-outs go pair by pair, so that the written ones do
        not wait behind it (main would count them dropped). The rest of such a fan-out still
        ends in one seq."""
        for _, tags in self._expect.values():
            self._written += tags
            tags.clear()

    def take(self) -> Batch:
        """The next reports to send (at most ack_max of each kind)."""
        n = self._ack_max
        batch = Batch(self._written[:n], self._dropped[:n], self._written_all[:n])
        del self._written[:n], self._dropped[:n], self._written_all[:n]
        return batch

    def calls(self, batch: Batch, current: str) -> list[AckCall]:
        """The batch as report calls, one per link, then those naming messages (in calls of at
        most entries_max ids, on the current link). current: the realm's link now ("" while
        there is none)."""
        if current in self._closed_links:
            current = ""
        per_link: dict[str, AckCall] = {}

        def call(link: str) -> AckCall:
            c = per_link.get(link)
            return c if c is not None else per_link.setdefault(link, AckCall(link))

        elsewhere: dict[str, list[int]] = {}
        for tag in batch.written:
            if tag.link == current:
                call(tag.link).written.append(tag)
            elif tag.ids and tag.user:
                elsewhere.setdefault(tag.user, []).extend(tag.ids)
        for tag in batch.dropped:
            call(tag.link).dropped.append(tag)
        for done in batch.written_all:
            if done.link == current:
                call(done.link).written_all.append(done.seq)
            else:
                for tag in done.tags:
                    if tag.ids and tag.user:
                        elsewhere.setdefault(tag.user, []).extend(tag.ids)
        out = list(per_link.values())
        most = self._entries_max
        named, count = AckCall(current), 0
        for user, ids in elsewhere.items():
            for i in range(0, len(ids), most):
                part = ids[i:i + most]
                if count + len(part) > most:
                    out.append(named)
                    named, count = AckCall(current), 0
                named.entries.append((user, part))
                count += len(part)
        if count:
            out.append(named)
        return out

    def link_closed(self, call: AckCall) -> bool:
        """Main answered this call with link_closed: the link's seqs mean nothing to it any more.
        True when the call said something written there (remembered at once, even should a
        later call of the batch fail): then the batch goes again (named), once every call of it
        was answered. What was dropped there needs no word: main gave it back when it closed
        the link."""
        if not (call.written or call.written_all):
            return False
        self._closed_links.add(call.link_id)
        return True

    def again(self, batch: Batch) -> None:
        """What the batch says was written, queued again ahead of newer reports: on a link now
        known closed, it is named this time."""
        self._written[:0], self._written_all[:0] = batch.written, batch.written_all

    def failed(self, batch: Batch, retry: bool) -> None:
        """A report call failed. retry (main was unavailable): the batch is kept, ahead of newer
        reports, and sent again (a report said twice changes nothing; named should its link have
        closed meanwhile). Otherwise sending it again would fail again: those deliveries stay in
        flight in main until the link closes, then come back."""
        if retry:
            self._written[:0], self._dropped[:0], self._written_all[:0] = (batch.written, batch.dropped,
                                                                         batch.written_all)

    def relinked(self) -> None:
        """A new link is up: older links are told apart by their ids alone."""
        self._closed_links.clear()
