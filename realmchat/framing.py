"""Bounded reading of the text protocol's framing from an asyncio StreamReader: lines of at most
`limit` bytes and length-prefixed binary payloads. Used by the realm (client commands) and by
chat_cli (responses, events, downloads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

CHUNK = 64 * 1024


class LineTooLong:
    """Returned (not raised) by read_line for an over-long line. The caller answers it at once;
    the reader has already started discarding the rest of that line up to its newline."""

    __slots__ = ()


LINE_TOO_LONG = LineTooLong()


class LineReader:
    """Reads lines of at most `limit` bytes. The tail of an over-long line is discarded up to the
    next newline and never returned as a line of its own."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self.reader = reader
        self.limit = limit
        self._discarding = False

    async def read_line(self) -> bytes | LineTooLong | None:
        """The next line without its newline, LINE_TOO_LONG once per over-long line, or None at
        EOF (a final line without newline is returned first)."""
        while True:
            try:
                line = await self.reader.readuntil(b"\n")
            except (ConnectionError, OSError):
                salvaged = self._salvage()
                if salvaged is None:
                    raise
                line = salvaged
            except asyncio.IncompleteReadError as e:
                if self._discarding or not e.partial:
                    return None
                if len(e.partial) > self.limit:
                    self._discarding = True  # reported once; the next read is EOF
                    return LINE_TOO_LONG
                return e.partial
            except asyncio.LimitOverrunError as e:
                # Drop what is buffered of this line (up to, not including, any newline found);
                # keep discarding until the newline arrives.
                await self.reader.readexactly(e.consumed)
                if not self._discarding:
                    self._discarding = True
                    return LINE_TOO_LONG
                continue
            if self._discarding:
                self._discarding = False
                continue
            if len(line) - 1 > self.limit:
                return LINE_TOO_LONG
            return line[:-1]

    def _salvage(self) -> bytes | None:
        """A complete line the reader still holds after a reset. A reset does not take back bytes
        already received (the peer counted them as delivered), but asyncio's reader raises the
        error before handing out what it buffered. An unterminated last line is not a line."""
        buf = getattr(self.reader, "_buffer", None)
        if not buf:
            return None
        end = buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(buf[:end + 1])
        del buf[:end + 1]
        return line

    async def iter_payload(self, size: int, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """Yields exactly `size` bytes in chunks (raises IncompleteReadError at early EOF)."""
        left = size
        while left > 0:
            data = await self.reader.read(min(chunk, left))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            yield data

    async def discard(self, size: int) -> None:
        """Consumes and drops `size` payload bytes so they are never parsed as commands."""
        async for _ in self.iter_payload(size):
            pass
