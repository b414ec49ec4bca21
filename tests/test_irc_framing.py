"""The IRC edge's sans-IO framing (realm_server/irc/framing.py), as h11 tests its parser: any
bytes, cut into any chunks, come out as the lines a plain reference splitter finds; over-long
lines are reported once, never handed out, and never held in memory."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realm_server.irc.codec import IrcParseError, Message, parse
from realm_server.irc.framing import LINE_MAX, Eof, Event, LineBuffer, LineTooLong
from realm_server.irc.numerics import Numeric, reply


def events(*chunks: bytes, limit: int = LINE_MAX, eof: bool = False) -> list[Event]:
    buf = LineBuffer(limit)
    out: list[Event] = []
    for chunk in chunks:
        buf.feed(chunk)
        out.extend(buf)
        assert buf.next_event() is None
        assert buf.buffered < limit
    if eof:
        buf.feed_eof()
        out.extend(buf)
    return out


X = b"x"
CASES: list[tuple[list[bytes], list[Event]]] = [
    ([b"PING a\r\n"], [b"PING a"]),
    ([b"PING a\n"], [b"PING a"]),
    ([b"a\r\nb\nc\r\n"], [b"a", b"b", b"c"]),
    ([b"PRIVMSG #c :hi\rthere\r\n"], [b"PRIVMSG #c :hithere"]),  # a lone CR is dropped
    ([b"\rPING\r\r\n"], [b"PING"]),
    ([b"\r\n\r\n\n"], []),  # empty lines are dropped
    ([b"\r\r\r\n", b"\r"], []),
    ([b"PI", b"NG", b" a", b"\r", b"\n"], [b"PING a"]),
    ([b"PING a\r", b"\nPING b\r\n"], [b"PING a", b"PING b"]),
    ([b"PI\0NG\n"], [b"PI\0NG"]),  # NUL is the parser's business
    ([b"caf\xe9\n"], [b"caf\xe9"]),  # so is UTF-8
    ([X * 9000 + b"\nPING\n"], [LineTooLong(9001), b"PING"]),
    ([X * 9000, X * 9000, b"\r\nPING\n"], [LineTooLong(18002), b"PING"]),
    ([b"PING a\n" + X * 9000, b"\nPING b\n"], [b"PING a", LineTooLong(9001), b"PING b"]),
    ([X * (LINE_MAX - 2) + b"\r\n"], [X * (LINE_MAX - 2)]),  # exactly the limit, CR LF included
    ([X * (LINE_MAX - 1) + b"\n"], [X * (LINE_MAX - 1)]),
    ([X * (LINE_MAX - 1) + b"\r\n"], [LineTooLong(LINE_MAX + 1)]),
    ([X * (LINE_MAX - 1), b"\r\n"], [LineTooLong(LINE_MAX + 1)]),
    ([X * LINE_MAX, b"\n"], [LineTooLong(LINE_MAX + 1)]),
    ([X * 20000 + b"\n" + X * 20000 + b"\nok\n"], [LineTooLong(20001), LineTooLong(20001), b"ok"]),
    ([b"\n" * 10000 + b"ok\n"], [b"ok"]),
]


@pytest.mark.parametrize(("chunks", "expected"), CASES, ids=lambda v: repr(v)[:50])
def test_lines(chunks: list[bytes], expected: list[Event]) -> None:
    assert events(*chunks) == expected
    assert events(b"".join(chunks)) == expected  # one chunk
    wire = b"".join(chunks)
    assert events(*(wire[i:i + 1] for i in range(len(wire)))) == expected  # a byte at a time


@pytest.mark.parametrize(("chunks", "expected"), [
    ([], [Eof(0)]),
    ([b"PING a\r\n"], [b"PING a", Eof(0)]),
    ([b"PING a\r\nPING b"], [b"PING a", Eof(6)]),  # an unterminated last line is not a command
    ([b"PING a\r\n" + X * 9000], [b"PING a", LineTooLong(9000), Eof(0)]),
    ([X * 9000 + b"\n"], [LineTooLong(9001), Eof(0)]),
])
def test_eof(chunks: list[bytes], expected: list[Event]) -> None:
    assert events(*chunks, eof=True) == expected


def test_after_eof() -> None:
    buf = LineBuffer()
    buf.feed_eof()
    buf.feed_eof()  # harmless
    assert list(buf) == [Eof(0)]
    assert buf.next_event() is None
    with pytest.raises(RuntimeError):
        buf.feed(b"PING\n")


def test_limit_must_leave_room() -> None:
    with pytest.raises(ValueError):
        LineBuffer(1)
    assert events(b"a\n\n", limit=2) == [b"a"]
    assert events(b"ab\n", limit=2) == [LineTooLong(3)]


def test_the_limits_are_the_ircv3_ones() -> None:
    assert LINE_MAX == 8191 + 512


def test_a_peer_that_never_sends_lf_cannot_grow_the_buffer() -> None:
    buf = LineBuffer()
    chunk = X * 65536
    tracemalloc.start()
    try:
        buf.feed(chunk)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(160):  # 10 MiB
            buf.feed(chunk)
            assert buf.buffered == 0 and buf.next_event() is None
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 4096
    buf.feed(b"tail\r\nPING x\r\n")
    assert list(buf) == [LineTooLong(161 * 65536 + 6), b"PING x"]


def test_a_slow_drip_is_bounded_too() -> None:
    buf = LineBuffer(100)
    for _ in range(5000):
        buf.feed(b"y")
        assert buf.buffered < 100
    buf.feed(b"\nok\n")
    assert list(buf) == [LineTooLong(5001), b"ok"]


def reference(wire: bytes, limit: int, eof: bool) -> list[Event]:
    """The plain splitter: split at LF; too long is LineTooLong; CRs and empty lines dropped."""
    *lines, tail = wire.split(b"\n")
    out: list[Event] = []
    for line in lines:
        if len(line) + 1 > limit:
            out.append(LineTooLong(len(line) + 1))
        elif line.replace(b"\r", b""):
            out.append(line.replace(b"\r", b""))
    if eof:
        if len(tail) >= limit:
            out += [LineTooLong(len(tail)), Eof(0)]
        else:
            out.append(Eof(len(tail)))
    return out


_pieces = st.sampled_from([b"a", b"bc", b" ", b"\r", b"\n", b"\r\n", b"\xff", b"\0", b"x" * 7, b"y" * 20])


@given(st.lists(_pieces, max_size=60), st.lists(st.integers(1, 30), max_size=20), st.booleans(),
       st.integers(2, 24))
@settings(max_examples=500, deadline=None)
def test_any_chunking_gives_the_reference_lines(parts: list[bytes], cuts: list[int], eof: bool, limit: int) -> None:
    wire = b"".join(parts)
    chunks = []
    pos = 0
    for n in cuts:
        chunks.append(wire[pos:pos + n])
        pos += n
    chunks.append(wire[pos:])
    assert events(*chunks, limit=limit, eof=eof) == reference(wire, limit, eof)


def test_framing_and_parsing_together() -> None:
    """What the edge will do: each event becomes a message, or an answer, or nothing."""
    wire = (b"CAP LS 302\r\nNICK alice\r\n\r\n   \r\nPRIVMSG #c :" + X * 9000 + b"\r\n"
            b"PRIVMSG #c :" + X * 600 + b"\r\n@+typing=active TAGMSG #c\nPING\0\r\nPING :x\r")
    buf = LineBuffer()
    out: list[Message | bytes | None] = []
    for i in range(0, len(wire), 1000):
        buf.feed(wire[i:i + 1000])
        for event in buf:
            if isinstance(event, LineTooLong):
                out.append(reply(Numeric.ERR_INPUTTOOLONG, "alice", source="alpha").serialize())
                continue
            assert isinstance(event, bytes)
            try:
                out.append(parse(event))
            except IrcParseError as e:
                r = e.reply("alice", "alpha")
                out.append(None if r is None else r.serialize())
    buf.feed(b"\n")
    out.extend(parse(e) for e in buf if isinstance(e, bytes))
    assert out == [
        Message("CAP", ["LS", "302"]),
        Message("NICK", ["alice"]),
        None,  # "   ": ignored
        b":alpha 417 alice :Input line was too long\r\n",  # refused by the framing
        b":alpha 417 alice :Input line was too long\r\n",  # refused by the parser
        Message("TAGMSG", ["#c"], None, {"+typing": "active"}),
        b":alpha 400 alice * :Input line contained a forbidden character\r\n",
        Message("PING", ["x"]),
    ]
