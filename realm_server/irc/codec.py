"""The IRC message codec (RFC 1459/2812 + IRCv3 message tags): pure functions, no I/O.

    [@tags SPACE] [:source SPACE] COMMAND *(SPACE param) [SPACE :trailing]

Parsing (`parse`), as the ircdocs parser tests expect:
- atoms are separated by one or more spaces (RFC 1459), never by tabs;
- tags: `key[=value]` separated by ';'; a tag without value, or with an empty one, is "";
  values are unescaped one character at a time (`\\:` `\\s` `\\\\` `\\r` `\\n`, any other escaped
  character stands for itself, a trailing lone backslash is dropped); a key that appears twice
  keeps its last value; a key that is not a valid tag name (empty, as in `@=`) is ignored, as
  unknown tags are. Client-only tags keep their '+' (`Message.client_tags`);
- the command is ASCII letters, folded to upper case, or three digits;
- at most 15 params: after 14 middle params the rest of the line is the 15th, spaces and colons
  included (RFC 2812 grammar), so nothing is lost and nothing overflows;
- invalid UTF-8 is decoded with U+FFFD for each bad byte (`decode`): never an exception, the
  result is always valid for the rest of realmchat, and a legacy latin-1 byte cannot turn into a
  C1 control character (U+0080-U+009F) on another user's terminal, as a latin-1 fallback would.

Malformed input raises IrcParseError, which carries the server's answer (`reply`): nothing
for a line without a command (empty, only spaces, only tags or a source), 417 ERR_INPUTTOOLONG
for over-long input, 421 ERR_UNKNOWNCOMMAND for a command that is neither letters nor three
digits, 400 ERR_UNKNOWNERROR for a NUL (or a CR/LF handed to parse directly).

Serializing (`Message.serialize`) never lets CR, LF or NUL reach the wire inside a param, adds
':' to the last param only when it needs one (empty, contains a space, starts with ':'), and
cuts the line at a UTF-8 character boundary so that the part after the tags never exceeds 512
bytes with CR LF. Long texts are split into several lines beforehand with `split_text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from .framing import BODY_MAX, CLIENT_TAG_DATA_MAX, TAG_SECTION_MAX

BODY_TEXT_MAX = BODY_MAX - 2  # the non-tag part without CR LF
SERVER_TAG_DATA_MAX = TAG_SECTION_MAX - 2  # tag data without '@' and the space
MAX_PARAMS = 15

# The answers, as in numerics.Numeric (kept literal here: numerics builds on this module).
_ERR_UNKNOWNERROR = "400"
_ERR_INPUTTOOLONG = "417"
_ERR_UNKNOWNCOMMAND = "421"

# [+][vendor/]name: vendor is a host name, name letters, digits and '-'.
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9.\-]+/)?[A-Za-z0-9\-]+")
_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\0": ""})
_PARAM_CLEAN = str.maketrans({"\r": " ", "\n": " ", "\0": None})


class IrcParseError(ValueError):
    """A line that is not a usable IRC message, and what the server answers to it.

    `numeric` is None when the line is ignored silently; otherwise `params` are the reply's
    params after the target (the client's nick, or "*" before registration)."""

    def __init__(self, reason: str, numeric: str | None = None, params: tuple[str, ...] = (),
                 tags: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.numeric = numeric
        self.params = params
        self.tags = tags if tags is not None else {}  # the line's tags, when they parsed (a label)

    @property
    def silent(self) -> bool:
        return self.numeric is None

    def reply(self, target: str, source: str | None = None) -> Message | None:
        if self.numeric is None:
            return None
        return Message(self.numeric, [target, *self.params], source)


class IrcSerializeError(ValueError):
    """A message that cannot be written as one IRC line (a programming error at the edge)."""


class Source(NamedTuple):
    """A parsed source prefix: `nick!user@host`; a server name comes out as `nick`."""

    nick: str
    user: str | None
    host: str | None


def parse_source(source: str) -> Source:
    nick, bang, rest = source.partition("!")
    if bang:
        user, at, host = rest.partition("@")
        return Source(nick, user, host if at else None)
    nick, at, host = source.partition("@")
    return Source(nick, None, host if at else None)


@dataclass(slots=True)
class Message:
    command: str
    params: list[str] = field(default_factory=list)
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> Source | None:
        """The source split into nick, user and host (parsed on demand)."""
        return None if self.source is None else parse_source(self.source)

    @property
    def client_tags(self) -> dict[str, str]:
        """The client-only tags ('+' keys), the ones a server relays from client to client."""
        return {k: v for k, v in self.tags.items() if k[0] == "+"}

    def serialize(self) -> bytes:
        """The wire form, CR LF included (see the module docstring for the guarantees)."""
        command = self.command
        if not command or " " in command:
            raise IrcSerializeError(f"invalid command {command!r}")
        params = self.params
        if params:
            last = params[-1]
            for p in params[:-1]:
                if not p or " " in p or p[0] == ":":
                    raise IrcSerializeError(f"{command}: middle param {p[:40]!r} empty, with a space or leading ':'")
            if not last or " " in last or last[0] == ":":
                last = ":" + last
            body = " ".join((command, *params[:-1], last))
        else:
            body = command
        source = self.source
        if source:
            if " " in source:
                raise IrcSerializeError(f"source {source[:40]!r} has a space")
            body = f":{source} {body}"
        if "\r" in body or "\n" in body or "\0" in body:
            body = self._clean_body()
        data = body.encode("utf-8", "replace")
        if len(data) > BODY_TEXT_MAX:
            data = cut_utf8(data, BODY_TEXT_MAX)
        if not self.tags:
            return data + b"\r\n"
        tags = serialize_tags(self.tags)
        if len(tags) > SERVER_TAG_DATA_MAX:
            raise IrcSerializeError(f"tag data of {len(tags)} bytes is over {SERVER_TAG_DATA_MAX}")
        return b"@" + tags + b" " + data + b"\r\n"

    def _clean_body(self) -> str:
        """The body again with CR and LF turned into spaces and NUL removed, param by param
        (so a bad character can never split one param into two)."""
        source = self.source.translate(_PARAM_CLEAN) if self.source else None
        params = [p.translate(_PARAM_CLEAN) for p in self.params]
        for p in params[:-1]:
            if not p or " " in p:
                raise IrcSerializeError(f"{self.command}: middle param {p[:40]!r} has CR, LF or NUL")
        if source is not None and " " in source:
            raise IrcSerializeError(f"source {source[:40]!r} has CR, LF or NUL")
        return Message(self.command.translate(_PARAM_CLEAN), params, source).serialize()[:-2].decode()


def cut_utf8(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes of UTF-8 `data`, cut before a character, never inside one."""
    if len(data) <= limit:
        return data
    i = limit
    while i > 0 and data[i] & 0xC0 == 0x80:
        i -= 1
    return data[:i]


def escape_tag_value(value: str) -> str:
    return value.translate(_ESCAPE)


def unescape_tag_value(value: str) -> str:
    """Character at a time, so `\\\\n` is a backslash and an n, never a newline."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while True:
        j = value.find("\\", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        if j + 1 == n:  # a trailing lone backslash is dropped
            break
        c = value[j + 1]
        out.append(_UNESCAPE.get(c, c))
        i = j + 2
    return "".join(out)


def is_valid_tag_key(key: str) -> bool:
    # The few keys in use are remembered: a set lookup costs a tenth of the regex. Bounded, so
    # a peer sending ever new keys only pays the regex.
    if key in _VALID_KEYS:
        return True
    if _TAG_KEY.fullmatch(key) is None:
        return False
    if len(_VALID_KEYS) < _VALID_KEYS_MAX:
        _VALID_KEYS.add(key)
    return True


_VALID_KEYS: set[str] = set()
_VALID_KEYS_MAX = 256


def parse_tags(data: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in data.split(";"):
        key, _, value = item.partition("=")
        if not is_valid_tag_key(key):
            continue
        tags[key] = unescape_tag_value(value) if "\\" in value else value
    return tags


def serialize_tags(tags: dict[str, str]) -> bytes:
    items = []
    for key, value in tags.items():
        if not is_valid_tag_key(key):
            raise IrcSerializeError(f"invalid tag key {key[:40]!r}")
        if not value:  # written as a tag without value (IRCv3 allows either, this is shorter)
            items.append(key)
        elif ";" in value or " " in value or "\\" in value or "\r" in value or "\n" in value or "\0" in value:
            items.append(f"{key}={value.translate(_ESCAPE)}")
        else:
            items.append(f"{key}={value}")
    return ";".join(items).encode("utf-8", "replace")


def decode(data: bytes) -> str:
    """UTF-8, each invalid byte replaced by U+FFFD (never raises)."""
    return data.decode("utf-8", "replace")


def parse(line: bytes | str, tag_limit: int = CLIENT_TAG_DATA_MAX) -> Message:
    """One line (its CR LF or LF, if any, is ignored) into a Message, or IrcParseError.

    `tag_limit` is the tag data allowed (without '@' and the space): 4094 bytes for what a
    client sends, SERVER_TAG_DATA_MAX for lines from a server."""
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if b"\0" in line or b"\r" in line or b"\n" in line:
        raise IrcParseError("NUL, CR or LF inside the line", _ERR_UNKNOWNERROR,
                            ("*", "Input line contained a forbidden character"))
    tags: dict[str, str]
    if line[:1] == b"@":
        sp = line.find(b" ")
        if sp < 0:
            raise IrcParseError("only tags, no command")
        if sp - 1 > tag_limit:
            raise IrcParseError("tag data too long", _ERR_INPUTTOOLONG, ("Input line contained excess tag data",))
        tags = parse_tags(decode(line[1:sp]))
        line = line[sp + 1:]
    else:
        tags = {}
    if len(line) > BODY_TEXT_MAX:
        raise IrcParseError("line too long", _ERR_INPUTTOOLONG, ("Input line was too long",))
    text = decode(line).lstrip(" ")
    source: str | None = None
    if text[:1] == ":":
        sp = text.find(" ")
        if sp < 0:
            raise IrcParseError("only a source, no command")
        source = text[1:sp] or None
        text = text[sp + 1:].lstrip(" ")
    if not text:
        raise IrcParseError("no command")
    if text[0] == ":":
        raise IrcParseError("no command, only a trailing param")
    i = text.find(" :")
    if i >= 0:
        params = text[:i].split(" ")
        trailing: str | None = text[i + 2:]
    else:
        params = text.split(" ")
        trailing = None
    if "" in params:  # runs of spaces
        params = [p for p in params if p]
    command = params[0]
    if command.isascii():
        if command.isalpha():
            command = command.upper()
        elif not (len(command) == 3 and command.isdigit()):
            raise IrcParseError("invalid command", _ERR_UNKNOWNCOMMAND, (command[:32], "Unknown command"), tags)
    else:
        raise IrcParseError("invalid command", _ERR_UNKNOWNCOMMAND, (command[:32], "Unknown command"), tags)
    del params[0]
    if trailing is not None:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        params = _fold_params(text)
    return Message(command, params, source, tags)


def _fold_params(text: str) -> list[str]:
    """RFC 2812: after 14 middle params the rest of the line is the last param."""
    params: list[str] = []
    pos = text.find(" ")  # after the command
    for _ in range(MAX_PARAMS - 1):
        while text[pos] == " ":
            pos += 1
        end = text.find(" ", pos)
        params.append(text[pos:end])
        pos = end
    while text[pos] == " ":
        pos += 1
    rest = text[pos:]
    params.append(rest[1:] if rest[:1] == ":" else rest)
    return params


def numeric(code: int | str, target: str, *params: str, source: str | None = None,
            tags: dict[str, str] | None = None) -> Message:
    """A numeric reply: `:source CODE target params...`; target is the client's nick, or "*"."""
    command = f"{code:03d}" if isinstance(code, int) else str(code)
    # Numerics echo what the client sent (a nick, a channel, a key): one that cannot be a middle
    # param (empty, with a space, a leading ':') is written `*` rather than break the line.
    *middle, last = [target, *params]
    middle = [p if p and " " not in p and p[0] != ":" else "*" for p in middle]
    return Message(command, [*middle, last], source, tags if tags is not None else {})


def message(source: str | None, command: str, *params: str, tags: dict[str, str] | None = None) -> Message:
    """A message from `source` (a user's `nick!user@host`, or the server name)."""
    return Message(command, list(params), source, tags if tags is not None else {})


def text_prefix_len(source: str | None, command: str, target: str) -> int:
    """Bytes a line takes before its text: `:source COMMAND target :` (the prefix_len of split_text)."""
    n = len(command.encode()) + len(target.encode()) + 3
    if source:
        n += len(source.encode()) + 2
    return n


def split_text(prefix_len: int, text: str) -> list[str]:
    """The text as pieces that each fit in one line after `prefix_len` bytes, CR LF included.

    Newlines (CR LF, LF, CR) start a new piece and empty lines are dropped (IRC cannot send
    an empty message); NUL is removed. A piece too long is cut at the last space that fits
    (the space itself is dropped), else at the last UTF-8 character boundary that fits."""
    budget = BODY_TEXT_MAX - prefix_len
    if budget < 4:  # room for one character of up to 4 bytes
        raise ValueError(f"prefix of {prefix_len} bytes leaves no room for text")
    if "\0" in text:
        text = text.replace("\0", "")
    out: list[str] = []
    # Not str.splitlines: it also breaks at \x1c-\x1e, which IRC uses as formatting codes.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ("\n" in text or "\r" in text) else (text,)
    for line in lines:
        if not line:
            continue
        data = line.encode("utf-8", "replace")
        if len(data) <= budget:
            out.append(line)
            continue
        while len(data) > budget:
            i = budget  # data[i] is the first byte that does not fit
            while data[i] & 0xC0 == 0x80:
                i -= 1
            sp = data.rfind(b" ", 1, i + 1)
            if sp > 0:
                out.append(data[:sp].decode())
                data = data[sp + 1:]
            else:
                out.append(data[:i].decode())
                data = data[i:]
        if data:
            out.append(data.decode())
    return out
