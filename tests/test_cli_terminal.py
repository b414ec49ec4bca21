"""`python -m chat_cli` as a subprocess with piped stdin, against a real main + realms."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .stack import ROOT, Stack

PW = "pw-secret1"
MiB = 1024 * 1024
TIME = r"\d\d:\d\d"


def cli_argv(addr: tuple[str, int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "chat_cli", "--host", addr[0], "--port", str(addr[1]), *extra]


def run_cli(addr: tuple[str, int], lines: list[str], *extra: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs the client over piped stdin to completion."""
    return subprocess.run(cli_argv(addr, *extra), input="".join(line + "\n" for line in lines),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


class LiveCli:
    """A client process kept running: lines are written as the test goes and its output is
    collected by a thread, so the test can wait for events to show up."""

    def __init__(self, addr: tuple[str, int], *extra: str) -> None:
        self.proc = subprocess.Popen(cli_argv(addr, *extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=ROOT)
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, timeout: float = 45) -> str:
        """The first output line matching the regex `pattern` (polls until the deadline)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if rx.search(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 20) -> int:
        """Closes stdin (EOF) and returns the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def test_piped_session_messages_groups_tables_and_errors(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob, group = uname("alice"), uname("bob"), uname("progjar")
    b = LiveCli(stack.realm("beta"))
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.wait_for(f"logged in as {bob} on realm beta")

        r = run_cli(stack.realm("alpha"), [
            f"register {alice} {PW}",
            f"auth {alice} {PW}",
            f"sendprivate {bob} halo apa kabar",
            f"creategroup {group}",
            "who",
            "groups",
            "# a comment line is skipped",
            "",
            "ping",
        ])
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert f"logged in as {alice} on realm alpha" in out
        assert re.search(rf"^\[you → {bob} {TIME}\] halo apa kabar$", out, re.M), out
        assert f"created group #{group} (you are its owner)" in out
        # who: a table with a header, a rule and one row per online user.
        assert re.search(r"^USER +REALM\n-+ +-+$", out, re.M), out
        assert re.search(rf"^{alice} +alpha$", out, re.M) and re.search(rf"^{bob} +beta$", out, re.M), out
        assert re.search(rf"^#{group} +owner +1$", out, re.M), out
        assert re.search(r"^pong \(\d+\.\d ms\)$", out, re.M), out

        b.wait_for(rf"^\[{alice} → you {TIME}\] halo apa kabar$")
        b.send(f"joingroup {group}")
        b.wait_for(f"joined #{group}")
        r2 = run_cli(stack.realm("alpha"), [
            f"auth {alice} {PW}",
            f"sendgroup {group} hi all",
            f"sendprivate {uname('ghost')} hello?",
            "frobnicate",
            "history",
            f"history {bob}",
        ])
        # Failed commands print one error line each and do not stop the rest; exit code 1.
        assert r2.returncode == 1, r2.stdout
        lines = r2.stdout.splitlines()
        assert [ln.split(":")[0] for ln in lines if ln.startswith("error ")] == [
            "error NOT_FOUND", "error UNIMPLEMENTED", "error INVALID_ARGUMENT"]
        assert f"[#{group}] you: hi all" in lines
        assert re.search(rf"^\[you → {bob} {TIME}\] halo apa kabar$", r2.stdout, re.M)  # history ran
        b.wait_for(rf"^\[#{group}\] {alice}: hi all$")

        b.send("quit")
        assert b.proc.wait(20) == 0
        assert b.lines[-1] == "bye"
    finally:
        b.kill()


def test_sendfile_local_path_and_receivefile_into_download_dir(stack: Stack, uname: Callable[[str], str],
                                                             tmp_path: Path) -> None:
    alice, bob = uname("alice"), uname("bob")
    home = tmp_path / "home"
    home.mkdir()
    src = home / "laporan akhir.pdf"
    with open(src, "wb") as f:
        for _ in range(20):
            f.write(os.urandom(MiB))
    digest = sha256_of(src)
    dl = tmp_path / "downloads"
    env = {"HOME": str(home)}

    assert run_cli(stack.realm("beta"), [f"register {bob} {PW}"]).returncode == 0
    r = run_cli(stack.realm("alpha"), [
        f"register {alice} {PW}",
        f"auth {alice} {PW}",
        f"sendfile {bob} ~/laporan akhir.pdf",     # a local path with a space, ~ expanded
        f"sendfile {bob} '{src}'",                  # quoted: the same file again
        f"sendfile {bob} ~/missing.pdf",
    ], env=env)
    assert r.returncode == 1, r.stdout
    sent = re.findall(rf"^sent laporan akhir\.pdf \(20\.0 MiB\) to {bob}: file id (\d+), sha256 (\w+) verified$",
                      r.stdout, re.M)
    assert [s[1] for s in sent] == [digest, digest], r.stdout
    assert re.search(r"^error NOT_FOUND: no such local file: .*missing\.pdf", r.stdout, re.M), r.stdout

    r = run_cli(stack.realm("beta"), [f"auth {bob} {PW}", "receivefile", "receivefile"],
                "--download-dir", str(dl))
    assert r.returncode == 0, r.stdout
    got = re.findall(rf"^received laporan akhir\.pdf \(20\.0 MiB\) from {alice} -> (.+)\n"
                     rf"  sha256 {digest} verified$", r.stdout, re.M)
    # Both downloads landed; the second did not overwrite the first.
    assert got == [str(dl / "laporan akhir.pdf"), str(dl / "laporan akhir (1).pdf")], r.stdout
    assert r.stdout.rstrip().endswith("no files waiting")
    for p in got:
        assert sha256_of(Path(p)) == digest

    # receivefile ID for one file; an unknown id is a clean error.
    one = run_cli(stack.realm("alpha"), [f"auth {alice} {PW}", f"sendfile {bob} {home / 'laporan akhir.pdf'}"])
    file_id = re.search(r"file id (\d+)", one.stdout).group(1)  # type: ignore[union-attr]
    r = run_cli(stack.realm("beta"), [f"auth {bob} {PW}", f"receivefile {file_id}", "receivefile 99999999"],
                "--download-dir", str(dl))
    assert r.returncode == 1
    assert f"-> {dl / 'laporan akhir (2).pdf'}" in r.stdout
    assert re.search(r"^error NOT_FOUND: ", r.stdout, re.M), r.stdout
    assert sorted(p.name for p in dl.iterdir()) == [
        "laporan akhir (1).pdf", "laporan akhir (2).pdf", "laporan akhir.pdf"]


def test_live_events_are_sanitized(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob = uname("alice"), uname("bob")
    b = LiveCli(stack.realm("beta"))
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        evil = "\x1b[2J\x1b]0;pwned\x07 hi \u202eevil\u202c \x9b31m"
        r = run_cli(stack.realm("alpha"), [f"register {alice} {PW}", f"auth {alice} {PW}",
                                           f"sendprivate {bob} {evil}"])
        assert r.returncode == 0, r.stdout
        line = b.wait_for(rf"^\[{alice} → you {TIME}\]")
        assert line.endswith(r"] \x1b[2J\x1b]0;pwned\x07 hi \u202eevil\u202c \x9b31m"), line
        for out in (r.stdout, "\n".join(b.lines)):
            assert not any(c in out for c in "\x1b\x07\x9b\u202e"), repr(out)
        assert b.finish() == 0
    finally:
        b.kill()


def test_json_mode_prints_raw_protocol_lines(stack: Stack, uname: Callable[[str], str]) -> None:
    alice = uname("alice")
    r = run_cli(stack.realm("alpha"), [f"register {alice} {PW}", f"auth {alice} {PW}", "inbox",
                                       "nosuchverb", "ping"], "--json")
    assert r.returncode == 1
    objs = [json.loads(line) for line in r.stdout.splitlines()]  # every line is JSON
    assert objs[0] == {"event": "hello", "realm": "alpha", "protocol": 2}
    assert objs[1] == {"status": "OK", "user": alice}
    assert objs[2] == {"status": "OK", "user": alice, "realm": "alpha"}
    assert objs[3]["status"] == "OK" and objs[3]["messages"] == []
    assert objs[4]["status"] == "ERROR" and objs[4]["code"] == "UNIMPLEMENTED"
    assert objs[5] == {"status": "OK", "pong": True}
    assert len(objs) == 6


def test_unreachable_realm_exits_non_zero(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port with certainly nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = run_cli(("127.0.0.1", port), ["ping"])
    assert r.returncode == 2
    assert re.match(r"error UNAVAILABLE: cannot connect to realm 127\.0\.0\.1:\d+", r.stdout), r.stdout


def test_realm_death_is_reported_and_commands_fail(fresh_stack: Stack, uname: Callable[[str], str]) -> None:
    bob = uname("bob")
    b = LiveCli(fresh_stack.realm("alpha"), "--no-reconnect")
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        fresh_stack.realms["alpha"].kill()
        b.wait_for(r"^\* disconnected: ")
        b.send("ping")
        b.wait_for(r"^error UNAVAILABLE: not connected to the realm")
        assert b.finish() == 1
    finally:
        b.kill()


def test_terminal_reconnects_and_logs_in_again(fresh_stack: Stack, uname: Callable[[str], str]) -> None:
    from .stack import start_realm

    alice, bob = uname("alice"), uname("bob")
    assert run_cli(fresh_stack.realm("beta"), [f"register {alice} {PW}"]).returncode == 0
    b = LiveCli(fresh_stack.realm("alpha"))  # --reconnect is the default
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        old = fresh_stack.realms["alpha"]
        old.kill()
        b.wait_for(r"^\* disconnected: ")
        b.wait_for(r"^\* reconnecting")
        fresh_stack.realms["alpha"] = start_realm("alpha", fresh_stack.main.addr, old.port)
        b.wait_for(rf"^\* reconnected to realm alpha: authenticated as {bob}$", timeout=30)
        r = run_cli(fresh_stack.realm("beta"), [f"auth {alice} {PW}", f"sendprivate {bob} still there?"])
        assert r.returncode == 0, r.stdout
        b.wait_for(rf"^\[{alice} → you {TIME}\] still there\?$")
        b.send("quit")
        assert b.proc.wait(20) == 0
    finally:
        b.kill()


class PtyCli:
    """The client on a pseudo-terminal, so it runs interactively (prompt_toolkit)."""

    def __init__(self, addr: tuple[str, int], home: Path) -> None:
        import pty

        self.master, slave = pty.openpty()
        # No cursor-position requests: nobody answers them on this pty.
        env = {**os.environ, "TERM": "xterm", "HOME": str(home), "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.proc = subprocess.Popen(cli_argv(addr), stdin=slave, stdout=slave, stderr=slave, env=env,
                                     cwd=ROOT, start_new_session=True)
        os.close(slave)
        self.out = b""

    def read_until(self, needle: bytes, start: int = 0, timeout: float = 45) -> int:
        """Reads the pty until `needle` appears at or after `start`; returns its index."""
        import select

        deadline = time.monotonic() + timeout
        while (i := self.out.find(needle, start)) < 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not seen; got {self.out[-2000:]!r}")
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:  # the child closed the pty
                    time.sleep(0.02)
        return i

    def read_until_re(self, pattern: bytes, start: int = 0, timeout: float = 45) -> int:
        import select

        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (m := rx.search(self.out, start)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen; got {self.out[-2000:]!r}")
            r, _, _ = select.select([self.master], [], [], 0.05)
            if r:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    time.sleep(0.02)
        return m.end()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_interactive_tty_live_event_keeps_the_typed_line(stack: Stack, uname: Callable[[str], str],
                                                         tmp_path: Path) -> None:
    alice, bob = uname("alice"), uname("bob")
    assert run_cli(stack.realm("alpha"), [f"register {alice} {PW}"]).returncode == 0
    t = PtyCli(stack.realm("beta"), tmp_path)
    try:
        t.read_until(b"guest@beta>")
        t.type(f"register {bob} {PW}\r")
        t.read_until(f"registered {bob}".encode())
        t.type(f"auth {bob} {PW}\r")
        logged_in = t.read_until(f"logged in as {bob}".encode())
        t.read_until(f"{bob}@beta>".encode(), logged_in)
        t.type("wh\t")  # tab completes the verb; the "o" may be drawn apart from the "wh"
        t.read_until_re(rb"wh(\x1b\[[0-9;?]*[A-Za-z])*o", logged_in)
        t.type("\r")
        at = t.read_until(b"USER")
        t.read_until(f"{bob}  ".encode(), at)
        # Half a command typed, not sent; a message arrives meanwhile.
        t.type("sendprivate " + alice + " half")
        typed = t.read_until(b"half", at)
        assert run_cli(stack.realm("alpha"), [f"auth {alice} {PW}", f"sendprivate {bob} ping from alice"]
                       ).returncode == 0
        ev = t.read_until(b"ping from alice", typed)
        # The event was printed above the prompt, and the prompt came back with the typed text.
        t.read_until(f"{bob}@beta> sendprivate {alice} half".encode(), ev)
        t.type(" done\r")
        t.read_until(f"[you → {alice} ".encode(), ev)
        done = t.read_until(b"] half done", ev)
        # Ctrl-D leaves, once the prompt is back (typed earlier, a loaded machine may drop it
        # while the prompt redraws, so it is repeated until the client says bye).
        t.read_until(f"{bob}@beta>".encode(), done)
        for attempt in range(5):
            t.type("\x04")
            try:
                t.read_until(b"bye", done, timeout=5)
                break
            except AssertionError:
                if attempt == 4:
                    raise
        assert t.proc.wait(20) == 0
        history = (tmp_path / ".realmchat_history").read_text()
        assert "who" in history and "half done" in history
        assert PW not in history  # auth/register lines are not written to disk
    finally:
        t.close()


def test_realm_closing_notice_is_a_sentence(stack: Stack, uname: Callable[[str], str]) -> None:
    from .stack import start_realm

    bob = uname("bob")
    # A realm of its own that closes a connection after 2 s without a command.
    gamma = start_realm("gamma", stack.main.addr, 0, "--idle-timeout-s", "2")
    b = LiveCli((gamma.host, gamma.port), "--no-reconnect")
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        b.wait_for(r"^\* realm gamma is closing this connection: no command for 2 s: closing the connection")
        b.wait_for(r"^\* disconnected: ")
        assert not any("{" in line for line in b.lines), b.lines  # no dict, no JSON
    finally:
        b.kill()
        gamma.kill()


def test_presence_lines_are_not_repeated_after_restarts(fresh_stack: Stack, uname: Callable[[str], str]) -> None:
    from .stack import start_realm

    alice, bob = uname("alice"), uname("bob")
    assert run_cli(fresh_stack.realm("alpha"), [f"register {alice} {PW}", f"register {bob} {PW}"]).returncode == 0
    a = LiveCli(fresh_stack.realm("alpha"))
    b = LiveCli(fresh_stack.realm("beta"))
    try:
        a.send(f"auth {alice} {PW}")
        a.wait_for("logged in as")
        b.send(f"auth {bob} {PW}")
        b.wait_for("logged in as")
        b.send(f"sendprivate {alice} hi")  # now they share a conversation: presence reaches alice
        a.wait_for(r"\] hi$")
        b.send("away")
        a.wait_for(rf"^· {bob} is away on realm beta$")
        time.sleep(1.2)  # presence is coalesced to once a second per user
        b.send("back")
        a.wait_for(rf"^· {bob} is online on realm beta$")
        # main restarts: the realms re-link and resume the sessions, main announces them again.
        fresh_stack.restart_main()
        b.send("ping")
        b.wait_for(r"^pong", timeout=30)
        # bob's realm restarts: his sessions leave, then come back seconds later.
        old = fresh_stack.realms["beta"]
        old.kill()
        b.wait_for(r"^\* disconnected: ")
        fresh_stack.realms["beta"] = start_realm("beta", fresh_stack.main.addr, old.port)
        b.wait_for(rf"^\* reconnected to realm beta: authenticated as {bob}$", timeout=30)
        # A real change still shows (and proves alice heard everything before it).
        time.sleep(1.2)
        b.send("away brb")
        a.wait_for(rf"^· {bob} is away on realm beta: brb$")
        said = [line for line in a.lines if line.startswith(f"· {bob} is ")]
        assert said == [f"· {bob} is away on realm beta", f"· {bob} is online on realm beta",
                        f"· {bob} is away on realm beta: brb"], a.lines
        # bob leaves for good: the offline shows once it has lasted.
        b.send("quit")
        assert b.proc.wait(20) == 0
        a.wait_for(rf"^· {bob} is offline$", timeout=45)
    finally:
        a.kill()
        b.kill()


def test_conversation_mode_query_join_msg_me(stack: Stack, uname: Callable[[str], str]) -> None:
    alice, bob, carol, room = uname("alice"), uname("bob"), uname("carol"), uname("room")
    assert run_cli(stack.realm("alpha"), [f"register {alice} {PW}", f"register {carol} {PW}"]).returncode == 0
    b = LiveCli(stack.realm("beta"))
    a = LiveCli(stack.realm("alpha"))
    try:
        b.send(f"register {bob} {PW}")
        b.send(f"auth {bob} {PW}")
        b.send(f"creategroup {room}")
        b.wait_for(f"created group #{room}")
        a.send(f"auth {alice} {PW}")
        a.wait_for("logged in as")
        # No current conversation: lines are commands, as always; /me has nowhere to go.
        a.send("/me is here")
        a.wait_for(r"^error INVALID_ARGUMENT: /me: no current conversation")
        a.send(f"/query {bob}")
        a.wait_for(rf"^talking to {bob}: plain lines go to {bob}")
        a.send("hello in the query")
        b.wait_for(rf"^\[{alice} → you {TIME}\] hello in the query$")
        a.send("who")  # a plain line is a message now, whatever it says
        b.wait_for(rf"^\[{alice} → you {TIME}\] who$")
        a.send("/who")  # and a command with a slash
        a.wait_for(r"^USER +REALM")
        a.send(f"/msg {carol} just this one")
        a.wait_for(rf"^\[you → {carol} {TIME}\] just this one$")
        a.send("/me waves")
        b.wait_for(rf"^\[{alice} → you {TIME}\] \* {alice} waves$")
        a.send("//slash at the start")
        b.wait_for(rf"^\[{alice} → you {TIME}\] /slash at the start$")
        a.send(f"/join #{room}")
        a.wait_for(rf"^joined #{room}; talking in #{room}")
        a.send("hello room")
        b.wait_for(rf"^\[#{room}\] {alice}: hello room$")
        a.send("/me nods")
        b.wait_for(rf"^\[#{room}\] {alice}: \* {alice} nods$")
        a.send(f"/msg {bob} aside")
        b.wait_for(rf"^\[{alice} → you {TIME}\] aside$")
        a.send("still the room")
        b.wait_for(rf"^\[#{room}\] {alice}: still the room$")
        a.send("/query")
        a.wait_for(rf"^left #{room}: plain lines are commands again$")
        a.send("groups")  # today's behaviour again
        a.wait_for(rf"^#{room} +member +2$")
        a.send(f"/query #{room}")  # joins (already a member: fine) and makes it current
        a.wait_for(rf"^joined #{room}; talking in #{room}")
        a.send(f"/leavegroup {room}")
        a.wait_for(rf"^\* #{room} is no longer your current conversation")
        a.send("groups")
        a.wait_for(r"^you are in no groups$")
        assert a.finish() == 1  # the /me without a conversation failed
        assert not any("error" in line for line in b.lines), b.lines
    finally:
        a.kill()
        b.kill()
