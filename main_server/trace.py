"""Where each message went: the hops the delivery desk saw for it (pushed on which realm link to
which sessions, written, dropped and why, back in undelivered, deleted from undelivered), kept
in memory for the most recent messages. No I/O, the clock injected; tested in-process
(tests/test_trace.py). What is durable (stored, still waiting) is read from storage when a
trace is asked for, not kept here.

Hops are noted once per delivery, not once per recipient: a fan-out to 49 members is one
`pushed` hop naming 49 users (copied in C, not walked in Python); tracing costs the hot path
about 0.2 µs per recipient (`python -m bench.micro_main --trace-messages 0` compares)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

STORED, PUSHED, WRITTEN, DROPPED, RETURNED, INBOX, DELIVERED = (
    "stored", "pushed", "written", "dropped", "returned", "inbox", "delivered")

# Why a delivery ended unwritten.
NOT_WRITTEN = "not written by the realm (the connection closed, or its queue was cut)"
LINK_CLOSED = "the realm's link to main closed"
SESSION_LEFT = "the session logged out or its connection closed"

# Why a message still waits in undelivered, from the last hop about that user.
OFFLINE = "the user had no session when it was sent (inbox or the next login brings it)"
IN_FLIGHT = "pushed to a session; the realm has not reported it yet"
COMMITTING = "written; its removal from undelivered is being committed"

_USER, _MSG = itemgetter(0), itemgetter(1)

# Messages whose hops are kept, the oldest forgotten first (about 2 KB for one to 50 people).
TRACE_MOST = 5_000
HOPS_MOST = 64  # hops kept per message: a message bounced forever cannot grow without bound


@dataclass(frozen=True, slots=True)
class Hop:
    at: float  # unix time
    step: str
    users: tuple[str, ...]  # the user keys it concerns
    realm: str = ""  # the realm whose link carried it
    sessions: tuple[tuple[int, str], ...] = ()  # (session id, user key) it targeted or reached
    why: str = ""


class Trace:
    def __init__(self, clock: Callable[[], float], most: int = TRACE_MOST) -> None:
        self.clock = clock
        self.most = most
        # msg id -> its hops as plain tuples (at, step, users, realm, session ids, their users,
        # why), made into Hops when asked for: noting runs for every delivery.
        self._hops: OrderedDict[int, list[tuple[Any, ...]]] = OrderedDict()

    def note(self, msg_id: int, step: str, users: Iterable[str], realm: str = "",
             sessions: Mapping[int, str] | None = None, why: str = "") -> None:
        """sessions: the session ids it targeted or reached, with their users."""
        if self.most <= 0:
            return
        hops = self._hops.get(msg_id)
        if hops is None:
            hops = self._hops[msg_id] = []
            if len(self._hops) > self.most:
                self._hops.popitem(last=False)
        if len(hops) >= HOPS_MOST:
            return
        who = tuple(users)
        if hops and hops[0][2] == who:
            who = hops[0][2]  # a fan-out's later hops share the first one's tuple of users
        sids, sid_users = (tuple(sessions), tuple(sessions.values())) if sessions else ((), ())
        hops.append((self.clock(), step, who, realm, sids, sid_users, why))

    def note_entries(self, entries: Iterable[tuple[str, int]], step: str, realm: str = "",
                     sessions: Mapping[int, str] | None = None, why: str = "") -> None:
        """One hop per message among (user, message id) entries, naming its users. Entries come
        grouped by message (a fan-out's outcome): grouped here without a Python step per entry."""
        if self.most <= 0:
            return
        for msg, group in groupby(entries, _MSG):
            self.note(msg, step, map(_USER, group), realm, sessions, why)

    def hops(self, msg_id: int) -> list[Hop]:
        return [Hop(at, step, users, realm, tuple(zip(sids, sid_users, strict=True)), why)
                for at, step, users, realm, sids, sid_users, why in self._hops.get(msg_id, ())]


def seen_by(hops: list[Hop], user: str) -> list[Hop]:
    """The hops as one of the message's recipients may see them: only those about themselves,
    naming only themselves and their own sessions."""
    return [Hop(h.at, h.step, (user,), h.realm, tuple(p for p in h.sessions if p[1] == user), h.why)
            for h in hops if user in h.users]


def as_sender(hops: list[Hop], own: str) -> list[Hop]:
    """The hops as the sender sees them: every recipient's, but no realm or session but their own."""
    out: list[Hop] = []
    for h in hops:
        mine = tuple(p for p in h.sessions if p[1] == own)
        out.append(Hop(h.at, h.step, h.users, h.realm if h.users == (own,) else "", mine, h.why))
    return out


def waiting_why(hops: list[Hop], user: str) -> str:
    """Why message still waits for `user`, from the hops about them."""
    about = [h for h in hops if user in h.users]
    if not about:
        return OFFLINE
    last = about[-1]
    if last.step == RETURNED:
        dropped = [h for h in about if h.step == DROPPED]
        return "dropped: " + (dropped[-1].why if dropped else NOT_WRITTEN)
    if last.step == PUSHED:
        return IN_FLIGHT
    if last.step == WRITTEN:
        return COMMITTING
    return OFFLINE
