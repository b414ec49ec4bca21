"""End to end in the browser: right after logging in again, the side list says what waited
and where, and the user's own message that the peer read while the app was logged out shows
its tick at once (no live event reached this app)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from .gui_driver import Browser
from .stack import Stack
from .test_gui_web_e2e import PW, register_in_browser
from .test_gui_web_rooms import event_where
from .textclient import login

pytestmark = pytest.mark.xdist_group("browser")


async def test_waiting_line_and_ticks_after_logging_in_again(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    try:
        await register_in_browser(b, alice)
        await bob_client.ok(f"sendprivate {alice} hi alice")
        await b.click(await b.wait_text(re.compile(rf"^{re.escape(bob)}\b"), role="button"))
        await b.fill("Message", "thanks bob")
        await b.press_enter()
        sent = await event_where(bob_client, lambda e: e.get("event") == "private" and e.get("from") == alice)
        await b.wait_text(re.compile(r"^you \d\d:\d\d thanks bob$"), 20)  # not read yet: no tick

        await b.click(await b.wait_text("Log out", role="button"))
        await b.wait_text("You are logged out.", 20)
        # While alice is away: bob reads her message and writes twice.
        await bob_client.ok(f"read {alice} {sent['id']}")
        await bob_client.ok(f"sendprivate {alice} one more")
        await bob_client.ok(f"sendprivate {alice} and another")

        await b.fill("User name", alice, replace=True)
        await b.fill("Password", PW)
        await b.click(await b.wait_text("Log in", role="button"))
        await b.wait_text(f"{alice} @ alpha", 30)
        await b.wait_text(f"2 messages waiting when you logged in: 2 from {bob}", 30)
        await b.click(await b.wait_text(re.compile(rf"^{re.escape(bob)}\b"), role="button"))
        await b.wait_text(re.compile(r"^you \d\d:\d\d seen thanks bob$"), 20)
    finally:
        await bob_client.close()
