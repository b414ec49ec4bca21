"""Faults against real processes: kill -9 and SIGSTOP of main and of realms, clients that vanish
mid-upload. What must hold: acknowledged messages are there exactly once, nothing hangs (commands
fail with UNAVAILABLE within the realm's deadline), users of a dead realm go offline promptly and
their messages wait in the inbox, and no partial upload survives."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .hardutil import connect, drain_events, tmp_files, wait_until
from .stack import Stack, start_stack
from .textclient import TextClient, login, until_ok

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


@pytest.fixture
def cheap_stack(tmp_path: Path) -> Iterator[Stack]:
    # no flood control: the burst test pipelines 900 commands in a few seconds on one connection
    s = start_stack(tmp_path / "data", main_extra=CHEAP, realm_extra=("--cmd-rate", "0"))
    yield s
    for p in [s.main, *s.realms.values()]:
        p.signal(signal.SIGCONT)  # a test that stopped a process must not leave it stopped
    s.stop()


async def online(c: TextClient, user: str) -> bool:
    return any(p["user"] == user for p in (await c.ok("who"))["online"])


# ---- main killed during a burst ------------------------------------------------------------

async def test_kill_9_main_during_bursts_keeps_every_acked_message_exactly_once(
        cheap_stack: Stack, uname: Names) -> None:
    s = cheap_stack
    a, off, on = uname("ka"), uname("koff"), uname("kon")
    ca = await login(*s.realm("alpha"), a)
    coff = await login(*s.realm("beta"), off)
    await coff.ok("logout")                      # off: everything waits for its inbox
    con = await login(*s.realm("beta"), on)      # on: everything is pushed, live
    acked: dict[str, list[int]] = {off: [], on: []}
    sent_ids: list[int] = []
    per_round = 300
    for rnd in range(3):
        lines = "".join(f"sendprivate {off if i % 2 else on} r{rnd}-{i}\n" for i in range(per_round))
        await ca.send_raw(lines.encode())
        replies: list[dict[str, Any]] = []
        for _ in range(60):  # let part of the burst through, then kill main in the middle of it
            replies.append(await ca.response())
        s.main.kill()
        t0 = time.monotonic()
        for _ in range(per_round - 60):
            replies.append(await ca.response(timeout=10))
        assert time.monotonic() - t0 < 8, "answers after the kill took too long"
        for i, r in enumerate(replies):
            assert r["status"] == "OK" or r["code"] == "UNAVAILABLE", r
            if r["status"] == "OK":
                acked[off if i % 2 else on].append(r["id"])
                sent_ids.append(r["id"])
        assert any(r["status"] != "OK" for r in replies), "main died after the burst, not during it"
        s.restart_main()
        await until_ok(ca, "who")  # alpha re-linked; a's session resumed by its token
        await until_ok(con, "who")
    # off logs in: every acked message to it arrives once, from its inbox or pushed to the new
    # session (a session that logs in while its realm re-links is resumed, and resumes push).
    await until_ok(coff, f"auth {off} pw-secret")
    inbox: list[dict[str, Any]] = []
    while True:
        r = await coff.ok("inbox")
        inbox += r["messages"]
        if not r.get("more"):
            break
    pushed_off = [e for e in await drain_events(coff, 1.0) if e["event"] == "private"]
    got_off = Counter([m["id"] for m in inbox] + [e["id"] for e in pushed_off])
    assert set(acked[off]) <= set(got_off), sorted(set(acked[off]) - set(got_off))
    assert max(got_off.values()) == 1
    # on: what was pushed live plus what waits in its inbox.
    events = [e for e in await drain_events(con, 1.0) if e["event"] == "private"]
    rest = (await until_ok(con, "inbox"))["messages"]
    got_on = Counter([e["id"] for e in events] + [m["id"] for m in rest])
    missing = sorted(set(acked[on]) - set(got_on))
    assert not missing, f"{len(missing)} acked messages to an online user never arrived: {missing[:10]}"
    assert max(got_on.values()) == 1, [k for k, v in got_on.items() if v > 1]


# ---- main restart: in-flight commands --------------------------------------------------------

async def test_in_flight_command_gets_unavailable_when_main_dies(tmp_path: Path, uname: Names) -> None:
    # A slow password hash (about a second) keeps a register in flight while main is killed.
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=("--argon2-time-cost", "20"))
    try:
        c = await TextClient.connect(*s.realm("alpha"))
        await c.send_raw(f"register {uname('slow')} pw-secret\n".encode())
        await asyncio.sleep(0.3)
        s.main.kill()
        t0 = time.monotonic()
        r = await c.response(timeout=10)
        assert r["code"] == "UNAVAILABLE" and r["message"], r
        assert time.monotonic() - t0 < 2, "the in-flight call hung"
        await c.ok("ping")
        s.main_extra = CHEAP
        s.restart_main()
        u = uname("after")
        await until_ok(c, f"register {u} pw-secret")
        await c.ok(f"auth {u} pw-secret")
    finally:
        s.stop()


# ---- main stalled ----------------------------------------------------------------------------

async def test_sigstop_main_commands_fail_within_deadline_realm_stays_responsive(
        cheap_stack: Stack, uname: Names) -> None:
    s = cheap_stack
    a, b = uname("sa"), uname("sb")
    ca = await login(*s.realm("alpha"), a)
    cb = await login(*s.realm("alpha"), b)
    cc = await login(*s.realm("alpha"), uname("sc"))
    local = await TextClient.connect(*s.realm("alpha"))
    s.main.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        pending = asyncio.gather(ca.cmd("inbox"), cb.cmd(f"sendprivate {a} are you there"), cc.cmd("who"))
        # Meanwhile the realm answers local work at once, on old and new connections.
        for _ in range(5):
            t = time.monotonic()
            await local.ok("ping")
            await local.ok("help")
            await local.err("frobnicate", "UNIMPLEMENTED")
            assert time.monotonic() - t < 0.5
            await asyncio.sleep(0.3)
        newcomer = await TextClient.connect(*s.realm("alpha"))
        await newcomer.err("inbox", "UNAUTHENTICATED")  # local checks need no main
        results = await pending
        took = time.monotonic() - t0
        assert all(r["code"] == "UNAVAILABLE" for r in results), results
        assert took < 7, f"commands took {took:.1f}s to fail"
    finally:
        s.main.signal(signal.SIGCONT)
    # and once main runs again, so do commands
    await until_ok(ca, "inbox")
    await until_ok(cb, f"sendprivate {a} back again")


# ---- a realm dies ----------------------------------------------------------------------------

async def test_kill_9_realm_users_go_offline_and_messages_wait(cheap_stack: Stack, uname: Names) -> None:
    s = cheap_stack
    u, w = uname("ru"), uname("rw")
    cu_alpha = await login(*s.realm("alpha"), u)
    cw = await login(*s.realm("beta"), w)
    assert await online(cw, u)
    s.realms["alpha"].kill()
    t0 = time.monotonic()
    while await online(cw, u):
        assert time.monotonic() - t0 < 3, "main still lists users of a dead realm"
        await asyncio.sleep(0.05)
    r = await cw.ok(f"sendprivate {u} while you were gone")
    await cu_alpha.close()
    cu = await login(*s.realm("beta"), u, register=False)  # the same user, on another realm
    msgs = (await cu.ok("inbox"))["messages"]
    assert [(m["id"], m["text"]) for m in msgs] == [(r["id"], "while you were gone")]


async def _hang_realm_and_send(tmp_path: Path, uname: Names) -> tuple[float, int, int, set[int]]:
    """SIGSTOPs realm alpha (its host "hangs": sockets stay open, nothing answers) with a user on
    it; sends that user one message during the hang and one after main dropped the realm. Returns
    (seconds until the user was offline, id sent during, id sent after, ids in the user's inbox
    when it logs in on beta)."""
    # main pings every second and waits a second here (the default is 10 s + 5 s)
    s = start_stack(tmp_path / "data", main_extra=(*CHEAP, "--keepalive-time-s", "1", "--keepalive-timeout-s", "1"))
    alpha = s.realms["alpha"]
    try:
        u, w = uname("hu"), uname("hw")
        cu_alpha = await login(*s.realm("alpha"), u)
        cw = await login(*s.realm("beta"), w)
        alpha.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        during = await cw.ok(f"sendprivate {u} sent while the realm hangs")
        while await online(cw, u):
            assert time.monotonic() - t0 < 8, "a hung realm's users stay online"
            await asyncio.sleep(0.1)
        took = time.monotonic() - t0
        after = await cw.ok(f"sendprivate {u} sent after it was dropped")
        cu_alpha.writer.transport.abort()
        cu = await login(*s.realm("beta"), u, register=False)  # the same user, on another realm
        inbox = {m["id"] for m in (await cu.ok("inbox"))["messages"]}
        return took, during["id"], after["id"], inbox
    finally:
        alpha.signal(signal.SIGKILL)
        s.stop()


async def test_hung_realm_is_dropped_by_keepalive(tmp_path: Path, uname: Names) -> None:
    took, _, after, inbox = await _hang_realm_and_send(tmp_path, uname)
    assert took < 4, took  # keepalive: 1 s + 1 s, plus the link's cleanup
    assert after in inbox


async def test_message_pushed_into_a_hung_realm_is_not_lost(tmp_path: Path, uname: Names) -> None:
    _, during, _, inbox = await _hang_realm_and_send(tmp_path, uname)
    assert during in inbox


# ---- uploads cut short -----------------------------------------------------------------------

@pytest.mark.parametrize("sent", [0, 300_000])
async def test_client_gone_mid_upload_leaves_no_record_and_no_temp_file(
        stack: Stack, uname: Names, sent: int) -> None:
    a, b = uname("ua"), uname("ub")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    objects = stack.data_dir / "files" / "objects"
    before = sorted(objects.rglob("*"))
    await ca.send_raw(f"sendfile {b} cut.bin 1000000\n".encode() + b"\x5a" * sent)
    await asyncio.sleep(0.3)  # the upload to main is under way
    ca.writer.transport.abort()  # the client vanishes (RST)
    await wait_until(lambda: not tmp_files(stack.data_dir), 5, "the temp file to be removed")
    assert (await cb.ok("receivefile"))["files"] == []
    await cb.no_event(0.3)
    assert sorted(objects.rglob("*")) == before
    # the realm is fine, and so is a's account
    c2 = await connect(*stack.realm("alpha"))
    await c2.ok(f"auth {a} pw-secret")
    await c2.send_raw(f"sendfile {b} ok.bin 5\nhello".encode())
    assert (await c2.response())["size"] == 5
