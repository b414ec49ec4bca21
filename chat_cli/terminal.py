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
from collections import OrderedDict
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
    OtherEvent,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    SeenEvent,
    SessionEvent,
    TopicEvent,
    TypingEvent,
    apply_change,
)
from .render import (
    fmt_bans,
    fmt_conversations,
    fmt_error,
    fmt_file_offer,
    fmt_group_list,
    fmt_groups,
    fmt_member_event,
    fmt_members,
    fmt_message,
    fmt_presence,
    fmt_reactions,
    fmt_size,
    fmt_who,
    progress_bar,
    sanitize,
    snippet,
)

if TYPE_CHECKING:
    from prompt_toolkit.history import History

# Messages remembered for quotes and live changes.
SHOWN_MAX = 5000

# Transfers at least this big get a progress bar (interactive mode only).
PROGRESS_MIN_BYTES = 4 * 1024 * 1024

# The terminal's own usage lines where they differ from the wire's (see module docstring).
_LOCAL_USAGE = {
    "sendfile": ("sendfile TO PATH", "send a local file to a user, or to a group as #GROUP (PATH may contain "
                                     "spaces; ~ is expanded)"),
    "receivefile": ("receivefile [ID]", "download every waiting file (or file ID) into the download dir"),
    "quit": ("quit", "leave (also: exit, Ctrl-D)"),
}
ALIASES = {"exit": "quit"}


@dataclass(frozen=True, slots=True)
class RoomSpec:
    """A group (room) verb as the terminal parses it: `rest_at` is the index of the argument
    that takes the rest of the line (a kick reason, a topic), spaces kept."""

    verb: str
    usage: str
    summary: str
    min_args: int
    max_args: int
    rest_at: int | None = None


# The room verbs (protocol version 2). The terminal parses them itself, so it accepts them
# whatever the shared table of the version it was installed with knows.
ROOM_COMMANDS: dict[str, RoomSpec] = {
    s.verb: s
    for s in (
        RoomSpec("creategroup", "creategroup GROUP [private]",
                 "create a group (you own it); private: invite or key only", 1, 2),
        RoomSpec("joingroup", "joingroup GROUP [KEY]", "join a group (a private one: invited, or with its key)", 1, 2),
        RoomSpec("listgroups", "listgroups [PATTERN]", "public groups (and private ones you are in)", 0, 1),
        RoomSpec("members", "members GROUP", "members of a group: role, online, realm", 1, 1),
        RoomSpec("invite", "invite GROUP USER", "invite a user (owner/admin)", 2, 2),
        RoomSpec("kick", "kick GROUP USER [REASON]", "remove a member (owner/admin)", 2, 3, rest_at=2),
        RoomSpec("ban", "ban GROUP USER [REASON]", "remove and keep out a user (owner/admin)", 2, 3, rest_at=2),
        RoomSpec("unban", "unban GROUP USER", "lift a ban (owner/admin)", 2, 2),
        RoomSpec("role", "role GROUP USER admin|member", "make a member admin, or member again (owner)", 3, 3),
        RoomSpec("topic", "topic GROUP [TEXT]", "show the topic, or set it (owner/admin; - clears it)", 1, 2,
                 rest_at=1),
        RoomSpec("groupkey", "groupkey GROUP KEY|-", "set the key to join a group, - clears it (owner/admin)", 2, 2),
        RoomSpec("deletegroup", "deletegroup GROUP", "delete a group for everyone (owner)", 1, 1),
    )
}
# The conversation-state verbs (protocol version 2): the server keeps unread counts and read
# marks per user, the same on every device.
ROOM_COMMANDS.update({
    s.verb: s
    for s in (
        RoomSpec("conversations", "conversations", "your conversations, newest first, with unread counts", 0, 0),
        RoomSpec("read", "read USER|GROUP [ID]", "mark a conversation read (up to ID; default: all of it)", 1, 2),
        RoomSpec("away", "away [MESSAGE]", "show others you are away (with a message)", 0, 1, rest_at=0),
        RoomSpec("back", "back", "you are back (online)", 0, 0),
        RoomSpec("typing", "typing USER|GROUP", "tell a user (or a group) you are typing", 1, 1),
        RoomSpec("receipts", "receipts [on|off]", "let senders see when you read their messages, or not "
                 "(alone: which it is)", 0, 1),
    )
})
# The message verbs of protocol version 2 ("messages have a life"), parsed here too; history
# replaces the shared table's version-1 form (it gains before/after).
MESSAGE_COMMANDS: dict[str, RoomSpec] = {
    s.verb: s
    for s in (
        RoomSpec("history", "history USER|GROUP [N] [before ID|after ID]",
                 "the conversation (#GROUP forces a group): the latest N, or N before/after message ID", 1, 4),
        RoomSpec("edit", "edit ID TEXT", "change the text of your message ID (shown as #ID)", 2, 2, rest_at=1),
        RoomSpec("delete", "delete ID", "delete message ID for everyone (yours; group owner/admin: any)", 1, 1),
        RoomSpec("reply", "reply ID TEXT", "answer message ID in its conversation", 2, 2, rest_at=1),
        RoomSpec("react", "react ID EMOJI", "react to message ID (e.g. react 12 👍)", 2, 2),
        RoomSpec("unreact", "unreact ID EMOJI", "take your reaction back", 2, 2),
        RoomSpec("search", "search [#GROUP|@USER] QUERY", "find messages you can read, best first", 1, 2,
                 rest_at=1),
    )
}
ALL_VERBS: tuple[str, ...] = tuple(dict.fromkeys((*COMMANDS, *ROOM_COMMANDS, *MESSAGE_COMMANDS)))
VERBS: tuple[str, ...] = ALL_VERBS + tuple(ALIASES)


