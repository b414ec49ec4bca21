"""The verb table of the client side: one entry per protocol verb (and per command of the
terminal's conversation mode), naming its wire verb, the ChatClient method that sends it, the
rules of its arguments as the client checks them before sending, and the terminal's command
name(s), usage, help and argument parser.

ChatClient builds its lines with `Verb.line`; the terminal parses and dispatches what the user
types with `parse_user_line` and `Verb.command`; the GUI checks arguments with the same rules.
Everything here is pure: no I/O, no sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realmchat.errors import InvalidArgument, Unimplemented
from realmchat.names import check_name
from realmchat.textproto import COMMANDS, HISTORY_FORMS, is_time_ref, parse_line

# ---- the rules of arguments on the wire ------------------------------------------------------

EMOJI_MAX = 16


def check_word(value: str, what: str) -> str:
    """A single protocol word: non-empty, no whitespace or control characters. Anything else
    would change how the realm splits the line (or inject a second command), and then responses
    would no longer line up with calls."""
    if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 32 or c == "\x7f"
                                                      for c in value):
        raise InvalidArgument(f"invalid {what} {value!r}: one word without spaces")
    return value


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("the message must not be empty")
    if "\n" in text or "\r" in text:
        # One command is one line; a line break would start a second command on the server.
        raise InvalidArgument("the message must be a single line (no line breaks)")
    return text


def check_id(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"invalid message id {value!r}: a whole number")
    return value


def check_emoji(value: str) -> str:
    check_word(value, "emoji")
    if len(value) > EMOJI_MAX:
        raise InvalidArgument(f"an emoji is 1-{EMOJI_MAX} characters without spaces")
    return value


Check = Callable[[Any], "str | None"]
"""One argument as the client sends it: its wire word(s), or None to leave it out; raises
InvalidArgument for a value that may not be sent."""


def word(what: str) -> Check:
    return lambda value: check_word(value, what)


def optional_word(what: str) -> Check:
    return lambda value: None if value is None else check_word(value, what)


def pattern(value: str | None) -> str | None:
    return check_word(value, "pattern") if value else None


def file_id(value: int | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"invalid file id {value!r}")
    return str(value)


def as_is(value: object) -> str:
    """Already checked by the caller (a sendfile's file name and size)."""
    return str(value)


def text(value: str) -> str:
    return check_text(value)


def optional_text(value: str | None) -> str | None:
    """A trailing text that may be absent (a kick reason, an away message): blank is absent."""
    return check_text(value) if value and value.strip() else None


def message_id(value: int) -> str:
    return str(check_id(value))


def emoji(value: str) -> str:
    return check_emoji(value)


def peer(value: str) -> str:
    """A conversation: a user, or a group (a leading "#" is dropped)."""
    return check_word(value.lstrip("#") or value, "user or group")


def read_mark(value: int) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"invalid message id {value!r}")
    return str(value)


def flag(name: str) -> Check:
    """A literal word sent when the value is true (`creategroup G private`)."""
    return lambda on: name if on else None


def on_off(value: bool | None) -> str | None:
    return None if value is None else ("on" if value else "off")


def role(value: str) -> str:
    value = str(value).lower()
    if value not in ("admin", "member"):
        raise InvalidArgument(f"role must be admin or member, not {value!r}")
    return value


def group_key(value: str) -> str:
    """A key to set ("-" clears it: the client says so with its own method, clear_group_key)."""
    if value == "-":
        raise InvalidArgument("'-' clears the key: use clear_group_key()")
    return check_word(value, "key")


CLEAR = object()  # clear_group_key's value: the wire's "-"


def key_or_clear(value: object) -> str:
    return "-" if value is CLEAR else group_key(value)  # type: ignore[arg-type]


def group_mode(value: str) -> str:
    value = str(value).lower()
    if value not in ("public", "private"):
        raise InvalidArgument(f"a group is made public or private, not {value[:20]!r}")
    return value


def topic_text(value: str | None) -> str | None:
    """No value: ask for the topic; "-": clear it; else the new topic (one line)."""
    if value is None or value == "-":
        return value
    return check_text(value)


Ref = int | str  # a history reference: a message id, or a time (ISO-8601 UTC, 2026-11-24T07:42:01Z)


def check_ref(value: Ref) -> str:
    if isinstance(value, str):
        if not is_time_ref(value):
            raise InvalidArgument(f"invalid time {value!r}: ISO-8601 UTC, e.g. 2026-11-24T07:42:01Z")
        return value
    return str(check_id(value))


