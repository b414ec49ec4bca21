"""One client connection: its login state and its single writer. Responses, events and binary
payloads all go through one queue, written in order, so nothing ever interleaves.

An idle connection holds no task, queue or event: what is queued is written by a flush step
scheduled on the loop (one write per batch); a writer task exists only while the transport
has bytes the kernel did not take (drain, stall timeout), while a file streams out, or while the
connection closes.

Deliveries (message events, inbox responses) carry a tag. The writer reports a tag as written
once the client's TCP has acknowledged its bytes (the kernel's unacknowledged byte count,
TIOCOUTQ, says so), and as dropped when the connection ends before that or the session logs out
with it still queued. A connection that ends with deliveries unacknowledged is reset (linger 0),
so those bytes never reach the client after they were reported dropped: what was reported
written is in the client's hands, what was reported dropped comes back later, exactly once.
The rules are realm_server/delivery.py's; this module does the I/O."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from realmchat.seen import SeenIds

from .delivery import Admit, CloseWait, InFlight, Report, Tag, Tagged, admit_event, cut_at_logout, ended

if TYPE_CHECKING:
    from realmchat.errors import ChatError
    from realmchat.pb import chat_pb2 as pb

    from .conn import Conn

log = logging.getLogger(__name__)
SEEN_IDS = 4096


class Codec(Protocol):
    """What a client's protocol decides: how its lines read and what the realm's own lines look
    like. Sessions, the writer, pacing, delivery and the upstream know only bytes and this."""

    def hello(self, realm: str) -> bytes: ...

    def parse(self, line: bytes) -> Any:
        """A command for the protocol's command table, None for a blank line; ChatError when the
        line is no command."""
        ...

    def error(self, exc: ChatError) -> bytes: ...

    def event(self, kind: str, ev: pb.Event) -> bytes | None:
        """An event from main (kind: its oneof field) as a line; None if this protocol shows
        no such event."""
        ...

    def closing(self, reason: str, message: str) -> bytes:
        """The last line before the realm closes the connection."""
        ...

    def refused(self, message: str) -> bytes:
        """The one line for a connection refused over a limit (it is closed after it)."""
        ...

    def session_expired(self) -> bytes: ...

    def shutdown(self) -> bytes: ...


class Unacked(InFlight):
    """InFlight on a socket: the kernel's count of unacknowledged bytes (TIOCOUTQ) says what
    the client's TCP acknowledged."""

    __slots__ = ("_fd", "_tls", "sock")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        super().__init__()
        sock = transport.get_extra_info("socket")
        self.sock = sock
        self._fd = sock.fileno() if sock is not None else -1
        # Through TLS the kernel sees records, not our bytes: only "all acknowledged" is known.
        self._tls = transport.get_extra_info("sslcontext") is not None

    def _outq(self) -> int:
        try:
            return int(struct.unpack("i", fcntl.ioctl(self._fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
        except OSError:
            return self._sent  # the socket is gone: nothing more will be acknowledged

    def acknowledged(self, buffered: int) -> list[Tag]:
        """Tags whose bytes the client acknowledged; `buffered`: bytes still in the transport."""
        if not self or self._fd < 0:
            return []
        return self.release(buffered + self._outq(), exact=not self._tls)

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
ACK_GRACE_S = 0.5  # a closing connection waits for the client's last acknowledgements (delivery.CloseWait)
ACK_POLL_MIN_S = 0.01  # acks need not be prompt (main batches them): few polls per connection
ACK_POLL_MAX_S = 0.05
CLOSE_ACK_WAIT_S = 2.0


@dataclass(eq=False)
class Stream:
    """A header line followed by raw bytes, written as one unit."""

    header: bytes
    chunks: AsyncIterator[bytes]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


Item = Tagged | Stream | None  # None: close once everything before it is written


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class Session:
    # Slots and lazily made parts: 10k idle connections must cost little memory each.
    __slots__ = ("_ack_delay", "_ack_poll", "_closed", "_ended", "_event_bytes", "_finisher", "_flush_handle",
                 "_full", "_loop", "_out", "_queued_bytes", "_room_waiter", "_seen", "_settle_waiter", "_unacked",
                 "_writer_task", "close_reason", "codec", "last_command", "lines", "max_queue", "max_queue_bytes",
                 "peer", "report", "session_id", "stall_timeout_s", "token", "transport", "unauth_since", "user")

    def __init__(self, conn: Conn, transport: asyncio.Transport, codec: Codec, max_queue: int,
                 max_queue_bytes: int = 4 * 1024 * 1024, stall_timeout_s: float = 60.0,
                 report: Report = lambda written, dropped: None) -> None:
        self.lines = conn  # the client's input (lines, payloads) and the drain of its output
        self.transport = transport
        self.codec = codec  # the client's protocol
        self.report = report  # deliveries written and dropped (delivery.Reports, through the upstream)
        self._loop = asyncio.get_running_loop()
        # drain() then waits until every byte is in the kernel; Unacked follows the rest.
        transport.set_write_buffer_limits(high=0, low=0)
        self._unacked = Unacked(transport)
        self._ack_poll: asyncio.TimerHandle | None = None
        self._finisher: asyncio.Task[None] | None = None
        self._ack_delay = ACK_POLL_MIN_S
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        # A write that makes no progress for this long means the client stopped reading.
        self.stall_timeout_s = stall_timeout_s
        self.peer = transport.get_extra_info("peername")
        self.user: str = ""
        self.token: str = ""
        self.session_id = 0
        self._closed = False      # nothing more is written
        self._ended = False       # the writer's end was settled (_shut ran)
        now = self._loop.time()
        self.last_command = now   # idle timeout runs from here
        self.unauth_since = now   # login timeout runs from here (connect, or the last logout)
        self.close_reason = ""    # why the realm dropped the connection, for the log
        self._out: deque[Item] | None = None  # what is queued, in order; None while empty
        self._flush_handle: asyncio.Handle | None = None
        self._writer_task: asyncio.Task[None] | None = None  # only while draining, streaming, closing
        self._queued_bytes = 0    # bytes in _out, not yet handed to the transport
        # The events among them. Only these decide whether a client "does not read": a reply
        # the client asked for (up to the reply cap) may sit in the queue beside a few events
        # without meaning anything; replies are bounded by wait_for_room instead.
        self._event_bytes = 0
        self._full = False        # _queued_bytes reached max_queue_bytes, not yet back under half
        self._room_waiter: asyncio.Future[None] | None = None
        self._settle_waiter: asyncio.Future[None] | None = None
        # Message ids this session was sent lately: after a main restart, main re-sends what it
        # could not confirm as sent, and a session must not see a message twice. Made on first use.
        self._seen: SeenIds | None = None

    def first_sight(self, msg_id: int) -> bool:
        """True the first time a message id is pushed to this session (bounded memory)."""
        if self._seen is None:
            self._seen = SeenIds(SEEN_IDS)
        return self._seen.first_sight(msg_id)

    @property
    def authed(self) -> bool:
        return bool(self.token)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def login(self, user: str, token: str, session_id: int) -> None:
        self.user, self.token, self.session_id = user, token, session_id

    def logout(self) -> None:
        """Events queued for the old session are not written (the connection may log in as
        someone else next): they are reported dropped and come back to that user
        (delivery.cut_at_logout says which)."""
        self.user, self.token, self.session_id = "", "", 0
        self.unauth_since = self._loop.time()
        self._seen = None
        q = self._out
        if not q:
            return
        kept, cut = cut_at_logout(q)
        if not cut:
            return
        for item in cut:
            self._queued_bytes -= len(item.line)
            self._event_bytes -= len(item.line)
        q.clear()
        q.extend(kept)  # type: ignore[arg-type]  # (items of this queue)
        self._room_check()
        dropped = [item.tag for item in cut if item.tag]
        if dropped:
            self.report([], dropped)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _room_check(self) -> None:
        if self._full and self._queued_bytes < self.max_queue_bytes // 2:
            self._full = False
            _wake(self._room_waiter)
            self._room_waiter = None

    def _enqueue(self, item: Item) -> None:
        if self._out is None:
            self._out = deque()
        self._out.append(item)
        if self._writer_task is None and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _put(self, item: Tagged) -> None:
        self._queued_bytes += len(item.line)
        if item.event:
            self._event_bytes += len(item.line)
        if self._queued_bytes >= self.max_queue_bytes:
            self._full = True
        self._enqueue(item)

    def send(self, line: bytes, tag: Tag | None = None) -> None:
        """Queues a response line. Responses are not dropped: the connection handler waits for
        room (wait_for_room) before reading the next command, so a client that pipelines
        without reading is slowed down by TCP instead of growing this queue."""
        if not self._closed:
            self._put(Tagged(line, tag, False))
        elif tag:
            self.report([], [tag])

    def send_repeat(self, tag: Tag, msg_id: int) -> None:
        """A delivery of a message this session was sent already: written (to main) once every
        byte queued before it is, its first copy included; dropped if that copy is."""
        if self._closed:
            self.report([], [tag])
        else:
            self._put(Tagged(b"", tag, True, msg_id, True))

    def send_event(self, line: bytes, tag: Tag | None = None, msg_id: int = 0) -> None:
        """Queues an event; a client that does not read its events is disconnected rather than
        letting its queue grow without bound (in lines or in bytes)."""
        queued = len(self._out) if self._out else 0
        verdict = admit_event(self._closed, queued, self._event_bytes, len(line), self.max_queue,
                              self.max_queue_bytes)
        if verdict is Admit.QUEUE:
            self._put(Tagged(line, tag, True, msg_id))
            return
        if verdict is Admit.CUT:
            log.warning("%s (%s) does not read: %d lines, %d bytes of events queued; disconnecting",
                        self.peer, self.user, queued, self._event_bytes)
            self.close_reason = "send queue full"
        if tag:
            self.report([], [tag])
        if verdict is Admit.CUT:
            self.abort()

    async def settled(self, timeout: float) -> bool:
        """Waits (at most timeout) until no delivery is on its way to the client: each one has
        been reported written or dropped. False if some still are. A closing connection's last
        deliveries are settled by its finisher, which has its own deadline."""
        if self._finisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finisher)
            return True
        if not self._unacked or self._ended:
            return True
        if self._settle_waiter is None:
            self._settle_waiter = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._settle_waiter), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_for_room(self) -> None:
        """Returns once the queue is under its byte bound again (or the connection closed)."""
        if not self._full or self._closed:
            return
        if self._room_waiter is None:
            self._room_waiter = self._loop.create_future()
        await asyncio.shield(self._room_waiter)

    async def close_with(self, event_line: bytes, reason: str) -> None:
        """Sends a last event saying why, then closes (used by timeouts and flood control)."""
        self.close_reason = reason
        if not self._closed:
            self._put(Tagged(event_line, None, False))  # even past the byte bound: it is the last line
        await self.close()

    async def send_stream(self, header: bytes, chunks: AsyncIterator[bytes]) -> None:
        """Queues header + payload and waits until the writer has written all of it."""
        if self._closed:
            raise ConnectionError("connection closed")
        item = Stream(header, chunks)
        self._enqueue(item)
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
            self.transport.abort()

        timer = self._loop.call_later(self.stall_timeout_s, stall) if self.stall_timeout_s > 0 else None
        try:
            await self.lines.drain()
        finally:
            if timer is not None:
                timer.cancel()
        if stalled:
            raise ConnectionError("client stopped reading")

    def _release_acked(self) -> None:
        """Reports what the client acknowledged; polls again while anything is outstanding."""
        self._ack_poll = None
        if self.transport.is_closing():
            return  # the writer's end reports what is left as dropped
        acked = self._unacked.acknowledged(self.transport.get_write_buffer_size())
        if acked:
            self.report(acked, [])
            self._ack_delay = ACK_POLL_MIN_S
        else:
            self._ack_delay = min(self._ack_delay * 2, ACK_POLL_MAX_S)
        if self._unacked:
            self._ack_poll = self._loop.call_later(self._ack_delay, self._release_acked)
        else:
            _wake(self._settle_waiter)
            self._settle_waiter = None

    def _write_lines(self) -> None:
        """Writes every line queued at the front in one write (one syscall, not one per line)."""
        q = self._out
        assert q
        item = q.popleft()
        assert isinstance(item, Tagged)
        lines = [item.line]
        size = len(item.line)
        events = size if item.event else 0
        tags = [(size, item.tag)] if item.tag else []
        while q and isinstance(q[0], Tagged):
            nxt = q.popleft()
            assert isinstance(nxt, Tagged)
            lines.append(nxt.line)
            size += len(nxt.line)
            if nxt.event:
                events += len(nxt.line)
            if nxt.tag:
                tags.append((size, nxt.tag))
        if not q:
            self._out = None
        self._queued_bytes -= size
        self._event_bytes -= events
        self._room_check()
        try:
            self.transport.write(lines[0] if len(lines) == 1 else b"".join(lines))
        except BaseException:
            if tags:  # never handed to the socket
                self.report([], [t for _, t in tags])
            raise
        self._unacked.add(size, tags)
        if tags and self._ack_poll is None:
            self._release_acked()

    def _flush(self) -> None:
        """Writes what is queued without a task; a writer task takes over only when the kernel
        did not take every byte, a file streams, or the connection closes."""
        self._flush_handle = None
        if self._closed or self._writer_task is not None:
            return
        try:
            while self._out and isinstance(self._out[0], Tagged):
                self._write_lines()
        except Exception as exc:
            self._write_failed(exc)
            return
        if self._out or self.transport.get_write_buffer_size():
            self._writer_task = self._loop.create_task(self._write_loop())

    def _write_failed(self, exc: BaseException) -> None:
        if isinstance(exc, RuntimeError | ConnectionError | OSError):
            # uvloop raises RuntimeError, not ConnectionError, when writing to a transport the
            # client has reset: an expected end, not worth a traceback.
            if isinstance(exc, RuntimeError) and not self.transport.is_closing():
                log.error("writer failed", exc_info=exc)
        else:
            log.error("writer failed", exc_info=exc)
        self._shut()

    async def _write_loop(self) -> None:
        w = self.transport
        idle = False
        try:
            while True:
                if w.get_write_buffer_size():
                    await self._drain()  # until the kernel has taken every byte
                q = self._out
                if not q:
                    idle = True
                    self._writer_task = None  # nothing queued: no task while idle
                    return
                item = q[0]
                if item is None:
                    q.popleft()
                    break
                if isinstance(item, Stream):
                    q.popleft()
                    if not q:
                        self._out = None
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
                self._write_lines()
                del item  # an idle connection must not keep its last lines alive
            await self._drain()
            # A graceful close: give the client a moment to acknowledge the last deliveries.
            deadline = self._loop.time() + CLOSE_ACK_WAIT_S
            while self._unacked and self._loop.time() < deadline:
                self._release_acked()
                await asyncio.sleep(0.01)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        except RuntimeError:
            if not w.is_closing():
                log.exception("writer failed")
        except Exception:
            log.exception("writer failed")
        finally:
            if not idle:
                self._shut()

    def _shut(self) -> None:
        """The writer is done for good: nothing more is written; what is queued was never written."""
        if self._ended:
            return
        self._ended = True
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._full = False
        _wake(self._room_waiter)
        self._room_waiter = None
        if self._ack_poll is not None:
            self._ack_poll.cancel()
            self._ack_poll = None
        self._fail_pending()
        _wake(self._settle_waiter)
        self._settle_waiter = None
        if self._finisher is None:
            with contextlib.suppress(Exception):
                self.transport.close()

    def _fail_pending(self) -> None:
        q, self._out = self._out, None
        self._queued_bytes = self._event_bytes = 0
        for item in q or ():
            if isinstance(item, Stream) and not item.done.done():
                item.done.set_exception(ConnectionError("connection closed"))
        dropped = ended(q) if q else []
        if dropped:
            self.report([], dropped)
        if self._unacked and self._finisher is None:
            self._finisher = self._loop.create_task(self._finish(ACK_GRACE_S))

    async def _finish(self, grace: float) -> None:
        """Settles what was written but not yet acknowledged, then closes the socket: the client
        is given the time delivery.CloseWait says; then what it acknowledged is reported
        written, the rest dropped, and the connection is reset so that the rest never arrives
        after being reported dropped."""
        transport = self.transport
        loop = self._loop
        wait = CloseWait(loop.time(), grace, self.stall_timeout_s)
        while self._unacked and not wait.expired(loop.time()):
            with contextlib.suppress(Exception):
                acked = self._unacked.acknowledged(transport.get_write_buffer_size())
                if acked:
                    self.report(acked, [])
            left, in_doubt = self._unacked.outstanding(transport.get_write_buffer_size())
            if wait.stalled(loop.time(), left, in_doubt):
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
        if not self._closed:
            self._enqueue(None)
            if self._flush_handle is not None:  # the flush step would only hand over to the writer
                self._flush_handle.cancel()
                self._flush_handle = None
            if self._writer_task is None:
                self._writer_task = self._loop.create_task(self._write_loop())
        task = self._writer_task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        self.abort()
        if self._finisher is not None:
            with contextlib.suppress(Exception):
                await self._finisher

    def abort(self) -> None:
        """Stops the connection now: nothing more is written; what was written is settled."""
        if self._ack_poll is not None:
            self._ack_poll.cancel()
            self._ack_poll = None
        self._closed = True
        if self._writer_task is not None:
            self._writer_task.cancel()
        if self._finisher is None:
            self._finisher = self._loop.create_task(self._finish(ACK_GRACE_S if self._unacked else 0))
        self._shut()
