"""Messages have a life, through chat_cli: edit, delete, reply, react/unreact, history pages,
search, mentions and the edited/deleted/reaction events (library), and the same verbs in the
terminal client, against a real main server and two realms (alpha, beta)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from chat_cli import (
    ChatClient,
    DeletedEvent,
    EditedEvent,
    HistoryPage,
    InvalidArgument,
    MessageEvent,
    NotFound,
    PermissionDenied,
    ReactionEvent,
)

from .stack import Stack
from .test_cli_terminal import LiveCli, run_cli
from .test_client_lib import PW, Recorder, user

T = TypeVar("T")


async def until(cond: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Polls `cond` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def of(rec: Recorder, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in rec.events if isinstance(e, kind)]


def pushed(rec: Recorder, msg_id: int) -> MessageEvent | None:
    return next((e for e in rec.messages() if e.message.id == msg_id), None)


async def close_all(*clients: ChatClient) -> None:
    for c in clients:
        await c.close()


# ---- library ----------------------------------------------------------------------------------


async def test_private_message_life_across_realms(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b = uname("alice"), uname("bob")
    alice, a_rec = await user(stack.realm("alpha"), a)
    bob, b_rec = await user(stack.realm("beta"), b)
    # alice's second session (another device, the other realm) hears of her own changes too.
    alice2, a2_rec = await user(stack.realm("beta"), a, register=False)
    try:
        sent = await alice.send_private(b, f"halo @{b}, lunch?")
        ev = await until(lambda: pushed(b_rec, sent.id), what="bob gets the message")
        assert ev.message.mention and ev.message.names(b), ev.message
        assert ev.message.reply_to is None and not ev.message.edited and not ev.message.deleted

        # A reply goes to the conversation of the message, with reply_to.
        r = await bob.reply(sent.id, "yes, at noon")
        got = await until(lambda: pushed(a_rec, r.id), what="alice gets the reply")
        assert got.message.reply_to == sent.id and got.message.sender == b and got.message.to == a
        assert got.message.text == "yes, at noon" and got.message.peer(a) == b

        # Edit: the author only; everyone who sees it (and the author's other session) is told.
        edited = await alice.edit(sent.id, f"halo @{b}, lunch at noon?")
        assert edited.id == sent.id and edited.edited
        ed = await until(lambda: [e for e in of(b_rec, EditedEvent) if e.id == sent.id], what="bob sees the edit")
        assert ed[0].text == f"halo @{b}, lunch at noon?" and ed[0].edited
        await until(lambda: [e for e in of(a2_rec, EditedEvent) if e.id == sent.id], what="alice's other session")
        assert not [e for e in of(a_rec, EditedEvent) if e.id == sent.id], "the acting session gets the OK only"
        with pytest.raises(PermissionDenied):
            await bob.edit(sent.id, "not mine to change")
        with pytest.raises(NotFound):
            await alice.edit(10**12, "no such message")

        # Reactions, on and off, seen live by the other side.
        assert await bob.react(sent.id, "👍") == sent.id
        on = await until(lambda: [e for e in of(a_rec, ReactionEvent) if e.id == sent.id and e.on],
                         what="alice sees bob's reaction")
        assert on[0].user == b and on[0].emoji == "👍"
        await alice.react(sent.id, "🎉")
        page = await bob.history(a)
        msg = next(m for m in page if m.id == sent.id)
        assert msg.reactions.get("👍") == (b,) and msg.reactions.get("🎉") == (a,), msg.reactions
        assert msg.edited and msg.text == f"halo @{b}, lunch at noon?"
        assert next(m for m in page if m.id == r.id).reply_to == sent.id
        await bob.unreact(sent.id, "👍")
        await until(lambda: [e for e in of(a_rec, ReactionEvent) if e.id == sent.id and not e.on],
                    what="alice sees the reaction taken back")
        msg = next(m for m in await alice.history(b) if m.id == sent.id)
        assert "👍" not in msg.reactions and msg.reacted("🎉", a)
        with pytest.raises(InvalidArgument):
            await bob.react(sent.id, "two words")
        with pytest.raises(InvalidArgument):
            await bob.react(sent.id, "x" * 17)

        # Delete: bob may not delete alice's message; alice may. A tombstone stays, text empty.
        with pytest.raises(PermissionDenied):
            await bob.delete(sent.id)
        assert await alice.delete(sent.id) == sent.id
        de = await until(lambda: [e for e in of(b_rec, DeletedEvent) if e.id == sent.id], what="bob sees the delete")
        assert de[0].by == a
        for m in await bob.history(a):
            if m.id == sent.id:
                assert m.deleted and m.text == "", m
        with pytest.raises(NotFound):
            await alice.edit(sent.id, "too late")
    finally:
        await close_all(alice, alice2, bob)


async def test_history_pages_before_and_after(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b = uname("alice"), uname("bob")
    alice, _ = await user(stack.realm("alpha"), a)
    bob, _ = await user(stack.realm("beta"), b)
    try:
        ids = [(await alice.send_private(b, f"line {i}")).id for i in range(12)]
        last = await bob.history(a, 5)
        assert isinstance(last, HistoryPage) and [m.id for m in last] == ids[-5:] and last.more
        older = await bob.history(a, 5, before=last[0].id)
        assert [m.id for m in older] == ids[2:7] and older.more
        oldest = await bob.history(a, 5, before=older[0].id)
        assert [m.id for m in oldest] == ids[:2] and not oldest.more
        after = await bob.history(a, 3, after=ids[0])
        assert [m.id for m in after] == ids[1:4] and after.more
        tail = await bob.history(a, 5, after=ids[-3])
        assert [m.id for m in tail] == ids[-2:] and not tail.more
        with pytest.raises(InvalidArgument):
            await bob.history(a, 5, before=ids[3], after=ids[1])
        around = await bob.history(a, 5, around=ids[6])
        assert [m.id for m in around] == ids[4:9] and around.more
        between = await bob.history(a, 3, between=(ids[9], ids[2]))
        assert [m.id for m in between] == ids[6:9] and between.more
        by_time = await bob.history(a, 20, after=last[0].ts)
        assert ids[-1] in [m.id for m in by_time] and last[0].id not in [m.id for m in by_time]
        with pytest.raises(InvalidArgument):
            await bob.history(a, 5, around="noon")
        with pytest.raises(InvalidArgument):
            await bob.history(a, 5, around=ids[0], between=(ids[1], ids[2]))
    finally:
        await close_all(alice, bob)


async def test_group_life_moderation_mentions_and_search(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b, c, g = uname("alice"), uname("bob"), uname("carol"), uname("crew")
    token = uname("zebra").replace("_", "")
    alice, a_rec = await user(stack.realm("alpha"), a)
    bob, b_rec = await user(stack.realm("beta"), b)
    carol, c_rec = await user(stack.realm("alpha"), c)
    try:
        await alice.create_group(g)
        await bob.join_group(g)
        await carol.join_group(g)
        sent = await bob.send_group(g, f"@{c} the {token} report is ready")
        for rec, name, mentioned in ((a_rec, a, False), (c_rec, c, True)):
            ev = await until(lambda rec=rec: pushed(rec, sent.id), what=f"{name} gets the group message")
            assert ev.message.group and ev.message.group.lower() == g.lower()
            assert ev.message.mention is mentioned, (name, ev.message)
        priv = await alice.send_private(b, f"the {token} numbers look odd")

        # Search: best first, each hit with its conversation; only what the caller may read.
        hits = await bob.search(token)
        by_id = {h.message.id: h for h in hits}
        assert set(by_id) == {sent.id, priv.id}, hits
        assert by_id[sent.id].kind == "group" and by_id[sent.id].peer.lower() == f"#{g}".lower()
        assert by_id[priv.id].kind == "user" and by_id[priv.id].peer == a
        assert [h.message.id for h in await bob.search(token, f"#{g}")] == [sent.id]
        assert [h.message.id for h in await bob.search(token, f"@{a}")] == [priv.id]
        assert [h.message.id for h in await carol.search(token)] == [sent.id]  # not alice's private one
        with pytest.raises(InvalidArgument):
            await bob.search("#nope")

        # Reactions in a group reach every member.
        await carol.react(sent.id, "👀")
        await until(lambda: [e for e in of(b_rec, ReactionEvent) if e.id == sent.id and e.user == c],
                    what="the author sees carol's reaction")
        await until(lambda: [e for e in of(a_rec, ReactionEvent) if e.id == sent.id], what="alice sees it too")

        # Delete: a member may not delete another's message; the owner (moderator) may.
        with pytest.raises(PermissionDenied):
            await carol.delete(sent.id)
        await alice.delete(sent.id)
        for rec in (b_rec, c_rec):
            await until(lambda rec=rec: [e for e in of(rec, DeletedEvent) if e.id == sent.id and e.by == a],
                        what="members see the moderator's delete")
        assert [h.message.id for h in await bob.search(token)] == [priv.id]  # deleted: never found
    finally:
        await close_all(alice, bob, carol)


# ---- terminal ---------------------------------------------------------------------------------


async def test_terminal_edit_reply_react_delete_search(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b = uname("alice"), uname("bob")
    bob = LiveCli(stack.realm("beta"), "--ids")
    try:
        bob.send(f"register {b} {PW}")
        bob.send(f"auth {b} {PW}")
        bob.wait_for(rf"logged in as {b}")
        r = run_cli(stack.realm("alpha"), [f"register {a} {PW}", f"auth {a} {PW}", f"sendprivate {b} hi @{b} lunch?"],
                    "--ids")
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(rf"^\[you → {b} [\d:]+\] hi @{b} lunch\?  #(\d+)$", r.stdout, re.M)
        assert m, r.stdout
        mid = int(m.group(1))
        # bob sees the id and the mention mark.
        bob.wait_for(rf"^\[{a} → you [\d:]+\] hi @{b} lunch\?  ← mentions you  #{mid}$")

        # A reply shows a one-line quote of the original above it.
        bob.send(f"reply #{mid} sure, noon")
        bob.wait_for(rf"^  ↪ {a}: hi @{b} lunch\?$")
        mine = re.search(r"#(\d+)$", bob.wait_for(rf"^\[you → {a} [\d:]+\] sure, noon  #\d+$"))
        assert mine
        rid = int(mine.group(1))

        r = run_cli(stack.realm("alpha"), [f"auth {a} {PW}", f"edit {mid} hi @{b} lunch at noon?", f"react {rid} 👍",
                                           f"history {b}", "search noon"], "--ids")
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert f"edited #{mid}" in out, out
        assert f"reacted 👍 to #{rid}" in out, out
        assert re.search(rf"^\[you → {b} [\d:]+\] hi @{b} lunch at noon\? \(edited\)  #{mid}$", out, re.M), out
        assert re.search(r"^  👍 1 \(you\)$", out, re.M), out  # the reaction under bob's reply, in history
        assert re.search(r"^\d+ results? for 'noon', best first:$", out, re.M), out
        assert re.search(rf"^with {b}: \[{b} → you [\d:]+\] sure, noon  #{rid}$", out, re.M), out

        # bob sees the edit and the reaction live, on the messages he was shown.
        bob.wait_for(rf"^\* edited: \[{a} → you [\d:]+\] hi @{b} lunch at noon\? \(edited\)  ← mentions you  #{mid}$")
        bob.wait_for(rf"^\* {a} reacted 👍 to #{rid} \(you: sure, noon\): 👍 1 \({a}\)$")

        r = run_cli(stack.realm("alpha"), [f"auth {a} {PW}", f"delete {mid}", "edit x y"])
        assert r.returncode == 1, r.stdout + r.stderr  # the bad id fails locally
        assert f"deleted #{mid}" in r.stdout and "is not a message id" in r.stdout, r.stdout
        bob.wait_for(rf"^\* {a} deleted: \[{a} → you [\d:]+\] \(message deleted\)  #{mid}$")
        bob.send(f"history {a} 1 before {rid}")
        bob.wait_for(rf"\(message deleted\)  #{mid}$")
        bob.send(f"history {a} 1 around #{rid}")  # the message itself, as a search hit names it
        bob.wait_for(rf"^\[you → {a} [\d:]+\] sure, noon  #{rid}$")
    finally:
        bob.send("quit")
        bob.proc.wait(10)


# ---- pure parts: parsing what the user types, rendering -----------------------------------------


def test_message_verbs_parse_and_render() -> None:
    from chat_cli import EditedEvent, Message, ReactionEvent, apply_change
    from chat_cli.render import fmt_message
    from chat_cli.terminal import parse_user_line
    from realmchat.errors import InvalidArgument as Invalid

    assert parse_user_line("edit #12 new words here").args == ("12", "new words here")  # type: ignore[union-attr]
    assert parse_user_line("reply 7 ok then").args == ("7", "ok then")  # type: ignore[union-attr]
    assert parse_user_line("react 7 👍").args == ("7", "👍")  # type: ignore[union-attr]
    assert parse_user_line("search #crew launch plan").args == ("#crew", "launch plan")  # type: ignore[union-attr]
    assert parse_user_line("search launch plan").args == ("launch plan",)  # type: ignore[union-attr]
    assert parse_user_line("history bob 20 before #812").args == ("bob", "20", "before", "#812")  # type: ignore[union-attr]
    assert parse_user_line("history bob 5 around #3").args == ("bob", "5", "around", "#3")  # type: ignore[union-attr]
    assert parse_user_line("history bob between 3 2026-11-24T10:42:00Z").args == (  # type: ignore[union-attr]
        "bob", "between", "3", "2026-11-24T10:42:00Z")
    for bad in ("edit x hello", "delete", "react 7", "react 7 " + "x" * 17, "history bob 5 around",
                "history bob 5 sideways 3", "history bob between 3", "history bob before noon", "search #crew"):
        with pytest.raises(Invalid):
            parse_user_line(bad)

    m = Message.from_wire({"id": 812, "from": "alice", "to": "bob", "text": "lunch @bob?", "ts": "2026-11-24T10:42:00Z",
                           "reply_to": 800, "edited": "2026-11-24T10:43:00Z",
                           "reactions": {"👍": ["carol", "bob"]}, "mention": True})
    assert m.reply_to == 800 and m.edited and m.mention and m.names("bob") and m.peer("bob") == "alice"
    orig = Message(id=800, sender="bob", text="anyone hungry? " * 10, ts="")
    out = fmt_message(m, "bob", ids=True, original=orig)
    quote, line, reactions = out.split("\n")
    assert quote.startswith("  ↪ you: anyone hungry?") and quote.endswith("…") and len(quote) < 70
    assert line.endswith("lunch @bob? (edited)  ← mentions you  #812"), line
    assert reactions == "  👍 2 (carol, you)"
    colored = fmt_message(m, "bob", ids=True, color=True, original=orig)
    assert "\x1b[1;33m" in colored and "\x1b[2m#812\x1b[0m" in colored

    m2 = apply_change(m, ReactionEvent(id=812, user="bob", emoji="👍", on=False))
    m2 = apply_change(m2, EditedEvent(id=812, text="lunch?", edited="2026-11-24T10:44:00Z"))
    assert m2.reactions == {"👍": ("carol",)} and m2.text == "lunch?" and not m2.reacted("👍", "bob")
    gone = m2.with_deleted()
    assert gone.deleted and gone.text == "" and not gone.names("bob") and not gone.reactions
    assert fmt_message(gone, "bob", ids=True).split("\n")[-1].endswith("(message deleted)  #812")
