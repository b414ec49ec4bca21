"""Conversation state in storage, on BOTH engines (the fixtures of tests/test_storage.py):
the conversation list with last message, unread and mention counts, monotonic read markers,
seen receipts, the receipts setting and the presence audience; and the migration that brings
them, run on a database of the schema before it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from main_server.storage import open_storage
from main_server.storage.base import Storage
from main_server.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from main_server.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from main_server.storage.sqlite import SQLiteStorage
from realmchat.errors import NotFound, PermissionDenied

from .test_storage import users


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("pg_url"))  # a throwaway PostgreSQL (tests/pg.py)


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    s = open_storage(db_url, tmp_path)
    await s.open()
    yield s
    await s.close()


def summary(convs: list) -> list[tuple[str, str, int | None, int, int, int]]:  # type: ignore[type-arg]
    return [(c.peer, c.kind, c.last.id if c.last else None, c.unread, c.mentions, c.read) for c in convs]


async def mention(s: Storage, user_key: str, msg_id: int) -> None:
    """What the message-lifecycle work stores for a message that names a user."""
    if isinstance(s, SQLiteStorage):
        await s._do(lambda c: c.execute("INSERT INTO mentions(user_key, msg_id) VALUES (?, ?)", (user_key, msg_id)))
    else:
        await s._auto(lambda c: c.execute("INSERT INTO mentions(user_key, msg_id) VALUES ($1, $2)",  # type: ignore[attr-defined]
                                          user_key, msg_id))


async def test_conversations_newest_first_with_counts(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    assert await store.conversations("alice") == []
    await store.create_group("team", "Team", alice)
    await store.join_group("team", bob)
    await store.create_group("empty", "Empty", alice)
    p1 = (await store.store_private(bob, "alice", "hi alice")).message
    g1 = (await store.store_group(bob, "team", "hello team")).message
    g2 = (await store.store_group(alice, "team", "my own: never unread")).message
    p2 = (await store.store_private(carol, "alice", "hey @alice")).message
    await mention(store, "alice", p2.id)
    convs = await store.conversations("alice")
    assert summary(convs) == [("Carol", "user", p2.id, 1, 1, 0), ("Team", "group", g2.id, 1, 0, 0),
                              ("Bob", "user", p1.id, 1, 0, 0), ("Empty", "group", None, 0, 0, 0)]
    assert convs[0].last == p2 and convs[1].last == g2
    # The other side: bob's conversation with alice holds his own message, nothing unread.
    assert summary(await store.conversations("bob")) == [("Team", "group", g2.id, 1, 0, 0),
                                                         ("Alice", "user", p1.id, 0, 0, 0)]
    assert g1.id < g2.id


async def test_read_markers_are_monotonic_and_clamped(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    msgs = [(await store.store_private(bob, "alice", f"m{i}")).message for i in range(4)]
    mark = await store.mark_read("alice", "bob", msgs[1].id)
    assert (mark.peer, mark.kind, mark.read, mark.moved, mark.seen_id) == ("Bob", "user", msgs[1].id, True,
                                                                            msgs[1].id)
    assert summary(await store.conversations("alice")) == [("Bob", "user", msgs[3].id, 2, 0, msgs[1].id)]
    back = await store.mark_read("alice", "bob", msgs[0].id)  # never moves back
    assert (back.read, back.moved, back.seen_id) == (msgs[1].id, False, 0)
    far = await store.mark_read("alice", "bob", msgs[3].id + 1000)  # past the newest: clamped
    assert (far.read, far.moved, far.seen_id) == (msgs[3].id, True, msgs[3].id)
    later = (await store.store_private(bob, "alice", "after")).message
    assert summary(await store.conversations("alice")) == [("Bob", "user", later.id, 1, 0, msgs[3].id)]
    # Reading past only your own messages tells the peer nothing.
    mine = (await store.store_private(alice, "bob", "mine")).message
    await store.mark_read("alice", "bob", later.id)
    own = await store.mark_read("alice", "bob", mine.id)
    assert (own.read, own.moved, own.seen_id) == (mine.id, True, 0)


async def test_concurrent_marks_end_at_the_highest(store: Storage) -> None:
    _, bob = await users(store, "Alice", "Bob")
    msgs = [(await store.store_private(bob, "alice", f"m{i}")).message for i in range(20)]
    await asyncio.gather(*(store.mark_read("alice", "bob", m.id) for m in reversed(msgs)))
    assert (await store.conversations("alice"))[0].read == msgs[-1].id


async def test_receipts_setting(store: Storage) -> None:
    _, bob = await users(store, "Alice", "Bob")
    m1 = (await store.store_private(bob, "alice", "one")).message
    await store.set_receipts("alice", False)
    off = await store.mark_read("alice", "bob", m1.id)
    assert (off.moved, off.seen_id) == (True, 0)
    m2 = (await store.store_private(bob, "alice", "two")).message
    await store.set_receipts("alice", True)
    on = await store.mark_read("alice", "bob", m2.id)
    assert (on.moved, on.seen_id) == (True, m2.id)


async def test_group_markers_and_the_join_point(store: Storage) -> None:
    alice, bob, carol, dave = await users(store, "Alice", "Bob", "Carol", "Dave")
    await store.create_group("club", "Club", alice, "private")
    before = [(await store.store_group(alice, "club", f"early {i}")).message for i in range(3)]
    await store.invite("club", alice, "carol")
    await store.join_group("club", carol)
    # Nothing from before the join is unread, last, or the marker's floor for carol.
    assert summary(await store.conversations("carol")) == [("Club", "group", None, 0, 0, before[-1].id)]
    after = (await store.store_group(alice, "club", "hi @carol")).message
    await mention(store, "carol", after.id)
    await mention(store, "carol", before[0].id)  # before the join: not counted
    assert summary(await store.conversations("carol")) == [("Club", "group", after.id, 1, 1, before[-1].id)]
    low = await store.mark_read("carol", "club", before[0].id)  # below the join point: no move
    assert (low.read, low.moved) == (before[-1].id, False)
    mark = await store.mark_read("carol", "club", after.id)
    assert (mark.kind, mark.read, mark.moved, mark.seen_id) == ("group", after.id, True, 0)
    assert summary(await store.conversations("carol")) == [("Club", "group", after.id, 0, 0, after.id)]
    with pytest.raises(PermissionDenied):
        await store.mark_read("dave", "club", after.id)
    with pytest.raises(NotFound):
        await store.mark_read("dave", "nobody", 1)
    # Deleting the group takes its markers along.
    await store.delete_group("club", alice)
    assert await store.conversations("carol") == []
    assert bob and dave


async def test_audience(store: Storage) -> None:
    alice, bob, carol, dave, eve = await users(store, "Alice", "Bob", "Carol", "Dave", "Eve")
    await store.create_group("team", "Team", alice)
    await store.join_group("team", bob)
    await store.store_private(carol, "alice", "a conversation")
    await store.store_private(alice, "alice", "notes to self")
    assert sorted(await store.audience("alice")) == ["bob", "carol"]
    assert sorted(await store.audience("bob")) == ["alice"]
    assert sorted(await store.audience("carol")) == ["alice"]
    assert await store.audience("eve") == []
    assert dave and eve


async def test_notes_to_self_are_one_conversation(store: Storage) -> None:
    (alice,) = await users(store, "Alice")
    m = (await store.store_private(alice, "alice", "note")).message
    assert summary(await store.conversations("alice")) == [("Alice", "user", m.id, 0, 0, 0)]
    mark = await store.mark_read("alice", "alice", m.id)
    assert (mark.read, mark.seen_id) == (m.id, 0)


async def test_migration_builds_conversations_from_existing_messages(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database of the schema before conversation state, with private messages in it, opened
    by this release: the conversations are there, everything unread, receipts on."""
    import main_server.storage.postgres as pg_engine
    import main_server.storage.sqlite as sqlite_engine

    # Schema version 4: the conversation-state migration is MIGRATIONS[4] (later ones follow it).
    monkeypatch.setattr(sqlite_engine, "MIGRATIONS", SQLITE_MIGRATIONS[:4])
    monkeypatch.setattr(pg_engine, "MIGRATIONS", PG_MIGRATIONS[:4])
    old = open_storage(db_url, tmp_path)
    await old.open()
    alice, bob, carol = await users(old, "Alice", "Bob", "Carol")
    # What the release before wrote (its store_private has no private_peers to keep).
    if isinstance(old, SQLiteStorage):
        await old.close()
        with sqlite3.connect(old.path) as c:
            for sender, to, text in (("bob", "alice", "one"), ("alice", "bob", "two"), ("carol", "alice", "three")):
                c.execute("INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts) "
                          "VALUES (?, ?, ?, ?, ?, '2026-11-01T00:00:00.000Z')",
                          (sender.title(), sender, to.title(), to, text))
    else:
        import asyncpg

        await old.close()
        conn = await asyncpg.connect(db_url)
        try:
            for sender, to, text in (("bob", "alice", "one"), ("alice", "bob", "two"), ("carol", "alice", "three")):
                await conn.execute("INSERT INTO messages(sender, sender_key, to_name, to_key, text) "
                                   "VALUES ($1, $2, $3, $4, $5)", sender.title(), sender, to.title(), to, text)
        finally:
            await conn.close()
    monkeypatch.undo()
    s = open_storage(db_url, tmp_path)
    await s.open()
    try:
        convs = await s.conversations("alice")
        assert [(c.peer, c.last.text if c.last else "", c.unread) for c in convs] == [("Carol", "three", 1),
                                                                                      ("Bob", "two", 1)]
        mark = await s.mark_read("alice", "bob", convs[1].last.id if convs[1].last else 0)
        assert mark.seen_id > 0  # receipts default on
        assert sorted(await s.audience("alice")) == ["bob", "carol"]
    finally:
        await s.close()
    assert alice and bob and carol
