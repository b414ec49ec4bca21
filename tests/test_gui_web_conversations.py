"""End to end in the browser: conversation state follows the user. The browser user receives
messages in two conversations, reads one, sees the other user typing and going away live, types
(the other user hears it), logs out and in again and finds both conversations with the server's
unread counts. Then the same screen at phone width. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from .gui_driver import Browser, wait_for
from .stack import ROOT, Stack
from .test_gui_web_e2e import PW, register_in_browser
from .test_gui_web_rooms import event_where
from .textclient import login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = ROOT / "test-artifacts"
PHONE = (400, 800)


async def test_unread_survives_logout_typing_and_presence_live(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    carol_client = await login(*stack.realm("alpha"), carol)
    try:
        await register_in_browser(b, alice)

        # ---- messages in two conversations: unread counts in the side list ---------------------
        await bob_client.ok(f"sendprivate {alice} one from bob")
        await bob_client.ok(f"sendprivate {alice} two from bob")
        await carol_client.ok(f"sendprivate {alice} hello from carol")
        await b.wait_text("2 unread", 30)
        await b.wait_text("1 unread", 30)
        await b.screenshot(ARTIFACTS / "gui-conv-unread.png")

        # ---- reading carol's: the read mark goes to the server, carol sees it was read ---------
        await b.click(await b.wait_text(re.compile(rf"^{re.escape(carol)}\b"), role="button"))
        await b.wait_text(re.compile(rf"^{re.escape(carol)} \d\d:\d\d hello from carol$"), 20)
        seen = await event_where(carol_client, lambda e: e.get("event") == "seen")
        assert seen["by"] == alice, seen

        async def carol_read() -> bool:
            return await b.find("1 unread") is None

        await wait_for(carol_read, 20, "carol's count cleared")
        await b.wait_text("2 unread", 5)  # bob's untouched

        # ---- alice answers; carol reads it: two ticks ------------------------------------------
        await b.fill("Message", "thanks carol")
        await b.press_enter()
        sent = await event_where(carol_client, lambda e: e.get("event") == "private")
        await b.wait_text(re.compile(r"^you \d\d:\d\d thanks carol$"), 20)  # one tick: stored
        await carol_client.ok(f"read {alice} {sent['id']}")
        await b.wait_text(re.compile(r"^you \d\d:\d\d seen thanks carol$"), 20)

        # ---- carol types, then goes away: shown live, no polling ------------------------------
        await carol_client.ok(f"typing {alice}")
        await b.wait_text(f"{carol} is typing…", 20)
        await b.screenshot(ARTIFACTS / "gui-conv-typing.png")
        await carol_client.ok("away back in ten")
        await b.wait_text("away: back in ten", 20)

        # ---- alice types: carol hears it ---------------------------------------------------------
        await asyncio.sleep(3.2)  # the app says "typing" at most every 3 s
        await b.fill("Message", "writing something")
        typing = await event_where(carol_client, lambda e: e.get("event") == "typing")
        assert typing["user"] == alice, typing
        await b.screenshot(ARTIFACTS / "gui-conv-away.png")

        # ---- carol leaves: offline, live -------------------------------------------------------
        await carol_client.close()
        await b.wait_text("offline · private chat", 20)

        # ---- log out and in: the conversations and their counts come back from the server ------
        await b.click(await b.wait_text("Log out", role="button"))
        await b.wait_text("You are logged out.", 20)
        await b.fill("User name", alice, replace=True)
        await b.fill("Password", PW)
        await b.click(await b.wait_text("Log in", role="button"))
        await b.wait_text(f"{alice} @ alpha", 30)
        await b.wait_text(re.compile(rf"^{re.escape(bob)}\b.*two from bob"), 30)
        await b.wait_text(re.compile(rf"^{re.escape(carol)}\b.*you: thanks carol"), 30)
        await b.wait_text("2 unread", 20)
        assert await b.find("1 unread") is None
        await b.screenshot(ARTIFACTS / "gui-conv-after-login.png")

        # ---- phone width: the list, then bob's conversation (read, so the count goes) ------------
        await b.cdp.send("Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1],
                         deviceScaleFactor=1, mobile=False)
        await b.screenshot(ARTIFACTS / "gui-conv-phone-list.png")
        await b.click(await b.wait_text(re.compile(rf"^{re.escape(bob)}\b"), role="button"))
        await b.wait_text("Back to conversations", 20, role="button")
        await bob_client.ok(f"typing {alice}")
        await b.wait_text(f"{bob} is typing…", 20)
        await b.screenshot(ARTIFACTS / "gui-conv-phone-typing.png")
        seen = await event_where(bob_client, lambda e: e.get("event") == "seen")
        assert seen["by"] == alice, seen
    finally:
        await bob_client.close()
        await carol_client.close()  # again if the test stopped early: closing twice is harmless
