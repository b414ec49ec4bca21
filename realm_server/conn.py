"""One client connection as an asyncio Protocol: the bytes the client sent, read as bounded
lines and payload bytes, and the write side's flow control. It holds no task: the realm starts
one (Realm.serve) when a complete line, an over-long line or the end of input is there, and that
task ends again once no complete line is left, so an idle connection costs a few small objects.

Lines follow the framing of realmchat.framing.LineReader: at most `max_line` bytes; an
over-long line is reported once (LINE_TOO_LONG) and its tail discarded up to its newline, never
parsed as a command of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from realmchat.framing import CHUNK, LINE_TOO_LONG, LineTooLong

if TYPE_CHECKING:
    from .limits import Pacer
    from .session import Session

EOF = None  # next_line: the input ended


class NeedMore:
    __slots__ = ()


NEED_MORE = NeedMore()  # next_line: no complete line yet


class Conn(asyncio.Protocol):
    __slots__ = ("_buf", "_discarding", "_drain_waiter", "_eof", "_exc", "_lost", "_on_input", "_on_open",
                 "_paused", "_read_waiter", "_write_paused", "ip", "max_line", "pacer", "session", "task",
                 "transport")

    def __init__(self, max_line: int, on_open: Callable[[Conn], Session | None],
                 on_input: Callable[[Conn], None]) -> None:
        self.max_line = max_line
        self._on_open = on_open    # makes the Session (None: the connection was refused)
        self._on_input = on_input  # starts the task that serves the connection
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None  # set by on_input while it runs
        self.ip = ""
        self.pacer: Pacer | None = None  # flood control before login, made on first command
        self._buf = bytearray()
        self._discarding = False
        self._eof = False
        self._exc: BaseException | None = None
        self._lost = False
        self._paused = False        # reading paused: the buffer is over its bound
        self._write_paused = False  # the transport holds bytes the kernel did not take
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # ---- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's is no asyncio.Transport subclass)
        self.session = self._on_open(self)

    def data_received(self, data: bytes) -> None:
        if self.session is None:
            return  # refused: its one ERROR line is on its way
        buf = self._buf
        buf += data
        if not self._paused and len(buf) > 2 * (self.max_line + 1):
            # Like StreamReader: stop reading, TCP pushes back on the client.
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        if self._read_waiter is not None:
            self._wake_reader()
        elif self.task is None and (b"\n" in data or len(buf) > self.max_line):
            self._on_input(self)

    def eof_received(self) -> bool:
        self._eof = True
        self._input_changed()
        # Over TCP keep the write side open: a client that half-closed after its commands
        # (printf ... | nc) still gets every response. TLS cannot half-close.
        return self.transport is None or self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._exc = exc
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError("Connection lost") if exc is None else exc)
        self._input_changed()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w, self._drain_waiter = self._drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def _input_changed(self) -> None:
        if self.session is None:
            return
        if self._read_waiter is not None:
            self._wake_reader()
        elif self.task is None:
            self._on_input(self)

    def _wake_reader(self) -> None:
        w, self._read_waiter = self._read_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # ---- reading ---------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _consumed(self) -> None:
        if not self._buf:
            self._buf = bytearray()  # a fresh one: an idle connection keeps no grown buffer
        if self._paused and len(self._buf) <= self.max_line + 1:
            self._paused = False
            if not self._lost:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def next_line(self) -> bytes | LineTooLong | NeedMore | None:
        """The next line without its newline, LINE_TOO_LONG once per over-long line, NEED_MORE
        while no complete line is buffered, or EOF (a final line without newline comes first).
        After a reset the complete lines already received are still returned (the client
        counted them as delivered); then ConnectionError."""
        buf = self._buf
        try:
            while True:
                i = buf.find(b"\n")
                if self._discarding:
                    if i < 0:
                        buf.clear()
                        return EOF if self._eof else NEED_MORE
                    del buf[:i + 1]
                    self._discarding = False
                    continue
                if i >= 0:
                    if i > self.max_line:
                        del buf[:i + 1]
                        return LINE_TOO_LONG
                    line = bytes(buf[:i])
                    del buf[:i + 1]
                    return line
                if len(buf) > self.max_line:
                    buf.clear()
                    self._discarding = True
                    return LINE_TOO_LONG
                if not self._eof:
                    return NEED_MORE
                if self._exc is not None:
                    raise ConnectionResetError(str(self._exc))  # an unterminated line after a reset is not a line
                if buf:
                    line = bytes(buf)
                    buf.clear()
                    return line
                return EOF
        finally:
            self._consumed()

    async def _wait_input(self) -> None:
        self._read_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._read_waiter
        finally:
            self._read_waiter = None

    async def read(self, n: int) -> bytes:
        """Up to n bytes (b'' at the end of input), for payloads."""
        while not self._buf:
            if self._eof:
                if self._exc is not None:
                    raise ConnectionResetError(str(self._exc))
                return b""
            await self._wait_input()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._consumed()
        return data

    async def iter_payload(self, size: int, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """Yields exactly `size` bytes in chunks (raises IncompleteReadError at early EOF)."""
        left = size
        while left > 0:
            data = await self.read(min(chunk, left))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            yield data

    # ---- writing ---------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Returns once the transport handed every byte to the kernel (write buffer limits 0)."""
        if self.transport is not None and self.transport.is_closing():
            await asyncio.sleep(0)  # let connection_lost run, as StreamWriter.drain does
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._write_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter
