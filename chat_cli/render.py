"""Human output of the terminal client, pure (no I/O): message lines, tables, sizes, errors and
the sanitizing of everything a server or another user chose.

Text from other users reaches the terminal only through `sanitize` (realmchat.display, shared
with the GUI): a raw ESC, CSI or OSC sequence could recolour or clear the screen, move the
cursor, set the window title or (on some terminals) write the clipboard; a bidi override could
make a message read differently than it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from realmchat.display import sanitize
from realmchat.errors import ChatError

from .models import (
    Ban,
    ConnectionEvent,
    ConnState,
    ConversationInfo,
    DeletedEvent,
    EditedEvent,
    Event,
    FileEvent,
    FileInfo,
    GroupDeletedEvent,
    GroupInfo,
    GroupKeyEvent,
    GroupListing,
    GroupModeEvent,
    InvitedEvent,
    Member,
    MemberEvent,
    Message,
    MessageEvent,
    OtherEvent,
    Presence,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    SeenEvent,
    SessionEvent,
    TopicEvent,
    TraceHop,
    TypingEvent,
    parse_ts,
)

__all__ = [
    "fmt_bans",
    "fmt_error",
    "fmt_fields",
    "fmt_file_offer",
    "fmt_group_list",
    "fmt_groups",
    "fmt_member_event",
    "fmt_members",
    "fmt_message",
    "fmt_notice",
    "fmt_quote",
    "fmt_reactions",
    "fmt_size",
    "fmt_table",
    "fmt_time",
    "fmt_who",
    "progress_bar",
    "sanitize",
    "snippet",
    "styled",
]

ROLE_ORDER = {"owner": 0, "admin": 1, "member": 2}


def fmt_time(ts: str, now: datetime | None = None) -> str:
    """Local "HH:MM" for today, "YYYY-MM-DD HH:MM" for another day; the raw (sanitized) text if
    unparsable."""
    t = parse_ts(ts)
    if t is None:
        return sanitize(ts)
    local = t.astimezone()
    now = (now or datetime.now().astimezone()).astimezone(local.tzinfo)
    if local.date() == now.date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def _is(a: str | None, b: str | None) -> bool:
    # Names are unique ignoring case (realmchat.names), so compare them that way.
    return a is not None and b is not None and a.lower() == b.lower()


DIM = "\x1b[2m"
BOLD_YELLOW = "\x1b[1;33m"
RESET = "\x1b[0m"
QUOTE_MAX = 60


def _dim(text: str, color: bool) -> str:
    return f"{DIM}{text}{RESET}" if color else text


# The renderer's own styles as prompt_toolkit style strings. A prompt_toolkit prompt shows a raw
# escape sequence as text ("?[2m"), so an interactive terminal prints `styled(text)` instead.
_STYLES = {DIM: "fg:ansibrightblack", BOLD_YELLOW: "bold fg:ansiyellow", RESET: ""}
_OWN_SGR = re.compile("(" + "|".join(re.escape(code) for code in _STYLES) + ")")


def styled(text: str, base: str = "") -> list[tuple[str, str]]:
    """`text` (a line the renderer made, `color` on) as (style, text) fragments for prompt_toolkit.

    Only the renderer's own three sequences become styles (with terminal semantics: RESET ends
    every style); everything else is sanitized again, so text that did not pass through
    `sanitize` (or a sequence the renderer did not make) still cannot act on the terminal.
    `base` is the style of the whole line (a dimmed status line)."""
    fragments: list[tuple[str, str]] = []
    style = base
    for piece in _OWN_SGR.split(text):
        if piece in _STYLES:
            style = f"{base} {_STYLES[piece]}".strip() if _STYLES[piece] else base
        elif piece:
            fragments.append((style, "\n".join(sanitize(line) for line in piece.split("\n"))))
    return fragments


def snippet(text: str, limit: int = QUOTE_MAX) -> str:
    """One sanitized line of at most `limit` characters (… when cut)."""
    one = " ".join(sanitize(text).split())
    return one if len(one) <= limit else one[: limit - 1].rstrip() + "…"


def fmt_reactions(msg: Message, me: str | None = None) -> str:
    """`👍 2 (alice, you) · 🎉 1 (bob)`; empty when nobody reacted."""
    parts = []
    for emoji, users in msg.reactions.items():
        names = ", ".join("you" if _is(u, me) else sanitize(u) for u in users)
        parts.append(f"{sanitize(emoji)} {len(users)} ({names})")
    return " · ".join(parts)


def fmt_quote(original: Message | None, reply_to: int, me: str | None) -> str:
    """The one-line quote above a reply: `↪ bob: the original text…` (`↪ #123` if the original
    is not known here, `↪ message deleted` for a tombstone)."""
    if original is None:
        return f"↪ reply to #{reply_to}"
    who = "you" if _is(original.sender, me) else sanitize(original.sender)
    if original.deleted:
        return f"↪ {who}: message deleted"
    return f"↪ {who}: {snippet(original.text)}"


def fmt_message(msg: Message, me: str | None, now: datetime | None = None, *, ids: bool = False,
                color: bool = False, original: Message | None = None, quote: bool = True) -> str:
    """`[alice → you 10:42] halo` for a private message, `[#progjar] bob: hi` for a group one.

    Version 2 additions, each only when it applies: a reply gets a quote line above it
    (`original` is the message it answers, if known); an edited message ends in "(edited)"; a
    deleted one reads "message deleted"; reactions follow on a line of their own; a message
    naming `me` as @me is highlighted (bold with `color`, else marked "← mentions you"). With
    `ids` the message id follows, dim, as `#123` (what edit, delete, reply and react take).
    `quote` False leaves the reply's quote out (search results)."""
    text = "message deleted" if msg.deleted else sanitize(msg.text)
    if msg.deleted:
        text = _dim(text, color) if color else "(message deleted)"
    elif msg.edited:
        text += " " + _dim("(edited)", color)
    sender = "you" if _is(msg.sender, me) else sanitize(msg.sender)
    if msg.group is not None:
        head = f"[#{sanitize(msg.group)}] {sender}:"
    else:
        to = "you" if _is(msg.to, me) else sanitize(msg.to or "?")
        head = f"[{sender} → {to} {fmt_time(msg.ts, now)}]"
    mentioned = not _is(msg.sender, me) and msg.names(me)
    line = f"{head} {text}"
    if mentioned:
        line = f"{BOLD_YELLOW}{line}{RESET}" if color else f"{line}  ← mentions you"
    if ids and msg.id:
        line += "  " + _dim(f"#{msg.id}", color)
    lines = [line]
    if msg.reply_to and quote:
        lines.insert(0, "  " + _dim(fmt_quote(original, msg.reply_to, me), color))
    if msg.reactions and not msg.deleted:
        lines.append("  " + fmt_reactions(msg, me))
    return "\n".join(lines)


