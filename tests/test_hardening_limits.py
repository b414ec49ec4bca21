"""Limits and abuse against real processes: idle and login timeouts, connections per IP, flood
control, login attempts per IP and per account, message size, slow readers (send queue bounded
in lines and bytes, stalled writes), stalled uploads. Every limit answers with a clear ERROR line
or a `closing` event that says why, and the realm keeps serving everyone else."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from .hardutil import (
    add_realm,
    connect,
    fresh_source_ip,
    login_from,
    read_to_end,
    stop_reading,
    tmp_files,
    wait_until,
)
from .stack import Stack, start_stack
from .textclient import login

Names = Callable[[str], str]

# Realm "tight": every per-connection limit small, loopback NOT trusted (per-IP limits apply to
# the 127.x.y.z source addresses the tests use). Realm "bulk": no rate limit, small send queue.
TIGHT = ("--trusted-nets", "", "--max-conns-per-ip", "4", "--login-attempts-per-ip", "4",
         "--login-window-s", "60", "--cmd-rate", "20", "--cmd-burst", "20",
         "--login-timeout-s", "1.5", "--idle-timeout-s", "3")
BULK = ("--cmd-rate", "0", "--byte-rate", "0", "--max-send-queue", "100", "--max-send-queue-bytes", "65536",
        "--stall-timeout-s", "1.5")
MAIN = ("--login-max-failures", "3", "--login-window-s", "30", "--argon2-time-cost", "1",
        "--argon2-memory-kib", "8192")


@pytest.fixture(scope="module")
def hstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("data"), realms=("tight",), main_extra=MAIN, realm_extra=TIGHT)
    try:
        add_realm(s, "bulk", *BULK)
        add_realm(s, "small", "--max-connections", "3")
        yield s
    finally:
        s.stop()


# ---- timeouts ------------------------------------------------------------------------------

async def test_login_timeout_closes_with_a_reason(hstack: Stack, uname: Names) -> None:
    ip = fresh_source_ip()
    idle = await connect(*hstack.realm("tight"), source_ip=ip)
    t0 = time.monotonic()
    await idle.ok("ping")  # activity does not extend the login deadline
    lines = await read_to_end(idle, timeout=5)
    took = time.monotonic() - t0
    assert lines[-1]["event"] == "closing" and lines[-1]["reason"] == "login_timeout", lines
    assert "not logged in within 1.5 s" in lines[-1]["message"]
    assert 1.2 < took < 3.5, took


async def test_logged_in_connection_outlives_login_timeout_until_idle(hstack: Stack, uname: Names) -> None:
    c = await login_from(*hstack.realm("tight"), uname("idl"), fresh_source_ip())
    await asyncio.sleep(2.0)  # past the login timeout: logged in, so still open
    await c.ok("ping")        # resets the idle timer
    t0 = time.monotonic()
    lines = await read_to_end(c, timeout=6)
    assert lines[-1] == {"event": "closing", "reason": "idle_timeout",
                         "message": "no command for 3 s: closing the connection (send ping to stay)"}
    assert 2.5 < time.monotonic() - t0 < 5


async def test_logout_restarts_the_login_timer(hstack: Stack, uname: Names) -> None:
    c = await login_from(*hstack.realm("tight"), uname("lo"), fresh_source_ip())
    await asyncio.sleep(1.0)
    await c.ok("logout")
    lines = await read_to_end(c, timeout=5)
    assert lines[-1]["reason"] == "login_timeout"


# ---- connections per IP --------------------------------------------------------------------

async def test_connections_per_ip_are_refused_with_an_error_line(hstack: Stack) -> None:
    ip = fresh_source_ip()
    host, port = hstack.realm("tight")
    first = [await connect(host, port, ip) for _ in range(4)]
    extra = await connect(host, port, ip, hello=False)
    lines = await read_to_end(extra, timeout=5)
    assert lines == [{"status": "ERROR", "code": "RESOURCE_EXHAUSTED",
                      "message": "too many connections from your address: at most 4"}]
    other = await connect(host, port, fresh_source_ip())  # another address is not affected
    await other.ok("ping")
    await first[0].close()
    await asyncio.sleep(0.2)
    again = await connect(host, port, ip)  # a slot is free again
    await again.ok("ping")
    await first[1].ok("ping")


async def test_a_full_realm_refuses_with_an_error_line(hstack: Stack) -> None:
    host, port = hstack.realm("small")
    clients = [await connect(host, port) for _ in range(3)]
    extra = await connect(host, port, hello=False)
    assert await read_to_end(extra) == [{"status": "ERROR", "code": "RESOURCE_EXHAUSTED",
                                         "message": "the realm is full: too many connections, try again later"}]
    await wait_until(lambda: "the realm is full: 3 connections" in hstack.realms["small"].log(), 5,
                     "the realm to log that it is full")
    await clients[0].close()
    await asyncio.sleep(0.2)
    await (await connect(host, port)).ok("ping")


async def test_loopback_is_trusted_by_default(hstack: Stack) -> None:
    host, port = hstack.realm("bulk")  # default --trusted-nets, default 32 per IP
    clients = [await connect(host, port) for _ in range(40)]
    await clients[-1].ok("ping")
    for c in clients:
        await c.close()


# ---- flood control -------------------------------------------------------------------------

async def test_a_flood_is_paced_not_refused(hstack: Stack) -> None:
    c = await connect(*hstack.realm("tight"), source_ip=fresh_source_ip())
    t0 = time.monotonic()
    await c.send_raw(b"ping\n" * 40)  # 20 at once (the burst), then 20 per second
    got = [await c.response() for _ in range(40)]
    assert all(r == {"status": "OK", "pong": True} for r in got)
    assert time.monotonic() - t0 > 0.7  # the last 20 waited their turn


async def test_a_paced_sendfile_keeps_its_payload_framing(hstack: Stack, uname: Names) -> None:
    c = await connect(*hstack.realm("tight"), source_ip=fresh_source_ip())
    evil = b"register pwned_by_payload pw-secret\n"
    await c.send_raw(b"ping\n" * 20 + f"sendfile x y.bin {len(evil)}\n".encode() + evil + b"ping\n")
    got = [await c.response() for _ in range(22)]
    assert got[20]["code"] == "UNAUTHENTICATED"  # paced, then run (not logged in): payload dropped
    assert got[21] == {"status": "OK", "pong": True}
    await c.err("auth pwned_by_payload pw-secret", "UNAUTHENTICATED")  # the payload never ran


# ---- login attempts ------------------------------------------------------------------------

async def test_login_attempts_per_ip(hstack: Stack, uname: Names) -> None:
    host, port = hstack.realm("tight")
    ip = fresh_source_ip()
    u = uname("lip")
    await (await connect(host, port, fresh_source_ip())).ok(f"register {u} pw-secret")
    c = await connect(host, port, ip)
    await c.ok(f"register {uname('lip_reg')} pw-secret")  # 1: each register counts
    for _ in range(3):                                    # 2..4: failed logins (to different accounts,
        await c.err(f"auth {uname('nob')} wrong-pw", "UNAUTHENTICATED")  # so main's per-account limit
    r = await c.err(f"auth {u} pw-secret", "RESOURCE_EXHAUSTED")  # stays out of it): the right password,
    # but from this address: refused
    assert re.fullmatch(r"too many attempts, wait \d+ s \(.*your address.*\)", r["message"]), r
    other = await connect(host, port, fresh_source_ip())
    await other.ok(f"auth {u} pw-secret")  # the account itself is fine from elsewhere


async def test_failed_logins_per_account(hstack: Stack, uname: Names) -> None:
    host, port = hstack.realm("bulk")  # loopback trusted: only main's per-account limit applies
    u, ghost = uname("acct"), uname("ghost")
    c = await login(host, port, u)
    await c.ok("logout")
    for _ in range(3):
        await c.err(f"auth {u} wrong-pw", "UNAUTHENTICATED")
    r = await c.err(f"auth {u} pw-secret", "RESOURCE_EXHAUSTED")
    assert re.fullmatch(r"too many attempts, wait \d+ s \(failed logins for this account are limited\)",
                        r["message"]), r
    r2 = await c.err(f"auth {u.upper()} pw-secret", "RESOURCE_EXHAUSTED")  # the key ignores case
    assert r2["message"].split(" (")[1] == r["message"].split(" (")[1]
    # An unknown name is limited the same way: the answers do not reveal which accounts exist.
    for _ in range(3):
        await c.err(f"auth {ghost} wrong-pw", "UNAUTHENTICATED")
    r3 = await c.err(f"auth {ghost} wrong-pw", "RESOURCE_EXHAUSTED")
    assert r3["message"].split(" (")[1] == r["message"].split(" (")[1]
    # Other accounts are not affected.
    await login(host, port, uname("bystander"))


async def test_account_limit_refills_and_success_resets(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path, realms=("alpha",),
                    main_extra=("--login-max-failures", "2", "--login-window-s", "2",
                                "--argon2-time-cost", "1", "--argon2-memory-kib", "8192"))
    try:
        u = uname("refill")
        c = await login(*s.realm("alpha"), u)
        await c.ok("logout")
        await c.err(f"auth {u} bad-pw-1", "UNAUTHENTICATED")
        await c.err(f"auth {u} bad-pw-2", "UNAUTHENTICATED")
        r = await c.err(f"auth {u} pw-secret", "RESOURCE_EXHAUSTED")
        assert "wait 1 s" in r["message"]
        await asyncio.sleep(1.1)  # one attempt per second comes back
        await c.ok(f"auth {u} pw-secret")
        await c.ok("logout")
        # success forgot the failures: two more may fail before the limit
        await c.err(f"auth {u} bad-pw-3", "UNAUTHENTICATED")
        await c.err(f"auth {u} bad-pw-4", "UNAUTHENTICATED")
        await c.err(f"auth {u} pw-secret", "RESOURCE_EXHAUSTED")
    finally:
        s.stop()


# ---- sizes ---------------------------------------------------------------------------------

async def test_message_length_limit(hstack: Stack, uname: Names) -> None:
    a, b = uname("ml_a"), uname("ml_b")
    ca = await login(*hstack.realm("bulk"), a)
    await login(*hstack.realm("bulk"), b)
    await ca.ok(f"sendprivate {b} {'x' * 16384}")  # the default: 16 KiB
    r = await ca.err(f"sendprivate {b} {'x' * 16385}", "RESOURCE_EXHAUSTED")
    assert r["message"] == "message too long: at most 16384 bytes"
    await ca.err(f"sendprivate {b} {'é' * 8193}", "RESOURCE_EXHAUSTED")  # bytes, not characters


# ---- slow readers --------------------------------------------------------------------------

async def test_slow_reader_is_dropped_not_the_server(hstack: Stack, uname: Names) -> None:
    host, port = hstack.realm("bulk")
    a, b = uname("sq_a"), uname("sq_b")
    ca = await login(host, port, a)
    cb = await connect(host, port, rcvbuf=4096)
    await cb.ok(f"register {b} pw-secret")
    await cb.ok(f"auth {b} pw-secret")
    stop_reading(cb)
    # b stops reading. 16 KB events: the 64 KiB byte bound is reached long before the 100-line one,
    # once the kernel's buffers (up to 4 MiB on loopback) and the transport's 256 KiB are full.
    text = "z" * 16000
    n = 450
    await ca.send_raw("".join(f"sendprivate {b} {i} {text}\n" for i in range(n)).encode())
    acks = [await ca.response() for _ in range(n)]
    assert all(r["status"] == "OK" for r in acks)
    realm = hstack.realms["bulk"]
    await wait_until(lambda: "does not read" in realm.log(), 10, "the realm to drop the slow reader")
    assert re.search(r"does not read: \d+ lines, \d+ bytes of events queued", realm.log())
    for _ in range(50):  # its session ends with the connection
        if {"user": b, "realm": "bulk"} not in (await ca.ok("who"))["online"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the slow reader is still online")
    # the realm serves everyone else, and b can come back
    await ca.ok("ping")
    await ca.ok(f"sendprivate {b} after the drop")
    cb2 = await login(host, port, b, register=False)
    # What the slow reader never took comes back (pushed, or paged by inbox), oldest first.
    waiting: list[dict[str, Any]] = []
    while True:
        r = await cb2.ok("inbox")
        waiting += r["messages"]
        if not r["more"]:
            break
    assert waiting[-1]["text"] == "after the drop"


async def test_pipelining_without_reading_is_slowed_not_buffered(hstack: Stack) -> None:
    host, port = hstack.realm("bulk")
    c = await connect(host, port)
    stop_reading(c)
    proc = psutil.Process(hstack.realms["bulk"].pid)
    rss0 = proc.memory_info().rss
    n = 40_000  # ~17 MB of help responses and error lines, far more than the kernel buffers hold
    writer = asyncio.create_task(c.send_raw(b"help\nfrobnicate\n" * (n // 2)))
    await asyncio.sleep(1.0)  # (less than the 1.5 s stall timeout)
    grown = (proc.memory_info().rss - rss0) / 2**20
    assert grown < 16, f"realm grew {grown:.1f} MiB while the client did not read"
    c.writer.transport.resume_reading()
    got = [await c.response() for _ in range(n)]  # then every response arrives, in order
    await writer
    assert all(r["status"] == "OK" and r["commands"] for r in got[0::2])
    assert all(r["code"] == "UNIMPLEMENTED" for r in got[1::2])  # errors are paced the same way
    await c.ok("ping")


async def test_download_to_a_client_that_stops_reading_is_dropped(hstack: Stack, uname: Names) -> None:
    host, port = hstack.realm("bulk")
    a, b = uname("st_a"), uname("st_b")
    ca = await login(host, port, a)
    cb = await connect(host, port, rcvbuf=4096)
    await cb.ok(f"register {b} pw-secret")
    await cb.ok(f"auth {b} pw-secret")
    size = 8 * 2**20
    await ca.send_raw(f"sendfile {b} big.bin {size}\n".encode() + b"\xab" * size)
    fid = (await ca.response(timeout=30))["id"]
    assert (await cb.event())["id"] == fid
    stop_reading(cb)
    await cb.send_raw(f"receivefile {fid}\n".encode())  # and never read the bytes
    realm = hstack.realms["bulk"]
    took = await wait_until(lambda: "has not read for 1.5 s" in realm.log(), 10, "the stall timeout")
    assert took < 6
    await ca.ok("ping")
    await wait_until(lambda: "write stalled" in realm.log(), 5, "the close to be logged")


async def test_stalled_upload_is_closed_and_leaves_nothing(hstack: Stack, uname: Names) -> None:
    host, port = hstack.realm("bulk")
    a, b = uname("su_a"), uname("su_b")
    ca = await login(host, port, a)
    cb = await login(host, port, b)
    await ca.send_raw(f"sendfile {b} slow.bin 100000\n".encode() + b"0123456789")
    t0 = time.monotonic()
    lines = await read_to_end(ca, timeout=6)
    assert time.monotonic() - t0 < 4  # dropped: the framing cannot be resumed; the last line says why
    assert lines == [{"event": "closing", "reason": "stall_timeout",
                      "message": "the file payload stalled: no data for 1.5 s; closing the connection"}]
    await wait_until(lambda: not tmp_files(hstack.data_dir), 5, "the temp file to go")
    assert (await cb.ok("receivefile"))["files"] == []
    await cb.no_event()
