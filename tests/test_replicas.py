"""Two main replicas on one PostgreSQL database: realm alpha on main 1 (with main 2 as its
failover), realm beta on main 2. Messages, groups and files cross replicas; kill -9 of main 1
while traffic flows: alpha fails over and every acknowledged message arrives exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .pg import PgCluster
from .stack import ServerProcess, start_main, start_realm
from .textclient import login

Names = Callable[[str], str]


@dataclass
class Replicas:
    main1: ServerProcess
    main2: ServerProcess
    alpha: ServerProcess
    beta: ServerProcess

    def stop(self) -> None:
        for p in (self.alpha, self.beta, self.main1, self.main2):
            if p.proc.poll() is None:
                p.kill()


@pytest.fixture
def replicas(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Replicas]:
    url = pg_cluster.create_database()
    files = tmp_path / "shared-files"  # a shared mount in a real deployment
    extra = ("--db", url, "--files-dir", str(files))
    main1 = start_main(tmp_path / "m1", 0, *extra)
    main2 = start_main(tmp_path / "m2", 0, *extra)
    alpha = start_realm("alpha", f"{main1.addr},{main2.addr}")
    beta = start_realm("beta", main2.addr)
    r = Replicas(main1, main2, alpha, beta)
    yield r
    r.stop()
    for p in (main1, main2, alpha, beta):  # shown by pytest when a test failed
        print(f"--- {p.name}\n{p.log()[-4000:]}")


async def eventually(check: Callable[[], Any], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_messages_groups_files_cross_replicas(replicas: Replicas, uname: Names) -> None:
    a, b = uname("ra"), uname("rb")
    ca = await login(replicas.alpha.host, replicas.alpha.port, a)
    cb = await login(replicas.beta.host, replicas.beta.port, b)

    async def both_online() -> bool:
        online = (await ca.ok("who"))["online"]
        return ({"user": a, "realm": "alpha", "status": "online", "message": ""} in online
                and {"user": b, "realm": "beta", "status": "online", "message": ""} in online)

    await eventually(both_online)  # presence crosses replicas
    r = await ca.ok(f"sendprivate {b} across replicas")
    assert (await cb.event())["id"] == r["id"]
    await cb.ok(f"sendprivate {a} and back")
    assert (await ca.event())["text"] == "and back"

    g = uname("rg")
    await ca.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    # A room event crosses replicas like a message does.
    assert await ca.event() == {"event": "member", "group": g, "user": b, "action": "join", "by": b}
    r = await cb.ok(f"sendgroup {g} group hello")
    ev = await ca.event()
    assert (ev["event"], ev["id"], ev["group"]) == ("group", r["id"], g)
    # A user the text names gets the message flagged, whichever replica stored it.
    r = await ca.ok(f"sendgroup {g} over to you @{b}")
    ev = await cb.event()
    assert (ev["id"], ev.get("mention")) == (r["id"], True)
    r = await ca.ok(f"sendprivate {b} @{b} this one too")
    ev = await cb.event()
    assert (ev["id"], ev.get("mention")) == (r["id"], True)

    data = bytes(range(256)) * 1000 + b"\n\x00tail"
    await ca.send_raw(f"sendfile {b} x.bin {len(data)}\n".encode() + data)
    f = await ca.response()
    assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert (await cb.event())["id"] == f["id"]
    head = await cb.ok(f"receivefile {f['id']}")  # stored via main 1, read via main 2
    assert await cb.read_exactly(head["size"]) == data
    assert (await cb.ok("inbox"))["messages"] == [] and (await ca.ok("inbox"))["messages"] == []


async def test_failover_loses_and_duplicates_nothing(replicas: Replicas, uname: Names) -> None:
    a, b = uname("fa"), uname("fb")
    ca = await login(replicas.alpha.host, replicas.alpha.port, a)
    cb = await login(replicas.beta.host, replicas.beta.port, b)
    acked: set[int] = set()
    received: list[int] = []

    async def receive() -> None:
        while True:
            ev = await cb.event(timeout=60)
            if ev.get("event") == "private":
                received.append(ev["id"])

    receiver = asyncio.create_task(receive())
    unavailable = 0
    try:
        for i in range(300):
            if i == 100:
                replicas.main1.kill()  # alpha's main dies mid-traffic
            r = await ca.cmd(f"sendprivate {b} n{i}")
            if r["status"] == "OK":
                acked.add(r["id"])
            else:
                assert r["code"] == "UNAVAILABLE", r
                unavailable += 1
                await asyncio.sleep(0.05)
        print(f"acked {len(acked)}, unavailable {unavailable}")
        assert len(acked) > 250, (len(acked), unavailable)  # alpha failed over without a new login

        async def all_arrived() -> bool:
            return acked <= set(received)

        await eventually(all_arrived, 20)
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    inbox = (await cb.ok("inbox"))["messages"]
    got = received + [m["id"] for m in inbox]
    assert len(got) == len(set(got)), "a message arrived twice"
    assert acked <= set(got)
    assert {"user": a, "realm": "alpha", "status": "online", "message": ""} in (await cb.ok("who"))["online"]


async def test_conversation_state_crosses_replicas(replicas: Replicas, uname: Names) -> None:
    """alpha is on main 1, beta on main 2: carbons, read markers, seen receipts, presence (with
    the away message in `who`) and typing reach sessions attached to the other replica."""
    from .test_conversations import expect

    a, b, g = uname("xa"), uname("xb"), uname("xg")
    a1 = await login(replicas.alpha.host, replicas.alpha.port, a)
    a2 = await login(replicas.beta.host, replicas.beta.port, a, register=False)
    cb = await login(replicas.beta.host, replicas.beta.port, b)
    cb.ignore = frozenset()
    await a1.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    r = await a1.ok(f"sendprivate {b} hi")
    assert (await expect(a2, "private", id=r["id"]))["from"] == a  # carbon on the other replica
    m = await cb.ok(f"sendprivate {a} back")
    await expect(a1, "private", id=m["id"])
    await a1.ok(f"read {b} {m['id']}")
    assert await expect(a2, "read") == {"event": "read", "peer": b, "id": m["id"]}
    assert await expect(cb, "seen") == {"event": "seen", "by": a, "id": m["id"]}
    await a1.ok("away gone fishing")
    ev = await expect(cb, "presence", user=a, status="away")
    assert ev["message"] == "gone fishing"

    async def away_in_who() -> bool:
        who = (await cb.ok("who"))["online"]
        return {"user": a, "realm": "alpha", "status": "away", "message": "gone fishing"} in who

    await eventually(away_in_who)
    await a1.ok(f"typing {g}")
    assert (await expect(cb, "typing", peer=g))["user"] == a
    await a1.ok("logout")
    await a2.ok("logout")
    await expect(cb, "presence", user=a, status="offline")
    for c in (a1, a2, cb):
        await c.close()


async def test_last_sessions_ending_at_once_on_two_replicas_tell_offline_once(
        replicas: Replicas, uname: Names) -> None:
    """A user's last two sessions, one on each replica, end at the same moment: each replica
    still sees the other's session when its own ends. Exactly one of them tells that the user
    went offline (never none, which would leave them online for good; never both)."""
    from .test_conversations import expect, none_of

    a, b = uname("la"), uname("lb")
    cb = await login(replicas.beta.host, replicas.beta.port, b)
    cb.ignore = frozenset()
    a0 = await login(replicas.alpha.host, replicas.alpha.port, a)
    await a0.ok(f"sendprivate {b} hello")  # now they share a conversation: b hears of a
    await a0.close()
    for _ in range(3):
        a1 = await login(replicas.alpha.host, replicas.alpha.port, a, register=False)
        a2 = await login(replicas.beta.host, replicas.beta.port, a, register=False)
        await expect(cb, "presence", user=a, status="online")
        await asyncio.sleep(1.2)  # past the coalescing interval: the next change is told at once
        await asyncio.gather(a1.ok("logout"), a2.ok("logout"))
        await expect(cb, "presence", user=a, status="offline")
        await none_of(cb, "presence", 2.5, user=a, status="offline")
        await a1.close()
        await a2.close()
