"""The test-only proxy the irctest controller puts in front of a realm (scripts/irctest_proxy.py):
a NICK/USER-only registration gets its nick's account and 001, a client's own login is left
alone. Against a real main and realm."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .ircclient import IrcClient
from .stack import ROOT, Stack
from .test_irc_edge import free_port, irc_addr, start_irc_stack

sys.path.insert(0, str(ROOT / "scripts"))
from irctest_proxy import Accounts, ProxyThread, Registration

Names = Callable[[str], str]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int]]:
    data = tmp_path_factory.mktemp("data")
    s = start_irc_stack(data)
    port = free_port()
    proxy = ProxyThread(
        ("127.0.0.1", port), irc_addr(s.realms["alpha"]), s.realm("alpha"), Accounts(Path(data) / "accounts.json")
    )
    yield s, port
    proxy.stop()
    s.stop()


def test_registration_tracks_when_to_log_in() -> None:
    r = Registration()
    assert r.client_line(b"CAP LS 302\r\n") is None
    assert r.client_line(b"NICK alice\r\n") is None
    assert r.client_line(b"USER a 0 * :A\r\n") is None  # CAP negotiation still open
    assert r.client_line(b"CAP END\r\n") == "alice"
    sasl = Registration()
    sasl.client_line(b"NICK bob\r\n")
    sasl.server_line(b":srv 900 bob bob!bob@x bob :logged in\r\n")
    assert sasl.client_line(b"USER b 0 * :B\r\n") is None


async def test_nick_user_only_gets_welcome_and_own_login_is_kept(proxied: tuple[Stack, int], uname: Names) -> None:
    _, port = proxied
    nick = uname("px")
    c = await IrcClient.connect("127.0.0.1", port)
    await c.line()
    await c.send(f"NICK {nick}")
    await c.send(f"USER {nick} 0 * :{nick}")
    welcome = await c.collect_welcome()
    assert welcome[0].command == "001" and welcome[0].params[0] == nick
    await c.close()
    # A client that brings its own (wrong) password is not helped.
    c2 = await IrcClient.connect("127.0.0.1", port)
    await c2.line()
    await c2.send(f"PASS {nick}:wrong-pw")
    await c2.send(f"NICK {nick}")
    await c2.send(f"USER {nick} 0 * :{nick}")
    assert (await c2.until("464", "001")).command == "464"
    await c2.close()
