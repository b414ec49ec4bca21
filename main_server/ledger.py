"""The delivery ledger: what main has handed to its links and not yet heard back about. No I/O,
no clock, no asyncio: every transition is a method here, tested in-process (tests/test_ledger.py).

Words:
- An *entry* is (user key, message id): a row of the undelivered table.
- A *delivery* is one seq on a link: a pushed event or an inbox response. It targets some
  sessions of that link and carries entries for some of their users.
- The realm answers per (seq, session): *written* (the bytes reached that client's socket) or
  *dropped* (never written: the session ended, its queue was cut, the call failed).

When a link closes, its seqs mean nothing any more, yet the realm may still write what it had
queued on it (its sessions outlive the link): it then names those entries (user, message id),
and they are delivered (`written_elsewhere`).

An entry is delivered the first time any of its targets is written. It goes back to undelivered
once every delivery carrying it has ended (dropped, or its link closed) without a write. A
delivered entry stays "in flight" until its deletion from the undelivered table is committed
(`committed`), and an inbox read that started before that commit never returns it
(`begin_read` / `fresh`), so no entry is ever both pushed and returned by inbox.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Entry = tuple[str, int]  # (user key, message id)


@dataclass(slots=True)
class _Delivery:
    targets: dict[int, str]  # session id -> user key, until that target is resolved
    entries: dict[str, list[int]]  # user key -> message ids, until that user is resolved


@dataclass(slots=True)
class _Link:
    next_seq: int = 1
    deliveries: dict[int, _Delivery] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What a transition decided: entries to delete from undelivered (delivered now), and
    entries that went back to undelivered (they may be pushed again to a live session)."""

    delivered: list[Entry] = field(default_factory=list)
    returned: list[Entry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.delivered or self.returned)

    def add(self, other: Outcome) -> None:
        self.delivered += other.delivered
        self.returned += other.returned


class UnknownLink(KeyError):
    pass


