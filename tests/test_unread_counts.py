"""Unread and mention counts leave deleted messages out, on BOTH engines: a real main (SQLite,
then PostgreSQL through --db) and a realm, over the raw text protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .stack import Stack, start_stack
from .textclient import login

Names = Callable[[str], str]


@pytest.fixture(params=["sqlite", "postgres"])
def engine_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    extra: tuple[str, ...] = ()
    if request.param == "postgres":
        extra = ("--db", str(request.getfixturevalue("pg_url")))
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=extra)
    try:
        yield s
    finally:
        s.stop()


def conv(r: dict[str, Any], peer: str) -> dict[str, Any]:
    return next(c for c in r["conversations"] if c["peer"] == peer)


async def test_deleted_messages_are_not_unread(engine_stack: Stack, uname: Names) -> None:
    alice, bob, room = uname("da"), uname("db"), uname("droom")
    a = await login(*engine_stack.realm("alpha"), alice)
    b = await login(*engine_stack.realm("alpha"), bob)
    await b.ok(f"creategroup {room}")
    await a.ok(f"joingroup {room}")
    p1 = await b.ok(f"sendprivate {alice} one")
    p2 = await b.ok(f"sendprivate {alice} hey @{alice} look")
    p3 = await b.ok(f"sendprivate {alice} three")
    g1 = await b.ok(f"sendgroup {room} hello @{alice}")
    g2 = await b.ok(f"sendgroup {room} second @{alice}")
    g3 = await b.ok(f"sendgroup {room} third")
    r = await a.ok("conversations")
    assert (conv(r, bob)["unread"], conv(r, bob)["mentions"]) == (3, 1)
    assert (conv(r, room)["unread"], conv(r, room)["mentions"]) == (3, 2)

    # The author deletes one private message with a mention and the newest; in the group, the
    # owner deletes a message naming alice.
    for m in (p2, p3, g2):
        assert (await b.ok(f"delete {m['id']}"))["id"] == m["id"]
    r = await a.ok("conversations")
    c = conv(r, bob)
    assert (c["unread"], c["mentions"], c["read"]) == (1, 0, 0)
    # The newest message is still the conversation's last: a tombstone.
    assert c["last"]["id"] == p3["id"] and c["last"].get("deleted") is True and c["last"]["text"] == ""
    g = conv(r, room)
    assert (g["unread"], g["mentions"]) == (2, 1)

    # Reading up to a deleted message: what is left after it is counted, deleted ones are not.
    await a.ok(f"read {bob} {p1['id']}")
    await a.ok(f"read #{room} {g1['id']}")
    r = await a.ok("conversations")
    assert (conv(r, bob)["unread"], conv(r, bob)["mentions"]) == (0, 0)
    assert (conv(r, room)["unread"], conv(r, room)["mentions"]) == (1, 0)
    await b.ok(f"delete {g3['id']}")
    assert conv(await a.ok("conversations"), room)["unread"] == 0
    # The sender's side counts nothing either way.
    r = await b.ok("conversations")
    assert (conv(r, alice)["unread"], conv(r, room)["unread"]) == (0, 0)
    await a.close()
    await b.close()
