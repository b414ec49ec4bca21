"""Every abuse that docs/SECURITY.md answers, run together against a running install, while a
normal user keeps chatting: the user's sendprivate latency (p50/p99/max) is measured and every
acknowledged message must reach its recipient exactly once.

    python -m bench.attack_mix --main 127.0.0.1:8080 --realm 127.0.0.1:8000 --duration 60

The attackers run in a child process (so their own CPU does not count against the user's
latency as measured here): password guesses and registrations over gRPC, random tokens over
gRPC, wrong logins through the realm, a pipelined command flood (paced by the realm), stalled
uploads. Exit status 1 if anything was lost or p99 passed --p99-ms."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import bearer

PW = "mix-secret-1"
ROOT = Path(__file__).resolve().parent.parent


class Line:
    """A minimal text-protocol connection: responses in order, events aside."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, addr: str) -> Line:
        host, port = addr.rsplit(":", 1)
        r, w = await asyncio.open_connection(host, int(port), limit=1 << 24)
        c = cls(r, w)
        await c.reader.readline()  # hello
        return c

    async def cmd(self, line: str) -> dict[str, Any]:
        self.writer.write(line.encode() + b"\n")
        return await self.response()

    async def response(self) -> dict[str, Any]:
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise ConnectionError("closed")
            obj = json.loads(raw)
            if "event" in obj:
                self.events.append(obj)
                continue
            return obj  # type: ignore[no-any-return]

    async def read_events(self, until: float) -> None:
        while time.monotonic() < until:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), max(until - time.monotonic(), 0.01))
            except TimeoutError:
                return
            if not raw:
                return
            obj = json.loads(raw)
            if "event" in obj:
                self.events.append(obj)


async def account(addr: str, user: str) -> Line:
    c = await Line.open(addr)
    r = await c.cmd(f"register {user} {PW}")
    assert r["status"] == "OK" or r.get("code") == "ALREADY_EXISTS", r
    r = await c.cmd(f"auth {user} {PW}")
    assert r["status"] == "OK", r
    return c


# ---- the attackers (child process) -------------------------------------------------------

async def attack(main: str, realm: str, duration: float, tag: str) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(main)
    stub = pb_grpc.ChatStub(channel)
    end = time.monotonic() + duration
    tally: Counter[str] = Counter()
    victim = f"victim_{tag}"
    await account(realm, victim)
    flooder = await account(realm, f"flooder_{tag}")
    # Before the guesses start: this address is about to run out of login attempts.
    upload_token = (await stub.Auth(pb.AuthRequest(user=f"flooder_{tag}", password=PW), timeout=30)).token

    async def grpc_loop(kind: str, make: Any, width: int) -> None:
        while time.monotonic() < end:
            calls = [make(i) for i in range(width)]
            for r in await asyncio.gather(*calls, return_exceptions=True):
                code = r.code().name if isinstance(r, grpc.aio.AioRpcError) else type(r).__name__
                tally[f"{kind}:{code}"] += 1

    def guess(i: int) -> Any:
        return stub.Auth(pb.AuthRequest(user=victim, password=secrets.token_hex(6)), timeout=30)

    def register(i: int) -> Any:
        return stub.Register(pb.RegisterRequest(user=f"spam{secrets.token_hex(5)}", password="spam-pw-123"),
                             timeout=30)

    def token(i: int) -> Any:
        return stub.SendPrivate(pb.SendPrivateRequest(to=victim, text="x"),
                                metadata=bearer(secrets.token_urlsafe(32)), timeout=30)

    async def realm_logins() -> None:
        c = await Line.open(realm)
        while time.monotonic() < end:
            r = await c.cmd(f"auth {victim} {secrets.token_hex(6)}")
            tally[f"realm-auth:{r.get('code', 'OK')}"] += 1

    async def pipelined_flood() -> None:
        # Like `yes ping | nc`: writes as fast as TCP lets it, reads every answer.
        c = flooder

        async def read_answers() -> None:
            while raw := await c.reader.readline():
                tally["flood-answers:" + json.loads(raw).get("status", "event")] += 1

        reading = asyncio.create_task(read_answers())
        while time.monotonic() < end:
            c.writer.write(b"ping\n" * 500)
            try:
                await asyncio.wait_for(c.writer.drain(), max(end - time.monotonic(), 0.01))
            except TimeoutError:
                break
        c.writer.transport.abort()
        reading.cancel()

    async def stalled_uploads() -> None:
        while time.monotonic() < end:
            async def parts() -> AsyncIterator[pb.UploadRequest]:
                yield pb.UploadRequest(header=pb.UploadHeader(to=victim, name="slow.bin", size=50 * 2**20))
                await asyncio.sleep(max(end - time.monotonic(), 0))

            calls = [stub.UploadFile(parts(), metadata=bearer(upload_token), timeout=duration + 5) for _ in range(8)]
            for r in await asyncio.gather(*calls, return_exceptions=True):
                code = r.code().name if isinstance(r, grpc.aio.AioRpcError) else type(r).__name__
                tally[f"upload:{code}"] += 1

    await asyncio.gather(grpc_loop("guess", guess, 50), grpc_loop("register", register, 50),
                         grpc_loop("token", token, 100), realm_logins(), pipelined_flood(), stalled_uploads())
    await channel.close()
    return dict(tally)


