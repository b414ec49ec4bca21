"""Private sends that arrive together: the PostgreSQL engine stores them as one statement (a
batch), and every caller still gets exactly what a send of its own would give. The first
test runs on both engines (same results); the others are about PostgreSQL's batches: their
failures, a connection killed under them, callers that give up. Real databases only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from main_server.storage import open_storage
from main_server.storage import postgres as pgmod
from main_server.storage.base import Storage, Stored, User
from main_server.storage.postgres import PostgresStorage
from realmchat.errors import NotFound, Unavailable

from .pg import PgCluster


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    url = f"sqlite:///{tmp_path / 'chat.db'}" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    s = open_storage(url, tmp_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresStorage]:
    s = PostgresStorage(pg_url, min_size=2, max_size=4)
    await s.open()
    yield s
    await s.close()


async def make_users(s: Storage, n: int) -> list[User]:
    return [await s.create_user(f"u{i}", f"U{i}", "h") for i in range(n)]


async def rows(url: str, sql: str) -> list[asyncpg.Record]:
    c = await asyncpg.connect(url)
    try:
        return await c.fetch(sql)
    finally:
        await c.close()


async def test_concurrent_sends_valid_and_invalid(store: Storage) -> None:
    us = await make_users(store, 6)
    calls = []
    for i in range(120):
        sender = us[i % 6]
        to = "nobody" if i % 7 == 3 else us[(i * 5 + 1) % 6].key
        calls.append((sender, to, f"m{i} @{to}" if i % 4 == 0 else f"m{i}", i % 4 == 0))
    ops = getattr(store, "ops", 0)
    results = await asyncio.gather(*(store.store_private(s, to, text, 0, (to,) if named else ())
                                     for s, to, text, named in calls), return_exceptions=True)
    if isinstance(store, PostgresStorage):
        assert store.ops - ops < len(calls) // 4  # they went in batches, not one by one

    ids = []
    for (sender, to, text, named), r in zip(calls, results, strict=True):
        if to == "nobody":
            assert isinstance(r, NotFound), r
            assert "no user 'nobody'" in str(r)
            continue
        assert isinstance(r, Stored), r
        m = r.message
        assert (m.sender, m.text, m.to, m.reply_to) == (sender.name, text, to.upper(), 0)
        assert r.recipients == [to]
        assert r.mentioned == ([to] if named and to != sender.key else [])
        ids.append(m.id)
    # Distinct, and growing in the order the calls were made.
    assert ids == sorted(set(ids))

    # Each stored message waits in its recipient's inbox (with its mention), nothing else does.
    for u in us:
        inbox, more = await store.peek_inbox(u.key, 1000)
        assert not more
        mine = [(r.message.id, r.message.text, bool(r.mentioned)) for r in results
                if isinstance(r, Stored) and r.recipients == [u.key]]
        assert [(m.id, m.text, m.mention) for m in inbox] == mine
    # And every conversation knows its last message, on both sides.
    for u in us:
        convs = {c.peer_key: c.last.id for c in await store.conversations(u.key) if c.kind == "user" and c.last}
        expected: dict[str, int] = {}
        for (sender, to, _, _), r in zip(calls, results, strict=True):
            if isinstance(r, Stored):
                for a, b in ((sender.key, to), (to, sender.key)):
                    if a == u.key:
                        peer = b
                        expected[peer] = max(expected.get(peer, 0), r.message.id)
        assert convs == expected


async def test_a_lone_send_goes_at_once(pg: PostgresStorage) -> None:
    a, b = await make_users(pg, 2)
    ops = pg.ops
    for i in range(3):  # no company waited for: each one its own statement, right away
        r = await asyncio.wait_for(pg.store_private(a, b.key, f"x{i}"), 5)
        assert r.message.text == f"x{i}"
    assert pg.ops - ops == 3


async def test_sends_queue_while_a_batch_is_on_the_database(pg: PostgresStorage, pg_url: str) -> None:
    a, b, c = await make_users(pg, 3)
    await pg.store_private(a, b.key, "first")  # the conversation's rows exist: a lock can hold them
    # Another session holds a row the next batch must update: that batch waits on the database.
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM private_peers WHERE user_key = 'u0' FOR UPDATE")
        # Every connection the engine may use for sends carries one: the next calls queue.
        # (one per loop turn: calls made in the same turn go together as one batch).
        held = []
        for i in range(pg.max_batches):
            held.append(asyncio.ensure_future(pg.store_private(a, b.key, f"held{i}")))
            await asyncio.sleep(0.1)
        assert not any(h.done() for h in held)
        ops = pg.ops
        queued = [asyncio.ensure_future(pg.store_private(c, b.key, f"q{i}")) for i in range(50)]
        gave_up = asyncio.ensure_future(pg.store_private(c, a.key, "cancelled while queued"))
        await asyncio.sleep(0.1)
        gave_up.cancel()
        await tx.rollback()
        first = await asyncio.gather(*held)
        stored = await asyncio.gather(*queued)
        assert pg.ops - ops == pg.max_batches + 1  # the held ones, then all 50 as one batch
        assert [s.message.id for s in stored] == sorted({s.message.id for s in stored})
        assert stored[0].message.id > max(f.message.id for f in first)
        with pytest.raises(asyncio.CancelledError):
            await gave_up
    finally:
        await blocker.close()
    # What was cancelled before it was sent was never stored.
    assert not await rows(pg_url, "SELECT 1 FROM messages WHERE text = 'cancelled while queued'")


async def test_a_failing_row_fails_alone(pg: PostgresStorage, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = await make_users(pg, 2)
    monkeypatch.setattr(pgmod, "BATCH_BYTES", 1 << 30)  # the poison shares a batch with the others
    pg.max_batches = 1  # one batch at a time: the calls below queue behind the held one
    # A text whose search vector passes PostgreSQL's limit (1 MiB): its INSERT fails in the
    # database, which makes the whole statement fail; the others are then stored one by one.
    poison = " ".join(f"w{i:06d}" for i in range(200_000))
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await pg.store_private(a, b.key, "first")
        await blocker.execute("SELECT 1 FROM private_peers WHERE user_key = 'u0' FOR UPDATE")
        held = asyncio.ensure_future(pg.store_private(a, b.key, "held"))
        await asyncio.sleep(0.2)
        calls = [asyncio.ensure_future(pg.store_private(a, b.key, t)) for t in ("ok1", poison, "ok2")]
        await asyncio.sleep(0.1)
        await tx.rollback()
        await held
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await blocker.close()
    assert isinstance(results[0], Stored) and isinstance(results[2], Stored)
    assert isinstance(results[1], asyncpg.exceptions.ProgramLimitExceededError), results[1]
    assert results[0].message.id < results[2].message.id
    texts = [r["text"] for r in await rows(pg_url, "SELECT text FROM messages ORDER BY id")]
    assert texts == ["first", "held", "ok1", "ok2"]


async def test_an_argument_the_driver_refuses_fails_alone(pg: PostgresStorage, pg_url: str) -> None:
    # A reply_to past BIGINT cannot be encoded: the batch never reaches the database, and only
    # that call fails (as it would alone); the gRPC API's int64 cannot carry one, storage can.
    a, b = await make_users(pg, 2)
    await pg.store_private(a, b.key, "first")
    pg.max_batches = 1  # one batch at a time: the calls below queue behind the held one
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM private_peers WHERE user_key = 'u0' FOR UPDATE")
        held = asyncio.ensure_future(pg.store_private(a, b.key, "held"))
        await asyncio.sleep(0.2)
        calls = [asyncio.ensure_future(pg.store_private(a, b.key, t, reply_to))
                 for t, reply_to in (("ok1", 0), ("bad", 1 << 63), ("ok2", 0))]
        await asyncio.sleep(0.1)
        await tx.rollback()
        await held
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await blocker.close()
    assert isinstance(results[0], Stored) and isinstance(results[2], Stored)
    assert isinstance(results[1], asyncpg.exceptions.DataError), results[1]
    assert [r["text"] for r in await rows(pg_url, "SELECT text FROM messages ORDER BY id")] == \
        ["first", "held", "ok1", "ok2"]


async def test_connection_killed_under_a_batch(pg: PostgresStorage, pg_url: str) -> None:
    a, b = await make_users(pg, 2)
    await pg.store_private(a, b.key, "first")
    pg.max_batches = 1  # one batch at a time: the calls below queue behind the held one
    dbname = pg_url.rsplit("/", 1)[1]
    blocker = await asyncpg.connect(pg_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM private_peers WHERE user_key = 'u0' FOR UPDATE")
        kill = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
        held = asyncio.ensure_future(pg.store_private(a, b.key, "held"))  # alone, waits on the lock
        await asyncio.sleep(0.3)
        calls = [asyncio.ensure_future(pg.store_private(a, b.key, f"k{i}")) for i in range(20)]
        assert await blocker.fetchval(kill) == 1
        with pytest.raises(Unavailable):
            await held
        await asyncio.sleep(0.3)  # the 20 went as the next batch, which waits on the lock too
        assert not any(c.done() for c in calls)
        assert await blocker.fetchval(kill) == 1
        results = await asyncio.gather(*calls, return_exceptions=True)
        await tx.rollback()
    finally:
        await blocker.close()
    # Killed before its commit: every caller hears UNAVAILABLE (never a retry that could double
    # a message), and nothing of the batch is stored.
    assert all(isinstance(r, Unavailable) for r in results), results
    assert [r["text"] for r in await rows(pg_url, "SELECT text FROM messages")] == ["first"]
    # The engine goes on with a fresh connection.
    again = await asyncio.gather(*(pg.store_private(a, b.key, f"k{i}") for i in range(20)))
    assert [s.message.text for s in again] == [f"k{i}" for i in range(20)]


async def test_connections_killed_during_a_flood(pg_cluster: PgCluster) -> None:
    # Backends killed at random while batches run (fsync on: commits take real time): each call
    # either gets its message (stored once) or UNAVAILABLE (stored at most once); nothing OK'd is
    # lost, nothing is doubled, and every stored message has its undelivered entry.
    with PgCluster(fsync=True) as own:
        url = own.create_database()
        dbname = url.rsplit("/", 1)[1]
        s = PostgresStorage(url, min_size=2, max_size=4)
        await s.open()
        try:
            us = await make_users(s, 20)
            stop = asyncio.Event()

            async def killer() -> None:
                # A bounded number of hits: however slow the machine, the flood then goes on
                # without it, so both outcomes are seen.
                c = await asyncpg.connect(url)
                hits = 0
                try:
                    while not stop.is_set() and hits < 12:
                        await asyncio.sleep(0.02)
                        hits += len(await c.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                                  f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid() "
                                                  "AND state = 'active'"))
                finally:
                    await c.close()

            async def sender(w: int) -> list[tuple[str, Stored | BaseException]]:
                out: list[tuple[str, Stored | BaseException]] = []
                for i in range(40):
                    text = f"w{w}-{i}"
                    try:
                        out.append((text, await s.store_private(us[w % 20], us[(w + i) % 20].key, text)))
                    except Unavailable as exc:
                        out.append((text, exc))
                return out

            k = asyncio.ensure_future(killer())
            done = await asyncio.gather(*(sender(w) for w in range(100)))
            stop.set()
            await k
        finally:
            await s.close()
        results = [x for per in done for x in per]
        ok = {text: r.message.id for text, r in results if isinstance(r, Stored)}
        failed = {text for text, r in results if not isinstance(r, Stored)}
        assert failed and ok  # the killer did hit some batches, and most went through
        stored = await rows(url, "SELECT m.id, m.text, (SELECT count(*) FROM undelivered d WHERE d.msg_id = m.id) AS q "
                                 "FROM messages m")
        texts = [r["text"] for r in stored]
        assert len(texts) == len(set(texts))  # nothing doubled
        by_text = {r["text"]: r["id"] for r in stored}
        assert {t: by_text.get(t) for t in ok} == ok  # every OK'd message is there, with its id
        assert set(by_text) <= ok.keys() | failed
        assert all(r["q"] == 1 for r in stored)


async def test_replicas_batching_side_by_side(pg_url: str) -> None:
    # Several mains share the database, each storing its own batches at the same time; their
    # conversations overlap, in opposite orders. Batches lock the conversations' rows in one
    # order: no deadlock (it would show as a retry), nothing lost, every side's last id right.
    replicas = [PostgresStorage(pg_url, min_size=1, max_size=3) for _ in range(3)]
    for r in replicas:
        await r.open()
    try:
        us = await make_users(replicas[0], 12)
        pairs = [(a, b) for a in us for b in us if a.key < b.key]

        async def flood(r: PostgresStorage, n: int) -> list[tuple[str, str, int]]:
            order = pairs if n % 2 else pairs[::-1]
            out = []
            for rnd in range(4):
                got = await asyncio.gather(*(r.store_private(a, b.key, f"{n}-{rnd}-{a.key}-{b.key}")
                                             if (rnd + n) % 2 else r.store_private(b, a.key, f"{n}-{rnd}")
                                             for a, b in order))
                out += [(a.key, b.key, s.message.id) for (a, b), s in zip(order, got, strict=True)]
            return out

        done = await asyncio.gather(*(flood(r, n) for n, r in enumerate(replicas)))
        assert [r.retries for r in replicas] == [0, 0, 0]
        ids = [i for per in done for _, _, i in per]
        assert len(ids) == len(set(ids)) == 3 * 4 * len(pairs)
        last: dict[tuple[str, str], int] = {}
        for a, b, i in (x for per in done for x in per):
            last[(a, b)] = last[(b, a)] = max(last.get((a, b), 0), i)
        got = {(r["user_key"], r["peer_key"]): r["last_id"]
               for r in await rows(pg_url, "SELECT user_key, peer_key, last_id FROM private_peers")}
        assert got == last
    finally:
        for r in replicas:
            await r.close()
