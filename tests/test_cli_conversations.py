"""Conversation state that follows the user (protocol version 2), through chat_cli against a
real main server and two realms: the library's verbs and events, and the terminal client."""

from __future__ import annotations

import asyncio
import fcntl
import re
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path

from chat_cli import (
    ChatClient,
    ConversationInfo,
    PresenceEvent,
    ReadEvent,
    SeenEvent,
    TypingEvent,
)

from .stack import Stack
from .test_cli_terminal import PtyCli, run_cli
from .test_client_lib import PW, until, user


def find(convs: list[ConversationInfo], peer: str) -> ConversationInfo:
    found = [c for c in convs if c.peer.casefold() == peer.casefold()]
    assert found, f"{peer} not in {[c.peer for c in convs]}"
    return found[0]


async def test_conversations_unread_read_and_the_other_device(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob, room = uname("alice"), uname("bob"), uname("room")
    a, a_rec = await user(stack.realm("alpha"), alice)
    b, b_rec = await user(stack.realm("beta"), bob)
    # alice's second device, on the other realm
    a2, a2_rec = await user(stack.realm("beta"), alice, register=False)
    try:
        await a.create_group(room)
        await b.join_group(room)
        s1 = await b.send_private(alice, "one")
        s2 = await b.send_private(alice, "two")
        g1 = await b.send_group(room, f"hey @{alice} look")
        await until(lambda: len(a_rec.messages()) >= 3, what="alice's pushes")

        convs = await a.conversations()
        # newest first: the group message came last
        assert [c.peer.casefold() for c in convs[:2]] == [room.casefold(), bob.casefold()]
        with_bob, in_room = find(convs, bob), find(convs, room)
        assert with_bob.kind == "user" and not with_bob.is_group and with_bob.unread == 2
        assert with_bob.last is not None and with_bob.last.id == s2.id and with_bob.last.text == "two"
        assert in_room.is_group and in_room.target == f"#{room}" and in_room.unread == 1
        assert in_room.last is not None and in_room.last.id == g1.id

        # reading on one device: the other one hears it, bob sees his message was read
        assert await a.read(bob, s1.id) == s1.id
        await until(lambda: any(isinstance(e, ReadEvent) and e.peer.casefold() == bob.casefold()
                                and e.id == s1.id for e in a2_rec.events), what="read event on alice's other device")
        await until(lambda: any(isinstance(e, SeenEvent) and e.by.casefold() == alice.casefold()
                                and e.id == s1.id for e in b_rec.events), what="seen event at bob")
        assert find(await a2.conversations(), bob).unread == 1
        # never moves back
        assert await a.read(bob, s2.id) == s2.id
        assert await a.read(bob, s1.id) == s2.id
        with_bob = find(await a.conversations(), bob)
        assert with_bob.unread == 0 and with_bob.read == s2.id
        await a.read(f"#{room}", g1.id)
        assert find(await a2.conversations(), room).unread == 0

        # the list survives a logout and is the same on every device
        await a.logout()
        await a.auth(alice, PW)
        assert {c.peer.casefold() for c in await a.conversations()} == {bob.casefold(), room.casefold()}
    finally:
        for c in (a, b, a2):
            await c.close()


async def test_mentions_are_counted(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob, room = uname("alice"), uname("bob"), uname("room")
    a, _ = await user(stack.realm("alpha"), alice)
    b, _ = await user(stack.realm("beta"), bob)
    try:
        await a.create_group(room)
        await b.join_group(room)
        await b.send_group(room, "no mention")
        g = await b.send_group(room, f"hey @{alice} look")
        in_room = find(await a.conversations(), room)
        assert in_room.unread == 2 and in_room.mentions == 1
        await a.read(room, g.id)
        assert find(await a.conversations(), room).mentions == 0
    finally:
        await a.close()
        await b.close()


async def test_receipts_off_means_no_seen(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    a, _ = await user(stack.realm("alpha"), alice)
    b, b_rec = await user(stack.realm("alpha"), bob)
    try:
        assert await a.receipts() is True  # only asks
        assert await a.receipts(False) is False
        assert await a.receipts() is False
        s = await b.send_private(alice, "private")
        await a.read(bob, s.id)
        await asyncio.sleep(0.5)
        assert not [e for e in b_rec.events if isinstance(e, SeenEvent)]
        assert await a.receipts(True) is True
        s2 = await b.send_private(alice, "again")
        await a.read(bob, s2.id)
        await until(lambda: any(isinstance(e, SeenEvent) and e.id == s2.id for e in b_rec.events), what="seen")
    finally:
        await a.close()
        await b.close()


async def test_carbons_reach_the_other_session_as_own(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    a, _ = await user(stack.realm("alpha"), alice)
    a2, a2_rec = await user(stack.realm("beta"), alice, register=False)
    b, _ = await user(stack.realm("beta"), bob)
    try:
        sent = await a.send_private(bob, "from my phone")
        await until(lambda: a2_rec.messages(), what="the carbon")
        ev = a2_rec.messages()[0]
        assert ev.own and ev.peer.casefold() == bob.casefold() and ev.message.id == sent.id
        assert ev.message.sender.casefold() == alice.casefold() and ev.message.text == "from my phone"
        # a message from bob is not own, and belongs to the chat with bob
        await b.send_private(alice, "hi")
        await until(lambda: len(a2_rec.messages()) >= 2, what="bob's message")
        ev2 = a2_rec.messages()[1]
        assert not ev2.own and ev2.peer.casefold() == bob.casefold()
    finally:
        for c in (a, a2, b):
            await c.close()


async def test_presence_away_back_typing_and_who(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob, room = uname("alice"), uname("bob"), uname("room")
    a, a_rec = await user(stack.realm("alpha"), alice)
    b, b_rec = await user(stack.realm("beta"), bob)
    try:
        await b.send_private(alice, "hello")  # now they share a conversation
        await a.create_group(room)
        await b.join_group(room)
        assert await b.away("lunch, back at 2") == "away"
        await until(lambda: any(isinstance(e, PresenceEvent) and e.user.casefold() == bob.casefold()
                                and e.status == "away" and e.message == "lunch, back at 2" for e in a_rec.events),
                    what="away presence")
        row = [p for p in await a.who() if p.user.casefold() == bob.casefold()]
        assert row and row[0].away and row[0].message == "lunch, back at 2" and row[0].realm == "beta"
        await asyncio.sleep(1.1)  # presence is coalesced to once a second per user
        assert await b.back() == "online"
        await until(lambda: any(isinstance(e, PresenceEvent) and e.user.casefold() == bob.casefold()
                                and e.status == "online" for e in a_rec.events), what="back presence")

        await b.typing(alice)
        await until(lambda: any(isinstance(e, TypingEvent) and e.user.casefold() == bob.casefold()
                                and not e.group for e in a_rec.events), what="private typing")
        ev = next(e for e in a_rec.events if isinstance(e, TypingEvent))
        assert ev.conversation.casefold() == bob.casefold()
        await b.typing(room)
        await until(lambda: any(isinstance(e, TypingEvent) and e.group and e.peer.casefold() == room.casefold()
                                for e in a_rec.events), what="group typing")

        await asyncio.sleep(1.1)
        await b.close()
        await until(lambda: any(isinstance(e, PresenceEvent) and e.user.casefold() == bob.casefold()
                                and e.status == "offline" for e in a_rec.events), what="offline presence")
        assert not any(isinstance(e, TypingEvent) for e in b_rec.events)  # nobody typed to bob
    finally:
        await a.close()
        await b.close()


async def test_terminal_conversations_away_and_read_on_view(stack: Stack, uname: Callable[[str], str],
                                                      tmp_path: Path) -> None:
    alice, bob = uname("alice"), uname("bob")
    b, _ = await user(stack.realm("beta"), bob)
    a0 = await ChatClient.connect(*stack.realm("alpha"))
    await a0.register(alice, PW)
    await a0.close()
    await b.send_private(alice, "first")
    await b.send_private(alice, f"second @{alice}")
    host, port = stack.realm("alpha")
    script = "\n".join([f"auth {alice} {PW}", "conversations", f"history {bob}", "conversations",
                        "away gone fishing", "who", "back", "receipts off", "receipts maybe", "quit"]) + "\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chat_cli", "--host", host, "--port", str(port), "--download-dir", str(tmp_path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(script.encode()), 60)
    out = out_b.decode() + "\n--- stderr:\n" + err_b.decode()
    try:
        tables = re.findall(r"^CONVERSATION +UNREAD +LAST +MESSAGE\n-+.*\n(.*)$", out, re.M)
        assert len(tables) == 2, out
        assert tables[0].startswith(bob) and re.search(r"^\S+ +2 ", tables[0]), out
        # viewing the conversation (history) read it
        assert re.match(rf"^{bob} +\d\d:\d\d", tables[1]) and " 2 " not in tables[1], out
        assert "you are away: gone fishing" in out and "you are online" in out, out
        assert re.search(rf"^{alice} +alpha +away: gone fishing$", out, re.M), out
        assert "read receipts off" in out and "usage: receipts [on|off]" in out, out
        assert proc.returncode == 1  # the bad receipts line failed
    finally:
        await b.close()


def test_interactive_typing_in_the_toolbar_and_presence_dimmed(stack: Stack, uname: Callable[[str], str],
                                                                tmp_path: Path) -> None:
    """On a terminal, "bob is typing…" shows at the right end of the prompt line, and a presence
    change is a quiet line above it."""
    alice, bob = uname("alice"), uname("bob")
    assert run_cli(stack.realm("beta"), [f"register {bob} {PW}"]).returncode == 0
    t = PtyCli(stack.realm("alpha"), tmp_path)
    # A real terminal's size: the toolbar needs a row of its own.
    fcntl.ioctl(t.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        t.read_until(b"guest@alpha>")
        t.type(f"register {alice} {PW}\r")
        t.read_until(f"registered {alice}".encode())
        t.type(f"auth {alice} {PW}\r")
        logged_in = t.read_until(f"logged in as {alice}".encode())
        t.read_until(f"{alice}@alpha>".encode(), logged_in)
        # bob writes (now they share a conversation), types, then goes away.
        r = run_cli(stack.realm("beta"), [f"auth {bob} {PW}", f"sendprivate {alice} hi", f"typing {alice}",
                                          "away out for lunch"], "--wait", "1.5")
        assert r.returncode == 0, r.stdout
        at = t.read_until(b"] hi", logged_in)
        typing = t.read_until(f"{bob} is typing".encode(), at)  # the "…" may be drawn apart
        t.read_until_re(rf"· {bob} is (away on realm beta: out for lunch|offline)".encode(), at)
        assert typing > at
    finally:
        t.close()
