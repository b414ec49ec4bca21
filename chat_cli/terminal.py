"""The terminal client: `python -m chat_cli --host H --port P [--download-dir DIR] [--json]`.

It accepts the protocol's commands as a user types them and runs them through ChatClient, so
results are typed and printed for humans. Two differences from the wire, both about files:
  sendfile TO PATH   PATH is a LOCAL file (the rest of the line, spaces allowed, ~ expanded);
                     the client sends it with the wire's `sendfile TO NAME SIZE` framing.
  receivefile        downloads EVERY waiting file into --download-dir (receivefile ID: one).

With stdin a TTY it is interactive (prompt_toolkit: live events above the prompt, history, tab
completion). Otherwise it runs the piped lines in order, printing results and events, and exits 1
if any command failed. --json prints the raw protocol lines received instead of human output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from realmchat.errors import ChatError, InvalidArgument, NotFound, Unimplemented
from realmchat.textproto import COMMANDS, parse_line
from realmchat.textproto import error as error_line

from .client import ChatClient
from .models import (
    ConnectionEvent,
    ConnState,
    Event,
    FileEvent,
    FileInfo,
    Message,
    MessageEvent,
    OtherEvent,
    SessionEvent,
)
from .render import (
    fmt_error,
    fmt_file_offer,
    fmt_groups,
    fmt_message,
    fmt_size,
    fmt_who,
    progress_bar,
    sanitize,
)

if TYPE_CHECKING:
    from prompt_toolkit.history import History

# Transfers at least this big get a progress bar (interactive mode only).
PROGRESS_MIN_BYTES = 4 * 1024 * 1024

# The terminal's own usage lines where they differ from the wire's (see module docstring).
_LOCAL_USAGE = {
    "sendfile": ("sendfile TO PATH", "send a local file (PATH may contain spaces; ~ is expanded)"),
    "receivefile": ("receivefile [ID]", "download every waiting file (or file ID) into the download dir"),
    "quit": ("quit", "leave (also: exit, Ctrl-D)"),
}
ALIASES = {"exit": "quit"}
VERBS: tuple[str, ...] = tuple(COMMANDS) + tuple(ALIASES)
# What the first argument of a verb names, for tab completion (from the usage: TO/USER, GROUP).
FIRST_ARG: dict[str, tuple[str, ...]] = {
    spec.verb: tuple(kind for kind, words in (("user", ("TO", "USER")), ("group", ("GROUP",)))
                     if any(w in spec.usage.split(" ")[1].split("|") for w in words))
    for spec in COMMANDS.values() if len(spec.usage.split(" ")) > 1 and spec.verb not in ("register", "auth")
}


@dataclass(frozen=True, slots=True)
class UserCommand:
    """One line the user typed, validated: `verb` is canonical, `args` as the wire would split
    them (for sendfile: TO and the unresolved local path text)."""

    verb: str
    args: tuple[str, ...]


def parse_user_line(line: str) -> UserCommand | None:
    """Parses what the user typed. None for a blank line or a `# comment`. Raises ChatError
    (UNIMPLEMENTED for an unknown verb, INVALID_ARGUMENT with the usage) like the realm would,
    using the shared parser so the two never disagree; only `sendfile` differs (a local path)."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    verb_raw, _, rest = stripped.partition(" ")
    verb = ALIASES.get(verb_raw.lower(), verb_raw.lower())
    if verb == "sendfile":
        to, _, path = rest.strip().partition(" ")
        path = path.strip()
        if not to or not path:
            raise InvalidArgument("usage: sendfile TO PATH (a local file; ~ is expanded)")
        return UserCommand("sendfile", (to, path))
    if verb not in COMMANDS:
        raise Unimplemented(f"unknown command {verb_raw[:40]!r}; type 'help' for the list")
    cmd = parse_line(f"{verb} {rest}" if rest else verb)
    assert cmd is not None
    return UserCommand(cmd.verb, cmd.args)


