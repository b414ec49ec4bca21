"""The GUI's conversation state (the list and its unread/mention counts from the server, read on
open and on other devices, seen ticks, live presence without polling `who`, away, typing)
through its controller against a real stack: main + realms alpha and beta."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chat_cli import ChatClient
from gui.controller import ChatController
from gui.state import Kind, conv_key

from .stack import Stack
from .test_gui_logic import PW, logged_in, make_controller, until

__all__ = ["make_controller"]  # the fixture, re-used


async def test_counts_come_from_the_server_and_follow_other_devices(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, room = uname("alice"), uname("bob"), uname("room")
    sender = await logged_in(make_controller(), stack.realm("beta"), bob)
    await sender.create_group(room)
    laptop = await logged_in(make_controller(), stack.realm("alpha"), alice)
    await laptop.join_group(room)
    laptop.close_conversation()
    phone = await logged_in(make_controller(), stack.realm("beta"), alice, register=False)

    await sender.start_private(alice)
    await sender.send("one")
    await sender.send("two")
    await sender.send(f"hi @{alice}", conv_key(Kind.GROUP, room))
    bob_key, room_key = conv_key(Kind.PRIVATE, bob), conv_key(Kind.GROUP, room)
    for ctl in (laptop, phone):
        await until(lambda ctl=ctl: ctl.state.conversations.get(bob_key)
                    and ctl.state.conversations[bob_key].unread == 2, "two unread from bob")
        await until(lambda ctl=ctl: ctl.state.conversations.get(room_key)
                    and ctl.state.conversations[room_key].unread == 1, "one unread in the room")

    # Reading on the laptop clears the phone's count (a read event) and ticks bob's messages.
    await laptop.open_conversation(bob_key)
    await until(lambda: phone.state.conversations[bob_key].unread == 0, "the phone's count cleared")
    bob_conv = sender.state.conversations[conv_key(Kind.PRIVATE, alice)]
    await until(lambda: bob_conv.lines and all(bob_conv.seen(ln) for ln in bob_conv.lines if ln.own),
                "two ticks at bob")

    # A fresh login (a third device, or after logout) finds the list with the server's counts.
    await phone.logout()
    assert not phone.state.conversations
    await phone.login(alice, PW)
    assert phone.server_state
    assert phone.state.conversations[bob_key].unread == 0
    assert phone.state.conversations[room_key].unread == 1
    assert phone.state.conversations[room_key].last is not None
    # The message names alice: counted as a mention, live and by the server.
    assert laptop.state.conversations[room_key].mentions == 1
    assert phone.state.conversations[room_key].mentions == 1


async def test_carbons_presence_away_and_typing(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob = uname("alice"), uname("bob")
    watcher = await logged_in(make_controller(), stack.realm("alpha"), alice)
    assert watcher.who_interval > 0  # the probe runs, but presence comes from events
    peer = await logged_in(make_controller(), stack.realm("beta"), bob)
    await peer.start_private(alice)
    await peer.send("hello")
    bob_key = conv_key(Kind.PRIVATE, bob)
    await until(lambda: bob_key in watcher.state.conversations, "bob's conversation")

    # A message alice sends from another session shows as her own line, in the chat with bob.
    other = await ChatClient.connect(*stack.realm("beta"))
    try:
        await other.auth(alice, PW)
        await other.send_private(bob, "sent from my phone")
    finally:
        await other.close()
    conv = watcher.state.conversations[bob_key]
    line = await until(lambda: next((ln for ln in conv.lines if ln.text == "sent from my phone"), None),
                       "the carbon in the chat with bob")
    assert line.own and conv.unread == 1  # bob's hello, not the carbon

    # Presence, live, from events (bob came online before they shared anything: his message
    # says he is online).
    await until(lambda: watcher.state.presence_of(bob), "bob online")
    await asyncio.sleep(1.1)
    await peer.set_away("in a meeting")
    assert peer.state.away
    await until(lambda: (p := watcher.state.presence_of(bob)) and p.away and p.message == "in a meeting",
                "bob away with his message")
    await asyncio.sleep(1.1)
    await peer.set_back()
    await until(lambda: (p := watcher.state.presence_of(bob)) and not p.away, "bob back")

    # Typing: sent at most every few seconds, shown in the right conversation, gone after ~5 s.
    peer.user_typing()
    peer.user_typing()  # throttled: one event
    await until(lambda: conv.typing_label == f"{bob} is typing…", "bob is typing")
    await until(lambda: not conv.typing_label, "the indicator gone", timeout=8)

    await asyncio.sleep(1.1)
    await peer.logout()
    await until(lambda: watcher.state.presence_of(bob) is None, "bob offline")
    assert not any(p.user == bob for p in watcher.state.online)


async def test_the_receipts_switch_shows_the_account_s_setting_after_a_login(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice = uname("alice")
    laptop = await logged_in(make_controller(), stack.realm("alpha"), alice)
    assert laptop.state.receipts is True
    await laptop.set_receipts(False)
    phone = await logged_in(make_controller(), stack.realm("beta"), alice, register=False)
    assert phone.state.receipts is False  # chosen on the laptop, shown on the phone
    await phone.set_receipts(True)
    await laptop.logout()
    await laptop.login(alice, PW)
    assert laptop.state.receipts is True
