"""The delivery ledger in-process, transition by transition (no servers, well under a second)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from main_server.ledger import Ledger, UnknownLink


def ledger(*links: str) -> Ledger:
    lg = Ledger()
    for link in links or ("L",):
        lg.open(link)
    return lg


def test_push_then_written_delivers_once_and_stays_in_flight_until_committed() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob"}, {"bob": [10]})
    assert lg.in_flight("bob") == {10}
    out = lg.written("L", seq, 1)
    assert out.delivered == [("bob", 10)] and out.returned == []
    assert lg.in_flight("bob") == {10}, "the deletion is not committed yet: inbox must skip it"
    lg.committed(out.delivered)
    assert lg.in_flight("bob") == frozenset()
    assert not lg.written("L", seq, 1), "a second ack changes nothing"


def test_dropped_returns_the_entry() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob"}, {"bob": [10]})
    out = lg.dropped("L", seq, 1)
    assert out.returned == [("bob", 10)] and out.delivered == []
    assert lg.in_flight("bob") == frozenset()
    assert lg.pending("L") == 0


def test_two_sessions_of_one_user_one_written_is_enough() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob", 2: "bob"}, {"bob": [10]})
    assert not lg.dropped("L", seq, 1), "the other session may still write it"
    out = lg.written("L", seq, 2)
    assert out.delivered == [("bob", 10)]
    seq2 = lg.record("L", {1: "bob", 2: "bob"}, {"bob": [11]})
    assert lg.written("L", seq2, 1).delivered == [("bob", 11)]
    assert not lg.dropped("L", seq2, 2), "after a write, a drop elsewhere returns nothing"
    assert lg.pending("L") == 0


def test_both_sessions_dropped_returns_once() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob", 2: "bob"}, {"bob": [10]})
    assert not lg.dropped("L", seq, 2)
    assert lg.dropped("L", seq, 1).returned == [("bob", 10)]


def test_group_event_users_resolve_independently() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob", 2: "carol", 3: "dave"}, {"bob": [7], "carol": [7]})  # dave: sender
    assert lg.written("L", seq, 1).delivered == [("bob", 7)]
    assert lg.dropped("L", seq, 2).returned == [("carol", 7)]
    assert lg.pending("L") == 0, "dave's target carries no entry: nothing to wait for"


def test_written_all_resolves_every_open_target_of_a_fan_out() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob", 2: "carol", 3: "dave"}, {"bob": [7], "carol": [7], "dave": [7]})
    assert lg.written("L", seq, 1).delivered == [("bob", 7)], "one reported on its own first"
    out = lg.written_all("L", seq)
    assert sorted(out.delivered) == [("carol", 7), ("dave", 7)] and not out.returned
    assert lg.pending("L") == 0
    assert not lg.written_all("L", seq), "said twice: nothing more"


def test_close_mid_flight_returns_everything_not_written() -> None:
    lg = ledger()
    s1 = lg.record("L", {1: "bob"}, {"bob": [1]})
    lg.record("L", {1: "bob"}, {"bob": [2]})
    lg.record("L", {2: "carol"}, {"carol": [3, 4]})
    lg.written("L", s1, 1)
    out = lg.close("L")
    assert sorted(out.returned) == [("bob", 2), ("carol", 3), ("carol", 4)]
    assert lg.in_flight("bob") == {1}, "written before the close: delivered, commit pending"
    assert not lg.is_open("L")
    with pytest.raises(UnknownLink):
        lg.record("L", {1: "bob"}, {"bob": [5]})


def test_one_entry_on_two_links_returns_only_when_both_end() -> None:
    lg = ledger("A", "B")
    sa = lg.record("A", {1: "bob"}, {"bob": [9]})
    sb = lg.record("B", {2: "bob"}, {"bob": [9]})
    assert not lg.close("A"), "still in flight on B"
    assert lg.in_flight("bob") == {9}
    assert lg.dropped("B", sb, 2).returned == [("bob", 9)]
    assert not lg.written("A", sa, 1), "acks on a closed link are ignored"


def test_written_on_one_link_then_the_other_link_closes() -> None:
    lg = ledger("A", "B")
    lg.record("A", {1: "bob"}, {"bob": [9]})
    sb = lg.record("B", {2: "bob"}, {"bob": [9]})
    assert lg.written("B", sb, 2).delivered == [("bob", 9)]
    assert not lg.close("A"), "delivered on B: never returned"


def test_session_closed_drops_all_its_targets() -> None:
    lg = ledger()
    lg.record("L", {1: "bob"}, {"bob": [1]})
    lg.record("L", {1: "bob", 2: "bob"}, {"bob": [2]})
    lg.record("L", {3: "carol"}, {"carol": [3]})
    out = lg.session_closed("L", 1)
    assert out.returned == [("bob", 1)], "message 2 may still be written by session 2"
    assert lg.in_flight("bob") == {2} and lg.in_flight("carol") == {3}


def test_inbox_while_in_flight_skips_what_is_pushed() -> None:
    lg = ledger()
    lg.record("L", {1: "bob"}, {"bob": [1]})
    lg.begin_read("bob")
    assert lg.end_read("bob", [1, 2, 3]) == [2, 3]


def test_inbox_read_never_returns_what_was_delivered_while_it_ran() -> None:
    lg = ledger()
    seq = lg.record("L", {1: "bob"}, {"bob": [1]})
    lg.begin_read("bob")  # the read's snapshot may predate the deletion of entry 1
    lg.committed(lg.written("L", seq, 1).delivered)
    assert lg.in_flight("bob") == frozenset()
    assert lg.end_read("bob", [1, 2]) == [2]
    lg.begin_read("bob")
    assert lg.end_read("bob", [1, 2]) == [1, 2], "the memory of the earlier read is gone"


def test_inbox_response_is_a_delivery_too() -> None:
    lg = ledger()
    lg.begin_read("bob")
    ids = lg.end_read("bob", [4, 5])
    seq = lg.record("L", {1: "bob"}, {"bob": ids})
    lg.begin_read("bob")
    assert lg.end_read("bob", [4, 5, 6]) == [6], "a second inbox does not hand out the first page again"
    assert sorted(lg.dropped("L", seq, 1).returned) == [("bob", 4), ("bob", 5)]


def test_record_on_unknown_link_raises_and_acks_for_strangers_are_ignored() -> None:
    lg = ledger()
    with pytest.raises(UnknownLink):
        lg.record("nope", {1: "bob"}, {"bob": [1]})
    seq = lg.record("L", {1: "bob"}, {"bob": [1]})
    assert not lg.written("L", seq, 99)
    assert not lg.written("L", seq + 5, 1)
    assert not lg.dropped("other", seq, 1)


def test_written_on_a_closed_link_delivers_what_a_live_delivery_carries() -> None:
    """The realm names messages it wrote on a link that has closed since (main forgot its
    seqs): delivered now, and the delivery still carrying them cannot return them."""
    lg = ledger("old", "new")
    lg.record("old", {1: "bob"}, {"bob": [10, 11]})
    assert lg.close("old").returned == [("bob", 10), ("bob", 11)]
    seq = lg.record("new", {2: "bob"}, {"bob": [10]})  # pushed again
    out = lg.written_elsewhere([("bob", 10), ("bob", 11)])
    assert out.delivered == [("bob", 10), ("bob", 11)] and out.returned == []
    assert not lg.written_elsewhere([("bob", 10)]), "said twice: nothing more"
    assert not lg.dropped("new", seq, 2), "the repeat's drop returns nothing: it was delivered"
    assert lg.in_flight("bob") == {10, 11}, "until the deletion is committed"
    lg.committed(out.delivered)
    assert lg.in_flight("bob") == frozenset()


def test_written_on_a_closed_link_is_never_handed_out_by_a_read_under_way() -> None:
    lg = ledger()
    lg.begin_read("bob")  # storage is asked: the entry is still undelivered there
    out = lg.written_elsewhere([("bob", 7)])
    assert out.delivered == [("bob", 7)]
    assert lg.end_read("bob", [7, 8]) == [8]
    lg.begin_read("bob")
    lg.committed(out.delivered)  # committed while a second read runs
    assert lg.end_read("bob", [7]) == []
    assert lg.in_flight("bob") == frozenset()


class LedgerModel(RuleBasedStateMachine):
    """Random deliveries, acks and closes over two links: every recorded entry ends exactly once,
    delivered or returned, and nothing stays in flight once everything is resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.lg = ledger("A", "B")
        self.open = {"A", "B"}
        self.sent: list[tuple[str, int, dict[int, str]]] = []
        self.delivered: list[tuple[str, int]] = []
        self.returned: list[tuple[str, int]] = []
        self.recorded: dict[tuple[str, int], int] = {}
        self.next_msg = 1

    def _apply(self, out) -> None:  # type: ignore[no-untyped-def]
        self.delivered += out.delivered
        self.returned += out.returned
        self.lg.committed(out.delivered)

    @rule(link=st.sampled_from(["A", "B"]), users=st.lists(st.sampled_from(["u", "v"]), min_size=1, max_size=3))
    def send(self, link: str, users: list[str]) -> None:
        if link not in self.open:
            return
        targets = {i + (100 if link == "B" else 0): u for i, u in enumerate(users)}
        msg = self.next_msg
        self.next_msg += 1
        seq = self.lg.record(link, dict(targets), {u: [msg] for u in set(users)})
        self.sent.append((link, seq, targets))
        for u in set(users):
            self.recorded[(u, msg)] = self.recorded.get((u, msg), 0) + 1

    @rule(i=st.integers(0, 30), write=st.booleans())
    def ack(self, i: int, write: bool) -> None:
        if not self.sent:
            return
        link, seq, targets = self.sent[i % len(self.sent)]
        sid = sorted(targets)[i % len(targets)]
        self._apply((self.lg.written if write else self.lg.dropped)(link, seq, sid))

    @rule(i=st.integers(0, 30))
    def ack_all(self, i: int) -> None:
        if self.sent:
            link, seq, _ = self.sent[i % len(self.sent)]
            self._apply(self.lg.written_all(link, seq))

    @rule(link=st.sampled_from(["A", "B"]))
    def close(self, link: str) -> None:
        self._apply(self.lg.close(link))
        self.open.discard(link)

    @invariant()
    def each_entry_ends_at_most_once(self) -> None:
        ended = self.delivered + self.returned
        assert len(ended) == len(set(ended))
        assert set(ended) <= set(self.recorded)

    def teardown(self) -> None:
        for link in ["A", "B"]:
            self._apply(self.lg.close(link))
        assert sorted(self.delivered + self.returned) == sorted(self.recorded)
        assert self.lg.in_flight("u") == frozenset() and self.lg.in_flight("v") == frozenset()


TestLedgerModel = LedgerModel.TestCase
TestLedgerModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
