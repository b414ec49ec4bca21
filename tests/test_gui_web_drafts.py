"""End to end in the browser: what is typed belongs to its conversation.

- A draft typed in a group stays there while the user chats elsewhere: the other conversation
  starts with an empty message box, what is sent there is only what was typed there, and the
  draft is back in the box on return.
- A message that fails (main frozen, then killed, while it is on its way) stays in the
  conversation it was written for, with its Retry and its text, even though the failure comes
  back after the user switched to another chat; main restarts on the same port and data
  directory and the browser user stays logged in: the next send works, Retry delivers once.
- While the realm is down the ONLINE list says it is not current.
- Leave group asks first (Cancel keeps the group), on the phone layout.

Real main and realms, the web GUI, headless Chromium over the DevTools protocol (tests/gui_driver.py).
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from .gui_driver import Browser, wait_for
from .stack import ROOT, Stack, start_main, start_realm
from .test_gui_web_e2e import create_group_in_browser, register_in_browser
from .test_gui_web_phone import DESKTOP, PHONE, open_page, set_size, start_gui
from .test_gui_web_rooms import event_where
from .textclient import TextClient, login

# One browser at a time: two Chromiums with their stacks on two cores starve each other.
pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = ROOT / "test-artifacts"
QUIET = frozenset({"presence", "seen", "typing", "read"})  # what the GUI causes by reading and typing


def tile(name: str) -> re.Pattern[str]:
    """A conversation's row in the side list."""
    return re.compile(rf"^{re.escape(name)}\b")


async def box_holds(b: Browser, text: str) -> bool:
    """The focused text field (the message box: it takes the focus when a conversation opens)
    holds exactly `text`."""
    return await b.focused_value() == text


async def open_chat(b: Browser, name: str, bubble: re.Pattern[str]) -> None:
    await b.click(await b.wait_text(tile(name), 20, role="button"))
    await b.wait_text(bubble, 20)


