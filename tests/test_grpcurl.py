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
    assert {"user": b, "realm": "beta", "status": "online"} in json.loads(r.stdout)["online"]  # no away message


def test_calls_without_a_valid_token_are_unauthenticated(stack: Stack) -> None:
    for token in ("", "forged-token"):
        r = grpcurl(stack.main.addr, "chat.v1.Chat/SendPrivate", data={"to": "x", "text": "hi"}, token=token)
        assert r.returncode != 0
        assert "Unauthenticated" in r.stderr, r.stderr
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Auth", data={"user": "nobody_x", "password": "whatever"})
    assert r.returncode != 0 and "Unauthenticated" in r.stderr
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Register", data={"user": "bad name", "password": "whatever"})
    assert r.returncode != 0 and "InvalidArgument" in r.stderr


async def test_room_rpcs_with_token(stack: Stack, uname: Names) -> None:
    """Rooms are typed RPCs on main too: a private group made, keyed and listed over grpcurl,
    its member event pushed to a realm user."""
    a, b, g = uname("gra"), uname("grb"), uname("grg")
    cb = await login(*stack.realm("beta"), b)
    assert grpcurl(stack.main.addr, "chat.v1.Chat/Register", data={"user": a, "password": "pw-secret"}).returncode == 0
    token = json.loads(grpcurl(stack.main.addr, "chat.v1.Chat/Auth", data={"user": a, "password": "pw-secret"}
                               ).stdout)["token"]

    def call(method: str, data: dict) -> dict:
        r = grpcurl(stack.main.addr, f"chat.v1.Chat/{method}", data=data, token=token)
        assert r.returncode == 0, (method, r.stderr)
        return json.loads(r.stdout or "{}")

    assert call("CreateGroup", {"group": g, "mode": "private"}) == {"group": g, "mode": "private"}
    await cb.err(f"joingroup {g}", "PERMISSION_DENIED")
    assert call("Invite", {"group": g, "user": b}) == {"group": g, "user": b}
    assert await cb.event() == {"event": "invited", "group": g, "by": a}
    await cb.ok(f"joingroup {g}")
    assert call("SetRole", {"group": g, "user": b, "role": "admin"}) == {"group": g, "user": b, "role": "admin"}
    assert await cb.event() == {"event": "member", "group": g, "user": b, "action": "role", "by": a, "role": "admin"}
    topic = call("Topic", {"group": g, "topic": "via grpcurl", "set": True})
    assert {k: topic[k] for k in ("group", "topic", "topic_by", "mode")} == {
        "group": g, "topic": "via grpcurl", "topic_by": a, "mode": "private"}
    assert (await cb.event())["event"] == "topic"
    assert call("GroupMode", {"group": g, "mode": "public"}) == {"group": g, "mode": "public"}
    assert await cb.event() == {"event": "groupmode", "group": g, "mode": "public", "by": a}
    assert call("GroupMode", {"group": g, "mode": "private"}) == {"group": g, "mode": "private"}
    # The owner is a moderator: no bans yet (proto3 JSON leaves the empty list out).
    assert call("Members", {"group": g}) == {
        "members": [{"user": a, "role": "owner"}, {"user": b, "role": "admin", "online": True, "realm": "beta"}],
        "moderator": True}
    assert call("BrowseGroups", {"pattern": g})["groups"] == [
        {"group": g, "mode": "private", "topic": "via grpcurl", "members": 2}]
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Kick", data={"group": g, "user": a}, token=token)
    assert r.returncode != 0 and "PermissionDenied" in r.stderr and "owner" in r.stderr
    call("Ban", {"group": g, "user": b, "reason": "over grpcurl"})
    banned = call("Members", {"group": g})["banned"]
    assert [(x["user"], x["by"], x["reason"]) for x in banned] == [(b, a, "over grpcurl")] and banned[0]["at"]


async def test_conversation_state_rpcs(stack: Stack, uname: Names) -> None:
    """Every conversation-state verb is a typed RPC: Conversations, MarkRead, SetReceipts,
    SetStatus, Typing; a realm user hears the effects (seen, presence is set aside, typing)."""
    a, b = uname("gca"), uname("gcb")
    cb = await login(*stack.realm("beta"), b)
    grpcurl(stack.main.addr, "chat.v1.Chat/Register", data={"user": a, "password": "pw-secret"})
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Auth", data={"user": a, "password": "pw-secret"})
    token = json.loads(r.stdout)["token"]
    m = await cb.ok(f"sendprivate {a} to the script")
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Conversations", data={}, token=token)
    assert r.returncode == 0, r.stderr
    (c,) = json.loads(r.stdout)["conversations"]
    assert (c["peer"], c["kind"], c["unread"], c["last"]["text"]) == (b, "user", "1", "to the script")
    r = grpcurl(stack.main.addr, "chat.v1.Chat/MarkRead", data={"peer": b, "id": m["id"]}, token=token)
    assert json.loads(r.stdout) == {"peer": b, "read": str(m["id"])}
    assert await cb.event() == {"event": "seen", "by": a, "id": m["id"]}
    r = grpcurl(stack.main.addr, "chat.v1.Chat/SetReceipts", data={"enabled": False}, token=token)
    assert r.returncode == 0 and json.loads(r.stdout) == {}  # enabled false: the default, not printed
    r = grpcurl(stack.main.addr, "chat.v1.Chat/SetStatus", data={"away": True, "message": "script"}, token=token)
    assert json.loads(r.stdout) == {"status": "away", "message": "script"}
    r = grpcurl(stack.main.addr, "chat.v1.Chat/Typing", data={"peer": b}, token=token)
    assert json.loads(r.stdout) == {"forwarded": True}
    assert await cb.event() == {"event": "typing", "user": a, "peer": a, "expires": 5}
    r = grpcurl(stack.main.addr, "chat.v1.Chat/MarkRead", data={"peer": "nobody-here", "id": 1}, token=token)
    assert r.returncode != 0 and "NotFound" in r.stderr, r.stderr
