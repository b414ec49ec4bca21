"""Message text with control characters can never forge a protocol line: text sent over gRPC
(where \\r and \\n are legal, as with grpcurl) or over the text protocol reaches a realm client as
exactly one JSON line, with every control character JSON-escaped, so no raw ESC, CR or LF ever
reaches another user's socket or terminal. NUL is refused outright with INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import grpc
import pytest

from .hardutil import Grpc
from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]

FORGERIES = [
    'hi\r\n{"status":"OK","id":1,"ts":"x"}\n',                                  # a fake response
    'hi\n{"event":"private","id":1,"from":"admin","to":"you","text":"pay me","ts":"x"}\n',  # a fake event
    "\x1b[2J\x1b[H\x1b[31mred alert\x1b[0m",                                    # ANSI: clear screen, colour
    "\x1b]0;pwned title\x07\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\",  # OSC title, hyperlink
    "bell\x07 and backspace\x08\x08 and vertical tab\x0b form feed\x0c",
    "\r" * 5 + "carriage returns only",
    "\x1bP+q\x1b\\ device control string",
]


async def raw_line(c: TextClient, timeout: float = 10.0) -> bytes:
    return await asyncio.wait_for(c.reader.readline(), timeout)


def assert_clean(raw: bytes) -> None:
    """One line, and no ASCII control byte other than its final newline."""
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
    assert not any(b < 0x20 for b in raw[:-1]), raw


async def test_grpc_text_with_controls_is_one_escaped_line(stack: Stack, uname: Names) -> None:
    a, b = uname("inj_a"), uname("inj_b")
    cb = await login(*stack.realm("alpha"), b)
    g = Grpc(stack.main.addr)
    try:
        token = await g.login(a)
        for text in FORGERIES:
            sent = await g.send_private(token, b, text)
            raw = await raw_line(cb)
            assert_clean(raw)
            ev = json.loads(raw)
            assert ev == {"event": "private", "id": sent.id, "from": a, "to": b, "text": text, "ts": sent.ts}
            assert b"\\u001b" in raw or "\x1b" not in text  # ESC travels as the six characters \u001b
        await cb.no_event(0.3)  # nothing forged came after
        await cb.ok("ping")
        # NUL is refused outright (storage engines cannot keep it), with a clear error
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await g.send_private(token, b, "nul\x00byte")
        assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "NUL" in (ei.value.details() or "")
        # The same texts waiting in an inbox: one response line holding all of them.
        await cb.ok("logout")
        for text in FORGERIES:
            await g.send_private(token, b, text)
        await cb.ok(f"auth {b} pw-secret")
        await cb.send_raw(b"inbox\n")
        raw = await raw_line(cb)
        assert_clean(raw)
        assert [m["text"] for m in json.loads(raw)["messages"]] == FORGERIES
        await cb.ok("ping")
    finally:
        await g.close()


async def test_text_protocol_controls_inside_a_line_are_escaped(stack: Stack, uname: Names) -> None:
    a, b = uname("inj_c"), uname("inj_d")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    text = "x\ry \x1b[31mred\x1b[0m \x07 end"  # \r inside a line is text, not a line end
    await ca.ok(f"sendprivate {b} {text}")
    raw = await raw_line(cb)
    assert_clean(raw)
    assert json.loads(raw)["text"] == text
    r = await ca.err(f"sendprivate {b} nul\x00inside", "INVALID_ARGUMENT")  # refused, and the
    assert "\x00" not in r["message"]                                      # refusal is clean
    g = uname("inj_g")
    await ca.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    await ca.ok(f"sendgroup {g} {text}")
    raw = await raw_line(cb)
    assert_clean(raw)
    assert json.loads(raw)["text"] == text


async def test_error_messages_do_not_echo_raw_controls(stack: Stack) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    for line in (b"\x1b[2Jfrob\x00nicate\r\n", b"register \x1b[31mevil pw-secret\n", b"history \x1b]0;t\x07\n"):
        await c.send_raw(line)
        raw = await raw_line(c)
        assert_clean(raw)
        assert json.loads(raw)["status"] == "ERROR"


# DEL, the C1 controls (U+0085 NEL; U+009B is CSI on terminals that honour 8-bit controls), the
# Unicode line/paragraph separators (str.splitlines() splits on them) and bidi overrides are valid
# in JSON strings but act on screens: the codec escapes them too.
async def test_c1_del_separators_and_bidi_are_escaped_too(stack: Stack, uname: Names) -> None:
    a, b = uname("inj_e"), uname("inj_f")
    cb = await login(*stack.realm("alpha"), b)
    g = Grpc(stack.main.addr)
    try:
        token = await g.login(a)
        text = "del\x7f nel\x85 csi\x9b31m ls\u2028ps\u2029 rlo\u202e lri\u2066"
        await g.send_private(token, b, text)
        raw = await raw_line(cb)
        assert json.loads(raw)["text"] == text  # always true: the text arrives intact
        line = raw.decode()
        bad = [ch for ch in line if ch == "\x7f" or "\x80" <= ch <= "\x9f" or ch in "\u2028\u2029"
               or "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069"]
        assert not bad, f"raw in the line: {[hex(ord(ch)) for ch in bad]}"
    finally:
        await g.close()
