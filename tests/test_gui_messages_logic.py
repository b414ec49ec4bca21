"""The GUI's message life (reply, edit, delete, reactions, mentions, search, older history
pages) through its controller and state, against a real stack: main + realms alpha and beta.
The views call exactly these operations and render exactly this state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from chat_cli import ChatClient
from gui.controller import ChatController
from gui.state import ChatLine, Conversation, Kind, Status, conv_key
from realmchat.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable

from .stack import Stack, start_main
from .test_client_lib import user
from .test_gui_logic import PW, logged_in, make_controller, until

__all__ = ["make_controller"]  # the fixture, re-used


def line_of(ctl: ChatController, key: str, msg_id: int | None) -> ChatLine | None:
    conv = ctl.state.conversations.get(key)
    return conv.find(msg_id) if conv is not None else None


async def test_reply_edit_react_delete_live_between_two_guis(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob = uname("alice"), uname("bob")
    a = await logged_in(make_controller(), stack.realm("alpha"), alice)
    b = await logged_in(make_controller(), stack.realm("beta"), bob)
    a_key, b_key = conv_key(Kind.PRIVATE, bob), conv_key(Kind.PRIVATE, alice)

    await a.start_private(bob)
    first = await a.send(f"hey @{bob}, see this")
    assert first.id is not None and not first.mention  # own messages never highlight
    seen = await until(lambda: line_of(b, b_key, first.id), "bob gets the message")
    assert seen.mention, "a message naming bob is highlighted for him"

    # Reply: the preview, then the message carries reply_to on both sides.
    await b.open_conversation(b_key)
    b.start_reply(first.id or 0)
    assert b.current is not None and b.current.replying_to == first.id
    answer = await b.send("looks good")
    assert answer.reply_to == first.id and b.current.replying_to is None
    got = await until(lambda: line_of(a, a_key, answer.id), "alice gets the reply")
    assert got.reply_to == first.id and got.text == "looks good"

    # Edit from alice's composer: bob's line changes live, marked edited.
    await a.open_conversation(a_key)
    assert a.start_edit(first.id or 0) == f"hey @{bob}, see this"
    with pytest.raises(InvalidArgument):
        a.start_edit(answer.id or 0)  # not hers
    await a.send(f"hey @{bob}, see this now")
    assert first.edited and first.text == f"hey @{bob}, see this now" and a.current and a.current.editing is None
    await until(lambda: seen.edited and seen.text == f"hey @{bob}, see this now", "bob sees the edit live")

    # Reactions: a chip click toggles; the other side follows live.
    assert await b.toggle_reaction(first.id or 0, "👍") is True
    assert seen.reactions == {"👍": [bob]}
    await until(lambda: first.reactions == {"👍": [bob]}, "alice sees bob's reaction")
    assert await a.toggle_reaction(first.id or 0, "👍") is True
    await until(lambda: seen.reactions == {"👍": [bob, alice]}, "bob sees alice's")
    assert await b.toggle_reaction(first.id or 0, "👍") is False
    await until(lambda: first.reactions == {"👍": [alice]}, "alice sees bob's taken back")

    # Delete: only the author; the tombstone shows on both sides.
    with pytest.raises(PermissionDenied):
        await b.delete_message(first.id or 0)
    await a.delete_message(first.id or 0)
    assert first.deleted and first.text == ""
    await until(lambda: seen.deleted and seen.text == "" and not seen.reactions, "bob sees the tombstone")
    assert b.state.conversations[b_key].preview.endswith("looks good")  # the reply is the last line

    # History is the source of truth: reloading it (as after a reconnect) brings a line that
    # missed changes up to date in place.
    await b.toggle_reaction(answer.id or 0, "🎉")
    stale = line_of(a, a_key, answer.id)
    assert stale is not None
    await until(lambda: stale.reactions == {"🎉": [bob]}, "alice sees bob's reaction on his reply")
    stale.text, stale.reactions, seen_before = "stale", {}, len(a.state.conversations[a_key].lines)
    await a.load_history(a.state.conversations[a_key])
    assert stale.text == "looks good" and stale.reactions == {"🎉": [bob]}
    assert len(a.state.conversations[a_key].lines) == seen_before


async def test_search_opens_the_conversation_and_history_pages(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob = uname("alice"), uname("bob")
    token = uname("walrus").replace("_", "")
    reg = await ChatClient.connect(*stack.realm("alpha"))
    await reg.register(alice, PW)
    await reg.close()
    client, _ = await user(stack.realm("beta"), bob)
    try:
        ids = [(await client.send_private(alice, f"{token} number {i}" if i == 1 else f"filler {i}")).id
               for i in range(12)]
    finally:
        await client.close()
    a = await logged_in(make_controller(history_page=5), stack.realm("alpha"), alice, register=False)
    await a.refresh_groups()

    hits = await a.search(token)
    assert [h.message.id for h in hits] == [ids[1]] and a.state.search_results == hits
    assert hits[0].kind == "user" and hits[0].peer == bob
    # Opening the hit loads older pages until the message is there, and marks it.
    conv = await a.open_hit(hits[0])
    assert a.state.current == conv_key(Kind.PRIVATE, bob) and conv.highlight == ids[1]
    assert conv.find(ids[1]) is not None
    a.clear_search()
    assert a.state.search_results == [] and a.state.search_query == ""

    # A fresh view of the same conversation: one page, then older ones on scroll.
    b2 = await logged_in(make_controller(history_page=5), stack.realm("alpha"), alice, register=False)
    c2 = await b2.start_private(bob)
    assert [ln.id for ln in c2.lines] == ids[-5:] and c2.more
    assert await b2.load_older() == 5
    assert [ln.id for ln in c2.lines] == ids[2:] and c2.more
    assert await b2.load_older() == 2
    assert [ln.id for ln in c2.lines] == ids and not c2.more
    assert await b2.load_older() == 0  # nothing left: no call

    # A result older than many pages: the page around it, then what lies between it and the newest.
    client, _ = await user(stack.realm("beta"), bob, register=False)
    try:
        later = [(await client.send_private(alice, f"later {i}")).id for i in range(25)]
    finally:
        await client.close()
    deep = await logged_in(make_controller(history_page=1), stack.realm("alpha"), alice, register=False)
    conv = await deep.open_hit((await deep.search(token))[0])
    assert conv.highlight == ids[1] and [ln.id for ln in conv.lines] == ids[1:] + later
    assert conv.more and await deep.load_older() == 1  # the one before it, on scroll
    assert [ln.id for ln in conv.lines] == ids + later and not conv.more


def test_lines_of_one_millisecond_keep_their_sending_order() -> None:
    """Timestamps have millisecond precision: ids order the messages that share one, whatever
    order they arrive in (an older page loaded after a newer one, a push after history)."""
    ts = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)
    conv = Conversation(Kind.PRIVATE, "bob")
    for msg_id in (10, 11, 12, 9, 8):
        assert conv.add(ChatLine("bob", f"m{msg_id}", ts, id=msg_id))
    assert not conv.add(ChatLine("bob", "m9", ts, id=9))
    assert [ln.id for ln in conv.lines] == [8, 9, 10, 11, 12]


async def test_drafts_and_failed_messages_stay_with_their_conversation(
        fresh_stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    """What the views rely on: each conversation keeps its own draft and its own "not sent"
    line; a failure that comes back after the user moved elsewhere lands where the message was
    written; Retry sends to that conversation whichever is open; a send that goes through
    clears the "not sent" line."""
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    a = await logged_in(make_controller(), fresh_stack.realm("alpha"), alice)
    b = await logged_in(make_controller(), fresh_stack.realm("beta"), bob)
    c = await logged_in(make_controller(), fresh_stack.realm("beta"), carol)
    to_bob, to_carol = await a.start_private(bob), await a.start_private(carol)
    a.set_draft("half a thought for carol", to_carol.key)
    assert a.state.current == to_carol.key and to_bob.draft == ""

    # ---- main is down: a message to bob fails while carol's chat is the open one -----------
    port = fresh_stack.main.port
    fresh_stack.main.kill()
    with pytest.raises(Unavailable):
        await a.send("for bob only", to_bob.key)
    failed = to_bob.lines[-1]
    assert failed.error and failed.text == "for bob only"
    assert to_bob.send_error and to_bob.draft == "for bob only" and to_bob.draft_rev == 1
    assert to_carol.send_error == "" and to_carol.draft == "half a thought for carol" and to_carol.draft_rev == 0
    # Something typed meanwhile is never overwritten by a failure.
    a.set_draft("typed while it failed", to_carol.key)
    with pytest.raises(Unavailable):
        await a.send("second failure", to_carol.key)
    assert to_carol.draft == "typed while it failed" and to_carol.send_error

    fresh_stack.main = start_main(fresh_stack.data_dir, port)
    await until(lambda: a.state.status is Status.ONLINE, "online again", timeout=30)

    # ---- a send that goes through clears the conversation's "not sent" line -----------------
    a.set_draft("", to_carol.key)  # what the view does as it sends the box's text
    await a.send("hello carol", to_carol.key)
    assert to_carol.send_error == "" and to_bob.send_error  # bob's failure is still bob's

    # ---- Retry from carol's chat still goes to bob, and takes the text out of bob's box --------
    assert a.state.current == to_carol.key
    await a.retry(failed)
    assert failed.id is not None and not failed.error
    assert to_bob.send_error == "" and to_bob.draft == "" and to_bob.draft_rev == 2
    await until(lambda: any(ln.text == "for bob only" for cv in b.state.conversations.values() for ln in cv.lines),
                "bob gets the retried message", timeout=20)
    await until(lambda: any(ln.text == "hello carol" for cv in c.state.conversations.values() for ln in cv.lines),
                "carol gets her message", timeout=20)
    carol_sees = [ln.text for cv in c.state.conversations.values() for ln in cv.lines]
    assert "for bob only" not in carol_sees and "half a thought for carol" not in carol_sees, carol_sees

    # ---- editing puts the message into that conversation's box; cancelling takes it out ------
    rev = to_carol.draft_rev
    a.start_edit(to_carol.lines[-1].id or 0, to_carol.key)
    assert to_carol.draft == "hello carol" and to_carol.draft_rev == rev + 1 and to_bob.draft == ""
    a.cancel_reply(to_carol.key)
    assert to_carol.draft == "" and to_carol.editing is None


async def test_the_open_history_comes_back_once_main_does(
        fresh_stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    """A history that could not load while main was down is loaded again, without a click,
    once main answers: the header's probe notices and refreshes what failed."""
    alice, bob = uname("alice"), uname("bob")
    a = await logged_in(make_controller(), fresh_stack.realm("alpha"), alice)
    await logged_in(make_controller(), fresh_stack.realm("beta"), bob)
    to_bob = await a.start_private(bob)
    await a.send("before the outage", to_bob.key)
    port = fresh_stack.main.port
    fresh_stack.main.kill()
    await a.load_history(to_bob)
    assert to_bob.history_error.startswith("could not load the history"), to_bob.history_error
    await until(lambda: a.state.status is Status.DEGRADED, "main unreachable", timeout=30)
    fresh_stack.main = start_main(fresh_stack.data_dir, port)
    await until(lambda: a.state.status is Status.ONLINE, "online again", timeout=30)
    await until(lambda: to_bob.history_error == "", "the history loaded again", timeout=30)
    assert [ln.text for ln in to_bob.lines if ln.id is not None] == ["before the outage"]


