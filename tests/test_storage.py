"""The storage suite, run against BOTH engines: SQLite on tmp_path and PostgreSQL in a
throwaway cluster (tests/pg.py). Same calls, same records, same typed errors. A PostgreSQL
that cannot start fails these tests (see conftest.pg_cluster); it never skips them."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from main_server.dburl import parse_postgres_url, redact
from main_server.storage import open_storage
from main_server.storage.base import MessageRecord, Storage, User
from main_server.storage.postgres import MIGRATIONS as PG_MIGRATIONS
from main_server.storage.postgres import PostgresStorage
from main_server.storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from main_server.storage.sqlite import SQLiteStorage
from realmchat.errors import AlreadyExists, NotFound, PermissionDenied, ResourceExhausted, Unavailable

from .pg import PgCluster, PgSetupError, find_bin_dir
from .stack import start_stack
from .test_durability import until_ok
from .textclient import login

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # base.utc_now_iso()
@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    # Only the postgres half asks for the cluster: the sqlite half runs without it.
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[Storage]:
    s = open_storage(db_url, tmp_path)
    await s.open()
    yield s
    await s.close()


async def users(s: Storage, *names: str) -> list[User]:
    return [await s.create_user(n.lower(), n, f"hash-{n}") for n in names]


# ---- users and sessions ------------------------------------------------------------------------


async def test_users(store: Storage) -> None:
    alice = await store.create_user("alice", "Alice", "h1")
    assert alice == User("alice", "Alice", "h1")
    assert await store.get_user("alice") == alice
    with pytest.raises(AlreadyExists, match="already exists"):
        await store.create_user("alice", "ALICE", "h2")
    assert await store.get_user("alice") == alice  # the failed insert changed nothing
    # Keys are the caller's business (name_key): the engine compares them exactly.
    assert await store.get_user("Alice") is None
    assert await store.get_user("nobody") is None


async def test_sessions(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    s1 = await store.create_session("th1", alice, "alpha")
    s2 = await store.create_session("th2", bob, "")
    assert (s1.user_key, s1.user_name, s1.realm) == ("alice", "Alice", "alpha")
    assert s2.id > s1.id > 0
    assert await store.get_session("th1", 3600) == s1
    assert await store.get_session("th1", float("inf")) == s1
    assert await store.get_session("nope", 3600) is None
    # Too old: gone for good, even when asked again with a longer max age.
    assert await store.get_session("th2", -1) is None
    assert await store.get_session("th2", 3600) is None
    await store.delete_session("th1")
    assert await store.get_session("th1", 3600) is None
    await store.delete_session("th1")  # deleting twice is fine
    with pytest.raises(AlreadyExists):
        await store.create_user("bob", "Bob", "x")


# ---- messages ----------------------------------------------------------------------------------


async def take(store: Storage, user: str, limit: int, skip: frozenset[int] = frozenset(), group: str = ""
               ) -> tuple[list[MessageRecord], bool]:
    """A page of the inbox, then marked delivered: what main does once the page was written."""
    if group:
        page, more = await store.peek_inbox_group(user, group, limit, skip)
    else:
        page, more = await store.peek_inbox(user, limit, skip)
    await store.mark_delivered([(user, m.id) for m in page])
    return page, more


async def test_inbox_page_is_read_not_taken(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")
    m = (await store.store_private(alice, "bob", "hi")).message
    assert await store.peek_inbox("bob", 10) == ([m], False)
    assert await store.peek_inbox("bob", 10) == ([m], False), "still undelivered until marked"
    await store.mark_delivered([("bob", m.id)])
    assert await store.peek_inbox("bob", 10) == ([], False)


async def test_private_queued_until_delivered(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")
    stored = await store.store_private(alice, "bob", "hi")
    assert stored.recipients == ["bob"]
    m = stored.message
    assert (m.sender, m.to, m.group, m.text) == ("Alice", "Bob", "", "hi")
    assert TS_RE.match(m.ts), m.ts
    later = (await store.store_private(alice, "bob", "hi again")).message
    assert later.id > m.id and later.ts >= m.ts
    # Every message waits until a push marks it delivered or an inbox returns it.
    await store.mark_delivered([("bob", m.id)])
    assert await take(store, "bob", 10) == ([later], False)
    assert await take(store, "bob", 10) == ([], False)
    assert await take(store, "alice", 10) == ([], False)  # nothing queued for the sender
    with pytest.raises(NotFound):
        await store.store_private(alice, "ghost", "x")


async def test_group_queued_for_members_but_sender(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    await store.create_group("g1", "G1", alice)
    await store.join_group("g1", bob)
    await store.join_group("g1", carol)
    stored = await store.store_group(alice, "g1", "hello all")
    assert sorted(stored.recipients) == ["bob", "carol"]
    m = stored.message
    assert (m.sender, m.to, m.group, m.text) == ("Alice", "", "G1", "hello all")
    assert TS_RE.match(m.ts)
    await store.mark_delivered([("bob", m.id)])
    assert await take(store, "carol", 10, group="g1") == ([m], False)
    assert await take(store, "bob", 10, group="g1") == ([], False)
    assert await take(store, "alice", 10, group="g1") == ([], False)
    assert await take(store, "carol", 10) == ([], False)  # group mail is not private mail

    dave, = await users(store, "Dave")
    with pytest.raises(PermissionDenied):
        await store.store_group(dave, "g1", "let me in")
    with pytest.raises(PermissionDenied):
        await take(store, "dave", 10, group="g1")
    with pytest.raises(NotFound):
        await store.store_group(alice, "nogroup", "x")
    with pytest.raises(NotFound):
        await take(store, "alice", 10, group="nogroup")
    alone = await store.create_group("solo", "Solo", dave)
    assert (await store.store_group(dave, alone.key, "echo")).recipients == []


async def test_inbox_paging(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")
    sent = [(await store.store_private(alice, "bob", f"m{i}")).message for i in range(5)]
    assert await take(store, "bob", 2) == (sent[0:2], True)
    assert await take(store, "bob", 2) == (sent[2:4], True)
    assert await take(store, "bob", 2) == (sent[4:5], False)
    assert await take(store, "bob", 2) == ([], False)
    # Exactly a page's worth: nothing more is waiting.
    sent = [(await store.store_private(alice, "bob", f"n{i}")).message for i in range(2)]
    assert await take(store, "bob", 2) == (sent, False)


async def test_inbox_skips_messages_being_pushed(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")
    sent = [(await store.store_private(alice, "bob", f"m{i}")).message for i in range(4)]
    in_flight = frozenset({sent[0].id, sent[2].id})
    assert await take(store, "bob", 1, in_flight) == ([sent[1]], True)
    assert await take(store, "bob", 5, in_flight) == ([sent[3]], False)
    # What was skipped stays queued: the push marks it, or a later inbox returns it.
    assert await store.peek_pending("bob", 10) == [sent[0], sent[2]]
    assert await take(store, "bob", 5) == ([sent[0], sent[2]], False)


async def test_group_inbox_paging(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    await store.create_group("g", "G", alice)
    await store.create_group("h", "H", alice)
    await store.join_group("g", bob)
    await store.join_group("h", bob)
    g = [(await store.store_group(alice, "g", f"g{i}")).message for i in range(4)]
    h = [(await store.store_group(alice, "h", f"h{i}")).message for i in range(2)]
    assert await take(store, "bob", 2, frozenset({g[0].id}), group="g") == (g[1:3], True)
    assert await take(store, "bob", 5, group="h") == (h, False)  # queues are per group
    assert await take(store, "bob", 2, group="g") == ([g[0], g[3]], False)


async def test_peek_pending_leaves_messages_queued(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    await store.create_group("g", "G", alice)
    await store.join_group("g", bob)
    a = (await store.store_private(alice, "bob", "p1")).message
    b = (await store.store_group(alice, "g", "g1")).message
    c = (await store.store_private(alice, "bob", "p2")).message
    assert await store.peek_pending("bob", 2) == [a, b]  # private and group, oldest first
    assert await store.peek_pending("bob", 10) == [a, b, c]  # still there: a push marks them
    await store.mark_delivered([("bob", a.id), ("bob", b.id)])
    assert await store.peek_pending("bob", 10) == [c]
    assert await take(store, "bob", 10, group="g") == ([], False)
    assert await store.peek_pending("alice", 10) == []


async def test_get_messages(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")
    await store.create_group("g", "G", alice)
    a = (await store.store_private(alice, "bob", "one")).message
    b = (await store.store_group(alice, "g", "two")).message
    assert await store.get_messages([b.id, a.id, 999_999]) == [a, b]  # by id; unknown ids left out
    assert await store.get_messages([]) == []


async def test_mark_delivered_is_idempotent(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    await store.create_group("grp", "Grp", alice)
    await store.join_group("grp", bob)
    await store.join_group("grp", carol)
    g = (await store.store_group(alice, "grp", "to all")).message
    p = (await store.store_private(alice, "bob", "to bob")).message
    pairs = [("bob", g.id), ("bob", p.id)]
    await store.mark_delivered(pairs)
    await store.mark_delivered(pairs)  # twice: a retried flush
    await store.mark_delivered([])
    await store.mark_delivered([("nobody", g.id), ("carol", 999_999)])  # unknown: nothing happens
    assert await store.peek_pending("bob", 10) == []
    assert await store.peek_pending("carol", 10) == [g]  # only the pairs named


async def test_history(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    sent: list[MessageRecord] = []
    for i in range(6):
        src, dst = (alice, "bob") if i % 2 == 0 else (bob, "alice")
        sent.append((await store.store_private(src, dst, f"m{i}")).message)
    await store.store_private(alice, "carol", "not in this chat")
    await store.store_private(carol, "bob", "nor this")
    assert await store.history_private("alice", "bob", 100) == sent  # oldest first, both ways
    assert await store.history_private("bob", "alice", 100) == sent
    assert await store.history_private("alice", "bob", 3) == sent[-3:]  # the latest ones
    assert await store.history_private("alice", "nobody", 10) == []
    # History does not depend on delivery: taking the inbox leaves it.
    await take(store, "carol", 10)
    assert [m.text for m in await store.history_private("carol", "alice", 10)] == ["not in this chat"]

    await store.create_group("g", "G", alice)
    await store.join_group("g", bob)
    gs = [(await store.store_group(alice if i % 2 else bob, "g", f"g{i}")).message for i in range(4)]
    assert await store.history_group("alice", "g", 10) == gs
    assert await store.history_group("bob", "g", 2) == gs[-2:]
    with pytest.raises(PermissionDenied):
        await store.history_group("carol", "g", 10)
    with pytest.raises(NotFound):
        await store.history_group("alice", "nogroup", 10)


async def test_history_notes_to_self(store: Storage) -> None:
    alice, = await users(store, "Alice")
    m = (await store.store_private(alice, "alice", "note to self")).message
    assert await store.history_private("alice", "alice", 10) == [m]


# ---- groups ------------------------------------------------------------------------------------


async def test_groups(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    g = await store.create_group("zeta", "Zeta", alice)
    assert (g.key, g.name) == ("zeta", "Zeta")
    with pytest.raises(AlreadyExists):
        await store.create_group("zeta", "ZETA", bob)
    assert await store.get_group("zeta") == g
    assert await store.get_group("nope") is None
    await store.create_group("alpha", "Alpha", bob)
    assert (await store.join_group("zeta", bob)).group == g
    assert not (await store.join_group("zeta", bob)).changed  # joining twice is fine
    with pytest.raises(NotFound):
        await store.join_group("nope", bob)
    infos = await store.list_groups("bob")
    assert [(i.name, i.role, i.members) for i in infos] == [("Alpha", "owner", 1), ("Zeta", "member", 2)]
    assert [(i.name, i.role, i.members) for i in await store.list_groups("alice")] == [("Zeta", "owner", 2)]
    assert await store.list_groups("nobody") == []

    # Leaving drops what was queued for the leaver in that group.
    await store.store_group(alice, "zeta", "while bob is away")
    assert (await store.leave_group("zeta", bob)).group == g
    with pytest.raises(PermissionDenied):
        await store.leave_group("zeta", bob)
    with pytest.raises(NotFound):
        await store.leave_group("nope", bob)
    await store.join_group("zeta", bob)
    assert await take(store, "bob", 10, group="zeta") == ([], False)
    assert [(i.name, i.members) for i in await store.list_groups("alice")] == [("Zeta", 2)]


# ---- files -------------------------------------------------------------------------------------


async def test_files(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    sha = "ab" * 32
    f1 = await store.add_file(alice, bob, "a.txt", 12, sha)
    f2 = await store.add_file(alice, bob, "b.bin", 5 << 30, sha)  # sizes past 32 bits
    assert (f1.sender, f1.to, f1.to_key, f1.name, f1.size, f1.sha256) == ("Alice", "Bob", "bob", "a.txt", 12, sha)
    assert TS_RE.match(f1.ts)
    assert f2.id > f1.id and f2.size == 5 << 30
    assert await store.pending_files("bob") == [f1, f2]
    assert await store.pending_files("alice") == []
    assert await store.get_file(f1.id) == f1
    assert await store.get_file(999_999) is None
    await store.mark_downloaded(f1.id, "alice")  # not hers: nothing happens
    assert await store.pending_files("bob") == [f1, f2]
    await store.mark_downloaded(f1.id, "bob")
    assert await store.pending_files("bob") == [f2]
    assert await store.get_file(f1.id) == f1  # still downloadable again
    assert await store.open_file(f1.id, "bob") == f1
    with pytest.raises(NotFound):
        await store.open_file(f1.id, "alice")  # only the recipient
    await store.mark_downloaded(999_999, "bob")  # unknown: nothing happens


async def test_bulk_load_stores_delivered_searchable_history(store: Storage) -> None:
    """A bulk load (the search benchmark's): history and search see the rows, nobody has them
    waiting, and the private conversation is listed."""
    alice, _bob = await users(store, "Alice", "Bob")
    await store.create_group("g", "G", alice)
    ts = "2026-12-01T00:00:00.000Z"
    await store.bulk_load([("Alice", "alice", "Bob", "bob", "", "", "loaded okapi", ts),
                           ("Alice", "alice", "", "", "G", "g", "loaded zebra", ts)])
    assert [m.text for m in await store.history_private("bob", "alice", 10)] == ["loaded okapi"]
    assert [m.text for m in await store.search("bob", ["okapi"])] == ["loaded okapi"]
    assert [m.text for m in await store.search("alice", ["zebra"], group_key="g")] == ["loaded zebra"]
    assert await store.search("bob", ["zebra"]) == []  # not a member of g
    assert await store.peek_pending("bob", 10) == []
    convs = await store.conversations("bob")
    assert [(c.peer_key, c.last.text if c.last else None) for c in convs] == [("alice", "loaded okapi")]


async def test_file_digests_are_the_contents_files_refer_to(store: Storage) -> None:
    alice, bob = await users(store, "Alice", "Bob")
    assert await store.file_digests() == set()
    await store.add_file(alice, bob, "a.txt", 1, "aa" * 32)
    await store.add_file(alice, bob, "again.txt", 1, "aa" * 32)
    await store.create_group("g", "G", alice)
    await store.add_group_file(alice, "g", "g.txt", 1, "bb" * 32)
    assert await store.file_digests() == {"aa" * 32, "bb" * 32}
    await store.delete_group("g", alice)
    assert await store.file_digests() == {"aa" * 32}


# ---- concurrency (trivial for SQLite's single writer; real for PostgreSQL's pool) --------------


async def test_concurrent_sends_and_reads(store: Storage) -> None:
    alice, _bob = await users(store, "Alice", "Bob")

    async def read_until_quiet() -> set[int]:
        seen: set[int] = set()
        for _ in range(40):
            page, _ = await store.peek_inbox("bob", 7)
            ids = [m.id for m in page]
            assert ids == sorted(ids), "a page is in order"
            seen.update(ids)
            await store.mark_delivered([("bob", i) for i in ids])
            await asyncio.sleep(0)
        return seen

    sends = asyncio.gather(*(store.store_private(alice, "bob", f"c{i}") for i in range(60)))
    reads = asyncio.gather(*(read_until_quiet() for _ in range(3)))
    msgs, seen = await asyncio.gather(sends, reads)
    ids = {s.message.id for s in msgs}
    assert len(ids) == 60
    rest, _ = await take(store, "bob", 100)
    assert set().union(*seen) | {m.id for m in rest} == ids, "nothing read is lost, nothing invented"
    assert await store.peek_inbox("bob", 100) == ([], False)


async def test_refused_sends_among_concurrent_ones_leave_nothing_behind(store: Storage) -> None:
    """Sends that are refused (no such user, not a member) share transactions with good ones
    (SQLite commits whatever is waiting together): the refused leave no row, the others stay."""
    alice, _bob, carol = await users(store, "Alice", "Bob", "Carol")
    await store.create_group("club", "Club", carol)
    calls = []
    for i in range(30):
        calls += [store.store_private(alice, "bob", f"ok{i}"), store.store_private(alice, "ghost", f"no{i}"),
                  store.store_group(alice, "club", f"no{i}"), store.store_group(carol, "club", f"club{i}")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Stored", "NotFound", "PermissionDenied", "Stored"] * 30
    page, more = await store.peek_inbox("bob", 100)
    ok = sorted(f"ok{i}" for i in range(30))
    assert sorted(m.text for m in page) == ok and not more
    assert await store.peek_pending("alice", 100) == []
    texts = sorted(m.text for m in await store.history_group("carol", "club", 100))
    assert texts == sorted(f"club{i}" for i in range(30))
    assert sorted(m.text for m in await store.history_private("alice", "bob", 100)) == ok


async def test_concurrent_joins_leaves_and_sends(store: Storage) -> None:
    owner, = await users(store, "Owner")
    others = await users(store, *[f"U{i}" for i in range(8)])
    await store.create_group("g", "G", owner)

    async def join_send_leave(u: User, leave: bool) -> None:
        await store.join_group("g", u)
        await store.store_group(u, "g", f"from {u.name}")
        if leave:
            await store.leave_group("g", u)

    await asyncio.gather(*(join_send_leave(u, i % 2 == 1) for i, u in enumerate(others)))
    assert [i.members for i in await store.list_groups("owner")] == [5]
    owner_msgs, more = await take(store, "owner", 100, group="g")
    assert len(owner_msgs) == 8 and not more
    # Whoever left has nothing of the group left queued (leave and sends are serialized).
    for i, u in enumerate(others):
        pending = await store.peek_pending(u.key, 100)
        if i % 2 == 1:
            assert pending == [], u


# ---- migrations --------------------------------------------------------------------------------


async def test_migrations_rerun_is_a_noop(db_url: str, tmp_path: Path) -> None:
    s = open_storage(db_url, tmp_path)
    await s.open()
    alice, _bob = await users(s, "Alice", "Bob")
    m = (await s.store_private(alice, "bob", "kept")).message
    await s.close()
    for _ in range(2):  # opened again on the same data: nothing re-created, nothing lost
        s = open_storage(db_url, tmp_path)
        await s.open()
        assert await s.get_user("alice") == alice
        assert await s.history_private("alice", "bob", 10) == [m]
        await s.close()
    if isinstance(s, SQLiteStorage):
        with sqlite3.connect(s.path) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
    else:
        assert isinstance(s, PostgresStorage)
        await s.open()
        assert await s.schema_version() == len(PG_MIGRATIONS)
        await s.close()


async def test_postgres_replicas_migrate_once(pg_url: str, tmp_path: Path) -> None:
    # Several mains starting at once on an empty database: one migrates, the others wait on the
    # advisory lock and find the schema current.
    replicas = [PostgresStorage(pg_url, min_size=1, max_size=2) for _ in range(4)]
    await asyncio.gather(*(r.open() for r in replicas))
    try:
        alice, = await users(replicas[0], "Alice")
        assert [await r.get_user("alice") for r in replicas] == [alice] * 4
        session = await replicas[1].create_session("tok", alice, "alpha")
        # A session made through one replica is accepted by every other.
        assert await replicas[3].get_session("tok", 60) == session
        assert await replicas[2].schema_version() == len(PG_MIGRATIONS)
    finally:
        await asyncio.gather(*(r.close() for r in replicas))


async def test_postgres_newer_schema_is_refused(pg_cluster: PgCluster, pg_url: str) -> None:
    s = PostgresStorage(pg_url)
    await s.open()
    await s.close()
    pg_cluster.psql(f"INSERT INTO schema_version(version) VALUES ({len(PG_MIGRATIONS) + 1})",
                    pg_url.rsplit("/", 1)[1])
    with pytest.raises(RuntimeError, match="newer than this server"):
        await PostgresStorage(pg_url).open()


async def test_postgres_migrations_leave_the_planner_s_statistics_alone(pg_cluster: PgCluster, pg_url: str) -> None:
    """A migration that ran ANALYZE on a new database told the planner its tables stay empty:
    as messages grew, group sends on PostgreSQL fell from about 600/s to 130/s."""
    s = PostgresStorage(pg_url)
    await s.open()
    await s.close()
    analyzed = pg_cluster.psql("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL",
                               pg_url.rsplit("/", 1)[1])
    assert analyzed.strip() == "", analyzed


# ---- PostgreSQL connection trouble: typed errors, not driver exceptions ------------------------


async def test_postgres_unreachable_is_a_clear_error() -> None:
    from .pg import free_port

    s = PostgresStorage(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/none")
    with pytest.raises(RuntimeError, match=r"cannot open PostgreSQL at postgresql://postgres:\*\*\*@127"):
        await s.open()


async def test_postgres_dropped_connections_recover(pg_cluster: PgCluster, pg_url: str) -> None:
    s = PostgresStorage(pg_url, min_size=2, max_size=2)
    await s.open()
    try:
        alice, = await users(s, "Alice")
        dbname = pg_url.rsplit("/", 1)[1]
        pg_cluster.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
        # Connections the server closed fail on first use, before anything was committed: the
        # operation runs again on a fresh connection and the caller sees nothing.
        for _ in range(3):
            assert await s.get_user("alice") == alice
        assert s.retries >= 1
        # The usual case: connections dropped while idle are noticed by the pool and replaced,
        # so even writes that are never retried (they might have committed) just work.
        pg_cluster.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()")
        await asyncio.sleep(0.5)
        for i in range(3):
            await s.store_private(alice, "alice", f"after {i}")
        assert (await s.store_private(alice, "alice", "still here")).message.text == "still here"
    finally:
        await s.close()


async def test_postgres_down_is_unavailable(pg_cluster: PgCluster) -> None:
    # A cluster of its own, so that stopping it harms no other test.
    with PgCluster() as own:
        s = PostgresStorage(own.create_database(), min_size=1, max_size=2)
        await s.open()
        try:
            alice, = await users(s, "Alice")
            own.stop()
            # The database is gone: callers get UNAVAILABLE (a typed error, which realms and
            # clients retry), quickly, and never a driver's exception.
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(Unavailable, match="try again"):
                await s.get_user("alice")
            with pytest.raises(Unavailable):
                await s.store_private(alice, "alice", "lost")
            assert asyncio.get_running_loop().time() - t0 < 15
        finally:
            await s.close()


def test_postgres_is_installed() -> None:
    # A FAILED line of its own (not only setup errors of the tests that need it) when the
    # Debian package is missing: PostgreSQL is required, never skipped.
    error = ""
    try:
        find_bin_dir()
    except PgSetupError as exc:
        error = str(exc)
    if error:
        pytest.fail(error, pytrace=False)


def test_open_storage_selects_the_engine(tmp_path: Path) -> None:
    assert isinstance(open_storage("", tmp_path), SQLiteStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/x.db", tmp_path), SQLiteStorage)
    pg = open_storage("postgresql://u@h:5/db?pool_max=3&sslmode=disable", tmp_path)
    assert isinstance(pg, PostgresStorage)
    assert (pg.url, pg.max_size) == ("postgresql://u@h:5/db?sslmode=disable", 3)
    assert isinstance(open_storage("postgres://u@h/db", tmp_path), PostgresStorage)
    small = parse_postgres_url("postgresql://u@h/db?pool_min=20&pool_max=4", 2, 10)
    assert (small.dsn, small.pool_min, small.pool_max) == ("postgresql://u@h/db", 4, 4)
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    with pytest.raises(ValueError, match="postgresql://"):
        open_storage("mysql://x", tmp_path)


# ---- end to end: the real main server on PostgreSQL ----------------------------------------------


async def test_main_server_on_postgres(pg_url: str, tmp_path: Path) -> None:
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=("--db", pg_url))
    try:
        host, port = s.realm("alpha")
        a = await login(host, port, "pgalice")
        b = await login(host, port, "pgbob")
        await b.ok("logout")
        r = await a.ok("sendprivate pgbob hello from postgres")
        assert TS_RE.match(r["ts"]), r
        # Sessions and messages live in PostgreSQL: a main killed and started again (on a data
        # dir with no database in it) resumes alpha's session by token and still has the message.
        s.restart_main()
        assert not (tmp_path / "data" / "chat.db").exists()
        await until_ok(a, "who")
        await b.ok("auth pgbob pw-secret")
        # By inbox, or pushed: the restarted main takes the old one for a dead replica after a
        # few seconds and pushes its users' undelivered messages (either way: exactly once).
        msgs: list[dict[str, Any]] = []
        for _ in range(20):
            msgs += (await b.ok("inbox"))["messages"]
            if msgs or not b.events.empty():
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a second copy, if there were one, would be here by now
        msgs += (await b.ok("inbox"))["messages"]  # events read on the way are queued
        while not b.events.empty():
            msgs.append(b.events.get_nowait())
        assert [(m["from"], m["text"], m["id"]) for m in msgs] == [("pgalice", "hello from postgres", r["id"])]
        await a.close()
        await b.close()
    finally:
        s.stop()


# ---- rooms: every rule, on both engines --------------------------------------------------------


async def test_room_admission(store: Storage) -> None:
    owner, bob, carol = await users(store, "Owner", "Bob", "Carol")
    g = await store.create_group("priv", "Priv", owner, "private")
    assert (g.mode, g.topic, g.key_hash) == ("private", "", "")
    with pytest.raises(PermissionDenied, match="invitation"):
        await store.join_group("priv", bob)
    with pytest.raises(PermissionDenied):
        await store.invite("priv", bob, "carol")  # not a member, not a moderator
    inv = await store.invite("priv", owner, "bob")
    assert (inv.user, inv.user_key, inv.members) == ("Bob", "bob", ["owner"])
    with pytest.raises(NotFound):
        await store.invite("priv", owner, "nobody")
    joined = await store.join_group("priv", bob)
    assert (joined.changed, joined.role, joined.members) == (True, "member", ["bob", "owner"])
    with pytest.raises(AlreadyExists):
        await store.invite("priv", owner, "bob")
    await store.leave_group("priv", bob)
    with pytest.raises(PermissionDenied):
        await store.join_group("priv", bob)  # the invitation was used up
    # A key admits whoever proved it (the hash it was verified against is still the key).
    await store.set_group_key("priv", owner, "hash-of-key")
    assert (await store.get_group("priv")).key_hash == "hash-of-key"  # type: ignore[union-attr]
    with pytest.raises(PermissionDenied, match="key"):
        await store.join_group("priv", carol, "hash-of-old-key")
    assert (await store.join_group("priv", carol, "hash-of-key")).changed
    await store.set_group_key("priv", owner, "")
    with pytest.raises(PermissionDenied):
        await store.join_group("priv", bob, "hash-of-key")
    with pytest.raises(PermissionDenied):
        await store.set_group_key("priv", carol, "mine")  # members may not
    # A ban beats an invitation and a key; unban lifts it.
    await store.invite("priv", owner, "bob")
    await store.ban("priv", owner, "bob", "spam")
    with pytest.raises(PermissionDenied, match="banned"):
        await store.join_group("priv", bob)
    with pytest.raises(PermissionDenied, match="banned"):
        await store.invite("priv", owner, "bob")
    await store.unban("priv", owner, "bob")
    with pytest.raises(NotFound):
        await store.unban("priv", owner, "bob")
    with pytest.raises(PermissionDenied):
        await store.join_group("priv", bob)  # the ban took the invitation with it


async def test_room_moderation(store: Storage) -> None:
    owner, adm, mem, other = await users(store, "Owner", "Adm", "Mem", "Other")
    await store.create_group("g", "G", owner)
    for u in (adm, mem, other):
        await store.join_group("g", u)
    with pytest.raises(PermissionDenied):
        await store.kick("g", mem, "other")
    with pytest.raises(PermissionDenied):
        await store.set_role("g", adm, "mem", "admin")  # owner only, and adm is no admin yet
    change = await store.set_role("g", owner, "adm", "admin")
    assert (change.user, change.role, change.changed) == ("Adm", "admin", True)
    assert not (await store.set_role("g", owner, "adm", "admin")).changed
    with pytest.raises(PermissionDenied):
        await store.set_role("g", adm, "mem", "admin")
    with pytest.raises(PermissionDenied):
        await store.set_role("g", owner, "owner", "member")
    with pytest.raises(PermissionDenied):
        await store.kick("g", adm, "owner")
    with pytest.raises(PermissionDenied):
        await store.ban("g", owner, "owner")
    await store.set_role("g", owner, "other", "admin")
    with pytest.raises(PermissionDenied):
        await store.kick("g", adm, "other")  # an admin does not act on another admin
    m = (await store.store_group(owner, "g", "queued for mem")).message
    kicked = await store.kick("g", adm, "mem")
    assert kicked.members == ["adm", "mem", "other", "owner"]  # the kicked user hears of it too
    with pytest.raises(NotFound):
        await store.kick("g", adm, "mem")
    # Access ends at once, and nothing of the group waits for the kicked user.
    with pytest.raises(PermissionDenied):
        await store.store_group(mem, "g", "still here")
    with pytest.raises(PermissionDenied):
        await store.history_group("mem", "g", 10)
    with pytest.raises(PermissionDenied):
        await store.peek_inbox_group("mem", "g", 10)
    assert m.id not in [x.id for x in await store.peek_pending("mem", 10)]
    banned = await store.ban("g", adm, "mem", "again")
    assert "mem" in banned.members
    assert [(x.name, x.role) for x in (await store.members("g", "mem")).members] == [
        ("Owner", "owner"), ("Adm", "admin"), ("Other", "admin")]
    with pytest.raises(PermissionDenied):
        await store.leave_group("g", owner)  # the owner cannot leave


async def test_room_topic_members_and_visibility(store: Storage) -> None:
    owner, mem, _out = await users(store, "Owner", "Mem", "Out")
    await store.create_group("p", "P", owner, "private")
    await store.create_group("pub", "Pub", owner)
    await store.invite("p", owner, "mem")
    await store.join_group("p", mem)
    with pytest.raises(PermissionDenied):
        await store.set_topic("p", mem, "mine")
    t = await store.set_topic("p", owner, "plans")
    assert (t.group.topic, t.members) == ("plans", ["mem", "owner"])
    assert (await store.room("p", "mem")).topic == "plans"
    for call in (store.room("p", "out"), store.members("p", "out"), store.history_group("out", "p", 5),
                 store.member_group("p", "out")):
        with pytest.raises(PermissionDenied):
            await call
    assert [x.name for x in (await store.members("pub", "out")).members] == ["Owner"]  # public: anyone sees
    with pytest.raises(NotFound):
        await store.room("nope", "out")


async def test_bans_are_listed_to_owner_and_admins_only(store: Storage) -> None:
    owner, adm, mem = await users(store, "Owner", "Adm", "Mem")
    await users(store, "X", "Y", "Z")
    await store.create_group("g", "G", owner)
    await store.create_group("h", "H", owner)
    for u in (adm, mem):
        await store.join_group("g", u)
    await store.set_role("g", owner, "adm", "admin")
    assert (await store.members("g", "owner", 10)).banned == []
    await store.ban("g", owner, "x", "spam")
    await asyncio.sleep(0.01)  # distinct ban times (milliseconds): the list is newest first
    await store.ban("g", adm, "y")
    await asyncio.sleep(0.01)
    await store.ban("g", owner, "z", "flood")
    await store.ban("h", owner, "mem", "other group")
    listed = (await store.members("g", "owner", 10)).banned
    assert listed is not None
    assert [(b.user, b.by, b.reason) for b in listed] == [("Z", "Owner", "flood"), ("Y", "Adm", ""),
                                                          ("X", "Owner", "spam")]
    assert all(TS_RE.match(b.ts) for b in listed), listed
    assert listed[0].ts > listed[1].ts > listed[2].ts
    roll = await store.members("g", "owner", 10)  # the members come with the bans, in one read
    assert [(m.name, m.role) for m in roll.members] == [("Owner", "owner"), ("Adm", "admin"), ("Mem", "member")]
    assert roll.group.name == "G"
    assert (await store.members("g", "owner")).banned is None  # not asked for
    assert (await store.members("g", "adm", 10)).banned == listed
    assert [b.user for b in (await store.members("g", "owner", 2)).banned or []] == ["Z", "Y"]  # capped: the newest
    # A member, a banned user and a stranger are not told who is banned.
    for k in ("mem", "x", "nobody"):
        assert (await store.members("g", k, 10)).banned is None
    await store.unban("g", adm, "y")
    assert [b.user for b in (await store.members("g", "owner", 10)).banned or []] == ["Z", "X"]
    await store.unban("g", owner, "x")
    await store.unban("g", owner, "z")
    assert (await store.members("g", "owner", 10)).banned == []
    assert [b.user for b in (await store.members("h", "owner", 10)).banned or []] == ["Mem"]
    with pytest.raises(NotFound):
        await store.members("nope", "owner", 10)


async def test_a_user_is_a_member_of_so_many_groups_at_most(store: Storage) -> None:
    owner, bob, carol = await users(store, "Owner", "Bob", "Carol")
    for k in ("a", "b"):
        await store.create_group(k, k.upper(), owner)
    await store.create_group("mine", "Mine", bob, most=2)  # created: the owner is a member
    await store.join_group("a", bob, most=2)
    with pytest.raises(ResourceExhausted, match="member of 2 groups"):
        await store.join_group("b", bob, most=2)
    with pytest.raises(ResourceExhausted, match="member of 2 groups"):
        await store.create_group("more", "More", bob, most=2)
    assert await store.get_group("more") is None
    assert not (await store.join_group("a", bob, most=2)).changed  # a member already: no refusal
    await store.leave_group("a", bob)
    await store.join_group("b", bob, most=2)
    assert sorted(g.name for g in await store.list_groups("bob")) == ["B", "Mine"]
    # One user joining many groups at once (side by side on PostgreSQL, each under its own
    # group's lock): the limit still holds.
    keys = [f"g{i}" for i in range(12)]
    for k in keys:
        await store.create_group(k, k, owner)
    results = await asyncio.gather(*(store.join_group(k, carol, most=3) for k in keys), return_exceptions=True)
    assert [r for r in results if not isinstance(r, ResourceExhausted) and isinstance(r, BaseException)] == []
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert len(await store.list_groups("carol")) == 3


async def test_private_history_starts_at_the_join(store: Storage) -> None:
    owner, bob = await users(store, "Owner", "Bob")
    await store.create_group("p", "P", owner, "private")
    await store.create_group("o", "O", owner)
    early_p = (await store.store_group(owner, "p", "before")).message
    early_o = (await store.store_group(owner, "o", "before")).message
    await store.invite("p", owner, "bob")
    await store.join_group("p", bob)
    await store.join_group("o", bob)
    late = (await store.store_group(owner, "p", "after")).message
    assert await store.history_group("bob", "p", 10) == [late]
    assert await store.history_group("owner", "p", 10) == [early_p, late]
    assert await store.history_group("bob", "o", 10) == [early_o]  # public: all of it


async def test_group_files(store: Storage) -> None:
    owner, bob, carol, out = await users(store, "Owner", "Bob", "Carol", "Out")
    await store.create_group("g", "G", owner, "private")
    await store.invite("g", owner, "bob")
    await store.join_group("g", bob)
    sha = "cd" * 32
    f, recipients = await store.add_group_file(owner, "g", "plan.pdf", 99, sha)
    assert (f.group, f.group_key, f.to, f.sender, recipients) == ("G", "g", "", "Owner", ["bob"])
    assert TS_RE.match(f.ts)
    with pytest.raises(PermissionDenied):
        await store.add_group_file(out, "g", "x", 1, sha)
    with pytest.raises(NotFound):
        await store.add_group_file(owner, "nope", "x", 1, sha)
    assert await store.pending_files("bob") == [f]
    assert await store.pending_files("owner") == []
    assert await store.open_file(f.id, "bob") == f
    assert await store.open_file(f.id, "owner") == f  # its sender
    with pytest.raises(PermissionDenied):
        await store.open_file(f.id, "out")
    await store.mark_downloaded(f.id, "bob")
    assert await store.pending_files("bob") == []
    assert await store.open_file(f.id, "bob") == f  # downloadable again
    # A newcomer to a private group gets no file from before; a kicked member loses them all.
    await store.invite("g", owner, "carol")
    await store.join_group("g", carol)
    with pytest.raises(PermissionDenied):
        await store.open_file(f.id, "carol")
    f2, recipients = await store.add_group_file(bob, "g", "notes.txt", 5, sha)
    assert recipients == ["carol", "owner"]
    await store.kick("g", owner, "carol")
    assert await store.pending_files("carol") == []
    with pytest.raises(PermissionDenied):
        await store.open_file(f2.id, "carol")


async def test_delete_group(store: Storage) -> None:
    owner, bob = await users(store, "Owner", "Bob")
    await store.create_group("g", "G", owner)
    await store.join_group("g", bob)
    await store.store_group(owner, "g", "gone soon")
    f, _ = await store.add_group_file(owner, "g", "x.txt", 1, "ab" * 32)
    await store.set_role("g", owner, "bob", "admin")
    with pytest.raises(PermissionDenied):
        await store.delete_group("g", bob)
    deleted = await store.delete_group("g", owner)
    assert deleted.members == ["bob", "owner"]
    assert await store.get_group("g") is None
    assert await store.peek_pending("bob", 10) == []
    assert await store.pending_files("bob") == []
    with pytest.raises(NotFound):
        await store.open_file(f.id, "bob")
    with pytest.raises(NotFound):
        await store.delete_group("g", owner)
    await store.create_group("g", "G", bob)  # the name is free; nothing of the old group is left
    assert await store.history_group("bob", "g", 10) == []


async def test_browse_groups(store: Storage) -> None:
    owner, bob = await users(store, "Owner", "Bob")
    await store.create_group("team.pub", "Team.Pub", owner)
    await store.create_group("team.priv", "Team.Priv", owner, "private")
    await store.create_group("team_x", "Team_X", bob)
    await store.set_topic("team.pub", owner, "hello")
    assert [(r.name, r.mode, r.topic, r.members) for r in await store.browse_groups("bob", "%team%")] == [
        ("Team.Pub", "public", "hello", 1), ("Team_X", "public", "", 1)]
    assert [r.name for r in await store.browse_groups("owner", "%")] == ["Team.Priv", "Team.Pub", "Team_X"]
    assert [r.name for r in await store.browse_groups("bob", "team\\_%")] == ["Team_X"]  # _ is literal
    assert [r.name for r in await store.browse_groups("bob", "team_%")] == ["Team.Pub", "Team_X"]


async def test_names_are_shared_by_users_and_groups(store: Storage) -> None:
    alice, = await users(store, "Alice")
    with pytest.raises(AlreadyExists, match="user"):
        await store.create_group("alice", "ALICE", alice)
    await store.create_group("team", "Team", alice)
    with pytest.raises(AlreadyExists, match="group"):
        await store.create_user("team", "TEAM", "h")
    # At once: exactly one claim of a free name wins.
    results = await asyncio.gather(store.create_user("both", "Both", "h"), store.create_group("both", "both", alice),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) in (["AlreadyExists", "User"], ["AlreadyExists", "GroupRecord"])


async def test_upgrade_keeps_groups_public_with_their_creator_as_owner(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data dir made by the release before rooms (schema version 2: migrations are only ever
    appended, so the first two ARE that schema), with groups made as that release made them,
    opened by this one."""
    import main_server.storage.postgres as pg_engine
    import main_server.storage.sqlite as sqlite_engine

    monkeypatch.setattr(sqlite_engine, "MIGRATIONS", SQLITE_MIGRATIONS[:2])
    monkeypatch.setattr(pg_engine, "MIGRATIONS", PG_MIGRATIONS[:2])
    old = open_storage(db_url, tmp_path)
    await old.open()
    _, _, carol = await users(old, "Alice", "Bob", "Carol")
    # What that release's create_group / join_group / leave_group wrote.
    group = "INSERT INTO groups(key, name, owner_key, created) VALUES (?, ?, ?, '2026-11-01')"
    member = "INSERT INTO members(group_key, user_key, role) VALUES (?, ?, ?)"
    rows = [(group, ("team", "Team", "alice")), (member, ("team", "alice", "owner")),
            (member, ("team", "bob", "member")),
            (group, ("left", "Left", "carol")), (member, ("left", "bob", "member"))]
    # And what its store_group / store_private wrote (ids 1-6 in this order on a fresh database;
    # today's code writes columns that schema did not have yet).
    gmsg = ("INSERT INTO messages(sender, sender_key, group_name, group_key, text, ts) "
            "VALUES (?, ?, ?, ?, ?, '2026-11-01T00:00:00.000Z')")
    pmsg = ("INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts) "
            "VALUES (?, ?, ?, ?, ?, '2026-11-01T00:00:00.000Z')")
    queued = "INSERT INTO undelivered(user_key, group_key, msg_id) VALUES (?, ?, CAST(? AS BIGINT))"
    for i in range(3):
        rows += [(gmsg, ("Alice", "alice", "Team", "team", f"m{i}")), (queued, ("bob", "team", i + 1))]
    rows.append((gmsg, ("Bob", "bob", "Left", "left", "carol left this one")))
    for i in range(2):
        rows += [(pmsg, ("Alice", "alice", "Bob", "bob", f"p{i}")), (queued, ("bob", "", i + 5))]
    if isinstance(old, SQLiteStorage):
        await old.close()
        with sqlite3.connect(old.path) as c:
            for sql, params in rows:
                c.execute(sql, params)
        old = open_storage(db_url, tmp_path)
        await old.open()
    else:
        import asyncpg

        from main_server.storage.roomops import pg_sql

        conn = await asyncpg.connect(db_url)
        try:
            for sql, params in rows:
                await conn.execute(pg_sql(sql.replace("'2026-11-01'", "TIMESTAMPTZ '2026-11-01'")), *params)
        finally:
            await conn.close()
    await old.close()
    monkeypatch.undo()

    s = open_storage(db_url, tmp_path)
    await s.open()
    try:
        every = await s.get_messages([1, 2, 3, 4, 5, 6])
        assert [(m.sender, m.group or m.to, m.text, m.deleted, m.edited, m.reply_to) for m in every] == [
            ("Alice", "Team", "m0", False, "", 0), ("Alice", "Team", "m1", False, "", 0),
            ("Alice", "Team", "m2", False, "", 0), ("Bob", "Left", "carol left this one", False, "", 0),
            ("Alice", "Bob", "p0", False, "", 0), ("Alice", "Bob", "p1", False, "", 0)]
        sent, private = every[:4], every[4:]
        if isinstance(s, SQLiteStorage):
            with sqlite3.connect(s.path) as c:
                assert c.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
        else:
            assert isinstance(s, PostgresStorage) and await s.schema_version() == len(PG_MIGRATIONS)
        team = await s.get_group("team")
        assert team is not None and (team.name, team.mode, team.topic, team.key_hash) == ("Team", "public", "", "")
        roles = [(m.name, m.role) for m in (await s.members("team", "carol")).members]
        assert roles == [("Alice", "owner"), ("Bob", "member")]
        # Every message is there, for old members and for newcomers alike (public history).
        assert await s.history_group("bob", "team", 10) == sent[:3]
        await s.join_group("team", carol)
        assert await s.history_group("carol", "team", 10) == sent[:3]
        assert [m.id for m in (await s.peek_inbox_group("bob", "team", 10))[0]] == [m.id for m in sent[:3]]
        # Undelivered entries, re-keyed by (user, message), are all still waiting.
        assert await s.peek_inbox("bob", 10) == (private, False)
        waiting = sorted(m.id for m in sent[:3] + private)
        assert [m.id for m in await s.peek_pending("bob", 10)] == waiting
        await s.mark_delivered([("bob", private[0].id), ("bob", sent[1].id)])
        marked = (private[0].id, sent[1].id)
        assert [m.id for m in await s.peek_pending("bob", 10)] == [i for i in waiting if i not in marked]
        # A creator who had left is the owner again: every group has one.
        roles = [(m.name, m.role) for m in (await s.members("left", "bob")).members]
        assert roles == [("Carol", "owner"), ("Bob", "member")]
        assert await s.history_group("carol", "left", 10) == [sent[3]]
        await s.set_topic("left", carol, "mine again")
        assert [(g.name, g.role) for g in await s.list_groups("bob")] == [("Left", "member"), ("Team", "member")]
    finally:
        await s.close()


# ---- the life of a message (both engines) -------------------------------------------------------


async def test_message_life_rules_and_search(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    p = (await store.store_private(alice, "bob", "hello @bob zebra", mentions=("bob",))).message
    assert (await store.peek_inbox("bob", 10))[0][0].mention is True
    with pytest.raises(PermissionDenied):
        await store.edit_message(bob, p.id, "not mine")
    with pytest.raises(NotFound):
        await store.edit_message(carol, p.id, "not even visible")
    with pytest.raises(NotFound):
        await store.react(carol, p.id, "x", True)
    ch = await store.edit_message(alice, p.id, "quagga now")
    assert ch.audience == ["alice", "bob"] and TS_RE.match(ch.message.edited)
    assert await store.search("bob", ["zebra"]) == []
    assert [m.id for m in await store.search("bob", ["quagga"])] == [p.id]
    assert await store.search("carol", ["quagga"]) == []
    assert (await store.react(bob, p.id, "👍", True)).changed
    assert not (await store.react(bob, p.id, "👍", True)).changed
    assert (await store.history_private("alice", "bob", 10))[0].reactions == (("👍", ("Bob",)),)
    await store.create_group("g", "G", alice, "private")
    early = (await store.store_group(alice, "g", "quagga early")).message
    await store.invite("g", alice, "bob")
    await store.join_group("g", bob)
    late = (await store.store_group(alice, "g", "quagga late", reply_to=early.id)).message
    assert late.reply_to == early.id
    assert [m.id for m in await store.search("bob", ["quagga"], group_key="g")] == [late.id]
    with pytest.raises(NotFound):
        await store.message_for("bob", early.id)  # before bob joined
    with pytest.raises(PermissionDenied):
        await store.delete_message(bob, late.id)
    await store.set_role("g", alice, "bob", "admin")
    gone = await store.delete_message(bob, late.id)
    assert gone.message.deleted and gone.audience == ["alice", "bob"]
    assert await store.search("bob", ["quagga"], group_key="g") == []
    tomb = (await store.history_group("bob", "g", 10))[-1]
    assert (tomb.id, tomb.text, tomb.deleted) == (late.id, "", True)
    # A deleted undelivered message is never delivered.
    q = (await store.store_private(alice, "carol", "never seen")).message
    await store.delete_message(alice, q.id)
    assert await store.peek_pending("carol", 10) == []


async def test_search_of_a_common_word_ranks_the_newest_matches_the_caller_may_read(
        store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A word with more matches than SEARCH_CANDIDATES in the caller's conversations is ranked
    among its newest matches there: others' newer messages neither leak nor use up the cap."""
    from main_server.storage import roomops
    from main_server.storage import sqlite as sq

    monkeypatch.setattr(roomops, "SEARCH_CANDIDATES", 3)
    monkeypatch.setattr(sq, "DF_SAMPLE", 2)  # SQLite: the weight of "common" is estimated
    s = store
    alice, bob, carol = await users(s, "Alice", "Bob", "Carol")
    mine = [(await s.store_private(alice, "bob", f"common word {i}")).message.id for i in range(5)]
    best = (await s.store_private(bob, "alice", "common common common")).message.id
    theirs = [(await s.store_private(carol, "alice", f"common secret {i}")).message.id for i in range(5)]
    found = [m.id for m in await s.search("bob", ["common"])]
    assert found == [best, mine[4], mine[3]]  # the newest 3 of bob's, most occurrences first
    assert not set(found) & set(theirs)
    assert [m.id for m in await s.search("bob", ["common", "word"])] == mine[:1:-1]
    assert [m.id for m in await s.search("carol", ["common"], peer_key="alice")] == theirs[:1:-1]
    # A group's newer matches count only for its members, and only inside it when asked so.
    await s.create_group("g", "G", carol)
    grouped = [(await s.store_group(carol, "g", f"common in g {i}")).message.id for i in range(4)]
    assert [m.id for m in await s.search("bob", ["common"])] == [best, mine[4], mine[3]]
    await s.join_group("g", bob)
    assert [m.id for m in await s.search("bob", ["common"], group_key="g")] == grouped[:0:-1]
    assert {m.id for m in await s.search("bob", ["common"])} == set(grouped[1:])  # the newest 3 now
    assert [m.id for m in await s.search("bob", ["common"], peer_key="alice")] == [best, mine[4], mine[3]]
    # Words with no letters or digits find nothing (never everything in scope).
    assert await s.search("bob", ["!!!"]) == []


async def test_sqlite_search_index_is_fed_at_commit_in_each_message_s_current_state(tmp_path: Path) -> None:
    """The index is fed once per commit: a message edited or deleted in the same commit as its
    sending is indexed as it ends up, and rows written while main was down are indexed at start."""
    import threading

    s = SQLiteStorage(tmp_path / "chat.db")
    await s.open()
    try:
        alice, _bob = await users(s, "Alice", "Bob")
        kept = (await s.store_private(alice, "bob", "okapi before")).message.id
        gate = threading.Event()
        blocker = asyncio.ensure_future(s._do(lambda c: gate.wait(10)))  # holds the writer...
        await asyncio.sleep(0.05)
        commits = s.commits
        sent = [asyncio.ensure_future(s.store_private(alice, "bob", text))
                for text in ("zebra first", "yak second", "gnu third")]
        first, second, third = kept + 1, kept + 2, kept + 3  # ids on this fresh database
        changes = [asyncio.ensure_future(s.edit_message(alice, first, "quagga first")),
                   asyncio.ensure_future(s.delete_message(alice, second)),
                   asyncio.ensure_future(s.edit_message(alice, kept, "okapi after"))]
        await asyncio.sleep(0.05)
        gate.set()  # ...so that the sends and changes above are one batch, one commit
        await blocker
        assert [f.message.id for f in await asyncio.gather(*sent)] == [first, second, third]
        await asyncio.gather(*changes)
        assert s.commits == commits + 2  # the blocker's and the batch's
        assert await s.search("bob", ["zebra"]) == []
        assert [m.id for m in await s.search("bob", ["quagga"])] == [first]
        assert await s.search("bob", ["yak"]) == []
        assert [m.id for m in await s.search("bob", ["gnu"])] == [third]
        assert await s.search("bob", ["before"]) == []
        assert [m.id for m in await s.search("bob", ["after"])] == [kept]
    finally:
        await s.close()
    with sqlite3.connect(tmp_path / "chat.db") as c:
        c.execute("INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts) "
                  "VALUES ('Alice', 'alice', 'Bob', 'bob', 'wombat offline', '2026-11-01T00:00:00.000Z')")
    s = SQLiteStorage(tmp_path / "chat.db")
    await s.open()
    try:
        assert [m.text for m in await s.search("bob", ["wombat"])] == ["wombat offline"]
    finally:
        await s.close()


async def test_history_pages_by_id(store: Storage) -> None:
    alice, _ = await users(store, "Alice", "Bob")
    ids = [(await store.store_private(alice, "bob", f"n{i}")).message.id for i in range(30)]
    assert [m.id for m in await store.history_private("bob", "alice", 5)] == ids[-5:]
    assert [m.id for m in await store.history_private("bob", "alice", 5, before=ids[10])] == ids[5:10]
    assert [m.id for m in await store.history_private("bob", "alice", 5, after=ids[10])] == ids[11:16]


async def test_upgrade_from_version_4_indexes_old_messages(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import main_server.storage.postgres as pg_engine
    import main_server.storage.sqlite as sqlite_engine

    monkeypatch.setattr(sqlite_engine, "MIGRATIONS", SQLITE_MIGRATIONS[:4])
    monkeypatch.setattr(pg_engine, "MIGRATIONS", PG_MIGRATIONS[:4])
    old = open_storage(db_url, tmp_path)
    await old.open()
    await users(old, "Alice", "Bob")
    await old.close()
    sql = ("INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts) "
           "VALUES ('Alice', 'alice', 'Bob', 'bob', 'okapi from before', '2026-11-01T00:00:00.000Z')")
    if db_url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "chat.db") as c:
            c.execute(sql)
    else:
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
    monkeypatch.undo()
    s = open_storage(db_url, tmp_path)
    await s.open()
    try:
        found = await s.search("bob", ["okapi"])
        assert [(m.text, m.deleted, m.edited, m.reply_to) for m in found] == [("okapi from before", False, "", 0)]
        assert await s.search("carol", ["okapi"]) == []
    finally:
        await s.close()


async def test_waiting_for_names_who_still_has_a_message_undelivered(store: Storage) -> None:
    alice, bob, carol = await users(store, "Alice", "Bob", "Carol")
    await store.create_group("grp", "Grp", alice)
    await store.join_group("grp", bob)
    await store.join_group("grp", carol)
    g = (await store.store_group(alice, "grp", "to all")).message
    assert await store.waiting_for(g.id, 10) == ["bob", "carol"]
    assert await store.waiting_for(g.id, 1) == ["bob"]
    await store.mark_delivered([("bob", g.id)])
    assert await store.waiting_for(g.id, 10) == ["carol"]
    assert await store.waiting_for(999_999, 10) == []