def _arg_kinds(usage: str) -> tuple[tuple[str, ...], ...]:
    """What each argument of a usage line names, for tab completion: ("user",), ("group",),
    both, or nothing."""
    out: list[tuple[str, ...]] = []
    for word in usage.split(" ")[1:]:
        alternatives = word.strip("[]").split("|")
        out.append(tuple(kind for kind, words in (("user", ("TO", "USER")), ("group", ("GROUP",)))
                         if any(w in alternatives for w in words)))
    return tuple(out)


# Per verb, what its arguments name (first, second, ...), from the usage lines.
ARG_KINDS: dict[str, tuple[tuple[str, ...], ...]] = {
    **{spec.verb: _arg_kinds(spec.usage) for spec in COMMANDS.values() if spec.verb not in ("register", "auth")},
    **{spec.verb: _arg_kinds(spec.usage) for spec in ROOM_COMMANDS.values()},
    **{spec.verb: _arg_kinds(spec.usage) for spec in MESSAGE_COMMANDS.values()},
}
ARG_KINDS["sendfile"] = (("user", "group"),)
FIRST_ARG: dict[str, tuple[str, ...]] = {verb: kinds[0] for verb, kinds in ARG_KINDS.items() if kinds and kinds[0]}


def parse_message_id(text: str, usage: str) -> int:
    """A message id as typed: `123` or `#123` (as messages show it)."""
    digits = text[1:] if text.startswith("#") else text
    if not digits.isdigit() or int(digits) < 1:
        raise InvalidArgument(f"{text!r} is not a message id (a number, shown as #123); usage: {usage}")
    return int(digits)


def parse_message_line(verb: str, rest: str) -> UserCommand:
    spec = MESSAGE_COMMANDS[verb]
    rest = rest.strip()
    if verb == "search":
        words = rest.split(None, 1)
        if words and words[0][:1] in ("#", "@") and len(words) == 2:
            args: tuple[str, ...] = (words[0], words[1].strip())
        elif words and words[0][:1] in ("#", "@"):
            raise InvalidArgument(f"usage: {spec.usage} (what to look for in {words[0]}?)")
        else:
            args = (rest,) if rest else ()
    elif spec.rest_at is not None:
        words = rest.split(None, spec.rest_at)
        args = tuple(words[: spec.rest_at]) + tuple(w for w in words[spec.rest_at:] if w.strip())
    else:
        args = tuple(rest.split())
    if not spec.min_args <= len(args) <= spec.max_args:
        raise InvalidArgument(f"usage: {spec.usage}")
    if verb in ("edit", "delete", "reply", "react", "unreact"):
        args = (str(parse_message_id(args[0], spec.usage)), *args[1:])
    if verb == "history":
        rest_args = list(args[1:])
        if rest_args and rest_args[0].isdigit():
            if int(rest_args[0]) < 1:
                raise InvalidArgument(f"usage: {spec.usage} (N is at least 1)")
            rest_args.pop(0)
        if rest_args:
            if len(rest_args) != 2 or rest_args[0].lower() not in ("before", "after"):
                raise InvalidArgument(f"usage: {spec.usage}")
            parse_message_id(rest_args[1], spec.usage)
    if verb in ("react", "unreact") and len(args[1]) > 16:
        raise InvalidArgument(f"usage: {spec.usage} (an emoji is at most 16 characters)")
    return UserCommand(verb, args)


