"""End to end in the browser: messages have a life. The web GUI user (realm alpha) edits,
deletes, replies to and reacts to messages through the per-message actions (shown on hover),
and a raw text-protocol client on realm beta sees each change live; an edit and a reaction made
on beta show live in the browser. Then a search result opens its conversation, and the same
conversation at phone width; and scrolling back through a long group history loads older pages.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest

from .gui_driver import AXNode, Browser, CDPError, wait_for
from .stack import ROOT, Stack
from .test_gui_web_e2e import register_in_browser
from .test_gui_web_rooms import event_where
from .textclient import login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = ROOT / "test-artifacts"
# A wheel turn upwards at (x, y), given to the element Flutter listens on.
WHEEL_UP = """(() => {
  const target = document.querySelector('flutter-view') || document.querySelector('flt-glass-pane') || document.body;
  target.dispatchEvent(new WheelEvent('wheel', {deltaY: -400, deltaMode: 0, clientX: %f, clientY: %f,
                                                bubbles: true, cancelable: true}));
  return target.tagName;
})()"""
PHONE = (400, 800)


async def hover(b: Browser, node: AXNode) -> None:
    """Moves the mouse over a node (the message's actions appear on hover)."""
    x, y = await b.center_of(node)
    await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)


async def action(b: Browser, message: str, name: str, timeout: float = 30.0) -> None:
    """Hovers the message `message` and clicks its action `name` (Reply, React, Edit, Delete).
    Tried again while the message re-renders (e.g. just sent: its actions come with its id)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await hover(b, await b.wait_text(message, 10))
            await b.click(await b.wait_text(name, 3, role="button"))
            return
        except (AssertionError, CDPError):
            if time.monotonic() > deadline:
                raise
            # Away and back: a fresh hover enter for the re-rendered bubble.
            await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=1, y=1)
            await asyncio.sleep(0.3)


async def test_edit_delete_reply_react_live_both_ways(
        stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    try:
        await register_in_browser(b, alice)
        await b.click(await b.wait_text("Chat", role="button"))
        await b.fill("User name", bob)
        await b.click(await b.wait_text("Start chat", role="button"))
        await b.wait_text("Send file", 20, role="button")

        r = await bob_client.ok(f"sendprivate {alice} morning @{alice}, ready?")
        bob_msg = r["id"]
        await b.wait_text(f"morning @{alice}, ready?", 20)
        await b.wait_text("@ mentions you", 20)  # the mention is highlighted

        # ---- send, then edit through the hover actions ---------------------------------------------
        await b.fill("Message", "first draft")
        await b.press_enter()
        ev = await event_where(bob_client, lambda e: e.get("event") == "private" and e.get("text") == "first draft")
        mine = ev["id"]
        await action(b, "first draft", "Edit")
        await b.wait_text(re.compile(r"^Editing your message: first draft"), 10)
        await b.fill("Message", "final text", replace=True)
        await b.press_enter()
        ev = await event_where(bob_client, lambda e: e.get("event") == "edited")
        assert ev["id"] == mine and ev["text"] == "final text" and ev["edited"], ev
        await b.wait_text("final text", 20)
        await b.wait_text("edited", 20)

        # ---- react to bob's message with the emoji picker -----------------------------------------
        await action(b, f"morning @{alice}, ready?", "React")
        await b.click(await b.wait_text("React 👍", 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "reaction")
        assert ev == {**ev, "id": bob_msg, "user": alice, "emoji": "👍", "on": True}, ev
        await b.wait_text(re.compile(r"^👍 1: you"), 20)

        # ---- reply to it: the preview above the box, the quote in the message ----------------------
        await action(b, f"morning @{alice}, ready?", "Reply")
        await b.wait_text(re.compile(rf"^Replying to {re.escape(bob)}: morning"), 10)
        await b.fill("Message", "yes, on my way")
        await b.press_enter()
        ev = await event_where(bob_client, lambda e: e.get("event") == "private" and e.get("text") == "yes, on my way")
        assert ev["reply_to"] == bob_msg, ev
        reply_id = ev["id"]
        await b.wait_text(re.compile(rf"↪ {re.escape(bob)}: morning @"), 20)
        await b.screenshot(ARTIFACTS / "gui-messages-reply.png")

        # ---- where a message went: its hops in a dialog -------------------------------------------
        await action(b, "final text", "Where it went")
        await b.wait_text(f"Where #{mine} went", 10)
        await b.wait_text(re.compile(rf"\d +stored +{re.escape(alice)}$"), 20)
        await b.wait_text(re.compile(rf"\d +(written|delivered) +{re.escape(bob)}$"), 20)
        await b.click(await b.wait_text("Close", role="button"))

        async def trace_closed() -> bool:
            return await b.find(f"Where #{mine} went") is None

        await wait_for(trace_closed, 10, "the trace dialog closed")

        # ---- bob's side changes things: edit and reaction show live -------------------------------
        await bob_client.ok(f"edit {bob_msg} morning @{alice}, ready now?")
        await b.wait_text(f"morning @{alice}, ready now?", 20)
        await bob_client.ok(f"react {reply_id} 🎉")
        await b.wait_text(re.compile(rf"^🎉 1: {re.escape(bob)}"), 20)
        await b.screenshot(ARTIFACTS / "gui-messages-live.png")

        # ---- delete own message: asked first (Cancel keeps it); then bob sees it gone, the
        # browser shows a tombstone ---------------------------------------------------------------
        await action(b, "final text", "Delete")
        await b.wait_text("Delete this message for everyone?", 10)
        await b.click(await b.wait_text("Cancel", role="button"))

        async def asked_no_more() -> bool:
            return await b.find("Delete this message for everyone?") is None

        await wait_for(asked_no_more, 10, "the confirmation closed")
        await b.wait_text("final text", 10)
        await action(b, "final text", "Delete")
        await b.click(await b.wait_text("Delete for everyone", 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "deleted")
        assert ev["id"] == mine and ev["by"] == alice, ev
        await b.wait_text("message deleted", 20)
        assert await b.find("final text") is None

        # ---- search: the result opens its conversation ---------------------------------------------
        await b.fill("Search messages", "ready")
        await b.press_enter()
        await b.wait_text(re.compile(r"^1 result for"), 20)
        await b.click(await b.wait_text(re.compile(rf"^{re.escape(bob)} · .*{re.escape(bob)}: morning"), 20))
        await b.wait_text(f"morning @{alice}, ready now?", 20)
        await b.screenshot(ARTIFACTS / "gui-messages-search.png")

        # ---- phone width: the same conversation, quote and chips included ---------------------------
        await b.cdp.send("Emulation.setDeviceMetricsOverride", width=PHONE[0], height=PHONE[1],
                         deviceScaleFactor=1, mobile=False)
        await b.wait_text("Back to conversations", 20, role="button")
        await b.wait_text(re.compile(rf"^🎉 1: {re.escape(bob)}"), 20)
        await b.wait_text(re.compile(rf"↪ {re.escape(bob)}: morning @"), 20)
        await b.screenshot(ARTIFACTS / "gui-messages-phone.png")
        # On a phone the actions come with a long press (a touch: no hover there).
        await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=1, y=1)

        async def no_actions() -> bool:
            return await b.find("Reply", role="button") is None

        await wait_for(no_actions, 10, "the actions to hide once the pointer leaves")
        x, y = await b.center_of(await b.wait_text("yes, on my way", 20))
        await b.cdp.send("Input.dispatchTouchEvent", type="touchStart", touchPoints=[{"x": x, "y": y}])
        await asyncio.sleep(1.0)
        await b.cdp.send("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])
        await b.wait_text("Reply", 10, role="button")
        await b.wait_text("Edit", 10, role="button")
        await b.screenshot(ARTIFACTS / "gui-messages-phone-actions.png")
    finally:
        await bob_client.close()


async def test_scrolling_back_loads_older_pages(stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    """A conversation opens with its latest page; scrolling up (a mouse wheel turn; CDP's own
    wheel events do not reach Flutter's view here, so the WheelEvent is dispatched to it) loads the
    pages before it until the first message. (A public group written in before the browser
    user joins: its history comes only page by page.)"""
    alice, bob, g = uname("alice"), uname("bob"), uname("archive")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    try:
        await bob_client.ok(f"creategroup {g}")
        for i in range(70):
            await bob_client.ok(f"sendgroup {g} old message {i:02d}")
        await register_in_browser(b, alice)
        await b.click(await b.wait_text("Join", role="button"))
        await b.fill("Group name", g)
        await b.click(await b.wait_text("Join group", role="button"))
        last = await b.wait_text("old message 69", 20)
        assert await b.find("old message 00") is None

        x, y = await b.center_of(last)

        async def scrolled_to_start() -> bool:
            await b.cdp.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y - 100)
            for _ in range(5):
                await b.evaluate(WHEEL_UP % (x, y - 100))
                await asyncio.sleep(0.1)
            return await b.find("old message 00") is not None

        try:
            await wait_for(scrolled_to_start, 40, "the first message after scrolling back", interval=0.5)
        except AssertionError as e:
            await b.screenshot(ARTIFACTS / "gui-messages-older-failed.png")
            raise AssertionError(f"{e}; visible texts: {await b.ax_texts()}") from None
        assert await b.find("Load older messages") is None  # nothing older left
        await b.screenshot(ARTIFACTS / "gui-messages-older.png")
    finally:
        await bob_client.close()
