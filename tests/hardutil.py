"""Helpers for the hardening tests: clients from chosen loopback source addresses (so per-IP limits
can be tested on one machine: 127.0.0.0/8 is all local), clients with a tiny receive buffer (slow
readers), reading a connection to its end, and direct gRPC access to main."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import bearer

from .stack import ServerProcess, Stack, start_realm
from .textclient import TextClient

# A distinct 127.0.0.x per call, so tests do not share per-IP counters.
_source_ips = itertools.count(10 + os.getpid() % 50 * 4)


def fresh_source_ip() -> str:
    n = next(_source_ips)
    return f"127.0.{n // 250 % 250}.{n % 250 + 2}"


async def connect(host: str, port: int, source_ip: str = "", rcvbuf: int = 0, hello: bool = True) -> TextClient:
    """A TextClient from source_ip (any 127.x.y.z), optionally with a small receive buffer (a
    client that reads slowly fills its socket quickly). hello=False: do not wait for hello."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source_ip:
        sock.bind((source_ip, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024 * 1024)
    c = TextClient(reader, writer)
    if hello:
        line = await asyncio.wait_for(reader.readline(), 10)
        c.hello = json.loads(line)
        assert c.hello.get("event") == "hello", c.hello
    return c


def stop_reading(c: TextClient) -> None:
    """Makes c a client that does not read: asyncio would otherwise keep draining the socket into
    the StreamReader's buffer, and the realm would never see back pressure."""
    c.writer.transport.pause_reading()


async def login_from(host: str, port: int, user: str, source_ip: str = "", password: str = "pw-secret",
                     register: bool = True) -> TextClient:
    c = await connect(host, port, source_ip)
    if register:
        await c.ok(f"register {user} {password}")
    await c.ok(f"auth {user} {password}")
    return c


async def read_to_end(c: TextClient, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every line until the realm closes the connection (EOF or reset)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"connection still open after {timeout}s; got {out[-3:]}"
        try:
            line = await asyncio.wait_for(c.reader.readline(), left)
        except (ConnectionError, OSError):
            return out
        if not line:
            return out
        out.append(json.loads(line))


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> float:
    """Polls pred; returns the seconds it took."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def add_realm(stack: Stack, name: str, *extra: str) -> ServerProcess:
    """Starts one more realm (with its own options) on the stack's main."""
    r = start_realm(name, stack.main.addr, 0, *extra)
    stack.realms[name] = r
    return r


def tmp_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "files" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


class Grpc:
    """Direct gRPC access to main (what grpcurl does), with the generated stub."""

    def __init__(self, addr: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.channel = (grpc.aio.secure_channel(addr, credentials) if credentials
                        else grpc.aio.insecure_channel(addr))
        self.stub = pb_grpc.ChatStub(self.channel)

    async def login(self, user: str, password: str = "pw-secret", register: bool = True) -> str:
        if register:
            await self.stub.Register(pb.RegisterRequest(user=user, password=password), timeout=15)
        r = await self.stub.Auth(pb.AuthRequest(user=user, password=password), timeout=15)
        return r.token

    async def send_private(self, token: str, to: str, text: str) -> pb.SendResponse:
        return await self.stub.SendPrivate(pb.SendPrivateRequest(to=to, text=text), metadata=bearer(token),
                                           timeout=10)

    async def close(self) -> None:
        await self.channel.close()

    async def until_refused(self, token: str, within: float, why: str) -> float:
        """Calls Who with the token until main answers UNAUTHENTICATED; the seconds it took."""
        t0 = time.monotonic()
        while True:
            try:
                await self.stub.Who(pb.WhoRequest(), metadata=bearer(token), timeout=5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
                return time.monotonic() - t0
            assert time.monotonic() - t0 < within, why
            await asyncio.sleep(0.05)




async def drain_events(c: TextClient, quiet: float = 0.3) -> list[dict[str, Any]]:
    """Every event that arrives until none has for `quiet` seconds."""
    out: list[dict[str, Any]] = []
    while True:
        if not c.events.empty():
            out.append(c.events.get_nowait())
            continue
        try:
            line = await asyncio.wait_for(c.reader.readline(), quiet)
        except TimeoutError:
            return out
        if not line:
            return out
        obj = json.loads(line)
        assert "event" in obj, f"unexpected response {obj}"
        out.append(obj)