def history_line(peer_name: str, n: int | None = None, before: Ref | None = None, after: Ref | None = None,
                 around: Ref | None = None, between: tuple[Ref, Ref] | None = None) -> str:
    line = f"history {check_word(peer_name, 'user or group')}"
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgument("N must be a whole number of at least 1")
        line += f" {n}"
    forms = [(w, v) for w, v in (("before", before), ("after", after), ("around", around), ("between", between))
             if v is not None]
    if len(forms) > 1:
        raise InvalidArgument("history takes one of before, after, around or between")
    if forms:
        word_, value = forms[0]
        refs = value if isinstance(value, tuple) else (value,)
        line += f" {word_} " + " ".join(check_ref(r) for r in refs)
    return line


def search_line(query: str, scope: str | None = None) -> str:
    q = check_text(query)
    line = "search"
    if scope:
        s = check_word(scope, "scope")
        if not s.startswith(("#", "@")):
            s = "@" + s
        if len(s) < 2:
            raise InvalidArgument("scope must be #GROUP or @USER")
        line += f" {s}"
    elif q.lstrip().startswith(("#", "@")):
        # A query starting with # or @ would be read as a scope: not what was asked.
        raise InvalidArgument("a query that starts with # or @ needs a scope (search #GROUP QUERY)")
    return f"{line} {q}"


# ---- the terminal's parsers (what the user typed after the command word) -----------------------


def _words(verb: Verb, rest: str) -> tuple[str, ...]:
    """Words; the argument at `rest_at` (if any) takes the rest of the line, spaces kept."""
    rest = rest.strip()
    if verb.rest_at is not None:
        parts = rest.split(None, verb.rest_at)
        args = tuple(parts[: verb.rest_at]) + tuple(w for w in parts[verb.rest_at:] if w.strip())
    else:
        args = tuple(rest.split())
    if not verb.min_args <= len(args) <= verb.max_args:
        raise InvalidArgument(f"usage: {verb.usage}")
    return args


def _wire_form(verb: Verb, rest: str) -> tuple[str, ...]:
    """The wire's own form, checked by the shared parser so the terminal and the realm never
    disagree."""
    cmd = parse_line(f"{verb.command} {rest}" if rest else verb.command)
    assert cmd is not None
    return cmd.args


def _sendfile(verb: Verb, rest: str) -> tuple[str, ...]:
    # TO is the first word, PATH (a local file) the whole rest of the line.
    to, _, path = rest.strip().partition(" ")
    path = path.strip()
    if not to or not path:
        raise InvalidArgument(f"usage: {verb.usage} (a local file; ~ is expanded)")
    return to, path


def parse_message_id(text: str, usage: str) -> int:
    """A message id as typed: `123` or `#123` (as messages show it)."""
    digits = text[1:] if text.startswith("#") else text
    if not digits.isdigit() or int(digits) < 1:
        raise InvalidArgument(f"{text!r} is not a message id (a number, shown as #123); usage: {usage}")
    return int(digits)


