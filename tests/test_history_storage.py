"""History windows in storage, on BOTH engines (the fixtures of tests/test_storage.py): ends by
id or by time, inclusive or not, the newest or the oldest of a window, tombstones kept, a
private group's join point respected; and the time indexes the migration adds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from main_server.storage.base import Bound, MessageRecord, Storage, Window
from main_server.storage.postgres import PostgresStorage
from main_server.storage.sqlite import SQLiteStorage
from realmchat.errors import PermissionDenied

from .test_storage import db_url, store, users

__all__ = ["db_url", "store"]


async def chat(store: Storage, n: int) -> list[MessageRecord]:
    """n private messages between alice and bob, and some elsewhere that must never show."""
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    sent = []
    for i in range(n):
        src, dst = (alice, "bob") if i % 2 == 0 else (bob, "alice")
        sent.append((await store.store_private(src, dst, f"m{i}")).message)
        await store.store_private(carol, "alice", f"noise{i}")
    return sent


async def test_windows_by_id(store: Storage) -> None:
    sent = await chat(store, 8)
    ids = [m.id for m in sent]
    w = await store.window_private("alice", "bob", Window(3, after=Bound(id=ids[1]), before=Bound(id=ids[6])))
    assert w == sent[3:6]  # the newest three strictly between
    w = await store.window_private(
        "alice", "bob", Window(3, after=Bound(id=ids[1]), before=Bound(id=ids[6]), newest=False)
    )
    assert w == sent[2:5]  # the oldest three
    w = await store.window_private("bob", "alice", Window(2, after=Bound(id=ids[4], inclusive=True), newest=False))
    assert w == sent[4:6]
    w = await store.window_private("bob", "alice", Window(10, before=Bound(id=ids[2], inclusive=True)))
    assert w == sent[:3]
    # The paging form keeps its meaning.
    assert await store.history_private("alice", "bob", 2, before=ids[3]) == sent[1:3]
    assert await store.history_private("alice", "bob", 2, after=ids[3]) == sent[4:6]


async def test_windows_by_time(store: Storage) -> None:
    sent = await chat(store, 6)
    t = sent[3].ts
    older = [m for m in sent if m.ts < t]
    newer = [m for m in sent if m.ts > t]
    at_or_newer = [m for m in sent if m.ts >= t]
    assert sent[3] in at_or_newer and sent[3] not in older + newer
    assert await store.window_private("alice", "bob", Window(10, before=Bound(ts=t))) == older
    assert await store.window_private("alice", "bob", Window(10, after=Bound(ts=t), newest=False)) == newer
    assert (
        await store.window_private("alice", "bob", Window(10, after=Bound(ts=t, inclusive=True), newest=False))
        == at_or_newer
    )
    # A time before everything and one after everything.
    assert (
        await store.window_private("alice", "bob", Window(2, after=Bound(ts="2000-01-01T00:00:00.000Z"), newest=False))
        == sent[:2]
    )
    assert await store.window_private("alice", "bob", Window(10, after=Bound(ts="2999-01-01T00:00:00.000Z"))) == []
    # Mixed ends: after a time, before an id.
    w = await store.window_private(
        "alice", "bob", Window(10, after=Bound(ts="2000-01-01T00:00:00.000Z"), before=Bound(id=sent[2].id))
    )
    assert w == sent[:2]


async def test_windows_keep_tombstones_and_the_group_floor(store: Storage) -> None:
    owner, late = await users(store, "Owner", "Late")
    await store.create_group("p", "P", owner, mode="private")
    early = (await store.store_group(owner, "p", "before you came")).message
    await store.invite("p", owner, "late")
    await store.join_group("p", late)
    kept = [(await store.store_group(owner, "p", f"g{i}")).message for i in range(3)]
    await store.delete_message(owner, kept[1].id)
    everything = Window(10, after=Bound(ts="2000-01-01T00:00:00.000Z"), newest=False)
    got = await store.window_group("late", "p", everything)
    assert [m.id for m in got] == [m.id for m in kept]  # not what came before the join
    assert got[1].deleted and got[1].text == ""  # the tombstone stays in its place
    assert [m.id for m in await store.window_group("owner", "p", everything)] == [early.id] + [m.id for m in kept]
    assert [m.id for m in await store.window_group("late", "p", Window(10, before=Bound(id=kept[0].id)))] == []
    await users(store, "Out")
    with pytest.raises(PermissionDenied):
        await store.window_group("out", "p", everything)


async def test_the_time_indexes_exist(store: Storage, tmp_path: Path) -> None:
    wanted = {"messages_private_ts", "messages_group_ts"}
    if isinstance(store, SQLiteStorage):
        with sqlite3.connect(tmp_path / "chat.db") as c:
            names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    else:
        assert isinstance(store, PostgresStorage)
        rows = await store._auto(lambda c: c.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'messages'"))
        names = {r[0] for r in rows}
    assert wanted <= names
