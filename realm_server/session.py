"""One client connection: its login state and its single writer. Responses, events and binary
payloads all go through one queue drained by one task, so nothing ever interleaves.

Deliveries (message events, inbox responses) carry a tag. The writer reports a tag as written
once its bytes are in the kernel's socket buffer (the transport's own buffer is empty), and as
dropped when the connection ends before that or the session logs out with it still queued:
"delivered" means written, and what was not written comes back to the user later."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from realmchat.framing import LineReader

log = logging.getLogger(__name__)
SEEN_IDS = 4096


Tag = tuple[str, int, int]  # (link id, delivery seq, session id): reported back to main
Report = Callable[[list[Tag], list[Tag]], None]  # (written, dropped)


@dataclass(slots=True)
class Tagged:
    """An event or response line; `tag` when it is a delivery main waits to hear about."""

    line: bytes
    tag: Tag | None
    event: bool  # events are for the session that was logged in when they were queued


@dataclass(eq=False)
class Stream:
    """A header line followed by raw bytes, written as one unit."""

    header: bytes
    chunks: AsyncIterator[bytes]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_line: int,
                 max_queue: int, max_queue_bytes: int = 4 * 1024 * 1024, stall_timeout_s: float = 60.0,
                 report: Report = lambda written, dropped: None) -> None:
        self.lines = LineReader(reader, max_line)
        self.writer = writer
        self.report = report
        # drain() then waits until every byte is in the kernel: that is when a delivery counts.
        writer.transport.set_write_buffer_limits(high=0, low=0)
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
        self._out: asyncio.Queue[Tagged | Stream | None] = asyncio.Queue()
        self._queued_bytes = 0    # bytes in _out, not yet handed to the transport
        self._room = asyncio.Event()  # set while _queued_bytes is under max_queue_bytes
        self._room.set()
        self._settled = asyncio.Event()  # set while no delivery is between write and report
        self._settled.set()
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
        """Events queued for the old session are not written (the connection may log in as
        someone else next): they are reported dropped and come back to that user."""
        self.user, self.token, self.session_id = "", "", 0
        self.unauth_since = asyncio.get_running_loop().time()
        self._seen.clear()
        self._seen_order.clear()
        q: deque[Tagged | Stream | None] = self._out._queue  # type: ignore[attr-defined]
        dropped: list[Tag] = []
        kept: list[Tagged | Stream | None] = []
        for item in q:
            if isinstance(item, Tagged) and item.event:
                self._queued_bytes -= len(item.line)
                if item.tag:
                    dropped.append(item.tag)
            else:
                kept.append(item)
        if len(kept) != len(q):
            q.clear()
            q.extend(kept)
            if self._queued_bytes < self.max_queue_bytes // 2:
                self._room.set()
        if dropped:
            self.report([], dropped)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _put(self, item: Tagged) -> None:
        self._queued_bytes += len(item.line)
        if self._queued_bytes >= self.max_queue_bytes:
            self._room.clear()
        self._out.put_nowait(item)

    def send(self, line: bytes, tag: Tag | None = None) -> None:
        """Queues a response line. Responses are not dropped: the connection handler waits for
        room (wait_for_room) before reading the next command, so a client that pipelines
        without reading is slowed down by TCP instead of growing this queue."""
        if not self.closed.is_set():
            self._put(Tagged(line, tag, False))
        elif tag:
            self.report([], [tag])

    def send_event(self, line: bytes, tag: Tag | None = None) -> None:
        """Queues an event; a client that does not read its events is disconnected rather than
        letting its queue grow without bound (in lines or in bytes)."""
        if self.closed.is_set():
            if tag:
                self.report([], [tag])
            return
        if self._out.qsize() >= self.max_queue or self._queued_bytes + len(line) > self.max_queue_bytes:
            log.warning("%s (%s) does not read: %d lines, %d bytes queued; disconnecting", self.peer,
                        self.user, self._out.qsize(), self._queued_bytes)
            self.close_reason = "send queue full"
            if tag:
                self.report([], [tag])
            self.abort()
            return
        self._put(Tagged(line, tag, True))

    async def settled(self, timeout: float) -> None:
        """Waits (at most timeout) until no delivery is on its way into the socket: each one
        has been reported written or dropped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

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
            self._put(Tagged(event_line, None, False))  # even past the byte bound: it is the last line
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
        written: list[Tag] = []  # handed to the transport, not yet confirmed in the kernel
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
                lines = [item.line]
                if item.tag:
                    written.append(item.tag)
                q = self._out._queue  # type: ignore[attr-defined]
                while q and isinstance(q[0], Tagged):
                    nxt = self._out.get_nowait()
                    assert isinstance(nxt, Tagged)
                    lines.append(nxt.line)
                    if nxt.tag:
                        written.append(nxt.tag)
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                self._queued_bytes -= len(data)
                if self._queued_bytes < self.max_queue_bytes // 2:
                    self._room.set()
                w.write(data)
                # Drop references: an idle connection must not keep its last lines alive.
                del item, lines, data
                if w.transport.get_write_buffer_size():
                    self._settled.clear()
                    await self._drain()  # until the kernel has taken every byte
                if written:
                    self.report(written, [])
                    written = []
                self._settled.set()
            await self._drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("writer failed")
        finally:
            self.closed.set()
            self._room.set()
            self._fail_pending(written)
            self._settled.set()
            with contextlib.suppress(Exception):
                w.close()

    def _fail_pending(self, written: list[Tag]) -> None:
        dropped = written  # handed to the transport but never confirmed: not delivered
        while not self._out.empty():
            item = self._out.get_nowait()
            if isinstance(item, Stream) and not item.done.done():
                item.done.set_exception(ConnectionError("connection closed"))
            elif isinstance(item, Tagged) and item.tag:
                dropped.append(item.tag)
        if dropped:
            self.report([], dropped)

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
