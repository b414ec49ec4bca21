"""grpcurl (the real binary from .venv/bin) drives the main server directly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .stack import Stack
from .textclient import login

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
Names = Callable[[str], str]


def grpcurl(addr: str, *args: str, data: dict | None = None, token: str = "") -> subprocess.CompletedProcess[str]:
    argv = [GRPCURL, "-plaintext"]
    if token:
        argv += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return subprocess.run([*argv, addr, *args], capture_output=True, text=True, timeout=30)


def test_list_describe_health(stack: Stack) -> None:
    r = grpcurl(stack.main.addr, "list")
    assert r.returncode == 0, r.stderr
    services = r.stdout.split()
    assert {"chat.v1.Chat", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    r = grpcurl(stack.main.addr, "describe", "chat.v1.Chat")
    assert r.returncode == 0 and "rpc SendPrivate" in r.stdout and "stream .chat.v1.UploadRequest" in r.stdout
    r = grpcurl(stack.main.addr, "grpc.health.v1.Health/Check", data={"service": "chat.v1.Chat"})
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "SERVING"


async def test_register_auth_send_with_token(stack: Stack, uname: Names) -> None:
    a, b = uname("ga"), uname("gb")
    cb = await login(*stack.realm("beta"), b)  # b reads on a realm
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Register", data={"user": a, "password": "pw-secret"})
    assert r.returncode == 0, r.stderr
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Auth", data={"user": a, "password": "pw-secret"})
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    r = grpcurl(stack.main.addr, "chat.v1.Chat/SendPrivate", data={"to": b, "text": "via grpcurl\nline2"},
                token=token)
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    ev = await cb.event()
    assert ev["from"] == a and ev["text"] == "via grpcurl\nline2" and ev["id"] == int(sent["id"])
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Who", data={}, token=token)
    assert {"user": b, "realm": "beta"} in json.loads(r.stdout)["online"]


def test_calls_without_a_valid_token_are_unauthenticated(stack: Stack) -> None:
    for token in ("", "forged-token"):
        r = grpcurl(stack.main.addr, "chat.v1.Chat/SendPrivate", data={"to": "x", "text": "hi"}, token=token)
        assert r.returncode != 0
        assert "Unauthenticated" in r.stderr, r.stderr
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Auth", data={"user": "nobody_x", "password": "whatever"})
    assert r.returncode != 0 and "Unauthenticated" in r.stderr
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Register", data={"user": "bad name", "password": "whatever"})
    assert r.returncode != 0 and "InvalidArgument" in r.stderr
