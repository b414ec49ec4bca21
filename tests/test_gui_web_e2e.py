"""End to end: the web GUI (`python -m gui --web`) served against a real stack, driven in
Debian's headless Chromium over the DevTools protocol, read through the accessibility tree.

A person logs in through the page; a second user on the other realm (plain text protocol)
sends a message; the message must show up on screen; the reply typed in the page must reach
the other user. Screenshots of the login and chat screens go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from .gui_driver import Browser, wait_for
from .stack import PYTHON, ROOT, ServerProcess, Stack
from .textclient import TextClient, login

ARTIFACTS = ROOT / "test-artifacts"
PW = "pw-secret"


@pytest.fixture(scope="module")
def gui_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The web GUI on a free port (it binds port 0 itself and prints `listening on HOST:PORT`),
    proposing realm alpha on its connect screen."""
    host, port = stack.realm("alpha")
    tmp = tmp_path_factory.mktemp("gui")
    proc = ServerProcess("gui", [PYTHON, "-m", "gui", "--web", "--host", "127.0.0.1", "--port", "0",
                                 "--realm", f"{host}:{port}", "--downloads", str(tmp / "downloads"),
                                 "--upload-dir", str(tmp / "uploads")],
                         env={"FLET_WEB_NO_CDN": "1"})
    yield proc
    code = proc.terminate()
    assert code == 0, f"the GUI did not shut down cleanly on SIGTERM (exit {code}):\n{proc.log()}"


@pytest.fixture
async def browser(gui_server: ServerProcess) -> AsyncIterator[Browser]:
    b = await Browser.launch(f"http://{gui_server.addr}/")
    yield b
    await b.close()


async def test_login_receive_and_reply_in_the_browser(
        stack: Stack, gui_server: ServerProcess, browser: Browser, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    b = browser
    # bob: the second client, on the OTHER realm.
    bob_client: TextClient = await login(*stack.realm("beta"), bob)
    try:
        # ---- connect screen: the realm is prefilled, errors show where they happen ----------
        await b.wait_text("Create account", 90, role="button")
        host_field = await b.wait_text("Realm host", role="textbox")
        assert host_field is not None
        await b.screenshot(ARTIFACTS / "gui-login.png")

        probe = await TextClient.connect(*stack.realm("alpha"))
        expected = (await probe.cmd(f"auth {alice} {PW}"))["message"]  # the realm's own wording
        await probe.close()
        await b.fill("User name", alice)
        await b.fill("Password", PW)
        await b.click(await b.wait_text("Log in", role="button"))
        await b.wait_text(expected, 20)  # unknown user: shown on the form, still on this screen

        # ---- create the account and log in through the page --------------------------------
        await b.click(await b.wait_text("Create account", role="button"))
        await b.wait_text(f"{alice} @ alpha", 30)
        await b.wait_text("Log out", role="button")
        await b.wait_text("online · realm alpha")

        # ---- a live message from bob (realm beta) appears on screen -------------------------
        text = f"hello {alice}, this is {bob} on beta"
        await bob_client.ok(f"sendprivate {alice} {text}")
        # The side list shows the conversation with its preview and unread count.
        await b.wait_text(re.compile(rf"^{re.escape(bob)} .*{re.escape(text)}"), 20)
        await b.wait_text("1 unread")
        await b.click(await b.wait_text(bob, role="button"))
        # The conversation pane: a bubble "SENDER HH:MM TEXT".
        bubble = re.compile(rf"^{re.escape(bob)} \d\d:\d\d {re.escape(text)}$")
        await b.wait_text(bubble, 20)
        await b.screenshot(ARTIFACTS / "gui-chat-received.png")

        # ---- the reply typed in the page reaches bob ----------------------------------------
        reply = f"hi {bob}, greetings from the browser"
        await b.fill("Message", reply)
        await b.press_enter()
        ev = await bob_client.event(20)
        assert ev["event"] == "private" and ev["from"] == alice and ev["text"] == reply, ev
        await b.wait_text(re.compile(rf"^you \d\d:\d\d {re.escape(reply)}$"), 20)

        # The chat screen with both messages: the artifact, and the README's picture.
        shot = await b.screenshot(ARTIFACTS / "gui-chat.png")
        assert shot.stat().st_size > 10_000  # a rendered screen, not a blank page
    finally:
        await bob_client.close()


async def test_logout_returns_to_the_connect_screen(
        stack: Stack, gui_server: ServerProcess, browser: Browser, uname: Callable[[str], str]) -> None:
    carol = uname("carol")
    b = browser
    c = await TextClient.connect(*stack.realm("alpha"))
    await c.ok(f"register {carol} {PW}")
    await c.close()
    await b.wait_text("Create account", 90, role="button")
    # The name is taken: the realm's ALREADY_EXISTS message shows on the form.
    await b.fill("User name", carol)
    await b.fill("Password", PW)
    await b.click(await b.wait_text("Create account", role="button"))
    await b.wait_text(re.compile("(?i)exist|taken"), 20)
    await b.click(await b.wait_text("Log in", role="button"))
    await b.wait_text(f"{carol} @ alpha", 30)
    await b.click(await b.wait_text("Log out", role="button"))
    await b.wait_text("You are logged out.", 20)

    async def on_connect_screen() -> bool:
        return await b.find("Create account", role="button") is not None

    assert await wait_for(on_connect_screen, 10, "the connect screen")


def test_readme_screenshot_is_fresh() -> None:
    """docs/gui-chat.png is what the README shows; keep it a real (small) PNG of the chat."""
    png = ROOT / "docs" / "gui-chat.png"
    assert png.exists(), "docs/gui-chat.png is missing"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 400_000
