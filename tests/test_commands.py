"""Every command of the text protocol against a real main + realms: its OK form and the error
codes PROTOCOL.md lists for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]


async def test_hello_help_ping_quit(stack: Stack) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    assert c.hello == {"event": "hello", "realm": "alpha", "protocol": 2}
    r = await c.ok("help")
    assert any(line.startswith("sendfile TO NAME SIZE") for line in r["commands"])
    assert (await c.ok("PING"))["pong"] is True
    assert (await c.ok("quit"))["bye"] is True
    assert await c.reader.read() == b""  # the realm closed the connection


async def test_register_and_auth_errors(stack: Stack, uname: Names) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    u = uname("reg")
    assert (await c.ok(f"register {u} pw-secret"))["user"] == u
    await c.err(f"register {u} other-pw", "ALREADY_EXISTS")
    await c.err(f"register {u.upper()} other-pw", "ALREADY_EXISTS")  # unique ignoring case
    await c.err("register bad/name pw-secret", "INVALID_ARGUMENT")
    await c.err(f"register {'x' * 33} pw-secret", "INVALID_ARGUMENT")
    await c.err(f"register {uname('w')} p", "INVALID_ARGUMENT")  # weak password
    await c.err("register", "INVALID_ARGUMENT")
    wrong = await c.err(f"auth {u} nope-nope", "UNAUTHENTICATED")
    unknown = await c.err(f"auth {uname('ghost')} nope-nope", "UNAUTHENTICATED")
    assert wrong["message"] == unknown["message"]  # no user enumeration
    r = await c.ok(f"auth {u.upper()} pw-secret")
    assert r == {"status": "OK", "user": u, "realm": "alpha"}


async def test_commands_need_login(stack: Stack) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    for line in ["sendprivate bob hi", "inbox", "creategroup g", "joingroup g", "leavegroup g",
                 "sendgroup g hi", "inboxgroup g", "receivefile", "receivefile 1", "who", "groups",
                 "history bob", "creategroup g private", "joingroup g key", "invite g bob", "kick g bob why",
                 "ban g bob", "unban g bob", "role g bob admin", "members g", "topic g", "topic g new",
                 "groupkey g k", "deletegroup g", "listgroups", "listgroups g*"]:
        await c.err(line, "UNAUTHENTICATED")
    await c.ok("ping")


async def test_unknown_and_malformed_commands_keep_the_connection(stack: Stack, uname: Names) -> None:
    c = await login(*stack.realm("alpha"), uname("mal"))
    await c.err("frobnicate now", "UNIMPLEMENTED")
    await c.err("sendprivate", "INVALID_ARGUMENT")
    await c.err("receivefile abc", "INVALID_ARGUMENT")
    await c.err("history x 0", "INVALID_ARGUMENT")
    await c.err("sendfile bob ~/laporan.pdf", "INVALID_ARGUMENT")
    await c.send_raw(b"\xff\xfe bad utf8\n")
    assert (await c.response())["code"] == "INVALID_ARGUMENT"
    await c.err("sendprivate bad/name hi", "INVALID_ARGUMENT")
    await c.ok("ping")


async def test_private_message_ok_and_errors(stack: Stack, uname: Names) -> None:
    a, b = uname("pa"), uname("pb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    r = await ca.ok(f"sendprivate {b} halo apa kabar")
    assert isinstance(r["id"], int) and r["ts"].endswith("Z")
    ev = await cb.event()
    assert ev == {"event": "private", "id": r["id"], "from": a, "to": b, "text": "halo apa kabar", "ts": r["ts"]}
    await ca.err(f"sendprivate {uname('nobody')} hi", "NOT_FOUND")
    await ca.err(f"sendprivate {b} {'x' * 20000}", "RESOURCE_EXHAUSTED")
    await ca.no_event()  # the sender gets its response, not an event


async def test_ids_grow_with_time(stack: Stack, uname: Names) -> None:
    a, b = uname("ia"), uname("ib")
    ca = await login(*stack.realm("alpha"), a)
    await login(*stack.realm("alpha"), b, register=True)
    ids = [(await ca.ok(f"sendprivate {b} m{i}"))["id"] for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


async def test_groups_ok_and_errors(stack: Stack, uname: Names) -> None:
    owner, member, outsider = uname("go"), uname("gm"), uname("gx")
    g = uname("grp")
    co = await login(*stack.realm("alpha"), owner)
    cm = await login(*stack.realm("beta"), member)
    cx = await login(*stack.realm("beta"), outsider)
    assert await co.ok(f"creategroup {g}") == {"status": "OK", "group": g, "mode": "public"}
    await cm.err(f"creategroup {g.upper()}", "ALREADY_EXISTS")
    await cm.err(f"joingroup {uname('nogroup')}", "NOT_FOUND")
    assert (await cm.ok(f"joingroup {g.upper()}"))["group"] == g
    assert await co.event() == {"event": "member", "group": g, "user": member, "action": "join", "by": member}
    await cm.ok(f"joingroup {g}")  # joining twice is harmless (and tells nobody)
    groups = (await co.ok("groups"))["groups"]
    assert {"group": g, "role": "owner", "members": 2} in groups
    assert {"group": g, "role": "member", "members": 2} in (await cm.ok("groups"))["groups"]

    r = await co.ok(f"sendgroup {g} hi all")
    ev = await cm.event()
    assert ev == {"event": "group", "id": r["id"], "from": owner, "group": g, "text": "hi all", "ts": r["ts"]}
    await co.no_event()
    await cx.no_event()
    await cx.err(f"sendgroup {g} let me in", "PERMISSION_DENIED")
    await cx.err(f"inboxgroup {g}", "PERMISSION_DENIED")
    await cx.err(f"history #{g}", "PERMISSION_DENIED")
    await cx.err(f"sendgroup {uname('nogroup')} hi", "NOT_FOUND")
    await cx.err(f"inboxgroup {uname('nogroup')}", "NOT_FOUND")
    await cx.err(f"leavegroup {g}", "PERMISSION_DENIED")

    assert (await cm.ok(f"leavegroup {g}"))["group"] == g
    assert await co.event() == {"event": "member", "group": g, "user": member, "action": "leave", "by": member}
    await cm.err(f"sendgroup {g} still here?", "PERMISSION_DENIED")
    await co.ok(f"sendgroup {g} after leave")
    await cm.no_event()
    assert all(x["group"] != g for x in (await cm.ok("groups"))["groups"])


async def test_who_lists_online_users_with_realm(stack: Stack, uname: Names) -> None:
    a, b = uname("wa"), uname("wb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    online = (await ca.ok("who"))["online"]
    # Each entry: user, realm, status (online or away) and the away message.
    assert {"user": a, "realm": "alpha", "status": "online", "message": ""} in online
    assert {"user": b, "realm": "beta", "status": "online", "message": ""} in online
    await cb.ok("logout")
    await cb.err("inbox", "UNAUTHENTICATED")
    assert (b, "beta") not in {(e["user"], e["realm"]) for e in (await ca.ok("who"))["online"]}
    await ca.close()
    await cb.ok(f"auth {b} pw-secret")

    async def a_gone() -> bool:
        return (a, "alpha") not in {(e["user"], e["realm"]) for e in (await cb.ok("who"))["online"]}

    for _ in range(50):
        if await a_gone():
            break
        await asyncio.sleep(0.05)
    assert await a_gone()  # a closed connection takes its user offline


async def test_history(stack: Stack, uname: Names) -> None:
    a, b = uname("ha"), uname("hb")
    g = uname("hg")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    for i in range(3):
        await ca.ok(f"sendprivate {b} a{i}")
        await cb.ok(f"sendprivate {a} b{i}")
    texts = [m["text"] for m in (await ca.ok(f"history {b}"))["messages"]]
    assert texts == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert [m["text"] for m in (await cb.ok(f"history {a} 2"))["messages"]] == ["a2", "b2"]
    await ca.ok(f"creategroup {g}")
    await ca.ok(f"sendgroup {g} first")
    msgs = (await ca.ok(f"history {g}"))["messages"]
    assert [(m["group"], m["text"]) for m in msgs] == [(g, "first")]
    assert (await ca.ok(f"history #{g} 1"))["messages"][0]["text"] == "first"
    await ca.err(f"history {uname('nothing')}", "NOT_FOUND")


async def test_pipelining_gives_one_response_per_command_in_order(stack: Stack, uname: Names) -> None:
    u, peer = uname("pipe"), uname("peer")
    await login(*stack.realm("beta"), peer)
    c = await TextClient.connect(*stack.realm("alpha"))
    lines = [f"register {u} pw-secret", f"auth {u} pw-secret", "ping", "bogus", "inbox",
             *[f"sendprivate {peer} n{i}" for i in range(20)], "who", "", "groups", "ping"]
    await c.send_raw("".join(x + "\n" for x in lines).encode())
    responses = [await c.response() for _ in range(len(lines) - 1)]  # the blank line gets none
    assert responses[0]["user"] == u and responses[1]["realm"] == "alpha"
    assert responses[2]["pong"] is True
    assert responses[3]["code"] == "UNIMPLEMENTED"
    assert responses[4]["messages"] == []
    ids = [r["id"] for r in responses[5:25]]
    assert ids == sorted(ids)
    assert "online" in responses[25] and "groups" in responses[26] and responses[27]["pong"] is True
