"""The realm text protocol (port 8000), sans I/O: the command specs, a pure line parser and the
encoders of response and event lines. realm_server, chat_cli and the tests all use this module.

A line is a case-insensitive verb and space-separated arguments; for `sendprivate` and
`sendgroup` the message is the rest of the line after the target. Every command gets one
response line: {"status": "OK", ...} or {"status": "ERROR", "code": ..., "message": ...}.
Server-initiated lines are events: {"event": KIND, ...}.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson

from .codes import Code
from .errors import ChatError, InvalidArgument, Unimplemented

PROTOCOL_VERSION = 2  # version 2: rooms, messages with a life, conversation state (docs/PROTOCOL.md)
DEFAULT_MAX_LINE = 64 * 1024
# Largest SIZE the parser accepts at all; the realm's configured file limit is usually lower.
MAX_DECLARED_SIZE = 1 << 50
HISTORY_MAX = 1000
MESSAGE_ID_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class CommandSpec:
    verb: str
    usage: str
    summary: str
    min_args: int = 0
    max_args: int = 0
    rest: bool = False  # the last argument (the max_args-th) is the rest of the line, spaces kept
    needs_auth: bool = True


def _spec(verb: str, args: str, summary: str, **kw: Any) -> CommandSpec:
    return CommandSpec(verb=verb, usage=f"{verb} {args}".strip(), summary=summary, **kw)


COMMANDS: dict[str, CommandSpec] = {
    s.verb: s
    for s in (
        _spec("register", "USER PASS", "create an account", min_args=2, max_args=2, needs_auth=False),
        _spec("auth", "USER PASS", "log in", min_args=2, max_args=2, needs_auth=False),
        _spec("sendprivate", "TO MESSAGE", "send a private message", min_args=2, max_args=2, rest=True),
        _spec("inbox", "", "private messages not yet delivered to you"),
        _spec("creategroup", "GROUP [private]", "create a group, public or private (you become its owner)",
              min_args=1, max_args=2),
        _spec("joingroup", "GROUP [KEY]", "join a group (KEY: when it has a key)", min_args=1, max_args=2),
        _spec("leavegroup", "GROUP", "leave a group", min_args=1, max_args=1),
        _spec("sendgroup", "GROUP MESSAGE", "send a message to a group", min_args=2, max_args=2, rest=True),
        _spec("inboxgroup", "GROUP", "group messages not yet delivered to you", min_args=1, max_args=1),
        _spec("sendfile", "TO NAME SIZE", "send SIZE bytes that follow this line as file NAME (TO: a user or #GROUP)",
              min_args=3, max_args=3),
        _spec("receivefile", "[ID]", "list files waiting for you, or download file ID", max_args=1),
        _spec("invite", "GROUP USER", "invite a user to a group (owner/admin)", min_args=2, max_args=2),
        _spec("kick", "GROUP USER [REASON]", "remove a member (owner/admin)", min_args=2, max_args=3, rest=True),
        _spec("ban", "GROUP USER [REASON]", "remove a user and keep them out (owner/admin)",
              min_args=2, max_args=3, rest=True),
        _spec("unban", "GROUP USER", "lift a ban (owner/admin)", min_args=2, max_args=2),
        _spec("role", "GROUP USER admin|member", "set a member's role (owner)", min_args=3, max_args=3),
        _spec("members", "GROUP", "a group's members, their roles and presence", min_args=1, max_args=1),
        _spec("topic", "GROUP [TEXT]", "show the topic, or set it (owner/admin; - clears it)",
              min_args=1, max_args=2, rest=True),
        _spec("groupkey", "GROUP KEY|-", "set the key needed to join (owner/admin; - clears it)",
              min_args=2, max_args=2),
        _spec("groupmode", "GROUP public|private", "make a group public or private (owner/admin; its members stay)",
              min_args=2, max_args=2),
        _spec("deletegroup", "GROUP", "delete a group with its messages and files (owner)", min_args=1, max_args=1),
        _spec("listgroups", "[PATTERN]", "public groups and your private ones (* and ? as wildcards)",
              max_args=1),
        _spec("who", "", "online users and their realm"),
        _spec("groups", "", "your groups"),
        _spec("history", "USER|GROUP [N] [before REF|after REF|around REF|between REF REF]",
              "conversation, oldest first: the last N, or the N just before/after/around REF, or between two "
              "(REF: a message ID or a time, 2026-11-24T07:42:01Z; #GROUP forces a group)",
              min_args=1, max_args=5),
        _spec("conversations", "", "your conversations, newest first, with unread and mention counts"),
        _spec("read", "PEER ID", "mark your conversation with PEER (a user or group) read up to message ID",
              min_args=2, max_args=2),
        _spec("away", "[MESSAGE]", "show yourself as away, with an optional message", max_args=1, rest=True),
        _spec("back", "", "show yourself as online again"),
        _spec("typing", "PEER", "tell PEER (a user or group) that you are typing (lasts about 5 s)",
              min_args=1, max_args=1),
        _spec("receipts", "[on|off]", "whether senders see when you read their private messages (no word: "
              "which it is now)", max_args=1),
        _spec("edit", "ID TEXT", "change the text of your message ID", min_args=2, max_args=2, rest=True),
        _spec("delete", "ID", "delete message ID (yours; in a group, owner/admin: anyone's)", min_args=1, max_args=1),
        _spec("reply", "ID TEXT", "answer message ID in its conversation", min_args=2, max_args=2, rest=True),
        _spec("react", "ID EMOJI", "react to message ID", min_args=2, max_args=2),
        _spec("unreact", "ID EMOJI", "take your reaction back", min_args=2, max_args=2),
        _spec("trace", "ID", "where message ID went, hop by hop (one you sent or received)", min_args=1, max_args=1),
        _spec("search", "[#GROUP|@USER] QUERY", "find messages you may read, best first (one conversation with "
              "#GROUP or @USER)", min_args=1, max_args=1, rest=True),
        _spec("help", "", "list commands", needs_auth=False),
        _spec("ping", "", "liveness check", needs_auth=False),
        _spec("logout", "", "end your session", needs_auth=False),
        _spec("quit", "", "close the connection", needs_auth=False),
    )
}

SENDFILE_USAGE = (
    "usage: sendfile TO NAME SIZE, followed by exactly SIZE raw bytes; the realm never opens a path "
    "(chat_cli's 'sendfile TO PATH' reads the local file and sends it in this form)"
)


@dataclass(frozen=True, slots=True)
class Command:
    verb: str
    args: tuple[str, ...]
    # For sendfile: the number of raw bytes that follow the line and belong to this command.
    payload_size: int | None = None

    @property
    def spec(self) -> CommandSpec:
        return COMMANDS[self.verb]


def _parse_count(text: str, what: str, maximum: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise InvalidArgument(f"{what} must be a whole number, got {text[:40]!r}")
    value = int(text)
    if value > maximum:
        raise InvalidArgument(f"{what} must be at most {maximum}")
    return value


def parse_line(line: str) -> Command | None:
    """Parses one line (without its newline). Returns None for a blank line.

    Raises ChatError: UNIMPLEMENTED for an unknown verb, INVALID_ARGUMENT for wrong arity or
    malformed numbers. Does no I/O and knows nothing of sessions.
    """
    if line.endswith("\r"):
        line = line[:-1]
    stripped = line.lstrip(" \t")
    if not stripped.strip():
        return None
    verb_raw, _, remainder = stripped.partition(" ")
    verb = verb_raw.lower()
    spec = COMMANDS.get(verb)
    if spec is None:
        raise Unimplemented(f"unknown command {verb_raw[:40]!r}; type 'help' for the list")
    remainder = remainder.lstrip(" ")
    if verb == "sendfile":
        return _parse_sendfile(remainder)
    if spec.rest:
        args = _parse_rest(spec, remainder)
        if verb in ("edit", "reply"):
            _parse_count(args[0], "message ID", MESSAGE_ID_MAX)
        elif verb == "search":
            return Command(verb, _parse_search(args[0]))
        return Command(verb, args)
    args = tuple(remainder.split())
    if verb in ("register", "auth") and len(args) > spec.max_args:
        raise InvalidArgument(f"passwords cannot contain spaces; usage: {spec.usage}")
    if not spec.min_args <= len(args) <= spec.max_args:
        raise InvalidArgument(f"usage: {spec.usage}")
    if verb == "receivefile" and args:
        _parse_count(args[0], "file ID", 1 << 62)
    elif verb == "history":
        args = _parse_history(spec, args)
    elif verb in ("delete", "react", "unreact", "trace"):
        _parse_count(args[0], "message ID", MESSAGE_ID_MAX)
    elif verb == "read":
        _parse_count(args[1], "ID", 1 << 62)
    elif verb == "receipts" and args:
        if args[0].lower() not in ("on", "off"):
            raise InvalidArgument(f"usage: {spec.usage}")
        args = (args[0].lower(),)
    elif verb == "creategroup" and len(args) == 2:
        if args[1].lower() not in ("private", "public"):
            raise InvalidArgument(f"usage: {spec.usage} (the second word may only be 'private')")
        args = (args[0], args[1].lower())
    elif verb == "role":
        if args[2].lower() not in ("admin", "member"):
            raise InvalidArgument(f"usage: {spec.usage} (the owner stays the creator)")
        args = (args[0], args[1], args[2].lower())
    return Command(verb, args)


HISTORY_FORMS = {"before": 1, "after": 1, "around": 1, "between": 2}  # form -> its references
_TIME_WORD = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|\+00:00)")


def is_time_ref(word: str) -> bool:
    """A history reference that is a time (main checks it is a real one), not a message ID."""
    return bool(_TIME_WORD.fullmatch(word))


def _parse_ref(word: str) -> None:
    if is_time_ref(word):
        return
    if not word.isascii() or not word.isdigit():
        raise InvalidArgument(f"a reference is a message ID or a time (ISO-8601 UTC, e.g. 2026-11-24T07:42:01Z), "
                              f"not {word[:40]!r}")
    if _parse_count(word, "message ID", MESSAGE_ID_MAX) == 0:
        raise InvalidArgument("a message ID is at least 1")


def _parse_history(spec: CommandSpec, args: tuple[str, ...]) -> tuple[str, ...]:
    """history PEER [N] [before REF|after REF|around REF|between REF REF]: checked, the words as
    given (the form lowercased); history_query reads them."""
    rest = list(args[1:])
    n = ""
    if rest and rest[0].lower() not in HISTORY_FORMS:
        n = rest.pop(0)
        if _parse_count(n, "N", HISTORY_MAX) == 0:
            raise InvalidArgument("N must be at least 1")
    form: list[str] = []
    if rest:
        where = rest[0].lower()
        if where not in HISTORY_FORMS or len(rest) != 1 + HISTORY_FORMS[where]:
            raise InvalidArgument(f"usage: {spec.usage}")
        for ref in rest[1:]:
            _parse_ref(ref)
        form = [where, *rest[1:]]
    return (args[0], *((n,) if n else ()), *form)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A parsed history command: the peer, N (0: the default), the form ("" for the newest N,
    else one of HISTORY_FORMS) and its references (each a message ID or a time, as written)."""

    peer: str
    n: int = 0
    form: str = ""
    refs: tuple[str, ...] = ()


