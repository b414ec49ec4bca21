"""The terminal client: `python -m chat_cli --host H --port P [--download-dir DIR] [--json]`.

It accepts the protocol's commands as a user types them, parses and dispatches them through
the verb table (chat_cli/verbs.py) and runs them through ChatClient, so results are typed and
printed for humans. Two differences from the wire, both about files:
  sendfile TO PATH   PATH is a LOCAL file (the rest of the line, spaces allowed, ~ expanded);
                     the client sends it with the wire's `sendfile TO NAME SIZE` framing.
  receivefile        downloads EVERY waiting file into --download-dir (receivefile ID: one).

A current conversation (`/query bob`, `/join #crew`) makes plain lines messages to it; `/VERB`
runs any command, with or without one.

With stdin a TTY it is interactive (prompt_toolkit: live events above the prompt, history, tab
completion; every line printed through prompt_toolkit, styles included). Otherwise it runs
the piped lines in order, printing results and events, and exits 1 if any command failed.
--json prints the raw protocol lines received instead of human output.
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
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from realmchat.errors import ChatError, InvalidArgument, NotFound
from realmchat.textproto import error as error_line
from realmchat.textproto import is_time_ref

from .client import ChatClient
from .models import (
    ConnectionEvent,
    ConnState,
    DeletedEvent,
    EditedEvent,
    Event,
    FileEvent,
    FileInfo,
    GroupDeletedEvent,
    InvitedEvent,
    MemberEvent,
    Message,
    MessageEvent,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    SeenEvent,
    TypingEvent,
    apply_change,
)
from .render import (
    fmt_bans,
    fmt_conversations,
    fmt_error,
    fmt_group_list,
    fmt_groups,
    fmt_hop,
    fmt_members,
    fmt_message,
    fmt_notice,
    fmt_presence,
    fmt_reactions,
    fmt_size,
    fmt_who,
    progress_bar,
    sanitize,
    snippet,
    styled,
)
from .verbs import (
    NO_TARGET,
    PROTOCOL_VERBS,
    SLASH_ONLY,
    arg_kinds,
    parse_message_id,
    parse_user_line,
)
from .verbs import VERBS as VERBS_TABLE
from .verbs import UserCommand as UserCommand  # the terminal's parse result, imported from here too

if TYPE_CHECKING:
    from prompt_toolkit.history import History

# Messages remembered for quotes and live changes.
SHOWN_MAX = 5000

# Transfers at least this big get a progress bar (interactive mode only).
PROGRESS_MIN_BYTES = 4 * 1024 * 1024

# Presence lines: the last state shown is remembered for this many users (the least recently
# heard are forgotten), and an "offline" is printed only once it has lasted OFFLINE_SETTLE_S, so
# a realm or main restart (the user's sessions back within seconds) prints nothing at all.
PRESENCE_USERS_MAX = 2000
OFFLINE_SETTLE_S = 10.0

# The commands, their parsers and help come from the one verb table (chat_cli/verbs.py).
VERBS: tuple[str, ...] = tuple(v.command for v in PROTOCOL_VERBS) + tuple(
    alias for v in PROTOCOL_VERBS for alias in v.aliases)
SLASH_VERBS: tuple[str, ...] = tuple(v.command for v in SLASH_ONLY) + tuple("/" + v for v in VERBS)
ALIASES: dict[str, str] = {alias: v.command for v in VERBS_TABLE for alias in v.aliases}
SECRET_VERBS = frozenset(v.command for v in VERBS_TABLE if v.secret)

# Per command, what its arguments name (first, second, ...), from the usage lines: what tab
# completion offers.
ARG_KINDS: dict[str, tuple[tuple[str, ...], ...]] = {
    v.command: arg_kinds(v.usage) for v in PROTOCOL_VERBS if not v.secret}
ARG_KINDS["sendfile"] = (("user", "group"),)


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
    rows = [(v.usage, v.summary) for v in PROTOCOL_VERBS]
    slash = [(v.usage, v.summary) for v in SLASH_ONLY]
    slash.append(("/COMMAND ...", "any command above, also while a conversation is current"))
    width = max(len(u) for u, _ in (*rows, *slash))
    return "\n".join([*(f"  {u.ljust(width)}  {s}" for u, s in rows),
                      "conversation mode (plain lines go to the current conversation; `//TEXT` sends /TEXT):",
                      *(f"  {u.ljust(width)}  {s}" for u, s in slash)])


class Shown(Enum):
    """What to do with one presence event (PresenceLines.offer)."""

    SHOW = "show"  # print it now
    SKIP = "skip"  # nothing changed on this screen
    HOLD = "hold"  # an offline: print it when `due` says so, unless the user is back first


@dataclass(frozen=True, slots=True)
class _State:
    status: str
    realm: str
    message: str

    @classmethod
    def of(cls, ev: PresenceEvent) -> _State:
        # Only what the line shows: an offline line names no realm.
        offline = ev.status == "offline"
        return cls(ev.status, "" if offline else ev.realm.casefold(), "" if offline else ev.message)


class PresenceLines:
    """Which presence events the terminal prints, without I/O (the clock is passed in).

    A line is printed only when it changes what this screen last said about the user: after a
    restart the servers announce the same "bob is online" again, and a realm that restarts
    makes its users go offline and come back seconds later. So an offline is held `settle`
    seconds and dropped if the user is back (in the state shown) meanwhile. Bounded: the shown
    state of at most `limit` users, least recently heard forgotten; at most `limit` held."""

    def __init__(self, limit: int = PRESENCE_USERS_MAX, settle: float = OFFLINE_SETTLE_S) -> None:
        self.limit = limit
        self.settle = settle
        self._shown: OrderedDict[str, _State] = OrderedDict()
        self._held: OrderedDict[str, tuple[PresenceEvent, float]] = OrderedDict()

    def offer(self, ev: PresenceEvent, now: float) -> Shown:
        key = ev.user.casefold()
        state = _State.of(ev)
        shown = self._shown.get(key)
        if ev.status == "offline":
            if key in self._held or (shown is not None and shown.status == "offline"):
                return Shown.SKIP
            if len(self._held) >= self.limit:
                self._show(key, state)  # too many held at once: no time to wait
                return Shown.SHOW
            self._held[key] = (ev, now + self.settle)
            return Shown.HOLD
        self._held.pop(key, None)
        if shown == state:
            self._shown.move_to_end(key)
            return Shown.SKIP
        self._show(key, state)
        return Shown.SHOW

    def due(self, now: float) -> list[PresenceEvent]:
        """The held offlines whose time has come (now shown)."""
        out = []
        for key, (ev, at) in list(self._held.items()):
            if at <= now:
                del self._held[key]
                self._show(key, _State.of(ev))
                out.append(ev)
        return out

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def next_due(self) -> float:
        """When the first held offline is due (only while `holding`)."""
        return min(at for _, at in self._held.values())

    def reset(self) -> None:
        """Another user logged in here: nothing was shown to them yet."""
        self._shown.clear()
        self._held.clear()

    def _show(self, key: str, state: _State) -> None:
        self._shown[key] = state
        self._shown.move_to_end(key)
        while len(self._shown) > self.limit:
            self._shown.popitem(last=False)


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
                 out: Callable[[str], None], progress_stream: TextIO | None = None,
                 show_ids: bool = False, color: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        # Message ids after each message ("#123", what edit/delete/reply/react take) and ANSI
        # dim/bold: on for a person at a terminal, off for scripts unless asked.
        self.show_ids = show_ids
        self.color = color
        # Messages shown, by id (the newest SHOWN_MAX): for the quote above a reply and to show a
        # message again when it is edited, deleted or reacted to.
        self.shown: OrderedDict[int, Message] = OrderedDict()
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
        # Interactive: status lines (presence, read, seen) are dimmed and "bob is typing…" shows
        # at the right end of the prompt line; piped: plain lines.
        self.interactive = False
        self.out_dim: Callable[[str], None] | None = None
        self.typing: dict[str, tuple[str, float]] = {}  # who (casefolded) -> (what, until monotonic)
        self.last_ids: dict[str, int] = {}  # conversation (casefolded) -> newest message id seen
        self.presence = PresenceLines()
        self._presence_timer: asyncio.TimerHandle | None = None
        # The current conversation (`/query bob`, `/join #crew`): plain lines are sent there.
        # "bob" or "#crew"; None: plain lines are commands.
        self.target: str | None = None
        self._viewer = ""  # who the presence state and the target belong to (casefolded)
        # Each command of the verb table runs the handler named after it (`kick` -> _kick,
        # `/query` -> _query), as each realm verb has its cmd_ handler.
        self._handlers: dict[str, Callable[[tuple[str, ...]], Awaitable[None]]] = {
            v.command: getattr(self, "_" + v.command.removeprefix("/")) for v in VERBS_TABLE}

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

    def status_line(self, text: str) -> None:
        """A quiet line (presence, read elsewhere, seen): dimmed on a terminal (`out_dim`)."""
        if self.out_dim is not None and not self.json_mode:
            self.out_dim(text)
        else:
            self.out(text)

    def toolbar(self) -> str:
        """What the interactive prompt shows at its right end: who is typing right now."""
        now = time.monotonic()
        self.typing = {k: v for k, v in self.typing.items() if v[1] > now}
        return "  ".join(what for what, _ in self.typing.values())

    def on_event(self, ev: Event) -> None:
        """Prints one event as it arrives (wire order, from the reader)."""
        if self.json_mode:
            # Server events are already printed raw by the wire tap; the library's own
            # connection events are worth a line too, in the same JSON shape.
            # (the first connect and our own close are no news there).
            if isinstance(ev, ConnectionEvent) and ev.state not in (ConnState.CONNECTED, ConnState.CLOSED):
                self.out(f'{{"event":"connection","state":"{ev.state.value}"}}')
            return
        self._learn(ev)
        me = self.client.user
        if isinstance(ev, MessageEvent):
            self.out(self.fmt(ev.message))
        elif isinstance(ev, PresenceEvent):
            self._presence(ev)
        elif isinstance(ev, TypingEvent) and self.interactive:
            self.typing[ev.user.casefold()] = (fmt_notice(ev, me).removeprefix("· "), self.clock() + ev.expires)
        elif isinstance(ev, TypingEvent | ReadEvent | SeenEvent):
            self.status_line(fmt_notice(ev, me))
        elif isinstance(ev, EditedEvent | DeletedEvent | ReactionEvent):
            self.out(self._change_line(ev))
        elif isinstance(ev, ConnectionEvent) and (
                ev.state is ConnState.CLOSED or (ev.state is ConnState.RECONNECTING and ev.detail != "attempt 1")):
            pass  # closing is what the user asked for; one "reconnecting" per outage is enough
        else:
            # Everything else, a kind this version does not know included, is one sentence.
            self.out(fmt_notice(ev, me, realm=self.client.realm, reconnect=self.client.auto_reconnect,
                                color=self.color))
        if isinstance(ev, ConnectionEvent) and ev.state is ConnState.RECONNECTED and self.client.user:
            self.refresh_names()

    def _learn(self, ev: Event) -> None:
        """What an event teaches the terminal: names to complete, groups joined or lost, who
        stopped typing."""
        me = self.client.user
        if isinstance(ev, MessageEvent):
            self._saw_message(ev.message)
            self.typing.pop(ev.message.sender.casefold(), None)
        elif isinstance(ev, PresenceEvent):
            self.users.add(ev.user)
            if ev.status == "offline":
                self.typing.pop(ev.user.casefold(), None)
        elif isinstance(ev, FileEvent):
            self.users.add(ev.file.sender)
            if ev.file.group:
                self.groups.add(ev.file.group)
        elif isinstance(ev, MemberEvent):
            self.users.update(u for u in (ev.user, ev.by) if u)
            if ev.removes and _same(ev.user, me):
                self._forget_group(ev.group)
            elif ev.action == "join" and _same(ev.user, me):
                self.groups.add(ev.group)
        elif isinstance(ev, GroupDeletedEvent):
            self._forget_group(ev.group)
        elif isinstance(ev, InvitedEvent):
            self.groups.add(ev.group)

    def _presence(self, ev: PresenceEvent) -> None:
        """A presence line, only when it changes what this screen said about the user (see
        PresenceLines); a held offline is printed by a timer once it has lasted."""
        decision = self.presence.offer(ev, self.clock())
        if decision is Shown.SHOW:
            self.status_line(fmt_presence(ev))
        elif decision is Shown.HOLD and self._presence_timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to print later
                loop = asyncio.get_running_loop()
                self._presence_timer = loop.call_later(self.presence.settle, self._presence_due)

    def _presence_due(self) -> None:
        self._presence_timer = None
        for ev in self.presence.due(self.clock() + 0.001):
            self.status_line(fmt_presence(ev))
        if self.presence.holding and not self.done:
            self._presence_timer = asyncio.get_running_loop().call_later(
                max(0.05, self.presence.next_due() - self.clock()), self._presence_due)

    # ---- messages --------------------------------------------------------------------------

    def remember(self, m: Message) -> Message:
        self.shown[m.id] = m
        self.shown.move_to_end(m.id)
        while len(self.shown) > SHOWN_MAX:
            self.shown.popitem(last=False)
        return m

    def fmt(self, m: Message) -> str:
        """A message as shown (and remembered, for quotes and later changes)."""
        if m.id:
            self.remember(m)
        original = self.shown.get(m.reply_to) if m.reply_to else None
        return fmt_message(m, self.client.user, ids=self.show_ids, color=self.color, original=original)

    def _change_line(self, ev: EditedEvent | DeletedEvent | ReactionEvent) -> str:
        """A live edit, deletion or reaction: the message again in its new state if it was
        shown here, else a one-line notice."""
        me = self.client.user
        old = self.shown.get(ev.id)
        ref = f"#{ev.id}"
        if old is None:
            return fmt_notice(ev, me)
        if isinstance(ev, EditedEvent):
            return "* edited: " + self.fmt(apply_change(old, ev))
        if isinstance(ev, DeletedEvent):
            by = "you" if _same(ev.by, me) else sanitize(ev.by or "someone")
            new = self.remember(apply_change(old, ev))
            return f"* {by} deleted: {fmt_message(new, me, ids=True, color=self.color)}"
        who = "you" if _same(ev.user, me) else sanitize(ev.user)
        verb = "reacted" if ev.on else "took back"
        what = f"{sanitize(ev.emoji)} to" if ev.on else f"{sanitize(ev.emoji)} on"
        new = self.remember(apply_change(old, ev))
        author = "you" if _same(new.sender, me) else sanitize(new.sender)
        summary = fmt_reactions(new, me) or "no reactions"
        return f"* {who} {verb} {what} {ref} ({author}: {snippet(new.text, 40)}): {summary}"

    def _forget_group(self, group: str) -> None:
        self.groups = {n for n in self.groups if not _same(n, group)}
        if self.target is not None and _same(self.target, "#" + group):
            self.target = None
            self.say(f"* #{sanitize(group)} is no longer your current conversation: plain lines are commands again")

    def _saw_message(self, m: Message) -> None:
        peer = m.group if m.group is not None else (m.to if _same(m.sender, self.client.user) else m.sender)
        if peer and m.id:
            key = peer.casefold()
            self.last_ids[key] = max(self.last_ids.get(key, 0), m.id)
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
            with contextlib.suppress(ChatError):
                self.groups.update(g.name for g in await self.client.list_groups())

        if self.complete_names and not self.json_mode and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(fetch(), name="chat_cli-names")

    def completions(self, verb: str, prefix: str, position: int = 1) -> list[str]:
        """Names that complete argument `position` (1: the first) of `verb`: users, groups, or
        both (`#GROUP` for sendfile's target and the conversation verbs)."""
        if verb.lower() in ("/query", "/msg") and position == 1:
            if prefix.startswith("#"):
                return ["#" + g for g in self.completions("members", prefix[1:])]
            return self.completions("sendprivate", prefix)
        if verb.lower() == "/join" and position == 1:
            return ["#" + g for g in self.completions("members", prefix.removeprefix("#"))]
        verb = verb.lower().removeprefix("/")
        verb = ALIASES.get(verb, verb)
        arg_kinds = ARG_KINDS.get(verb, ())
        kinds = arg_kinds[position - 1] if 0 < position <= len(arg_kinds) else ()
        if verb == "sendfile" and position == 1 and prefix.startswith("#"):
            return ["#" + g for g in self.completions("members", prefix[1:])]
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
        for m in msgs:  # first all, so that a reply shows the quote of an earlier one
            if m.id:
                self.remember(m)
        lines = [self.fmt(m) for m in msgs]
        self.say("\n".join(lines) if lines else empty)

    def _progress(self, label: str, size: int) -> Callable[[int, int], None] | None:
        if self.progress_stream is None or self.json_mode or size < PROGRESS_MIN_BYTES:
            return None
        return Progress(label, self.progress_stream)

    # ---- running --------------------------------------------------------------------------

    async def run_line(self, line: str) -> bool:
        """Runs one typed line; False if it failed (the error was printed). With a current
        conversation, a line without a leading "/" is a message to it (`//` sends one "/")."""
        stripped = line.strip()
        verb = stripped.removeprefix("/").split(" ", 1)[0].lower()
        try:
            if self.target is not None and stripped and (not stripped.startswith("/") or stripped.startswith("//")):
                await self._send_to(self.target, stripped.removeprefix("/") if stripped.startswith("//")
                                    else stripped)
                return True
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
        finally:
            if verb in ("auth", "logout"):
                self._viewer_may_have_changed()

    def _viewer_may_have_changed(self) -> None:
        """After auth or logout: if another user (or nobody) is logged in now, what this screen
        showed about presence and the current conversation were theirs."""
        viewer = (self.client.user or "").casefold()
        if viewer == self._viewer:
            return
        self._viewer = viewer
        self.presence.reset()
        if self.target is not None:
            self.say(f"* {sanitize(self.target)} is no longer your current conversation")
            self.target = None

    # ---- the current conversation ----------------------------------------------------------

    async def _send_to(self, to: str, text: str) -> None:
        if to.startswith("#"):
            await self._sendgroup((to[1:], text))
        else:
            await self._sendprivate((to, text))

    async def _query(self, a: tuple[str, ...]) -> None:
        if not a:
            if self.target is None:
                self.say("no current conversation: plain lines are commands")
            else:
                self.say(f"left {sanitize(self.target)}: plain lines are commands again")
                self.target = None
            return
        if a[0].startswith("#"):
            await self._join((a[0][1:],))
            return
        self.users.add(a[0])
        self.target = a[0]
        self.say(f"talking to {sanitize(a[0])}: plain lines go to {sanitize(a[0])}; "
                 "'/COMMAND' runs a command, '/query' alone ends this")

    async def _join(self, a: tuple[str, ...]) -> None:
        g = await self.client.join_group(a[0], a[1] if len(a) > 1 else None)
        self.groups.add(g)
        self.target = "#" + g
        self.say(f"joined #{sanitize(g)}; talking in #{sanitize(g)}: plain lines go there; "
                 "'/COMMAND' runs a command, '/query' alone ends this")

    async def _msg(self, a: tuple[str, ...]) -> None:
        await self._send_to(a[0], a[1])

    async def _me(self, a: tuple[str, ...]) -> None:
        if self.target is None:
            raise InvalidArgument(f"/me: {NO_TARGET}")
        await self._send_to(self.target, f"* {self.client.user or 'someone'} {a[0]}")

    # ---- handlers -------------------------------------------------------------------------

    async def _register(self, a: tuple[str, ...]) -> None:
        user = await self.client.register(a[0], a[1])
        self.say(f"registered {sanitize(user)}; now: auth {sanitize(user)} PASSWORD")

    async def _auth(self, a: tuple[str, ...]) -> None:
        s = await self.client.auth(a[0], a[1])
        self.auth_failed = False
        self.say(f"logged in as {sanitize(s.user)} on realm {sanitize(s.realm)}")
        if s.waiting.total:  # counted by the server at login; `inbox` fetches them
            self.say(f"{sanitize(s.waiting.line)} (inbox shows them)")
        self.refresh_names()

    async def _sendprivate(self, a: tuple[str, ...]) -> None:
        sent = await self.client.send_private(a[0], a[1])
        self.users.add(a[0])
        me = self.client.user or "you"
        self.say(self.fmt(Message(id=sent.id, sender=me, text=a[1], ts=sent.ts, to=a[0])))

    async def _sendgroup(self, a: tuple[str, ...]) -> None:
        sent = await self.client.send_group(a[0], a[1])
        me = self.client.user or "you"
        self.say(self.fmt(Message(id=sent.id, sender=me, text=a[1], ts=sent.ts, group=a[0])))

    async def _inbox(self, a: tuple[str, ...]) -> None:
        self._messages(await self.client.inbox(), "no new messages")

    async def _inboxgroup(self, a: tuple[str, ...]) -> None:
        self._messages(await self.client.inbox_group(a[0]), f"no new messages in #{sanitize(a[0])}")

    async def _history(self, a: tuple[str, ...]) -> None:
        rest = list(a[1:])
        n = int(rest.pop(0)) if rest and rest[0].isdigit() else None
        form = rest[0].lower() if rest else ""
        refs = [r if is_time_ref(r) else parse_message_id(r, "history") for r in rest[1:]]
        before = refs[0] if form == "before" else None
        after = refs[0] if form == "after" else None
        around = refs[0] if form == "around" else None
        between = (refs[0], refs[1]) if form == "between" else None
        page = await self.client.history(a[0], n, before=before, after=after, around=around, between=between)
        self._messages(page, f"no messages with {sanitize(a[0])}" if not form else "no more messages")
        if page.more and page:
            more = f"history {sanitize(a[0])}{f' {n}' if n else ''}"
            if form in ("around", "between"):  # more on either side, or within the window
                self.say(f"(older: '{more} before {page[0].id}', newer: '{more} after {page[-1].id}')")
            else:
                self.say(f"(more: '{more} after {page[-1].id}')" if after is not None
                         else f"(older: '{more} before {page[0].id}')")
        newest = max((m.id for m in page), default=0)
        if newest and not self.json_mode:
            # Viewing a conversation reads it: the read mark (and the unread count on every
            # device) follows. A realm without read marks just does not get them.
            with contextlib.suppress(ChatError):
                await self.client.read(a[0].lstrip("#"), newest)

    async def _conversations(self, a: tuple[str, ...]) -> None:
        convs = await self.client.conversations()
        for c in convs:
            (self.groups if c.is_group else self.users).add(c.peer)
            if c.last is not None and c.last.id:
                self.last_ids[c.peer.casefold()] = max(self.last_ids.get(c.peer.casefold(), 0), c.last.id)
        self.say(fmt_conversations(convs, self.client.user))

    async def _read(self, a: tuple[str, ...]) -> None:
        peer = a[0].lstrip("#")
        if len(a) > 1:
            upto = int(a[1])
        else:
            convs = await self.client.conversations()
            found = next((c for c in convs if _same(c.peer, peer)), None)
            if found is None or found.last is None:
                raise NotFound(f"no conversation with {peer}")
            upto = found.last.id
        mark = await self.client.read(peer, upto)
        self.say(f"{sanitize(peer)}: read up to message {mark}")

    async def _away(self, a: tuple[str, ...]) -> None:
        status = await self.client.away(a[0] if a else None)
        self.say(f"you are {sanitize(status)}" + (f": {sanitize(a[0])}" if a else ""))

    async def _back(self, a: tuple[str, ...]) -> None:
        status = await self.client.back()
        self.say(f"you are {sanitize(status)}")

    async def _typing(self, a: tuple[str, ...]) -> None:
        await self.client.typing(a[0])

    async def _receipts(self, a: tuple[str, ...]) -> None:
        on = await self.client.receipts(a[0].lower() == "on" if a else None)
        self.say("read receipts on: senders see when you read their messages" if on
                 else "read receipts off: senders do not see when you read their messages")

    async def _edit(self, a: tuple[str, ...]) -> None:
        mid = int(a[0])
        r = await self.client.edit(mid, a[1])
        old = self.shown.get(mid)
        if old is not None:
            self.say("edited: " + self.fmt(old.with_edit(a[1], r.edited)))
        else:
            self.say(f"edited #{r.id}")

    async def _delete(self, a: tuple[str, ...]) -> None:
        mid = await self.client.delete(int(a[0]))
        if mid in self.shown:
            self.remember(self.shown[mid].with_deleted())
        self.say(f"deleted #{mid}")

    async def _reply(self, a: tuple[str, ...]) -> None:
        mid = int(a[0])
        sent = await self.client.reply(mid, a[1])
        me = self.client.user or "you"
        original = self.shown.get(mid)
        if original is not None:
            self.say(self.fmt(Message(id=sent.id, sender=me, text=a[1], ts=sent.ts, to=original.peer(me)
                                      if original.group is None else None, group=original.group, reply_to=mid)))
        else:
            self.say(f"replied to #{mid}: #{sent.id}")

    async def _react(self, a: tuple[str, ...]) -> None:
        mid = await self.client.react(int(a[0]), a[1])
        self._reacted(mid, a[1], True)

    async def _unreact(self, a: tuple[str, ...]) -> None:
        mid = await self.client.unreact(int(a[0]), a[1])
        self._reacted(mid, a[1], False)

    def _reacted(self, mid: int, emoji: str, on: bool) -> None:
        # The realm does not echo our own reaction to this session: apply it here.
        old = self.shown.get(mid)
        done = f"reacted {sanitize(emoji)} to #{mid}" if on else f"took back {sanitize(emoji)} on #{mid}"
        if old is None or not self.client.user:
            self.say(done)
            return
        new = self.remember(old.with_reaction(emoji, self.client.user, on))
        self.say(f"{done}: {fmt_reactions(new, self.client.user) or 'no reactions'}")

    async def _trace(self, a: tuple[str, ...]) -> None:
        mid = int(a[0])
        hops = await self.client.trace(mid)
        self.say("\n".join([f"#{mid}:", *("  " + fmt_hop(h) for h in hops)]))

    async def _search(self, a: tuple[str, ...]) -> None:
        scope, query = (a[0], a[1]) if len(a) == 2 else (None, a[0])
        hits = await self.client.search(query, scope)
        if not hits:
            self.say(f"nothing found for {sanitize(query)!r}")
            return
        lines = [f"{len(hits)} result{'' if len(hits) == 1 else 's'} for {sanitize(query)!r}, best first:"]
        for h in hits:
            self._saw_message(h.message)
            where = f"in {sanitize(h.peer)}" if h.kind == "group" else f"with {sanitize(h.peer)}"
            self.remember(h.message)
            lines.append(f"{where}: " + fmt_message(h.message, self.client.user, ids=self.show_ids, color=self.color,
                                                    quote=False))
        self.say("\n".join(lines))

    async def _creategroup(self, a: tuple[str, ...]) -> None:
        private = len(a) > 1
        g = await self.client.create_group(a[0], private=private)
        self.groups.add(g)
        if private:
            self.say(f"created private group #{sanitize(g)} (you are its owner): "
                     f"'invite {sanitize(g)} USER' or 'groupkey {sanitize(g)} KEY' to let people in")
        else:
            self.say(f"created group #{sanitize(g)} (you are its owner)")

    async def _joingroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.join_group(a[0], a[1] if len(a) > 1 else None)
        self.groups.add(g)
        self.say(f"joined #{sanitize(g)}")

    async def _listgroups(self, a: tuple[str, ...]) -> None:
        listed = await self.client.list_groups(a[0] if a else None)
        self.groups.update(g.name for g in listed)
        self.say(fmt_group_list(listed))

    async def _members(self, a: tuple[str, ...]) -> None:
        members = await self.client.members(a[0])
        self.users.update(m.user for m in members)
        text = (f"#{sanitize(a[0])}: {len(members)} member{'' if len(members) == 1 else 's'}\n"
                + fmt_members(members, self.client.user))
        if members.banned is not None:  # the server tells only the group's owner and admins
            self.users.update(b.user for b in members.banned)
            n = len(members.banned)
            text += (f"\n{n} banned from #{sanitize(a[0])}:\n{fmt_bans(members.banned)}" if n
                     else f"\nnobody is banned from #{sanitize(a[0])}")
        self.say(text)

    async def _invite(self, a: tuple[str, ...]) -> None:
        r = await self.client.invite(a[0], a[1])
        self.users.add(r.user)
        self.say(f"invited {sanitize(r.user)} to #{sanitize(r.group)}")

    async def _kick(self, a: tuple[str, ...]) -> None:
        r = await self.client.kick(a[0], a[1], a[2] if len(a) > 2 else None)
        self.say(f"kicked {sanitize(r.user)} from #{sanitize(r.group)}")

    async def _ban(self, a: tuple[str, ...]) -> None:
        r = await self.client.ban(a[0], a[1], a[2] if len(a) > 2 else None)
        self.say(f"banned {sanitize(r.user)} from #{sanitize(r.group)}")

    async def _unban(self, a: tuple[str, ...]) -> None:
        r = await self.client.unban(a[0], a[1])
        self.say(f"unbanned {sanitize(r.user)} in #{sanitize(r.group)}")

    async def _role(self, a: tuple[str, ...]) -> None:
        r = await self.client.set_role(a[0], a[1], a[2])
        self.say(f"{sanitize(r.user)} is now {sanitize(r.role or a[2].lower())} of #{sanitize(r.group)}")

    async def _topic(self, a: tuple[str, ...]) -> None:
        if len(a) > 1 and a[1].strip() == "-":
            await self.client.clear_topic(a[0])
            self.say(f"topic of #{sanitize(a[0])} cleared")
            return
        if len(a) > 1:
            topic = await self.client.set_topic(a[0], a[1])
            self.say(f"topic of #{sanitize(a[0])} set: {sanitize(topic)}")
            return
        info = await self.client.topic_info(a[0])
        if not info.topic:
            self.say(f"#{sanitize(a[0])} has no topic")
            return
        when = info.set_when
        on = when.strftime(" on %Y-%m-%d %H:%M UTC") if when else ""
        by = f" (set by {sanitize(info.by)}{on})" if info.by else ""
        self.say(f"topic of #{sanitize(a[0])}: {sanitize(info.topic)}{by}")

    async def _groupkey(self, a: tuple[str, ...]) -> None:
        if a[1] == "-":
            await self.client.clear_group_key(a[0])
            self.say(f"#{sanitize(a[0])} has no key now")
        else:
            await self.client.set_group_key(a[0], a[1])
            self.say(f"key of #{sanitize(a[0])} set: others join with 'joingroup {sanitize(a[0])} KEY'")

    async def _groupmode(self, a: tuple[str, ...]) -> None:
        mode = await self.client.set_group_mode(a[0], a[1])
        if mode == "private":
            self.say(f"#{sanitize(a[0])} is private now: its members stay; others need an invitation or its key")
        else:
            self.say(f"#{sanitize(a[0])} is public now: anyone may join")

    async def _deletegroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.delete_group(a[0])
        self.say(f"deleted #{sanitize(g)}")
        self._forget_group(g)

    async def _leavegroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.leave_group(a[0])
        self.say(f"left #{sanitize(g)}")
        self._forget_group(g)

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
        if to.startswith("#"):
            self.groups.add(to[1:])
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


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.casefold() == b.casefold()


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
    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.patch_stdout import patch_stdout

    class VerbCompleter(Completer):
        """Verbs as the first word (`/verbs` after a slash); user and group names as the first
        argument (those seen in who, groups and messages); local paths after `sendfile TO `."""

        paths = PathCompleter(expanduser=True)

        def get_completions(self, document: Document, complete_event):  # type: ignore[no-untyped-def]
            text = document.text_before_cursor
            words = text.split(" ")
            if len(words) <= 1:
                for v in SLASH_VERBS if text.startswith("/") else VERBS:
                    if v.startswith(text.lower()):
                        yield Completion(v, start_position=-len(text))
            elif words[0].lower().removeprefix("/") == "sendfile" and len(words) >= 3:
                path_text = text.split(" ", 2)[2]
                yield from self.paths.get_completions(Document(path_text, len(path_text)), complete_event)
            else:
                for name in term.completions(words[0], words[-1], len(words) - 1):
                    yield Completion(name, start_position=-len(words[-1]))

    def typing_now() -> FormattedText:
        # "bob is typing…" at the right end of the prompt line: it never moves what the user
        # types, and needs no terminal size report (a bottom toolbar does).
        return FormattedText([("fg:ansibrightblack italic", term.toolbar())])

    session: PromptSession[str] = PromptSession(history=_history(), completer=VerbCompleter(),
                                                complete_while_typing=False, rprompt=typing_now,
                                                refresh_interval=1.0)
    term.say("type 'help' for the commands, Ctrl-D to leave")
    def prompt() -> str:
        # Evaluated at every redraw: after an automatic re-login (or its failure) the prompt
        # shows who is logged in now, not who was when it was first drawn; and the current
        # conversation, where plain lines go.
        where = f" [{sanitize(term.target)}]" if term.target else ""
        return f"{term.client.user or 'guest'}@{term.client.realm or 'realm'}{where}> "

    # Every line through prompt_toolkit, in one order: it lands above the prompt (redrawn with
    # what is being typed), and the renderer's styles become prompt_toolkit styles. Printed as
    # text, an escape sequence would show as "?[2m" (prompt_toolkit writes ESC as "?").
    def show(text: str) -> None:
        print_formatted_text(FormattedText(styled(text)))

    def dim(text: str) -> None:
        print_formatted_text(FormattedText(styled(text, "fg:ansibrightblack")))

    term.out = show
    term.out_dim = dim
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
                reconnect: bool, interactive: bool, tls: ssl.SSLContext | None = None,
                show_ids: bool = False) -> int:
    def out(text: str) -> None:
        # sys.stdout looked up per call: under patch_stdout it is the proxy that keeps output
        # above the prompt line.
        print(text, file=sys.stdout, flush=True)

    def tap(direction: str, line: bytes) -> None:
        if direction == "<":
            term.out(line.decode("utf-8", "replace"))  # the terminal's output, whichever it is now

    client = ChatClient(host, port, auto_reconnect=reconnect, wire_tap=tap if json_mode else None, ssl=tls)
    term = Terminal(client, download_dir=download_dir, json_mode=json_mode, out=out,
                    progress_stream=sys.stderr if interactive and sys.stderr.isatty() else None,
                    show_ids=show_ids or interactive,
                    color=interactive and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    client.on_event = term.on_event
    term.complete_names = interactive
    term.interactive = interactive
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
