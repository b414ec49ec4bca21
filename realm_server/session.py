"""One client connection: its login state and its single writer. Responses, events and binary
payloads all go through one queue drained by one task, so nothing ever interleaves.

Deliveries (message events, inbox responses) carry a tag. The writer reports a tag as written
once the client's TCP has acknowledged its bytes (the kernel's unacknowledged byte count,
TIOCOUTQ, says so), and as dropped when the connection ends before that or the session logs out
with it still queued. A connection that ends with deliveries unacknowledged is reset (linger 0),
so those bytes never reach the client after they were reported dropped: what was reported
written is in the client's hands, what was reported dropped comes back later, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from realmchat.framing import LineReader
from realmchat.seen import SeenIds

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


class Unacked:
    """Deliveries written to the socket whose bytes the client's TCP has not acknowledged yet."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        self.sock = sock
        self._fd = sock.fileno() if sock is not None else -1
        # Through TLS the kernel sees records, not our bytes: only "all acknowledged" is known.
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._sent = 0  # bytes handed to the transport
        self._pending: deque[tuple[int, list[Tag]]] = deque()  # (end offset, tags), in order

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, nbytes: int, tags: Sequence[tuple[int, Tag]] = ()) -> None:
        """nbytes handed to the transport; tags with the end of their line within them (a line
        fully acknowledged was delivered even when the rest of the write was not)."""
        for end, tag in tags:
            self._pending.append((self._sent + end, [tag]))
        self._sent += nbytes

    def _outq(self) -> int:
        try:
            return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
        except OSError:
            return self._sent  # the socket is gone: nothing more will be acknowledged

    def acknowledged(self, buffered: int) -> list[Tag]:
        """Tags whose bytes the client acknowledged; `buffered`: bytes still in the transport."""
        if not self._pending or self._fd < 0:
            return []
        outq = self._outq()
        if self._tls:
            done = self._sent if outq == 0 and buffered == 0 else 0
        else:
            done = self._sent - buffered - outq
        out: list[Tag] = []
        while self._pending and self._pending[0][0] <= done:
            out += self._pending.popleft()[1]
        return out

    def outstanding(self, buffered: int) -> tuple[int, int]:
        """(bytes written and not acknowledged, bytes of those the kernel has transmitted): the
        transmitted ones may have reached the client even though no ACK says so yet."""
        if self._fd < 0:
            return -1, 0
        try:
            outq = self._outq()
            unsent = int(struct.unpack("i", fcntl.ioctl(self._fd, SIOCOUTQNSD, b"\0\0\0\0"))[0])
        except OSError:
            return -1, 0
        return buffered + outq, max(0, outq - unsent)

    def take_all(self) -> list[Tag]:
        out = [t for _, tags in self._pending for t in tags]
        self._pending.clear()
        return out

    def close(self, buffered: int) -> tuple[list[Tag], list[Tag]]:
        """Before the socket closes (its descriptor may soon belong to another connection):
        (written, dropped) of what is pending. Unacknowledged bytes must never arrive after
        they were reported dropped, so then the connection is reset, not closed."""
        written = self.acknowledged(buffered)
        dropped = self.take_all()
        if dropped and self.sock is not None and self._fd >= 0:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._fd = -1
        return written, dropped


