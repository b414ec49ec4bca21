"""IRCv3 draft/chathistory on the IRC edge against real processes (one main, realms alpha and
beta with IRC on), with text-protocol users on the other realm: the cap and ISUPPORT tokens,
every subcommand with msgid and timestamp references, a private and a channel target, the batch
framing (alone and inside labeled-response), limits, deleted messages and reactions as the live
path shows them, and the FAIL codes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .ircclient import IrcClient, Line
from .stack import Stack
from .test_irc_edge import irc_addr, start_irc_stack
from .test_irc_ircv3 import irc_user, text_user

Names = Callable[[str], str]
CAPS = ("message-tags", "batch", "labeled-response", "server-time", "account-tag", "draft/chathistory")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


async def history(c: IrcClient, line: str) -> tuple[Line, list[Line]]:
    """Sends a CHATHISTORY line; its batch start and the lines in it (up to the batch's end)."""
    await c.send(line)
    start = await c.until("BATCH", "FAIL")
    assert start.command == "BATCH", start
    inner = await c.collect("BATCH")
    assert inner[-1].params == ["-" + start.params[0][1:]]
    return start, inner[:-1]


def texts(lines: list[Line]) -> list[str]:
    return [ln.params[-1] for ln in lines if ln.command == "PRIVMSG"]


async def fail(c: IrcClient, line: str) -> list[str]:
    await c.send(line)
    return (await c.until("FAIL")).params


async def private_chat(stack: Stack, uname: Names, n: int) -> tuple[IrcClient, str, str, list[int]]:
    """An IRC user and a text user (realm beta) who sent it n messages: the connection, its
    nick, the text user's name and the ids."""
    nick, peer = uname("ci"), uname("ct")
    t = await text_user(stack, peer)
    c = await irc_user(stack, nick, CAPS)
    ids = [(await t.ok(f"sendprivate {nick} m{i}"))["id"] for i in range(n)]
    await c.quiet(0.3)  # the live copies
    await t.close()
    return c, nick, peer, ids


async def test_cap_and_isupport(stack: Stack, uname: Names) -> None:
    nick = uname("cc")
    t = await text_user(stack, nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    await c.send("CAP LS 302")
    assert "draft/chathistory" in (await c.until("CAP")).params[-1].split()
    welcome = await c.register(nick, f"{nick}:pw-secret", CAPS)
    tokens = [p for ln in welcome if ln.command == "005" for p in ln.params[1:-1]]
    assert "CHATHISTORY=100" in tokens and "MSGREFTYPES=msgid,timestamp" in tokens
    await c.close()


async def test_private_history_from_a_text_user(stack: Stack, uname: Names) -> None:
    c, nick, peer, ids = await private_chat(stack, uname, 6)
    start, lines = await history(c, f"CHATHISTORY LATEST {peer} * 10")
    assert start.params[1:] == ["chathistory", peer]
    assert texts(lines) == [f"m{i}" for i in range(6)]
    first = lines[0]
    assert first.nick == peer and first.params[0] == nick  # at the reader's nick, as live
    assert first.tags["msgid"] == str(ids[0]) and first.tags["account"] == peer
    assert first.tags["time"].endswith("Z") and all(ln.tags["batch"] == start.params[0][1:] for ln in lines)
    assert texts((await history(c, f"CHATHISTORY LATEST {peer} * 2"))[1]) == ["m4", "m5"]
    assert texts((await history(c, f"CHATHISTORY LATEST {peer} msgid={ids[3]} 10"))[1]) == ["m4", "m5"]
    assert texts((await history(c, f"CHATHISTORY BEFORE {peer} msgid={ids[3]} 2"))[1]) == ["m1", "m2"]
    assert texts((await history(c, f"CHATHISTORY AFTER {peer} msgid={ids[3]} 1"))[1]) == ["m4"]
    assert texts((await history(c, f"CHATHISTORY AROUND {peer} msgid={ids[3]} 3"))[1]) == ["m2", "m3", "m4"]
    assert texts((await history(c, f"CHATHISTORY BETWEEN {peer} msgid={ids[0]} msgid={ids[5]} 2"))[1]) == ["m1", "m2"]
    assert texts((await history(c, f"CHATHISTORY BETWEEN {peer} msgid={ids[5]} msgid={ids[0]} 2"))[1]) == ["m3", "m4"]
    # Timestamps: the messages' own.
    _, lines = await history(c, f"CHATHISTORY LATEST {peer} * 10")
    t3 = lines[3].tags["time"]
    before = texts((await history(c, f"CHATHISTORY BEFORE {peer} timestamp={t3} 10"))[1])
    assert "m3" not in before and before[:3] == ["m0", "m1", "m2"]
    after = texts((await history(c, f"CHATHISTORY AFTER {peer} timestamp={t3} 10"))[1])
    assert "m3" not in after and after[-2:] == ["m4", "m5"]
    assert "m3" in texts((await history(c, f"CHATHISTORY AROUND {peer} timestamp={t3} 4"))[1])
    assert texts(
        (await history(c, f"CHATHISTORY BETWEEN {peer} timestamp=2000-01-01T00:00:00.000Z msgid={ids[2]} 10"))[1]
    ) == ["m0", "m1"]
    # A limit above CHATHISTORY is served as at most that many.
    assert len(texts((await history(c, f"CHATHISTORY LATEST {peer} * 5000"))[1])) == 6
    await c.close()


async def test_channel_history_deleted_and_reactions(stack: Stack, uname: Names) -> None:
    nick, peer, g = uname("ch"), uname("cp"), uname("cg")
    t = await text_user(stack, peer)
    c = await irc_user(stack, nick, CAPS)
    await t.ok(f"creategroup {g}")
    await c.send(f"JOIN #{g}")
    await c.until("366")
    ids = [(await t.ok(f"sendgroup {g} g{i}"))["id"] for i in range(3)]
    await t.ok(f"delete {ids[1]}")
    await t.ok(f"react {ids[2]} 👍")
    await t.ok(f"edit {ids[0]} g0 edited")
    await c.quiet(0.3)
    start, lines = await history(c, f"CHATHISTORY LATEST #{g} * 10")
    assert start.params[1:] == ["chathistory", f"#{g}"]
    assert texts(lines) == ["g0 edited", "(deleted)", "g2"]  # as they are now
    assert all(ln.params[0] == f"#{g}" for ln in lines)
    react = [ln for ln in lines if ln.command == "TAGMSG"]
    assert len(react) == 1 and react[0].tags["+draft/react"] == "👍" and react[0].tags["+draft/reply"] == str(ids[2])
    assert react[0].nick == peer
    # A user who is not a member: INVALID_TARGET.
    out = await irc_user(stack, uname("co"), CAPS)
    assert (await fail(out, f"CHATHISTORY LATEST #{g} * 10"))[:3] == ["CHATHISTORY", "INVALID_TARGET", "LATEST"]
    assert (await fail(out, f"CHATHISTORY AROUND #{g} msgid={ids[0]} 10"))[1] == "INVALID_TARGET"
    await out.close()
    await t.close()
    await c.close()


async def test_labeled_and_without_batch(stack: Stack, uname: Names) -> None:
    c, _, peer, _ = await private_chat(stack, uname, 2)
    await c.send(f"@label=h1 CHATHISTORY LATEST {peer} * 10")
    outer = await c.until("BATCH")
    assert outer.tags.get("label") == "h1" and outer.params[1] == "labeled-response"
    inner = await c.collect("BATCH")  # the chathistory batch's start, in the labelled one
    assert inner[0].params[1] == "chathistory" and inner[0].tags["batch"] == outer.params[0][1:]
    rest = await c.collect("BATCH")
    assert texts(rest) == ["m0", "m1"] and all(ln.tags["batch"] == inner[0].params[0][1:] for ln in rest[:-1])
    assert rest[-1].tags["batch"] == outer.params[0][1:]  # the inner batch ends inside the outer
    assert (await c.until("BATCH")).params == ["-" + outer.params[0][1:]]
    await c.close()
    sender, plain_nick = uname("cw"), uname("cn")
    t = await text_user(stack, sender)
    plain = await irc_user(stack, plain_nick, ("message-tags", "draft/chathistory"))
    await t.ok(f"sendprivate {plain_nick} no batch")
    await plain.quiet(0.3)
    await plain.send(f"CHATHISTORY LATEST {sender} * 10")  # no batch cap: the lines alone
    got = await plain.quiet(0.5)
    assert [ln.command for ln in got] == ["PRIVMSG"] and "batch" not in got[0].tags
    assert got[0].params[-1].endswith("no batch") and got[0].params[-1].startswith("[")  # no server-time
    await t.close()
    await plain.close()


async def test_targets(stack: Stack, uname: Names) -> None:
    c, _, peer, _ = await private_chat(stack, uname, 1)
    g = uname("tg")
    await c.send(f"JOIN #{g}")
    await c.until("366")
    await c.send(f"PRIVMSG #{g} :hello")
    await c.quiet(0.2)
    start, lines = await history(
        c, "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 10"
    )
    assert start.params[1] == "draft/chathistory-targets"
    assert [ln.params[1] for ln in lines] == [peer, f"#{g}"]  # in time order
    assert all(ln.command == "CHATHISTORY" and ln.params[0] == "TARGETS" and ln.params[2].endswith("Z") for ln in lines)
    _, newest = await history(
        c, "CHATHISTORY TARGETS timestamp=2999-01-01T00:00:00.000Z timestamp=2000-01-01T00:00:00.000Z 1"
    )
    assert [ln.params[1] for ln in newest] == [f"#{g}"]
    _, oldest = await history(
        c, "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 1"
    )
    assert [ln.params[1] for ln in oldest] == [peer]
    _, none = await history(
        c, "CHATHISTORY TARGETS timestamp=2999-01-01T00:00:00.000Z timestamp=2998-01-01T00:00:00.000Z 10"
    )
    assert none == []
    assert (await fail(c, "CHATHISTORY TARGETS msgid=1 timestamp=2999-01-01T00:00:00.000Z 5"))[1] == "INVALID_PARAMS"
    await c.close()


async def test_bad_params_and_targets(stack: Stack, uname: Names) -> None:
    c, _, peer, ids = await private_chat(stack, uname, 2)
    assert (await fail(c, f"CHATHISTORY SIDEWAYS {peer} * 10"))[:3] == ["CHATHISTORY", "UNKNOWN_COMMAND", "SIDEWAYS"]
    assert (await fail(c, f"CHATHISTORY BEFORE {peer} yesterday 10"))[:3] == ["CHATHISTORY", "INVALID_PARAMS", "BEFORE"]
    assert (await fail(c, f"CHATHISTORY BEFORE {peer} msgid={ids[0]} 0"))[1] == "INVALID_PARAMS"
    assert (await fail(c, f"CHATHISTORY BEFORE {peer} msgid={ids[0]} ten"))[1] == "INVALID_PARAMS"
    assert (await fail(c, f"CHATHISTORY BETWEEN {peer} msgid={ids[0]} 10"))[1] == "INVALID_PARAMS"
    assert (await fail(c, f"CHATHISTORY BEFORE {peer} timestamp=2026-13-45T00:00:00.000Z 10"))[1] == "INVALID_PARAMS"
    assert (await fail(c, f"CHATHISTORY BEFORE {peer} * 10"))[1] == "INVALID_PARAMS"
    # A message of another conversation is no reference here.
    other = await text_user(stack, uname("cx"))
    elsewhere = (await other.ok(f"sendprivate {peer} not yours"))["id"]
    await other.close()
    r = await fail(c, f"CHATHISTORY AROUND {peer} msgid={elsewhere} 10")
    assert r[1] == "INVALID_PARAMS" and "not one of this conversation's" in r[-1]
    assert (await fail(c, "CHATHISTORY LATEST bad!nick * 10"))[:4] == [
        "CHATHISTORY",
        "INVALID_TARGET",
        "LATEST",
        "bad!nick",
    ]
    assert (await fail(c, f"CHATHISTORY LATEST #{uname('nochan')} * 10"))[1] == "INVALID_TARGET"
    assert (await fail(c, f"CHATHISTORY LATEST {uname('nobody')} * 10"))[1] == "INVALID_TARGET"
    await c.send("CHATHISTORY")
    assert (await c.until("461")).params[1] == "CHATHISTORY"
    await c.close()
