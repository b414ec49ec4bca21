"""The realm's input framing (realm_server/conn.py) in process, the way h11 tests its parser:
any bytes, cut into any chunks, read at any moments, must come out as the lines a plain reference
splitter finds, over-long lines reported once and never parsed, the buffer bounded while reading
is paused, and the complete lines before a reset still handed out."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from realm_server.conn import EOF, NEED_MORE, Conn
from realmchat.framing import LINE_TOO_LONG

MAX_LINE = 16


class Transport:
    """What Conn asks of its transport while reading: flow control, and nothing else."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused, "resumed while not paused"
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def expected(wire: bytes, reset: bool) -> list[Any]:
    """The reference: split at newlines; a line over MAX_LINE is LINE_TOO_LONG; at the end an
    unterminated line is a line (EOF) or, after a reset, an error, unless it is over-long."""
    *lines, tail = wire.split(b"\n")
    out: list[Any] = [line if len(line) <= MAX_LINE else LINE_TOO_LONG for line in lines]
    if len(tail) > MAX_LINE:
        return [*out, LINE_TOO_LONG, EOF]
    if reset:
        return [*out, ConnectionResetError]
    return [*out, tail, EOF] if tail else [*out, EOF]


def read_all(conn: Conn, out: list[Any], limit: int) -> None:
    """Reads what is there (at most `limit` items, NEED_MORE ends it)."""
    for _ in range(limit):
        try:
            item = conn.next_line()
        except ConnectionResetError:
            out.append(ConnectionResetError)
            return
        if item is NEED_MORE:
            return
        out.append(item)
        if item is EOF:
            return


line = st.binary(max_size=2 * MAX_LINE).filter(lambda b: b"\n" not in b) | st.just(b"x" * MAX_LINE)
wires = st.lists(line, max_size=12).map(b"\n".join) | st.binary(max_size=120)


@settings(max_examples=400, deadline=None)
@given(wire=wires, cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30),
       reads=st.lists(st.integers(0, 3), max_size=30), reset=st.booleans())
def test_any_bytes_in_any_chunks_read_at_any_time_give_the_reference_lines(
        wire: bytes, cuts: list[int], reads: list[int], reset: bool) -> None:
    woken: list[int] = []
    conn = Conn(MAX_LINE, on_open=lambda c: object(), on_input=lambda c: woken.append(1))  # type: ignore[arg-type,return-value]
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    out: list[Any] = []
    pos, step = 0, 0
    while pos < len(wire):
        if transport.paused:  # a paused transport delivers nothing: the reader must drain
            read_all(conn, out, 1)
            assert out[-1] is not EOF
            continue
        size = cuts[step % len(cuts)]
        conn.data_received(wire[pos:pos + size])
        pos += size
        # Bounded: reading pauses once two lines' worth is buffered; at most a chunk more arrives.
        assert conn.buffered <= 2 * (MAX_LINE + 1) + 40
        read_all(conn, out, reads[step % len(reads)] if reads else 0)
        step += 1
    if reset:
        conn.connection_lost(ConnectionResetError("reset by peer"))
    else:
        conn.eof_received()
    read_all(conn, out, 10_000)
    assert out == expected(wire, reset)
    assert reset or not transport.paused, "all read, reading goes on"
    assert woken, "the realm was told there was input"


def test_a_line_of_exactly_the_limit_is_a_line_and_one_byte_more_is_not() -> None:
    conn = Conn(MAX_LINE, on_open=lambda c: object(), on_input=lambda c: None)  # type: ignore[arg-type,return-value]
    conn.connection_made(Transport())  # type: ignore[arg-type]
    conn.data_received(b"a" * MAX_LINE + b"\n" + b"b" * (MAX_LINE + 1) + b"\nok\n")
    assert [conn.next_line() for _ in range(4)] == [b"a" * MAX_LINE, LINE_TOO_LONG, b"ok", NEED_MORE]