SIOCOUTQNSD = 0x894B  # Linux: bytes in the send queue not yet transmitted
ACK_GRACE_S = 0.5  # a closing connection waits for the client's last acknowledgements...
ACK_STALL_S = 0.25  # ...until they stop coming for this long (delayed ACKs take up to 200 ms)
ACK_POLL_MIN_S = 0.01  # acks need not be prompt (main batches them): few polls per connection
ACK_POLL_MAX_S = 0.05
CLOSE_ACK_WAIT_S = 2.0


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
        # drain() then waits until every byte is in the kernel; Unacked follows the rest.
        writer.transport.set_write_buffer_limits(high=0, low=0)
        self._unacked = Unacked(writer.transport)
        self._ack_poll: asyncio.TimerHandle | None = None
        self._finisher: asyncio.Task[None] | None = None
        self._ack_delay = ACK_POLL_MIN_S
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
        # The events among them. Only these decide whether a client "does not read": a reply
        # the client asked for (up to the reply cap) may sit in the queue beside a few events
        # without meaning anything; replies are bounded by wait_for_room instead.
        self._event_bytes = 0
        self._room = asyncio.Event()  # set while _queued_bytes is under max_queue_bytes
        self._room.set()
        self._settled = asyncio.Event()  # set while no delivery is between write and report
        self._settled.set()
        self._writer_task = asyncio.create_task(self._write_loop())
        # Message ids this session was sent lately: after a main restart, main re-sends what it
        # could not confirm as sent, and a session must not see a message twice.
        self._seen = SeenIds(SEEN_IDS)

    def first_sight(self, msg_id: int) -> bool:
        """True the first time a message id is pushed to this session (bounded memory)."""
        return self._seen.first_sight(msg_id)

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
        q: deque[Tagged | Stream | None] = self._out._queue  # type: ignore[attr-defined]
        dropped: list[Tag] = []
        kept: list[Tagged | Stream | None] = []
        for item in q:
            if isinstance(item, Tagged) and item.event:
                self._queued_bytes -= len(item.line)
                self._event_bytes -= len(item.line)
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
        if item.event:
            self._event_bytes += len(item.line)
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
        if self._out.qsize() >= self.max_queue or self._event_bytes + len(line) > self.max_queue_bytes:
            log.warning("%s (%s) does not read: %d lines, %d bytes of events queued; disconnecting",
                        self.peer, self.user, self._out.qsize(), self._event_bytes)
            self.close_reason = "send queue full"
            if tag:
                self.report([], [tag])
            self.abort()
            return
        self._put(Tagged(line, tag, True))

    async def settled(self, timeout: float) -> bool:
        """Waits (at most timeout) until no delivery is on its way to the client: each one has
        been reported written or dropped. False if some still are. A closing connection's last
        deliveries are settled by its finisher, which has its own deadline."""
        if self._finisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finisher)
            return True
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
        except TimeoutError:
            return False
        return True

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
        # A timer, not asyncio.wait_for: this runs after most writes, and wait_for makes a task
        # each time (it showed as a sixth of the realm's CPU at full speed).
        stalled = False

        def stall() -> None:
            nonlocal stalled
            stalled = True
            log.warning("%s (%s) has not read for %g s: disconnecting", self.peer, self.user, self.stall_timeout_s)
            self.close_reason = "write stalled"
            # abort, not close: close() would wait forever to flush what the client won't read
            self.writer.transport.abort()

        timer = (asyncio.get_running_loop().call_later(self.stall_timeout_s, stall)
                 if self.stall_timeout_s > 0 else None)
        try:
            await self.writer.drain()
        finally:
            if timer is not None:
                timer.cancel()
        if stalled:
            raise ConnectionError("client stopped reading")

    def _release_acked(self) -> None:
        """Reports what the client acknowledged; polls again while anything is outstanding."""
        self._ack_poll = None
        if self.writer.transport.is_closing():
            return  # the writer's exit reports what is left as dropped
        acked = self._unacked.acknowledged(self.writer.transport.get_write_buffer_size())
        if acked:
            self.report(acked, [])
            self._ack_delay = ACK_POLL_MIN_S
        else:
            self._ack_delay = min(self._ack_delay * 2, ACK_POLL_MAX_S)
        if self._unacked:
            self._settled.clear()
            self._ack_poll = asyncio.get_running_loop().call_later(self._ack_delay, self._release_acked)
        else:
            self._settled.set()

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
                        self._unacked.add(len(item.header))
                        async for chunk in item.chunks:
                            w.write(chunk)
                            self._unacked.add(len(chunk))
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
                size = len(item.line)
                events = size if item.event else 0
                tags = [(size, item.tag)] if item.tag else []
                q = self._out._queue  # type: ignore[attr-defined]
                while q and isinstance(q[0], Tagged):
                    nxt = self._out.get_nowait()
                    assert isinstance(nxt, Tagged)
                    lines.append(nxt.line)
                    size += len(nxt.line)
                    if nxt.event:
                        events += len(nxt.line)
                    if nxt.tag:
                        tags.append((size, nxt.tag))
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                self._queued_bytes -= len(data)
                self._event_bytes -= events
                if self._queued_bytes < self.max_queue_bytes // 2:
                    self._room.set()
                w.write(data)
                self._unacked.add(len(data), tags)
                # Drop references: an idle connection must not keep its last lines alive.
                del item, lines, data
                if w.transport.get_write_buffer_size():
                    await self._drain()  # until the kernel has taken every byte
                if tags and self._ack_poll is None:
                    self._release_acked()
            await self._drain()
            # A graceful close: give the client a moment to acknowledge the last deliveries.
            deadline = asyncio.get_running_loop().time() + CLOSE_ACK_WAIT_S
            while self._unacked and asyncio.get_running_loop().time() < deadline:
                self._release_acked()
                await asyncio.sleep(0.01)
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
            if self._ack_poll is not None:
                self._ack_poll.cancel()
                self._ack_poll = None
            self._fail_pending()
            self._settled.set()
            if self._finisher is None:
                with contextlib.suppress(Exception):
                    w.close()

    def _fail_pending(self) -> None:
        """The writer is done: what is still queued was never written."""
        dropped: list[Tag] = []
        while not self._out.empty():
            item = self._out.get_nowait()
            if isinstance(item, Stream) and not item.done.done():
                item.done.set_exception(ConnectionError("connection closed"))
            elif isinstance(item, Tagged) and item.tag:
                dropped.append(item.tag)
        if dropped:
            self.report([], dropped)
        if self._unacked and self._finisher is None:
            self._finisher = asyncio.create_task(self._finish(ACK_GRACE_S))

    async def _finish(self, grace: float) -> None:
        """Settles what was written but not yet acknowledged, then closes the socket. While the
        client keeps taking bytes (its TCP acknowledges more and more), it is given the time
        (up to the stall timeout); once it takes nothing for ACK_STALL_S, what it acknowledged
        is reported written, the rest dropped, and the connection is reset so that the rest
        never arrives after being reported dropped."""
        transport = self.writer.transport
        loop = asyncio.get_running_loop()
        hard = loop.time() + (max(grace, self.stall_timeout_s) if grace else 0)
        last, changed = -1, loop.time()
        while self._unacked and loop.time() < hard:
            with contextlib.suppress(Exception):
                acked = self._unacked.acknowledged(transport.get_write_buffer_size())
                if acked:
                    self.report(acked, [])
            left, in_doubt = self._unacked.outstanding(transport.get_write_buffer_size())
            if left != last:
                last, changed = left, loop.time()
            elif loop.time() - changed > ACK_STALL_S and not in_doubt:
                # Nothing in flight: whatever is unacknowledged never left this host.
                break
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            written, dropped = self._unacked.close(transport.get_write_buffer_size())
            if written or dropped:
                self.report(written, dropped)
        with contextlib.suppress(Exception):
            transport.abort()

    async def close(self) -> None:
        """Flushes what is queued, then closes."""
        if not self.closed.is_set():
            self._out.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer_task), 5)
        self.abort()
        if self._finisher is not None:
            with contextlib.suppress(Exception):
                await self._finisher

    def abort(self) -> None:
        """Stops the connection now: nothing more is written; what was written is settled."""
        if self._ack_poll is not None:
            self._ack_poll.cancel()
            self._ack_poll = None
        self.closed.set()
        self._writer_task.cancel()
        if self._finisher is None:
            self._finisher = asyncio.create_task(self._finish(ACK_GRACE_S if self._unacked else 0))