def resolve_local_path(text: str) -> Path:
    """The local file a user meant in `sendfile TO PATH`: the text as typed (spaces are part of
    the name), else with shell quoting/escapes removed ("my file.pdf", my\\ file.pdf); `~` is
    expanded. Raises NotFound naming the path if none exists."""
    candidates = [text]
    try:
        words = shlex.split(text)
    except ValueError:
        words = []
    if len(words) == 1 and words[0] != text:
        candidates.append(words[0])
    for c in candidates:
        p = Path(os.path.expanduser(c))
        if p.exists():
            return p
    hint = ""
    if len(text.split()) >= 2 and text.split()[-1].isdigit():
        hint = " (chat_cli sends local files: sendfile TO PATH; the wire's NAME SIZE form is for raw clients)"
    raise NotFound(f"no such local file: {os.path.expanduser(text)}{hint}")


def help_text() -> str:
    rows = []
    for spec in COMMANDS.values():
        usage, summary = _LOCAL_USAGE.get(spec.verb, (spec.usage, spec.summary))
        rows.append((usage, summary))
    width = max(len(u) for u, _ in rows)
    return "\n".join(f"  {u.ljust(width)}  {s}" for u, s in rows)


class Progress:
    """A one-line progress bar on the real terminal (stderr), redrawn at most 10 times/s."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        self.stream.write(f"\r{self.label} {progress_bar(done, total, rate=done / elapsed)}\x1b[K")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


class Terminal:
    """Runs user commands against a ChatClient and prints the results (human or --json)."""

    def __init__(self, client: ChatClient, *, download_dir: Path, json_mode: bool,
                 out: Callable[[str], None], progress_stream: TextIO | None = None) -> None:
        self.client = client
        self.download_dir = download_dir
        self.json_mode = json_mode
        self.out = out
        # Where progress bars go; None disables them (piped mode).
        self.progress_stream = progress_stream
        self.failures = 0
        self.done = False
        self.auth_failed = False
        # Names seen (who, groups, messages): what tab completion offers after a verb. Fetched
        # in the background only when completion is on (interactive): a script sees no extra calls.
        self.complete_names = False
        self.users: set[str] = set()
        self.groups: set[str] = set()
        self._refresh: asyncio.Task[None] | None = None
        self._handlers: dict[str, Callable[[tuple[str, ...]], Awaitable[None]]] = {
            "register": self._register,
            "auth": self._auth,
            "sendprivate": self._sendprivate,
            "inbox": self._inbox,
            "creategroup": self._creategroup,
            "joingroup": self._joingroup,
            "leavegroup": self._leavegroup,
            "sendgroup": self._sendgroup,
            "inboxgroup": self._inboxgroup,
            "sendfile": self._sendfile,
            "receivefile": self._receivefile,
            "who": self._who,
            "groups": self._groups,
            "history": self._history,
            "help": self._help,
            "ping": self._ping,
            "logout": self._logout,
            "quit": self._quit,
        }
        assert set(self._handlers) == set(COMMANDS), "every protocol verb needs a terminal handler"

    # ---- output ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Human output (suppressed in --json mode, where the wire lines are the output)."""
        if not self.json_mode:
            self.out(text)

    def fail(self, e: ChatError) -> None:
        self.failures += 1
        if self.json_mode:
            self.out(error_line(e.code, e.message).decode().rstrip("\n"))
        else:
            self.out(fmt_error(e))

    def on_event(self, ev: Event) -> None:
        """Prints one event as it arrives (wire order, from the reader)."""
        if self.json_mode:
            # Server events are already printed raw by the wire tap; the library's own
            # connection events are worth a line too, in the same JSON shape.
            # (the first connect and our own close are no news there).
            if isinstance(ev, ConnectionEvent) and ev.state not in (ConnState.CONNECTED, ConnState.CLOSED):
                self.out(f'{{"event":"connection","state":"{ev.state.value}"}}')
            return
        me = self.client.user
        if isinstance(ev, MessageEvent):
            self._saw_message(ev.message)
            self.out(fmt_message(ev.message, me))
        elif isinstance(ev, FileEvent):
            self.users.add(ev.file.sender)
            self.out(fmt_file_offer(ev.file))
        elif isinstance(ev, SessionEvent):
            self.out(f"* session {sanitize(ev.state)}: {sanitize(ev.message)}")
        elif isinstance(ev, ConnectionEvent):
            if ev.state is ConnState.CLOSED or (ev.state is ConnState.RECONNECTING and ev.detail != "attempt 1"):
                return  # closing is what the user asked for; one "reconnecting" per outage is enough
            text = {
                ConnState.CONNECTED: f"connected to realm {sanitize(ev.realm)} at {ev.detail}",
                ConnState.DISCONNECTED: f"disconnected: {sanitize(ev.detail)}",
                ConnState.RECONNECTING: "reconnecting...",
                ConnState.RECONNECTED: f"reconnected to realm {sanitize(ev.realm)}: {sanitize(ev.detail)}",
            }[ev.state]
            self.out(f"* {text}")
        elif isinstance(ev, OtherEvent) and ev.kind == "shutdown":
            why = ev.raw.get("message") or "shutting down"
            self.out(f"* the realm is going away: {sanitize(str(why))} (reconnecting when it is back)")
        elif isinstance(ev, OtherEvent):
            self.out(f"* event {sanitize(ev.kind)}: {sanitize(str(ev.raw))}")
        if isinstance(ev, ConnectionEvent) and ev.state is ConnState.RECONNECTED and self.client.user:
            self.refresh_names()

    def _saw_message(self, m: Message) -> None:
        self.users.add(m.sender)
        if m.to:
            self.users.add(m.to)
        if m.group:
            self.groups.add(m.group)

    def refresh_names(self) -> None:
        """Fetches who is online and the user's groups for tab completion, in the background."""
        async def fetch() -> None:
            with contextlib.suppress(ChatError):
                self.users.update(p.user for p in await self.client.who())
            with contextlib.suppress(ChatError):
                self.groups.update(g.name for g in await self.client.groups())

        if self.complete_names and not self.json_mode and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(fetch(), name="chat_cli-names")

    def completions(self, verb: str, prefix: str) -> list[str]:
        """Names that complete the first argument of `verb` (users, groups, or both)."""
        kinds = FIRST_ARG.get(ALIASES.get(verb.lower(), verb.lower()), ())
        names: set[str] = set()
        if "user" in kinds:
            names |= self.users - {self.client.user or ""}
        if "group" in kinds:
            names |= self.groups
        return sorted((n for n in names if n.lower().startswith(prefix.lower())), key=str.lower)

    def _messages(self, msgs: Iterable[Message], empty: str) -> None:
        msgs = list(msgs)
        for m in msgs:
            self._saw_message(m)
        lines = [fmt_message(m, self.client.user) for m in msgs]
        self.say("\n".join(lines) if lines else empty)

    def _progress(self, label: str, size: int) -> Callable[[int, int], None] | None:
        if self.progress_stream is None or self.json_mode or size < PROGRESS_MIN_BYTES:
            return None
        return Progress(label, self.progress_stream)

    # ---- running --------------------------------------------------------------------------

    async def run_line(self, line: str) -> bool:
        """Runs one typed line; False if it failed (the error was printed)."""
        verb = line.strip().split(" ", 1)[0].lower()
        try:
            cmd = parse_user_line(line)
            if cmd is None:
                return True
            await self._handlers[cmd.verb](cmd.args)
            return True
        except ChatError as e:
            if verb == "auth":
                self.auth_failed = True
            self.fail(e)
            return False

    # ---- handlers -------------------------------------------------------------------------

    async def _register(self, a: tuple[str, ...]) -> None:
        user = await self.client.register(a[0], a[1])
        self.say(f"registered {sanitize(user)}; now: auth {sanitize(user)} PASSWORD")

    async def _auth(self, a: tuple[str, ...]) -> None:
        s = await self.client.auth(a[0], a[1])
        self.auth_failed = False
        self.say(f"logged in as {sanitize(s.user)} on realm {sanitize(s.realm)}")
        self.refresh_names()

    async def _sendprivate(self, a: tuple[str, ...]) -> None:
        sent = await self.client.send_private(a[0], a[1])
        self.users.add(a[0])
        me = self.client.user or "you"
        self.say(fmt_message(Message(id=sent.id, sender=me, text=a[1], ts=sent.ts, to=a[0]), me))

    async def _sendgroup(self, a: tuple[str, ...]) -> None:
        sent = await self.client.send_group(a[0], a[1])
        me = self.client.user or "you"
        self.say(fmt_message(Message(id=sent.id, sender=me, text=a[1], ts=sent.ts, group=a[0]), me))

    async def _inbox(self, a: tuple[str, ...]) -> None:
        self._messages(await self.client.inbox(), "no new messages")

    async def _inboxgroup(self, a: tuple[str, ...]) -> None:
        self._messages(await self.client.inbox_group(a[0]), f"no new messages in #{sanitize(a[0])}")

    async def _history(self, a: tuple[str, ...]) -> None:
        n = int(a[1]) if len(a) > 1 else None
        self._messages(await self.client.history(a[0], n), f"no messages with {sanitize(a[0])}")

    async def _creategroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.create_group(a[0])
        self.groups.add(g)
        self.say(f"created group #{sanitize(g)} (you are its owner)")

    async def _joingroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.join_group(a[0])
        self.groups.add(g)
        self.say(f"joined #{sanitize(g)}")

    async def _leavegroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.leave_group(a[0])
        self.groups = {n for n in self.groups if n.lower() != g.lower()}
        self.say(f"left #{sanitize(g)}")

    async def _groups(self, a: tuple[str, ...]) -> None:
        groups = await self.client.groups()
        self.groups.update(g.name for g in groups)
        self.say(fmt_groups(groups))

    async def _who(self, a: tuple[str, ...]) -> None:
        online = await self.client.who()
        self.users.update(p.user for p in online)
        self.say(fmt_who(online))

    async def _ping(self, a: tuple[str, ...]) -> None:
        rtt = await self.client.ping()
        self.say(f"pong ({rtt * 1000:.1f} ms)")

    async def _help(self, a: tuple[str, ...]) -> None:
        if self.json_mode:
            await self.client.help()  # the raw response is the output
        else:
            self.say("commands:\n" + help_text())

    async def _logout(self, a: tuple[str, ...]) -> None:
        await self.client.logout()
        self.say("logged out")

    async def _quit(self, a: tuple[str, ...]) -> None:
        self.done = True
        with contextlib.suppress(ChatError):
            await self.client.quit()
        self.say("bye")

    async def _sendfile(self, a: tuple[str, ...]) -> None:
        to, path_text = a
        path = await asyncio.to_thread(resolve_local_path, path_text)
        size = (await asyncio.to_thread(path.stat)).st_size
        up = await self.client.send_file(to, path, self._progress(f"sending {path.name}", size))
        self.say(f"sent {sanitize(up.name)} ({fmt_size(up.size)}) to {sanitize(to)}: file id {up.id}, "
                 f"sha256 {up.sha256} verified")

    async def _receivefile(self, a: tuple[str, ...]) -> None:
        if a:
            await self._download(int(a[0]), None)
            return
        files = await self.client.pending_files()
        if not files:
            self.say("no files waiting")
            return
        for f in files:
            try:
                await self._download(f.id, f)
            except ChatError as e:
                # Keep going: one bad file should not stop the others; it still counts as a
                # failure for the exit code.
                self.fail(e)

    async def _download(self, file_id: int, info: FileInfo | None) -> None:
        progress = self._progress(f"receiving {sanitize(info.name)}", info.size) if info else None
        if info is None and self.progress_stream is not None and not self.json_mode:
            # Size unknown until the header arrives: decide on the first callback.
            holder: dict[str, Callable[[int, int], None] | None] = {}

            def lazy(done: int, total: int) -> None:
                if "p" not in holder:
                    holder["p"] = self._progress(f"receiving file {file_id}", total)
                p = holder["p"]
                if p is not None:
                    p(done, total)

            progress = lazy
        d = await self.client.receive_file(file_id, self.download_dir, progress)
        f = d.file
        self.say(f"received {sanitize(f.name)} ({fmt_size(f.size)}) from {sanitize(f.sender)} -> {d.path}\n"
                 f"  sha256 {f.sha256} verified")