async def test_a_draft_stays_in_its_conversation(stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob, carol, design = uname("alice"), uname("bob"), uname("carol"), uname("design")
    b = browser
    bob_client = await login(*stack.realm("beta"), bob)
    carol_client = await login(*stack.realm("alpha"), carol)
    bob_client.ignore = carol_client.ignore = QUIET
    try:
        await register_in_browser(b, alice)
        await create_group_in_browser(b, design)
        await bob_client.ok(f"joingroup {design}")
        await carol_client.ok(f"sendprivate {alice} hi from carol")
        await b.wait_text(tile(carol), 20, role="button")

        # ---- a draft in the group; carol's chat opens with an empty box ---------------------------
        draft = "a draft for the design group"
        await b.fill("Message", draft)
        await open_chat(b, carol, re.compile(rf"^{re.escape(carol)} \d\d:\d\d hi from carol$"))
        await wait_for(lambda: box_holds(b, ""), 10, "an empty message box in carol's chat")
        await b.fill("Message", "hello carol")
        await b.press_enter()
        ev = await event_where(carol_client, lambda e: e.get("event") == "private")
        assert ev["from"] == alice and ev["text"] == "hello carol", ev
        await b.wait_text(re.compile(r"^you \d\d:\d\d hello carol$"), 20)

        # ---- back in the group: the draft is there, and Enter sends it to the group -------------
        await open_chat(b, f"# {design}", re.compile(r"^group · 2 members"))
        await wait_for(lambda: box_holds(b, draft), 10, "the group's draft back in the message box")
        await b.screenshot(ARTIFACTS / "gui-drafts-back.png")
        await b.press_enter()
        ev = await event_where(bob_client, lambda e: e.get("event") == "group")
        assert ev["from"] == alice and ev["text"] == draft, ev
        await wait_for(lambda: box_holds(b, ""), 10, "the message box empty once the draft was sent")
        # Nothing of the group's draft went to carol.
        await carol_client.no_event(1.5)

        # ---- and carol's chat kept its own (empty) box ------------------------------------------
        await open_chat(b, carol, re.compile(r"^you \d\d:\d\d hello carol$"))
        await wait_for(lambda: box_holds(b, ""), 10, "carol's message box still empty")
    finally:
        await bob_client.close()
        await carol_client.close()


async def test_leave_group_asks_first_on_a_phone(stack: Stack, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob, club = uname("alice"), uname("bob"), uname("club")
    b = browser
    await set_size(b, PHONE)
    bob_client = await login(*stack.realm("beta"), bob)
    bob_client.ignore = QUIET
    try:
        await bob_client.ok(f"creategroup {club}")  # an owner cannot leave: alice joins bob's group
        await register_in_browser(b, alice)
        await b.click(await b.wait_text("Join", role="button"))
        await b.fill("Group name", club)
        await b.click(await b.wait_text("Join group", role="button"))
        await b.wait_text(re.compile(r"^group · 2 members · you are member"), 20)
        joined = await event_where(bob_client, lambda e: e.get("event") == "member")
        assert joined["action"] == "join" and joined["user"] == alice, joined

        await b.click(await b.wait_text("Leave group", 10, role="button"))
        await b.wait_text(f"Leave #{club}?", 10)
        await b.screenshot(ARTIFACTS / "gui-leave-confirm-phone.png")
        await b.click(await b.wait_text(re.compile("^Cancel$"), 10, role="button"))

        async def dialog_gone() -> bool:
            return await b.find(f"Leave #{club}?") is None

        await wait_for(dialog_gone, 10, "the dialog closed by Cancel")
        await b.wait_text("Leave group", 10, role="button")  # still in the group, still open
        await bob_client.no_event(1.0)  # nobody left

        await b.click(await b.wait_text("Leave group", 10, role="button"))
        await b.wait_text(f"Leave #{club}?", 10)
        await b.click(await b.wait_text(re.compile("^Leave$"), 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "member")
        assert ev["action"] == "leave" and ev["user"] == alice, ev
        await b.wait_text("CONVERSATIONS", 20)  # back to the list

        async def group_gone() -> bool:
            return await b.find(tile(f"# {club}"), role="button") is None

        await wait_for(group_gone, 10, "the group's row gone from the list")
    finally:
        await bob_client.close()


async def test_a_failed_message_stays_in_its_conversation_across_a_main_restart(
        fresh_stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    alice, bob, carol = uname("alice"), uname("bob"), uname("carol")
    gui = start_gui(fresh_stack, tmp_path)
    b: Browser | None = None
    clients: list[TextClient] = []
    try:
        for who in (bob, carol):
            c = await login(*fresh_stack.realm("beta"), who)
            clients.append(c)
        b = await open_page(f"http://{gui.addr}/", DESKTOP)
        await register_in_browser(b, alice)
        for c, who in zip(clients, (bob, carol), strict=True):
            await c.ok(f"sendprivate {alice} hi from {who}")
            await c.close()
        clients.clear()
        await b.wait_text(tile(carol), 20, role="button")
        await open_chat(b, bob, re.compile(rf"^{re.escape(bob)} \d\d:\d\d hi from {re.escape(bob)}$"))

        # ---- main freezes while a message to bob is on its way; the user moves to carol --------
        port = fresh_stack.main.port
        fresh_stack.main.signal(signal.SIGSTOP)
        text = "for bob only"
        await b.fill("Message", text)
        await b.press_enter()
        await b.wait_text("sending…", 10)
        await open_chat(b, carol, re.compile(rf"^{re.escape(carol)} \d\d:\d\d hi from {re.escape(carol)}$"))
        # Killed while frozen: nothing of the message can be stored late. The realm's call to
        # main fails, and the failure comes back while carol's chat is open.
        fresh_stack.main.kill()
        await b.wait_text("main server unreachable", 30)
        await wait_for(lambda: box_holds(b, ""), 10, "carol's message box empty after the failure in bob's chat")
        assert await b.find(re.compile("^not sent")) is None, await b.ax_texts()
        await b.screenshot(ARTIFACTS / "gui-drafts-failed-elsewhere.png")

        # ---- main is back on its port and data dir: still logged in, sending works -------------
        fresh_stack.main = start_main(fresh_stack.data_dir, port)
        await b.wait_text("online · realm alpha", 60)
        assert await b.find("Create account", role="button") is None
        assert await b.find("You are logged out.") is None
        carol_client = await login(*fresh_stack.realm("beta"), carol, register=False)
        clients.append(carol_client)
        carol_client.ignore = QUIET
        await b.fill("Message", "for carol")
        await b.press_enter()
        ev = await event_where(carol_client, lambda e: e.get("event") == "private")
        assert ev["from"] == alice and ev["text"] == "for carol", ev
        await b.wait_text(re.compile(r"^you \d\d:\d\d for carol$"), 20)

        # ---- bob's chat: the failed line with its Retry, and its text back in the box ------------
        await open_chat(b, bob, re.compile(r"^not sent: "))
        await wait_for(lambda: box_holds(b, text), 10, "the failed text back in bob's message box")
        bob_client = await login(*fresh_stack.realm("beta"), bob, register=False)
        clients.append(bob_client)
        bob_client.ignore = QUIET
        await b.click(await b.wait_text("Retry", 10, role="button"))
        ev = await event_where(bob_client, lambda e: e.get("event") == "private")
        assert ev["from"] == alice and ev["text"] == text, ev
        await b.wait_text(re.compile(rf"^you \d\d:\d\d {re.escape(text)}$"), 20)

        async def no_failure_shown() -> bool:
            return (await b.find(re.compile("^not sent")) is None
                    and await b.find("Retry", role="button") is None)

        await wait_for(no_failure_shown, 10, "the 'not sent' line and Retry gone once retried")
        await bob_client.no_event(1.0)  # once
        await carol_client.no_event(0.5)  # nothing of bob's text went to carol
    finally:
        for c in clients:
            await c.close()
        if b is not None:
            await b.close()
        assert gui.terminate() == 0, gui.log()


async def test_online_list_says_not_current_while_the_realm_is_down(
        fresh_stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    alice, dan = uname("alice"), uname("dan")
    gui = start_gui(fresh_stack, tmp_path)
    b: Browser | None = None
    dan_client = await login(*fresh_stack.realm("beta"), dan)
    dan_client.ignore = QUIET
    try:
        b = await open_page(f"http://{gui.addr}/", DESKTOP)
        await register_in_browser(b, alice)
        await dan_client.ok(f"sendprivate {alice} hi")
        await open_chat(b, dan, re.compile(rf"^{re.escape(dan)} \d\d:\d\d hi$"))
        assert await b.find(re.compile("^not current")) is None

        realm = fresh_stack.realms["alpha"]
        _, port = fresh_stack.realm("alpha")
        realm.kill()
        await b.wait_text("reconnecting…", 30)
        await b.wait_text(re.compile(r"^not current: as of \d\d:\d\d$"), 20)
        await b.screenshot(ARTIFACTS / "gui-realm-down-online.png")

        fresh_stack.realms["alpha"] = start_realm("alpha", fresh_stack.main.addr, port)
        await b.wait_text("online · realm alpha", 60)

        async def current_again() -> bool:
            return await b.find(re.compile("^not current")) is None

        await wait_for(current_again, 20, "the online list current again")
        await b.fill("Message", "back again")
        await b.press_enter()
        ev = await event_where(dan_client, lambda e: e.get("event") == "private")
        assert ev["text"] == "back again", ev
    finally:
        await dan_client.close()
        if b is not None:
            await b.close()
        assert gui.terminate() == 0, gui.log()