def history_query(args: tuple[str, ...]) -> HistoryQuery:
    rest = list(args[1:])
    n = int(rest.pop(0)) if rest and rest[0] not in HISTORY_FORMS else 0
    return HistoryQuery(args[0], n, rest[0] if rest else "", tuple(rest[1:]))


def _parse_search(text: str) -> tuple[str, str]:
    """search [#GROUP|@USER] QUERY: (scope or "", QUERY)."""
    first, _, rest = text.strip(" ").partition(" ")
    if first[:1] in ("#", "@") and len(first) > 1:
        if not rest.strip():
            raise InvalidArgument(f"usage: {COMMANDS['search'].usage} (say what to look for)")
        return first, rest.strip(" ")
    return "", text.strip(" ")


def _parse_rest(spec: CommandSpec, remainder: str) -> tuple[str, ...]:
    """Words up to the last argument, then the rest of the line with its spaces kept (after the
    single space that ends the last word); an all-blank rest counts as absent."""
    words: list[str] = []
    rest = remainder
    while len(words) < spec.max_args - 1 and rest.strip():  # a word of blanks alone is no word
        word, sep, rest = rest.lstrip(" ").partition(" ")
        words.append(word)
        if not sep:
            rest = ""
    args = (*words, rest) if rest.strip() else tuple(words)
    if len(args) < spec.min_args:
        text = " (the message must not be empty)" if len(words) == spec.max_args - 1 else ""
        raise InvalidArgument(f"usage: {spec.usage}{text}")
    return args


