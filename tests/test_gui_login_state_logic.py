"""The GUI right after a login, through its controller against a real stack: the read ticks of
the user's own messages are there at once (from the conversation list, not from live events
the app was not connected for), and the side list says what waited (the auth reply's summary),
even though the app fetches those messages itself."""

from __future__ import annotations

from collections.abc import Callable

from chat_cli import ChatClient
from gui.controller import ChatController
from gui.state import Kind, conv_key

from .stack import Stack
from .test_gui_logic import PW, logged_in, make_controller, until

__all__ = ["make_controller"]  # the fixture, re-used


async def test_ticks_and_the_waiting_line_after_a_new_login(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, room = uname("alice"), uname("bob"), uname("room")
    ctl = await logged_in(make_controller(), stack.realm("alpha"), bob)
    assert ctl.state.waiting_line == ""  # a new account: nothing waited
    await ctl.create_group(room)
    reader = await ChatClient.connect(*stack.realm("beta"))
    try:
        await reader.register(alice, PW)
        await reader.auth(alice, PW)
        await reader.join_group(room)
        await ctl.start_private(alice)
        await ctl.send("one")
        await ctl.send("two")
        alice_key = conv_key(Kind.PRIVATE, alice)
        conv = ctl.state.conversations[alice_key]
        newest = await until(lambda: conv.newest_id, "both sent")
        await ctl.logout()
        # Away from the app: alice reads both on her device and writes back; the room gets one.
        await reader.read(bob, newest)
        await reader.send_private(bob, "got them")
        await reader.send_private(bob, "thanks")
        await reader.send_group(room, "hello room")
    finally:
        await reader.close()

    await ctl.login(bob, PW)
    conv = ctl.state.conversations[alice_key]
    assert conv.seen_id == newest  # from the conversation list: no seen event reached this app
    assert ctl.state.waiting.total == 3
    assert ctl.state.waiting_line == f"3 messages waiting when you logged in: 2 from {alice}, 1 in #{room}"
    # The ticks show on the messages as soon as the conversation opens.
    await ctl.open_conversation(alice_key)
    own = [ln for ln in conv.lines if ln.own]
    assert [ln.text for ln in own] == ["one", "two"] and all(conv.seen(ln) for ln in own)
    assert not any(conv.seen(ln) for ln in conv.lines if not ln.own)
    # A group has no ticks; a logout forgets the line.
    assert ctl.state.conversations[conv_key(Kind.GROUP, room)].seen_id == 0
    await ctl.logout()
    assert ctl.state.waiting_line == ""
