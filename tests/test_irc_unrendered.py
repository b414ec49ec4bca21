"""An event one protocol shows and another does not (a typing notice, to an IRC client without
message-tags) is still written in order and reported, on every session it went to: the realm
keeps no report waiting for it (realmchat_realm_reports_awaiting goes back to 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from .ircclient import IrcClient
from .stack import start_realm, start_stack
from .test_irc_edge import free_port, irc_addr
from .test_ops import metrics_url, scrape
from .textclient import login

Names = Callable[[str], str]
GAUGE = "realmchat_realm_reports_awaiting"


async def test_an_event_irc_does_not_show_is_still_reported(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path, realms=())
    try:
        alpha = s.realms["alpha"] = start_realm("alpha", s.main.addr, 0, "--irc-port", str(free_port()),
                                                "--metrics-port", "0")
        url = metrics_url(alpha)
        me = uname("ann")
        text = await login(*s.realm("alpha"), me)  # the same account on the text port and on IRC
        irc = await IrcClient.connect(*irc_addr(alpha))
        await irc.line()
        await irc.register(me, f"{me}:pw-secret", ())  # no message-tags: typing shows nothing
        await irc.quiet(0.2)
        senders = [await login(*s.realm("alpha"), uname(f"typer{i}")) for i in range(8)]
        for t in senders:  # one typing notice each (main forwards one per sender and peer)
            assert (await t.ok(f"typing {me}"))["forwarded"] is True
        for _ in senders:
            assert (await text.event())["event"] == "typing"
        assert await irc.quiet(0.3) == [], "IRC without message-tags shows no typing"
        deadline = time.monotonic() + 10
        while (awaiting := scrape(url).get(GAUGE)) != 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert awaiting == 0, f"{awaiting:g} fan-outs still wait for the IRC session's write"
        for c in (text, *senders):
            await c.close()
        await irc.close()
    finally:
        s.stop()
