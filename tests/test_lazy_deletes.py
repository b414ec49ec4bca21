"""Deleting delivered rows does not pay a flush of its own, on either engine: the stored message
is committed durably before its OK, while the deletion of its undelivered row rides on the next
durable commit (docs/PERFORMANCE.md, "Loss model"). Real databases: a SQLite file written by a
process that then dies without closing it, and a PostgreSQL cluster with fsync on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg

from main_server.storage.postgres import PostgresStorage
from main_server.storage.sqlite import SQLiteStorage

from .pg import PgCluster

ROOT = Path(__file__).resolve().parent.parent


async def test_sqlite_deletes_commit_lazily_and_the_next_write_is_durable_again(tmp_path: Path) -> None:
    s = SQLiteStorage(tmp_path / "chat.db", synchronous="FULL")
    await s.open()
    try:
        alice = await s.create_user("alice", "alice", "h")
        await s.create_user("bob", "bob", "h")
        sent = [(await s.store_private(alice, "bob", f"m{i}")).message for i in range(5)]
        before = s.lazy_commits
        for m in sent:
            await s.mark_delivered([("bob", m.id)])  # awaited one by one: each is a batch of its own
        assert s.lazy_commits - before == 5
        # The connection is back to FULL for everything else.
        assert await s._do(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
        stored = await s.store_private(alice, "bob", "after")
        assert s.lazy_commits - before == 5
        assert await s.peek_pending("bob", 10) == [stored.message]
    finally:
        await s.close()


async def test_sqlite_lazy_deletes_survive_a_process_that_dies_without_closing(tmp_path: Path) -> None:
    # A process crash (kill -9, OOM) loses no committed transaction, lazy or not: only a power cut
    # can undo a lazy one. The writer dies by os._exit: no close, no checkpoint.
    db = tmp_path / "chat.db"
    script = textwrap.dedent(f"""
        import asyncio, os
        from pathlib import Path
        from main_server.storage.sqlite import SQLiteStorage

        async def main():
            s = SQLiteStorage(Path({str(db)!r}), synchronous="FULL")
            await s.open()
            alice = await s.create_user("alice", "alice", "h")
            await s.create_user("bob", "bob", "h")
            ids = [(await s.store_private(alice, "bob", f"m{{i}}")).message.id for i in range(6)]
            for i in ids[:4]:
                await s.mark_delivered([("bob", i)])
            assert s.lazy_commits >= 4, s.lazy_commits
            print("ready", flush=True)
            os._exit(0)

        asyncio.run(main())
    """)
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                                  text=True, timeout=60)
    assert out.returncode == 0 and "ready" in out.stdout, out.stderr
    assert (tmp_path / "chat.db-wal").exists()  # nothing was checkpointed: the log holds the commits
    s = SQLiteStorage(db, synchronous="FULL")
    await s.open()
    try:
        assert [m.text for m in await s.peek_pending("bob", 10)] == ["m4", "m5"]
    finally:
        await s.close()


async def test_postgres_deletes_do_not_wait_for_their_flush() -> None:
    # fsync and synchronous_commit on. The WAL writer is told to wait its longest (10 s) before
    # flushing what asynchronous commits left, so the lag is seen, not raced.
    with PgCluster(fsync=True) as own:
        url = own.create_database()
        admin = await asyncpg.connect(url)
        s = PostgresStorage(url, min_size=1, max_size=2)
        try:
            await admin.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
            await admin.execute("SELECT pg_reload_conf()")
            await s.open()
            alice = await s.create_user("alice", "alice", "h")
            await s.create_user("bob", "bob", "h")
            m = (await s.store_private(alice, "bob", "hello")).message

            async def lsns() -> tuple[int, int]:
                row = await admin.fetchrow(
                    "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS ins, "
                    "pg_current_wal_flush_lsn() - '0/0'::pg_lsn AS fl")
                return int(row["ins"]), int(row["fl"])

            inserted, flushed = await lsns()
            assert flushed >= inserted  # a send's commit waits for its flush
            await s.mark_delivered([("bob", m.id)])
            inserted, flushed = await lsns()
            assert inserted > flushed  # the delete committed; its flush is still to come
            lazy_end = inserted
            assert await s.peek_pending("bob", 10) == []
            await s.store_private(alice, "bob", "again")
            _, flushed = await lsns()
            assert flushed >= lazy_end  # the next durable commit carried it to disk
        finally:
            await s.close()
            await admin.close()
