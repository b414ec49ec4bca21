"""How replicas decide that a user's last session anywhere ended (main_server/cluster.py), in
process: the notices each replica publishes are delivered to every replica in one order, as
PostgreSQL's NOTIFY does, in payloads as the publisher packs them. Whatever the order, exactly one
of two replicas whose last sessions of a user end at once says so. (tests/test_replicas.py runs
the same with real replicas on PostgreSQL.)"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from main_server.cluster import Cluster


def replica() -> Cluster:
    return Cluster("postgresql://unused", local_presence=lambda: [])


def published(c: Cluster) -> list[dict[str, Any]]:
    out = []
    while not c._out.empty():
        out.append(c._out.get_nowait())
    return out


def deliver(replicas: list[Cluster], notices: list[dict[str, Any]]) -> None:
    """One NOTIFY payload holding these notices, to every replica (its own included)."""
    payload = b"\n".join(orjson.dumps(n) for n in notices).decode()
    for c in replicas:
        c._on_notify(None, 0, "realmchat", payload)


async def test_two_last_sessions_ending_at_once_are_told_once_in_any_order() -> None:
    for order in itertools.permutations(range(4)):
        a, b = replica(), replica()
        for c, sid in ((a, 1), (b, 2)):
            c.attached(sid, "ann", "alpha")
        deliver([a, b], published(a) + published(b))
        decided: dict[str, bool] = {}
        for c, sid, who in ((a, 1, "a"), (b, 2, "b")):
            c.detached(sid)

            def decide(last: bool, c: Cluster = c, who: str = who, told: dict[str, bool] = decided) -> None:
                # What the service does: tell only if ours was last and nobody is left elsewhere.
                told[who] = last and "ann" not in c.online_names()

            c.settle_detach("ann", decide)
        a_det, a_bar = published(a)
        b_det, b_bar = published(b)
        # Each replica's own notices keep their order; the two streams interleave in any way.
        mixed = [n for _, n in sorted(zip(order, [a_det, a_bar, b_det, b_bar], strict=True), key=lambda x: x[0])]
        if mixed.index(a_bar) < mixed.index(a_det) or mixed.index(b_bar) < mixed.index(b_det):
            continue
        for n in mixed:
            deliver([a, b], [n])
        assert sorted(decided) == ["a", "b"], order
        assert sum(decided.values()) == 1, (order, decided)  # exactly one tells
        last = max((a_det, b_det), key=mixed.index)
        assert decided["a" if last is a_det else "b"], (order, decided)  # the one ordered last tells
        await asyncio.sleep(0)


async def test_a_decision_is_not_lost_behind_other_notices_of_the_same_payload() -> None:
    a = replica()
    a.attached(1, "ann", "alpha")
    decided: list[bool] = []
    a.publish_message(7, ["bob"], ["bob"], 0, mentioned=["bob"])  # carries the named users
    a.publish({"k": "ev", "e": "", "u": ["bob"], "x": 0})
    a.detached(1)
    a.settle_detach("ann", decided.append)
    deliver([a], published(a))
    assert decided == [True]