class Ledger:
    def __init__(self) -> None:
        self._links: dict[str, _Link] = {}
        # An entry is known while deliveries carry it or its delivery awaits its commit: how many
        # deliveries carry it (flights), and whether it was written somewhere (delivered). Plain
        # dict and set, not an object per entry: a fan-out records one per recipient.
        self._flights: dict[Entry, int] = {}
        self._delivered: set[Entry] = set()
        self._by_user: dict[str, set[int]] = {}  # user -> message ids of known entries
        self._reads: dict[str, int] = {}  # user -> inbox reads under way
        self._gone: dict[str, set[int]] = {}  # user -> ids forgotten during those reads

    # ---- links -------------------------------------------------------------------------------

    def open(self, link: str) -> None:
        self._links.setdefault(link, _Link())

    def close(self, link: str) -> Outcome:
        """The link is gone: every delivery on it ends without a write."""
        state = self._links.pop(link, None)
        out = Outcome()
        if state is None:
            return out
        for d in state.deliveries.values():
            for user, ids in d.entries.items():
                for msg in ids:
                    self._end_flight((user, msg), out)
        return out

    def is_open(self, link: str) -> bool:
        return link in self._links

    def pending(self, link: str) -> int:
        """Deliveries on the link with a target not yet written or dropped."""
        state = self._links.get(link)
        return len(state.deliveries) if state else 0

    # ---- deliveries --------------------------------------------------------------------------

    def record(self, link: str, targets: dict[int, str], entries: dict[str, list[int]]) -> int:
        """A delivery about to be sent on the link; returns its seq. `entries` are the
        undelivered entries it carries per user (distinct ids per user); every such user is
        among the targets. The ledger keeps both dicts (the caller hands them over) and never
        changes the id lists (a fan-out may hand every user the same one)."""
        state = self._links.get(link)
        if state is None:
            raise UnknownLink(link)
        seq = state.next_seq
        state.next_seq += 1
        if not entries:
            return seq
        state.deliveries[seq] = _Delivery(targets, entries)
        flights, by_user = self._flights, self._by_user
        keys = [(user, msg) for user, ids in entries.items() for msg in ids]
        if flights.keys().isdisjoint(keys):
            # The usual case, entries new to the ledger: one bulk update, not one per recipient.
            flights.update(dict.fromkeys(keys, 1))
        else:
            for key in keys:
                flights[key] = flights.get(key, 0) + 1
        for user, ids in entries.items():
            known = by_user.get(user)
            if known is None:
                by_user[user] = set(ids)
            else:
                known.update(ids)
        return seq

    def written(self, link: str, seq: int, session: int) -> Outcome:
        """The delivery's bytes reached this session's socket."""
        out = Outcome()
        d = self._target(link, seq, session)
        if d is None:
            return out
        user = d.targets.pop(session)
        ids = d.entries.pop(user, None)
        # The user has it: their other targets of this delivery no longer matter.
        for sid in [s for s, u in d.targets.items() if u == user]:
            del d.targets[sid]
        for msg in ids or ():
            self._deliver((user, msg), out)
        self._forget_if_done(link, seq, d)
        return out

    def written_all(self, link: str, seq: int) -> Outcome:
        """Every target of the delivery that is still open was written (the common case, said
        once for a whole fan-out)."""
        out = Outcome()
        state = self._links.get(link)
        d = state.deliveries.pop(seq, None) if state else None
        if d is None:
            return out
        # _deliver for each entry, inlined: a fan-out resolves one entry per recipient here.
        delivered, flights = self._delivered, self._flights
        keys = [(user, msg) for user, ids in d.entries.items() for msg in ids]
        out.delivered = [key for key in keys if key not in delivered]
        delivered.update(out.delivered)
        for key in keys:  # their flights end; all are delivered, so none returns
            n = flights[key]
            if n > 1:
                flights[key] = n - 1
            else:
                del flights[key]
        return out

    def dropped(self, link: str, seq: int, session: int) -> Outcome:
        """The delivery was not written to this session (and never will be)."""
        out = Outcome()
        d = self._target(link, seq, session)
        if d is None:
            return out
        user = d.targets.pop(session)
        if user not in d.targets.values():
            for msg in d.entries.pop(user, ()):
                self._end_flight((user, msg), out)
        self._forget_if_done(link, seq, d)
        return out

    def written_elsewhere(self, entries: Iterable[Entry]) -> Outcome:
        """These entries reached their user on a link that has closed since (its seqs are gone):
        delivered, whatever delivery still carries them or would have returned them."""
        out = Outcome()
        delivered, by_user = self._delivered, self._by_user
        for entry in entries:
            if entry in delivered:
                continue
            delivered.add(entry)
            out.delivered.append(entry)
            # Known until committed, as any delivered entry: an inbox read under way skips it.
            by_user.setdefault(entry[0], set()).add(entry[1])
        return out

    def session_closed(self, link: str, session: int) -> Outcome:
        """The session left the link: whatever it had not written never will be."""
        out = Outcome()
        state = self._links.get(link)
        if state is None:
            return out
        for seq in [s for s, d in state.deliveries.items() if session in d.targets]:
            out.add(self.dropped(link, seq, session))
        return out

    def committed(self, entries: Iterable[Entry]) -> None:
        """These delivered entries are deleted from undelivered, durably."""
        delivered, flights = self._delivered, self._flights
        done = [entry for entry in entries if entry in delivered]
        delivered.difference_update(done)  # now only the flights keep them, if any
        by_user, reads = self._by_user, self._reads
        for entry in done:
            if entry in flights:
                continue
            user, msg = entry  # _remove, inlined: one per recipient of a fan-out
            ids = by_user[user]
            ids.discard(msg)
            if not ids:
                del by_user[user]
            if user in reads:
                self._gone.setdefault(user, set()).add(msg)

    # ---- inbox reads -------------------------------------------------------------------------

    def in_flight(self, user: str) -> frozenset[int]:
        return frozenset(self._by_user.get(user, ()))

    def begin_read(self, user: str) -> None:
        """An inbox read of the user's undelivered entries starts (storage is asked next)."""
        self._reads[user] = self._reads.get(user, 0) + 1

    def end_read(self, user: str, ids: Iterable[int]) -> list[int]:
        """The read returned `ids`: those it may hand out (not in flight, and not delivered
        while it ran), in order. The caller records them as a delivery right away."""
        skip = self._by_user.get(user, set()) | self._gone.get(user, set())
        fresh = [i for i in ids if i not in skip]
        n = self._reads.get(user, 0) - 1
        if n > 0:
            self._reads[user] = n
        else:
            self._reads.pop(user, None)
            self._gone.pop(user, None)
        return fresh

    # ---- internals ---------------------------------------------------------------------------

    def _target(self, link: str, seq: int, session: int) -> _Delivery | None:
        state = self._links.get(link)
        d = state.deliveries.get(seq) if state else None
        return d if d is not None and session in d.targets else None

    def _forget_if_done(self, link: str, seq: int, d: _Delivery) -> None:
        # A user's entries live exactly as long as one of their targets: none left, done.
        if not d.entries:
            self._links[link].deliveries.pop(seq, None)

    def _deliver(self, entry: Entry, out: Outcome) -> None:
        if entry not in self._delivered:
            self._delivered.add(entry)
            out.delivered.append(entry)
        self._end_flight(entry, out)

    def _end_flight(self, entry: Entry, out: Outcome) -> None:
        n = self._flights[entry] - 1
        if n > 0:
            self._flights[entry] = n
            return
        del self._flights[entry]
        if entry not in self._delivered:
            self._remove(entry)
            out.returned.append(entry)

    def _remove(self, entry: Entry) -> None:
        user, msg = entry
        ids = self._by_user[user]
        ids.discard(msg)
        if not ids:
            del self._by_user[user]
        if user in self._reads:
            self._gone.setdefault(user, set()).add(msg)
