"""The connection to one realm: the socket, the line framing (realmchat.framing.LineReader, the
shared text codec's decode), matching responses to requests, reconnecting and logging in again,
and the message ids already handed out.

One reader task owns the socket's read side. Every call appends a pending entry to a FIFO and
writes its line; because the realm answers every command exactly once and in order, a response
line resolves the oldest pending entry, and any line without "status" is an event. A
`receivefile ID` entry carries a payload handler: after its OK header the reader hands it the
stream to consume exactly `size` raw bytes before it reads the next line. Writes go through one
lock, so a sendfile header and its raw bytes are never split by another command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any

from realmchat.errors import ChatError, Internal, Unavailable, error_for
from realmchat.framing import LINE_TOO_LONG, LineReader
from realmchat.seen import SeenIds
from realmchat.textproto import decode

from .events import EventHub, same_name, typed_event
from .models import ConnectionEvent, ConnState, SessionEvent

log = logging.getLogger("chat_cli")

# Responses to inbox/history can be long (a page of messages on one line); the realm's own limit
# for command lines is much smaller, but what it sends us is bounded only by this.
DEFAULT_LINE_LIMIT = 64 * 1024 * 1024
SEEN_IDS_MAX = 20_000  # message ids remembered to drop a repeat after a reconnect

WireTap = Callable[[str, bytes], None]
"""wire_tap(direction, line): "<" for every line received (without newline), ">" for every
command line sent. Raw file bytes are not tapped."""

Payload = Callable[[dict[str, Any], LineReader, "asyncio.Future[Any]"], Awaitable[Any]]
"""Consumes exactly header["size"] bytes after an OK header and returns the call's result.
Runs inside the reader task."""


@dataclass
class Settings:
    """How to reach the realm and behave on the way (ChatClient's options)."""

    host: str = "127.0.0.1"
    port: int = 8000
    auto_reconnect: bool = False
    catch_up: bool = True
    call_timeout: float | None = None
    connect_timeout: float = 10.0
    line_limit: int = DEFAULT_LINE_LIMIT
    reconnect_min_delay: float = 0.2
    reconnect_max_delay: float = 5.0
    wire_tap: WireTap | None = None
    ssl: SSLContext | None = None
    server_hostname: str | None = None


@dataclass(eq=False)
class Pending:
    future: asyncio.Future[Any]
    verb: str
    payload: Payload | None = None


@dataclass(eq=False)
class Link:
    """One TCP connection and the state that dies with it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lines: LineReader
    realm: str = ""
    protocol: int = 0
    pending: deque[Pending] = field(default_factory=deque)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    read_task: asyncio.Task[None] | None = None
    closed: bool = False
    expect_close: bool = False  # after "quit": the server closing is not a loss


Body = Callable[[Link], Awaitable[None]]
"""Writes the raw bytes that follow a command line (sendfile), under the write lock."""


class Connection:
    """The realm connection and the session on it: who is logged in, with which credentials
    (remembered for logging in again after a reconnect or an expired session).

    `relogin(user, password)` logs in again (ChatClient.auth) and `catch_up()` fetches what
    was queued meanwhile; both are the facade's, set by it."""

    def __init__(self, settings: Settings, hub: EventHub) -> None:
        self.settings = settings
        self.hub = hub
        self.relogin: Callable[[str, str], Awaitable[Any]] | None = None
        self.catch_up: Callable[[], Awaitable[None]] | None = None
        self.link: Link | None = None
        self.credentials: tuple[str, str] | None = None
        self.user: str | None = None
        self.realm = ""
        self.closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._reauth_task: asyncio.Task[None] | None = None
        # Message ids this client has handed out: the realm promises each one once per
        # connection; across a reconnect (a realm that died before reporting a delivery) a
        # message can come again, and is dropped here.
        self.seen = SeenIds(SEEN_IDS_MAX)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def connected(self) -> bool:
        return self.link is not None and not self.link.closed

    @property
    def pending_calls(self) -> int:
        return len(self.link.pending) if self.link is not None else 0

    def is_me(self, name: str) -> bool:
        return self.user is not None and same_name(name, self.user)

    def logged_in(self, user: str, password: str, as_user: str, realm: str) -> None:
        self.credentials = (user, password)
        self.user = as_user
        if realm:
            self.realm = realm

    def logged_out(self) -> None:
        self.credentials = None

    # ---- opening and closing ----------------------------------------------------------------

    async def open(self) -> None:
        self.closing = False
        await self._open_link()
        self.hub.emit(ConnectionEvent(ConnState.CONNECTED, self.where, self.realm))

    async def close(self) -> None:
        if self.closing and self.link is None:
            return
        self.closing = True
        for task in (self._reconnect_task, self._reauth_task, *self.hub.background):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        link = self.link
        if link is not None:
            self._drop(link, "the client closed the connection")
            with contextlib.suppress(Exception):
                link.writer.close()
                await asyncio.wait_for(link.writer.wait_closed(), 2)
            if link.read_task is not None and link.read_task is not asyncio.current_task():
                link.read_task.cancel()
                with contextlib.suppress(BaseException):
                    await link.read_task
        self.hub.emit(ConnectionEvent(ConnState.CLOSED, "closed", self.realm))
        self.hub.end()

    async def _open_link(self) -> None:
        s = self.settings
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(s.host, s.port, limit=s.line_limit + 1, ssl=s.ssl,
                                        server_hostname=(s.server_hostname or s.host) if s.ssl else None),
                s.connect_timeout,
            )
        except (OSError, TimeoutError) as e:
            raise Unavailable(f"cannot connect to realm {self.where}: {e or 'timeout'}") from e
        lines = LineReader(reader, s.line_limit)
        link = Link(reader, writer, lines)
        try:
            first = await asyncio.wait_for(lines.read_line(), s.connect_timeout)
            if not isinstance(first, bytes):
                raise Unavailable(f"realm {self.where} closed the connection before hello")
            self._tap("<", first)
            hello = decode(first)
            if hello.get("event") != "hello":
                raise Unavailable(f"{self.where} is not a realm (no hello): {first[:80]!r}")
        except (OSError, TimeoutError, ValueError) as e:
            writer.close()
            raise Unavailable(f"realm {self.where} sent no hello: {e or 'timeout'}") from e
        except ChatError:
            writer.close()
            raise
        link.realm = str(hello.get("realm", ""))
        link.protocol = int(hello.get("protocol", 0) or 0)
        self.realm = link.realm
        self.user = None
        self.link = link
        link.read_task = asyncio.create_task(self._read_loop(link), name="chat_cli-reader")

    # ---- reading ----------------------------------------------------------------------------

    def _tap(self, direction: str, line: bytes) -> None:
        tap = self.settings.wire_tap
        if tap is not None:
            try:
                tap(direction, line)
            except Exception:
                log.exception("wire_tap failed")

    async def _read_loop(self, link: Link) -> None:
        reason = "the realm closed the connection"
        try:
            while True:
                line = await link.lines.read_line()
                if line is None:
                    break
                if line is LINE_TOO_LONG:
                    # We cannot know whether the lost line was a response or an event, so the
                    # FIFO can no longer be trusted: give the connection up.
                    reason = f"a line from the realm exceeded {self.settings.line_limit} bytes"
                    break
                assert isinstance(line, bytes)
                self._tap("<", line)
                try:
                    obj = decode(line)
                except ValueError:
                    reason = f"the realm sent a line that is not JSON: {line[:80]!r}"
                    break
                if "status" not in obj or ("event" in obj and obj.get("status") not in ("OK", "ERROR")):
                    # An event; a presence event has a "status" of its own (online/away/offline).
                    self._on_event_line(obj)
                    continue
                if not link.pending:
                    log.warning("response without a pending command, ignored: %r", line[:200])
                    continue
                entry = link.pending.popleft()
                if not await self._resolve(link, entry, obj):
                    reason = "the connection broke during a file download"
                    break
        except (OSError, asyncio.IncompleteReadError) as e:
            reason = f"connection to the realm lost: {e or type(e).__name__}"
        except asyncio.CancelledError:
            reason = "the client closed the connection"
            raise
        finally:
            self.lost(link, reason)

    async def _resolve(self, link: Link, entry: Pending, obj: dict[str, Any]) -> bool:
        """Completes one pending call; False if the stream broke inside its payload."""
        fut = entry.future
        if obj.get("status") != "OK":
            if not fut.done():
                fut.set_exception(error_for(str(obj.get("code", "INTERNAL")), str(obj.get("message", ""))))
            return True
        if entry.payload is None:
            if not fut.done():
                fut.set_result(obj)
            return True
        try:
            result = await entry.payload(obj, link.lines, fut)
        except (asyncio.IncompleteReadError, OSError) as e:
            if not fut.done():
                fut.set_exception(Unavailable(f"connection lost during the download: {e}"))
            return False
        except ChatError as e:
            if not fut.done():
                fut.set_exception(e)
            return True
        except Exception as e:  # a local bug must not kill the reader; the bytes were consumed
            log.exception("payload handler failed")
            if not fut.done():
                fut.set_exception(Internal(f"download failed: {e}"))
            return True
        if not fut.done():
            fut.set_result(result)
        return True

    def _on_event_line(self, obj: dict[str, Any]) -> None:
        ev = typed_event(obj, self.user, self.seen)
        if ev is None:
            return
        self.hub.emit(ev)
        if isinstance(ev, SessionEvent) and ev.state == "expired":
            self.user = None
            if self.settings.auto_reconnect and self.credentials and not self.closing:
                if self._reauth_task is None or self._reauth_task.done():
                    self._reauth_task = asyncio.create_task(self._resume(), name="chat_cli-reauth")

    # ---- connection loss and reconnect --------------------------------------------------------

    def _drop(self, link: Link, reason: str) -> bool:
        """Marks link dead and fails its pending calls. True if it was alive."""
        if link.closed:
            return False
        link.closed = True
        if self.link is link:
            self.link = None
        if link.expect_close:
            link.writer.close()
        else:
            # abort, not close: nothing queued for a dead or desynchronised stream is worth
            # flushing.
            link.writer.transport.abort()
        pending, link.pending = link.pending, deque()
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(Unavailable(reason))
        return True

    def lost(self, link: Link, reason: str) -> None:
        """The link is gone (or unusable): fail what waits on it and, if asked, reconnect."""
        if not self._drop(link, reason) or self.closing:
            return
        if link.expect_close:
            # "quit" was answered and the realm said bye: an orderly end, not a loss.
            self.closing = True
            self.hub.emit(ConnectionEvent(ConnState.CLOSED, "bye", link.realm))
            self.hub.end()
            return
        self.user = None
        self.hub.emit(ConnectionEvent(ConnState.DISCONNECTED, reason, link.realm))
        if self.settings.auto_reconnect:
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = asyncio.create_task(self._reconnect_loop(), name="chat_cli-reconnect")
        else:
            self.hub.end()

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter so that many clients of a restarted realm do not come back in
        # lock step.
        s = self.settings
        delay = min(s.reconnect_max_delay, s.reconnect_min_delay * (2 ** min(attempt, 16)))
        return delay * (0.75 + random.random() / 2)

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self.closing:
            self.hub.emit(ConnectionEvent(ConnState.RECONNECTING, f"attempt {attempt + 1}", self.realm))
            try:
                await self._open_link()
            except ChatError as e:
                log.info("reconnect attempt %d failed: %s", attempt + 1, e.message)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            detail = await self._resume() if self.credentials else "connected (not authenticated)"
            if self.connected:
                self.hub.emit(ConnectionEvent(ConnState.RECONNECTED, detail, self.realm))
                return
            # Lost again while resuming: lost() saw this task still running and started no
            # other, so keep looping here.
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    async def _resume(self) -> str:
        """Logs in again with the remembered credentials (retrying while the realm answers
        Unavailable, e.g. because its main server restarts) and catches up on queued messages."""
        attempt = 0
        while self.credentials and self.connected and not self.closing and self.relogin is not None:
            user, password = self.credentials
            try:
                await self.relogin(user, password)
            except Unavailable:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            except ChatError as e:
                self.credentials = None
                return f"re-authentication failed: {e.code} {e.message}"
            if self.settings.catch_up and self.catch_up is not None:
                with contextlib.suppress(ChatError):
                    await self.catch_up()
            return f"authenticated as {user}"
        return "not authenticated"

    # ---- calls ------------------------------------------------------------------------------

    def live(self) -> Link:
        link = self.link
        if link is None or link.closed:
            if self.closing:
                raise Unavailable("the client is closed")
            if self._reconnect_task is not None and not self._reconnect_task.done():
                raise Unavailable("not connected to the realm (reconnecting)")
            raise Unavailable("not connected to the realm")
        return link

    async def call(self, line: str, *, payload: Payload | None = None, body: Body | None = None) -> Any:
        """Sends one command (and, for sendfile, its raw bytes via `body`) and waits for its
        response: the OK object, or the payload handler's result."""
        link = self.live()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        data = line.encode() + b"\n"
        async with link.write_lock:
            if link.closed:
                raise Unavailable("connection to the realm lost")
            link.pending.append(Pending(fut, line.split(" ", 1)[0], payload))
            self._tap(">", data[:-1])
            try:
                link.writer.write(data)
                if body is not None:
                    await body(link)
                await link.writer.drain()
            except (OSError, RuntimeError) as e:
                # The reader will see the same loss; fail now rather than wait for it.
                self.lost(link, f"connection to the realm lost while sending: {e}")
            except BaseException:
                # Cancelled (or failed) in the middle of a payload: the realm now expects bytes
                # we will never send, so the stream is unusable.
                if body is not None:
                    self.lost(link, "a file upload was interrupted")
                if fut.done() and not fut.cancelled():
                    fut.exception()  # we raise our own error; mark this one as seen
                else:
                    fut.cancel()
                raise
        timeout = self.settings.call_timeout
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Unavailable(f"no answer from the realm within {timeout:g} s") from None