def _parse_sendfile(remainder: str) -> Command:
    # sendfile TO NAME SIZE: TO is the first word, SIZE the last, NAME what lies between (a file
    # name may contain spaces).
    parts = remainder.split(" ")
    words = [p for p in parts if p]
    if len(words) < 3:
        raise InvalidArgument(SENDFILE_USAGE)
    to = words[0]
    size_text = words[-1]
    name = remainder[len(to):].strip(" ")
    name = name[: len(name) - len(size_text)].strip(" ")
    size = _parse_count(size_text, "SIZE", MAX_DECLARED_SIZE)
    return Command("sendfile", (to, name, size_text), payload_size=size)


def _invisible(c: str) -> bool:
    # Format characters (bidi embeddings/overrides/isolates U+202A-E, U+2066-9, marks U+200E/F
    # and U+061C, zero-width characters, BOM, soft hyphen) and line/paragraph separators: they
    # can make "exe.txt" read as "txt.exe" on a screen, so they are taken out of file names.
    return unicodedata.category(c) in ("Cf", "Zl", "Zp")


def base_file_name(name: str) -> str:
    """The bare file name: any directory part (either slash) is stripped, invisible and
    direction-changing characters removed; never a path."""
    name = "".join(c for c in name if not _invisible(c))
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base in {"", ".", ".."} or any(unicodedata.category(c) == "Cc" for c in base):
        raise InvalidArgument(f"invalid file name {name[:60]!r}: give a plain file name")
    if len(base.encode()) > 255:
        raise InvalidArgument("file name too long: at most 255 bytes")
    return base


