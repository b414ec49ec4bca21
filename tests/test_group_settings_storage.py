"""A group's settings in storage, on BOTH engines (the fixtures of tests/test_storage.py):
switching a group between public and private (who may, what members, invitations, the
directory and history see afterwards), who set the topic and when, the owner and admins a key
change names, and the migration that keeps the topic's setter, run on a database of the
schema before it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from main_server.storage import open_storage
from main_server.storage.base import Storage
from main_server.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from main_server.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from main_server.storage.sqlite import SQLiteStorage
from realmchat.errors import PermissionDenied

from .test_storage import TS_RE, db_url, store, users

__all__ = ["db_url", "store"]  # the storage suite's engine fixtures, re-used


async def test_owner_and_admins_switch_the_mode_members_do_not(store: Storage) -> None:
    owner, adm, mem, _ = await users(store, "Owner", "Adm", "Mem", "Out")
    await store.create_group("crew", "Crew", owner)
    for u in (adm, mem):
        await store.join_group("crew", u)
    await store.set_role("crew", owner, "adm", "admin")
    with pytest.raises(PermissionDenied, match="only the owner or an admin") as refused:
        await store.set_group_mode("crew", mem, "private")
    assert refused.value.reason == "not_moderator"
    assert (await store.get_group("crew")).mode == "public"  # type: ignore[union-attr]
    change = await store.set_group_mode("crew", adm, "private")
    assert (change.changed, change.group.mode, change.members) == (True, "private", ["adm", "mem", "owner"])
    assert (await store.get_group("crew")).mode == "private"  # type: ignore[union-attr]
    again = await store.set_group_mode("crew", owner, "private")
    assert (again.changed, again.members) == (False, [])  # nothing changed: nobody is told
    back = await store.set_group_mode("crew", owner, "public")
    assert (back.changed, back.group.mode) == (True, "public")


async def test_made_private_a_group_keeps_its_members_and_their_history(store: Storage) -> None:
    owner, mem, out, guest = await users(store, "Owner", "Mem", "Out", "Guest")
    await store.create_group("crew", "Crew", owner)
    before = (await store.store_group(owner, "crew", "before mem joined")).message
    await store.join_group("crew", mem)
    after = (await store.store_group(owner, "crew", "after")).message
    await store.invite("crew", owner, "guest")
    await store.set_group_mode("crew", owner, "private")
    # The members stay, and still read what they could read while it was public.
    assert [m.name for m in (await store.members("crew", "mem")).members] == ["Owner", "Mem"]
    assert [m.id for m in await store.history_group("mem", "crew", 10)] == [before.id, after.id]
    assert (await store.message_for("mem", before.id)).text == "before mem joined"
    # Other users no longer see it in the directory, nor its topic or members.
    assert [r.name for r in await store.browse_groups("out", "%")] == []
    assert [r.name for r in await store.browse_groups("mem", "%")] == ["Crew"]
    with pytest.raises(PermissionDenied, match="private"):
        await store.room("crew", "out")
    # Joining takes an invitation now; the one given while it was public still counts.
    with pytest.raises(PermissionDenied, match="invitation"):
        await store.join_group("crew", out)
    assert (await store.join_group("crew", guest)).changed
    # A newcomer of the private group reads from their join on.
    newer = (await store.store_group(owner, "crew", "for guest")).message
    assert [m.id for m in await store.history_group("guest", "crew", 10)] == [newer.id]
    # Made public again: anyone may join and read it all.
    await store.set_group_mode("crew", owner, "public")
    assert [r.name for r in await store.browse_groups("out", "%")] == ["Crew"]
    assert (await store.join_group("crew", out)).changed
    assert [m.id for m in await store.history_group("out", "crew", 10)] == [before.id, after.id, newer.id]


async def test_the_topic_keeps_who_set_it_and_when(store: Storage) -> None:
    owner, adm = await users(store, "Owner", "Adm")
    g = await store.create_group("crew", "Crew", owner)
    assert TS_RE.match(g.created) and (g.topic_by, g.topic_at) == ("", "")
    assert (await store.get_group("crew")).created == g.created  # type: ignore[union-attr]
    await store.join_group("crew", adm)
    await store.set_role("crew", owner, "adm", "admin")
    change = await store.set_topic("crew", adm, "plans")
    assert (change.group.topic, change.group.topic_by) == ("plans", "Adm") and TS_RE.match(change.group.topic_at)
    seen = await store.room("crew", "owner")
    assert (seen.topic, seen.topic_by, seen.topic_at) == ("plans", "Adm", change.group.topic_at)
    assert not seen.has_key


async def test_a_key_change_names_the_owner_and_admins(store: Storage) -> None:
    owner, adm, mem = await users(store, "Owner", "Adm", "Mem")
    await store.create_group("crew", "Crew", owner)
    for u in (adm, mem):
        await store.join_group("crew", u)
    await store.set_role("crew", owner, "adm", "admin")
    change = await store.set_group_key("crew", adm, "hash-of-key")
    assert (change.members, change.moderators) == (["adm", "mem", "owner"], ["adm", "owner"])
    assert change.group.has_key and (await store.room("crew", "mem")).has_key


async def test_upgrade_keeps_topics_with_their_setter_unknown(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of the schema before the topic's setter was kept, with a topic set: opened by
    this release, the topic is there, its setter and time unknown (""), the creation time kept."""
    import main_server.storage.postgres as pg_engine
    import main_server.storage.sqlite as sqlite_engine

    before = next(i for i, m in enumerate(SQLITE_MIGRATIONS) if "topic_by" in m)
    assert before == next(i for i, m in enumerate(PG_MIGRATIONS) if "topic_by" in m)
    monkeypatch.setattr(sqlite_engine, "MIGRATIONS", SQLITE_MIGRATIONS[:before])
    monkeypatch.setattr(pg_engine, "MIGRATIONS", PG_MIGRATIONS[:before])
    old = open_storage(db_url, tmp_path)
    await old.open()
    (owner,) = await users(old, "Owner")
    await old.close()
    # What that release's create_group and set_topic wrote.
    rows = [
        "INSERT INTO groups(key, name, owner_key, created, mode, topic) "
        "VALUES ('crew', 'Crew', 'owner', '2026-11-01T10:00:00.000Z', 'public', 'old news')",
        "INSERT INTO members(group_key, user_key, role) VALUES ('crew', 'owner', 'owner')",
    ]
    if isinstance(old, SQLiteStorage):
        with sqlite3.connect(old.path) as c:
            for sql in rows:
                c.execute(sql)
    else:
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            for sql in rows:
                await conn.execute(sql.replace("'2026-11-01T10:00:00.000Z'", "TIMESTAMPTZ '2026-11-01T10:00:00Z'"))
        finally:
            await conn.close()
    monkeypatch.undo()
    s = open_storage(db_url, tmp_path)
    await s.open()
    try:
        g = await s.room("crew", "owner")
        assert (g.topic, g.topic_by, g.topic_at, g.created) == ("old news", "", "", "2026-11-01T10:00:00.000Z")
        await s.set_group_mode("crew", owner, "private")
        g = (await s.set_topic("crew", owner, "new")).group
        assert (g.mode, g.topic, g.topic_by) == ("private", "new", "Owner") and TS_RE.match(g.topic_at)
    finally:
        await s.close()
