"""What real IRC clients and the irctest suite rely on, against real processes (one main, realms
alpha and beta with IRC on): NICK once the nick is the account, the read marker on JOIN, and
the other behaviours irctest and irssi/WeeChat sessions found."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .ircclient import IrcClient, Line
from .stack import Stack
from .test_irc_edge import irc_addr, start_irc_stack
from .textclient import login

Names = Callable[[str], str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


async def irc_user(stack: Stack, nick: str, caps: tuple[str, ...] = (), realm: str = "alpha") -> IrcClient:
    """An IRC connection logged in as `nick` (the account is made over the text port first)."""
    t = await login(*stack.realm("beta"), nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms[realm]))
    await c.line()
    await c.register(nick, f"{nick}:pw-secret", caps)
    await c.quiet(0.2)  # the rejoin and catch-up, if any
    return c


def commands(lines: list[Line]) -> list[str]:
    return [ln.command for ln in lines]


# ---- NICK -----------------------------------------------------------------------------------------


async def test_nick_change_refused_with_400_and_same_nick_is_a_no_op(stack: Stack, uname: Names) -> None:
    nick = uname("nk")
    c = await irc_user(stack, nick)
    await c.send(f"NICK {nick}x")
    refused = await c.until("400")
    assert refused.params[:2] == [nick, "NICK"], refused.raw
    assert "account" in refused.params[-1]
    # The same nick, in any case, says nothing and changes nothing.
    await c.send(f"NICK {nick.upper()}")
    await c.send(f"NICK :{nick}")
    await c.send("PING :after")
    got = await c.collect("PONG")
    assert commands(got) == ["PONG"], [ln.raw for ln in got]
    # Still the account's nick: a message to it comes back under that name.
    await c.send(f"PRIVMSG {nick} :to myself")
    await c.send("PING :after2")
    assert all(ln.command != "NICK" for ln in await c.collect("PONG"))
    await c.close()


async def test_nick_after_sasl_before_welcome_is_refused_too(stack: Stack, uname: Names) -> None:
    nick = uname("ns")
    t = await login(*stack.realm("beta"), nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    assert (await c.sasl(nick, nick, "pw-secret"))[-1].command == "903"
    await c.send("NICK someone_else")
    assert (await c.until("400")).params[1] == "NICK"
    await c.send("CAP END")
    welcome = await c.collect_welcome()
    assert welcome[0].command == "001" and welcome[0].params[0] == nick
    await c.close()


# ---- draft/read-marker on JOIN ----------------------------------------------------------------------


async def test_join_sends_markread_before_end_of_names(stack: Stack, uname: Names) -> None:
    nick, chan = uname("rj"), "#" + uname("rjc")
    c = await irc_user(stack, nick, ("draft/read-marker", "server-time"))
    await c.send(f"JOIN {chan}")
    got = await c.collect("366")
    cmds = commands(got)
    assert "MARKREAD" in cmds and cmds.index("JOIN") < cmds.index("MARKREAD") < cmds.index("366"), cmds
    assert got[cmds.index("MARKREAD")].params == [chan, "*"]  # nothing read yet
    await c.send(f"PRIVMSG {chan} :first")
    await c.send(f"MARKREAD {chan}")
    assert (await c.until("MARKREAD")).params == [chan, "*"]
    # Another member writes; the marker is set on it, then shown again on a later join.
    other = await irc_user(stack, uname("rk"), ("server-time",))
    await other.send(f"JOIN {chan}")
    await other.collect("366")
    await other.send(f"PRIVMSG {chan} :second")
    ts = (await c.until("PRIVMSG")).tags["time"]
    await c.send(f"MARKREAD {chan} timestamp={ts}")
    assert (await c.until("MARKREAD")).params == [chan, f"timestamp={ts}"]
    await c.send(f"JOIN {chan}")
    again = await c.collect("366")
    marks = [ln for ln in again if ln.command == "MARKREAD"]
    assert [m.params for m in marks] == [[chan, f"timestamp={ts}"]], [ln.raw for ln in again]
    # At registration the channels rejoined carry their markers too.
    c2 = await IrcClient.connect(*irc_addr(stack.realms["beta"]))
    await c2.line()
    await c2.register(nick, f"{nick}:pw-secret", ("draft/read-marker",))
    rejoin = await c2.collect("366")
    assert [ln.params for ln in rejoin if ln.command == "MARKREAD"] == [[chan, f"timestamp={ts}"]]
    for x in (c, c2, other):
        await x.close()


async def test_join_without_the_cap_sends_no_markread(stack: Stack, uname: Names) -> None:
    c = await irc_user(stack, uname("rn"))
    chan = "#" + uname("rnc")
    await c.send(f"JOIN {chan}")
    assert "MARKREAD" not in commands(await c.collect("366"))
    await c.close()


# ---- what irctest found ------------------------------------------------------------------------------


async def test_user_with_an_empty_realname_or_username_gets_461(stack: Stack, uname: Names) -> None:
    nick = uname("ur")
    t = await login(*stack.realm("beta"), nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    await c.send(f"PASS {nick}:pw-secret")
    await c.send(f"NICK {nick}")
    for bad in ("USER u 0 * :", "USER u 0 *"):
        await c.send(bad)
        got = await c.until("461", "001")
        assert got.command == "461" and got.params[1] == "USER", (bad, got.raw)
    await c.send(f"USER {nick} 0 * :{nick}")
    assert (await c.collect_welcome())[0].command == "001"
    await c.close()


async def test_kick_without_a_reason_gives_the_kickers_nick(stack: Stack, uname: Names) -> None:
    op, victim, chan = uname("ko"), uname("kv"), "#" + uname("kc")
    a = await irc_user(stack, op)
    b = await irc_user(stack, victim, realm="beta")
    await a.send(f"JOIN {chan}")
    await a.collect("366")
    await b.send(f"JOIN {chan}")
    await b.collect("366")
    await a.until("JOIN")
    await a.send(f"KICK {chan} {victim}")
    mine = await a.until("KICK")
    theirs = await b.until("KICK")
    assert mine.params == theirs.params == [chan, victim, op], (mine.raw, theirs.raw)
    await a.close()
    await b.close()


async def test_userhost_in_names(stack: Stack, uname: Names) -> None:
    nick, chan = uname("uh"), "#" + uname("uhc")
    c = await irc_user(stack, nick, ("userhost-in-names",))
    await c.send(f"JOIN {chan}")
    names = [ln for ln in await c.collect("366") if ln.command == "353"]
    assert names[0].params[-1] == f"~{nick}!{nick}@realmchat", names[0].raw
    other = uname("uj")
    plain = await irc_user(stack, other)
    await plain.send(f"JOIN {chan}")
    assert sorted((await plain.until("353")).params[-1].split()) == sorted([f"~{nick}", other])
    await c.close()
    await plain.close()


async def test_nick_in_another_case_logs_in_with_no_nick_line_before_001(stack: Stack, uname: Names) -> None:
    nick = uname("nc")
    t = await login(*stack.realm("beta"), nick)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    welcome = await c.register(nick.upper(), f"{nick}:pw-secret")
    assert welcome[0].command == "001" and welcome[0].params[0] == nick, [ln.raw for ln in welcome]
    await c.close()


async def test_unknown_command_answer_is_labelled(stack: Stack, uname: Names) -> None:
    c = await irc_user(stack, uname("lb"), ("batch", "labeled-response"))
    for line in ("@label=deadbeef NONEXISTENT_COMMAND", "@label=d2 FOOBAR x", "@label=d3 12X"):
        await c.send(line)
        got = await c.until("421")
        assert got.tags.get("label") == line[7:].split(" ")[0], got.raw
    await c.close()


async def test_sasl_line_over_400_bytes_is_905_and_an_endless_exchange_904(stack: Stack, uname: Names) -> None:
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    await c.send("CAP REQ :sasl")
    await c.until("CAP")
    await c.send("AUTHENTICATE PLAIN")
    await c.until("AUTHENTICATE")
    await c.send("AUTHENTICATE " + "A" * 401)
    assert (await c.until("905", "904")).command == "905"
    await c.send("AUTHENTICATE PLAIN")
    await c.until("AUTHENTICATE")
    for _ in range(20):  # 8000 bytes in 400-byte lines, more than an exchange may take
        await c.send("AUTHENTICATE " + "A" * 400)
    assert (await c.until("905", "904")).command == "904"
    await c.close()


async def test_join_of_a_users_name_is_403_and_the_other_channels_still_join(stack: Stack, uname: Names) -> None:
    nick, chan = uname("jn"), "#" + uname("jnc")
    c = await irc_user(stack, nick)
    await c.send(f"JOIN #{nick},{chan}")
    refused = await c.until("403", "JOIN")
    assert refused.command == "403" and refused.params[1] == f"#{nick}", refused.raw
    assert "user" in refused.params[-1]
    joined = await c.until("JOIN")
    assert joined.params[0] == chan
    await c.close()


ECHOED_WITH_SPACES = (
    "WHOIS :a b",
    "MODE #{chan} +b :a b",
    "TOPIC :#a b",
    "JOIN :#a b",
    "PART :#a b",
    "NAMES :#a b",
    "WHO :a b",
    "MARKREAD :a b",
    "NICK :a b",
    "MODE #{chan} +k :x y",
    "TAGMSG :a b",
    "KICK #{chan} :a b",
)


@pytest.mark.parametrize("line", ECHOED_WITH_SPACES)
async def test_a_param_with_spaces_echoed_in_an_answer_keeps_the_connection(
    stack: Stack, uname: Names, line: str
) -> None:
    """Answers echo what was sent (a nick, a channel, a key): one with a space is written `*`
    (it cannot be a middle param), instead of breaking the line and closing the connection."""
    nick = uname("sp")
    c = await irc_user(stack, nick, ("message-tags", "draft/read-marker"))
    chan = uname("spc")
    await c.send(f"JOIN #{chan}")
    await c.collect("366")
    await c.send(line.format(chan=chan))
    await c.send("PING :alive")
    got = await c.collect("PONG")
    answers = [ln for ln in got if ln.command != "PONG"]
    assert answers, line
    assert all(" " not in p for ln in answers for p in ln.params[:-1]), [ln.raw for ln in answers]
    assert not any(ln.command == "400" for ln in answers), [ln.raw for ln in answers]  # no internal error
    await c.close()


async def test_account_tag_on_invite_and_join_from_users(stack: Stack, uname: Names) -> None:
    owner, guest, chan = uname("ai"), uname("ag"), "#" + uname("aic")
    a = await irc_user(stack, owner, ("account-tag",))
    b = await irc_user(stack, guest, ("account-tag",), realm="beta")
    await a.send(f"JOIN {chan}")
    await a.collect("366")
    await a.send(f"INVITE {guest} {chan}")
    invite = await b.until("INVITE")
    assert invite.tags.get("account") == owner, invite.raw
    await b.send(f"JOIN {chan}")
    joined = await a.until("JOIN")
    assert joined.tags.get("account") == guest, joined.raw
    await a.close()
    await b.close()


# ---- a message to one's own nick -----------------------------------------------------------------


async def test_privmsg_to_own_nick_comes_back_as_the_delivery_and_the_echo(stack: Stack, uname: Names) -> None:
    # IRCv3 echo-message: to oneself, the echo and the delivery both arrive; only the echo is
    # part of a labelled answer. Without echo-message, the delivery alone.
    for caps, copies in ((("message-tags", "server-time"), 1),
                         (("echo-message", "message-tags", "batch", "labeled-response"), 2)):
        nick = uname("me")
        c = await irc_user(stack, nick, caps)
        await c.send(f"PRIVMSG {nick.upper()} :note to self")
        await c.send("PING :after")
        got = [ln for ln in await c.collect("PONG") if ln.command == "PRIVMSG"]
        assert len(got) == copies, (caps, [ln.raw for ln in got])
        assert all(ln.params == [nick.upper(), "note to self"] and "msgid" in ln.tags for ln in got), got
        assert len({ln.tags["msgid"] for ln in got}) == 1
        if copies == 2:
            await c.send(f"@label=xyz PRIVMSG {nick} :labelled")
            await c.send("PING :after2")
            got = [ln for ln in await c.collect("PONG") if ln.command == "PRIVMSG"]
            assert sorted(ln.tags.get("label", "") for ln in got) == ["", "xyz"], [ln.raw for ln in got]
        await c.close()
