"""The interactive terminal client on a real terminal: tmux runs `python -m chat_cli` against a
real main + realms, other clients send to it, and `tmux capture-pane` reads the screen as a person
would see it (styles applied, never shown as `?[2m` or `\\x1b[` text)."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .stack import ROOT, Stack
from .test_cli_terminal import LiveCli, cli_argv, run_cli

PW = "pw-secret-tty"
# An escape sequence shown as text instead of acting: prompt_toolkit writes ESC as "?"; a
# sanitized one reads \x1b.
SHOWN_ESCAPE = re.compile(r"\?\[|\\x1b\[")


class TmuxCli:
    """The client in a tmux pane of its own (a tmux server on a socket of its own, `-L`)."""

    def __init__(self, addr: tuple[str, int], home: Path, width: int = 160, height: int = 50) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (scripts/apt-packages-test.txt)", pytrace=False)
        self.socket = f"realmchat-test-{os.getpid()}-{secrets.token_hex(4)}"
        env = ["env", "-u", "NO_COLOR", f"HOME={home}", "PYTHONUNBUFFERED=1"]
        command = shlex.join([*env, *cli_argv(addr)])
        # No user config (-f /dev/null); the pane stays after the client exits, to be read.
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "cli", "-x", str(width), "-y", str(height),
                  "-c", str(ROOT), command)
        self.tmux("set-option", "-t", "cli", "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def screen(self, styles: bool = False) -> str:
        """The pane as shown, with its scrollback; `styles` keeps the SGR sequences tmux would
        redraw it with (what attributes each cell has)."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-2000", *(["-e"] if styles else []), "-t", "cli")

    def wait_for(self, pattern: str, timeout: float = 45, styles: bool = False) -> re.Match[str]:
        """Polls the screen until the regex `pattern` is on it (or the deadline passes)."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen(styles)
            if m := rx.search(text):
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen after {timeout} s:\n{text}")
            time.sleep(0.1)

    def type(self, text: str) -> None:
        """Types a line and Enter, as a person would."""
        self.tmux("send-keys", "-t", "cli", "-l", text)
        self.tmux("send-keys", "-t", "cli", "Enter")

    def close(self) -> None:
        """Ends the tmux server (and the client in it) and removes its socket."""
        path = subprocess.run(["tmux", "-L", self.socket, "display-message", "-p", "#{socket_path}"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)
        if path.endswith(self.socket):
            Path(path).unlink(missing_ok=True)


@pytest.fixture
def tmux_cli(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str], TmuxCli]]:
    started: list[TmuxCli] = []

    def start(realm: str) -> TmuxCli:
        t = TmuxCli(stack.realm(realm), tmp_path)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def _login(t: TmuxCli, user: str, realm: str) -> None:
    t.wait_for(rf"guest@{realm}>")
    t.type(f"auth {user} {PW}")
    t.wait_for(rf"logged in as {user} on realm {realm}")
    t.wait_for(rf"^{user}@{realm}>")


def test_message_lines_are_styled_not_shown_as_escape_text(stack: Stack, uname: Callable[[str], str],
                                                           tmux_cli: Callable[[str], TmuxCli]) -> None:
    alice, bob = uname("alice"), uname("bob")
    assert run_cli(stack.realm("alpha"), [f"register {alice} {PW}", f"register {bob} {PW}"]).returncode == 0
    t = tmux_cli("alpha")
    _login(t, alice, "alpha")
    b = LiveCli(stack.realm("beta"), "--ids")
    try:
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        b.send(f"sendprivate {alice} plain hello from bob")
        first = int(re.search(r"#(\d+)$", b.wait_for(r"\] plain hello from bob  #\d+$")).group(1))  # type: ignore[union-attr]
        b.send(f"sendprivate {alice} look here @{alice} please")
        b.wait_for(r"\] look here @")
        b.send(f"reply {first} a quoted answer")
        b.wait_for(r"a quoted answer  #\d+$")
        b.send(f"edit {first} plain hello, edited")
        b.wait_for(r"^edited: ")

        m = t.wait_for(rf"^\[{bob} → you \d\d:\d\d\] plain hello from bob  #{first}$")
        t.wait_for(rf"^\[{bob} → you \d\d:\d\d\] look here @{alice} please  #\d+$")
        t.wait_for(rf"^  ↪ {bob}: plain hello from bob\n\[{bob} → you \d\d:\d\d\] a quoted answer  #\d+$")
        t.wait_for(rf"^\* edited: \[{bob} → you \d\d:\d\d\] plain hello, edited \(edited\)  #{first}$")
        screen = t.screen()
        assert m is not None and not SHOWN_ESCAPE.search(screen), screen
        # The styles act: the id is dim (bright black), the mention bold yellow, the quote dim.
        styled = t.screen(styles=True)
        assert re.search(rf"\x1b\[[0-9;]*m#{first}", styled), styled
        assert re.search(r"\x1b\[[0-9;]*1[0-9;]*m[^\n]*look here", styled), styled
        assert re.search(rf"  \x1b\[[0-9;]*m↪ {bob}:", styled), styled

        # A message's own escape sequences still never act: shown as \x1b text, in no colour.
        b.send(f"sendprivate {alice} evil \x1b[31mred\x1b[0m text")
        t.wait_for(r"evil \\x1b\[31mred\\x1b\[0m text")
        assert not re.search(r"\x1b\[(0;)?31m", t.screen(styles=True))
    finally:
        b.kill()


def test_the_prompt_shows_the_current_conversation(stack: Stack, uname: Callable[[str], str],
                                                   tmux_cli: Callable[[str], TmuxCli]) -> None:
    alice, bob = uname("alice"), uname("bob")
    assert run_cli(stack.realm("alpha"), [f"register {alice} {PW}", f"register {bob} {PW}"]).returncode == 0
    t = tmux_cli("alpha")
    _login(t, alice, "alpha")
    b = LiveCli(stack.realm("beta"))
    try:
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        t.type(f"/query {bob}")
        t.wait_for(rf"^{alice}@alpha \[{bob}\]>")
        t.type("a line typed in the query")
        b.wait_for(rf"^\[{alice} → you \d\d:\d\d\] a line typed in the query$")
        t.type("/me waves")
        b.wait_for(rf"^\[{alice} → you \d\d:\d\d\] \* {alice} waves$")
        t.type("/query")
        t.wait_for(rf"^{alice}@alpha>$")
        screen = t.screen()
        assert not SHOWN_ESCAPE.search(screen), screen
    finally:
        b.kill()