def test_a_draft_changed_by_the_app_is_counted() -> None:
    conv = Conversation(Kind.GROUP, "design")
    conv.draft = "typed"  # the user's typing: the box already shows it
    assert conv.draft_rev == 0
    conv.put_draft("put back")
    assert (conv.draft, conv.draft_rev) == ("put back", 1)


async def test_where_a_message_went(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    a = await logged_in(make_controller(), stack.realm("alpha"), alice)
    b = await logged_in(make_controller(), stack.realm("beta"), bob)
    c = await logged_in(make_controller(), stack.realm("alpha"), carol)
    await a.start_private(bob)
    sent = await a.send("follow me")
    assert sent.id is not None
    await until(lambda: line_of(b, conv_key(Kind.PRIVATE, alice), sent.id), "bob gets it")

    async def delivered(ctl: ChatController) -> list[str]:
        steps: list[str] = []
        for _ in range(100):
            steps = [h.step for h in await ctl.trace_message(sent.id or 0)]
            if "delivered" in steps:
                break
            await asyncio.sleep(0.1)
        return steps

    assert await delivered(a) == ["stored", "pushed", "written", "delivered"]
    theirs = await b.trace_message(sent.id)
    assert theirs[1].realm == "beta" and theirs[1].users == (bob,)
    with pytest.raises(NotFound):
        await c.trace_message(sent.id)
