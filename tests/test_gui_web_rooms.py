"""End to end in the browser: a private group made in the web GUI, a user on the other realm
invited (raw text protocol) who joins, the topic set from the header, and a kick from the
members panel that shows on both sides: the kicked user's client gets the member event, the
browser's members panel drops them. Then the same screen at phone width. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from .gui_driver import Browser, wait_for
from .stack import ROOT, Stack
from .test_gui_web_e2e import create_group_in_browser, register_in_browser
from .textclient import TextClient, login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

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
        await create_group_in_browser(b, g, private=True)
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
        await b.click(await b.wait_text(re.compile(r"^Kick$"), role="button"))
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


async def test_group_key_ban_unban_and_delete_in_the_browser(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    """The owner's group-wide controls in the members panel: the key (set, refused with a space,
    cleared), a ban lifted with Unban…, and the group deleted after a confirmation naming it."""
    alice, bob, carol, g = uname("alice"), uname("bob"), uname("carol"), uname("den")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    carol_client = await login(*stack.realm("alpha"), carol)
    try:
        await register_in_browser(b, alice)
        await create_group_in_browser(b, g, private=True)

        # ---- the key: a word with a space is refused in place, then one is set -------------------
        await b.click(await b.wait_text("Group key…", 20, role="button"))
        await b.fill("New key", "open sesame")
        await b.click(await b.wait_text("Set key", role="button"))
        await b.wait_text("the key must be one word (no spaces)", 10)
        await b.fill("New key", "sesame", replace=True)
        await b.click(await b.wait_text("Set key", role="button"))
        await b.wait_text(f"the key of #{g} is set", 20)
        r = await bob_client.cmd(f"joingroup {g} wrong")
        assert r["status"] == "ERROR" and r["code"] == "PERMISSION_DENIED", r
        await bob_client.ok(f"joingroup {g} sesame")
        await b.wait_text(re.compile(rf"^online {re.escape(bob)}\s+member · online on beta"), 30)

        # ---- ban, then Unban…: bob may join again -------------------------------------------------
        await b.click(await b.wait_text(f"Ban {bob}", role="button"))
        await b.click(await b.wait_text(re.compile(r"^Ban$"), role="button"))  # the dialog's, not "Ban USER"
        ev = await event_where(bob_client, lambda e: e.get("event") == "member" and e.get("action") == "ban")
        assert ev["user"] == bob and ev["by"] == alice, ev
        r = await bob_client.cmd(f"joingroup {g} sesame")
        assert r["status"] == "ERROR" and r["code"] == "PERMISSION_DENIED", r
        await b.click(await b.wait_text("Unban…", 20, role="button"))
        await b.fill_and_submit("User to unban", bob, "Unban", "enter a user to unban",
                                done=f"{bob} may join #{g} again")
        await bob_client.ok(f"joingroup {g} sesame")
        await b.wait_text(re.compile(rf"^online {re.escape(bob)}\s+member · online on beta"), 30)

        # ---- the key cleared: it lets nobody in any more ------------------------------------------
        await b.click(await b.wait_text("Group key…", 20, role="button"))
        await b.click(await b.wait_text("Clear key", 10, role="button"))
        await b.wait_text(f"#{g} has no key now", 20)
        r = await carol_client.cmd(f"joingroup {g} sesame")
        assert r["status"] == "ERROR" and r["code"] == "PERMISSION_DENIED", r

        # ---- delete: asked first (Cancel keeps it), then gone for bob too --------------------------
        await b.click(await b.wait_text("Delete group", 20, role="button"))
        await b.wait_text(re.compile(rf"^Delete #{re.escape(g)} for everyone\?"), 10)
        await b.screenshot(ARTIFACTS / "gui-rooms-delete-confirm.png")
        await b.click(await b.wait_text("Cancel", role="button"))
        await wait_for(lambda: _absent(b, "Delete for everyone"), 10, "the confirmation closed")
        await bob_client.ok(f"sendgroup {g} still here")
        await b.click(await b.wait_text("Delete group", 20, role="button"))
        await b.click(await b.wait_text("Delete for everyone", 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "groupdeleted")
        assert ev["group"].lower() == g.lower() and ev["by"] == alice, ev
        await b.wait_text("you deleted this group", 20)
    finally:
        await bob_client.close()
        await carol_client.close()


async def _absent(b: Browser, text: str) -> bool:
    return await b.find(text) is None


async def row_action(b: Browser, label: str) -> Any:
    """A member row's action button. Once, in a two-at-a-time run, the rows showed in the
    accessibility tree without their buttons for 30 s while the panel's own buttons were there:
    the screen is kept for a look, and the panel is opened again (what a user would do)."""
    try:
        return await b.wait_text(label, 20, role="button")
    except AssertionError:
        await b.screenshot(ARTIFACTS / "gui-rooms-row-buttons-missing.png")
        await b.click(await b.wait_text("Hide members", 10, role="button"))
        await b.click(await b.wait_text("Members", 10, role="button"))
        return await b.wait_text(label, 30, role="button")


async def test_banned_section_lists_bans_and_unbans_in_the_browser(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    """The owner bans a member from the members panel; the panel's Banned section lists him
    (by whom, when, why); his row's Unban lifts the ban and the row leaves the list."""
    alice, bob, carol, g = uname("alice"), uname("bob"), uname("carol"), uname("yard")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    carol_client = await login(*stack.realm("alpha"), carol)
    try:
        await register_in_browser(b, alice)
        await create_group_in_browser(b, g)
        await bob_client.ok(f"joingroup {g}")
        await carol_client.ok(f"joingroup {g}")
        await b.wait_text(re.compile(rf"^online {re.escape(bob)}\s+member · online on beta"), 30)
        await b.wait_text(re.compile(rf"^online {re.escape(carol)}\s+member · online on alpha"), 30)
        assert await b.find(re.compile(r"^BANNED")) is None  # nobody is banned yet: no section

        # ---- ban bob from his row: the Banned section lists him, by you, with the reason -----------
        await b.click(await row_action(b, f"Ban {bob}"))
        await b.fill("Reason (optional)", "flooding")
        await b.click(await b.wait_text(re.compile(r"^Ban$"), role="button"))  # the dialog's, not "Ban USER"
        ev = await event_where(bob_client, lambda e: e.get("event") == "member" and e.get("action") == "ban")
        assert ev["user"] == bob and ev["by"] == alice and ev["reason"] == "flooding", ev
        await b.wait_text("BANNED (1)", 20)
        await b.wait_text(re.compile(rf"^{re.escape(bob)}\s+by you · \d\d:\d\d · flooding$"), 20)
        await b.wait_text(f"Unban {bob}", 10, role="button")
        assert await b.find(f"Unban {carol}") is None  # carol is a member, not banned
        await b.screenshot(ARTIFACTS / "gui-rooms-banned.png")

        # ---- Unban on his row: the row and the section go, and bob may join again ------------------
        await b.click(await b.wait_text(f"Unban {bob}", role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "member" and e.get("action") == "unban")
        assert ev["user"] == bob and ev["by"] == alice, ev
        await b.wait_text(f"{bob} may join #{g} again", 20)

        async def bob_unlisted() -> bool:
            return (await b.find(f"Unban {bob}") is None
                    and await b.find(re.compile(rf"^{re.escape(bob)}\s+by you")) is None
                    and await b.find(re.compile(r"^BANNED")) is None)

        await wait_for(bob_unlisted, 20, "bob gone from the Banned section")
        await bob_client.ok(f"joingroup {g}")
        await b.wait_text(re.compile(rf"^online {re.escape(bob)}\s+member · online on beta"), 30)
    finally:
        await bob_client.close()
        await carol_client.close()


async def test_browse_and_join_a_group_and_read_receipts_in_the_browser(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    """A user finds a public group in Browse groups (a plain word matches inside names) and joins
    it with its Join button; a group that refuses them says why in the dialog, which stays open.
    Then Read receipts: on, the sender sees `seen`; off, nothing."""
    alice, bob, g, shut = uname("alice"), uname("bob"), uname("lounge"), uname("shut")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    try:
        await bob_client.ok(f"creategroup {g}")
        await bob_client.ok(f"creategroup {shut}")
        await register_in_browser(b, alice)
        await bob_client.ok(f"ban {shut} {alice} not here")

        # ---- a refusal shows in the dialog, which stays open -------------------------------------
        await b.click(await b.wait_text("Browse groups", 20, role="button"))
        await b.wait_text(re.compile(r"^\d+ groups?$"), 20)
        await b.fill("Find groups", shut)
        await b.press_enter()
        await b.wait_text(re.compile(r"^1 group$"), 20)
        await b.click(await b.wait_text(re.compile(rf"^Join {re.escape(shut)}"), 10, role="button"))
        await b.wait_text(re.compile(rf"^#{re.escape(shut)}: you are banned from"), 20)
        await b.wait_text(re.compile(rf"^Join {re.escape(shut)}"), 5, role="button")  # still open
        await b.click(await b.wait_text("Close", 10, role="button"))
        await wait_for(lambda: _absent(b, "Find groups"), 10, "the dialog to close")

        # ---- browse: a part of the name finds it; Join opens the conversation -------------------
        await b.click(await b.wait_text("Browse groups", 20, role="button"))
        await b.wait_text(re.compile(r"^\d+ groups?$"), 20)  # the first page, all groups
        await b.fill("Find groups", g[2:-2])
        await b.press_enter()
        await b.wait_text(re.compile(r"^1 group$"), 20)
        await b.wait_text(re.compile(rf"^#{re.escape(g)}\s+public · 1 member"), 10)
        await b.screenshot(ARTIFACTS / "gui-rooms-browse.png")
        await b.click(await b.wait_text(re.compile(rf"^Join {re.escape(g)}"), 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "member" and e.get("action") == "join")
        assert ev["user"] == alice and ev["group"].lower() == g.lower(), ev
        await b.wait_text(re.compile(r"^group · 2 members · you are member"), 20)

        # ---- read receipts on (the default): bob sees alice read his message ----------------------
        await b.click(await b.wait_text("Chat", role="button"))
        await b.fill_and_submit("User name", bob, "Start chat", "enter a user name")
        await b.wait_text("Send file", 20, role="button")
        r = await bob_client.ok(f"sendprivate {alice} first")
        ev = await event_where(bob_client, lambda e: e.get("event") == "seen", 20)
        assert ev["by"] == alice and ev["id"] == r["id"], ev

        # ---- off: the next message is read too, and bob hears nothing ----------------------------
        await b.click(await b.wait_text("Read receipts", 10))
        await asyncio.sleep(1.5)  # the switch's call reaches the main server
        r = await bob_client.ok(f"sendprivate {alice} second")
        await b.wait_text("second", 20)
        with pytest.raises(AssertionError, match="no matching event"):
            await event_where(bob_client, lambda e: e.get("event") == "seen", 3)
        await b.screenshot(ARTIFACTS / "gui-rooms-receipts-off.png")
    finally:
        await bob_client.close()
