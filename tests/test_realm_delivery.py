"""The realm's half of delivery (realm_server/delivery.py) in-process, rule by rule: no servers,
no sockets, no event loop, the clock passed in (well under a second)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from realm_server.delivery import (
    ACK_STALL_S,
    ENTRIES_MAX,
    Admit,
    Batch,
    CloseWait,
    InFlight,
    Reports,
    Tag,
    Tagged,
    admit_event,
    cut_at_logout,
    ended,
    late_page,
    page_tag,
)


@dataclasses.dataclass
class Peer:
    """A session as fan-out sees it."""

    user: str
    is_closed: bool = False
    seen: set[int] = dataclasses.field(default_factory=set)

    def first_sight(self, msg_id: int) -> bool:
        new = msg_id not in self.seen
        self.seen.add(msg_id)
        return new


def tag(seq: int, sid: int = 1, user: str = "bob", ids: tuple[int, ...] = (), link: str = "L") -> Tag:
    return Tag(link, seq, sid, user, ids)


def everything(r: Reports) -> Batch:
    batch = r.take()
    assert not r, "one take holds it all at these sizes"
    return batch


def said(r: Reports, current: str = "L") -> list[tuple[str, list[tuple[int, int]], list[tuple[int, int]], list[int],
                                                      list[tuple[str, list[int]]]]]:
    """What the realm would send now, call by call: (link, written pairs, dropped pairs,
    written_all seqs, named entries)."""
    return [(c.link_id, [(t.seq, t.session_id) for t in c.written], [(t.seq, t.session_id) for t in c.dropped],
             c.written_all, c.entries) for c in r.calls(everything(r), current)]


# ---- tags ------------------------------------------------------------------------------------


def test_a_tag_is_a_typed_record_with_named_fields() -> None:
    t = Tag(link="L", seq=3, session_id=7, user="bob", ids=(10, 11))
    assert (t.link, t.seq, t.session_id, t.user, t.ids) == ("L", 3, 7, "bob", (10, 11))
    with pytest.raises(AttributeError):
        t.seq = 4  # type: ignore[misc]


@pytest.mark.parametrize(("seq", "ids", "want"), [
    (0, [1, 2], None),  # an empty page: main follows nothing
    (5, [1, 2], Tag("L", 5, 7, "bob", (1, 2))),
    (5, [], Tag("L", 5, 7, "bob", ())),
])
def test_an_inbox_page_is_a_delivery_when_main_follows_it(seq: int, ids: list[int], want: Tag | None) -> None:
    assert page_tag("L", seq, 7, "bob", iter(ids)) == want


@pytest.mark.parametrize(("seq", "want"), [(0, None), (5, Tag("L", 5, 7, "", ()))])
def test_a_page_main_answered_too_late_is_dropped_with_nothing_to_name(seq: int, want: Tag | None) -> None:
    assert late_page("L", seq, 7) == want


# ---- fan-out ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("peer", "seq", "msg_id", "want"), [
    # (the session here, or None; main's seq; the message) -> what happens to it
    (None, 4, 9, ("dropped", Tag("L", 4, 1, "", (9,)))),
    (Peer("bob", is_closed=True), 4, 9, ("dropped", Tag("L", 4, 1, "bob", (9,)))),
    (Peer("bob"), 4, 9, ("write", Tag("L", 4, 1, "bob", (9,)))),
    (Peer("bob", seen={9}), 4, 9, ("repeat", Tag("L", 4, 1, "bob", (9,)))),
    (Peer("bob", seen={9}), 4, 0, ("write", Tag("L", 4, 1, "bob", ()))),  # no message (a file): no repeat
    (Peer("bob"), 0, 9, ("write", None)),  # a live notice: nothing to report
    (Peer("bob", seen={9}), 0, 9, None),  # a repeat with nothing to report: nothing at all
    (None, 0, 9, None),
])
def test_fan_out_target_by_target(peer: Peer | None, seq: int, msg_id: int, want: tuple[str, Tag | None] | None,
                                  ) -> None:
    out = Reports().fan_out("L", seq, msg_id, [1], {1: peer}.get if peer else {}.get)
    got = ([("write", t) for _, t in out.write] + [("repeat", t) for _, t in out.repeat]
           + [("dropped", t) for t in out.dropped])
    assert got == ([want] if want else [])


def test_fan_out_marks_the_message_seen_so_a_second_copy_is_a_repeat() -> None:
    r, bob = Reports(), Peer("bob")
    assert [p for p, _ in r.fan_out("L", 1, 9, [1], {1: bob}.get).write] == [bob]
    again = r.fan_out("L2", 1, 9, [1], {1: bob}.get)
    assert not again.write and [t for _, t in again.repeat] == [Tag("L2", 1, 1, "bob", (9,))]


# ---- one connection's queue ------------------------------------------------------------------


@pytest.mark.parametrize(("closed", "lines", "event_bytes", "size", "want"), [
    (False, 0, 0, 10, Admit.QUEUE),
    (True, 0, 0, 10, Admit.DROP),
    (False, 99, 0, 10, Admit.QUEUE),
    (False, 100, 0, 10, Admit.CUT),  # max_lines
    (False, 5, 990, 10, Admit.QUEUE),  # exactly at the byte bound
    (False, 5, 991, 10, Admit.CUT),
    (True, 100, 991, 10, Admit.DROP),  # closed says it first: no second disconnect
])
def test_an_event_is_queued_dropped_or_cuts_the_connection(closed: bool, lines: int, event_bytes: int, size: int,
                                                           want: Admit) -> None:
    assert admit_event(closed, lines, event_bytes, size, max_lines=100, max_bytes=1000) is want


STREAM = object()  # a payload going out (a barrier, like a response)


def queue(spec: str) -> list[object]:
    """R response, E<n> event carrying message n, P<n> a repeat of n, e an untagged event,
    S a payload, C a close."""
    out: list[object] = []
    for i, word in enumerate(spec.split()):
        kind, n = word[0], int(word[1:] or 0)
        if kind == "R":
            out.append(Tagged(b"r\n", tag(100 + i), False))
        elif kind == "E":
            out.append(Tagged(b"e\n", tag(100 + i, ids=(n,)), True, n))
        elif kind == "P":
            out.append(Tagged(b"", tag(100 + i, ids=(n,)), True, n, True))
        elif kind == "e":
            out.append(Tagged(b"t\n", None, True))
        elif kind == "S":
            out.append(STREAM)
        else:
            out.append(None)
    return out


@pytest.mark.parametrize(("spec", "kept", "cut"), [
    ("", "", ""),
    ("E1 E2", "", "E1 E2"),
    ("R E1", "R", "E1"),
    ("E1 R E2", "E1 R", "E2"),  # before the response the old session asked for: it goes out too
    ("E1 S E2", "E1 S", "E2"),  # a payload too
    ("E1 C", "E1 C", ""),  # and the close
    ("R P1", "R P1", ""),  # its first copy is no longer queued (written, or on its way): it stays
    ("E1 P1", "", "E1 P1"),  # a repeat goes with its first copy
    ("E1 R P1", "E1 R P1", ""),  # the first copy stays: so does its repeat
    ("E1 P2", "P2", "E1"),
    ("E1 E2 P2 P1", "", "E1 E2 P2 P1"),
    ("e E1", "", "e E1"),  # an untagged event is cut too (it has nothing to report)
])
def test_logout_cuts_the_events_after_the_last_response(spec: str, kept: str, cut: str) -> None:
    items = queue(spec)
    words = spec.split()
    got_kept, got_cut = cut_at_logout(items)

    def names(part: list[object]) -> str:
        return " ".join(words[next(i for i, x in enumerate(items) if x is item)] for item in part)

    assert (names(got_kept), names(got_cut)) == (kept, cut)


def test_a_connection_that_ends_drops_every_tagged_line_still_queued() -> None:
    items = queue("R E1 e S P1 C")
    assert ended(items) == [tag(100), tag(101, ids=(1,)), tag(104, ids=(1,))]


# ---- in flight: written, not yet acknowledged -------------------------------------------------


@pytest.mark.parametrize(("unacked", "exact", "want"), [
    # 50 bytes sent, lines ending at bytes 10, 25 and 40; the last `unacked` not acknowledged
    (50, True, []),
    (41, True, []),
    (40, True, ["a"]),
    (26, True, ["a"]),  # a line whose every byte is acknowledged is delivered, the rest of the write aside
    (25, True, ["a", "b"]),
    (10, True, ["a", "b", "c"]),
    (0, True, ["a", "b", "c"]),
    (10, False, []),  # TLS: the kernel counts records, not these bytes; only "none" is known
    (0, False, ["a", "b", "c"]),
])
def test_acknowledged_bytes_release_whole_lines_in_order(unacked: int, exact: bool, want: list[str]) -> None:
    f = InFlight()
    f.add(50, [(10, tag(1, user="a")), (25, tag(2, user="b")), (40, tag(3, user="c"))])
    assert [t.user for t in f.release(unacked, exact)] == want
    assert bool(f) == (len(want) < 3)


def test_in_flight_counts_offsets_across_writes_and_gives_up_the_rest_at_close() -> None:
    f = InFlight()
    assert not f and f.release(0) == []
    f.add(5)  # a payload's bytes: no delivery in them
    f.add(10, [(10, tag(1))])
    f.add(10, [(10, tag(2))])
    assert f.release(11) == [], "the first line ends at byte 15 of 25; 14 are acknowledged"
    assert f.release(10) == [tag(1)]
    assert f and f.take_all() == [tag(2)]
    assert not f and f.take_all() == []


def test_a_closing_connection_waits_while_the_client_takes_bytes() -> None:
    w = CloseWait(now=100.0, grace=0.5, stall_timeout=60.0)
    assert not w.expired(159.9) and w.expired(160.0), "up to the stall timeout while it makes progress"
    t = 100.0
    for left in (9000, 6000, 3000):  # acknowledgements keep coming
        t += 1.0
        assert not w.stalled(t, left, in_doubt=0)
    assert not w.stalled(t + ACK_STALL_S, 3000, in_doubt=0)
    assert w.stalled(t + ACK_STALL_S + 0.01, 3000, in_doubt=0), "nothing changed, nothing in flight"
    assert not w.stalled(t + 5, 3000, in_doubt=100), "bytes on the wire may still be acknowledged"


@pytest.mark.parametrize(("grace", "stall", "deadline"), [(0.0, 60.0, 0.0), (0.5, 60.0, 60.0), (0.5, 0.0, 0.5)])
def test_a_closing_connection_has_a_hard_deadline(grace: float, stall: float, deadline: float) -> None:
    w = CloseWait(now=10.0, grace=grace, stall_timeout=stall)
    assert w.expired(10.0 + deadline) and (deadline == 0 or not w.expired(10.0 + deadline - 0.01))


# ---- reports to main -------------------------------------------------------------------------


def test_a_single_delivery_is_reported_by_its_seq_and_session() -> None:
    r = Reports()
    r.add([tag(1, 7)], [tag(2, 8)])
    assert said(r) == [("L", [(1, 7)], [(2, 8)], [], [])]
    assert not r


def test_a_fan_out_written_everywhere_is_one_seq() -> None:
    r = Reports()
    out = r.fan_out("L", 5, 9, [1, 2, 3], {i: Peer(f"u{i}") for i in (1, 2, 3)}.get)
    tags = [t for _, t in out.write]
    r.add(tags[:2], [])
    assert not r, "not all written yet: nothing to say"
    r.add(tags[2:], [])
    assert said(r) == [("L", [], [], [5], [])]


def test_a_fan_out_with_a_drop_is_reported_pair_by_pair() -> None:
    r = Reports()
    out = r.fan_out("L", 5, 9, [1, 2, 3], {i: Peer(f"u{i}") for i in (1, 2, 3)}.get)
    t1, t2, t3 = (t for _, t in out.write)
    r.add([t1], [])
    r.add([], [t2])
    r.add([t3], [])
    assert said(r) == [("L", [(5, 1), (5, 3)], [(5, 2)], [], [])]


def test_a_fan_out_of_sessions_not_here_is_dropped_at_once() -> None:
    r = Reports()
    out = r.fan_out("L", 5, 9, [1, 2], {1: Peer("bob")}.get)
    r.add([t for _, t in out.write], out.dropped)
    assert said(r) == [("L", [(5, 1)], [(5, 2)], [], [])]


def test_flush_sends_the_written_half_of_a_fan_out_and_the_rest_still_ends_in_one_seq() -> None:
    r = Reports()
    out = r.fan_out("L", 5, 9, [1, 2, 3], {i: Peer(f"u{i}") for i in (1, 2, 3)}.get)
    t1, t2, t3 = (t for _, t in out.write)
    r.add([t1], [])
    r.flush()
    assert said(r) == [("L", [(5, 1)], [], [], [])], "before a Logout, the written ones must not wait"
    r.add([t2, t3], [])
    assert said(r) == [("L", [], [], [5], [])]


def test_written_on_a_link_that_is_not_current_is_named_dropped_still_goes_to_its_link() -> None:
    r = Reports()
    r.add([tag(1, 1, "bob", (10,), link="OLD"), tag(2, 2, "carol", (11, 12), link="OLD"),
           tag(3, 3, "bob", (13,), link="OLD"), tag(4, 4, "bob", (14,), link="NEW")],
          [tag(5, 1, "bob", (15,), link="OLD")])
    assert said(r, current="NEW") == [
        ("NEW", [(4, 4)], [], [], []),
        ("OLD", [], [(5, 1)], [], []),  # main may not have closed it yet; if it has, it gave that back
        ("NEW", [], [], [], [("bob", [10, 13]), ("carol", [11, 12])]),
    ]


def test_a_fan_out_completed_after_its_link_changed_is_named_target_by_target() -> None:
    r = Reports()
    out = r.fan_out("OLD", 5, 9, [1, 2, 3], {1: Peer("bob"), 2: Peer("carol"), 3: Peer("bob")}.get)
    r.add([t for _, t in out.write], [])
    assert said(r, current="NEW") == [("NEW", [], [], [], [("bob", [9, 9]), ("carol", [9])])]


@pytest.mark.parametrize("written", [
    tag(1, user="bob", ids=(), link="OLD"),  # a file event: no message to name
    tag(1, user="", ids=(9,), link="OLD"),  # no session took it
])
def test_what_cannot_be_named_is_not_said_once_its_link_is_gone(written: Tag) -> None:
    r = Reports()
    r.add([written], [])
    assert said(r, current="NEW") == []


def test_named_messages_go_in_calls_of_at_most_entries_max_ids() -> None:
    r = Reports()
    r.add([tag(1, user="bob", ids=tuple(range(ENTRIES_MAX + 10)), link="OLD"),
           tag(2, user="carol", ids=tuple(range(ENTRIES_MAX)), link="OLD")], [])
    calls = r.calls(everything(r), "NEW")
    assert [[(u, len(ids)) for u, ids in c.entries] for c in calls] == [
        [("bob", ENTRIES_MAX)], [("bob", 10)], [("carol", ENTRIES_MAX)]]
    assert {c.link_id for c in calls} == {"NEW"}


def test_small_limits_split_takes_and_named_calls() -> None:
    r = Reports(ack_max=2, entries_max=3)
    r.add([tag(i, link="OLD", ids=(i,)) for i in range(1, 6)], [])
    first = r.take()
    assert [t.seq for t in first.written] == [1, 2] and r
    r.add([tag(9, user="carol", ids=(1, 2), link="OLD")], [])
    assert [t.seq for t in r.take().written] == [3, 4]
    last = r.take()
    assert [t.seq for t in last.written] == [5, 9] and not r
    assert [c.entries for c in r.calls(last, "NEW")] == [[("bob", [5]), ("carol", [1, 2])]]


def test_named_entries_fill_a_call_before_starting_the_next() -> None:
    r = Reports(entries_max=3)
    r.add([tag(1, user="bob", ids=(1,), link="OLD"), tag(2, user="carol", ids=(2, 3), link="OLD"),
           tag(3, user="dave", ids=(4,), link="OLD")], [])
    assert [c.entries for c in r.calls(everything(r), "NEW")] == [
        [("bob", [1]), ("carol", [2, 3])], [("dave", [4])]]


def test_link_closed_the_written_go_again_named_the_dropped_do_not() -> None:
    r = Reports()
    out = r.fan_out("L", 3, 12, [4, 5], {4: Peer("dave"), 5: Peer("erin")}.get)
    r.add([tag(1, 1, "bob", (10,)), *(t for _, t in out.write)], [tag(2, 2, "carol", (11,))])
    batch = r.take()
    (call,) = r.calls(batch, "L")
    assert (call.written_all, call.dropped) == ([3], [tag(2, 2, "carol", (11,))])
    assert r.link_closed(call), "main had closed L (this realm froze): its seqs mean nothing now"
    r.again(batch)
    assert said(r, current="L") == [("", [], [], [], [("bob", [10]), ("dave", [12]), ("erin", [12])])], \
        "named, with no current link to report on (L is closed)"


def test_link_closed_on_a_call_that_only_dropped_changes_nothing() -> None:
    r = Reports()
    r.add([], [tag(2, 2, "carol", (11,))])
    (call,) = r.calls(r.take(), "L")
    assert not r.link_closed(call)
    r.add([tag(1, 1, "bob", (10,))], [])
    assert said(r, current="L") == [("L", [(1, 1)], [], [], [])]


def test_a_closed_link_is_remembered_until_the_next_link() -> None:
    r = Reports()
    r.add([tag(1)], [])
    (call,) = r.calls(r.take(), "L")
    r.link_closed(call)
    r.add([tag(2, ids=(5,))], [])
    assert said(r, current="L") == [("", [], [], [], [("bob", [5])])]
    r.relinked()
    r.add([tag(3, ids=(6,))], [])
    assert said(r, current="L") == [("L", [(3, 1)], [], [], [])], "a link is told by its id alone again"


def test_a_report_that_failed_for_a_while_goes_again_ahead_of_newer_ones() -> None:
    r = Reports()
    r.add([tag(1)], [tag(2)])
    batch = r.take()
    r.add([tag(3)], [tag(4)])
    r.failed(batch, retry=True)
    assert said(r) == [("L", [(1, 1), (3, 1)], [(2, 1), (4, 1)], [], [])]


def test_a_report_that_failed_for_good_is_not_sent_again() -> None:
    r = Reports()
    r.add([tag(1)], [tag(2)])
    r.failed(r.take(), retry=False)
    assert not r, "those stay in flight in main until the link closes, then come back"


# ---- every delivery said once ----------------------------------------------------------------


class ReportsModel(RuleBasedStateMachine):
    """Random fan-outs and pages on changing links, reported written or dropped in any order, with
    flushes and sends in between: every dropped delivery is reported dropped exactly once on its
    own link, and every written one is said exactly once (its pair, its fan-out's one seq, or its
    messages named), never both written and dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.r = Reports(ack_max=3, entries_max=4)
        self.link = "A"
        self.seq = 0
        self.open: list[Tag] = []  # not reported yet
        self.written: list[Tag] = []
        self.dropped: list[Tag] = []
        self.pairs_w: Counter[tuple[str, int, int]] = Counter()
        self.pairs_d: Counter[tuple[str, int, int]] = Counter()
        self.all_seqs: Counter[tuple[str, int]] = Counter()
        self.named: Counter[tuple[str, int]] = Counter()

    @rule(sids=st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True), message=st.booleans())
    def push(self, sids: list[int], message: bool) -> None:
        self.seq += 1
        out = self.r.fan_out(self.link, self.seq, self.seq if message else 0, sids, lambda sid: Peer(f"u{sid % 3}"))
        self.open += [t for _, t in out.write]

    @rule(n=st.integers(1, 3))
    def page(self, n: int) -> None:
        self.seq += 1
        t = page_tag(self.link, self.seq, 1, "u1", range(1000 * self.seq, 1000 * self.seq + n))
        assert t is not None
        self.open.append(t)

    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        if not self.open:
            return
        picks = data.draw(st.lists(st.booleans(), min_size=len(self.open), max_size=len(self.open)))
        part = self.open[:data.draw(st.integers(1, len(self.open)))]
        self.open = self.open[len(part):]
        w = [t for t, p in zip(part, picks, strict=False) if p]
        d = [t for t, p in zip(part, picks, strict=False) if not p]
        self.written += w
        self.dropped += d
        self.r.add(w, d)

    @rule()
    def flush(self) -> None:
        self.r.flush()

    @rule()
    def relink(self) -> None:
        self.link = chr(ord(self.link) + 1)
        self.r.relinked()

    @rule()
    def send(self) -> None:
        while self.r:
            for c in self.r.calls(self.r.take(), self.link):
                self.pairs_w.update((c.link_id, t.seq, t.session_id) for t in c.written)
                self.pairs_d.update((c.link_id, t.seq, t.session_id) for t in c.dropped)
                self.all_seqs.update((c.link_id, s) for s in c.written_all)
                self.named.update((u, i) for u, ids in c.entries for i in ids)
                assert c.link_id == self.link or not (c.written or c.written_all), "seqs only on the current link"

    @invariant()
    def nothing_said_twice(self) -> None:
        assert all(n == 1 for n in self.pairs_w.values()) and all(n == 1 for n in self.pairs_d.values())
        assert all(n == 1 for n in self.all_seqs.values())
        assert not set(self.pairs_w) & set(self.pairs_d)
        assert not {(link, seq) for link, seq, _ in self.pairs_d} & set(self.all_seqs), \
            "a fan-out with a drop is never reported as written everywhere"

    def teardown(self) -> None:
        self.r.flush()
        self.send()
        for t in self.dropped:
            assert self.pairs_d[(t.link, t.seq, t.session_id)] == 1
        unnamed: Counter[tuple[str, int]] = Counter()
        for t in self.written:
            key = (t.link, t.seq, t.session_id)
            assert self.pairs_d[key] == 0
            # (a pair sent by a flush, then its fan-out's seq: main's written_all takes the open targets)
            by_seq = self.pairs_w[key] or self.all_seqs[(t.link, t.seq)]
            if not by_seq and t.user:
                unnamed.update((t.user, i) for i in t.ids)
        assert self.named == unnamed, "what was not said by seq is named, each message once per delivery"


TestReportsModel = ReportsModel.TestCase
TestReportsModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
