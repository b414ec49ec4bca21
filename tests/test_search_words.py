"""Search finds words inside Chinese, Japanese and Korean text and by prefix (`meet*`), on both
engines: through the storage API (SQLite on tmp_path, PostgreSQL in a throwaway cluster), on a
database made by the schema before it, and over the realm text protocol of real processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from main_server.storage import open_storage
from main_server.storage.base import Storage
from main_server.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from main_server.storage.searchtext import index_text, term
from main_server.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS

from .stack import Stack, start_stack
from .test_storage import db_url, store, users
from .textclient import TextClient, login

__all__ = ["db_url", "store"]  # the fixtures, re-used

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")

ZH = "我们明天开会讨论项目"
JA = "明日の会議は十時からです。コンピューターを再起動してください"
KO = "내일 회의를 시작합니다"


async def found(s: Storage, user: str, *words: str, **scope: str) -> list[str]:
    return [m.text for m in await s.search(user, list(words), **scope)]


# ---- the index text and the query terms (pure) -----------------------------------------------


def test_cjk_runs_become_pairs_and_the_rest_stays_as_it_is() -> None:
    assert index_text("Café au lait, 10 ½ past") == "Café au lait, 10 ½ past"
    assert index_text("开会") == " 开会 会 "
    assert index_text("v2 发布了!") == "v2  发布 布了 了 !"
    phrase = term("讨论项目")
    assert phrase is not None and phrase.chunks == ("讨论", "论项", "项目") and not phrase.prefix
    one = term("会")
    assert one is not None and one.chunks == ("会",) and one.prefix
    assert term("!!!") is None


# ---- both engines, through the storage API ---------------------------------------------------


async def test_words_inside_chinese_japanese_and_korean_text(store: Storage) -> None:
    alice, _, _ = await users(store, "Alice", "Bob", "Carol")
    await store.store_private(alice, "bob", ZH)
    await store.store_private(alice, "bob", JA)
    await store.store_private(alice, "bob", KO)
    await store.store_private(alice, "bob", "release v2 发布了, see the changelog")
    for word in ("开会", "项目", "我们", "讨论项目", "开会讨论", "讨", "目"):
        assert await found(store, "bob", word) == [ZH], word
    assert sorted(await found(store, "bob", "会")) == sorted([ZH, JA])  # one character: anywhere
    for word in ("会議", "十時", "コンピューター", "再起動", "明日の会議"):
        assert await found(store, "bob", word) == [JA], word
    for word in ("회의", "회의를", "시작", "내일"):
        assert await found(store, "bob", word) == [KO], word
    # Characters that are not next to each other, or not there: nothing.
    for word in ("开项", "会议", "의회", "東京"):
        assert await found(store, "bob", word) == [], word
    assert await found(store, "bob", "明天", "项目") == [ZH]  # every word required
    assert await found(store, "bob", "明天", "会議") == []
    assert await found(store, "bob", "发布") == ["release v2 发布了, see the changelog"]
    assert await found(store, "bob", "changelog", "发布") == ["release v2 发布了, see the changelog"]
    # The caller-only rule holds as for any word.
    assert await found(store, "carol", "开会") == []
    assert await found(store, "bob", "开会", peer_key="carol") == []
    assert await found(store, "bob", "开会", peer_key="alice") == [ZH]


async def test_prefix_words(store: Storage) -> None:
    alice, _ = await users(store, "Alice", "Bob")
    for text in ("meeting at noon", "she meets him", "we met", "Meetup tonight", "a meet"):
        await store.store_private(alice, "bob", text)
    expected = ["Meetup tonight", "a meet", "meeting at noon", "she meets him"]
    assert sorted(await found(store, "bob", "meet*")) == expected
    assert await found(store, "bob", "meet") == ["a meet"]  # a whole word, as before
    assert await found(store, "bob", "meet*", "noon") == ["meeting at noon"]
    assert await found(store, "bob", "meetings*") == []


async def test_latin_words_rank_and_fold_as_before(store: Storage, db_url: str) -> None:
    alice, _ = await users(store, "Alice", "Bob")
    once = (await store.store_private(alice, "bob", "okapi here among many many other words")).message.id
    twice = (await store.store_private(alice, "bob", "okapi okapi")).message.id
    await store.store_private(alice, "bob", "Café crème")
    assert [m.id for m in await store.search("bob", ["okapi"])] == [twice, once]
    assert await found(store, "bob", "café") == ["Café crème"]
    if db_url.startswith("sqlite"):  # unicode61 folds diacritics; PostgreSQL's 'simple' does not
        assert await found(store, "bob", "cafe", "creme") == ["Café crème"]


async def test_an_edit_is_found_by_its_new_text_only_and_a_delete_not_at_all(store: Storage) -> None:
    alice, _ = await users(store, "Alice", "Bob")
    edited = (await store.store_private(alice, "bob", "明天开会")).message.id
    gone = (await store.store_private(alice, "bob", "今天讨论项目")).message.id
    assert await found(store, "bob", "开会") == ["明天开会"]
    await store.edit_message(alice, edited, "下周出差 travelling")
    assert await found(store, "bob", "开会") == []
    assert await found(store, "bob", "明天") == []
    assert await found(store, "bob", "出差") == ["下周出差 travelling"]
    assert await found(store, "bob", "travel*") == ["下周出差 travelling"]
    await store.delete_message(alice, gone)
    assert await found(store, "bob", "项目") == []
    assert await found(store, "bob", "今") == []
    # The edited message's entry is still right after more changes around it.
    await store.edit_message(alice, edited, "again 开会")
    assert await found(store, "bob", "出差") == []
    assert await found(store, "bob", "开会") == ["again 开会"]


def _before_cjk(migrations: list[str], marker: str) -> int:
    """How many migrations came before the one that added CJK search (found by its text, so a
    migration appended later does not move it)."""
    return next(i for i, m in enumerate(migrations) if marker in m)


async def test_a_database_of_the_schema_before_finds_cjk_words_in_old_messages(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import main_server.storage.postgres as pg_engine
    import main_server.storage.sqlite as sqlite_engine

    monkeypatch.setattr(sqlite_engine, "MIGRATIONS",
                        SQLITE_MIGRATIONS[:_before_cjk(SQLITE_MIGRATIONS, "realmchat_search_text")])
    monkeypatch.setattr(pg_engine, "MIGRATIONS", PG_MIGRATIONS[:_before_cjk(PG_MIGRATIONS, "realmchat_search_text")])
    old = open_storage(db_url, tmp_path)
    await old.open()
    alice, _, _ = await users(old, "Alice", "Bob", "Carol")
    zh = (await old.store_private(alice, "bob", ZH)).message.id
    ko = (await old.store_private(alice, "bob", KO)).message.id
    ja = (await old.store_private(alice, "bob", JA)).message.id
    plain = (await old.store_private(alice, "bob", "okapi meeting")).message.id
    await old.close()
    if db_url.startswith("sqlite"):  # written while main was down: indexed at the next start
        with sqlite3.connect(tmp_path / "chat.db") as c:
            c.execute("INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts) "
                      "VALUES ('Alice', 'alice', 'Bob', 'bob', '离线消息', '2026-11-01T00:00:00.000Z')")
    monkeypatch.undo()
    s = open_storage(db_url, tmp_path)
    await s.open()
    try:
        assert [m.id for m in await s.search("bob", ["开会"])] == [zh]
        assert [m.id for m in await s.search("bob", ["项目"])] == [zh]
        assert [m.id for m in await s.search("bob", ["회의"])] == [ko]
        assert [m.id for m in await s.search("bob", ["会議"])] == [ja]
        assert [m.id for m in await s.search("bob", ["okapi"])] == [plain]
        assert [m.id for m in await s.search("bob", ["meet*"])] == [plain]
        assert await found(s, "carol", "开会") == []
        if db_url.startswith("sqlite"):
            assert await found(s, "bob", "消息") == ["离线消息"]
        # Old messages' entries are replaced and removed correctly.
        await s.edit_message(alice, zh, "换个话题")
        await s.delete_message(alice, ko)
        assert await found(s, "bob", "开会") == []
        assert await found(s, "bob", "话题") == ["换个话题"]
        assert await found(s, "bob", "회의") == []
        await s.edit_message(alice, plain, "zebra")
        assert await found(s, "bob", "okapi") == []
        assert await found(s, "bob", "zebra") == ["zebra"]
    finally:
        await s.close()


# ---- real processes, the realm text protocol ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def engine_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    extra: tuple[str, ...] = CHEAP
    if request.param == "postgres":
        extra += ("--db", request.getfixturevalue("pg_cluster").create_database())
    s = start_stack(tmp_path / "data", realms=("alpha", "beta"), main_extra=extra)
    yield s
    s.stop()


async def test_search_over_the_text_protocol(engine_stack: Stack, uname: Names) -> None:
    a, b, c, room = uname("cj_a"), uname("cj_b"), uname("cj_c"), uname("cj_room")
    ca = await login(*engine_stack.realm("alpha"), a)
    cb = await login(*engine_stack.realm("beta"), b)
    cc = await login(*engine_stack.realm("alpha"), c)
    zh = await ca.ok(f"sendprivate {b} {ZH}")
    await ca.ok(f"creategroup {room}")
    await cb.ok(f"joingroup {room}")
    ja = await cb.ok(f"sendgroup {room} {JA}")
    ko = await ca.ok(f"sendprivate {b} {KO}")
    meeting = await ca.ok(f"sendprivate {b} the meeting moved, see you at the meets")

    async def ids(client: TextClient, query: str) -> list[int]:
        r = await client.ok(f"search {query}")
        return [m["id"] for m in r["messages"]]

    assert await ids(cb, "开会") == [zh["id"]]
    assert await ids(cb, "项目") == [zh["id"]]
    assert await ids(cb, f"@{a} 讨论项目") == [zh["id"]]
    assert await ids(ca, f"#{room} 会議") == [ja["id"]]
    assert await ids(cb, "회의") == [ko["id"]]
    assert await ids(cb, "meet*") == [meeting["id"]]
    assert await ids(cb, "meet") == []
    assert await ids(cc, "开会") == []  # not theirs
    r = await cb.err("search *", "INVALID_ARGUMENT")
    assert "at least 3 letters or digits" in r["message"], r
    r = await cb.err("search me*", "INVALID_ARGUMENT")
    assert "at least 3 letters or digits" in r["message"], r
    await cb.err("search meet *", "INVALID_ARGUMENT")
    # Edits and deletes keep it right.
    await ca.ok(f"edit {zh['id']} 下周出差")
    assert await ids(cb, "开会") == []
    assert await ids(cb, "出差") == [zh["id"]]
    await ca.ok(f"delete {ko['id']}")
    assert await ids(cb, "회의") == []
    for x in (ca, cb, cc):
        await x.close()