# ---- the two modes ----------------------------------------------------------------------------


def _stdin_lines(loop: asyncio.AbstractEventLoop, stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines of `stream` read by a daemon thread (works for pipes and redirected files alike,
    and never keeps the process alive at exit); None marks EOF."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, daemon=True, name="stdin").start()
    return queue


async def run_piped(term: Terminal, stdin: TextIO, linger: float) -> int:
    """Runs stdin's commands in order; after EOF keeps printing events for `linger` seconds."""
    queue = _stdin_lines(asyncio.get_running_loop(), stdin)
    while not term.done:
        line = await queue.get()
        if line is None:
            break
        ok = await term.run_line(line)
        if not ok and term.auth_failed:
            # Every later command would fail with "log in first": stop at the real cause.
            print("chat_cli: stopping: auth failed (see the error above); the remaining commands were not run",
                  file=sys.stderr, flush=True)
            return 1
    if linger > 0 and not term.done:
        await asyncio.sleep(linger)  # events keep printing from the reader meanwhile
    return 1 if term.failures else 0


SECRET_VERBS = frozenset({"auth", "register"})


def is_secret(line: str) -> bool:
    """Lines that carry a password: kept for up-arrow in this session, never written to disk."""
    return line.strip().split(" ", 1)[0].lower() in SECRET_VERBS


def _history() -> History:
    """Command history kept across runs in ~/.realmchat_history (in memory if home is
    read-only); lines with passwords are not stored."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    class NoSecretsFileHistory(FileHistory):
        def store_string(self, string: str) -> None:
            if not is_secret(string):
                super().store_string(string)

    path = Path(os.path.expanduser("~/.realmchat_history"))
    if not os.access(path.parent, os.W_OK):
        return InMemoryHistory()
    # The history holds message texts: readable by the user only, whatever the umask.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)
    return NoSecretsFileHistory(str(path))


async def run_interactive(term: Terminal) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document
    from prompt_toolkit.patch_stdout import patch_stdout

    class VerbCompleter(Completer):
        """Verbs as the first word; user and group names as the first argument (those seen in
        who, groups and messages); local paths after `sendfile TO `."""

        paths = PathCompleter(expanduser=True)

        def get_completions(self, document: Document, complete_event):  # type: ignore[no-untyped-def]
            text = document.text_before_cursor
            words = text.split(" ")
            if len(words) <= 1:
                for v in VERBS:
                    if v.startswith(text.lower()):
                        yield Completion(v, start_position=-len(text))
            elif len(words) == 2:
                for name in term.completions(words[0], words[1]):
                    yield Completion(name, start_position=-len(words[1]))
            elif words[0].lower() == "sendfile" and len(words) >= 3:
                path_text = text.split(" ", 2)[2]
                yield from self.paths.get_completions(Document(path_text, len(path_text)), complete_event)

    session: PromptSession[str] = PromptSession(history=_history(), completer=VerbCompleter(),
                                                complete_while_typing=False)
    term.say("type 'help' for the commands, Ctrl-D to leave")
    def prompt() -> str:
        # Evaluated at every redraw: after an automatic re-login (or its failure) the prompt
        # shows who is logged in now, not who was when it was first drawn.
        return f"{term.client.user or 'guest'}@{term.client.realm or 'realm'}> "

    with patch_stdout(raw=False):
        while not term.done:
            try:
                line = await session.prompt_async(prompt)
                line = await _ask_password(line)
            except KeyboardInterrupt:
                continue
            except EOFError:
                await term.run_line("quit")
                break
            await term.run_line(line)
    return 0


async def _ask_password(line: str) -> str:
    """`auth USER` or `register USER` alone: asks for the password without echoing it (in a
    session of its own, so the password never reaches the command history)."""
    from prompt_toolkit import PromptSession

    words = line.split()
    if len(words) == 2 and words[0].lower() in SECRET_VERBS:
        password = await PromptSession[str]().prompt_async(f"password for {sanitize(words[1])}: ",
                                                           is_password=True)
        return f"{words[0]} {words[1]} {password}"
    return line


async def amain(host: str, port: int, download_dir: Path, json_mode: bool, linger: float,
                reconnect: bool, interactive: bool, tls: ssl.SSLContext | None = None) -> int:
    def out(text: str) -> None:
        # sys.stdout looked up per call: under patch_stdout it is the proxy that keeps output
        # above the prompt line.
        print(text, file=sys.stdout, flush=True)

    def tap(direction: str, line: bytes) -> None:
        if direction == "<":
            out(line.decode("utf-8", "replace"))

    client = ChatClient(host, port, auto_reconnect=reconnect, wire_tap=tap if json_mode else None, ssl=tls)
    term = Terminal(client, download_dir=download_dir, json_mode=json_mode, out=out,
                    progress_stream=sys.stderr if interactive and sys.stderr.isatty() else None)
    client.on_event = term.on_event
    term.complete_names = interactive
    try:
        await client.open()
    except ChatError as e:
        term.fail(e)
        return 2
    try:
        if interactive:
            return await run_interactive(term)
        return await run_piped(term, sys.stdin, linger)
    finally:
        await client.close()
