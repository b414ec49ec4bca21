"""Abuse of main's expensive and shared paths, against real processes: password guesses counted
before the hash (one in flight per account and per address, on gRPC and through a realm), a
registration flood that must not stall logins, a flood of random tokens that must not delay
anyone's writes, and session lifetime on cached sessions."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import bearer

from .hardutil import Grpc, add_realm, connect, fresh_source_ip
from .stack import Stack, start_stack
from .textclient import login

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


def code_of(result: object) -> str:
    if isinstance(result, grpc.aio.AioRpcError):
        return result.code().name
    assert not isinstance(result, BaseException), result
    return "OK"


@pytest.fixture(scope="module")
def astack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Main with the default login limits (10 per account per 300 s, 20 per peer per 60 s);
    # realm "open" counts loopback per IP like any address (default 20 per IP per 60 s).
    s = start_stack(tmp_path_factory.mktemp("data"), realms=("alpha",), main_extra=CHEAP)
    try:
        add_realm(s, "open", "--trusted-nets", "")
        yield s
    finally:
        s.stop()


async def test_simultaneous_guesses_over_grpc_are_counted_before_the_hash(astack: Stack, uname: Names) -> None:
    victim = uname("victim")
    c = await login(*astack.realm("alpha"), victim)  # registered through the realm (no peer limit)
    g = Grpc(astack.main.addr)
    try:
        results = await asyncio.gather(*(g.stub.Auth(pb.AuthRequest(user=victim, password=f"guess-{i}"), timeout=30)
                                         for i in range(200)), return_exceptions=True)
        codes = Counter(code_of(r) for r in results)
        # Evaluated = a hash ran and said no. The account allows 10 per 300 s, the peer 20 per 60 s.
        assert codes["UNAUTHENTICATED"] <= 10, codes
        assert codes["RESOURCE_EXHAUSTED"] >= 190 and set(codes) <= {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}, codes
    finally:
        await g.close()
    await c.ok("ping")


async def test_simultaneous_wrong_logins_through_a_realm_respect_ip_and_account_limits(
        astack: Stack, uname: Names) -> None:
    host, port = astack.realm("open")
    victim = uname("rvictim")
    await login(*astack.realm("alpha"), victim)
    ip = fresh_source_ip()
    clients = [await connect(host, port, ip) for _ in range(30)]
    for i, c in enumerate(clients):
        await c.send_raw(f"auth {victim} wrong-{i}\n".encode())
    codes = Counter(r["status"] if r["status"] == "OK" else r["code"]
                    for r in await asyncio.gather(*(c.response(timeout=60) for c in clients)))
    assert codes["UNAUTHENTICATED"] <= 10, codes  # main's per-account limit
    assert codes["RESOURCE_EXHAUSTED"] >= 20 and set(codes) <= {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}, codes
    # Thirty accounts from one address: the per-IP limit (20) holds.
    ip2 = fresh_source_ip()
    clients2 = [await connect(host, port, ip2) for _ in range(30)]
    for c in clients2:
        await c.send_raw(f"auth {uname('nobody')} wrong-pw\n".encode())
    codes2 = Counter(r["code"] for r in await asyncio.gather(*(c.response(timeout=60) for c in clients2)))
    assert codes2["UNAUTHENTICATED"] <= 20 and codes2["RESOURCE_EXHAUSTED"] >= 10, codes2
    for c in clients + clients2:
        await c.close()


async def test_registration_flood_over_grpc_does_not_stall_logins(tmp_path: Path, uname: Names) -> None:
    # Default password hashing (argon2id, 64 MiB, 3 passes): each registration costs real time.
    s = start_stack(tmp_path, realms=("alpha",))
    g = Grpc(s.main.addr)
    try:
        u = uname("normal")
        c = await login(*s.realm("alpha"), u)
        await c.ok("logout")
        flood = [asyncio.ensure_future(g.stub.Register(pb.RegisterRequest(user=uname("spam"), password="flood-pw-1"),
                                                       timeout=120)) for _ in range(300)]
        await asyncio.sleep(0.2)  # the flood is queued in main
        t0 = time.monotonic()
        r = await c.cmd(f"auth {u} pw-secret", timeout=60)
        took = time.monotonic() - t0
        codes = Counter(code_of(x) for x in await asyncio.gather(*flood, return_exceptions=True))
        assert r["status"] == "OK", (r, codes)
        assert codes["RESOURCE_EXHAUSTED"] >= 250, codes  # the peer's registrations were limited, fast
        print(f"login during a 300-registration flood took {took:.2f} s; flood answers {dict(codes)}")
    finally:
        await g.close()
        s.stop()


async def test_a_token_flood_does_not_delay_writes(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path, realms=("alpha",), main_extra=CHEAP)
    g = Grpc(s.main.addr)
    try:
        a, b = uname("tf_a"), uname("tf_b")
        ca = await login(*s.realm("alpha"), a)
        await login(*s.realm("alpha"), b)

        async def latency(n: int) -> list[float]:
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                await ca.ok(f"sendprivate {b} m{i}")
                out.append(time.perf_counter() - t0)
            return out

        base = sorted(await latency(30))
        stop = asyncio.Event()
        codes: Counter[str] = Counter()

        async def flood() -> None:
            while not stop.is_set():
                batch = [g.stub.SendPrivate(pb.SendPrivateRequest(to=b, text="x"),
                                            metadata=bearer(secrets.token_urlsafe(32)), timeout=10)
                         for _ in range(100)]
                codes.update(code_of(r) for r in await asyncio.gather(*batch, return_exceptions=True))

        floods = [asyncio.create_task(flood()) for _ in range(4)]
        await asyncio.sleep(0.5)
        during = sorted(await latency(60))
        stop.set()
        await asyncio.gather(*floods)
        print(f"sendprivate median {base[15] * 1000:.1f} ms before, {during[30] * 1000:.1f} ms during a flood of "
              f"{sum(codes.values())} random tokens (max {during[-1] * 1000:.1f} ms); answers {dict(codes)}")
        # Behaviour: unknown tokens are refused, and past the per-peer limit refused without a lookup.
        assert set(codes) == {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}, codes
        assert codes["UNAUTHENTICATED"] <= 200, codes  # 100 per 10 s per peer
        assert during[-1] < 2.0, during[-5:]  # generous: nobody's write waited behind the flood
    finally:
        await g.close()
        s.stop()


async def test_session_ttl_holds_for_cached_sessions(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path, realms=(), main_extra=(*CHEAP, "--session-ttl-s", "2"))
    g = Grpc(s.main.addr)
    try:
        token = await g.login(uname("ttl"))
        t0 = time.monotonic()
        await g.stub.Who(pb.WhoRequest(), metadata=bearer(token), timeout=5)  # now cached in main
        await g.until_refused(token, 10, "the cached session outlived --session-ttl-s")
        assert time.monotonic() - t0 > 1.0
    finally:
        await g.close()
        s.stop()


async def test_group_keys_tried_are_limited_per_account_and_per_group(tmp_path: Path, uname: Names) -> None:
    """Each key tried costs main an argon2 hash: an account gets a few tries per window, a group
    five times as many from everyone together, counted before the hash even when the tries come
    at once from several sessions of the account."""
    s = start_stack(tmp_path, realms=("alpha",), main_extra=(*CHEAP, "--group-key-attempts", "3"))
    try:
        host, port = s.realm("alpha")
        g, other = uname("gkg"), uname("gkh")
        co = await login(host, port, uname("gko"))
        for group, key in ((g, "right-key"), (other, "other-key")):
            await co.ok(f"creategroup {group} private")
            await co.ok(f"groupkey {group} {key}")
        guesser = uname("gkx")
        sessions = [await login(host, port, guesser, register=i == 0) for i in range(4)]
        for i, c in enumerate(sessions):
            for j in range(3):
                await c.send_raw(f"joingroup {g} wrong-{i}-{j}\n".encode())
        results = [await c.response(timeout=60) for c in sessions for _ in range(3)]
        codes = Counter(r["code"] for r in results)
        assert codes == {"PERMISSION_DENIED": 3, "RESOURCE_EXHAUSTED": 9}, codes
        # Out of tries: the right key is refused too, and so is any other group's.
        await sessions[0].err(f"joingroup {g} right-key", "RESOURCE_EXHAUSTED")
        await sessions[0].err(f"joingroup {other} other-key", "RESOURCE_EXHAUSTED")
        # Another account is not held back by this one, and a right key gives the group's try back.
        cj = await login(host, port, uname("gkj"))
        assert (await cj.ok(f"joingroup {g} right-key"))["group"] == g
        # Four more accounts bring the group to its limit (15): now it takes no key for a while.
        for n in range(4):
            c = await login(host, port, uname(f"gkm{n}"))
            for j in range(3):
                await c.err(f"joingroup {g} no-{n}-{j}", "PERMISSION_DENIED")
        late = await login(host, port, uname("gkl"))
        r = await late.err(f"joingroup {g} right-key", "RESOURCE_EXHAUSTED")
        assert "this group" in r["message"], r
        assert (await late.ok(f"joingroup {other} other-key"))["group"] == other
    finally:
        s.stop()
