"""End to end across protocols: an IRC client on realm alpha (with the IRCv3 capabilities a
modern client asks for) and a web GUI user on realm beta (headless Chromium over the DevTools
protocol) in a private channel with a key, every process real.

The GUI user creates the private group with its key through the dialog; the IRC user is
refused with 475 for a wrong key and joins with the right one. Then both ways: messages,
replies, reactions, edits and deletions; the read state as each side shows it; the IRC
connection dropped without QUIT while the GUI user sends (each message comes exactly once,
by msgid, at the next login); the browser killed while the IRC user sends (each message shown
exactly once in the reopened GUI), and scrolling back through what came before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from .gui_driver import Browser, CDPError, wait_for
from .ircclient import IrcClient, Line
from .stack import PYTHON, ROOT, ServerProcess, Stack
from .test_gui_web_e2e import PW, register_in_browser
from .test_gui_web_messages import WHEEL_UP, hover
from .test_irc_edge import irc_addr, start_irc_stack
from .textclient import login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = ROOT / "test-artifacts"
Names = Callable[[str], str]
# What a modern client asks for (draft/message-editing too, should the edge offer it).
WANTED_CAPS = (
    "message-tags",
    "server-time",
    "echo-message",
    "batch",
    "labeled-response",
    "draft/read-marker",
    "draft/message-redaction",
)
OPTIONAL_CAPS = ("draft/message-editing",)
KEY = "sesame42"
SESSION_TIMEOUT_S = 3  # a killed browser's session (and its realm connection) ends soon after
FILLERS = 60  # more than the GUI's first page (50): reopening must load older messages


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gui_beta(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The web GUI proposing realm beta; a closed tab's session ends after SESSION_TIMEOUT_S."""
    host, port = stack.realm("beta")
    tmp = tmp_path_factory.mktemp("gui")
    proc = ServerProcess(
        "gui-beta",
        [
            PYTHON,
            "-m",
            "gui",
            "--web",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--realm",
            f"{host}:{port}",
            "--session-timeout",
            str(SESSION_TIMEOUT_S),
            "--downloads",
            str(tmp / "downloads"),
            "--upload-dir",
            str(tmp / "uploads"),
        ],
        env={"FLET_WEB_NO_CDN": "1"},
    )
    yield proc
    # Each page says goodbye to its realm first (up to 5 s each): a bound for a loaded machine.
    assert proc.terminate(60) == 0, proc.log()


# ---- the IRC side ----------------------------------------------------------------------------------


async def irc_login(stack: Stack, nick: str) -> tuple[IrcClient, list[Line]]:
    """Registers with PASS and the capabilities asked for; returns the client and every line
    up to the end of the MOTD."""
    c = await IrcClient.connect(*irc_addr(stack.realms["alpha"]))
    await c.line()  # the realm's hello NOTICE
    await c.send("CAP LS 302")
    ls = await c.until("CAP")
    offered = {tok.split("=", 1)[0] for tok in ls.params[-1].split()}
    missing = [cap for cap in WANTED_CAPS if cap not in offered]
    assert not missing, f"the edge does not offer {missing}: {ls.raw}"
    caps = [*WANTED_CAPS, *(cap for cap in OPTIONAL_CAPS if cap in offered)]
    await c.send("CAP REQ :" + " ".join(caps))
    ack = await c.until("CAP")
    assert ack.params[1] == "ACK" and set(ack.params[-1].split()) == set(caps), ack.raw
    await c.send(f"PASS {nick}:{PW}")
    await c.send(f"NICK {nick}")
    await c.send(f"USER {nick} 0 * :{nick}")
    await c.send("CAP END")
    return c, await c.collect_welcome()