def parse_room_line(verb: str, rest: str) -> UserCommand:
    spec = ROOM_COMMANDS[verb]
    rest = rest.strip()
    if spec.rest_at is not None:
        words = rest.split(None, spec.rest_at)
        args = tuple(words[: spec.rest_at]) + tuple(w for w in words[spec.rest_at:] if w.strip())
    else:
        args = tuple(rest.split())
    if not spec.min_args <= len(args) <= spec.max_args:
        raise InvalidArgument(f"usage: {spec.usage}")
    if verb == "creategroup" and len(args) == 2 and args[1].lower() != "private":
        raise InvalidArgument(f"usage: {spec.usage} (the only option is 'private')")
    if verb == "role" and args[2].lower() not in ("admin", "member"):
        raise InvalidArgument(f"usage: {spec.usage}")
    if verb == "receipts" and args and args[0].lower() not in ("on", "off"):
        raise InvalidArgument(f"usage: {spec.usage}")
    if verb == "read" and len(args) == 2 and not args[1].isdigit():
        raise InvalidArgument(f"usage: {spec.usage} (ID is a message id)")
    return UserCommand(verb, args)


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
    if verb in ROOM_COMMANDS:
        return parse_room_line(verb, rest)
    if verb in MESSAGE_COMMANDS:
        return parse_message_line(verb, rest)
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
    for verb in ALL_VERBS:
        spec = MESSAGE_COMMANDS.get(verb) or ROOM_COMMANDS.get(verb) or COMMANDS[verb]
        usage, summary = _LOCAL_USAGE.get(verb, (spec.usage, spec.summary))
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
                 out: Callable[[str], None], progress_stream: TextIO | None = None,
                 show_ids: bool = False, color: bool = False) -> None:
        self.client = client
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
            "listgroups": self._listgroups,
            "members": self._members,
            "invite": self._invite,
            "kick": self._kick,
            "ban": self._ban,
            "unban": self._unban,
            "role": self._role,
            "topic": self._topic,
            "groupkey": self._groupkey,
            "deletegroup": self._deletegroup,
            "conversations": self._conversations,
            "read": self._read,
            "away": self._away,
            "back": self._back,
            "typing": self._typing,
            "receipts": self._receipts,
            "edit": self._edit,
            "delete": self._delete,
            "reply": self._reply,
            "react": self._react,
            "unreact": self._unreact,
            "search": self._search,
        }

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
        me = self.client.user
        if isinstance(ev, MessageEvent):
            self._saw_message(ev.message)
            self.typing.pop(ev.message.sender.casefold(), None)
            self.out(self.fmt(ev.message))
        elif isinstance(ev, PresenceEvent):
            self.users.add(ev.user)
            if ev.status == "offline":
                self.typing.pop(ev.user.casefold(), None)
            self.status_line(fmt_presence(ev))
        elif isinstance(ev, TypingEvent):
            what = (f"{sanitize(ev.user)} is typing in #{sanitize(ev.peer)}…" if ev.group
                    else f"{sanitize(ev.user)} is typing…")
            if self.interactive:
                self.typing[ev.user.casefold()] = (what, time.monotonic() + ev.expires)
            else:
                self.status_line(f"· {what}")
        elif isinstance(ev, ReadEvent):
            self.status_line(f"· you read {sanitize(ev.peer)} up to message {ev.id} on another device")
        elif isinstance(ev, SeenEvent):
            self.status_line(f"· {sanitize(ev.by)} has seen your messages up to {ev.id} ✓✓")
        elif isinstance(ev, EditedEvent | DeletedEvent | ReactionEvent):
            self.out(self._change_line(ev))
        elif isinstance(ev, FileEvent):
            self.users.add(ev.file.sender)
            if ev.file.group:
                self.groups.add(ev.file.group)
            self.out(fmt_file_offer(ev.file))
        elif isinstance(ev, MemberEvent):
            self.users.update(u for u in (ev.user, ev.by) if u)
            if ev.removes and _same(ev.user, me):
                self._forget_group(ev.group)
            elif ev.action == "join" and _same(ev.user, me):
                self.groups.add(ev.group)
            self.out(fmt_member_event(ev, me))
        elif isinstance(ev, TopicEvent):
            who = "you" if _same(ev.by, me) else sanitize(ev.by or "someone")
            self.out(f"* [#{sanitize(ev.group)}] {who} set the topic: {sanitize(ev.topic)}" if ev.topic
                     else f"* [#{sanitize(ev.group)}] {who} cleared the topic")
        elif isinstance(ev, GroupDeletedEvent):
            self._forget_group(ev.group)
            self.out(f"* #{sanitize(ev.group)} was deleted by {sanitize(ev.by or 'its owner')}")
        elif isinstance(ev, InvitedEvent):
            self.groups.add(ev.group)
            self.out(f"* {sanitize(ev.by or 'someone')} invited you to #{sanitize(ev.group)}: "
                     f"type 'joingroup {sanitize(ev.group)}' to join")
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
        if isinstance(ev, EditedEvent):
            who = "you" if _same(ev.sender, me) else sanitize(ev.sender or "someone")
            if old is not None:
                return "* edited: " + self.fmt(apply_change(old, ev))
            return f"* {who} edited {ref}: {sanitize(ev.text)} (edited)"
        if isinstance(ev, DeletedEvent):
            by = "you" if _same(ev.by, me) else sanitize(ev.by or "someone")
            if old is not None:
                new = self.remember(apply_change(old, ev))
                return f"* {by} deleted: {fmt_message(new, me, ids=True, color=self.color)}"
            return f"* {by} deleted message {ref}"
        who = "you" if _same(ev.user, me) else sanitize(ev.user)
        verb = "reacted" if ev.on else "took back"
        what = f"{sanitize(ev.emoji)} to" if ev.on else f"{sanitize(ev.emoji)} on"
        if old is not None:
            new = self.remember(apply_change(old, ev))
            author = "you" if _same(new.sender, me) else sanitize(new.sender)
            summary = fmt_reactions(new, me) or "no reactions"
            return f"* {who} {verb} {what} {ref} ({author}: {snippet(new.text, 40)}): {summary}"
        return f"* {who} {verb} {what} message {ref}"

    def _forget_group(self, group: str) -> None:
        self.groups = {n for n in self.groups if not _same(n, group)}

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
        both (`#GROUP` for sendfile's target)."""
        verb = ALIASES.get(verb.lower(), verb.lower())
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
        """Runs one typed line; False if it failed (the error was printed)."""
        verb = line.strip().split(" ", 1)[0].lower()
        try:
            cmd = parse_user_line(line)
            if cmd is None:
                return True
            handler = self._handlers.get(cmd.verb)
            if handler is None:
                # A verb of a newer realm this terminal has no human output for: its raw answer.
                r = await self.client.command(line.strip())
                self.say(sanitize(str(r)))
                return True
            await handler(cmd.args)
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
        before = after = None
        if rest:
            ref = parse_message_id(rest[1], "history")
            before, after = (ref, None) if rest[0].lower() == "before" else (None, ref)
        page = await self.client.history(a[0], n, before=before, after=after)
        self._messages(page, f"no messages with {sanitize(a[0])}" if before is None and after is None
                       else "no more messages")
        if page.more and page:
            more = f"history {sanitize(a[0])}{f' {n}' if n else ''}"
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
        topic = await self.client.topic(a[0])
        self.say(f"topic of #{sanitize(a[0])}: {sanitize(topic)}" if topic else f"#{sanitize(a[0])} has no topic")

    async def _groupkey(self, a: tuple[str, ...]) -> None:
        if a[1] == "-":
            await self.client.clear_group_key(a[0])
            self.say(f"#{sanitize(a[0])} has no key now")
        else:
            await self.client.set_group_key(a[0], a[1])
            self.say(f"key of #{sanitize(a[0])} set: others join with 'joingroup {sanitize(a[0])} KEY'")

    async def _deletegroup(self, a: tuple[str, ...]) -> None:
        g = await self.client.delete_group(a[0])
        self._forget_group(g)
        self.say(f"deleted #{sanitize(g)}")

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
    from prompt_toolkit import PromptSession, print_formatted_text
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document
    from prompt_toolkit.formatted_text import FormattedText
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
            elif words[0].lower() == "sendfile" and len(words) >= 3:
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
        # shows who is logged in now, not who was when it was first drawn.
        return f"{term.client.user or 'guest'}@{term.client.realm or 'realm'}> "

    def dim(text: str) -> None:
        # Through prompt_toolkit, so the line lands above the prompt, styled (patch_stdout
        # would show an escape sequence as text).
        print_formatted_text(FormattedText([("fg:ansibrightblack", text)]))

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
            out(line.decode("utf-8", "replace"))

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
