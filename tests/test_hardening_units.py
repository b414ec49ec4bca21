"""The pure parts of the abuse limits, in-process: pacing arithmetic, one attempt in flight per
key, the WAL header check, the password policy, file-name cleaning."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from main_server.password_policy import check_password
from main_server.storage.walcheck import WalLost, check_and_mark, mark_closed, marker_path, wal_problem
from realm_server.limits import Pacer
from realmchat.errors import InvalidArgument, ResourceExhausted
from realmchat.ratelimit import KeyedLocks
from realmchat.textproto import base_file_name


def test_pacer_delays_instead_of_refusing() -> None:
    p = Pacer(cmd_rate=10, cmd_burst=2, byte_rate=0, byte_burst=1, now=0.0)
    assert [p.delay(0.0, 5) for _ in range(4)] == [0.0, 0.0, pytest.approx(0.1), pytest.approx(0.2)]
    assert p.delay(1.0, 5) == 0.0  # the debt was paid meanwhile
    b = Pacer(cmd_rate=0, cmd_burst=1, byte_rate=100, byte_burst=100, now=0.0)
    assert b.delay(0.0, 100) == 0.0 and b.delay(0.0, 50) == pytest.approx(0.5)
    assert not b.idle(0.0) and b.idle(10.0)


async def test_keyed_locks_hold_one_at_a_time_and_bound_the_waiters() -> None:
    locks = KeyedLocks(max_waiting=2)
    order: list[str] = []

    async def attempt(name: str) -> None:
        async with locks.hold("k", "busy"):
            order.append(name + "+")
            await asyncio.sleep(0.01)
            order.append(name + "-")

    a, b = asyncio.create_task(attempt("a")), asyncio.create_task(attempt("b"))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted):
        async with locks.hold("k", "busy"):
            pass
    await asyncio.gather(a, b)
    assert order == ["a+", "a-", "b+", "b-"] and len(locks) == 0


def test_wal_check(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(x)")
    c.commit()
    wal = db.with_name("x.db-wal")
    assert wal_problem(wal) == ""
    good = wal.read_bytes()
    c.close()  # clean close: the log is gone
    assert check_and_mark(db, allow_loss=False) == ""  # no marker: nothing to check
    assert marker_path(db).exists()
    with pytest.raises(WalLost, match="is missing"):
        check_and_mark(db, allow_loss=False)  # marker left = unclean, and no log
    wal.write_bytes(good[:8] + b"\0\0\0\0" + good[12:])
    assert "bad page size" in wal_problem(wal)
    assert "damaged" in check_and_mark(db, allow_loss=True)  # told to: only reported
    mark_closed(db)
    assert not marker_path(db).exists()


def test_password_policy() -> None:
    check_password("alicealice", "correct-horse", 8)
    for pw in ("short", "has space-in-it", "tab\tin-it", "Password1", "QWERTYUIOP", "ALICEALICE"):
        with pytest.raises(InvalidArgument):
            check_password("alicealice", pw, 8)


def test_file_names_are_cleaned() -> None:
    assert base_file_name("../../etc/pass\u202ewd.txt") == "passwd.txt"
    assert base_file_name("a\u200b\u2066b\u2069\u00ad.pdf") == "ab.pdf"
    with pytest.raises(InvalidArgument):
        base_file_name("x\u009b.txt")  # C1 control (CSI)
    with pytest.raises(InvalidArgument):
        base_file_name("\u202e")