def fmt_hop(h: TraceHop) -> str:
    """One hop of `trace`: `10:42:01.131  written  bob  on beta  session 7  (why)`."""
    t = h.time
    parts = [t.astimezone().strftime("%H:%M:%S.%f")[:-3] if t else sanitize(h.at), h.step]
    if h.users:
        more = f" and {len(h.users) - 5} more" if len(h.users) > 5 else ""
        parts.append(", ".join(sanitize(u) for u in h.users[:5]) + more)
    if h.realm:
        parts.append(f"on {sanitize(h.realm)}")
    if h.sessions:
        parts.append("session " + ", ".join(str(x) for x in h.sessions))
    if h.why:
        parts.append(f"({sanitize(h.why)})")
    return "  ".join(parts)


def fmt_size(n: int) -> str:
    """1536 -> '1.5 KiB'; bytes below 1 KiB are exact."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def fmt_file_offer(f: FileInfo) -> str:
    """The live notice of a file sent to the user (or to one of their groups)."""
    if f.group:
        return (f"[#{sanitize(f.group)}] {sanitize(f.sender)} shared a file: {sanitize(f.name)} ({fmt_size(f.size)}), "
                f"id {f.id}: type 'receivefile {f.id}' to download")
    return (f"[file from {sanitize(f.sender)}] {sanitize(f.name)} ({fmt_size(f.size)}), id {f.id}: "
            f"type 'receivefile {f.id}' to download")


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left-aligned table with a header and a rule; cells are sanitized."""
    cells = [[sanitize(str(c)) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fmt_who(online: Sequence[Presence]) -> str:
    if not online:
        return "nobody is online"
    if not any(p.away or p.message for p in online):
        return fmt_table(("USER", "REALM"), [(p.user, p.realm) for p in online])
    return fmt_table(("USER", "REALM", "STATUS"),
                     [(p.user, p.realm, p.status + (f": {p.message}" if p.message else "")) for p in online])


def fmt_conversations(convs: Sequence[ConversationInfo], me: str | None, now: datetime | None = None) -> str:
    """The user's conversations, newest first: unread (and @mention) counts and the last line."""
    if not convs:
        return "no conversations yet"
    rows = []
    for c in convs:
        unread = str(c.unread) if c.unread else ""
        if c.mentions:
            unread += f" (@{c.mentions})"
        last = ""
        when = ""
        if c.last is not None:
            who = "you" if _is(c.last.sender, me) else c.last.sender
            text = " ".join(c.last.text.split())
            last = f"{who}: {text[:47] + '…' if len(text) > 48 else text}"
            when = fmt_time(c.last.ts, now)
        rows.append((("#" if c.is_group else "") + c.peer, unread, when, last))
    return fmt_table(("CONVERSATION", "UNREAD", "LAST", "MESSAGE"), rows)


def fmt_presence(ev: PresenceEvent) -> str:
    """`· bob is away: lunch`: the line the terminal prints (dimmed on a TTY) as presence changes."""
    where = f" on realm {sanitize(ev.realm)}" if ev.realm and ev.status != "offline" else ""
    note = f": {sanitize(ev.message)}" if ev.message else ""
    return f"· {sanitize(ev.user)} is {sanitize(ev.status)}{where}{note}"


def fmt_groups(groups: Sequence[GroupInfo]) -> str:
    if not groups:
        return "you are in no groups"
    return fmt_table(("GROUP", "ROLE", "MEMBERS"), [("#" + g.name, g.role, g.members) for g in groups])


def fmt_group_list(groups: Sequence[GroupListing]) -> str:
    if not groups:
        return "no groups found"
    return fmt_table(("GROUP", "MODE", "MEMBERS", "TOPIC"),
                     [("#" + g.name, g.mode, g.members, g.topic) for g in groups])


def fmt_members(members: Sequence[Member], me: str | None = None) -> str:
    """Owner first, then admins, then members; online ones marked with a dot and their realm."""
    if not members:
        return "no members"
    rows = sorted(members, key=lambda m: (ROLE_ORDER.get(m.role, 3), not m.online, m.user.casefold()))
    return fmt_table(("", "USER", "ROLE", "REALM"),
                     [("●" if m.online else "○", m.user + (" (you)" if _is(m.user, me) else ""), m.role,
                       m.realm if m.online else "offline") for m in rows])


def fmt_bans(bans: Sequence[Ban], now: datetime | None = None) -> str:
    """The bans in force as the server lists them (newest first): who, by whom, when, why."""
    if not bans:
        return "nobody is banned"
    return fmt_table(("BANNED", "BY", "WHEN", "REASON"), [(b.user, b.by, fmt_time(b.at, now), b.reason) for b in bans])


def fmt_member_event(ev: MemberEvent, me: str | None) -> str:
    """`* [#g] bob was kicked by alice: spam` (`you` for the viewer)."""
    who = "you" if _is(ev.user, me) else sanitize(ev.user)
    by = "you" if _is(ev.by, me) else sanitize(ev.by)
    was = "were" if who == "you" else "was"
    g = f"[#{sanitize(ev.group)}]"
    reason = f": {sanitize(ev.reason)}" if ev.reason else ""
    text = {
        "join": f"{who} joined",
        "leave": f"{who} left",
        "kick": f"{who} {was} kicked" + (f" by {by}" if ev.by else "") + reason,
        "ban": f"{who} {was} banned" + (f" by {by}" if ev.by else "") + reason,
        "unban": f"{who} {was} unbanned" + (f" by {by}" if ev.by else ""),
        "invite": f"{who} {was} invited" + (f" by {by}" if ev.by else ""),
        "role": f"{who} {'are' if who == 'you' else 'is'} now {sanitize(ev.role or 'member')}"
                + (f" (by {by})" if ev.by else ""),
    }.get(ev.action, f"{who}: {sanitize(ev.action)}" + (f" by {by}" if ev.by else ""))
    return f"* {g} {text}"


def _words(code: str) -> str:
    """A wire code as words: `idle_timeout` -> `idle timeout`."""
    return sanitize(code.replace("_", " ")).strip()


def fmt_fields(raw: Mapping[str, Any], skip: tuple[str, ...] = ("event", "message")) -> str:
    """The scalar fields of an answer or event this client does not know, as `reason: x, n: 3`
    (never a dict repr); lists and objects are counted."""
    parts = []
    for key, value in raw.items():
        if key in skip or value == "" or value is None:
            continue
        if isinstance(value, list | dict):
            value = f"{len(value)} item{'' if len(value) == 1 else 's'}"
        parts.append(f"{snippet(str(key), 32)}: {snippet(str(value), 80)}")
    return ", ".join(parts[:8])


def fmt_realm_notice(ev: OtherEvent, realm: str = "", reconnect: bool = True) -> str:
    """A notice of the realm about this connection (`shutdown`, `closing`), or any event kind
    this client does not know, as one sentence."""
    message = ev.raw.get("message")
    message = snippet(message, 300) if isinstance(message, str) and message.strip() else ""
    name = f"realm {sanitize(realm)}" if realm else "the realm"
    if ev.kind == "shutdown":
        then = " (reconnecting when it is back)" if reconnect else ""
        return f"* the realm is going away: {message or f'{name} is shutting down'}{then}"
    if ev.kind == "closing":
        reason = ev.raw.get("reason")
        why = message or (_words(reason) if isinstance(reason, str) and reason else "no reason given")
        return f"* {name} is closing this connection: {why}"
    fields = fmt_fields(ev.raw)
    text = f"* {name} sent a notice this client does not know ({snippet(ev.kind, 40) or 'no kind'})"
    if message:
        text += f": {message}"
    return text + (f" [{fields}]" if fields else "")


def fmt_notice(ev: Event, me: str | None, *, realm: str = "", reconnect: bool = True,
               color: bool = False) -> str:
    """Any event as the line the terminal shows when it has nothing better (a change to a
    message it never showed, a room event, a notice): always a sentence, never a repr."""
    if isinstance(ev, MessageEvent):
        return fmt_message(ev.message, me, color=color)
    if isinstance(ev, PresenceEvent):
        return fmt_presence(ev)
    if isinstance(ev, FileEvent):
        return fmt_file_offer(ev.file)
    if isinstance(ev, MemberEvent):
        return fmt_member_event(ev, me)
    if isinstance(ev, TopicEvent):
        who = "you" if _is(ev.by, me) else sanitize(ev.by or "someone")
        return (f"* [#{sanitize(ev.group)}] {who} set the topic: {sanitize(ev.topic)}" if ev.topic
                else f"* [#{sanitize(ev.group)}] {who} cleared the topic")
    if isinstance(ev, GroupModeEvent):
        who = "you" if _is(ev.by, me) else sanitize(ev.by or "someone")
        return (f"* [#{sanitize(ev.group)}] {who} made the group private: its members stay, others need an invitation"
                if ev.private else f"* [#{sanitize(ev.group)}] {who} made the group public: anyone may join")
    if isinstance(ev, GroupKeyEvent):
        who = "you" if _is(ev.by, me) else sanitize(ev.by or "someone")
        if not ev.has_key:
            return f"* [#{sanitize(ev.group)}] {who} removed the group's key"
        key = f": {sanitize(ev.key)}" if ev.key else ""
        return f"* [#{sanitize(ev.group)}] {who} set a key to join the group{key}"
    if isinstance(ev, GroupDeletedEvent):
        return f"* #{sanitize(ev.group)} was deleted by {sanitize(ev.by or 'its owner')}"
    if isinstance(ev, InvitedEvent):
        return (f"* {sanitize(ev.by or 'someone')} invited you to #{sanitize(ev.group)}: "
                f"type 'joingroup {sanitize(ev.group)}' to join")
    if isinstance(ev, ReadEvent):
        return f"· you read {sanitize(ev.peer)} up to message {ev.id} on another device"
    if isinstance(ev, SeenEvent):
        return f"· {sanitize(ev.by)} has seen your messages up to {ev.id} ✓✓"
    if isinstance(ev, TypingEvent):
        where = f" in #{sanitize(ev.peer)}" if ev.group else ""
        return f"· {sanitize(ev.user)} is typing{where}…"
    if isinstance(ev, EditedEvent):
        who = "you" if _is(ev.sender, me) else sanitize(ev.sender or "someone")
        return f"* {who} edited #{ev.id}: {sanitize(ev.text)} (edited)"
    if isinstance(ev, DeletedEvent):
        by = "you" if _is(ev.by, me) else sanitize(ev.by or "someone")
        return f"* {by} deleted message #{ev.id}"
    if isinstance(ev, ReactionEvent):
        who = "you" if _is(ev.user, me) else sanitize(ev.user)
        if ev.on:
            return f"* {who} reacted {sanitize(ev.emoji)} to message #{ev.id}"
        return f"* {who} took back {sanitize(ev.emoji)} on message #{ev.id}"
    if isinstance(ev, SessionEvent):
        state = _words(ev.state) or "changed"
        text = f"* your session {state}"
        if ev.message:
            text += f": {snippet(ev.message, 300)}"
        elif ev.state == "expired":
            text += ": log in again" + (" (trying by itself)" if reconnect else "")
        return text
    if isinstance(ev, ConnectionEvent):
        where = sanitize(ev.realm) or "the realm"
        return {
            ConnState.CONNECTED: f"* connected to realm {where} at {sanitize(ev.detail)}",
            ConnState.DISCONNECTED: f"* disconnected: {sanitize(ev.detail)}",
            ConnState.RECONNECTING: "* reconnecting...",
            ConnState.RECONNECTED: f"* reconnected to realm {where}: {sanitize(ev.detail)}",
            ConnState.CLOSED: "* connection closed",
        }[ev.state]
    return fmt_realm_notice(ev, realm, reconnect)


def fmt_error(e: ChatError) -> str:
    """`error NOT_FOUND: no user 'zed'` — one line, whatever the message contains."""
    message = sanitize(" ".join(e.message.splitlines()))
    return f"error {e.code.value}: {message}"


def progress_bar(done: int, total: int, width: int = 30, rate: float | None = None) -> str:
    """`[##########..........]  33% 6.7 MiB/20.0 MiB 12.0 MiB/s`."""
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(frac * width)
    text = f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}% {fmt_size(done)}/{fmt_size(total)}"
    if rate:
        text += f" {fmt_size(int(rate))}/s"
    return text
