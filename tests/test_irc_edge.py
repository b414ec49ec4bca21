"""The IRC edge (--irc-port) against real processes: one main and realms alpha and beta, each
with its IRC listener on; IRC clients (tests/ircclient.py) beside text clients."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import re
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .ircclient import IrcClient, Line, parse_line
from .stack import PYTHON, ROOT, ServerProcess, Stack, start_realm, start_stack
from .textclient import TextClient, login

Names = Callable[[str], str]
IRC_LISTEN_RE = re.compile(r"IRC listening on (\S+):(\d+)")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def irc_addr(realm: ServerProcess) -> tuple[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(realm.output):
            m = IRC_LISTEN_RE.search(line)
            if m:
                return m.group(1), int(m.group(2))
        time.sleep(0.05)
    raise AssertionError("the realm printed no 'IRC listening on' line:\n" + realm.log())


def start_irc_stack(data_dir: Path) -> Stack:
    """One main and realms alpha and beta, each with its IRC listener on a free port."""
    s = start_stack(data_dir, realms=())
    try:
        for name in ("alpha", "beta"):
            s.realms[name] = start_realm(name, s.main.addr, 0, "--irc-port", str(free_port()))
    except Exception:
        s.stop()
        raise
    return s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_irc_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


async def irc(stack: Stack, realm: str = "alpha") -> IrcClient:
    return await IrcClient.connect(*irc_addr(stack.realms[realm]))


async def text_user(stack: Stack, realm: str, user: str, password: str = "pw-secret") -> TextClient:
    return await login(*stack.realm(realm), user, password)


def numerics(lines: list[Line]) -> list[str]:
    return [ln.command for ln in lines]


# ---- registration ------------------------------------------------------------------------------

async def test_pass_registration_welcome_and_isupport(stack: Stack, uname: Names) -> None:
    alice = uname("ia")
    t = await text_user(stack, "alpha", alice)  # the account exists
    c = await irc(stack)
    hello = await c.line()
    assert hello.command == "NOTICE" and "PASS" in hello.params[-1]
    lines = await c.register(alice, f"{alice}:pw-secret")
    cmds = numerics(lines)
    for code in ("001", "002", "003", "004", "005", "375", "372", "376"):
        assert code in cmds, (code, cmds)
    assert cmds.index("001") < cmds.index("005") < cmds.index("376")
    assert lines[cmds.index("001")].params[0] == alice
    tokens = {tok.split("=", 1)[0]: tok.partition("=")[2]
              for ln in lines if ln.command == "005" for tok in ln.params[1:-1]}
    assert tokens["CASEMAPPING"] == "ascii" and tokens["CHANTYPES"] == "#"
    assert tokens["PREFIX"] == "(qo)~@"
    for name in ("CHANMODES", "NICKLEN", "CHANNELLEN", "TOPICLEN", "TARGMAX"):
        assert name in tokens, tokens
    # The same account on a second connection: another device, not a nick collision.
    c2 = await irc(stack, "beta")
    await c2.line()
    lines2 = await c2.register(alice, "pw-secret")  # PASS with the password alone: the nick is the account
    assert "433" not in numerics(lines2) and "001" in numerics(lines2)
    await c.send("PING :tok123")
    pong = await c.until("PONG")
    assert pong.params[-1] == "tok123"
    await c.send("QUIT :bye")
    err = await c.until("ERROR")
    assert "bye" in err.params[-1]
    await c2.close()
    await t.close()


async def test_sasl_plain_registration(stack: Stack, uname: Names) -> None:
    bob = uname("ib")
    t = await text_user(stack, "alpha", bob)
    c = await irc(stack)
    await c.line()
    await c.send("CAP LS 302")
    ls = await c.until("CAP")
    assert "sasl=PLAIN" in ls.params[-1].split()
    for cap in ("server-time", "message-tags", "echo-message", "account-tag", "multi-prefix"):
        assert cap in ls.params[-1].split(), ls
    c2 = IrcClient(c.reader, c.writer)
    await c2.send("CAP REQ :sasl")
    assert (await c2.until("CAP")).params[1] == "ACK"
    await c2.send(f"NICK {bob}")
    await c2.send(f"USER {bob} 0 * :{bob}")
    await c2.send("AUTHENTICATE PLAIN")
    assert (await c2.until("AUTHENTICATE")).params == ["+"]
    await c2.send("AUTHENTICATE " + base64.b64encode(f"\0{bob}\0pw-secret".encode()).decode())
    got = await c2.collect("903")
    assert "900" in numerics(got)
    assert got[numerics(got).index("900")].params[2] == bob
    await c2.send("CAP END")
    welcome = await c2.collect_welcome()
    assert welcome[0].command == "001" and welcome[0].params[0] == bob
    await c2.close()
    await t.close()


async def test_register_command_creates_the_account(stack: Stack, uname: Names) -> None:
    carol = uname("ic")
    c = await irc(stack, "beta")
    await c.line()
    await c.send("CAP LS 302")
    await c.until("CAP")
    await c.send(f"NICK {carol}")
    await c.send(f"USER {carol} 0 * :{carol}")
    await c.send("REGISTER * * carol-pass-1")
    ok = await c.until("REGISTER", "FAIL")
    assert ok.command == "REGISTER" and ok.params[:2] == ["SUCCESS", carol], ok
    await c.send("CAP END")
    assert (await c.collect_welcome())[0].command == "001"
    # A real account, for every protocol: the text client logs in with it.
    t = await TextClient.connect(*stack.realm("alpha"))
    await t.ok(f"auth {carol} carol-pass-1")
    # Registering it again fails with a standard reply.
    c2 = await irc(stack)
    await c2.line()
    await c2.send(f"NICK {carol}")
    await c2.send(f"REGISTER {carol} * other-pass-1")
    fail = await c2.until("FAIL")
    assert fail.params[:2] == ["REGISTER", "ACCOUNT_EXISTS"], fail
    for x in (c, c2, t):
        await x.close()


async def test_bad_password_gets_464_and_904_with_a_hint(stack: Stack, uname: Names) -> None:
    dave = uname("id")
    t = await text_user(stack, "alpha", dave)
    c = await irc(stack)
    await c.line()
    await c.send(f"PASS {dave}:wrong-pass")
    await c.send(f"NICK {dave}")
    await c.send(f"USER {dave} 0 * :{dave}")
    got = await c.collect("464")
    assert "001" not in numerics(got)
    hint = await c.until("NOTICE")
    assert "REGISTER" in hint.params[-1]
    # Still not registered: commands wait for a login.
    await c.send("PRIVMSG x :y")
    assert (await c.until("451")).command == "451"
    # Another PASS is another try: the right password logs in.
    await c.send(f"PASS {dave}:pw-secret")
    assert (await c.collect_welcome())[0].command == "001"
    c2 = await irc(stack)
    await c2.line()
    got2 = await c2.sasl(dave, dave, "wrong-pass")
    assert got2[-1].command == "904"
    assert "REGISTER" in (await c2.until("NOTICE")).params[-1]
    # Unknown accounts too.
    c3 = await irc(stack)
    await c3.line()
    assert (await c3.sasl("nobody_here", "nobody_here", "pw"))[-1].command == "904"
    for x in (c, c2, c3, t):
        await x.close()


# ---- messages ----------------------------------------------------------------------------------

async def test_private_messages_irc_and_text_across_realms(stack: Stack, uname: Names) -> None:
    alice, bob = uname("pa"), uname("pb")
    t = await text_user(stack, "beta", bob)
    await t.ok(f"register {alice} pw-secret")
    c = await irc(stack, "alpha")
    await c.line()
    await c.register(alice, f"{alice}:pw-secret", caps=("server-time", "message-tags", "echo-message"))
    await c.send(f"PRIVMSG {bob} :hello from irc")
    echo = await c.until("PRIVMSG")  # echo-message
    assert echo.nick == alice and echo.params == [bob, "hello from irc"]
    ev = await t.event()
    assert ev["event"] == "private" and ev["from"] == alice and ev["text"] == "hello from irc"
    assert echo.tags["msgid"] == str(ev["id"])
    r = await t.ok(f"sendprivate {alice} hi back from text")
    got = await c.until("PRIVMSG")
    assert got.nick == bob and got.params == [alice, "hi back from text"]
    assert got.tags["msgid"] == str(r["id"]) and TIME_RE.match(got.tags["time"]), got
    assert got.tags["time"] == r["ts"]
    # Errors: an unknown nick.
    await c.send("PRIVMSG no_such_user_x :hello")
    assert (await c.until("401")).params[1] == "no_such_user_x"
    await c.send("PRIVMSG")
    await c.until("411")
    await c.send(f"PRIVMSG {bob}")
    await c.until("412")
    await c.close()
    await t.close()


async def test_channel_messages_irc_and_text(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("ca"), uname("cb"), uname("cg")
    t = await text_user(stack, "beta", bob)
    await t.ok(f"register {alice} pw-secret")
    c = await irc(stack, "alpha")
    await c.line()
    await c.register(alice, f"{alice}:pw-secret", caps=("server-time", "message-tags"))
    await c.send(f"JOIN #{g}")  # an unknown channel: created, alice its owner
    joined = await c.collect("366")
    assert joined[0].command == "JOIN" and joined[0].nick == alice and joined[0].params == [f"#{g}"]
    names = [ln for ln in joined if ln.command == "353"]
    assert names and f"~{alice}" in names[0].params[-1].split()
    await t.ok(f"joingroup {g}")
    j = await c.until("JOIN")
    assert j.nick == bob and j.params == [f"#{g}"]
    await c.send(f"PRIVMSG #{g} :hello room")
    ev = await t.event()
    while ev["event"] != "group":
        ev = await t.event()
    assert ev["from"] == alice and ev["group"] == g and ev["text"] == "hello room"
    r = await t.ok(f"sendgroup {g} hello irc")
    got = await c.until("PRIVMSG")
    assert got.nick == bob and got.params == [f"#{g}", "hello irc"] and got.tags["msgid"] == str(r["id"])
    # NAMES: the owner ~, the others plain; TOPIC set and read.
    await c.send(f"NAMES #{g}")
    names2 = await c.collect("366")
    assert set(names2[0].params[-1].split()) == {f"~{alice}", bob}
    await c.send(f"TOPIC #{g}")
    assert (await c.until("331", "332")).command == "331"
    await c.send(f"TOPIC #{g} :the new topic")
    tp_line = await c.until("TOPIC")
    assert tp_line.params == [f"#{g}", "the new topic"]
    ev = await t.event()
    while ev["event"] != "topic":
        ev = await t.event()
    assert ev["topic"] == "the new topic"
    await c.send(f"TOPIC #{g}")
    assert (await c.until("332")).params[-1] == "the new topic"
    # bob leaves: a PART line; a non-member cannot send (404) nor set the topic (442/482).
    await t.ok(f"leavegroup {g}")
    part = await c.until("PART")
    assert part.nick == bob
    dave = uname("cd")
    c2 = await irc(stack, "beta")
    await c2.line()
    await t.ok(f"register {dave} pw-secret")
    await c2.register(dave, f"{dave}:pw-secret")
    await c2.send(f"PRIVMSG #{g} :not a member")
    assert (await c2.until("404")).params[1] == f"#{g}"
    await c2.send(f"TOPIC #{g} :mine")
    assert (await c2.until("442", "482")).command in ("442", "482")
    await c2.send(f"PART #{g}")
    assert (await c2.until("442")).params[1] == f"#{g}"
    await c2.send("PART #no_such_group_zz")
    await c2.until("403")
    await c2.send("JOIN bad-channel")
    await c2.until("403")
    await c2.send("JOIN")
    await c2.until("461")
    # The owner cannot part (a realmchat group keeps its owner): a notice says why.
    await c.send(f"PART #{g} :bye")
    why = await c.until("NOTICE", "PART")
    assert why.command == "NOTICE" and "owner" in why.params[-1], why
    # dave joins and parts: the PART line back to him, and to the owner.
    await c2.send(f"JOIN #{g}")
    await c2.collect("366")
    await c2.send(f"PART #{g} :bye")
    own = await c2.until("PART")
    assert own.nick == dave and own.params[0] == f"#{g}"
    assert (await c.until("PART")).nick == dave
    for x in (c, c2, t):
        await x.close()


async def test_join_with_a_key(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("ka"), uname("kb"), uname("kg")
    t = await text_user(stack, "alpha", alice)
    await t.ok(f"register {bob} pw-secret")
    c = await irc(stack, "alpha")
    await c.line()
    await c.register(alice, f"{alice}:pw-secret")
    await c.send(f"JOIN #{g} sekrit")  # created with that key
    await c.collect("366")
    c2 = await irc(stack, "beta")
    await c2.line()
    await c2.register(bob, f"{bob}:pw-secret")
    await c2.send(f"JOIN #{g}")
    assert (await c2.until("475", "JOIN")).command == "475"
    await c2.send(f"JOIN #{g} wrong-key")
    assert (await c2.until("475", "JOIN")).command == "475"
    await c2.send(f"JOIN #{g} sekrit")
    j = await c2.until("JOIN", "475")
    assert j.command == "JOIN" and j.nick == bob
    assert (await c.until("JOIN")).nick == bob  # the owner sees it
    # The text protocol sees the same key: a text user without it is refused.
    carol = uname("kc")
    t2 = await text_user(stack, "beta", carol)
    await t2.err(f"joingroup {g}", "PERMISSION_DENIED")
    for x in (c, c2, t, t2):
        await x.close()


# ---- delivery ----------------------------------------------------------------------------------

def _ids(data: bytes) -> list[int]:
    """The msgid of every complete PRIVMSG line in data (a cut last line is no line)."""
    out = []
    for raw in data.split(b"\r\n")[:-1]:
        ln = parse_line(raw.decode())
        if ln.command == "PRIVMSG":
            out.append(int(ln.tags["msgid"]))
    return out


async def test_irc_client_killed_mid_stream_loses_nothing_and_gets_nothing_twice(stack: Stack,
                                                                                   uname: Names) -> None:
    alice, bob = uname("za"), uname("zb")
    t = await text_user(stack, "beta", bob)
    await t.ok(f"register {alice} pw-secret")
    host, port = irc_addr(stack.realms["alpha"])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the realm stalls soon
    sock.connect((host, port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    c = IrcClient(reader, writer)
    await c.line()
    await c.register(alice, f"{alice}:pw-secret", caps=("message-tags", "server-time"))
    assert not reader._buffer  # type: ignore[attr-defined]  # (nothing read ahead of the welcome)
    # Stop reading: the StreamReader would read on, so the socket is taken from it.
    writer.transport.pause_reading()
    n = 200
    sent = []
    for i in range(n):
        r = await t.ok(f"sendprivate {alice} message {i:03d} " + "x" * 300)
        sent.append(r["id"])

    def unread() -> int:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])

    # Once the window is shut, what reached this socket stays what it is.
    stable, last = 0, -1
    while stable < 10:
        await asyncio.sleep(0.1)
        now = unread()
        stable = stable + 1 if now == last else 0
        last = now
    assert 0 < last < n * 300, last  # some of it arrived, not all of it
    first = sock.recv(last + 65536, socket.MSG_PEEK)  # peeked: the window stays shut
    got_first = _ids(first)
    assert got_first == sent[:len(got_first)] and len(got_first) < n
    # Killed: a reset, as a crash would leave it.
    t.ignore = frozenset()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    # Reconnecting once the realm has ended the old session (bob sees alice go offline): what
    # it had on its way is undelivered again by then, not in flight.
    while True:
        ev = await t.event(timeout=15)
        if ev["event"] == "presence" and ev["user"] == alice and ev["status"] == "offline":
            break
    c2 = await irc(stack, "alpha")
    await c2.line()
    await c2.register(alice, f"{alice}:pw-secret", caps=("message-tags", "server-time"))
    later: list[Line] = []
    while len(got_first) + len(later) < n:
        later.append(await c2.until("PRIVMSG"))
    got_later = [int(ln.tags["msgid"]) for ln in later]
    assert sorted(got_first + got_later) == sorted(sent), "lost or doubled messages"
    assert not set(got_first) & set(got_later)
    assert all(TIME_RE.match(ln.tags["time"]) for ln in later)
    assert [ln for ln in await c2.quiet(1.0) if ln.command == "PRIVMSG"] == []
    # Nothing waits any more: a third connection is sent none of them again.
    c3 = await irc(stack, "beta")
    await c3.line()
    await c3.register(alice, f"{alice}:pw-secret", caps=("message-tags",))
    assert [ln for ln in await c3.quiet(1.0) if ln.command == "PRIVMSG"] == []
    for x in (c2, c3, t):
        await x.close()


async def test_catch_up_keeps_the_original_time(stack: Stack, uname: Names) -> None:
    alice, bob = uname("ta"), uname("tb")
    t = await text_user(stack, "beta", bob)
    await t.ok(f"register {alice} pw-secret")
    r = await t.ok(f"sendprivate {alice} sent while away")
    await asyncio.sleep(0.2)
    c = await irc(stack, "alpha")
    await c.line()
    await c.register(alice, f"{alice}:pw-secret", caps=("server-time", "message-tags"))
    got = await c.until("PRIVMSG")
    assert got.params == [alice, "sent while away"] and got.tags["time"] == r["ts"]
    # Without server-time the time is in the text.
    await t.ok(f"sendprivate {alice} another one")
    await c.until("PRIVMSG")
    await c.close()
    r2 = await t.ok(f"sendprivate {alice} while away again")
    await asyncio.sleep(0.2)
    c2 = await irc(stack, "alpha")
    await c2.line()
    await c2.register(alice, f"{alice}:pw-secret")
    got2 = await c2.until("PRIVMSG")
    assert got2.params[1] == f"[{r2['ts'][:16].replace('T', ' ')}] while away again"
    await c2.close()
    await t.close()


# ---- hostile input -----------------------------------------------------------------------------

async def test_hostile_lines(stack: Stack, uname: Names) -> None:
    alice, bob = uname("ha"), uname("hb")
    t = await text_user(stack, "alpha", bob)
    await t.ok(f"register {alice} pw-secret")
    c = await irc(stack)
    await c.line()
    await c.send("PRIVMSG x :before login")
    assert (await c.until("451")).command == "451"
    await c.register(alice, f"{alice}:pw-secret")
    # Over-long: past 512 bytes without tags (417), and past the framing's whole limit (417 too);
    # nothing of either line runs, its tail included.
    await c.send_raw(f"PRIVMSG {bob} :".encode() + b"a" * 600 + b"\r\n")
    assert (await c.until("417")).command == "417"
    await c.send_raw(f"PRIVMSG {bob} :".encode() + b"b" * 9000 + f" \r\nPRIVMSG {bob} :after\r\n".encode())
    assert (await c.until("417")).command == "417"
    ev = await t.event()
    assert ev["event"] == "private" and ev["text"] == "after", ev  # the next line runs, the long one did not
    # NUL inside a line: refused, not sent.
    await c.send_raw(f"PRIVMSG {bob} :nul\0here\r\n".encode())
    assert (await c.until("400")).command == "400"
    # Unknown commands.
    await c.send("FROBNICATE now")
    assert (await c.until("421")).params[1] == "FROBNICATE"
    # The table's shared rules: too few parameters (461, naming the command), registration twice (462).
    for line, command in (("JOIN", "JOIN"), (f"KICK #x{alice}", "KICK"), ("TOPIC", "TOPIC")):
        await c.send(line)
        assert (await c.until("461")).params[1] == command, line
    await c.send("USER a 0 * :again")
    assert (await c.until("462")).command == "462"
    await c.send("PASS")  # registered already: 462 comes before the missing parameter
    assert (await c.until("462", "461")).command == "462"
    await t.no_event(0.3)
    # A flood is paced (the realm's --cmd-rate and --cmd-burst), not a crash.
    n = 800
    start = time.monotonic()
    await c.send_raw(b"".join(f"PING :f{i}\r\n".encode() for i in range(n)))
    pongs = []
    while len(pongs) < n:
        ln = await c.until("PONG", timeout=30)
        pongs.append(ln.params[-1])
    elapsed = time.monotonic() - start
    assert pongs == [f"f{i}" for i in range(n)]
    assert elapsed > 1.5, elapsed  # 500 at once, then 100 a second
    await c.send("PING :alive")
    assert (await c.until("PONG")).params[-1] == "alive"
    await c.close()
    await t.close()


async def test_irc_port_0_means_no_irc_listener(tmp_path: Path) -> None:
    s = start_stack(tmp_path / "data", realms=())
    try:
        s.realms["solo"] = start_realm("solo", s.main.addr, 0, "--irc-port", "0")
        await asyncio.sleep(0.3)
        assert not any(IRC_LISTEN_RE.search(line) for line in s.realms["solo"].output)
        t = await TextClient.connect(*s.realm("solo"))  # the text port is as it was
        assert t.hello["event"] == "hello"
        await t.close()
    finally:
        s.stop()


def test_a_busy_irc_port_is_one_clear_line(stack: Stack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([PYTHON, "-m", "realm_server", "--host", "127.0.0.1", "--port", "0", "--main",
                            stack.main.addr, "--name", "gamma", "--irc-port", str(port)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode != 0
    assert "listening on" not in r.stdout, r.stdout  # nothing claims to be up
    assert f"cannot listen for IRC on 127.0.0.1:{port}" in r.stderr and "--irc-port" in r.stderr, r.stderr


async def test_whois_away_list_kick_invite(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("wa"), uname("wb"), uname("wg")
    t = await text_user(stack, "beta", bob)
    await t.ok(f"register {alice} pw-secret")
    c = await irc(stack, "alpha")
    await c.line()
    await c.register(alice, f"{alice}:pw-secret")
    await c.send(f"WHOIS {bob}")
    got = await c.collect("318")
    assert "311" in numerics(got)
    assert got[numerics(got).index("312")].params[2] == "beta"  # where bob is online
    await c.send("WHOIS nobody_online_zz")
    assert "401" in numerics(await c.collect("318"))
    await t.ok("away at lunch")
    await c.send(f"WHOIS {bob}")
    away = await c.collect("318")
    assert away[numerics(away).index("301")].params[-1] == "at lunch"
    await c.send("AWAY :gone fishing")
    await c.until("306")
    assert (await t.ok("who"))["online"]  # the text side sees alice away
    assert any(p["user"] == alice and p["status"] == "away" and p["message"] == "gone fishing"
               for p in (await t.ok("who"))["online"])
    await c.send("AWAY")
    await c.until("305")
    # LIST shows the channel with its member count and topic.
    await c.send(f"JOIN #{g}")
    await c.collect("366")
    await c.send(f"TOPIC #{g} :listed topic")
    await c.until("TOPIC")
    await c.send(f"LIST {g}")
    listed = await c.collect("323")
    rows = [ln for ln in listed if ln.command == "322"]
    assert [(r.params[1], r.params[2], r.params[3]) for r in rows] == [(f"#{g}", "1", "listed topic")]
    # INVITE and KICK act on the group, seen by the text client.
    await c.send(f"INVITE {bob} #{g}")
    inv = await c.until("341", "482", "401")
    assert inv.command == "341" and inv.params[1:] == [bob, f"#{g}"], inv
    await t.ok(f"joingroup {g}")
    await c.until("JOIN")
    await c.send(f"KICK #{g} {bob} :out")
    k = await c.until("KICK")
    assert k.nick == alice and k.params == [f"#{g}", bob, "out"]
    ev = await t.event()
    while not (ev["event"] == "member" and ev["action"] == "kick"):
        ev = await t.event()
    assert ev["user"] == bob and ev["by"] == alice
    # Only the owner and admins kick: bob on IRC is refused with 482.
    await t.ok(f"joingroup {g}")
    c2 = await irc(stack, "beta")
    await c2.line()
    await c2.register(bob, f"{bob}:pw-secret")
    await c2.send(f"KICK #{g} {alice}")
    assert (await c2.until("482")).params[1] == f"#{g}"
    for x in (c, c2, t):
        await x.close()
