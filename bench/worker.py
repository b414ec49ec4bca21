"""One load-generator process. The coordinator (bench.runner) sends it operations over a pipe;
it runs them on its own event loop (uvloop when installed) and answers with plain data.

Every client connection of the process reads its events all the time, so deliveries are timed
by whichever process holds the recipient, whatever process sent the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import random
import re
import time
import traceback
from array import array
from collections.abc import Awaitable
from multiprocessing.connection import Connection
from typing import Any

from .client import Client, Received, Sending
from .irc import IrcClient

PASSWORD = "bench-pw-1"
CHUNK = 1 << 20


def percentile_ms(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e6


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def bounded(coros: list[Awaitable[Any]], concurrency: int) -> list[Any]:
    """Runs the awaitables with at most `concurrency` at a time (logins, connects)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


class FileConn:
    """A stream connection for the file workload (binary payloads, not worth a Protocol)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes:
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 120)
            if not line:
                raise ConnectionError("connection closed")
            if not line.startswith(b'{"event"'):
                return line

    async def ok(self, cmd: str) -> dict[str, Any]:
        self.writer.write(cmd.encode() + b"\n")
        r = json.loads(await self.line())
        if r.get("status") != "OK":
            raise RuntimeError(f"{cmd.split()[0]}: {r}")
        return r


class Worker:
    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.clients: dict[int, Client] = {}
        self.phases: dict[int, Received] = {}
        self.files: dict[str, FileConn] = {}
        self.sendings: dict[int, Sending] = {}  # phase -> this process's sends (IRC frees slots on receipt)

    def on_event(self, m: re.Match[bytes], now: int) -> None:
        t, w, s, p = m.groups()
        rec = self.phases.get(int(p))
        if rec is None:
            rec = self.phases[int(p)] = Received()
        rec.add(int(w), int(s), now - int(t), now)

    def on_irc_message(self, client: IrcClient, m: re.Match[bytes], now: int) -> None:
        self.on_event(m, now)
        sending = self.sendings.get(int(m.group(4)))
        if sending is not None and int(m.group(2)) == self.wid and client.partner is not None:
            sending.on_delivered(client.partner, now)

    # ---- setup -------------------------------------------------------------------------------

    async def op_connect(self, clients: list[tuple[int, str, str, int]], concurrency: int = 100,
                         tolerant: bool = False, irc: bool = False, timeout: float = 30) -> dict[str, Any]:
        """Connects the clients (realm: until the hello event; irc: until registered). tolerant:
        a client that fails is left out and reported instead of failing the operation."""
        loop = asyncio.get_running_loop()
        failed: list[int] = []
        errors: list[str] = []

        def make(cid: int, user: str) -> Client | IrcClient:
            return IrcClient(cid, user, self.on_irc_message) if irc else Client(cid, user, self.on_event)

        lat: list[int] = []

        async def one(cid: int, user: str, host: str, port: int) -> None:
            t0 = time.monotonic_ns()
            try:
                _, c = await asyncio.wait_for(loop.create_connection(lambda: make(cid, user), host, port), timeout)
                await asyncio.wait_for(c.hello, timeout)
                lat.append(time.monotonic_ns() - t0)
            except Exception as e:
                if not tolerant:
                    raise
                failed.append(cid)
                errors.append(f"connect {user}: {type(e).__name__} {e}"[:300])
                return
            self.clients[cid] = c

        t0 = time.perf_counter()
        await bounded([one(*c) for c in clients], concurrency)
        return {"n": len(clients), "seconds": time.perf_counter() - t0, "failed": failed,
                "error_samples": errors[:5], "p99_ms": percentile_ms(lat, 0.99), "max_ms": max(lat, default=0) / 1e6}

    async def op_pair(self, pairs: list[tuple[int, int]]) -> dict[str, Any]:
        """IRC: a's messages go to b (both in this process), so b's receipt frees a's slot."""
        for a, b in pairs:
            ca, cb = self.clients[a], self.clients[b]
            assert isinstance(ca, IrcClient) and isinstance(cb, IrcClient)
            ca.partner = cb
            ca.prefix = b"PRIVMSG %s :" % cb.user.encode()
        return {}

    async def _each(self, cmds: list[tuple[int, str]], concurrency: int, timeout: float = 300,
                    failed: set[int] | None = None, lat: list[int] | None = None) -> tuple[int, list[str]]:
        """Runs the commands; one not answered OK within `timeout` is an error (its client is
        added to `failed` when given). `lat` gets each command's time to its answer (ns)."""
        errors: list[str] = []

        async def one(cid: int, line: str) -> None:
            t0 = time.monotonic_ns()
            try:
                r = await asyncio.wait_for(self.clients[cid].command(line), timeout)
            except (TimeoutError, ConnectionError) as e:
                r = f"{type(e).__name__} after {timeout:g} s: {e}".encode()
            if lat is not None:
                lat.append(time.monotonic_ns() - t0)
            if not r.startswith(b'{"status":"OK"'):
                errors.append(f"{line.split()[0]} {cid}: {r.decode(errors='replace')[:200]}")
                if failed is not None:
                    failed.add(cid)

        await bounded([one(cid, line) for cid, line in cmds], concurrency)
        return len(errors), errors[:5]

    async def op_login(self, cids: list[int], steps: list[str], concurrency: int = 64,
                       timeout: float = 300) -> dict[str, Any]:
        """Runs each step ("register", "auth") for every listed client; each step timed on its own.
        A client whose step failed is not sent the next one; "failed" lists them."""
        out: dict[str, Any] = {"errors": 0, "error_samples": []}
        failed: set[int] = set()
        for verb in steps:
            t0 = time.perf_counter()
            lat: list[int] = []
            n, samples = await self._each([(c, f"{verb} {self.clients[c].user} {PASSWORD}") for c in cids
                                           if c not in failed], concurrency, timeout, failed, lat)
            out[f"{verb}_s"] = time.perf_counter() - t0
            out[f"{verb}_p99_ms"] = percentile_ms(lat, 0.99)
            out[f"{verb}_max_ms"] = max(lat, default=0) / 1e6
            out["errors"] += n
            out["error_samples"] += samples
        out["failed"] = sorted(failed)
        # Long-lived setup objects need no cyclic GC passes during the measurement.
        gc.collect()
        gc.freeze()
        return out

    async def op_commands(self, cmds: list[tuple[int, str]], concurrency: int = 64) -> dict[str, Any]:
        n, samples = await self._each(cmds, concurrency)
        return {"errors": n, "error_samples": samples}

    async def op_prefix(self, prefixes: dict[int, str]) -> dict[str, Any]:
        for cid, p in prefixes.items():
            self.clients[cid].prefix = p.encode()
        return {}

    async def op_close(self) -> dict[str, Any]:
        for c in self.clients.values():
            c.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.closed for c in self.clients.values())), 10)
        self.clients.clear()
        for f in self.files.values():
            f.writer.close()
        self.files.clear()
        gc.unfreeze()
        return {}

    # ---- load --------------------------------------------------------------------------------

    async def op_send(self, phase: int, mode: str, start_ns: int, duration_s: float, rate: float,
                      depth: int, senders: list[int], drain_s: float) -> dict[str, Any]:
        """Open loop: message k is due at start + k/rate, sent by sender k mod n, and carries its
        DUE time, so a generator or server that falls behind shows up as latency instead of
        silently lowering the rate (no coordinated omission). Closed loop: each sender keeps
        `depth` messages pipelined and refills on every ack until the end."""
        end_ns = start_ns + int(duration_s * 1e9)
        sending = self.sendings[phase] = Sending(self.wid, phase, mode == "closed", end_ns)
        clients = [self.clients[c] for c in senders]
        lags: list[int] = []
        await sleep_until(start_ns)
        if mode == "open" and clients and rate > 0:
            interval = 1e9 / rate
            total = int(rate * duration_s)
            n = len(clients)
            k = 0
            while k < total:
                now = time.monotonic_ns()
                due = start_ns + int(k * interval)
                if due > now:
                    await asyncio.sleep((due - now) / 1e9)
                    continue
                lags.append(now - due)  # how late the generator is for the oldest due message
                while k < total and due <= now:
                    clients[k % n].send_message(sending, due)
                    k += 1
                    due = start_ns + int(k * interval)
                # Yield so that reads (acks, deliveries) are timed while sending continues.
                await asyncio.sleep(0)
        elif mode == "closed":
            now = time.monotonic_ns()
            for c in clients:
                for _ in range(depth):
                    c.send_message(sending, now)
            await sleep_until(end_ns)
        sent_done_ns = time.monotonic_ns()
        # Wait for every response: an overloaded server holds a backlog, and the next phase must
        # not start on top of it (its latencies would be this phase's queueing).
        if sending.in_flight > 0:
            sending.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sending.idle.wait(), drain_s)
        last_ack_ns = time.monotonic_ns()
        return {
            "sent": sending.seq, "acked": sending.n_acked, "acked_map": bytes(sending.acked),
            "errors": sending.errors, "error_samples": sending.error_samples, "unacked": sending.in_flight,
            "ack_lat_us": sending.ack_lat_us.tobytes(), "sent_done_ns": sent_done_ns, "last_ack_ns": last_ack_ns,
            "lag_p99_ms": percentile_ms(lags, 0.99), "lag_max_ms": max(lags, default=0) / 1e6,
        }

    async def op_received(self, phase: int) -> dict[str, Any]:
        rec = self.phases.get(phase)
        return {"n": rec.n if rec else 0, "last_ns": rec.last_ns if rec else 0}

    async def op_collect(self, phase: int) -> dict[str, Any]:
        rec = self.phases.pop(phase, None) or Received()
        self.sendings.pop(phase, None)
        return {"n": rec.n, "first_ns": rec.first_ns, "last_ns": rec.last_ns, "lat_us": rec.lat_us.tobytes(),
                "counts": {w: bytes(c) for w, c in rec.counts.items()}}

    # ---- presence (workload 8) ----------------------------------------------------------------

    async def op_presence_count(self) -> dict[str, Any]:
        return {"n": sum(c.presence for c in self.clients.values())}

    async def op_churn(self, cids: list[int], duration_s: float, hold_s: float) -> dict[str, Any]:
        """Each listed client logs out, waits hold_s, logs in again, waits hold_s, until the end
        (hold_s 0: back to back, which presence coalescing should swallow)."""
        end = time.monotonic() + duration_s
        cycles = 0
        errors: list[str] = []

        async def one(cid: int) -> None:
            nonlocal cycles
            c = self.clients[cid]
            # Spread the first logouts over one cycle: not every user at the same instant.
            await asyncio.sleep(random.random() * hold_s)
            while time.monotonic() < end:
                for line in ("logout", f"auth {c.user} {PASSWORD}"):
                    r = await asyncio.wait_for(c.command(line), 60)
                    if not r.startswith(b'{"status":"OK"'):
                        errors.append(f"{line.split()[0]} {cid}: {r.decode(errors='replace')[:200]}")
                    if hold_s:
                        await asyncio.sleep(hold_s)
                cycles += 1

        await asyncio.gather(*(one(c) for c in cids))
        return {"cycles": cycles, "errors": len(errors), "error_samples": errors[:5]}

    # ---- search (workload 9) ------------------------------------------------------------------

    async def op_search(self, queries: list[tuple[int, str]]) -> dict[str, Any]:
        """Runs the search commands one after the other (one in flight per generator, like a
        person waiting for results) and times each from send to response."""
        lat = array("q")
        errors: list[str] = []
        hits = 0
        for cid, line in queries:
            t0 = time.perf_counter_ns()
            r = await asyncio.wait_for(self.clients[cid].command(line), 60)
            lat.append((time.perf_counter_ns() - t0) // 1000)
            if not r.startswith(b'{"status":"OK"'):
                errors.append(f"{line}: {r.decode(errors='replace')[:200]}")
            else:
                hits += len(json.loads(r)["messages"])
        return {"lat_us": lat.tobytes(), "errors": len(errors), "error_samples": errors[:5], "hits": hits}

    # ---- files -------------------------------------------------------------------------------

    async def op_file_login(self, name: str, host: str, port: int, user: str) -> dict[str, Any]:
        # A 4 MiB stream limit: the reader pauses the socket less often on a large download.
        reader, writer = await asyncio.open_connection(host, port, limit=4 << 20)
        fc = FileConn(reader, writer)  # the hello event is skipped by line()
        await fc.ok(f"register {user} {PASSWORD}")
        await fc.ok(f"auth {user} {PASSWORD}")
        self.files[name] = fc
        return {}

    async def op_file_up(self, name: str, to: str, size: int) -> dict[str, Any]:
        fc = self.files[name]
        block = os.urandom(CHUNK)
        sha = hashlib.sha256()
        left = size
        while left > 0:  # digest computed before the clock starts
            sha.update(block[: min(CHUNK, left)])
            left -= CHUNK
        t0 = time.perf_counter()
        fc.writer.write(f"sendfile {to} bench.bin {size}\n".encode())
        left = size
        while left > 0:
            fc.writer.write(block[: min(CHUNK, left)])
            left -= CHUNK
            await fc.writer.drain()
        r = json.loads(await fc.line())
        seconds = time.perf_counter() - t0
        if r.get("status") != "OK" or r.get("sha256") != sha.hexdigest():
            raise RuntimeError(f"upload failed or corrupted: {r}")
        return {"seconds": seconds, "id": r["id"], "sha256": r["sha256"]}

    async def op_file_down(self, name: str, file_id: int, sha256: str) -> dict[str, Any]:
        fc = self.files[name]
        t0 = time.perf_counter()
        fc.writer.write(f"receivefile {file_id}\n".encode())
        head = json.loads(await fc.line())
        if head.get("status") != "OK":
            raise RuntimeError(f"download refused: {head}")
        size = int(head["size"])
        sha = hashlib.sha256()
        left = size
        while left > 0:
            data = await fc.reader.read(min(left, 4 << 20))
            if not data:
                raise ConnectionError(f"download cut with {left} bytes missing")
            sha.update(data)
            left -= len(data)
        seconds = time.perf_counter() - t0
        if sha.hexdigest() != sha256:
            raise RuntimeError("downloaded bytes do not match the uploaded sha256")
        return {"seconds": seconds, "size": size}


async def serve(conn: Connection, wid: int) -> None:
    worker = Worker(wid)
    loop = asyncio.get_running_loop()
    while True:
        # The pipe is read on a thread so that the loop keeps serving sockets meanwhile.
        msg = await loop.run_in_executor(None, conn.recv)
        op = msg.pop("op")
        if op == "exit":
            conn.send({"ok": True})
            return
        try:
            result = await getattr(worker, f"op_{op}")(**msg)
            conn.send({"ok": True, **result})
        except Exception:
            conn.send({"ok": False, "error": f"worker {wid} {op}: {traceback.format_exc()}"})


def run(conn: Connection, wid: int, use_uvloop: bool) -> None:
    """Process entry point."""
    if use_uvloop:
        try:
            import uvloop

            uvloop.run(serve(conn, wid))
            return
        except ImportError:
            pass
    asyncio.run(serve(conn, wid))


def unpack_lat(raw: bytes) -> array:
    a = array("q")
    a.frombytes(raw)
    return a