# ---- the normal user (this process) ------------------------------------------------------

async def measure(main: str, realm: str, duration: float, interval: float) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    alice = await account(realm, f"alice_{tag}")
    bob = await account(realm, f"bob_{tag}")
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.attack_mix", "--role", "attacker", "--main", main, "--realm", realm,
        "--duration", str(duration), "--tag", tag, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    print(f"attacking for {duration:g} s ...", file=sys.stderr, flush=True)
    await asyncio.sleep(min(2.0, duration / 4))  # the attacks are under way
    lat: list[float] = []
    acked: list[int] = []
    end = time.monotonic() + duration - min(2.0, duration / 4)
    receiving = asyncio.create_task(bob.read_events(end + 600))
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r = await alice.cmd(f"sendprivate bob_{tag} message {i}")
        lat.append(time.perf_counter() - t0)
        assert r["status"] == "OK", r
        acked.append(r["id"])
        i += 1
        await asyncio.sleep(interval)
    print(f"sent {len(acked)} messages; waiting for the attackers to stop", file=sys.stderr, flush=True)
    out = (await attacker.communicate())[0].decode()
    await asyncio.sleep(1.0)
    receiving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await receiving
    got = [e["id"] for e in bob.events if e.get("event") == "private"]
    inbox = await bob.cmd("inbox")
    got += [m["id"] for m in inbox["messages"]]
    lat.sort()
    return {"sent": len(acked), "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2), "max_ms": round(lat[-1] * 1000, 2),
            "lost": len(set(acked) - set(got)), "duplicates": len(got) - len(set(got)),
            "attacks": json.loads(out.strip().splitlines()[-1]) if out.strip() else {}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.attack_mix", description=__doc__.split("\n\n")[0])
    p.add_argument("--main", default="127.0.0.1:8080")
    p.add_argument("--realm", default="127.0.0.1:8000")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=0.02, help="the normal user's pause between messages")
    p.add_argument("--p99-ms", type=float, default=50.0)
    p.add_argument("--role", default="user", choices=["user", "attacker"])
    p.add_argument("--tag", default="")
    a = p.parse_args(argv)
    if a.role == "attacker":
        print(json.dumps(asyncio.run(attack(a.main, a.realm, a.duration, a.tag))), flush=True)
        return
    result = asyncio.run(measure(a.main, a.realm, a.duration, a.interval))
    print(json.dumps(result, indent=1))
    sys.exit(1 if result["lost"] or result["duplicates"] or result["p99_ms"] > a.p99_ms else 0)


if __name__ == "__main__":
    main()
