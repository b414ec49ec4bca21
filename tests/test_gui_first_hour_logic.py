"""The GUI's controller and state for what a new user runs into, against a real stack (no
browser): files waiting at login count as unread, names and file names are shown cleaned like
the terminal shows them, a main outage is a state of its own and a failed send can be retried,
and times follow the browser's time zone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chat_cli import ChatClient
from chat_cli.render import sanitize as cli_sanitize
from gui.app import browser_tz
from gui.controller import ChatController
from gui.state import Kind, LineKind, Status, clock, conv_key, day_label
from realmchat.display import sanitize
from realmchat.errors import Unavailable

from .stack import Stack, start_main
from .test_gui_logic import logged_in, until

PW = "pw-secret"  # what test_gui_logic.logged_in registers with


@pytest.fixture
async def controllers(tmp_path: Path) -> AsyncIterator[list[ChatController]]:
    made: list[ChatController] = []
    yield made
    for c in made:
        await c.close()


async def test_files_waiting_at_login_count_as_unread_and_names_are_cleaned(
        stack: Stack, uname: Callable[[str], str], controllers: list[ChatController], tmp_path: Path) -> None:
    ivy, jon = uname("ivy"), uname("jon")
    sender = await ChatClient.connect(*stack.realm("beta"))
    try:
        await sender.register(jon, PW)
        await sender.auth(jon, PW)
        ctl = ChatController(tmp_path / "d", who_interval=0)
        controllers.append(ctl)
        await logged_in(ctl, stack.realm("alpha"), ivy)
        await ctl.logout()
        src = tmp_path / "x.bin"
        src.write_bytes(b"payload")
        # A name that would read "invoiceexe.pdf" with its right-to-left override obeyed.
        await sender.send_file(ivy, src, name="invoice\u202efdp.exe")
        await sender.send_private(ivy, "and a message")
        await ctl.login(ivy, PW)
        conv = ctl.state.conversations[conv_key(Kind.PRIVATE, jon)]
        assert conv.unread == 2, [(ln.kind, ln.text) for ln in conv.lines]
        file_line = next(ln for ln in conv.lines if ln.kind is LineKind.FILE)
        # The server strips format controls from file names; the GUI would show any as escapes.
        assert "invoicefdp.exe" in file_line.text and "\u202e" not in file_line.text
    finally:
        await sender.close()
    # One function for both clients.
    assert cli_sanitize is sanitize and sanitize("a\u2066b\x1bc") == "a\\u2066b\\x1bc"


async def test_main_outage_is_its_own_state_and_a_failed_send_can_be_retried(
        fresh_stack: Stack, uname: Callable[[str], str], controllers: list[ChatController], tmp_path: Path) -> None:
    kai, lia = uname("kai"), uname("lia")
    ctl = ChatController(tmp_path / "d", who_interval=0.5)
    controllers.append(ctl)
    other = ChatController(tmp_path / "e", who_interval=0)
    controllers.append(other)
    await logged_in(other, fresh_stack.realm("beta"), lia)
    await logged_in(ctl, fresh_stack.realm("alpha"), kai)
    conv = await ctl.start_private(lia)
    port = fresh_stack.main.port
    fresh_stack.main.kill()
    await until(lambda: ctl.state.status is Status.DEGRADED, "the main-down state", timeout=20)
    assert ctl.state.online_stale
    with pytest.raises(Unavailable):
        await ctl.send("during the outage", conv.key)
    line = conv.lines[-1]
    assert line.error and not line.pending and line.text == "during the outage"
    fresh_stack.main = start_main(fresh_stack.data_dir, port)
    await until(lambda: ctl.state.status is Status.ONLINE, "online again", timeout=30)
    assert not ctl.state.online_stale
    await ctl.retry(line, conv.key)
    assert line.id is not None and not line.error
    await until(lambda: any(ln.text == "during the outage" for c in other.state.conversations.values()
                            for ln in c.lines), "the retried message at the other user", timeout=20)


def test_times_in_the_browsers_zone() -> None:
    tz = browser_tz("http://127.0.0.1:8550/?tz=Asia/Tokyo")
    assert tz == ZoneInfo("Asia/Tokyo")
    assert browser_tz("http://127.0.0.1:8550/") is None and browser_tz("http://x/?tz=Not/AZone") is None
    ts = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert clock(ts, tz) == "08:30"  # already the next day in Tokyo
    now = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert day_label(ts, now, tz) == "Today"
    assert day_label(ts, now, ZoneInfo("UTC")) == "Yesterday"
    assert day_label(datetime(2026, 11, 2, tzinfo=UTC), now, ZoneInfo("UTC")) == "November 2, 2026"
