"""What replicas tell each other, in process: every notice is a plain record of
main_server/events.py in one encoding, split to fit a NOTIFY, and arrives at the other replica's
handler as the record it was (tests/test_replicas.py runs real replicas on PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from main_server import events
from main_server.cluster import PAYLOAD_MAX, USERS_PER_NOTICE, Cluster

NOTICES: list[events.Notice] = [
    events.MessageStored(7, ("ann", "bob"), ("bob",), 3, ("bob",)),
    events.FileStored(9, ("bob",), 4),
    events.Broadcast(events.Edited(7, "new", "t", True, sender="Ann", to="Bob"), ("bob",), 3),
    events.Broadcast(events.Presence("Ann", "away", "alpha", "lunch"), ("bob", "cy")),
    events.LoggedOut("ab" * 32, 12, "ann"),
    events.StatusChanged("ann", "away", "back soon"),
]


def replica() -> Cluster:
    return Cluster("postgresql://unused", local_presence=lambda: [])


def published(c: Cluster) -> list[dict[str, Any]]:
    out = []
    while not c._out.empty():
        out.append(c._out.get_nowait())
    return out


@pytest.mark.parametrize("notice", NOTICES, ids=lambda n: type(n).__name__)
def test_a_notice_survives_its_encoding(notice: events.Notice) -> None:
    assert events.decode(events.encode(notice)) == notice


def test_a_notice_for_many_users_is_split_and_keeps_each_part_consistent() -> None:
    users = tuple(f"u{i:04d}" for i in range(2 * USERS_PER_NOTICE + 7))
    notice = events.MessageStored(5, users, users[::2], 1, users[::3])
    parts = events.split(notice, USERS_PER_NOTICE)
    assert [len(p.users) for p in parts] == [USERS_PER_NOTICE, USERS_PER_NOTICE, 7]  # type: ignore[union-attr]
    assert sum((p.users for p in parts), ()) == users  # type: ignore[union-attr]
    for p in parts:
        assert isinstance(p, events.MessageStored)
        assert set(p.track) <= set(p.users) and set(p.mentioned) <= set(p.users)
    assert sum((p.track for p in parts), ()) == users[::2]  # type: ignore[union-attr]
    c = replica()
    c.publish_notice(notice)
    lines = [orjson.dumps(n) for n in published(c)]
    assert len(lines) == 3 and all(len(line) < PAYLOAD_MAX for line in lines)


async def test_notices_reach_the_other_replica_as_records_and_bad_ones_are_dropped() -> None:
    a, b = replica(), replica()
    got: list[events.Notice] = []

    async def handler(notice: events.Notice) -> None:
        got.append(notice)

    b._handler = handler
    for n in NOTICES:
        a.publish_notice(n)
    a.publish({"k": "ev", "e": {"type": "Nope"}})  # an unknown record: ignored, the rest still arrive
    a.publish({"k": "ev", "e": ""})
    payload = b"\n".join(orjson.dumps(n) for n in published(a)).decode()
    a._on_notify(None, 0, "realmchat", payload)  # its own come back to it: nothing dispatched
    b._on_notify(None, 0, "realmchat", payload)
    await asyncio.sleep(0.01)
    assert got == NOTICES


def test_messages_themselves_never_travel_by_value() -> None:
    with pytest.raises(TypeError, match="by id"):
        events.to_plain(events.Broadcast(events.PrivateMessage(None), ("bob",)))  # type: ignore[arg-type]
