"""Micro-measurement of main's event-loop thread: the CPU it spends per relayed SendPrivate or
SendGroup and its deliveries, in process, without gRPC's transport (the loop thread's CPU time
minus what the fake realms' own code sections take). The servicer's Relay and Link
are driven directly (a fake context carrying the realm credential); storage is the real SQLite
engine behind the disk guard (its writer thread is timed apart); the fake realms acknowledge
every event they get like realm_server does (written pairs, or written_all for a fan-out),
relayed as AckEvents calls on the same stream.

    python -m bench.micro_main [--workload private|group|both] [--messages N] [--depth K] [--trace-messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from realmchat import realmauth
from realmchat.pb import chat_pb2 as pb

SECRET = "micro-bench-realm-secret-0123456789"


class FakeContext:
    def __init__(self) -> None:
        self.md = realmauth.metadata(SECRET)

    def invocation_metadata(self) -> Any:
        return self.md

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


REALM_CPU = [0.0]  # loop-thread CPU the fake realms spend themselves (not main's)


def thread_cpu(ident: int | None) -> float:
    if ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


class FakeRealm:
    """One realm: a Relay stream (calls out, replies in) and a Link (events in, acks out)."""

    def __init__(self, servicer: Any, name: str) -> None:
        self.servicer = servicer
        self.name = name
        self.outbox: asyncio.Queue[pb.RelayCall | None] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[pb.RelayResult]] = {}
        self.ids = itertools.count(1)
        self.link_id = ""
        self.linked = asyncio.Event()
        self.events = 0
        self.deliveries = 0
        self.tasks: list[asyncio.Task[Any]] = []

    async def _requests(self) -> AsyncIterator[pb.RelayRequests]:
        while (first := await self.outbox.get()) is not None:
            t0 = time.thread_time()
            batch = [first]
            while not self.outbox.empty() and len(batch) < 4096:
                item = self.outbox.get_nowait()
                if item is None:
                    break
                batch.append(item)
            req = pb.RelayRequests(calls=batch)
            REALM_CPU[0] += time.thread_time() - t0
            yield req

    async def _relay(self) -> None:
        async for replies in self.servicer.Relay(self._requests(), FakeContext()):
            t0 = time.thread_time()
            for r in replies.results:
                fut = self.pending.pop(r.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(r)
            REALM_CPU[0] += time.thread_time() - t0

    async def _link(self) -> None:
        async for batch in self.servicer.Link(pb.LinkRequest(realm=self.name), FakeContext()):
            t0 = time.thread_time()
            ack = pb.AckEventsRequest(link_id=self.link_id)
            for ev in batch.events:
                if ev.HasField("linked"):
                    self.link_id = ev.linked.link_id
                    self.linked.set()
                    continue
                self.events += 1
                self.deliveries += len(ev.session_ids)
                if len(ev.session_ids) > 1:
                    ack.written_all.append(ev.seq)
                else:
                    for sid in ev.session_ids:
                        ack.written.add(seq=ev.seq, session_id=sid)
            if ack.written or ack.written_all:
                ack.link_id = self.link_id
                self.call_nowait("AckEvents", ack, "")
            REALM_CPU[0] += time.thread_time() - t0

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._relay()), asyncio.create_task(self._link())]

    def call_nowait(self, method: str, request: Any, token: str) -> asyncio.Future[pb.RelayResult]:
        t0 = time.thread_time()
        call_id = next(self.ids)
        fut: asyncio.Future[pb.RelayResult] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = fut
        self.outbox.put_nowait(pb.RelayCall(id=call_id, method=method, token=token, timeout_ms=10_000,
                                            payload=request.SerializeToString()))
        REALM_CPU[0] += time.thread_time() - t0
        return fut

    async def stop(self) -> None:
        self.outbox.put_nowait(None)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def build(tmp: Path, trace_messages: int) -> tuple[Any, Any, Any]:
    os.environ[realmauth.ENV_SECRET] = SECRET
    from main_server.blobs import BlobStore
    from main_server.config import MainConfig
    from main_server.diskguard import guard
    from main_server.hub import Hub
    from main_server.passwords import PasswordHasher
    from main_server.service import ChatService
    from main_server.servicer import ChatServicer
    from main_server.storage import open_storage

    config = MainConfig(data_dir=tmp, sqlite_synchronous="OFF", argon2_time_cost=1, argon2_memory_kib=8,
                        min_free_bytes=0, trace_messages=trace_messages)
    storage = open_storage("", tmp, "OFF")
    await storage.open()
    (tmp / "files").mkdir()
    gs, blobs = guard(storage, BlobStore(tmp / "files"), tmp, 0)
    hub = Hub(config.channel_max_queue)
    service = ChatService(config, gs, hub, PasswordHasher(1, 8), blobs)
    return storage, service, ChatServicer(service, SECRET)


async def login(service: Any, storage: Any, name: str, link_id: str) -> str:
    import secrets

    from main_server.domain.accounts import token_hash
    from main_server.storage.base import User

    user = await storage.create_user(name.lower(), name, "x")
    token = secrets.token_urlsafe(32)
    session = await storage.create_session(token_hash(token), User(user.key, user.name, ""), "r")
    service.hub.attach(service.hub.channels[link_id], session.id, session.user_key, session.user_name)
    return token


async def run(kind: str, messages: int, depth: int, users: int, groups: int, group_size: int,
              trace_messages: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        storage, service, servicer = await build(tmp, trace_messages)
        realms = [FakeRealm(servicer, "alpha"), FakeRealm(servicer, "beta")]
        for r in realms:
            r.start()
        for r in realms:
            await r.linked.wait()
        # (token of the sender, request, realm it sends through)
        work: list[tuple[str, str, Any, FakeRealm]] = []
        if kind == "private":
            names = [f"u{i}" for i in range(users)]
            tokens = [await login(service, storage, n, realms[i % 2].link_id) for i, n in enumerate(names)]
            for i in range(users):  # alpha users write to beta users and back
                peer = names[(i + 1) % users]
                work.append((tokens[i], "SendPrivate", pb.SendPrivateRequest(to=peer, text=f"hello {peer} t=1"),
                             realms[i % 2]))
        else:
            for g in range(groups):
                toks = []
                for m in range(group_size):
                    name = f"g{g}m{m}"
                    toks.append(await login(service, storage, name, realms[m % 2].link_id))
                    caller = await service.accounts.caller(toks[-1])
                    if m == 0:
                        await service.groups.create_group(caller, f"grp{g}")
                    else:
                        await service.groups.join_group(caller, f"grp{g}")
                work.append((toks[0], "SendGroup", pb.SendGroupRequest(group=f"grp{g}", text="t=1 w=0"),
                             realms[0]))
                work.append((toks[1], "SendGroup", pb.SendGroupRequest(group=f"grp{g}", text="t=1 w=1"),
                             realms[1]))
        await asyncio.sleep(0.2)

        done = 0
        failed = 0
        loop_ident = threading.get_ident()
        writer = next((t for t in threading.enumerate() if "sqlite" in t.name), None)

        async def sender(slot: int) -> None:
            nonlocal done, failed
            i = slot
            while done < messages:
                token, method, req, realm = work[i % len(work)]
                i += depth
                r = await realm.call_nowait(method, req, token)
                if r.code:
                    failed += 1
                done += 1

        # warm-up
        target, messages = messages, messages // 10
        await asyncio.gather(*(sender(s) for s in range(depth)))
        messages, done = target, 0
        ev0 = sum(r.deliveries for r in realms)
        REALM_CPU[0] = 0.0
        t_loop, t_writer, t_wall = thread_cpu(loop_ident), thread_cpu(writer and writer.ident), time.perf_counter()
        await asyncio.gather(*(sender(s) for s in range(depth)))
        # until every event went out and was acked (delivery's backlog empties)
        while any(service.delivery.backlog(r.link_id) for r in realms):  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        realm_s = REALM_CPU[0]
        loop_s = thread_cpu(loop_ident) - t_loop - realm_s
        writer_s = thread_cpu(writer and writer.ident) - t_writer
        wall = time.perf_counter() - t_wall
        deliveries = sum(r.deliveries for r in realms) - ev0
        for r in realms:
            await r.stop()
        await storage.close()
        return {"sends": done, "failed": failed, "deliveries": deliveries,
                "loop_us_per_send": loop_s / done * 1e6, "loop_us_per_delivery": loop_s / max(deliveries, 1) * 1e6,
                "writer_us_per_send": writer_s / done * 1e6,
                "realm_us_per_send": realm_s / done * 1e6, "sends_per_s": done / wall}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.micro_main", description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("private", "group", "both"), default="both")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--depth", type=int, default=400, help="calls in flight")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--group-size", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--trace-messages", type=int, default=5_000, help="main's --trace-messages (0: no hop log)")
    a = p.parse_args(argv)
    kinds = ("private", "group") if a.workload == "both" else (a.workload,)
    for kind in kinds:
        rows = []
        for _ in range(a.repeat):
            n = a.messages if kind == "private" else a.messages // 10
            coro = run(kind, n, a.depth if kind == "private" else min(a.depth, 2 * a.groups), a.users,
                       a.groups, a.group_size, a.trace_messages)
            if a.no_uvloop:
                rows.append(asyncio.run(coro))
            else:
                import uvloop

                rows.append(uvloop.run(coro))
        best = min(rows, key=lambda r: r["loop_us_per_send"])
        med = statistics.median(r["loop_us_per_send"] for r in rows)
        print(f"{kind:8s} sends {best['sends']} failed {best['failed']} deliveries {best['deliveries']}: "
              f"loop {best['loop_us_per_send']:.1f} us/send (median {med:.1f}), "
              f"{best['loop_us_per_delivery']:.2f} us/delivery; "
              f"writer {min(r['writer_us_per_send'] for r in rows):.1f} us/send (best run); "
              f"{best['sends_per_s']:,.0f} sends/s (fake realms' own {best['realm_us_per_send']:.1f} us/send, "
              f"not counted)")


if __name__ == "__main__":
    main()
