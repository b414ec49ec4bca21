"""What a user finds right after a new login, against real main + realm processes: the auth
reply's `waiting` summary (counted by main on both engines, bounded, nothing delivered by it)
over the text protocol, in chat_cli and in the terminal client; and the read ticks of their
own private messages, in `conversations` at once (the peer's read marker, while the peer's
receipts are on)."""

from __future__ import annotations

from collections.abc import Callable

from chat_cli import ChatClient, Waiting, WaitingCount

from .stack import Stack
from .test_cli_terminal import run_cli
from .test_unread_counts import conv, engine_stack
from .textclient import TextClient, login

__all__ = ["engine_stack"]  # the fixture, re-used

Names = Callable[[str], str]
PW = "pw-secret"


async def auth(addr: tuple[str, int], user: str) -> tuple[TextClient, dict]:  # type: ignore[type-arg]
    c = await TextClient.connect(*addr)
    return c, await c.ok(f"auth {user} {PW}")


async def test_waiting_summary_in_the_auth_reply(engine_stack: Stack, uname: Names) -> None:
    alice, bob, carol, room = uname("wa"), uname("wb"), uname("wc"), uname("wroom")
    addr = engine_stack.realm("alpha")
    a = await login(*addr, alice)
    await a.ok(f"register {bob} {PW}")
    await a.ok(f"register {carol} {PW}")
    b = await login(*addr, bob, register=False)
    c = await login(*addr, carol, register=False)
    await b.ok(f"creategroup {room}")
    await a.ok(f"joingroup {room}")
    await a.ok("logout")
    await b.ok(f"sendprivate {alice} one")
    await b.ok(f"sendprivate {alice} two")
    gone = await b.ok(f"sendprivate {alice} deleted before she looks")
    await b.ok(f"delete {gone['id']}")
    await b.ok(f"sendgroup {room} hello room")
    await c.ok(f"sendprivate {alice} from carol")

    # Most waiting first; a tie goes to the newest. A deleted message never arrives: not counted.
    expected = {"total": 4, "conversations": [{"peer": bob, "kind": "user", "count": 2},
                                              {"peer": carol, "kind": "user", "count": 1},
                                              {"peer": room, "kind": "group", "count": 1}], "unlisted": 0}
    a1, r = await auth(addr, alice)
    assert r == {"status": "OK", "user": alice, "realm": "alpha", "waiting": expected}
    # It only counts: a second device is told the same, and the messages still come by inbox.
    a2, r = await auth(addr, alice)
    assert r["waiting"] == expected
    assert [m["text"] for m in (await a1.ok("inbox"))["messages"]] == ["one", "two", "from carol"]
    a3, r = await auth(addr, alice)
    assert r["waiting"] == {"total": 1, "conversations": [{"peer": room, "kind": "group", "count": 1}],
                            "unlisted": 0}
    assert [m["text"] for m in (await a3.ok(f"inboxgroup {room}"))["messages"]] == ["hello room"]
    # Nothing waits: the reply is the plain one (the field is absent).
    a4, r = await auth(addr, alice)
    assert r == {"status": "OK", "user": alice, "realm": "alpha"}
    for x in (a, b, c, a1, a2, a3, a4):
        await x.close()


async def test_waiting_summary_is_bounded(engine_stack: Stack, uname: Names) -> None:
    alice, bob = uname("ba"), uname("bb")
    addr = engine_stack.realm("alpha")
    a = await login(*addr, alice)
    b = await login(*addr, bob)
    rooms = [uname("br") for _ in range(14)]
    for g in rooms:
        await b.ok(f"creategroup {g}")
        await a.ok(f"joingroup {g}")
    await a.ok("logout")
    await b.ok(f"sendprivate {alice} hi")
    for i, g in enumerate(rooms):
        for n in range(max(1, 4 - i)):  # 4, 3, 2, then 1 each
            await b.ok(f"sendgroup {g} m{n}")
    _, r = await auth(addr, alice)
    w = r["waiting"]
    assert w["total"] == 4 + 3 + 2 + 11 + 1
    listed = w["conversations"]
    assert len(listed) == 10 and w["unlisted"] == 15 - 10
    assert [x["count"] for x in listed] == [4, 3, 2] + [1] * 7
    assert [x["peer"] for x in listed[:3]] == rooms[:3]
    # Ties: the newest first, so the last rooms written to lead the ones with one message.
    assert [x["peer"] for x in listed[3:]] == rooms[:2:-1][:7]
    await a.close()
    await b.close()


