"""Flood control paces instead of cutting, against real processes: a pipelined script over the
rate runs completely, in order, at the allowed rate, while other users see no difference; the
rate is per account and counts bytes too; only a backlog past the byte limit is cut. And the
connection cap fits the descriptor limit: a full realm answers with an ERROR line."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import pytest

from .hardutil import add_realm, connect, fresh_source_ip, read_to_end
from .stack import PYTHON, ServerProcess, Stack, start_stack
from .textclient import TextClient, login

Names = Callable[[str], str]
RATE = 200


@pytest.fixture(scope="module")
def pstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("data"), realms=("paced",),
                    main_extra=("--argon2-time-cost", "1", "--argon2-memory-kib", "8192"),
                    realm_extra=("--cmd-rate", str(RATE), "--cmd-burst", "1"))
    try:
        add_realm(s, "bytes", "--cmd-rate", "0", "--max-line", "4096", "--byte-rate", "20000", "--byte-burst", "4096")
        add_realm(s, "cut", "--cmd-rate", "10", "--cmd-burst", "1", "--max-unread-bytes", "65536",
                  "--trusted-nets", "")
        yield s
    finally:
        s.stop()


async def test_pipelined_pings_are_all_answered_in_order_at_the_rate(pstack: Stack, uname: Names) -> None:
    host, port = pstack.realm("paced")
    flooder = await login(host, port, uname("fl"))
    other = await login(host, port, uname("ot"))
    n = 1000
    t0 = time.monotonic()
    await flooder.send_raw(b"ping\n" * n)  # one write, like nc
    answers: list[dict[str, object]] = []
    done_at = 0.0

    async def read_all() -> None:
        nonlocal done_at
        for _ in range(n):
            answers.append(await flooder.response(timeout=60))
        done_at = time.monotonic()

    reading = asyncio.create_task(read_all())
    # Meanwhile another user's commands are answered as usual, long before the flood is through.
    lat = []
    for _ in range(20):
        t = time.monotonic()
        await other.ok("ping")
        lat.append(time.monotonic() - t)
        await asyncio.sleep(0.05)
    other_done = time.monotonic()
    await reading
    took = done_at - t0
    print(f"{n} pipelined pings at {RATE}/s took {took:.2f} s; the other user's ping latency max "
          f"{max(lat) * 1000:.1f} ms, median {sorted(lat)[10] * 1000:.1f} ms")
    assert answers == [{"status": "OK", "pong": True}] * n  # every one, none refused
    assert other_done < done_at
    assert n / RATE * 0.7 < took < n / RATE * 3  # about n / rate seconds


async def test_the_rate_is_per_account_across_connections(pstack: Stack, uname: Names) -> None:
    host, port = pstack.realm("paced")
    u = uname("acc")
    c1 = await login(host, port, u)
    c2 = await login(host, port, u, register=False)
    n = 200
    t0 = time.monotonic()
    await asyncio.gather(c1.send_raw(b"ping\n" * n), c2.send_raw(b"ping\n" * n))
    async def answers(c: TextClient) -> list[dict[str, object]]:
        return [await c.response(timeout=30) for _ in range(n)]

    r1, r2 = await asyncio.gather(answers(c1), answers(c2))
    took = time.monotonic() - t0
    assert all(r["status"] == "OK" for r in [*r1, *r2])
    assert took > 2 * n / RATE * 0.7, took  # both connections drew on one account's rate


async def test_the_rate_counts_bytes(pstack: Stack, uname: Names) -> None:
    host, port = pstack.realm("bytes")
    a, b = uname("by_a"), uname("by_b")
    ca = await login(host, port, a)
    await login(host, port, b)
    n, text = 50, "y" * 1990  # ~100 KB at 20000 bytes/s: ~5 s
    t0 = time.monotonic()
    await ca.send_raw("".join(f"sendprivate {b} {text}\n" for _ in range(n)).encode())
    got = [await ca.response(timeout=30) for _ in range(n)]
    took = time.monotonic() - t0
    assert all(r["status"] == "OK" for r in got)
    assert took > 0.7 * (n * 2020 - 4096) / 20000, took


async def test_only_a_backlog_past_the_limit_is_cut(pstack: Stack) -> None:
    c = await connect(*pstack.realm("cut"), source_ip=fresh_source_ip())
    sending = asyncio.create_task(c.send_raw(b"ping\n" * 400_000))  # 2 MB at 10 commands/s
    lines = await read_to_end(c, timeout=20)
    sending.cancel()
    assert lines[-1]["event"] == "closing" and lines[-1]["reason"] == "flood", lines[-2:]
    assert "65536 bytes" in lines[-1]["message"]
    assert all(r == {"status": "OK", "pong": True} for r in lines[:-1])  # nothing refused before
    assert len(lines) < 100
    await (await connect(*pstack.realm("cut"), source_ip=fresh_source_ip())).ok("ping")


async def test_a_realm_at_its_descriptor_limit_says_it_is_full(pstack: Stack) -> None:
    # 100 descriptors: the cap becomes 100 - 64 headroom = 36 connections, below EMFILE.
    realm = ServerProcess("realm-fd", ["prlimit", "--nofile=100:100", PYTHON, "-m", "realm_server", "--host",
                                       "127.0.0.1", "--port", "0", "--main", pstack.main.addr, "--name", "fd"])
    pstack.realms["fd"] = realm
    clients: list[TextClient] = []
    for _ in range(60):
        c = await connect(realm.host, realm.port, hello=False)
        line = json.loads(await asyncio.wait_for(c.reader.readline(), 10))
        if line.get("status") == "ERROR":
            assert line == {"status": "ERROR", "code": "RESOURCE_EXHAUSTED",
                            "message": "the realm is full: too many connections, try again later"}
            break
        clients.append(c)
    else:
        raise AssertionError("60 connections accepted under a 100-descriptor limit")
    assert len(clients) == 36
    # The realm logs it as it refuses; its output reaches us through a pipe a moment later.
    deadline = time.monotonic() + 10
    while "the realm is full: 36 connections" not in realm.log():
        assert time.monotonic() < deadline, realm.log()
        await asyncio.sleep(0.05)
    await clients[0].ok("ping")  # the ones inside are served
