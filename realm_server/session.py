"""One client connection: its login state and its single writer. Responses, events and binary
payloads all go through one queue drained by one task, so nothing ever interleaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from realmchat.framing import LineReader

log = logging.getLogger(__name__)
HIGH_WATER = 256 * 1024


@dataclass(eq=False)
class Stream:
    """A header line followed by raw bytes, written as one unit."""

    header: bytes
    chunks: AsyncIterator[bytes]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_line: int,
                 max_queue: int) -> None:
        self.lines = LineReader(reader, max_line)
        self.writer = writer
        self.max_queue = max_queue
        self.peer = writer.get_extra_info("peername")
        self.user: str = ""
        self.token: str = ""
        self.session_id = 0
        self.closed = asyncio.Event()
        self._out: asyncio.Queue[bytes | Stream | None] = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._write_loop())

    @property
    def authed(self) -> bool:
        return bool(self.token)

    def login(self, user: str, token: str, session_id: int) -> None:
        self.user, self.token, self.session_id = user, token, session_id

    def logout(self) -> None:
        self.user, self.token, self.session_id = "", "", 0

    def send(self, line: bytes) -> None:
        """Queues a response line."""
        if not self.closed.is_set():
            self._out.put_nowait(line)

    def send_event(self, line: bytes) -> None:
        """Queues an event; a client that does not read its events is disconnected rather than
        letting its queue grow without bound."""
        if self.closed.is_set():
            return
        if self._out.qsize() >= self.max_queue:
            log.warning("%s (%s) does not read: disconnecting", self.peer, self.user)
            self.abort()
            return
        self._out.put_nowait(line)

    async def send_stream(self, header: bytes, chunks: AsyncIterator[bytes]) -> None:
        """Queues header + payload and waits until the writer has written all of it."""
        item = Stream(header, chunks)
        self._out.put_nowait(item)
        await item.done

    async def _write_loop(self) -> None:
        w = self.writer
        try:
            while True:
                item = await self._out.get()
                if item is None:
                    break
                if isinstance(item, Stream):
                    try:
                        w.write(item.header)
                        async for chunk in item.chunks:
                            w.write(chunk)
                            await w.drain()
                    except BaseException as exc:
                        if not item.done.done():
                            item.done.set_exception(exc)
                        raise
                    if not item.done.done():
                        item.done.set_result(None)
                    continue
                w.write(item)
                if w.transport.get_write_buffer_size() > HIGH_WATER:
                    await w.drain()
            await w.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("writer failed")
        finally:
            self.closed.set()
            self._fail_pending()
            with contextlib.suppress(Exception):
                w.close()

    def _fail_pending(self) -> None:
        while not self._out.empty():
            item = self._out.get_nowait()
            if isinstance(item, Stream) and not item.done.done():
                item.done.set_exception(ConnectionError("connection closed"))

    async def close(self) -> None:
        """Flushes what is queued, then closes."""
        if not self.closed.is_set():
            self._out.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer_task), 5)
        self.abort()

    def abort(self) -> None:
        self.closed.set()
        self._writer_task.cancel()
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