# ---- encoding -------------------------------------------------------------------------------

# Characters JSON may leave raw that still act on a screen: DEL, C1 controls (0x9b is a CSI),
# line/paragraph separators and bidi overrides (U+200E/F, U+202A-E, U+2066-9, U+061C), as UTF-8.
_UNSAFE = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]|\xd8\x9c")


def encode(obj: dict[str, Any]) -> bytes:
    """One compact JSON object on one line. JSON escapes every C0 control character, and lines
    holding other characters that act on a terminal or on text direction are re-encoded with
    \\u escapes, so no text a user sends can forge a line or reach a screen raw."""
    line = orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
    if _UNSAFE.search(line):
        return (json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n").encode()
    return line


def ok(**fields: Any) -> bytes:
    return encode({"status": "OK", **fields})


def error(code: Code | str, message: str) -> bytes:
    return encode({"status": "ERROR", "code": str(code), "message": message})


def error_from(exc: ChatError) -> bytes:
    return error(exc.code, exc.message)


def event(kind: str, **fields: Any) -> bytes:
    return encode({"event": kind, **fields})


def decode(line: bytes | str) -> dict[str, Any]:
    """Parses one response or event line (clients and tests)."""
    obj = orjson.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"not a protocol object: {line!r}")
    return obj


def help_lines() -> list[str]:
    return [f"{s.usage} - {s.summary}" for s in COMMANDS.values()]
