"""End to end in the browser: a private group made in the web GUI, a user on the other realm
invited (raw text protocol) who joins, the topic set from the header, and a kick from the
members panel that shows on both sides: the kicked user's client gets the member event, the
browser's members panel drops them. Then the same screen at phone width. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from .gui_driver import Browser, wait_for
from .stack import ROOT, Stack
from .test_gui_web_e2e import register_in_browser
from .textclient import TextClient, login

ARTIFACTS = ROOT / "test-artifacts"
PHONE = (400, 800)


async def event_where(c: TextClient, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                      ) -> dict[str, Any]:
    """The first event matching `pred` (others are skipped)."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            ev = await c.event(max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if pred(ev):
            return ev
        seen.append(ev)
    raise AssertionError(f"no matching event within {timeout}s; saw {seen}")


async def test_private_group_invite_topic_and_kick_in_the_browser(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob, g = uname("alice"), uname("bob"), uname("crew")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    try:
        await register_in_browser(b, alice)

        # ---- a private group through the dialog -------------------------------------------------
        await b.click(await b.wait_text("New group", role="button"))
        await b.fill("Group name", g)
        await b.click(await b.wait_text(re.compile(r"^Private"), role="checkbox"))
        await b.click(await b.wait_text("Create group", role="button"))
        await b.wait_text(re.compile(r"^group · 1 member · you are owner · private"), 20)
        # The members panel beside the conversation: the owner, online on alpha.
        await b.wait_text("Members (1)", 20)
        await b.wait_text(f"#{g} · 1 online", 20)
        await b.wait_text(re.compile(rf"{re.escape(alice)} \(you\)\s+owner · online on alpha"), 20)

        # Not invited yet: the realm refuses bob.
        r = await bob_client.cmd(f"joingroup {g}")
        assert r["status"] == "ERROR" and r["code"] == "PERMISSION_DENIED", r

        # ---- invite bob (realm beta) from the members panel ---------------------------------------
        await b.click(await b.wait_text("Invite", role="button"))
        await b.fill_and_submit("User to invite", bob, "Send invitation", "enter a user to invite")
        ev = await event_where(bob_client, lambda e: e.get("event") == "invited")
        assert ev["group"].lower() == g.lower() and ev["by"] == alice, ev
        await bob_client.ok(f"joingroup {g}")
        await b.wait_text(re.compile(rf"^online {re.escape(bob)}\s+member · online on beta"), 30)
        await b.wait_text(re.compile(rf"{re.escape(bob)} joined"), 20)
        await b.wait_text(re.compile(r"^group · 2 members · you are owner"), 20)

        # ---- the topic, set from the conversation header, reaches bob ----------------------------
        await b.click(await b.wait_text("Edit topic", role="button"))
        await b.fill("Topic (empty: none)", "launch on friday")
        await b.click(await b.wait_text("Set topic", role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "topic")
        assert ev["topic"] == "launch on friday" and ev["by"] == alice, ev
        await b.wait_text("Topic: launch on friday", 20)
        await b.screenshot(ARTIFACTS / "gui-rooms-members.png")

        # ---- kick bob from the panel: his client hears it, the panel drops him -------------------
        await b.click(await b.wait_text(f"Kick {bob}", role="button"))
        await b.fill("Reason (optional)", "wrong room")
        await b.click(await b.wait_text("Kick", role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "member" and e.get("action") == "kick")
        assert ev["user"] == bob and ev["by"] == alice and ev["group"].lower() == g.lower(), ev
        await b.wait_text(re.compile(rf"{re.escape(bob)} was kicked by you: wrong room"), 20)

        async def bob_gone() -> bool:
            return await b.find(re.compile(rf"^(online|offline) {re.escape(bob)}\s+member · ")) is None

        await wait_for(bob_gone, 20, "bob gone from the members panel")
        r = await bob_client.cmd(f"sendgroup {g} am I still in?")
        assert r["status"] == "ERROR" and r["code"] == "PERMISSION_DENIED", r
        await b.screenshot(ARTIFACTS / "gui-rooms-kicked.png")

        # ---- phone width: the conversation, then the members panel instead of it ----------------
        await b.cdp.send("Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1],
                         deviceScaleFactor=1, mobile=False)
        # The phone layout is on screen (the back arrow) before the header's Members is used.
        await b.wait_text("Back to conversations", 20, role="button")
        await b.click(await b.wait_text("Members", 20, role="button"))
        await b.wait_text(re.compile(rf"{re.escape(alice)} \(you\)\s+owner · online on alpha"), 20)
        await b.wait_text("Back to the conversation", 20, role="button")
        await b.screenshot(ARTIFACTS / "gui-rooms-phone-members.png")
        await b.click(await b.wait_text("Back to the conversation", role="button"))
        await b.wait_text("Topic: launch on friday", 20)
        await b.screenshot(ARTIFACTS / "gui-rooms-phone.png")
    finally:
        await bob_client.close()
