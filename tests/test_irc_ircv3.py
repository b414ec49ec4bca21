"""IRCv3 message features on the IRC edge against real processes (one main, realms alpha and
beta with IRC on): labeled-response and batch, REDACT, client tags (reply, react, typing, edit),
MARKREAD, file offers and SEARCH, with text-protocol users on the other realm."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .ircclient import IrcClient, Line
from .stack import Stack
from .test_irc_edge import irc_addr, start_irc_stack
from .textclient import TextClient, login

Names = Callable[[str], str]
V3 = ("message-tags", "batch", "labeled-response", "echo-message")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


async def irc_user(stack: Stack, nick: str, caps: tuple[str, ...] = V3, realm: str = "alpha") -> IrcClient:
    """An IRC connection logged in as `nick` (the account is made over the text port first)."""
    t = await login(*stack.realm("beta"), nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms[realm]))
    await c.line()
    await c.register(nick, f"{nick}:pw-secret", caps)
    await c.quiet(0.2)  # the rejoin and catch-up, if any
    return c


async def text_user(stack: Stack, user: str, realm: str = "beta") -> TextClient:
    return await login(*stack.realm(realm), user)


# ---- labeled-response ----------------------------------------------------------------------------

async def test_labeled_single_line_empty_and_batch(stack: Stack, uname: Names) -> None:
    c = await irc_user(stack, uname("lr"))
    await c.send("@label=one PING :tok")
    pong = await c.until("PONG")
    assert pong.tags.get("label") == "one" and pong.params[-1] == "tok"
    await c.send("@label=two PONG :x")  # no answer: an ACK carries the label
    ack = await c.until("ACK")
    assert ack.tags == {"label": "two"}
    await c.send("@label=three MOTD")
    lines = await c.collect("BATCH")
    start = lines[-1]
    assert start.tags.get("label") == "three" and start.params[1] == "labeled-response", start
    ref = start.params[0][1:]
    inner = await c.collect("BATCH")
    assert inner[-1].params == [f"-{ref}"]
    assert [ln.command for ln in inner[:-1]] == ["375", "372", "376"]
    assert all(ln.tags.get("batch") == ref for ln in inner[:-1])
    assert all("label" not in ln.tags for ln in inner)
    # An unlabelled command is answered as before; a numeric refusal is labelled too.
    await c.send("PING :plain")
    assert "label" not in (await c.until("PONG")).tags
    await c.send("@label=four KICK")
    err = await c.until("461")
    assert err.tags.get("label") == "four"
    await c.close()


async def test_labeled_batch_does_not_swallow_other_users_messages(stack: Stack, uname: Names) -> None:
    nick, peer = uname("lrm"), uname("lrp")
    c = await irc_user(stack, nick)
    t = await text_user(stack, peer)
    for i in range(5):  # pipelined: they arrive while the labelled commands run
        await t.send_raw(f"sendprivate {nick} hello {i}\n".encode())
    for i in range(5):
        await c.send(f"@label=m{i} LIST")
    got: list[Line] = []
    depth = 0
    privmsgs: list[Line] = []
    ends = 0
    while ends < 5 or len(privmsgs) < 5:
        ln = await c.line()
        got.append(ln)
        if ln.command == "BATCH":
            depth += 1 if ln.params[0].startswith("+") else -1
            ends += ln.params[0].startswith("-")
        elif ln.command == "PRIVMSG":
            assert depth == 0 and "batch" not in ln.tags, ln.raw
            privmsgs.append(ln)
    assert sorted(p.params[-1] for p in privmsgs) == [f"hello {i}" for i in range(5)]
    await t.close()
    await c.close()


async def test_labeled_response_cap_offered_and_bad_label(stack: Stack, uname: Names) -> None:
    c = await irc_user(stack, uname("lrc"))
    await c.send("CAP LIST")
    listed = (await c.until("CAP")).params[-1].split()
    assert "labeled-response" in listed and "batch" in listed
    await c.send("@label=" + "x" * 200 + " PING :t")
    fail = await c.until("FAIL")
    assert fail.params[:2] == ["PING", "INVALID_LABEL"]
    await c.send("@label=ok PING :after")
    assert (await c.until("PONG")).tags.get("label") == "ok"
    await c.close()


# ---- the life of a message, both ways with a text user on another realm ---------------------------

async def next_event(t: TextClient, name: str) -> dict[str, object]:
    while True:
        ev = await t.event()
        if ev["event"] == name:
            return ev


async def until_tagged(c: IrcClient, command: str, tag: str) -> Line:
    while True:
        ln = await c.until(command)
        if tag in ln.tags:
            return ln


async def test_irc_reply_react_typing_edit_redact_reach_text_user(stack: Stack, uname: Names) -> None:
    nick, peer = uname("lf"), uname("lfp")
    c = await irc_user(stack, nick)
    t = await text_user(stack, peer)
    t.ignore = frozenset({"presence"})
    sent = await t.ok(f"sendprivate {nick} question?")
    first = await c.until("PRIVMSG")
    assert first.tags["msgid"] == str(sent["id"])
    await c.send(f"@+draft/reply={sent['id']} PRIVMSG {peer} :an answer")
    echo = await c.until("PRIVMSG")
    assert echo.tags.get("+draft/reply") == str(sent["id"]) and echo.params == [peer, "an answer"]
    got = await next_event(t, "private")
    assert got["reply_to"] == sent["id"] and got["text"] == "an answer" and got["from"] == nick
    mine = int(echo.tags["msgid"])
    await c.send(f"@+draft/react=👍;+draft/reply={sent['id']} TAGMSG {peer}")
    ev = await next_event(t, "reaction")
    assert ev["id"] == sent["id"] and ev["emoji"] == "👍" and ev["on"] is True and ev["user"] == nick
    await c.send(f"@+draft/unreact=👍;+draft/reply={sent['id']} TAGMSG {peer}")
    ev = await next_event(t, "reaction")
    assert ev["on"] is False
    await c.send(f"@+typing=active TAGMSG {peer}")
    ev = await next_event(t, "typing")
    assert ev["user"] == nick
    await c.send(f"@+draft/edit={mine} PRIVMSG {peer} :an answer, edited")
    ev = await next_event(t, "edited")
    assert ev["id"] == mine and ev["text"] == "an answer, edited"
    await c.send(f"@label=rd REDACT {peer} {mine} :oops")
    red = await c.until("REDACT")
    assert red.params[:2] == [peer, str(mine)] and red.tags.get("label") == "rd"
    ev = await next_event(t, "deleted")
    assert ev["id"] == mine and ev["by"] == nick
    # Not the author: main refuses, IRC says FAIL.
    await c.send(f"REDACT {peer} {sent['id']}")
    fail = await c.until("FAIL")
    assert fail.params[:2] == ["REDACT", "REDACT_FORBIDDEN"], fail.raw
    await t.close()
    await c.close()


async def test_text_user_life_events_reach_irc_with_and_without_tags(stack: Stack, uname: Names) -> None:
    nick, peer = uname("lg"), uname("lgp")
    tagged = await irc_user(stack, nick, (*V3, "draft/message-redaction"))
    plain = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))  # the same account, no caps
    await plain.line()
    await plain.register(nick, f"{nick}:pw-secret")
    t = await text_user(stack, peer)
    await tagged.send(f"PRIVMSG {peer} :hello there")
    mid = int((await tagged.until("PRIVMSG")).tags["msgid"])
    await plain.until("PRIVMSG")  # the carbon
    r = await t.ok(f"reply {mid} a reply")
    rl = await tagged.until("PRIVMSG")
    assert rl.tags.get("+draft/reply") == str(mid) and rl.params[-1] == "a reply"
    pl = await plain.until("PRIVMSG")
    assert pl.params == [nick, "a reply"] and not pl.tags
    await t.ok(f"react {mid} 🎉")
    tm = await tagged.until("TAGMSG")
    assert tm.tags.get("+draft/react") == "🎉" and tm.tags.get("+draft/reply") == str(mid) and tm.nick == peer
    notice = await plain.until("NOTICE")
    assert f"{peer} reacted 🎉 to message {mid}" in notice.params[-1]
    await t.ok(f"typing {nick}")
    ty = await tagged.until("TAGMSG")
    assert ty.tags.get("+typing") == "active" and ty.nick == peer and ty.params == [nick]
    await t.ok(f"edit {r['id']} a better reply")
    ed = await tagged.until("PRIVMSG")
    assert ed.tags.get("+draft/edit") == str(r["id"]) and ed.params[-1] == "a better reply"
    pe = await plain.until("PRIVMSG", "NOTICE")
    assert pe.command == "PRIVMSG" and pe.params[-1] == "(edited) a better reply", pe.raw  # no typing line came
    await t.ok(f"delete {r['id']}")
    rd = await tagged.until("REDACT")
    assert rd.params == [nick, str(r["id"])] and rd.nick == peer
    pn = await plain.until("NOTICE")
    assert f"{peer} deleted message {r['id']}" in pn.params[-1]
    await t.close()
    await tagged.close()
    await plain.close()


async def test_group_edit_shows_from_its_author(stack: Stack, uname: Names) -> None:
    """A channel message edited by its author on another realm comes to IRC from the author's
    nick (main's edited event names the author in a group too), and to a text member with `from`."""
    nick, author, other, g = uname("ge"), uname("gea"), uname("geo"), uname("gedit")
    t = await text_user(stack, author)
    o = await text_user(stack, other, realm="alpha")
    await t.ok(f"creategroup {g}")
    await o.ok(f"joingroup {g}")
    c = await irc_user(stack, nick)
    await c.send(f"JOIN #{g}")
    await c.until("366")
    sent = await t.ok(f"sendgroup {g} frist")
    await until_tagged(c, "PRIVMSG", "msgid")
    await t.ok(f"edit {sent['id']} first")
    ed = await until_tagged(c, "PRIVMSG", "+draft/edit")
    assert ed.tags["+draft/edit"] == str(sent["id"]) and ed.params == [f"#{g}", "first"], ed.raw
    assert ed.source == f"{author}!{author}@realmchat", ed.raw
    ev = await next_event(o, "edited")
    assert ev["id"] == sent["id"] and ev["from"] == author and ev["group"] == g, ev
    for x in (c, t, o):
        await x.close()


@pytest.mark.parametrize("line,code", [
    ("REDACT", "461"),
    ("REDACT #nochan", "461"),
    ("TAGMSG", "461"),
    ("REDACT {peer} notanid", "UNKNOWN_MSGID"),
    ("REDACT {peer} 99999999999999999999999", "UNKNOWN_MSGID"),
    ("REDACT {peer} 0", "UNKNOWN_MSGID"),
    ("REDACT bad!nick 5", "INVALID_TARGET"),
    ("REDACT {peer} 999999999", "UNKNOWN_MSGID"),
    ("@+draft/react=x TAGMSG {peer}", "UNKNOWN_MSGID"),
    ("@+draft/react=x;+draft/reply=-3 TAGMSG {peer}", "UNKNOWN_MSGID"),
    ("@+draft/react={big};+draft/reply=1 TAGMSG {peer}", "INVALID_PARAMS"),
    ("@+typing=sideways TAGMSG {peer}", "INVALID_PARAMS"),
    ("@+draft/x={big} TAGMSG {peer}", "INVALID_PARAMS"),
    ("@+draft/reply=abc PRIVMSG {peer} :hi", "UNKNOWN_MSGID"),
    ("@+draft/edit=1 PRIVMSG {peer} :hi", "UNKNOWN_MSGID"),
    ("@+typing=active TAGMSG #nosuchchan{n}", "INVALID_TARGET"),
    ("@+typing=active TAGMSG nosuchnick{n}", "INVALID_TARGET"),
])
async def test_hostile_tagmsg_and_redact(stack: Stack, uname: Names, line: str, code: str) -> None:
    nick, peer = uname("lh"), uname("lhp")
    t = await text_user(stack, peer)
    c = await irc_user(stack, nick)
    await c.send(line.format(peer=peer, big="y" * 4000, n=nick))
    await c.send("PING :end")
    got = await c.collect("PONG")
    answers = [ln for ln in got if ln.command in ("FAIL", "461", "400")]
    assert answers, [ln.raw for ln in got]
    ans = answers[0]
    assert (ans.command == code) if code.isdigit() else (ans.command == "FAIL" and ans.params[1] == code), ans.raw
    assert not any(ln.command == "400" for ln in got), [ln.raw for ln in got]
    await t.close()
    await c.close()


# ---- read markers ----------------------------------------------------------------------------------

async def test_markread_shared_with_text_client(stack: Stack, uname: Names) -> None:
    nick, peer = uname("mr"), uname("mrp")
    c = await irc_user(stack, nick, (*V3, "server-time", "draft/read-marker"))
    me_text = await login(*stack.realm("beta"), nick, register=False)  # the same user on another realm
    me_text.ignore = frozenset({"presence", "private"})
    t = await text_user(stack, peer)
    sent = [await t.ok(f"sendprivate {nick} m{i}") for i in range(3)]
    shown = [await c.until("PRIVMSG") for _ in range(3)]
    ts = [ln.tags["time"] for ln in shown]
    await c.send(f"@label=mk MARKREAD {peer} timestamp={ts[1]}")
    ans = await c.until("MARKREAD")
    assert ans.params == [peer, f"timestamp={ts[1]}"] and ans.tags.get("label") == "mk"
    ev = await next_event(me_text, "read")
    assert ev == {"event": "read", "peer": peer, "id": sent[1]["id"]}
    convs = (await me_text.ok("conversations"))["conversations"]
    conv = next(x for x in convs if x["peer"] == peer)
    assert conv["read"] == sent[1]["id"] and conv["unread"] == 1
    # The text client moves it: the IRC connection is told, by time.
    await me_text.ok(f"read {peer} {sent[2]['id']}")
    moved = await c.until("MARKREAD")
    assert moved.params == [peer, f"timestamp={ts[2]}"]
    await c.send(f"MARKREAD {peer}")
    assert (await c.until("MARKREAD")).params == [peer, f"timestamp={ts[2]}"]
    for bad in ("timestamp=yesterday", "time=2026-01-01T00:00:00.000Z"):
        await c.send(f"MARKREAD {peer} {bad}")
        fail = await c.until("FAIL")
        assert fail.params[:2] == ["MARKREAD", "INVALID_PARAMS"], fail.raw
    await c.send("MARKREAD")
    assert (await c.until("FAIL")).params[:2] == ["MARKREAD", "NEED_MORE_PARAMS"]
    await c.send(f"MARKREAD nobody{nick}")
    assert (await c.until("FAIL")).params[:2] == ["MARKREAD", "INVALID_PARAMS"]
    await t.close()
    await me_text.close()
    await c.close()


# ---- files and search ------------------------------------------------------------------------------

async def test_file_offer_notice_and_search(stack: Stack, uname: Names) -> None:
    nick, peer = uname("fs"), uname("fsp")
    c = await irc_user(stack, nick)
    t = await text_user(stack, peer)
    await t.send_raw(f"sendfile {nick} notes.txt 5\nhello".encode())
    f = await t.response()
    assert f["status"] == "OK", f
    offer = await c.until("NOTICE")
    assert offer.nick == peer and "notes.txt" in offer.params[-1] and "5 bytes" in offer.params[-1]
    assert f"receivefile {f['id']}" in offer.params[-1], offer.raw
    word = f"zebra{nick.replace('_', '')}"
    await t.ok(f"sendprivate {nick} the {word} crossed")
    await t.ok(f"sendprivate {nick} nothing here")
    for _ in range(2):
        await c.until("PRIVMSG")
    await c.send(f"@label=sr SEARCH {word}")
    start = await c.until("BATCH")
    inner = await c.collect("BATCH")
    texts = [ln.params[-1] for ln in inner if ln.command == "NOTICE"]
    assert len(texts) == 2 and f"<{peer}> the {word} crossed" in texts[0] and texts[1].endswith("1 found"), texts
    assert start.tags.get("label") == "sr"
    await c.send(f"SEARCH @{peer} nothing")
    assert "nothing here" in (await c.until("NOTICE")).params[-1]
    await c.send("SEARCH *")
    assert (await c.until("FAIL")).params[:2] == ["SEARCH", "INVALID_PARAMS"]
    await c.send("SEARCH @bad!nick word")
    assert (await c.until("FAIL")).params[:2] == ["SEARCH", "INVALID_TARGET"]
    await t.close()
    await c.close()
