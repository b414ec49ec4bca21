"""Real-time push across realms and offline delivery: pushed counts as delivered, what waits is
returned once by inbox / inboxgroup, in order."""

from __future__ import annotations

from collections.abc import Callable

from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]


async def test_push_across_realms_both_ways(stack: Stack, uname: Names) -> None:
    a, b = uname("xa"), uname("xb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await ca.ok(f"sendprivate {b} from alpha")
    assert (await cb.event())["text"] == "from alpha"
    await cb.ok(f"sendprivate {a} from beta")
    assert (await ca.event())["text"] == "from beta"
    # pushed = delivered: nothing waits in the inbox
    assert (await cb.ok("inbox"))["messages"] == []
    assert (await ca.ok("inbox"))["messages"] == []


async def test_every_session_of_a_user_gets_the_push(stack: Stack, uname: Names) -> None:
    a, b = uname("ma"), uname("mb")
    ca = await login(*stack.realm("alpha"), a)
    cb1 = await login(*stack.realm("alpha"), b)
    cb2 = await login(*stack.realm("beta"), b, register=False)
    await ca.ok(f"sendprivate {b} to both")
    assert (await cb1.event())["text"] == "to both"
    assert (await cb2.event())["text"] == "to both"


async def test_offline_inbox_delivered_once_in_order(stack: Stack, uname: Names) -> None:
    a, b = uname("oa"), uname("ob")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await cb.ok("logout")
    sent = [(await ca.ok(f"sendprivate {b} offline {i}"))["id"] for i in range(5)]
    await cb.no_event()
    await cb.ok(f"auth {b} pw-secret")
    msgs = (await cb.ok("inbox"))["messages"]
    assert [m["id"] for m in msgs] == sent
    assert [m["text"] for m in msgs] == [f"offline {i}" for i in range(5)]
    assert all(m["from"] == a and m["to"] == b for m in msgs)
    assert (await cb.ok("inbox"))["messages"] == []  # exactly once
    # and now online again: pushed, not queued
    await ca.ok(f"sendprivate {b} live")
    assert (await cb.event())["text"] == "live"
    assert (await cb.ok("inbox"))["messages"] == []


async def test_inbox_after_reconnecting_on_another_realm(stack: Stack, uname: Names) -> None:
    a, b = uname("ra"), uname("rb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("alpha"), b)
    await cb.close()
    await ca.ok(f"sendprivate {b} while away")
    cb2 = await login(*stack.realm("beta"), b, register=False)
    assert [m["text"] for m in (await cb2.ok("inbox"))["messages"]] == ["while away"]


async def test_group_offline_members_get_inboxgroup_once(stack: Stack, uname: Names) -> None:
    owner, on, off = uname("go"), uname("gon"), uname("goff")
    g = uname("team")
    co = await login(*stack.realm("alpha"), owner)
    con = await login(*stack.realm("beta"), on)
    coff = await login(*stack.realm("beta"), off)
    await co.ok(f"creategroup {g}")
    await con.ok(f"joingroup {g}")
    await coff.ok(f"joingroup {g}")
    # Members hear of joins (live notices, not messages: nothing of them waits in an inbox).
    assert await con.event() == {"event": "member", "group": g, "user": off, "action": "join", "by": off}
    await coff.ok("logout")
    ids = [(await co.ok(f"sendgroup {g} g{i}"))["id"] for i in range(3)]
    assert [(await con.event())["id"] for _ in range(3)] == ids
    assert (await con.ok(f"inboxgroup {g}"))["messages"] == []  # already pushed
    assert (await co.ok(f"inboxgroup {g}"))["messages"] == []  # the sender's own
    await coff.ok(f"auth {off} pw-secret")
    msgs = (await coff.ok(f"inboxgroup {g}"))["messages"]
    assert [m["id"] for m in msgs] == ids and all(m["group"] == g for m in msgs)
    assert (await coff.ok(f"inboxgroup {g}"))["messages"] == []
    assert (await coff.ok("inbox"))["messages"] == []  # group messages are not private ones


async def test_sender_other_sessions_see_group_messages(stack: Stack, uname: Names) -> None:
    u, g = uname("multi"), uname("mg")
    c1 = await login(*stack.realm("alpha"), u)
    c2 = await login(*stack.realm("beta"), u, register=False)
    await c1.ok(f"creategroup {g}")
    r = await c1.ok(f"sendgroup {g} note to self")
    assert (await c2.event())["id"] == r["id"]
    await c1.no_event()


async def test_events_never_split_responses(stack: Stack, uname: Names) -> None:
    """A burst of pushes while the recipient pipelines commands: every line stays whole."""
    a, b = uname("ea"), uname("eb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await TextClient.connect(*stack.realm("beta"))
    await cb.ok(f"register {b} pw-secret")
    await cb.ok(f"auth {b} pw-secret")
    sends = "".join(f"sendprivate {b} burst {i}\n" for i in range(100)).encode()
    await ca.send_raw(sends)
    await cb.send_raw(b"ping\n" * 100)
    pongs = [await cb.response() for _ in range(100)]
    assert all(p["pong"] is True for p in pongs)
    for _ in range(100):
        await ca.response()
    texts = set()
    while len(texts) < 100:
        texts.add((await cb.event())["text"])
    assert texts == {f"burst {i}" for i in range(100)}
