"""One client connection: its login state and its single writer. Responses, events and binary
payloads all go through one queue drained by one task, so nothing ever interleaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from realmchat.framing import LineReader

log = logging.getLogger(__name__)
SEEN_IDS = 4096
HIGH_WATER = 256 * 1024


@dataclass(eq=False)
class Stream:
    """A header line followed by raw bytes, written as one unit."""

    header: bytes
    chunks: AsyncIterator[bytes]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_line: int,
                 max_queue: int, max_queue_bytes: int = 4 * 1024 * 1024, stall_timeout_s: float = 60.0) -> None:
        self.lines = LineReader(reader, max_line)
        self.writer = writer
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        # A write that makes no progress for this long means the client stopped reading.
        self.stall_timeout_s = stall_timeout_s
        self.peer = writer.get_extra_info("peername")
        self.user: str = ""
        self.token: str = ""
        self.session_id = 0
        self.closed = asyncio.Event()
        now = asyncio.get_running_loop().time()
        self.last_command = now   # idle timeout runs from here
        self.unauth_since = now   # login timeout runs from here (connect, or the last logout)
        self.close_reason = ""    # why the realm dropped the connection, for the log
        self._out: asyncio.Queue[bytes | Stream | None] = asyncio.Queue()
        self._queued_bytes = 0    # bytes in _out, not yet handed to the transport
        self._room = asyncio.Event()  # set while _queued_bytes is under max_queue_bytes
        self._room.set()
        self._writer_task = asyncio.create_task(self._write_loop())
        # Message ids this session was sent lately: after a main restart, main re-sends what it
        # could not confirm as sent, and a session must not see a message twice.
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    def first_sight(self, msg_id: int) -> bool:
        """True the first time a message id is pushed to this session (bounded memory)."""
        if msg_id in self._seen:
            return False
        self._seen.add(msg_id)
        self._seen_order.append(msg_id)
        if len(self._seen_order) > SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        return True

    @property
    def authed(self) -> bool:
        return bool(self.token)

    def login(self, user: str, token: str, session_id: int) -> None:
        self.user, self.token, self.session_id = user, token, session_id

    def logout(self) -> None:
        self.user, self.token, self.session_id = "", "", 0
        self.unauth_since = asyncio.get_running_loop().time()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _put(self, line: bytes) -> None:
        self._queued_bytes += len(line)
        if self._queued_bytes >= self.max_queue_bytes:
            self._room.clear()
        self._out.put_nowait(line)

    def send(self, line: bytes) -> None:
        """Queues a response line. Responses are not dropped: the connection handler waits for
        room (wait_for_room) before reading the next command, so a client that pipelines
        without reading is slowed down by TCP instead of growing this queue."""
        if not self.closed.is_set():
            self._put(line)

    def send_event(self, line: bytes) -> None:
        """Queues an event; a client that does not read its events is disconnected rather than
        letting its queue grow without bound (in lines or in bytes)."""
        if self.closed.is_set():
            return
        if self._out.qsize() >= self.max_queue or self._queued_bytes + len(line) > self.max_queue_bytes:
            log.warning("%s (%s) does not read: %d lines, %d bytes queued; disconnecting", self.peer,
                        self.user, self._out.qsize(), self._queued_bytes)
            self.close_reason = "send queue full"
            self.abort()
            return
        self._put(line)

    async def wait_for_room(self) -> None:
        """Returns once the queue is under its byte bound again (or the connection closed)."""
        if self._room.is_set() or self.closed.is_set():
            return
        room = asyncio.ensure_future(self._room.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait((room, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            closed.cancel()

    async def close_with(self, event_line: bytes, reason: str) -> None:
        """Sends a last event saying why, then closes (used by timeouts and flood control)."""
        self.close_reason = reason
        if not self.closed.is_set():
            self._put(event_line)  # even past the byte bound: it is the last line
        await self.close()

    async def send_stream(self, header: bytes, chunks: AsyncIterator[bytes]) -> None:
        """Queues header + payload and waits until the writer has written all of it."""
        item = Stream(header, chunks)
        self._out.put_nowait(item)
        await item.done

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.stall_timeout_s if self.stall_timeout_s > 0 else None)
        except TimeoutError:
            log.warning("%s (%s) has not read for %g s: disconnecting", self.peer, self.user, self.stall_timeout_s)
            self.close_reason = "write stalled"
            # abort, not close: close() would wait forever to flush what the client won't read
            self.writer.transport.abort()
            raise ConnectionError("client stopped reading") from None

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
                            await self._drain()
                    except BaseException as exc:
                        if not item.done.done():
                            item.done.set_exception(exc)
                        raise
                    if not item.done.done():
                        item.done.set_result(None)
                    continue
                # Every line already queued goes out in one write (one syscall, not one per line).
                lines = [item]
                while not self._out.empty() and isinstance(self._out._queue[0], bytes):  # type: ignore[attr-defined]
                    lines.append(self._out.get_nowait())  # type: ignore[arg-type]
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                self._queued_bytes -= len(data)
                if self._queued_bytes < self.max_queue_bytes // 2:
                    self._room.set()
                w.write(data)
                # Drop references: an idle connection must not keep its last lines alive.
                del item, lines, data
                if w.transport.get_write_buffer_size() > HIGH_WATER:
                    await self._drain()
            await self._drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except RuntimeError:
            # uvloop raises RuntimeError, not ConnectionError, when writing to a transport the
            # client has reset: an expected end, not worth a traceback.
            if not w.transport.is_closing():
                log.exception("writer failed")
        except Exception:
            log.exception("writer failed")
        finally:
            self.closed.set()
            self._room.set()
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