async def irc_wait(c: IrcClient, pred: Callable[[Line], bool], what: str, timeout: float = 30.0) -> Line:
    """Reads lines until one matches `pred` (the others stay in c.seen)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            ln = await c.line(max(0.05, left))
        except TimeoutError:
            recent = [x.raw for x in c.seen[-15:]]
            raise AssertionError(f"no {what} within {timeout:.0f}s; last lines: {recent}") from None
        if pred(ln):
            return ln


def privmsg(channel: str, sender: str, text: str) -> Callable[[Line], bool]:
    return lambda ln: (
        ln.command == "PRIVMSG"
        and ln.nick.lower() == sender.lower()
        and ln.params[0].lower() == channel.lower()
        and ln.params[-1] == text
    )


def drop(c: IrcClient) -> None:
    """The client dies: the socket goes without a QUIT and without flushing anything."""
    c.writer.transport.abort()


# ---- the GUI side ----------------------------------------------------------------------------------


def bubble(sender: str, text: str, *marks: str) -> re.Pattern[str]:
    """A message bubble as the accessibility tree names it: SENDER HH:MM [marks] TEXT."""
    middle = "".join(f" {re.escape(m)}" for m in marks)
    return re.compile(rf"^{re.escape(sender)} \d\d:\d\d{middle} {re.escape(text)}$")


async def count_shown(b: Browser, pattern: re.Pattern[str]) -> int:
    return sum(1 for n in await b.ax_nodes() if not n.ignored and n.backend_id is not None and pattern.search(n.text))


async def send_in_gui(b: Browser, text: str) -> None:
    """Types into the open conversation and presses Enter; waits until the realm confirmed it."""
    await b.fill("Message", text)
    await b.press_enter()
    await b.wait_text(bubble("you", text), 30)


async def action(b: Browser, message: str, name: str, timeout: float = 30.0) -> None:
    """Hovers the message and clicks its action `name` (Reply, React, Edit, Delete), matched
    exactly: a group's header has "Edit topic" and "Delete group" too. Tried again while the
    message re-renders (just sent: its actions come with its id)."""
    exact = re.compile(rf"^{re.escape(name)}$")
    deadline = time.monotonic() + timeout
    while True:
        try:
            await hover(b, await b.wait_text(message, 10))
            await b.click(await b.wait_text(exact, 3, role="button"))
            return
        except (AssertionError, CDPError):
            if time.monotonic() > deadline:
                raise
            await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=1, y=1)
            await asyncio.sleep(0.3)


async def open_conversation(b: Browser, title: str) -> None:
    await b.click(await b.wait_text(re.compile(rf"^{re.escape(title)}\b"), 30, role="button"))


async def kill_browser(b: Browser) -> None:
    """kill -9 of chromium and its helpers (what a crash does), then the profile is removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(b.proc.pid, signal.SIGKILL)
    await b.close()


async def log_in_in_browser(b: Browser, user: str, realm: str) -> None:
    await b.wait_text("Create account", 90, role="button")
    await b.fill("User name", user)
    await b.fill("Password", PW)
    for _ in range(3):
        await asyncio.sleep(0.5)  # typed text reaches the app a moment after it shows
        await b.click(await b.wait_text("Log in", role="button"))
        try:
            await b.wait_text(f"{user} @ {realm}", 15)
            return
        except AssertionError:
            if await b.find("enter a user name and a password") is None:
                break  # slow, not refused: keep waiting
            await b.fill("User name", user, replace=True)
            await b.fill("Password", PW, replace=True)
    await b.wait_text(f"{user} @ {realm}", 30)


async def scroll_back_until(
    b: Browser, newest: re.Pattern[str], pattern: re.Pattern[str], no_twice: re.Pattern[str], timeout: float = 90.0
) -> None:
    """Wheel turns upwards over the message list (above its `newest` message, at the bottom)
    until `pattern` is shown; on every screen
    on the way, no message matching `no_twice` may be shown twice."""
    x, y = await b.center_of(await b.wait_text(newest, 20))

    async def reached() -> bool:
        await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y - 100)
        for _ in range(5):
            await b.evaluate(WHEEL_UP % (x, y - 100))
            await asyncio.sleep(0.1)
        shown = Counter(
            n.text for n in await b.ax_nodes() if not n.ignored and n.backend_id is not None and no_twice.search(n.text)
        )
        twice = [text for text, k in shown.items() if k > 1]
        assert not twice, f"shown twice: {twice}"
        return await b.find(pattern) is not None

    try:
        await wait_for(reached, timeout, f"{pattern.pattern!r} after scrolling back", interval=0.5)
    except AssertionError as e:
        await b.screenshot(ARTIFACTS / "e2e-irc-gui-scroll-failed.png")
        raise AssertionError(f"{e}; visible texts: {await b.ax_texts()}") from None


# ---- the test --------------------------------------------------------------------------------------


