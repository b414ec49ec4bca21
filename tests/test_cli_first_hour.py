"""chat_cli as a new user meets it (a real stack, the client as a subprocess on a pipe or a pty):
a failed `auth` stops a script, `auth USER` asks for the password without echo, the history file
is private, names complete with Tab, the prompt follows an automatic re-login and the realm's
shutdown event reads as a sentence."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from .stack import Stack, start_realm
from .test_cli_terminal import LiveCli, PtyCli, run_cli

PW = "pw-secret-22"


def test_piped_mode_stops_after_a_failed_auth(stack: Stack, uname: Callable[[str], str]) -> None:
    ghost = uname("ghost")
    r = run_cli(stack.realm("alpha"), [f"auth {ghost} {PW}", f"sendprivate {ghost} hello", "who"])
    assert r.returncode == 1, r
    assert "stopping: auth failed" in r.stderr, r.stderr
    errors = [line for line in r.stdout.splitlines() if line.startswith("error ")]
    assert len(errors) == 1 and "UNAUTHENTICATED" in errors[0], r.stdout  # nothing after the auth ran


def test_auth_alone_asks_for_a_hidden_password_history_is_private_and_names_complete(
        stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    kim, leo = uname("kimberly"), uname("leo")
    kim_cli = LiveCli(stack.realm("beta"))  # online, so `who` lists her
    kim_cli.send(f"register {kim} {PW}")
    kim_cli.send(f"auth {kim} {PW}")
    kim_cli.wait_for("logged in as")
    t = PtyCli(stack.realm("alpha"), tmp_path)
    try:
        t.read_until(b"guest@alpha>")
        history = tmp_path / ".realmchat_history"
        assert stat.S_IMODE(history.stat().st_mode) == 0o600
        t.type(f"register {leo} {PW}\r")
        at = t.read_until(f"registered {leo}".encode())
        t.type(f"auth {leo}\r")
        asked = t.read_until(f"password for {leo}:".encode(), at)
        t.type(PW + "\r")
        done = t.read_until(f"logged in as {leo}".encode(), asked)
        assert PW.encode() not in t.out[asked:done], "the password was echoed"
        t.read_until(f"{leo}@alpha>".encode(), done)
        # kim is known from `who`; Tab completes her name after a verb that takes a user.
        t.type("who\r")
        seen = t.read_until(kim.encode(), done)
        t.read_until(f"{leo}@alpha>".encode(), seen)
        t.type(f"sendprivate {kim[:4]}\t")
        esc = rb"(\x1b\[[0-9;?]*[A-Za-z])*"  # the completion may be drawn apart from the typed part
        completed = t.read_until_re(rb"sendprivate " + esc + kim[:4].encode() + esc + kim[4:].encode(), seen)
        t.type(" hi from a tab\r")
        t.read_until(b"] hi from a tab", completed)
        t.type("quit\r")
        t.read_until(b"bye", completed)
        assert t.proc.wait(20) == 0
        assert stat.S_IMODE(history.stat().st_mode) == 0o600
        text = history.read_text()
        assert PW not in text and "hi from a tab" in text
        kim_cli.wait_for(r"\] hi from a tab$")
    finally:
        t.close()
        kim_cli.kill()


def test_shutdown_event_is_a_sentence_and_the_prompt_follows_the_relogin(
        fresh_stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    max_ = uname("max")
    t = PtyCli(fresh_stack.realm("alpha"), tmp_path)
    try:
        t.read_until(b"guest@alpha>")
        t.type(f"register {max_} {PW}\r")
        at = t.read_until(f"registered {max_}".encode())
        t.type(f"auth {max_} {PW}\r")
        at = t.read_until(f"logged in as {max_}".encode(), at)
        old = fresh_stack.realms["alpha"]
        assert old.terminate() == 0
        at = t.read_until(b"* the realm is going away: the realm is shutting down", at)
        assert b"{'event'" not in t.out and b'{"event"' not in t.out
        fresh_stack.realms["alpha"] = start_realm("alpha", fresh_stack.main.addr, old.port)
        at = t.read_until(f"reconnected to realm alpha: authenticated as {max_}".encode(), at, timeout=60)
        # The prompt drawn after the re-login names the user again (it said guest while away).
        t.read_until(f"{max_}@alpha>".encode(), at)
    finally:
        t.close()
