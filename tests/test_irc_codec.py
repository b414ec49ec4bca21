"""The IRC codec (realm_server/irc), pure functions as tables of cases: the ircdocs parser tests
(msg-split, msg-join), hostile input, the length limits, serializing safely, splitting long
texts, numerics, ISUPPORT, standard replies and the case mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realm_server.irc import casemap
from realm_server.irc.codec import (
    BODY_TEXT_MAX,
    SERVER_TAG_DATA_MAX,
    IrcParseError,
    IrcSerializeError,
    Message,
    Source,
    cut_utf8,
    escape_tag_value,
    message,
    numeric,
    parse,
    split_text,
    text_prefix_len,
    unescape_tag_value,
)
from realm_server.irc.framing import CLIENT_TAG_DATA_MAX
from realm_server.irc.numerics import (
    TEXT,
    Numeric,
    escape_isupport_value,
    isupport,
    name_of,
    reply,
    standard_reply,
)
from realmchat.names import is_valid_name, name_key

# --- parsing: the ircdocs parser-tests msg-split cases (verbs come out upper-cased here) ----------

# (input, tags, source, verb, params)
MSG_SPLIT = [
    ("foo bar baz asdf", {}, None, "FOO", ["bar", "baz", "asdf"]),
    (":coolguy foo bar baz asdf", {}, "coolguy", "FOO", ["bar", "baz", "asdf"]),
    ("foo bar baz :asdf quux", {}, None, "FOO", ["bar", "baz", "asdf quux"]),
    ("foo bar baz :", {}, None, "FOO", ["bar", "baz", ""]),
    ("foo bar baz ::asdf", {}, None, "FOO", ["bar", "baz", ":asdf"]),
    (":coolguy foo bar baz :asdf quux", {}, "coolguy", "FOO", ["bar", "baz", "asdf quux"]),
    (":coolguy foo bar baz :  asdf quux ", {}, "coolguy", "FOO", ["bar", "baz", "  asdf quux "]),
    (":coolguy PRIVMSG bar :lol :) ", {}, "coolguy", "PRIVMSG", ["bar", "lol :) "]),
    (":coolguy foo bar baz :", {}, "coolguy", "FOO", ["bar", "baz", ""]),
    (":coolguy foo bar baz :  ", {}, "coolguy", "FOO", ["bar", "baz", "  "]),
    ("@a=b;c=32;k;rt=ql7 foo", {"a": "b", "c": "32", "k": "", "rt": "ql7"}, None, "FOO", []),
    (r"@a=b\\and\nk;c=72\s45;d=gh\:764 foo", {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"}, None, "FOO", []),
    ("@c;h=;a=b :quux ab cd", {"c": "", "h": "", "a": "b"}, "quux", "AB", ["cd"]),
    (":src JOIN #chan", {}, "src", "JOIN", ["#chan"]),
    (":src JOIN :#chan", {}, "src", "JOIN", ["#chan"]),
    (":src AWAY", {}, "src", "AWAY", []),
    (":src AWAY ", {}, "src", "AWAY", []),
    (":cool\tguy foo bar baz", {}, "cool\tguy", "FOO", ["bar", "baz"]),
    (":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz", {}, "coolguy!ag@net\x035w\x03ork.admin",
     "PRIVMSG", ["foo", "bar baz"]),
    (":coolguy!~ag@n\x02et\x0305w\x0fork.admin PRIVMSG foo :bar baz", {}, "coolguy!~ag@n\x02et\x0305w\x0fork.admin",
     "PRIVMSG", ["foo", "bar baz"]),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4= :irc.example.com COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, "irc.example.com", "COMMAND",
     ["param1", "param2", "param3 param3"]),
    (":irc.example.com COMMAND param1 param2 :param3 param3", {}, "irc.example.com", "COMMAND",
     ["param1", "param2", "param3 param3"]),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4 COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, None, "COMMAND",
     ["param1", "param2", "param3 param3"]),
    ("COMMAND", {}, None, "COMMAND", []),
    (r"@foo=\\\\\:\\s\s\r\n COMMAND", {"foo": "\\\\;\\s \r\n"}, None, "COMMAND", []),
    (":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters", {}, "gravel.mozilla.org", "432",
     ["#momo", "Erroneous Nickname: Illegal characters"]),
    (":gravel.mozilla.org MODE #tckk +n ", {}, "gravel.mozilla.org", "MODE", ["#tckk", "+n"]),
    (":services.esper.net MODE #foo-bar +o foobar  ", {}, "services.esper.net", "MODE", ["#foo-bar", "+o", "foobar"]),
    (r"@tag1=value\\ntest COMMAND", {"tag1": "value\\ntest"}, None, "COMMAND", []),
    (r"@tag1=value\1 COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    ("@tag1=value1\\ COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5 COMMAND", {"tag1": "5", "tag2": "3", "tag3": "4"}, None, "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5;vendor/tag2=8 COMMAND",
     {"tag1": "5", "tag2": "3", "tag3": "4", "vendor/tag2": "8"}, None, "COMMAND", []),
    (":SomeOp MODE #channel :+i", {}, "SomeOp", "MODE", ["#channel", "+i"]),
    (":SomeOp MODE #channel +oo SomeUser :AnotherUser", {}, "SomeOp", "MODE",
     ["#channel", "+oo", "SomeUser", "AnotherUser"]),
]

# More accepted input: terminators, case, client-only tags, odd tags, invalid UTF-8, numerics.
MORE_OK = [
    ("PING x\r\n", {}, None, "PING", ["x"]),
    ("PING x\n", {}, None, "PING", ["x"]),
    ("privmsg #c :hi", {}, None, "PRIVMSG", ["#c", "hi"]),
    ("PrivMsg #c hi", {}, None, "PRIVMSG", ["#c", "hi"]),
    ("   PING x", {}, None, "PING", ["x"]),
    ("001 alice :Welcome", {}, None, "001", ["alice", "Welcome"]),
    ("@+typing=active TAGMSG #c", {"+typing": "active"}, None, "TAGMSG", ["#c"]),
    ("@+draft/reply=42;label=x PRIVMSG #c :ok", {"+draft/reply": "42", "label": "x"}, None, "PRIVMSG", ["#c", "ok"]),
    ("@= PING x", {}, None, "PING", ["x"]),  # a tag that is only '=' has no key: ignored
    ("@=;=;==;;; PING x", {}, None, "PING", ["x"]),
    ("@=v;a=1 PING x", {"a": "1"}, None, "PING", ["x"]),
    ("@ PING x", {}, None, "PING", ["x"]),  # an empty tag section
    ("@a=b;c=d=e PING", {"a": "b", "c": "d=e"}, None, "PING", []),  # only the first '=' splits
    ("@in+valid=1;ok=2 PING", {"ok": "2"}, None, "PING", []),  # keys that are not tag names are ignored
    ("@vendor.example/x=1;/y=3;a/=4;++b=5;a PING", {"vendor.example/x": "1", "a": ""}, None, "PING", []),
    (": PING x", {}, None, "PING", ["x"]),  # an empty source is no source
    ("PING :", {}, None, "PING", [""]),
    ("PING :  :", {}, None, "PING", ["  :"]),
    ("PING a:b c:", {}, None, "PING", ["a:b", "c:"]),
]


def atoms(m: Message) -> tuple[dict[str, str], str | None, str, list[str]]:
    return m.tags, m.source, m.command, m.params


@pytest.mark.parametrize(("line", "tags", "source", "verb", "params"), MSG_SPLIT + MORE_OK)
def test_parse(line: str, tags: dict[str, str], source: str | None, verb: str, params: list[str]) -> None:
    assert atoms(parse(line)) == (tags, source, verb, params)
    assert atoms(parse(line.encode())) == (tags, source, verb, params)  # bytes and str alike


def test_invalid_utf8_becomes_replacement_characters() -> None:
    m = parse(b"@a=caf\xe9 PRIVMSG #c :caf\xe9 \xff\xfe ok \xc3")
    assert m.tags == {"a": "caf\ufffd"}
    assert m.params == ["#c", "caf\ufffd \ufffd\ufffd ok \ufffd"]
    # valid UTF-8 passes untouched
    assert parse("PRIVMSG #c :selamat pagi 🌅 ñ".encode()).params[1] == "selamat pagi 🌅 ñ"
    # and what comes out always serializes
    assert m.serialize() == "@a=caf\ufffd PRIVMSG #c :caf\ufffd \ufffd\ufffd ok \ufffd\r\n".encode()


def test_source_is_split_on_demand() -> None:
    m = parse(":alice!al@alpha.example PRIVMSG #c :hi")
    assert m.prefix == Source("alice", "al", "alpha.example")
    assert parse(":irc.example.com NOTICE * :hi").prefix == Source("irc.example.com", None, None)
    assert parse(":alice@host NOTICE * :hi").prefix == Source("alice", None, "host")
    assert parse(":alice!al NOTICE * :hi").prefix == Source("alice", "al", None)
    assert parse("NOTICE * :hi").prefix is None


def test_client_tags() -> None:
    m = parse("@+typing=active;label=3;+draft/react=x;time=1 TAGMSG #c")
    assert m.client_tags == {"+typing": "active", "+draft/react": "x"}


# --- at most 15 params: RFC 2812, after 14 middles the rest of the line is the last -----------------

def test_fifteen_params_kept_as_they_are() -> None:
    line = "CMD " + " ".join(f"p{i}" for i in range(1, 15)) + " :the last one"
    assert parse(line).params == [f"p{i}" for i in range(1, 15)] + ["the last one"]
    line = "CMD " + " ".join(f"p{i}" for i in range(1, 16))
    assert parse(line).params == [f"p{i}" for i in range(1, 16)]


@pytest.mark.parametrize(("tail", "last"), [
    (" p15 p16", "p15 p16"),
    ("  p15   p16  ", "p15   p16  "),
    (" p15 :x y", "p15 :x y"),
    (" :x y", "x y"),  # 14 middles + trailing: not folded
    (" p15 p16 p17 :", "p15 p16 p17 :"),
])
def test_more_than_fifteen_params_fold_into_the_fifteenth(tail: str, last: str) -> None:
    line = "CMD " + "  ".join(f"p{i}" for i in range(1, 15)) + tail
    m = parse(line)
    assert m.params == [f"p{i}" for i in range(1, 15)] + [last]


def test_a_hundred_params() -> None:
    m = parse("PRIVMSG " + " ".join(f"p{i}" for i in range(100)))
    assert len(m.params) == 15
    assert m.params[:14] == [f"p{i}" for i in range(14)]
    assert m.params[14] == " ".join(f"p{i}" for i in range(14, 100))


# --- malformed and hostile input: a typed error that says what to answer -----------------------

SILENT = None
HOSTILE: list[tuple[bytes, str | None]] = [
    (b"", SILENT),
    (b"\r\n", SILENT),
    (b"\n", SILENT),
    (b" ", SILENT),
    (b" " * 400, SILENT),
    (b"@a=b", SILENT),  # only tags
    (b"@a=b     ", SILENT),
    (b"@=", SILENT),
    (b"@", SILENT),
    (b":src", SILENT),  # only a source
    (b":src    ", SILENT),
    (b"@a :src ", SILENT),
    (b":src :trailing only", SILENT),  # an empty command
    (b"PING\0x", Numeric.ERR_UNKNOWNERROR),
    (b"\0", Numeric.ERR_UNKNOWNERROR),
    (b"\0\0\0\0", Numeric.ERR_UNKNOWNERROR),
    (b"@a=\0 PING", Numeric.ERR_UNKNOWNERROR),
    (b"PRIVMSG #c :hi\rthere", Numeric.ERR_UNKNOWNERROR),  # a lone CR handed to parse directly
    (b"PRIVMSG #c :hi\nQUIT", Numeric.ERR_UNKNOWNERROR),
    (b"\r", Numeric.ERR_UNKNOWNERROR),
    (b"PRIV$MSG x", Numeric.ERR_UNKNOWNCOMMAND),
    (b"PING\tx", Numeric.ERR_UNKNOWNCOMMAND),
    (b"1234 x", Numeric.ERR_UNKNOWNCOMMAND),
    (b"12 x", Numeric.ERR_UNKNOWNCOMMAND),
    (b"PRIV1 x", Numeric.ERR_UNKNOWNCOMMAND),
    ("PR\u0130VMSG x".encode(), Numeric.ERR_UNKNOWNCOMMAND),  # non-ASCII letter
    ("\uff30ING x".encode(), Numeric.ERR_UNKNOWNCOMMAND),  # fullwidth P
    ("\u0661\u0662\u0663 x".encode(), Numeric.ERR_UNKNOWNCOMMAND),  # Arabic-Indic digits
    (b"\xff\xfe x", Numeric.ERR_UNKNOWNCOMMAND),
    (b"@a=" + b"x" * 10_000 + b" PING", Numeric.ERR_INPUTTOOLONG),  # a 10 kB tag section
    (b"@" + b"k;" * 5_000 + b" PING", Numeric.ERR_INPUTTOOLONG),
    (b"PRIVMSG #c :" + b"x" * 600, Numeric.ERR_INPUTTOOLONG),
    (b"x" * 100_000, Numeric.ERR_INPUTTOOLONG),
    (b" " * 600 + b"PING", Numeric.ERR_INPUTTOOLONG),
]


@pytest.mark.parametrize(("line", "answer"), HOSTILE, ids=lambda v: repr(v)[:40])
def test_malformed_input_raises_a_typed_error(line: bytes, answer: str | None) -> None:
    with pytest.raises(IrcParseError) as info:
        parse(line)
    err = info.value
    assert err.numeric == answer
    assert err.silent is (answer is None)
    assert isinstance(err, ValueError) and err.reason
    r = err.reply("alice", "irc.alpha")
    if answer is None:
        assert r is None
    else:
        assert r is not None and r.command == answer and r.params[0] == "alice"
        wire = r.serialize()  # the answer is itself always sendable
        assert wire.startswith(b":irc.alpha " + answer.encode() + b" alice ")
        assert len(wire) <= 512 and b"\0" not in wire


@pytest.mark.parametrize(("line", "wire"), [
    (b"PRIVMSG #c :" + b"x" * 600, b":irc.alpha 417 alice :Input line was too long\r\n"),
    (b"@a=" + b"x" * 5000 + b" PING", b":irc.alpha 417 alice :Input line contained excess tag data\r\n"),
    (b"PRIV$MSG x", b":irc.alpha 421 alice PRIV$MSG :Unknown command\r\n"),
    (b"PING \0", b":irc.alpha 400 alice * :Input line contained a forbidden character\r\n"),
])
def test_the_answers_on_the_wire(line: bytes, wire: bytes) -> None:
    with pytest.raises(IrcParseError) as info:
        parse(line)
    r = info.value.reply("alice", "irc.alpha")
    assert r is not None and r.serialize() == wire


def test_unknown_command_answer_is_bounded() -> None:
    with pytest.raises(IrcParseError) as info:
        parse(b"X" * 200 + b"$ y")
    assert info.value.params == ("X" * 32, "Unknown command")


# --- the limits: 510 bytes + CR LF after the tags; 4094 bytes of tag data from a client -------------

def test_body_limit_boundary() -> None:
    head = b"PRIVMSG #c :"
    ok = head + b"x" * (BODY_TEXT_MAX - len(head))
    assert len(ok) == 510
    assert parse(ok).params[1] == "x" * (510 - len(head))
    assert parse(ok + b"\r\n").params == parse(ok).params  # the terminator is not counted
    with pytest.raises(IrcParseError) as info:
        parse(ok + b"x")
    assert info.value.numeric == Numeric.ERR_INPUTTOOLONG


def test_body_limit_counts_bytes_not_characters() -> None:
    head = "PRIVMSG #c :"
    ok = head + "é" * ((510 - len(head)) // 2)  # 2 bytes each
    assert parse(ok).params[1] == "é" * 249
    with pytest.raises(IrcParseError):
        parse(ok + "é")


def test_tag_limit_boundary() -> None:
    value = "v" * (CLIENT_TAG_DATA_MAX - 2)
    ok = f"@a={value} PING x"
    assert parse(ok).tags == {"a": value}
    with pytest.raises(IrcParseError) as info:
        parse(f"@a={value}v PING x")
    assert info.value.numeric == Numeric.ERR_INPUTTOOLONG
    # a line from a server may carry 8191 bytes of tag section
    big = "v" * (SERVER_TAG_DATA_MAX - 2)
    assert parse(f"@a={big} PING x", tag_limit=SERVER_TAG_DATA_MAX).tags == {"a": big}
    with pytest.raises(IrcParseError):
        parse(f"@a={big}v PING x", tag_limit=SERVER_TAG_DATA_MAX)


def test_the_body_limit_does_not_include_tags() -> None:
    head = "PRIVMSG #c :"
    line = "@a=" + "t" * 4000 + " " + head + "x" * (510 - len(head))
    m = parse(line)
    assert len(m.tags["a"]) == 4000 and len(m.params[1]) == 510 - len(head)


# --- tag value escaping ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("", ""),
    ("plain", "plain"),
    (r"a\sb", "a b"),
    (r"a\:b", "a;b"),
    (r"a\\b", "a\\b"),
    (r"a\rb\nc", "a\rb\nc"),
    (r"\\n", "\\n"),  # character at a time
    (r"\\\\", "\\\\"),
    (r"\x", "x"),  # an unknown escape stands for the character
    (r"\;", ";"),
    ("end\\", "end"),  # a trailing lone backslash is dropped
    ("\\", ""),
    (r"a\\\\", "a\\\\"),
    ("a\\\\\\", "a\\"),
])
def test_unescape_tag_value(raw: str, value: str) -> None:
    assert unescape_tag_value(raw) == value


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_tag_value_escaping_round_trips(value: str) -> None:
    escaped = escape_tag_value(value)
    assert not any(c in escaped for c in "; \r\n\0")
    assert unescape_tag_value(escaped) == value.replace("\0", "")


# --- serializing: the ircdocs msg-join cases -------------------------------------------------------

# (tags, source, verb, params, the accepted forms)
MSG_JOIN = [
    ({}, None, "foo", ["bar", "baz", "asdf"], ["foo bar baz asdf", "foo bar baz :asdf"]),
    ({}, "src", "AWAY", [], [":src AWAY"]),
    ({}, "src", "AWAY", [""], [":src AWAY :"]),
    ({}, "coolguy", "foo", ["bar", "baz", "asdf"], [":coolguy foo bar baz asdf", ":coolguy foo bar baz :asdf"]),
    ({}, None, "foo", ["bar", "baz", "asdf quux"], ["foo bar baz :asdf quux"]),
    ({}, None, "foo", ["bar", "baz", ""], ["foo bar baz :"]),
    ({}, None, "foo", ["bar", "baz", ":asdf"], ["foo bar baz ::asdf"]),
    ({}, "coolguy", "foo", ["bar", "baz", "asdf quux"], [":coolguy foo bar baz :asdf quux"]),
    ({}, "coolguy", "foo", ["bar", "baz", "  asdf quux "], [":coolguy foo bar baz :  asdf quux "]),
    ({}, "coolguy", "PRIVMSG", ["bar", "lol :) "], [":coolguy PRIVMSG bar :lol :) "]),
    ({}, "coolguy", "foo", ["bar", "baz", ""], [":coolguy foo bar baz :"]),
    ({}, "coolguy", "foo", ["bar", "baz", "  "], [":coolguy foo bar baz :  "]),
    ({}, "coolguy", "foo", ["b\tar", "baz"], [":coolguy foo b\tar baz", ":coolguy foo b\tar :baz"]),
    ({"asd": ""}, "coolguy", "foo", ["bar", "baz", "  "], ["@asd :coolguy foo bar baz :  "]),
    ({"a": "b\\and\nk", "d": "gh;764"}, None, "foo", [],
     [r"@a=b\\and\nk;d=gh\:764 foo", r"@d=gh\:764;a=b\\and\nk foo"]),
    ({"a": "b\\and\nk", "d": "gh;764"}, None, "foo", ["par1", "par2"],
     [r"@a=b\\and\nk;d=gh\:764 foo par1 par2", r"@a=b\\and\nk;d=gh\:764 foo par1 :par2"]),
    ({"foo": "\\\\;\\s \r\n"}, None, "COMMAND", [], [r"@foo=\\\\\:\\s\s\r\n COMMAND"]),
]


@pytest.mark.parametrize(("tags", "source", "verb", "params", "matches"), MSG_JOIN)
def test_serialize(tags: dict[str, str], source: str | None, verb: str, params: list[str],
                   matches: list[str]) -> None:
    wire = Message(verb, list(params), source, dict(tags)).serialize()
    assert wire.endswith(b"\r\n")
    assert wire[:-2].decode() in matches
    # and it parses back to the same atoms
    assert atoms(parse(wire)) == (tags, source, verb.upper(), params)


@pytest.mark.parametrize(("params", "wire"), [
    (["#c", "hi"], b"PRIVMSG #c hi\r\n"),  # ':' only when needed
    (["#c", "hi there"], b"PRIVMSG #c :hi there\r\n"),
    (["#c", ":)"], b"PRIVMSG #c ::)\r\n"),
    (["#c", ""], b"PRIVMSG #c :\r\n"),
    (["#c", "a:b"], b"PRIVMSG #c a:b\r\n"),
])
def test_trailing_colon_only_when_needed(params: list[str], wire: bytes) -> None:
    assert Message("PRIVMSG", params).serialize() == wire


@pytest.mark.parametrize(("params", "wire"), [
    (["#c", "line one\r\nQUIT :bye"], b"PRIVMSG #c :line one  QUIT :bye\r\n"),
    (["#c", "a\nb"], b"PRIVMSG #c :a b\r\n"),
    (["#c", "a\rb"], b"PRIVMSG #c :a b\r\n"),
    (["#c", "nul\0here"], b"PRIVMSG #c nulhere\r\n"),
    (["#c", "\r\n"], b"PRIVMSG #c :  \r\n"),
    (["#c\0", "x"], b"PRIVMSG #c x\r\n"),
])
def test_cr_lf_nul_never_reach_the_wire(params: list[str], wire: bytes) -> None:
    out = Message("PRIVMSG", params, None, {"a": "x\0y"}).serialize()
    assert out == b"@a=xy " + wire
    assert out.count(b"\n") == 1 and out.count(b"\r") == 1 and b"\0" not in out


@pytest.mark.parametrize("msg", [
    Message("PRIVMSG", ["", "x"]),
    Message("PRIVMSG", ["a b", "x"]),
    Message("PRIVMSG", [":a", "x"]),
    Message("PRIVMSG", ["\r\n", "x"]),  # a middle param that is only CR LF would become empty
    Message("PRIVMSG", ["a\nb", "x"]),  # ... or two params
    Message("PRIVMSG", ["#c", "x"], source="a b"),
    Message("PRIVMSG", ["#c", "x"], source="a\nb"),
    Message("", ["x"]),
    Message("PRIV MSG", ["x"]),
    Message("PRIVMSG", ["#c", "x"], tags={"bad key": "1"}),
    Message("PRIVMSG", ["#c", "x"], tags={"": "1"}),
    Message("PRIVMSG", ["#c", "x"], tags={"a;b": "1"}),
    Message("PRIVMSG", ["#c", "x"], tags={"a": "v" * SERVER_TAG_DATA_MAX}),
], ids=repr)
def test_unsendable_messages_raise(msg: Message) -> None:
    with pytest.raises(IrcSerializeError):
        msg.serialize()


def test_over_long_line_is_cut_at_a_character_boundary() -> None:
    head = ":alice!alice@alpha PRIVMSG #c "  # no ':': the texts have no space
    for text in ("x" * 1000, "é" * 1000, "🌅" * 1000, "a" + "🌅" * 1000, "ab" + "🌅" * 1000, "abc" + "🌅" * 1000):
        wire = message("alice!alice@alpha", "PRIVMSG", "#c", text, tags={"time": "t" * 3000}).serialize()
        body = wire[wire.index(b" ") + 1:]
        assert len(body) <= 512 and body.endswith(b"\r\n")
        assert len(body) >= 512 - 3  # cut no more than needed: at most 3 bytes of a character
        sent = body[:-2].decode()  # strict: no character was cut in half
        assert sent.startswith(head) and text.startswith(sent[len(head):])


@pytest.mark.parametrize(("data", "limit", "cut"), [
    (b"abc", 5, b"abc"),
    (b"abcdef", 3, b"abc"),
    ("aé".encode(), 2, b"a"),
    ("aé".encode(), 3, "aé".encode()),
    ("🌅🌅".encode(), 7, "🌅".encode()),
    ("🌅".encode(), 3, b""),
])
def test_cut_utf8(data: bytes, limit: int, cut: bytes) -> None:
    assert cut_utf8(data, limit) == cut


_tag_keys = st.from_regex(r"\+?([a-z0-9.\-]{1,8}/)?[A-Za-z0-9\-]{1,8}", fullmatch=True)
_middle = st.text(st.characters(blacklist_characters=" \r\n\0", blacklist_categories=("Cs",)), min_size=1,
                  max_size=8).filter(lambda s: s[0] != ":")
_last = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=40)


@given(tags=st.dictionaries(_tag_keys, st.text(st.characters(blacklist_characters="\0",
                                                            blacklist_categories=("Cs",)), max_size=20), max_size=4),
       source=st.none() | st.from_regex(r"[a-z]{1,8}(![a-z]{1,8}@[a-z.]{1,12})?", fullmatch=True),
       command=st.from_regex(r"[A-Z]{1,10}|[0-9]{3}", fullmatch=True),
       middles=st.lists(_middle, max_size=8), last=st.none() | _last)
@settings(max_examples=400, deadline=None)
def test_serialize_then_parse_round_trips(tags: dict[str, str], source: str | None, command: str,
                                          middles: list[str], last: str | None) -> None:
    params = middles + ([last] if last is not None else [])
    msg = Message(command, params, source, tags)
    assert parse(msg.serialize(), tag_limit=SERVER_TAG_DATA_MAX) == msg


# --- builders ---------------------------------------------------------------------------------------

def test_numeric_builder() -> None:
    assert numeric(1, "alice", "Welcome to realmchat alice", source="alpha").serialize() == \
        b":alpha 001 alice :Welcome to realmchat alice\r\n"
    assert numeric(Numeric.RPL_NAMREPLY, "alice", "=", "#progjar", "alice bob", source="alpha").serialize() == \
        b":alpha 353 alice = #progjar :alice bob\r\n"
    assert numeric("433", "*", "bob", "Nickname is already in use").serialize() == \
        b"433 * bob :Nickname is already in use\r\n"
    assert reply(Numeric.ERR_NOSUCHNICK, "alice", "carol", source="alpha").serialize() == \
        b":alpha 401 alice carol :No such nick/channel\r\n"
    m = numeric(Numeric.RPL_TOPIC, "alice", "#c", "be kind", source="alpha", tags={"label": "7"})
    assert m.serialize() == b"@label=7 :alpha 332 alice #c :be kind\r\n"


def test_message_builder() -> None:
    m = message("bob!bob@beta", "PRIVMSG", "#progjar", "halo", tags={"time": "2026-11-24T07:42:06.268Z",
                                                                       "+draft/reply": "41"})
    assert m.serialize() == b"@time=2026-11-24T07:42:06.268Z;+draft/reply=41 :bob!bob@beta PRIVMSG #progjar halo\r\n"
    assert message(None, "PING", "alpha").serialize() == b"PING alpha\r\n"


def test_text_prefix_len() -> None:
    assert text_prefix_len("bob!bob@beta", "PRIVMSG", "#c") == len(b":bob!bob@beta PRIVMSG #c :")
    assert text_prefix_len(None, "NOTICE", "é") == len("NOTICE é :".encode())


# --- split_text ------------------------------------------------------------------------------------

# prefix_len 500 leaves a budget of 10 bytes per piece
SPLIT = [
    ("", []),
    ("hi", ["hi"]),
    ("0123456789", ["0123456789"]),
    ("0123456789a", ["0123456789", "a"]),
    ("hello world foo", ["hello", "world foo"]),  # at the last space that fits; the space is dropped
    ("hello worl foo", ["hello worl", "foo"]),  # a space right after a full piece
    ("a b c d e f g h", ["a b c d e", "f g h"]),
    ("a verylongwordhere", ["a", "verylongwo", "rdhere"]),
    ("ééééééé", ["ééééé", "éé"]),  # 2-byte characters, never split
    ("aéééééé", ["aéééé", "éé"]),
    ("🌅🌅🌅", ["🌅🌅", "🌅"]),
    ("a🌅🌅🌅", ["a🌅🌅", "🌅"]),
    ("abc🌅🌅", ["abc🌅", "🌅"]),
    ("line one\nline two", ["line one", "line two"]),
    ("a\r\nb\rc\nd", ["a", "b", "c", "d"]),
    ("a\n\n\nb", ["a", "b"]),  # empty lines are dropped
    ("\n\n", []),
    ("  ", ["  "]),
    ("nul\0byte", ["nulbyte"]),
    ("bold \x02x\x02 \x1ditalic\x1d", ["bold \x02x\x02", "\x1ditalic\x1d"]),  # formatting codes are not newlines
    ("a\u2028b\x85c", ["a\u2028b\x85c"]),  # nor are Unicode line separators
]


@pytest.mark.parametrize(("text", "pieces"), SPLIT)
def test_split_text(text: str, pieces: list[str]) -> None:
    assert split_text(500, text) == pieces


def test_split_text_fills_real_lines() -> None:
    prefix = text_prefix_len("alice!alice@alpha.example", "PRIVMSG", "#progjar")
    words = " ".join(f"word{i}" for i in range(300))
    pieces = split_text(prefix, words)
    assert len(pieces) > 1 and " ".join(pieces) == words
    for i, p in enumerate(pieces):
        wire = message("alice!alice@alpha.example", "PRIVMSG", "#progjar", p).serialize()
        assert len(wire) <= 512 and wire.endswith(b" :" + p.encode() + b"\r\n")  # nothing was cut by serialize
        if i < len(pieces) - 1:
            assert len(wire) > 512 - 10  # and each line but the last is nearly full


def test_split_text_refuses_a_prefix_without_room() -> None:
    with pytest.raises(ValueError):
        split_text(507, "x")
    assert split_text(506, "🌅🌅") == ["🌅", "🌅"]


@given(st.text(st.characters(blacklist_categories=("Cs",))), st.integers(0, 506))
@settings(max_examples=400, deadline=None)
def test_split_text_properties(text: str, prefix_len: int) -> None:
    pieces = split_text(prefix_len, text)
    for p in pieces:
        assert p and 0 < len(p.encode()) <= BODY_TEXT_MAX - prefix_len
        assert not any(c in p for c in "\r\n\0")
    # nothing is lost but the line breaks and the one space at each break
    squash = text.replace("\0", "").replace("\r", "").replace("\n", "").replace(" ", "")
    assert "".join(pieces).replace(" ", "") == squash


# --- numerics, ISUPPORT, standard replies ----------------------------------------------------------

# The numerics a modern server sends, each with its name.
NUMERICS = {
    "001": "RPL_WELCOME", "002": "RPL_YOURHOST", "003": "RPL_CREATED", "004": "RPL_MYINFO", "005": "RPL_ISUPPORT",
    "221": "RPL_UMODEIS", "301": "RPL_AWAY", "305": "RPL_UNAWAY", "306": "RPL_NOWAWAY",
    "311": "RPL_WHOISUSER", "312": "RPL_WHOISSERVER", "313": "RPL_WHOISOPERATOR", "314": "RPL_WHOWASUSER",
    "315": "RPL_ENDOFWHO", "316": "RPL_WHOISCHANOP", "317": "RPL_WHOISIDLE", "318": "RPL_ENDOFWHOIS",
    "319": "RPL_WHOISCHANNELS", "321": "RPL_LISTSTART", "322": "RPL_LIST", "323": "RPL_LISTEND",
    "324": "RPL_CHANNELMODEIS", "329": "RPL_CREATIONTIME", "331": "RPL_NOTOPIC", "332": "RPL_TOPIC",
    "333": "RPL_TOPICWHOTIME", "341": "RPL_INVITING", "352": "RPL_WHOREPLY", "353": "RPL_NAMREPLY",
    "366": "RPL_ENDOFNAMES", "367": "RPL_BANLIST", "368": "RPL_ENDOFBANLIST", "372": "RPL_MOTD",
    "375": "RPL_MOTDSTART", "376": "RPL_ENDOFMOTD", "396": "RPL_VISIBLEHOST", "400": "ERR_UNKNOWNERROR",
    "401": "ERR_NOSUCHNICK", "403": "ERR_NOSUCHCHANNEL", "404": "ERR_CANNOTSENDTOCHAN",
    "405": "ERR_TOOMANYCHANNELS", "409": "ERR_NOORIGIN", "411": "ERR_NORECIPIENT", "412": "ERR_NOTEXTTOSEND",
    "417": "ERR_INPUTTOOLONG", "421": "ERR_UNKNOWNCOMMAND", "422": "ERR_NOMOTD", "431": "ERR_NONICKNAMEGIVEN",
    "432": "ERR_ERRONEUSNICKNAME", "433": "ERR_NICKNAMEINUSE", "436": "ERR_NICKCOLLISION",
    "441": "ERR_USERNOTINCHANNEL", "442": "ERR_NOTONCHANNEL", "443": "ERR_USERONCHANNEL",
    "451": "ERR_NOTREGISTERED", "461": "ERR_NEEDMOREPARAMS", "462": "ERR_ALREADYREGISTERED",
    "464": "ERR_PASSWDMISMATCH", "465": "ERR_YOUREBANNEDCREEP", "471": "ERR_CHANNELISFULL",
    "472": "ERR_UNKNOWNMODE", "473": "ERR_INVITEONLYCHAN", "474": "ERR_BANNEDFROMCHAN", "475": "ERR_BADCHANNELKEY",
    "476": "ERR_BADCHANMASK", "477": "ERR_NOCHANMODES", "481": "ERR_NOPRIVILEGES", "482": "ERR_CHANOPRIVSNEEDED",
    "502": "ERR_USERSDONTMATCH", "524": "ERR_HELPNOTFOUND", "670": "RPL_STARTTLS", "691": "ERR_STARTTLS",
    "900": "RPL_LOGGEDIN", "901": "RPL_LOGGEDOUT", "902": "ERR_NICKLOCKED", "903": "RPL_SASLSUCCESS",
    "904": "ERR_SASLFAIL", "905": "ERR_SASLTOOLONG", "906": "ERR_SASLABORTED", "907": "ERR_SASLALREADY",
    "908": "RPL_SASLMECHS",
}


@pytest.mark.parametrize(("code", "name"), NUMERICS.items())
def test_numeric_names(code: str, name: str) -> None:
    assert Numeric[name] == code
    assert name_of(code) == name and name_of(int(code)) == name
    assert Numeric[name].name == name


def test_numerics_are_usable_as_commands_and_texts_are_sendable() -> None:
    assert name_of("999") is None
    for code, text in TEXT.items():
        assert isinstance(code, Numeric) and text and "\n" not in text
        assert parse(reply(code, "alice", source="alpha").serialize()).command == code


def test_parse_errors_answer_with_the_listed_numerics() -> None:
    for line, code in [(b"x" * 600, Numeric.ERR_INPUTTOOLONG), (b"P$ x", Numeric.ERR_UNKNOWNCOMMAND),
                       (b"\0", Numeric.ERR_UNKNOWNERROR)]:
        with pytest.raises(IrcParseError) as info:
            parse(line)
        assert info.value.numeric == code and name_of(info.value.numeric) == code.name


@pytest.mark.parametrize(("value", "escaped"), [
    ("#", "#"),
    ("a b", "a\\x20b"),
    ("k=v", "k\\x3Dv"),
    ("back\\slash", "back\\x5Cslash"),
    ("é", "\\xC3\\xA9"),
    ("tab\t", "tab\\x09"),
    ("(ov)@+", "(ov)@+"),
])
def test_isupport_value_escaping(value: str, escaped: str) -> None:
    assert escape_isupport_value(value) == escaped


def test_isupport_lines() -> None:
    tokens: dict[str, str | bool | None] = {"CASEMAPPING": "ascii", "CHANTYPES": "#", "NICKLEN": "32",
                                            "NETWORK": "realm chat", "UTF8ONLY": None, "WHOX": True,
                                            "EMPTY": "", "GONE": False}
    tokens.update({f"T{i}": str(i) for i in range(30)})
    lines = isupport("alice", tokens, source="alpha")
    assert [len(m.params) - 2 for m in lines] == [13, 13, 12]
    first = lines[0].serialize()
    assert first.startswith(b":alpha 005 alice CASEMAPPING=ascii CHANTYPES=# NICKLEN=32 NETWORK=realm\\x20chat "
                            b"UTF8ONLY WHOX EMPTY -GONE T0=0 T1=1 ")
    assert first.endswith(b" :are supported by this server\r\n")
    sent = [t for m in lines for t in parse(m.serialize()).params[1:-1]]
    assert len(sent) == len(tokens) and sent[-1] == "T29=29"
    for m in lines:
        assert m.params[0] == "alice" and m.params[-1] == "are supported by this server"
        assert len(m.serialize()) <= 512


def test_isupport_keeps_lines_within_512_bytes() -> None:
    tokens = [(f"LONG{i}", "v" * 100) for i in range(12)]
    lines = isupport("alice", tokens, source="irc.alpha.example")
    assert len(lines) > 1
    assert sum(len(m.params) - 2 for m in lines) == 12
    for m in lines:
        assert len(m.serialize()) <= 512


@pytest.mark.parametrize("tokens", [{"": "x"}, {"A B": "x"}, {"A=B": "x"}, {"X": "v" * 600}, {"A-B": "1"}])
def test_isupport_refuses_bad_tokens(tokens: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        isupport("alice", tokens)


def test_standard_replies() -> None:
    assert standard_reply("FAIL", "CHATHISTORY", "INVALID_TARGET", "LATEST", "#x",
                          description="No such channel", source="alpha").serialize() == \
        b":alpha FAIL CHATHISTORY INVALID_TARGET LATEST #x :No such channel\r\n"
    assert standard_reply("WARN", None, "TOO_FAST", description="Slow down").serialize() == \
        b"WARN * TOO_FAST :Slow down\r\n"
    assert standard_reply("NOTE", "AUTHENTICATE", "MORE", description="x", tags={"label": "1"}).serialize() == \
        b"@label=1 NOTE AUTHENTICATE MORE x\r\n"
    for kind, code in [("ERROR", "X"), ("FAIL", "bad"), ("FAIL", ""), ("FAIL", "A B")]:
        with pytest.raises(ValueError):
            standard_reply(kind, "X", code, description="d")


# --- case mapping and names --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "ascii_", "rfc1459"), [
    ("Alice", "alice", "alice"),
    ("ALICE_.-09", "alice_.-09", "alice_.-09"),
    ("[Bob]\\~", "[bob]\\~", "{bob}|^"),
    ("{bob}|^", "{bob}|^", "{bob}|^"),
    ("\u212a", "\u212a", "\u212a"),  # the Kelvin sign stays: str.lower() would make it "k"
    ("ÅNGSTRÖM", "ÅngstrÖm", "ÅngstrÖm"),
    ("\u0130", "\u0130", "\u0130"),
])
def test_fold(name: str, ascii_: str, rfc1459: str) -> None:
    assert casemap.fold_ascii(name) == ascii_
    assert casemap.fold_rfc1459(name) == rfc1459


@given(st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True))
def test_advertised_casemapping_matches_realmchat_identity(name: str) -> None:
    assert casemap.CASEMAPPING == "ascii"
    assert is_valid_name(name)
    assert casemap.fold(name) == name_key(name) == casemap.fold_rfc1459(name)


@pytest.mark.parametrize(("nick", "ok"), [
    ("alice", True), ("Alice_2", True), ("a", True), ("x" * 32, True), ("john.doe", True), ("42", True),
    ("", False), ("x" * 33, False), ("al ice", False), ("#alice", False), ("al!ce", False), ("al@ce", False),
    ("al:ce", False), ("[alice]", False), ("al\u0430ce", False), ("\u212aate", False), ("alice\n", False),
    ("*", False), ("al,ce", False),
])
def test_nick_validation(nick: str, ok: bool) -> None:
    assert casemap.is_valid_nick(nick) is ok


@pytest.mark.parametrize(("channel", "group"), [
    ("#progjar", "progjar"), ("#Team.A-1", "Team.A-1"), ("#" + "g" * 32, "g" * 32),
    ("progjar", None), ("#", None), ("##progjar", None), ("&progjar", None), ("#" + "g" * 33, None),
    ("#a,b", None), ("#a b", None), ("#caf\u00e9", None), ("", None), ("#a\x07", None),
])
def test_channel_validation(channel: str, group: str | None) -> None:
    assert casemap.channel_to_group(channel) == group
    assert casemap.is_valid_channel(channel) is (group is not None)
    if group is not None:
        assert casemap.group_to_channel(group) == channel


def test_name_lengths() -> None:
    assert casemap.NICKLEN == 32 and casemap.CHANNELLEN == 33 and casemap.CHANTYPES == "#"