@pytest.mark.timeout(900)  # a bound for a loaded machine, not a speed test
async def test_irc_client_and_gui_user_in_a_private_keyed_channel(
    stack: Stack, gui_beta: ServerProcess, uname: Names
) -> None:
    ian, gail, g = uname("ian"), uname("gail"), uname("vault")
    chan = f"#{g}"
    # ian's account (the IRC user); gail makes hers in the GUI.
    await (await login(*stack.realm("alpha"), ian)).close()
    url = f"http://{gui_beta.addr}/"
    b = await Browser.launch(url)
    c, _ = await irc_login(stack, ian)
    connections = [c]  # every IRC connection of ian's, for counting what reached him
    try:
        # ---- gail: a private group with a key, made in the dialog -------------------------------
        await register_in_browser(b, gail, realm="beta")
        await b.click(await b.wait_text("New group", role="button"))
        await b.fill("Group name", g)
        await b.click(await b.wait_text(re.compile(r"^Private"), role="checkbox"))
        await b.fill("Key (optional)", KEY)
        await b.click(await b.wait_text("Create group", role="button"))
        await b.wait_text(re.compile(r"^group · 1 member · you are owner · private"), 30)

        # ---- ian: a wrong key is 475, the right one joins -----------------------------------------
        await c.send(f"JOIN {chan} not-the-key")
        refused = await irc_wait(c, lambda ln: ln.command in ("475", "JOIN", "473"), "the JOIN refusal")
        assert refused.command == "475" and refused.params[1].lower() == chan.lower(), refused.raw
        await c.send(f"JOIN {chan}")  # no key at all: refused the same way
        assert (await irc_wait(c, lambda ln: ln.command in ("475", "JOIN", "473"), "475")).command == "475"
        await c.send(f"JOIN {chan} {KEY}")
        joined = await irc_wait(c, lambda ln: ln.command in ("JOIN", "475", "473"), "the JOIN")
        assert joined.command == "JOIN" and joined.nick == ian, joined.raw
        names = await irc_wait(c, lambda ln: ln.command == "353", "NAMES")
        assert f"~{gail}" in names.params[-1].split() and ian in names.params[-1].split(), names.raw
        await b.wait_text(re.compile(r"^group · 2 members · you are owner · private"), 30)

        # ---- messages, GUI -> IRC and IRC -> GUI ------------------------------------------------------
        hello = "hello from the browser"
        await send_in_gui(b, hello)
        got = await irc_wait(c, privmsg(chan, gail, hello), "gail's message")
        gail_hello = got.tags["msgid"]
        assert got.source == f"{gail}!{gail}@realmchat" and got.tags.get("time"), got.raw
        answer = "hello from irc"
        await c.send(f"PRIVMSG {chan} :{answer}")
        echo = await irc_wait(c, privmsg(chan, ian, answer), "the echo")
        ian_answer = echo.tags["msgid"]
        await b.wait_text(bubble(ian, answer), 30)

        # ---- replies both ways ---------------------------------------------------------------------------
        await c.send(f"@+draft/reply={gail_hello} PRIVMSG {chan} :a reply from irc")
        echo = await irc_wait(c, privmsg(chan, ian, "a reply from irc"), "the reply's echo")
        assert echo.tags.get("+draft/reply") == gail_hello, echo.raw
        ian_reply = echo.tags["msgid"]
        # In the GUI: the quote of gail's message above ian's text.
        await b.wait_text(re.compile(rf"^{re.escape(ian)} \d\d:\d\d ↪ you: {re.escape(hello)} a reply from irc$"), 30)
        await action(b, answer, "Reply")
        await b.wait_text(re.compile(rf"^Replying to {re.escape(ian)}: {re.escape(answer)}"), 10)
        await send_in_gui_reply(b, "a reply from the browser")
        got = await irc_wait(c, privmsg(chan, gail, "a reply from the browser"), "gail's reply")
        assert got.tags.get("+draft/reply") == ian_answer, got.raw

        # ---- reactions both ways -------------------------------------------------------------------------
        await c.send(f"@+draft/react=👍;+draft/reply={gail_hello} TAGMSG {chan}")
        await b.wait_text(re.compile(rf"^👍 1: {re.escape(ian)}\b"), 30)
        await action(b, "a reply from irc", "React")
        await b.click(await b.wait_text("React 🎉", 10, role="button"))
        got = await irc_wait(
            c, lambda ln: ln.command == "TAGMSG" and ln.nick == gail and "+typing" not in ln.tags, "gail's reaction"
        )
        assert got.params[0].lower() == chan.lower(), got.raw
        assert got.tags.get("+draft/react") == "🎉" and got.tags.get("+draft/reply") == ian_reply, got.raw
        await b.wait_text(re.compile(r"^🎉 1: you\b"), 30)

        # ---- edits both ways ------------------------------------------------------------------------------
        await c.send(f"PRIVMSG {chan} :typo here")
        typo = (await irc_wait(c, privmsg(chan, ian, "typo here"), "the echo")).tags["msgid"]
        await b.wait_text(bubble(ian, "typo here"), 30)
        await c.send(f"@+draft/edit={typo} PRIVMSG {chan} :typo fixed")
        await b.wait_text(bubble(ian, "typo fixed", "edited"), 30)
        assert await b.find("typo here") is None
        await send_in_gui(b, "draft one")
        got = await irc_wait(c, privmsg(chan, gail, "draft one"), "gail's message")
        draft_id = got.tags["msgid"]
        await action(b, "draft one", "Edit")
        await b.wait_text(re.compile(r"^Editing your message: draft one"), 10)
        await b.fill("Message", "draft two", replace=True)
        await b.press_enter()
        got = await irc_wait(c, privmsg(chan, gail, "draft two"), "gail's edit")
        assert got.tags.get("+draft/edit") == draft_id, got.raw
        await b.wait_text(bubble("you", "draft two", "edited"), 30)

        # ---- deletions both ways --------------------------------------------------------------------------
        await c.send(f"REDACT {chan} {typo}")
        await irc_wait(c, lambda ln: ln.command == "REDACT" and ln.params[1] == typo, "the REDACT echo")

        async def typo_gone() -> bool:
            return await b.find("typo fixed") is None

        await wait_for(typo_gone, 30, "ian's deleted message gone from the GUI")
        await b.wait_text(bubble(ian, "message deleted"), 10)
        await action(b, "draft two", "Delete")
        await b.click(await b.wait_text("Delete for everyone", 10, role="button"))
        got = await irc_wait(c, lambda ln: ln.command == "REDACT" and ln.nick == gail, "gail's REDACT")
        assert got.params[:2] == [chan, draft_id] or (
            got.params[0].lower() == chan.lower() and got.params[1] == draft_id
        ), got.raw
        await b.wait_text(bubble("you", "message deleted"), 30)

        # ---- read state -----------------------------------------------------------------------------------
        # ian marks the channel read on IRC: the marker (his own) is answered as set.
        await send_in_gui(b, "read me")
        got = await irc_wait(c, privmsg(chan, gail, "read me"), "gail's message")
        await c.send(f"MARKREAD {chan} timestamp={got.tags['time']}")
        mark = await irc_wait(c, lambda ln: ln.command == "MARKREAD", "the MARKREAD answer")
        assert mark.params == [chan, f"timestamp={got.tags['time']}"] or (
            mark.params[0].lower() == chan.lower() and mark.params[1] == f"timestamp={got.tags['time']}"
        ), mark.raw
        # In a private chat the GUI shows how far the peer read (two ticks, "seen"): ian's
        # MARKREAD on gail's private message ticks it.
        await b.click(await b.wait_text("Chat", role="button"))
        await b.fill_and_submit("User name", ian, "Start chat", "enter a user name")
        await b.wait_text("Send file", 20, role="button")
        await send_in_gui(b, "did you read this?")
        got = await irc_wait(
            c,
            lambda ln: ln.command == "PRIVMSG" and ln.nick == gail and ln.params == [ian, "did you read this?"],
            "gail's private message",
        )
        await c.send(f"MARKREAD {gail} timestamp={got.tags['time']}")
        mark = await irc_wait(c, lambda ln: ln.command == "MARKREAD" and ln.params[0] == gail, "MARKREAD")
        assert mark.params[1] == f"timestamp={got.tags['time']}", mark.raw
        await b.wait_text(bubble("you", "did you read this?", "seen"), 30)
        # gail reads ian's private message in the open conversation: her marker moves, his own
        # stays where he put it (IRC has no way to show another user's reading).
        await c.send(f"PRIVMSG {gail} :and you mine?")
        mine = await irc_wait(
            c,
            lambda ln: ln.command == "PRIVMSG" and ln.nick == ian and ln.params == [gail, "and you mine?"],
            "the echo",
        )
        await b.wait_text(bubble(ian, "and you mine?"), 30)
        await c.send(f"MARKREAD {gail}")
        mark = await irc_wait(c, lambda ln: ln.command == "MARKREAD" and ln.params[0] == gail, "MARKREAD")
        assert mark.params[1] == f"timestamp={got.tags['time']}" != f"timestamp={mine.tags['time']}", mark.raw
        # Groups show no read ticks in the GUI: gail's channel message stays with its one tick.
        await open_conversation(b, f"# {g}")
        await b.wait_text(bubble("you", "read me"), 30)
        await b.screenshot(ARTIFACTS / "e2e-irc-gui-channel.png")

        # ---- the IRC client dies while gail sends: each message once, at the next login ------------------
        await send_in_gui(b, "before the drop")
        await irc_wait(c, privmsg(chan, gail, "before the drop"), "gail's message")
        drop(c)
        meanwhile = [f"while irc is gone {i}" for i in range(4)]
        for text in meanwhile:
            await send_in_gui(b, text)
        c, _ = await irc_login(stack, ian)
        connections.append(c)
        assert any(
            ln.command == "JOIN" and ln.params[0].lower() == chan.lower()
            for ln in await _after_welcome(c, meanwhile[-1], chan, gail)
        ), "no JOIN of the channel at login"
        await c.quiet(1.5)  # a duplicate would come right behind
        _assert_once(connections, chan, gail, ["before the drop", *meanwhile])

        # IRC's history: SEARCH finds what was said in the channel before.
        await c.send(f"SEARCH {chan} browser")
        found = await irc_wait(c, lambda ln: ln.command == "NOTICE" and "found" in ln.params[-1], "SEARCH's end")
        hits = [ln.params[-1] for ln in c.seen if ln.command == "NOTICE" and ln.params[-1].startswith("[")]
        assert any(f"[{gail_hello}]" in h and hello in h for h in hits), (hits, found.raw)

        # ---- the browser dies while ian sends: each message shown once in the reopened GUI -------------
        fillers = [f"filler {i:02d}" for i in range(FILLERS)]
        for text in fillers:
            await c.send(f"PRIVMSG {chan} :{text}")
        await irc_wait(c, privmsg(chan, ian, fillers[-1]), "the last filler's echo", 60)
        await b.wait_text(bubble(ian, fillers[-1]), 60)
        await kill_browser(b)
        away = [f"while the browser is gone {i}" for i in range(5)]
        for text in away[:2]:  # the GUI's session may still be up: these reach it live
            await c.send(f"PRIVMSG {chan} :{text}")

        async def gail_offline() -> bool:  # the killed tab's session ended: gail is offline
            await c.send(f"WHOIS {gail}")
            ln = await irc_wait(c, lambda x: x.command in ("311", "401"), "WHOIS")
            return ln.command == "401"

        await wait_for(gail_offline, 60, f"{gail} offline once the browser is gone", interval=1.0)
        for text in away[2:]:  # these wait for gail's next login
            await c.send(f"PRIVMSG {chan} :{text}")
        await irc_wait(c, privmsg(chan, ian, away[-1]), "the echo")

        b = await Browser.launch(url)
        await log_in_in_browser(b, gail, "beta")
        await open_conversation(b, f"# {g}")
        for text in away:
            await b.wait_text(bubble(ian, text), 30)
        await b.wait_text(bubble(ian, fillers[-1]), 10)
        await b.settle()
        for text in [*away, *fillers[-5:]]:
            assert await count_shown(b, bubble(ian, text)) == 1, (text, await b.ax_texts())
        await b.screenshot(ARTIFACTS / "e2e-irc-gui-reopened.png")
        # Scrolling back loads the older pages, up to gail's first message, each shown once.
        await scroll_back_until(b, bubble(ian, away[-1]), bubble("you", hello), re.compile(r" \d\d:\d\d filler \d\d$"))
    finally:
        for conn in connections:
            await conn.close()
        await b.close()