async def test_chat_cli_and_the_terminal_show_the_summary(stack: Stack, uname: Names) -> None:
    alice, bob, room = uname("ta"), uname("tb"), uname("troom")
    a = await login(*stack.realm("beta"), alice)
    b = await login(*stack.realm("alpha"), bob)
    await b.ok(f"creategroup {room}")
    await a.ok(f"joingroup {room}")
    await a.close()
    await b.ok(f"sendprivate {alice} one")
    await b.ok(f"sendprivate {alice} two")
    await b.ok(f"sendgroup {room} hi all")

    client = await ChatClient.connect(*stack.realm("beta"))
    try:
        session = await client.auth(alice, PW)
        assert session.waiting == Waiting(total=3, conversations=(WaitingCount(bob, "user", 2),
                                                                  WaitingCount(room, "group", 1)))
        assert session.waiting.line == f"3 messages waiting: 2 from {bob}, 1 in #{room}"
    finally:
        await client.close()

    r = run_cli(stack.realm("alpha"), [f"auth {alice} {PW}"])
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    at = lines.index(f"logged in as {alice} on realm alpha")
    assert lines[at + 1] == f"3 messages waiting: 2 from {bob}, 1 in #{room} (inbox shows them)"
    # Nothing waits: no line, and an account that never had anything says nothing either.
    client = await ChatClient.connect(*stack.realm("alpha"))
    try:
        await client.auth(alice, PW)
        await client.inbox()
        await client.inbox_group(room)
    finally:
        await client.close()
    r = run_cli(stack.realm("alpha"), [f"auth {alice} {PW}"])
    assert r.returncode == 0 and "waiting" not in r.stdout, r.stdout
    assert (await ChatClient.connect(*stack.realm("alpha"))).user is None  # connect alone: no login
    await b.close()


async def test_read_ticks_are_there_after_a_fresh_login(stack: Stack, uname: Names) -> None:
    alice, bob, room = uname("ka"), uname("kb"), uname("kroom")
    a = await login(*stack.realm("alpha"), alice)
    b = await login(*stack.realm("beta"), bob)
    await b.ok(f"creategroup {room}")
    await a.ok(f"joingroup {room}")
    m1 = await b.ok(f"sendprivate {alice} one")
    m2 = await b.ok(f"sendprivate {alice} two")
    mine = await a.ok(f"sendprivate {bob} from alice")
    g = await b.ok(f"sendgroup {room} group message")
    await a.ok(f"read {bob} {m1['id']}")
    await a.ok(f"read #{room} {g['id']}")

    async def bob_sees() -> dict[str, int]:
        client = await ChatClient.connect(*stack.realm("alpha"))  # a new device of bob's
        try:
            await client.auth(bob, PW)
            return {c.peer: c.seen for c in await client.conversations()}
        finally:
            await client.close()

    # Alice read up to m1: bob's newest message she has read is m1 (not her own message after it).
    assert await bob_sees() == {alice: m1["id"], room: 0}  # groups have no receipts
    await a.ok(f"read {bob} {mine['id']}")
    assert await bob_sees() == {alice: m2["id"], room: 0}
    # The text protocol carries it too; alice's own side: bob has not read her message.
    r = await b.ok("conversations")
    assert conv(r, alice)["seen"] == m2["id"] and conv(r, room)["seen"] == 0
    assert conv(await a.ok("conversations"), bob)["seen"] == 0
    await b.ok(f"read {alice} {mine['id']}")
    assert conv(await a.ok("conversations"), bob)["seen"] == mine["id"]
    # Receipts off: the reader's marker is hers alone, as with the live events.
    await a.ok("receipts off")
    assert await bob_sees() == {alice: 0, room: 0}
    await a.ok("receipts on")
    assert await bob_sees() == {alice: m2["id"], room: 0}
    await a.close()
    await b.close()