def _with_id(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    return (str(parse_message_id(args[0], verb.usage)), *args[1:])


def _reaction(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _with_id(verb, rest)
    if len(args[1]) > EMOJI_MAX:
        raise InvalidArgument(f"usage: {verb.usage} (an emoji is at most {EMOJI_MAX} characters)")
    return args


def _history(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    more = list(args[1:])
    if more and more[0].isdigit():
        if int(more[0]) < 1:
            raise InvalidArgument(f"usage: {verb.usage} (N is at least 1)")
        more.pop(0)
    if more:
        form = more[0].lower()
        if form not in HISTORY_FORMS or len(more) != 1 + HISTORY_FORMS[form]:
            raise InvalidArgument(f"usage: {verb.usage}")
        for ref in more[1:]:
            if not is_time_ref(ref):
                parse_message_id(ref, verb.usage)
    return args


def _search(verb: Verb, rest: str) -> tuple[str, ...]:
    rest = rest.strip()
    words = rest.split(None, 1)
    if words and words[0][:1] in ("#", "@") and len(words) == 2:
        args: tuple[str, ...] = (words[0], words[1].strip())
    elif words and words[0][:1] in ("#", "@"):
        raise InvalidArgument(f"usage: {verb.usage} (what to look for in {words[0]}?)")
    else:
        args = (rest,) if rest else ()
    if not verb.min_args <= len(args) <= verb.max_args:
        raise InvalidArgument(f"usage: {verb.usage}")
    return args


def _creategroup(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    if len(args) == 2 and args[1].lower() != "private":
        raise InvalidArgument(f"usage: {verb.usage} (the only option is 'private')")
    return args


def _one_of(position: int, *allowed: str) -> Callable[[Verb, str], tuple[str, ...]]:
    def parse(verb: Verb, rest: str) -> tuple[str, ...]:
        args = _words(verb, rest)
        if len(args) > position and args[position].lower() not in allowed:
            raise InvalidArgument(f"usage: {verb.usage}")
        return args
    return parse


def _read(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    if len(args) == 2 and not args[1].isdigit():
        raise InvalidArgument(f"usage: {verb.usage} (ID is a message id)")
    return args


def parse_target(text: str) -> str:
    """A conversation as typed: `bob`, or `#crew` for a group; the name rule is checked here."""
    if text.startswith("#"):
        return "#" + check_name(text[1:], "group")
    return check_name(text, "user")


def _target_first(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    return (parse_target(args[0]), *args[1:]) if args else args


def _join(verb: Verb, rest: str) -> tuple[str, ...]:
    args = _words(verb, rest)
    return (check_name(args[0].removeprefix("#"), "group"), *args[1:])


# ---- the table --------------------------------------------------------------------------------

Parser = Callable[["Verb", str], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Verb:
    """One command. `wire` is the protocol verb it sends (None: a command of the terminal's
    conversation mode, typed with a leading "/", that composes other verbs); `method` the
    ChatClient method for it, `methods` further methods that send the same verb; `args` the
    wire arguments in order, as `line` checks them (`build` instead, for a verb whose line is
    more than its arguments in order). The rest is the terminal's: `command` (canonical) and
    `aliases`, `usage` and `summary` for help, the arity and `rest_at` (the argument that
    takes the rest of the line) its parser `parse` checks, and `secret` for lines that carry
    a password."""

    command: str
    wire: str | None
    method: str | None
    usage: str
    summary: str
    min_args: int = 0
    max_args: int = 0
    rest_at: int | None = None
    aliases: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    args: tuple[Check, ...] = ()
    build: Callable[..., str] | None = None
    parse: Parser = field(default=_words)
    secret: bool = False

    @property
    def terminal_only(self) -> bool:
        return self.wire is None

    @property
    def client_methods(self) -> tuple[str, ...]:
        return ((self.method,) if self.method else ()) + self.methods

    def line(self, *values: Any) -> str:
        """The wire line for these arguments (checked; raises InvalidArgument)."""
        if self.wire is None:
            raise Unimplemented(f"{self.command} is a command of the terminal, not of the protocol")
        if self.build is not None:
            return self.build(*values)
        if len(values) > len(self.args):
            raise TypeError(f"{self.wire} takes at most {len(self.args)} arguments")
        words = [self.wire]
        for check, value in zip(self.args, values, strict=False):
            if (w := check(value)) is not None:
                words.append(w)
        return " ".join(words)

    def parse_args(self, rest: str) -> tuple[str, ...]:
        """The terminal's arguments from what follows the command word (raises ChatError with
        the usage)."""
        return self.parse(self, rest)


def _wire(wire: str, method: str, *args: Check, usage: str | None = None, summary: str | None = None,
          **kw: Any) -> Verb:
    """A verb the terminal takes in the wire's own form: usage, help and arity are the shared
    table's (realmchat.textproto.COMMANDS), unless the terminal says it differently."""
    spec = COMMANDS[wire]
    return Verb(wire, wire, method, usage or spec.usage, summary or spec.summary, spec.min_args, spec.max_args,
                args=args, parse=_wire_form, **kw)


def _verb(wire: str, method: str, args: tuple[Check, ...], usage: str, summary: str, min_args: int,
          max_args: int, **kw: Any) -> Verb:
    """A verb with a form of the terminal's own (its usage, arity and checks)."""
    return Verb(wire, wire, method, usage, summary, min_args, max_args, args=args, **kw)


def _slash(command: str, usage: str, summary: str, min_args: int, max_args: int, **kw: Any) -> Verb:
    return Verb("/" + command, None, None, usage, summary, min_args, max_args, **kw)


GROUP, USER = word("group"), word("user name")

# In the order of the protocol's table, which is the order help lists them in.
VERBS: tuple[Verb, ...] = (
    _wire("register", "register", USER, word("password"), secret=True),
    _wire("auth", "auth", USER, word("password"), secret=True),
    _wire("sendprivate", "send_private", word("recipient"), text),
    _wire("inbox", "inbox"),
    _verb("creategroup", "create_group", (GROUP, flag("private")), "creategroup GROUP [private]",
          "create a group (you own it); private: invite or key only", 1, 2, parse=_creategroup),
    _verb("joingroup", "join_group", (GROUP, optional_word("key")), "joingroup GROUP [KEY]",
          "join a group (a private one: invited, or with its key)", 1, 2),
    _wire("leavegroup", "leave_group", GROUP),
    _wire("sendgroup", "send_group", GROUP, text),
    _wire("inboxgroup", "inbox_group", GROUP),
    Verb("sendfile", "sendfile", "send_file", "sendfile TO PATH",
         "send a local file to a user, or to a group as #GROUP (PATH may contain spaces; ~ is expanded)",
         2, 2, methods=("send_group_file",), args=(word("recipient"), as_is, as_is), parse=_sendfile),
    _wire("receivefile", "receive_file", file_id, usage="receivefile [ID]",
          summary="download every waiting file (or file ID) into the download dir", methods=("pending_files",)),
    _verb("invite", "invite", (GROUP, USER), "invite GROUP USER", "invite a user (owner/admin)", 2, 2),
    _verb("kick", "kick", (GROUP, USER, optional_text), "kick GROUP USER [REASON]", "remove a member (owner/admin)",
          2, 3, rest_at=2),
    _verb("ban", "ban", (GROUP, USER, optional_text), "ban GROUP USER [REASON]",
          "remove and keep out a user (owner/admin)", 2, 3, rest_at=2),
    _verb("unban", "unban", (GROUP, USER), "unban GROUP USER", "lift a ban (owner/admin)", 2, 2),
    _verb("role", "set_role", (GROUP, USER, role), "role GROUP USER admin|member",
          "make a member admin, or member again (owner)", 3, 3, parse=_one_of(2, "admin", "member")),
    _verb("members", "members", (GROUP,), "members GROUP", "members of a group: role, online, realm", 1, 1),
    _verb("topic", "topic", (GROUP, topic_text), "topic GROUP [TEXT]",
          "show the topic, or set it (owner/admin; - clears it)", 1, 2, rest_at=1,
          methods=("topic_info", "set_topic", "clear_topic")),
    _verb("groupkey", "set_group_key", (GROUP, key_or_clear), "groupkey GROUP KEY|-",
          "set the key to join a group, - clears it (owner/admin)", 2, 2, methods=("clear_group_key",)),
    _verb("groupmode", "set_group_mode", (GROUP, group_mode), "groupmode GROUP public|private",
          "make a group public or private; its members stay (owner/admin)", 2, 2,
          parse=_one_of(1, "public", "private")),
    _verb("deletegroup", "delete_group", (GROUP,), "deletegroup GROUP", "delete a group for everyone (owner)", 1, 1),
    _verb("listgroups", "list_groups", (pattern,), "listgroups [PATTERN]",
          "public groups (and private ones you are in)", 0, 1),
    _wire("who", "who"),
    _wire("groups", "groups"),
    _verb("history", "history", (), "history USER|GROUP [N] [before REF|after REF|around REF|between REF REF]",
          "the conversation (#GROUP forces a group): the latest N, or N before/after/around REF or between two "
          "(REF: a message ID or a time, 2026-11-24T07:42:01Z)", 1, 5,
          build=history_line, parse=_history),
    _verb("conversations", "conversations", (), "conversations",
          "your conversations, newest first, with unread counts", 0, 0),
    _verb("read", "read", (peer, read_mark), "read USER|GROUP [ID]",
          "mark a conversation read (up to ID; default: all of it)", 1, 2, parse=_read),
    _verb("away", "away", (optional_text,), "away [MESSAGE]", "show others you are away (with a message)", 0, 1,
          rest_at=0),
    _verb("back", "back", (), "back", "you are back (online)", 0, 0),
    _verb("typing", "typing", (peer,), "typing USER|GROUP", "tell a user (or a group) you are typing", 1, 1),
    _verb("receipts", "receipts", (on_off,), "receipts [on|off]",
          "let senders see when you read their messages, or not (alone: which it is)", 0, 1,
          parse=_one_of(0, "on", "off")),
    _verb("edit", "edit", (message_id, text), "edit ID TEXT", "change the text of your message ID (shown as #ID)",
          2, 2, rest_at=1, parse=_with_id),
    _verb("delete", "delete", (message_id,), "delete ID",
          "delete message ID for everyone (yours; group owner/admin: any)", 1, 1, parse=_with_id),
    _verb("trace", "trace", (message_id,), "trace ID", "where message ID went, hop by hop", 1, 1, parse=_with_id),
    _verb("reply", "reply", (message_id, text), "reply ID TEXT", "answer message ID in its conversation", 2, 2,
          rest_at=1, parse=_with_id),
    _verb("react", "react", (message_id, emoji), "react ID EMOJI", "react to message ID (e.g. react 12 👍)", 2, 2,
          parse=_reaction),
    _verb("unreact", "unreact", (message_id, emoji), "unreact ID EMOJI", "take your reaction back", 2, 2,
          parse=_reaction),
    _verb("search", "search", (), "search [#GROUP|@USER] QUERY", "find messages you can read, best first", 1, 2,
          rest_at=1, build=search_line, parse=_search),
    _wire("help", "help"),
    _wire("ping", "ping"),
    _wire("logout", "logout"),
    _wire("quit", "quit", usage="quit", summary="leave (also: exit, Ctrl-D)", aliases=("exit",)),
    # The conversation mode, as irssi and WeeChat have it: typed with a leading "/" (`/query
    # bob`); "/" before any other command runs it (`/who`), which is how commands are typed
    # while a conversation is current (plain lines are then messages; `//text` sends "/text").
    _slash("query", "/query [USER|#GROUP]", "make USER (or GROUP, joined first) the current conversation: "
           "plain lines go there; alone: back to commands", 0, 1, parse=_target_first),
    _slash("join", "/join GROUP [KEY]", "join a group and make it the current conversation", 1, 2, parse=_join),
    _slash("msg", "/msg USER|#GROUP TEXT", "send one message; the current conversation stays", 2, 2, rest_at=1,
           parse=_target_first),
    _slash("me", "/me TEXT", "an action in the current conversation, sent as '* YOU TEXT'", 1, 1, rest_at=0),
)

BY_WIRE: dict[str, Verb] = {v.wire: v for v in VERBS if v.wire is not None}
BY_COMMAND: dict[str, Verb] = {name: v for v in VERBS for name in (v.command, *v.aliases)}
PROTOCOL_VERBS: tuple[Verb, ...] = tuple(v for v in VERBS if not v.terminal_only)
SLASH_ONLY: tuple[Verb, ...] = tuple(v for v in VERBS if v.terminal_only)

NO_TARGET = "no current conversation: '/query USER' or '/join GROUP' first (or '/msg USER TEXT')"


def verb(wire: str) -> Verb:
    """The entry of protocol verb `wire`."""
    return BY_WIRE[wire]


@dataclass(frozen=True, slots=True)
class UserCommand:
    """One line the user typed, validated: `verb` is the canonical command ("/query" for a
    slash command), `args` as the wire would split them (for sendfile: TO and the unresolved
    local path text)."""

    verb: str
    args: tuple[str, ...]


def parse_user_line(line: str) -> UserCommand | None:
    """Parses what the user typed. None for a blank line or a `# comment`. Raises ChatError
    (UNIMPLEMENTED for an unknown command, INVALID_ARGUMENT with the usage) like the realm
    would; the commands in the wire's form go through the shared parser, so the two never
    disagree."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("//"):
        raise InvalidArgument(f"'//TEXT' sends TEXT to the current conversation: {NO_TARGET}")
    if stripped.startswith("/"):
        # `/VERB ...`: the conversation commands, or any other command with a slash before it.
        word_, _, rest = stripped[1:].partition(" ")
        found = BY_COMMAND.get("/" + word_.lower())
        if found is not None:
            return UserCommand(found.command, found.parse_args(rest))
        if not word_:
            raise Unimplemented("a lone '/': type '/help' (or 'help') for the commands")
        stripped = stripped[1:]
    verb_raw, _, rest = stripped.partition(" ")
    found = BY_COMMAND.get(verb_raw.lower())
    if found is None or found.terminal_only:
        raise Unimplemented(f"unknown command {verb_raw[:40]!r}; type 'help' for the list")
    return UserCommand(found.command, found.parse_args(rest))


def arg_kinds(usage: str) -> tuple[tuple[str, ...], ...]:
    """What each argument of a usage line names, for tab completion: ("user",), ("group",),
    both, or nothing."""
    out: list[tuple[str, ...]] = []
    for w in usage.split(" ")[1:]:
        alternatives = w.strip("[]").split("|")
        out.append(tuple(kind for kind, words in (("user", ("TO", "USER")), ("group", ("GROUP",)))
                         if any(a in alternatives for a in words)))
    return tuple(out)