async def send_in_gui_reply(b: Browser, text: str) -> None:
    """Sends while the reply preview is open; the bubble carries the quote before its text."""
    await b.fill("Message", text)
    await b.press_enter()
    await b.wait_text(re.compile(rf"^you \d\d:\d\d ↪ .* {re.escape(text)}$"), 30)


async def _after_welcome(c: IrcClient, last: str, chan: str, sender: str) -> list[Line]:
    """Lines after the welcome, up to the last message that waited."""
    start = len(c.seen)
    await irc_wait(c, privmsg(chan, sender, last), f"{last!r} after the login")
    return c.seen[start:]


def _assert_once(connections: list[IrcClient], chan: str, sender: str, texts: list[str]) -> None:
    """Each text from `sender` in `chan` reached ian once over all his connections, by msgid."""
    got = [
        ln
        for conn in connections
        for ln in conn.seen
        if ln.command == "PRIVMSG"
        and ln.nick == sender
        and ln.params[0].lower() == chan.lower()
        and ln.params[-1] in texts
    ]
    by_id = Counter(ln.tags["msgid"] for ln in got)
    assert all(k == 1 for k in by_id.values()), [ln.raw for ln in got]
    assert sorted(ln.params[-1] for ln in got) == sorted(texts), [ln.raw for ln in got]
