"""The IRC edge's channel modes, WHO/WHOX and typed JOIN errors against real processes: one main
and realms alpha and beta with their IRC listeners on; IRC clients beside text clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .ircclient import IrcClient, Line
from .stack import Stack
from .test_irc_edge import irc_addr, start_irc_stack
from .textclient import TextClient, login

Names = Callable[[str], str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


async def irc_user(stack: Stack, nick: str, realm: str = "alpha", register: bool = True) -> IrcClient:
    """An IRC connection logged in as nick (the account made first over the text port)."""
    if register:
        t = await login(*stack.realm(realm), nick)
        await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms[realm]))
    await c.line()
    await c.register(nick, f"{nick}:pw-secret")
    return c


async def text_user(stack: Stack, realm: str, user: str) -> TextClient:
    return await login(*stack.realm(realm), user)


async def answer(c: IrcClient, line: str, *ends: str) -> Line:
    await c.send(line)
    return await c.until(*ends)


# ---- MODE: keys, bans, ops ---------------------------------------------------------------------

async def test_key_set_by_mode_holds_on_another_realm(stack: Stack, uname: Names) -> None:
    alice, carol, g = uname("ma"), uname("mc"), uname("mg")
    c = await irc_user(stack, alice)
    await c.send(f"JOIN #{g}")  # created without a key
    await c.collect("366")
    q = await answer(c, f"MODE #{g}", "324")
    assert q.params[1:] == [f"#{g}", "+"]
    mode = await answer(c, f"MODE #{g} +k sesame", "MODE")
    assert mode.nick == alice and mode.params == [f"#{g}", "+k", "sesame"]
    t = await text_user(stack, "beta", carol)
    err = await t.err(f"joingroup {g}", "PERMISSION_DENIED")
    assert "key" in err["message"]
    await t.ok(f"joingroup {g} sesame")
    assert (await c.until("JOIN")).nick == carol  # the IRC owner sees the text user come in
    unset = await answer(c, f"MODE #{g} -k", "MODE")
    assert unset.params == [f"#{g}", "-k"]
    dave = uname("md")
    t2 = await text_user(stack, "beta", dave)
    await t2.ok(f"joingroup {g}")  # no key any more
    await c.close()
    await t.close()
    await t2.close()


async def test_ban_by_mode_keeps_the_nick_out_and_lists_bans(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("ba"), uname("bb"), uname("bg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await b.send(f"JOIN #{g}")
    await b.collect("366")
    assert (await c.until("JOIN")).nick == bob
    mode = await answer(c, f"MODE #{g} +b {bob}", "MODE")
    assert mode.params == [f"#{g}", "+b", f"{bob}!*@*"]
    # Bob, on the other realm, sees the ban as a mode and is put out.
    seen = await b.until("MODE")
    assert seen.nick == alice and seen.params == [f"#{g}", "+b", f"{bob}!*@*"]
    kick = await b.until("KICK")
    assert kick.params[:2] == [f"#{g}", bob]
    await c.send(f"MODE #{g} +b")
    listed = await c.collect("368")
    assert [ln.params[2] for ln in listed if ln.command == "367"] == [f"{bob}!*@*"]
    refused = await answer(b, f"JOIN #{g}", "474", "JOIN")
    assert refused.command == "474"
    unban = await answer(c, f"MODE #{g} -b {bob}!*@*", "MODE")
    assert unban.params == [f"#{g}", "-b", f"{bob}!*@*"]
    back = await answer(b, f"JOIN #{g}", "JOIN", "474")
    assert back.command == "JOIN"
    await c.close()
    await b.close()


async def test_op_by_mode_lets_the_new_admin_kick(stack: Stack, uname: Names) -> None:
    alice, bob, carol, g = uname("oa"), uname("ob"), uname("oc"), uname("og")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    t = await text_user(stack, "alpha", carol)
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await b.send(f"JOIN #{g}")
    await b.collect("366")
    await t.ok(f"joingroup {g}")
    # Bob may not kick yet.
    denied = await answer(b, f"KICK #{g} {carol}", "482", "KICK")
    assert denied.command == "482"
    denied = await answer(b, f"MODE #{g} +o {carol}", "482", "MODE")
    assert denied.command == "482"
    op = await answer(c, f"MODE #{g} +o {bob}", "MODE")
    assert op.params == [f"#{g}", "+o", bob]
    seen = await b.until("MODE")  # bob, on beta, is told by main's role event
    assert seen.nick == alice and seen.params == [f"#{g}", "+o", bob]
    await b.send(f"NAMES #{g}")
    names = await b.collect("366")
    listed = " ".join(ln.params[-1] for ln in names if ln.command == "353").split()
    assert f"@{bob}" in listed and f"~{alice}" in listed
    kick = await answer(b, f"KICK #{g} {carol} bye", "KICK", "482")
    assert kick.command == "KICK" and kick.params[:2] == [f"#{g}", carol]
    deop = await answer(c, f"MODE #{g} -o {bob}", "MODE")
    assert deop.params == [f"#{g}", "-o", bob]
    await c.close()
    await b.close()
    await t.close()


async def test_mode_i_makes_the_channel_private_and_is_announced(stack: Stack, uname: Names) -> None:
    alice, bob, dave, carol, g = uname("ia"), uname("ib"), uname("id"), uname("ic"), uname("ig")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    d = await irc_user(stack, dave, "beta")
    t = await text_user(stack, "beta", carol)
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await b.send(f"JOIN #{g}")
    await b.collect("366")
    assert (await answer(b, f"MODE #{g} +i", "482", "MODE")).command == "482"  # a plain member may not
    echo = await answer(c, f"MODE #{g} +i", "MODE")
    assert echo.nick == alice and echo.params == [f"#{g}", "+i"]
    seen = await b.until("MODE")  # bob, on the other realm, is told by main's event
    assert seen.nick == alice and seen.params == [f"#{g}", "+i"]
    await c.send(f"MODE #{g}")
    modes, created = await c.until("324"), await c.until("329")
    assert modes.params[1:] == [f"#{g}", "+i"]
    assert created.params[1] == f"#{g}" and created.params[2].isdigit() and int(created.params[2]) > 1_700_000_000
    # Private now: gone from the directory of those outside, closed to them.
    assert (await t.ok(f"listgroups {g}"))["groups"] == []
    assert (await answer(d, f"JOIN #{g}", "473", "JOIN")).command == "473"
    # The text side makes it public again: the IRC members see it as a MODE from its setter.
    await t.close()
    t = await login(*stack.realm("alpha"), alice, register=False)
    await t.ok(f"groupmode {g} public")
    for x in (c, b):
        shown = await x.until("MODE")
        assert shown.nick == alice and shown.params == [f"#{g}", "-i"]
    assert (await answer(d, f"JOIN #{g}", "JOIN", "473")).command == "JOIN"
    assert (await answer(c, f"MODE #{g}", "324")).params[1:] == [f"#{g}", "+"]
    for x in (c, b, d):
        await x.close()
    await t.close()


async def test_key_changes_are_announced_the_key_to_ops_only(stack: Stack, uname: Names) -> None:
    alice, bob, carol, g = uname("ka"), uname("kb"), uname("kc"), uname("kg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    o = await irc_user(stack, carol, "beta")
    for x in (c, b, o):
        await x.send(f"JOIN #{g}")
        await x.collect("366")
    await answer(c, f"MODE #{g} +o {carol}", "MODE")
    for x in (o, b):
        assert (await x.until("MODE")).params == [f"#{g}", "+o", carol]
    assert (await answer(c, f"MODE #{g} +k sesame", "MODE")).params == [f"#{g}", "+k", "sesame"]
    op_seen = await o.until("MODE")  # an admin is shown the key, as IRC servers show it
    assert op_seen.nick == alice and op_seen.params == [f"#{g}", "+k", "sesame"]
    member_seen = await b.until("MODE")  # a plain member is told there is one, not what it is
    assert member_seen.nick == alice and member_seen.params == [f"#{g}", "+k", "*"]
    await b.send(f"MODE #{g}")
    assert (await b.until("324")).params[1:] == [f"#{g}", "+k", "*"]
    assert (await b.until("329")).params[1] == f"#{g}"
    assert (await answer(c, f"MODE #{g} -k", "MODE")).params == [f"#{g}", "-k"]
    for x in (o, b):
        gone = await x.until("MODE")
        assert gone.nick == alice and gone.params == [f"#{g}", "-k"]
    for x in (c, b, o):
        await x.close()


async def test_topic_who_and_when_on_join_and_on_asking(stack: Stack, uname: Names) -> None:
    alice, bob, dave, g = uname("ta"), uname("tb"), uname("td"), uname("tg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    for x in (c, b):
        await x.send(f"JOIN #{g}")
        await x.collect("366")
    assert (await answer(c, f"TOPIC #{g} :the plan", "TOPIC")).params == [f"#{g}", "the plan"]
    seen = await b.until("TOPIC")  # a change from another client: TOPIC from its setter
    assert seen.nick == alice and seen.params == [f"#{g}", "the plan"]
    await b.send(f"TOPIC #{g}")
    topic, who = await b.until("332"), await b.until("333")
    assert topic.params[1:] == [f"#{g}", "the plan"]
    assert who.params[1:3] == [f"#{g}", alice] and who.params[3].isdigit() and int(who.params[3]) > 1_700_000_000
    # Set from the text port: shown as TOPIC from that user, and 333 names them on JOIN.
    t = await login(*stack.realm("alpha"), alice, register=False)
    await t.ok(f"topic {g} changed elsewhere")
    again = await b.until("TOPIC")
    assert again.nick == alice and again.params == [f"#{g}", "changed elsewhere"]
    d = await irc_user(stack, dave)
    await d.send(f"JOIN #{g}")
    joined = await d.collect("366")
    order = [ln.command for ln in joined]
    assert order.index("JOIN") < order.index("332") < order.index("333") < order.index("353"), order
    assert next(ln for ln in joined if ln.command == "333").params[2] == alice
    for x in (c, b, d):
        await x.close()
    await t.close()


async def test_several_modes_in_one_line_apply_in_order(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("sa"), uname("sb"), uname("sg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob)
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await c.send(f"MODE #{g} +b {bob}")
    await c.until("MODE")
    await c.send(f"MODE #{g} +k-b key2 {bob}")
    first, second = await c.until("MODE"), await c.until("MODE")
    assert first.params == [f"#{g}", "+k", "key2"]
    assert second.params == [f"#{g}", "-b", f"{bob}!*@*"]
    ok = await answer(b, f"JOIN #{g} key2", "JOIN", "474", "475")
    assert ok.command == "JOIN"
    await c.close()
    await b.close()


async def test_mode_errors_are_numerics(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("ea"), uname("eb"), uname("eg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob)
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    assert (await answer(c, f"MODE #{g} +z", "472")).params[1] == "z"
    assert (await answer(c, f"MODE #{g} +o", "461")).params[1] == "MODE"
    assert (await answer(c, f"MODE #{g} +k", "696")).params[1:3] == [f"#{g}", "k"]
    assert (await answer(c, f"MODE #{g} +o {uname('ghost')}", "401", "441")).command == "401"
    assert (await answer(c, f"MODE #{g} +o {bob}", "441", "401")).command == "441"  # bob never joined
    assert (await answer(c, f"MODE #{g} +b bad*nick", "696")).params[1:3] == [f"#{g}", "b"]
    assert (await answer(c, f"MODE #{uname('nochan')} +k x", "403", "482")).command == "403"
    assert (await answer(b, f"MODE #{g} +k x", "482")).command == "482"
    assert (await answer(b, f"MODE #{g}", "442", "324")).command == "324"  # a public group: anyone may ask
    hidden = uname("eh")
    t = await text_user(stack, "alpha", uname("et"))
    await t.ok(f"creategroup {hidden} private")
    assert (await answer(b, f"MODE #{hidden}", "442", "324")).command == "442"
    await t.close()
    assert (await answer(b, f"MODE #{g} +i", "482")).command == "482"  # not an owner or admin
    # 100 modes in a line: bounded, answered, the connection lives on.
    await c.send(f"MODE #{g} +" + "z" * 100)
    lines = await c.collect("472")
    more = await c.quiet(0.5)
    assert sum(1 for ln in [*lines, *more] if ln.command == "472") <= 12
    assert any(ln.command == "400" for ln in [*lines, *more])
    await c.send(f"MODE #{g} +" + "o" * 100 + " " + " ".join([bob] * 14))
    pong = await answer(c, "PING :alive", "PONG")
    assert pong.params[-1] == "alive"
    assert not any("Traceback" in ln.raw or ln.command == "ERROR" for ln in c.seen)
    # User modes.
    assert (await answer(c, f"MODE {alice}", "221")).command == "221"
    assert (await answer(c, f"MODE {alice} +i", "221", "501")).command == "221"
    assert (await answer(c, f"MODE {alice} +Z", "221", "501")).command == "501"
    assert (await answer(c, f"MODE {bob} +i", "502")).command == "502"
    await c.close()
    await b.close()


# ---- typed JOIN errors ---------------------------------------------------------------------------

async def test_join_numerics_come_from_the_reason_not_the_wording(stack: Stack, uname: Names) -> None:
    """Group names chosen so the English text would mislead a guess: a private group whose name
    holds "key", a keyed group whose name holds "banned"."""
    alice, bob = uname("ja"), uname("jb")
    private, keyed, banned = uname("keyroom"), uname("bannedroom"), uname("keybanned")
    t = await text_user(stack, "alpha", alice)
    await t.ok(f"creategroup {private} private")
    await t.ok(f"creategroup {keyed}")
    await t.ok(f"groupkey {keyed} sesame")
    await t.ok(f"creategroup {banned}")
    b = await irc_user(stack, bob, "beta")
    await t.ok(f"ban {banned} {bob}")
    assert (await answer(b, f"JOIN #{private}", "473", "474", "475", "JOIN")).command == "473"
    assert (await answer(b, f"JOIN #{keyed}", "473", "474", "475", "JOIN")).command == "475"
    assert (await answer(b, f"JOIN #{banned}", "473", "474", "475", "JOIN")).command == "474"
    # The text protocol's error lines are as they were.
    t2 = await text_user(stack, "beta", uname("jt"))
    err = await t2.err(f"joingroup {keyed}", "PERMISSION_DENIED")
    assert "reason" not in err and "key" in err["message"]
    await t.close()
    await t2.close()
    await b.close()


async def test_topic_part_invite_numerics_come_from_the_reason(stack: Stack, uname: Names) -> None:
    """The same for TOPIC, PART and INVITE: a private group named "owner…" that you are not in
    (442, not 482), and an unknown nick holding "group" (401, not 403)."""
    alice, bob = uname("ra"), uname("rb")
    private, mine, ghost = uname("ownerroom"), uname("rg"), uname("nogroupnick")
    t = await text_user(stack, "beta", alice)
    await t.ok(f"creategroup {private} private")
    b = await irc_user(stack, bob, "alpha")
    assert (await answer(b, f"TOPIC #{private}", "442", "482", "331", "332")).command == "442"
    assert (await answer(b, f"PART #{private}", "442", "403", "NOTICE")).command == "442"
    await b.send(f"JOIN #{mine}")  # created: bob owns it
    await b.collect("366")
    assert (await answer(b, f"INVITE {ghost} #{mine}", "401", "403", "341")).command == "401"
    await t.close()
    await b.close()


# ---- WHO -----------------------------------------------------------------------------------------

async def test_who_and_whox(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("wa"), uname("wb"), uname("wg")
    c = await irc_user(stack, alice)
    b = await irc_user(stack, bob, "beta")
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await b.send(f"JOIN #{g}")
    await b.collect("366")
    await b.send("AWAY :lunch")
    await b.until("306")
    await c.send(f"WHO #{g}")
    lines = await c.collect("315")
    rows = {ln.params[5]: ln for ln in lines if ln.command == "352"}
    assert set(rows) == {alice, bob}
    assert rows[alice].params[4] == "alpha" and rows[alice].params[6] == "H~"
    assert rows[bob].params[4] == "beta" and rows[bob].params[6] == "G"
    await c.send(f"WHO {bob}")
    lines = await c.collect("315")
    assert [ln.params[5] for ln in lines if ln.command == "352"] == [bob]
    await c.send(f"WHO #{g} %tnuhraf,42")
    lines = await c.collect("315")
    x = {ln.params[6]: ln.params[1:] for ln in lines if ln.command == "354"}
    # t u h n f a r: the fields in their fixed order, whatever order they were asked in.
    assert x[bob] == ["42", bob, "realmchat", bob, "G", bob, bob]
    assert x[alice][0] == "42" and x[alice][4] == "H~"
    await c.send(f"WHO #{g} %cs")
    lines = await c.collect("315")
    assert sorted(ln.params[1:] for ln in lines if ln.command == "354") == [[f"#{g}", "alpha"], [f"#{g}", "beta"]]
    await c.close()
    await b.close()


async def test_isupport_advertises_whox_and_modes(stack: Stack, uname: Names) -> None:
    nick = uname("ia")
    t = await login(*stack.realm("alpha"), nick)
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    welcome = await c.register(nick, f"{nick}:pw-secret")
    tokens = {p.partition("=")[0]: p.partition("=")[2] for ln in welcome if ln.command == "005"
              for p in ln.params[1:-1]}
    assert "WHOX" in tokens and tokens["CHANMODES"] == "b,k,,i" and int(tokens["MODES"]) > 1
    await c.close()
    await t.close()


# ---- away-notify, extended-join ----------------------------------------------------------------

async def test_away_notify_and_extended_join(stack: Stack, uname: Names) -> None:
    alice, bob, carol, g = uname("na"), uname("nb"), uname("nc"), uname("ng")
    t = await login(*stack.realm("alpha"), alice)
    await t.close()
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()
    await c.register(alice, f"{alice}:pw-secret", caps=("away-notify", "extended-join"))
    await c.send(f"JOIN #{g}")
    own = await c.until("JOIN")
    assert own.params == [f"#{g}", alice, alice]  # channel, account, real name
    await c.collect("366")
    b = await irc_user(stack, bob, "beta")
    await b.send(f"JOIN #{g}")
    await b.collect("366")
    assert (await c.until("JOIN")).params == [f"#{g}", bob, bob]
    await b.send("AWAY :lunch")
    away = await c.until("AWAY")
    assert away.nick == bob and away.params == ["lunch"]
    await b.send("AWAY")
    back = await c.until("AWAY")
    assert back.nick == bob and back.params == []
    # A connection without the caps sees neither.
    d = await irc_user(stack, carol)
    await d.send(f"JOIN #{g}")
    await d.collect("366")
    await b.send("AWAY :again")
    assert (await c.until("AWAY")).params == ["again"]
    await b.send(f"PART #{g}")
    await d.until("PART")
    assert not any(ln.command == "AWAY" for ln in d.seen)
    await c.close()
    await b.close()
    await d.close()
