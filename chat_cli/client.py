"""The asyncio client library of the realm text protocol (port 8000).

    client = await ChatClient.connect("127.0.0.1", 8000, auto_reconnect=True)
    await client.auth("alice", "pw")
    await client.send_private("bob", "halo apa kabar")
    async for ev in client.events():
        ...

How it works: one reader task owns the socket's read side. Every command appends a pending
entry to a FIFO and writes its line; because the realm answers every command exactly once and in
order, a response line resolves the oldest pending entry, and any line without "status" is an
event. A `receivefile ID` entry carries a payload handler: after its OK header the reader hands it
the stream to consume exactly `size` raw bytes before it reads the next line. Writes go through
one lock, so a sendfile header and its raw bytes are never split by another command.

Failures raise realmchat.errors.ChatError (the typed subclass for the code: NotFound,
Unauthenticated, ...); a lost connection fails every pending call with Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import logging
import os
import random
import stat
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

from realmchat.errors import ChatError, Internal, InvalidArgument, Unavailable, error_for
from realmchat.framing import LINE_TOO_LONG, LineReader
from realmchat.seen import SeenIds
from realmchat.textproto import base_file_name, decode

from .models import (
    Ban,
    ConnectionEvent,
    ConnState,
    ConversationInfo,
    Downloaded,
    Edited,
    Event,
    FileInfo,
    GroupInfo,
    GroupListing,
    HistoryPage,
    Member,
    MemberList,
    Message,
    MessageEvent,
    Moderated,
    Presence,
    Role,
    SearchHit,
    Sent,
    Session,
    SessionEvent,
    TypingEvent,
    Uploaded,
    Waiting,
    event_from_wire,
)

__all__ = ["ChatClient", "ChatError", "EventCallback", "ProgressCallback"]

log = logging.getLogger("chat_cli")

# Responses to inbox/history can be long (a page of messages on one line); the realm's own limit
# for command lines is much smaller, but what it sends us is bounded only by this.
DEFAULT_LINE_LIMIT = 64 * 1024 * 1024
# File bytes go out and come in in chunks of this size: big enough for throughput, small enough
# that memory stays flat for any file size.
FILE_CHUNK = 256 * 1024
# Events kept for the first events() subscriber if nobody listens yet (oldest dropped beyond).
BACKLOG_MAX = 10_000
SEEN_IDS_MAX = 20_000  # message ids remembered to drop a repeat after a reconnect

ProgressCallback = Callable[[int, int], None]
"""progress(done_bytes, total_bytes), called as a transfer advances (and once at the end)."""
EventCallback = Callable[[Event], "Awaitable[None] | None"]
"""on_event(event): sync, or async (then run as a task so a slow callback never stalls reading)."""
WireTap = Callable[[str, bytes], None]
"""wire_tap(direction, line): "<" for every line received (without newline), ">" for every
command line sent. Raw file bytes are not tapped."""

_END = object()  # ends an events() iterator
_umask = os.umask(0)
os.umask(_umask)


def _check_word(value: str, what: str) -> str:
    """A single protocol word: non-empty, no whitespace or control characters. Anything else
    would change how the realm splits the line (or inject a second command), and then responses
    would no longer line up with calls."""
    if not isinstance(value, str) or not value or any(c.isspace() or ord(c) < 32 or c == "\x7f"
                                                      for c in value):
        raise InvalidArgument(f"invalid {what} {value!r}: one word without spaces")
    return value


def _presence(r: dict[str, Any], default: str) -> str:
    """The new status in an away/back OK: `presence` (`status` is the OK itself)."""
    value = r.get("presence")
    return str(value) if value else default


def _same_name(a: str, b: str) -> bool:
    """Names are unique ignoring case (the protocol)."""
    return a.casefold() == b.casefold()


def _check_id(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"invalid message id {value!r}: a whole number")
    return value


EMOJI_MAX = 16


def _check_emoji(value: str) -> str:
    _check_word(value, "emoji")
    if len(value) > EMOJI_MAX:
        raise InvalidArgument(f"an emoji is 1-{EMOJI_MAX} characters without spaces")
    return value


def _expand(path: str | os.PathLike[str]) -> Path:
    """`~` expanded (no file system access beyond the home directory lookup)."""
    return Path(os.path.expanduser(path))


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("the message must not be empty")
    if "\n" in text or "\r" in text:
        # One command is one line; a line break would start a second command on the server.
        raise InvalidArgument("the message must be a single line (no line breaks)")
    return text


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[Any]
    verb: str
    # For commands followed by a payload (receivefile ID): consumes exactly header["size"] bytes
    # from the reader and returns the call's result. Runs inside the reader task.
    payload: Callable[[dict[str, Any], LineReader, asyncio.Future[Any]], Awaitable[Any]] | None = None


@dataclass(eq=False)
class _Conn:
    """One TCP connection and the state that dies with it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lines: LineReader
    realm: str = ""
    protocol: int = 0
    pending: deque[_Pending] = field(default_factory=deque)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    read_task: asyncio.Task[None] | None = None
    closed: bool = False
    expect_close: bool = False  # after "quit": the server closing is not a loss


class ChatClient:
    """An asyncio client of one realm.

    Create and connect in one step with `await ChatClient.connect(host, port, **options)`, or
    `client = ChatClient(host, port, **options); await client.open()`. It is also an async
    context manager (`async with await ChatClient.connect(...) as c:` closes on exit).

    Options:
      auto_reconnect: on connection loss, reconnect with exponential backoff (0.2 s .. 5 s),
        re-authenticate with the credentials of the last successful auth(), and (catch_up)
        fetch what was queued meanwhile: inbox and inboxgroup of every group, delivered as
        MessageEvent(backlog=True). The same re-authentication happens when the server reports
        {"event":"session","state":"expired"}.
      on_event: a callback for every event (in addition to events()).
      call_timeout: seconds to wait for any one response (None: wait as long as the connection
        lives); a call that times out raises Unavailable and its late response is dropped.
      line_limit: the longest response line accepted (default 64 MiB).
      wire_tap: sees every raw line sent and received (the terminal's --json mode uses it).
      ssl: a TLS client context (chat_cli.tls.client_context) for a realm that serves TLS;
        None: plain TCP. The certificate is checked against `host` unless server_hostname says
        which name to expect.

    Methods may be called concurrently from many tasks: they are pipelined on the connection and
    each gets its own response. Every method raises ChatError (typed: NotFound, Unauthenticated,
    AlreadyExists, PermissionDenied, InvalidArgument, Unimplemented, ResourceExhausted,
    Unavailable, Internal) with .code and .message.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        auto_reconnect: bool = False,
        catch_up: bool = True,
        on_event: EventCallback | None = None,
        call_timeout: float | None = None,
        connect_timeout: float = 10.0,
        line_limit: int = DEFAULT_LINE_LIMIT,
        reconnect_min_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
        wire_tap: WireTap | None = None,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.auto_reconnect = auto_reconnect
        self.catch_up = catch_up
        self.on_event = on_event
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.line_limit = line_limit
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.wire_tap = wire_tap
        self.ssl = ssl
        self.server_hostname = server_hostname
        self._conn: _Conn | None = None
        self._credentials: tuple[str, str] | None = None
        self._user: str | None = None
        self._realm = ""
        self._closing = False
        self._subscribers: list[asyncio.Queue[Any]] = []
        self._backlog: deque[Event] = deque(maxlen=BACKLOG_MAX)
        self._background: set[asyncio.Task[Any]] = set()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._reauth_task: asyncio.Task[None] | None = None
        # Message ids this client has handed out: the realm promises each one once per
        # connection; across a reconnect (a realm that died before reporting a delivery) a
        # message can come again, and is dropped here.
        self._seen = SeenIds(SEEN_IDS_MAX)

    # ---- connection ---------------------------------------------------------------------

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> ChatClient:
        """Connects (waits for the realm's hello) and returns the client. Raises Unavailable if
        the realm cannot be reached within connect_timeout."""
        client = cls(host, port, **options)
        await client.open()
        return client

    async def open(self) -> None:
        """Opens the connection (again, after a close() or an unrecovered loss)."""
        self._closing = False
        await self._open_connection()
        self._emit(ConnectionEvent(ConnState.CONNECTED, f"{self.host}:{self.port}", self._realm))

    async def __aenter__(self) -> ChatClient:
        if self._conn is None:
            await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def pending_calls(self) -> int:
        """Commands sent and not yet answered (e.g. for a busy indicator)."""
        return len(self._conn.pending) if self._conn is not None else 0

    @property
    def user(self) -> str | None:
        """The authenticated user of this connection, or None."""
        return self._user

    @property
    def realm(self) -> str:
        """The realm's name from its hello (or from auth)."""
        return self._realm

    async def close(self) -> None:
        """Closes the connection for good: no reconnect; pending calls fail with Unavailable;
        events() iterators end after a ConnectionEvent(CLOSED)."""
        if self._closing and self._conn is None:
            return
        self._closing = True
        for task in (self._reconnect_task, self._reauth_task, *self._background):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        conn = self._conn
        if conn is not None:
            self._drop(conn, "the client closed the connection")
            with contextlib.suppress(Exception):
                conn.writer.close()
                await asyncio.wait_for(conn.writer.wait_closed(), 2)
            if conn.read_task is not None and conn.read_task is not asyncio.current_task():
                conn.read_task.cancel()
                with contextlib.suppress(BaseException):
                    await conn.read_task
        self._emit(ConnectionEvent(ConnState.CLOSED, "closed", self._realm))
        self._end_subscribers()

    async def _open_connection(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=self.line_limit + 1, ssl=self.ssl,
                                        server_hostname=(self.server_hostname or self.host) if self.ssl else None),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as e:
            raise Unavailable(f"cannot connect to realm {self.host}:{self.port}: {e or 'timeout'}") from e
        lines = LineReader(reader, self.line_limit)
        conn = _Conn(reader, writer, lines)
        try:
            first = await asyncio.wait_for(lines.read_line(), self.connect_timeout)
            if not isinstance(first, bytes):
                raise Unavailable(f"realm {self.host}:{self.port} closed the connection before hello")
            self._tap("<", first)
            hello = decode(first)
            if hello.get("event") != "hello":
                raise Unavailable(f"{self.host}:{self.port} is not a realm (no hello): {first[:80]!r}")
        except (OSError, TimeoutError, ValueError) as e:
            writer.close()
            raise Unavailable(f"realm {self.host}:{self.port} sent no hello: {e or 'timeout'}") from e
        except ChatError:
            writer.close()
            raise
        conn.realm = str(hello.get("realm", ""))
        conn.protocol = int(hello.get("protocol", 0) or 0)
        self._realm = conn.realm
        self._user = None
        self._conn = conn
        conn.read_task = asyncio.create_task(self._read_loop(conn), name="chat_cli-reader")

    # ---- events -------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """An async iterator over every event from now on (each call gets its own stream, so
        several consumers each see every event). The first subscriber also gets the events that
        arrived while nobody listened. It ends after ConnectionEvent(CLOSED), or after
        DISCONNECTED when auto_reconnect is off."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if not self._subscribers:
            while self._backlog:
                queue.put_nowait(self._backlog.popleft())
        self._subscribers.append(queue)
        return self._iterate(queue)

    async def _iterate(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Event]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    def _emit(self, ev: Event) -> None:
        if self._subscribers:
            for q in self._subscribers:
                q.put_nowait(ev)
        else:
            self._backlog.append(ev)
        if self.on_event is not None:
            try:
                result = self.on_event(ev)
                if inspect.isawaitable(result):
                    self._spawn(result, "on_event")
            except Exception:
                log.exception("on_event callback failed for %r", ev)

    def _end_subscribers(self) -> None:
        for q in self._subscribers:
            q.put_nowait(_END)

    def _spawn(self, aw: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        async def run() -> Any:
            try:
                return await aw
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed", name)
                return None

        task = asyncio.create_task(run(), name=f"chat_cli-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ---- reading ------------------------------------------------------------------------

    def _tap(self, direction: str, line: bytes) -> None:
        if self.wire_tap is not None:
            try:
                self.wire_tap(direction, line)
            except Exception:
                log.exception("wire_tap failed")

    async def _read_loop(self, conn: _Conn) -> None:
        reason = "the realm closed the connection"
        try:
            while True:
                line = await conn.lines.read_line()
                if line is None:
                    break
                if line is LINE_TOO_LONG:
                    # We cannot know whether the lost line was a response or an event, so the
                    # FIFO can no longer be trusted: give the connection up.
                    reason = f"a line from the realm exceeded {self.line_limit} bytes"
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
                    self._on_server_event(obj)
                    continue
                if not conn.pending:
                    log.warning("response without a pending command, ignored: %r", line[:200])
                    continue
                entry = conn.pending.popleft()
                if not await self._resolve(conn, entry, obj):
                    reason = "the connection broke during a file download"
                    break
        except (OSError, asyncio.IncompleteReadError) as e:
            reason = f"connection to the realm lost: {e or type(e).__name__}"
        except asyncio.CancelledError:
            reason = "the client closed the connection"
            raise
        finally:
            self._lost(conn, reason)

    async def _resolve(self, conn: _Conn, entry: _Pending, obj: dict[str, Any]) -> bool:
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
            result = await entry.payload(obj, conn.lines, fut)
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

    def _on_server_event(self, obj: dict[str, Any]) -> None:
        if obj.get("event") == "hello":
            return  # only expected once, at connect
        ev = event_from_wire(obj)
        if isinstance(ev, MessageEvent):
            if ev.message.id and not self._seen.first_sight(ev.message.id):
                return
            if not ev.message.is_group and self._is_me(ev.message.sender):
                # A carbon: sent from another session of ours; it belongs to the chat with `to`.
                ev = dataclasses.replace(ev, own=True)
        elif isinstance(ev, TypingEvent) and ev.peer and not self._is_me(ev.peer) and not _same_name(ev.peer, ev.user):
            ev = dataclasses.replace(ev, group=True)
        self._emit(ev)
        if isinstance(ev, SessionEvent) and ev.state == "expired":
            self._user = None
            if self.auto_reconnect and self._credentials and not self._closing:
                if self._reauth_task is None or self._reauth_task.done():
                    self._reauth_task = asyncio.create_task(self._resume(), name="chat_cli-reauth")

    def _is_me(self, name: str) -> bool:
        return self._user is not None and _same_name(name, self._user)

    # ---- connection loss and reconnect ----------------------------------------------------

    def _drop(self, conn: _Conn, reason: str) -> bool:
        """Marks conn dead and fails its pending calls. True if it was alive."""
        if conn.closed:
            return False
        conn.closed = True
        if self._conn is conn:
            self._conn = None
        if conn.expect_close:
            conn.writer.close()
        else:
            # abort, not close: nothing queued for a dead or desynchronised stream is worth
            # flushing.
            conn.writer.transport.abort()
        pending, conn.pending = conn.pending, deque()
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(Unavailable(reason))
        return True

    def _lost(self, conn: _Conn, reason: str) -> None:
        if not self._drop(conn, reason) or self._closing:
            return
        if conn.expect_close:
            # "quit" was answered and the realm said bye: an orderly end, not a loss.
            self._closing = True
            self._emit(ConnectionEvent(ConnState.CLOSED, "bye", conn.realm))
            self._end_subscribers()
            return
        self._user = None
        self._emit(ConnectionEvent(ConnState.DISCONNECTED, reason, conn.realm))
        if self.auto_reconnect:
            if self._reconnect_task is None or self._reconnect_task.done():
                self._reconnect_task = asyncio.create_task(self._reconnect_loop(),
                                                           name="chat_cli-reconnect")
        else:
            self._end_subscribers()

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter so that many clients of a restarted realm do not come back in
        # lock step.
        delay = min(self.reconnect_max_delay, self.reconnect_min_delay * (2 ** min(attempt, 16)))
        return delay * (0.75 + random.random() / 2)

    async def _reconnect_loop(self) -> None:
        attempt = 0
        while not self._closing:
            self._emit(ConnectionEvent(ConnState.RECONNECTING, f"attempt {attempt + 1}", self._realm))
            try:
                await self._open_connection()
            except ChatError as e:
                log.info("reconnect attempt %d failed: %s", attempt + 1, e.message)
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            detail = await self._resume() if self._credentials else "connected (not authenticated)"
            if self.connected:
                self._emit(ConnectionEvent(ConnState.RECONNECTED, detail, self._realm))
                return
            # Lost again while resuming: _lost saw this task still running and started no
            # other, so keep looping here.
            await asyncio.sleep(self._backoff(attempt))
            attempt += 1

    async def _resume(self) -> str:
        """Re-authenticates with the remembered credentials (retrying while the realm answers
        Unavailable, e.g. because its main server restarts) and catches up on queued messages."""
        attempt = 0
        while self._credentials and self.connected and not self._closing:
            user, password = self._credentials
            try:
                await self.auth(user, password)
            except Unavailable:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            except ChatError as e:
                self._credentials = None
                return f"re-authentication failed: {e.code} {e.message}"
            if self.catch_up:
                with contextlib.suppress(ChatError):
                    await self._catch_up()
            return f"authenticated as {user}"
        return "not authenticated"

    async def _catch_up(self) -> None:
        for msg in await self.inbox():
            self._emit(MessageEvent(msg, backlog=True))
        for g in await self.groups():
            for msg in await self.inbox_group(g.name):
                self._emit(MessageEvent(msg, backlog=True))

    # ---- calls ----------------------------------------------------------------------------

    def _live_conn(self) -> _Conn:
        conn = self._conn
        if conn is None or conn.closed:
            if self._closing:
                raise Unavailable("the client is closed")
            if self._reconnect_task is not None and not self._reconnect_task.done():
                raise Unavailable("not connected to the realm (reconnecting)")
            raise Unavailable("not connected to the realm")
        return conn

    async def _call(
        self,
        line: str,
        *,
        payload: Callable[[dict[str, Any], LineReader, asyncio.Future[Any]], Awaitable[Any]] | None = None,
        body: Callable[[_Conn], Awaitable[None]] | None = None,
    ) -> Any:
        """Sends one command (and, for sendfile, its raw bytes via `body`) and waits for its
        response: the OK object, or the payload handler's result."""
        conn = self._live_conn()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        data = line.encode() + b"\n"
        async with conn.write_lock:
            if conn.closed:
                raise Unavailable("connection to the realm lost")
            conn.pending.append(_Pending(fut, line.split(" ", 1)[0], payload))
            self._tap(">", data[:-1])
            try:
                conn.writer.write(data)
                if body is not None:
                    await body(conn)
                await conn.writer.drain()
            except (OSError, RuntimeError) as e:
                # The reader will see the same loss; fail now rather than wait for it.
                self._lost(conn, f"connection to the realm lost while sending: {e}")
            except BaseException:
                # Cancelled (or failed) in the middle of a payload: the realm now expects bytes
                # we will never send, so the stream is unusable.
                if body is not None:
                    self._lost(conn, "a file upload was interrupted")
                if fut.done() and not fut.cancelled():
                    fut.exception()  # we raise our own error; mark this one as seen
                else:
                    fut.cancel()
                raise
        if self.call_timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, self.call_timeout)
        except TimeoutError:
            raise Unavailable(f"no answer from the realm within {self.call_timeout:g} s") from None

    async def command(self, line: str) -> dict[str, Any]:
        """Sends one raw protocol line (no payload: not `sendfile` nor `receivefile ID`) and
        returns the OK object; raises ChatError for an ERROR. For verbs this class lacks."""
        line = line.rstrip("\r\n")
        if "\n" in line or "\r" in line:
            raise InvalidArgument("one command, one line")
        verb = line.strip().split(" ", 1)[0].lower()
        if verb == "sendfile" or (verb == "receivefile" and line.split()[1:]):
            raise InvalidArgument(f"use send_file()/receive_file() for {verb}: it carries a payload")
        if not line.strip():
            raise InvalidArgument("empty command")
        return await self._call(line)

    # ---- accounts -------------------------------------------------------------------------

    async def register(self, user: str, password: str) -> str:
        """Creates an account; returns the user name as stored. ALREADY_EXISTS, INVALID_ARGUMENT."""
        r = await self._call(f"register {_check_word(user, 'user name')} {_check_word(password, 'password')}")
        return str(r.get("user", user))

    async def auth(self, user: str, password: str) -> Session:
        """Logs in; the credentials are remembered for auto_reconnect. UNAUTHENTICATED. The
        session's `waiting` says how many messages wait and where (nothing is fetched: `inbox`)."""
        r = await self._call(f"auth {_check_word(user, 'user name')} {_check_word(password, 'password')}")
        session = Session(user=str(r.get("user", user)), realm=str(r.get("realm", self._realm)),
                          waiting=Waiting.from_wire(r.get("waiting")))
        self._credentials = (user, password)
        self._user = session.user
        if session.realm:
            self._realm = session.realm
        return session

    async def logout(self) -> None:
        """Ends the session (the connection stays open) and forgets the credentials."""
        self._credentials = None
        await self._call("logout")
        self._user = None

    async def quit(self) -> None:
        """Says bye: the realm answers and closes the connection; then the client is closed."""
        conn = self._live_conn()
        conn.expect_close = True
        try:
            await self._call("quit")
        finally:
            await self.close()

    # ---- messages -------------------------------------------------------------------------

    async def send_private(self, to: str, text: str) -> Sent:
        """Sends a private message (single line). NOT_FOUND for an unknown user."""
        r = await self._call(f"sendprivate {_check_word(to, 'recipient')} {_check_text(text)}")
        return Sent(id=int(r.get("id", 0)), ts=str(r.get("ts", "")))

    async def send_group(self, group: str, text: str) -> Sent:
        """Sends to a group. NOT_FOUND, PERMISSION_DENIED (not a member)."""
        r = await self._call(f"sendgroup {_check_word(group, 'group')} {_check_text(text)}")
        return Sent(id=int(r.get("id", 0)), ts=str(r.get("ts", "")))

    async def _paged(self, line: str) -> list[Message]:
        out: list[Message] = []
        while True:
            r = await self._call(line)
            page = [Message.from_wire(m) for m in r.get("messages", []) if isinstance(m, dict)]
            out.extend(m for m in page if not m.id or self._seen.first_sight(m.id))
            # "more" means another page waits; an empty page with more=true would loop forever.
            if not r.get("more") or not page:
                return out

    async def inbox(self) -> list[Message]:
        """Private messages not yet delivered to this user (all pages), oldest first."""
        return await self._paged("inbox")

    async def inbox_group(self, group: str) -> list[Message]:
        """Messages of `group` not yet delivered to this user (all pages). NOT_FOUND,
        PERMISSION_DENIED."""
        return await self._paged(f"inboxgroup {_check_word(group, 'group')}")

    async def history(self, peer: str, n: int | None = None, before: int | None = None,
                      after: int | None = None) -> HistoryPage:
        """The conversation with a user or a group ("#name" forces a group), delivered or not,
        oldest first: the latest n messages (the server's default if None), or the n just
        before message `before` / just after message `after` (one of the two at most). The
        result is a list of messages with `.more`: True when more exist beyond the page (older
        ones for a plain or `before` call, newer ones for `after`), so scrolling back is
        `history(peer, n, before=page[0].id)` while `more`."""
        line = f"history {_check_word(peer, 'user or group')}"
        if n is not None:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise InvalidArgument("N must be a whole number of at least 1")
            line += f" {n}"
        if before is not None and after is not None:
            raise InvalidArgument("history takes before ID or after ID, not both")
        if before is not None:
            line += f" before {_check_id(before)}"
        elif after is not None:
            line += f" after {_check_id(after)}"
        r = await self._call(line)
        messages = [Message.from_wire(m) for m in r.get("messages", []) if isinstance(m, dict)]
        return HistoryPage(messages, more=r.get("more") is True)

    # ---- messages have a life -------------------------------------------------------------

    async def edit(self, message_id: int, text: str) -> Edited:
        """Replaces the text of your message `message_id` (the author only: PERMISSION_DENIED
        otherwise; NOT_FOUND for an unknown or deleted id). Everyone who can see it gets an
        EditedEvent."""
        r = await self._call(f"edit {_check_id(message_id)} {_check_text(text)}")
        return Edited(id=int(r.get("id", message_id)), edited=str(r.get("edited", "")))

    async def delete(self, message_id: int) -> int:
        """Deletes message `message_id` for everyone (its author, or an owner/admin of its
        group); they get a DeletedEvent and see a tombstone. Returns the id."""
        r = await self._call(f"delete {_check_id(message_id)}")
        return int(r.get("id", message_id))

    async def reply(self, message_id: int, text: str) -> Sent:
        """Answers message `message_id` in its own conversation (private or group): the new
        message carries reply_to=message_id."""
        r = await self._call(f"reply {_check_id(message_id)} {_check_text(text)}")
        return Sent(id=int(r.get("id", 0)), ts=str(r.get("ts", "")))

    async def react(self, message_id: int, emoji: str) -> int:
        """Adds your reaction `emoji` (1-16 characters, no spaces) to message `message_id`."""
        r = await self._call(f"react {_check_id(message_id)} {_check_emoji(emoji)}")
        return int(r.get("id", message_id))

    async def unreact(self, message_id: int, emoji: str) -> int:
        """Removes your reaction `emoji` from message `message_id`."""
        r = await self._call(f"unreact {_check_id(message_id)} {_check_emoji(emoji)}")
        return int(r.get("id", message_id))

    async def search(self, query: str, scope: str | None = None) -> list[SearchHit]:
        """Messages you may read that match `query`, best first (at most 50), each with its
        conversation. `scope` narrows it to one conversation: "#GROUP" or "@USER" (a bare name
        is taken as a user). Deleted messages are never found."""
        q = _check_text(query)
        line = "search"
        if scope:
            s = _check_word(scope, "scope")
            if not s.startswith(("#", "@")):
                s = "@" + s
            if len(s) < 2:
                raise InvalidArgument("scope must be #GROUP or @USER")
            line += f" {s}"
        elif q.lstrip().startswith(("#", "@")):
            # A query starting with # or @ would be read as a scope: not what was asked.
            raise InvalidArgument("a query that starts with # or @ needs a scope (search #GROUP QUERY)")
        r = await self._call(f"{line} {q}")
        me = self._user
        hits: list[SearchHit] = []
        for obj in r.get("messages", []):
            if not isinstance(obj, dict):
                continue
            m = Message.from_wire(obj)
            hits.append(SearchHit(message=m, peer=m.peer(me), kind="group" if m.is_group else "user"))
        return hits

    # ---- groups ---------------------------------------------------------------------------

    async def create_group(self, group: str, private: bool = False) -> str:
        """Creates a group; you become its owner. A private group can be joined only by invited
        users or with its key (set_group_key). Returns the name as stored. ALREADY_EXISTS (a
        group or a user has that name), INVALID_ARGUMENT."""
        line = f"creategroup {_check_word(group, 'group')}" + (" private" if private else "")
        r = await self._call(line)
        return str(r.get("group", group))

    async def join_group(self, group: str, key: str | None = None) -> str:
        """Joins a group; a private one needs an invitation or its `key`. NOT_FOUND,
        PERMISSION_DENIED (private and not invited, wrong or missing key, banned)."""
        line = f"joingroup {_check_word(group, 'group')}"
        if key is not None:
            line += f" {_check_word(key, 'key')}"
        r = await self._call(line)
        return str(r.get("group", group))

    async def leave_group(self, group: str) -> str:
        """Leaves a group. NOT_FOUND."""
        r = await self._call(f"leavegroup {_check_word(group, 'group')}")
        return str(r.get("group", group))

    async def groups(self) -> list[GroupInfo]:
        """The user's groups with role and member count (mode and topic when the realm says)."""
        r = await self._call("groups")
        return [GroupInfo.from_wire(g) for g in r.get("groups", []) if isinstance(g, dict)]

    async def list_groups(self, pattern: str | None = None) -> list[GroupListing]:
        """Public groups, plus the private ones you are in; `pattern` filters by name (the
        realm's matching, e.g. `prog*`)."""
        line = "listgroups" + (f" {_check_word(pattern, 'pattern')}" if pattern else "")
        r = await self._call(line)
        return [GroupListing.from_wire(g) for g in r.get("groups", []) if isinstance(g, dict)]

    async def members(self, group: str) -> MemberList:
        """The members of `group`: role, online, realm. A private group's members are visible
        to its members only (PERMISSION_DENIED). For the group's owner and admins `.banned`
        lists the bans in force (newest first); it is None for everyone else."""
        r = await self._call(f"members {_check_word(group, 'group')}")
        banned = r.get("banned")
        return MemberList([Member.from_wire(m) for m in r.get("members", []) if isinstance(m, dict)],
                          [Ban.from_wire(b) for b in banned if isinstance(b, dict)]
                          if isinstance(banned, list) else None)

    def _moderated(self, r: dict[str, Any], group: str, user: str) -> Moderated:
        return Moderated(group=str(r.get("group", group)), user=str(r.get("user", user)), role=str(r.get("role", "")))

    async def invite(self, group: str, user: str) -> Moderated:
        """Invites `user` into `group` (owner/admin only); they get an InvitedEvent and may
        then join a private group without its key."""
        r = await self._call(f"invite {_check_word(group, 'group')} {_check_word(user, 'user name')}")
        return self._moderated(r, group, user)

    async def kick(self, group: str, user: str, reason: str | None = None) -> Moderated:
        """Removes `user` from `group` (owner/admin only, never the owner); they may join
        again. `reason` (one line) is shown to the members."""
        line = f"kick {_check_word(group, 'group')} {_check_word(user, 'user name')}"
        if reason and reason.strip():
            line += f" {_check_text(reason)}"
        return self._moderated(await self._call(line), group, user)

    async def ban(self, group: str, user: str, reason: str | None = None) -> Moderated:
        """Bans `user` from `group` (owner/admin only): a ban also kicks, and they cannot join
        again until unbanned."""
        line = f"ban {_check_word(group, 'group')} {_check_word(user, 'user name')}"
        if reason and reason.strip():
            line += f" {_check_text(reason)}"
        return self._moderated(await self._call(line), group, user)

    async def unban(self, group: str, user: str) -> Moderated:
        """Lifts a ban (owner/admin only)."""
        r = await self._call(f"unban {_check_word(group, 'group')} {_check_word(user, 'user name')}")
        return self._moderated(r, group, user)

    async def set_role(self, group: str, user: str, role: str) -> Moderated:
        """Makes a member an "admin" or a plain "member" (owner only)."""
        role = str(role).lower()
        if role not in (Role.ADMIN, Role.MEMBER):
            raise InvalidArgument(f"role must be admin or member, not {role!r}")
        r = await self._call(f"role {_check_word(group, 'group')} {_check_word(user, 'user name')} {role}")
        return self._moderated(r, group, user)

    async def topic(self, group: str) -> str:
        """The topic of `group` (empty if none)."""
        r = await self._call(f"topic {_check_word(group, 'group')}")
        return str(r.get("topic", "") or "")

    async def set_topic(self, group: str, text: str) -> str:
        """Sets the topic (owner/admin only; one line); returns it as stored. Every member gets
        a TopicEvent. (The text "-" alone clears it, as clear_topic does.)"""
        r = await self._call(f"topic {_check_word(group, 'group')} {_check_text(text)}")
        return str(r.get("topic", text) or "")

    async def clear_topic(self, group: str) -> None:
        """Removes the topic (owner/admin); members get a TopicEvent with an empty topic."""
        await self._call(f"topic {_check_word(group, 'group')} -")

    async def set_group_key(self, group: str, key: str) -> str:
        """Sets the key that lets anyone who knows it join the (private) group (owner/admin)."""
        if key == "-":
            raise InvalidArgument("'-' clears the key: use clear_group_key()")
        r = await self._call(f"groupkey {_check_word(group, 'group')} {_check_word(key, 'key')}")
        return str(r.get("group", group))

    async def clear_group_key(self, group: str) -> str:
        """Removes the group's key (owner/admin)."""
        r = await self._call(f"groupkey {_check_word(group, 'group')} -")
        return str(r.get("group", group))

    async def delete_group(self, group: str) -> str:
        """Deletes the group for everyone (owner only); members get a GroupDeletedEvent."""
        r = await self._call(f"deletegroup {_check_word(group, 'group')}")
        return str(r.get("group", group))

    # ---- conversation state (kept by the server, the same on every device) ------------------

    async def conversations(self) -> list[ConversationInfo]:
        """Every conversation the user has, newest first: peer, kind ("user"/"group"), the last
        message, unread and mention counts, the id read up to and (private) how far the peer
        has read the user's own messages (`seen`, while the peer's receipts are on)."""
        r = await self._call("conversations")
        return [ConversationInfo.from_wire(c) for c in r.get("conversations", []) if isinstance(c, dict)]

    async def read(self, peer: str, message_id: int) -> int:
        """Marks the conversation with `peer` (a user, or a group; "#group" accepted) read up to
        `message_id`; returns where the read mark now is (it never moves back). The user's other
        sessions get a ReadEvent; the sender of a private message a SeenEvent (receipts on)."""
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 0:
            raise InvalidArgument(f"invalid message id {message_id!r}")
        r = await self._call(f"read {_check_word(peer.lstrip('#') or peer, 'user or group')} {message_id}")
        return int(r.get("read", message_id) or 0)

    async def away(self, message: str | None = None) -> str:
        """Sets the user away (with an optional one-line message); returns the new presence
        ("away")."""
        line = "away" + (f" {_check_text(message)}" if message and message.strip() else "")
        r = await self._call(line)
        return _presence(r, "away")

    async def back(self) -> str:
        """Online again after away(); returns the status."""
        r = await self._call("back")
        return _presence(r, "online")

    async def typing(self, peer: str) -> None:
        """Tells `peer` (a user, or a group's members) that the user is typing. Not stored; it
        expires after a few seconds, so call it again every ~3 s while the user types."""
        await self._call(f"typing {_check_word(peer.lstrip('#') or peer, 'user or group')}")

    async def receipts(self, on: bool | None = None) -> bool:
        """Whether senders learn (SeenEvent) when this user reads their private messages: turns
        it on or off, or (None) asks which it is. Returns the setting now."""
        r = await self._call("receipts" if on is None else f"receipts {'on' if on else 'off'}")
        value = r.get("receipts", on)
        return value is True or str(value).lower() in ("on", "true", "1")

    # ---- helpers --------------------------------------------------------------------------

    async def who(self) -> list[Presence]:
        """Online users: the realm of each session, status ("online"/"away") and away message."""
        r = await self._call("who")
        return [Presence.from_wire(p) for p in r.get("online", []) if isinstance(p, dict)]

    async def ping(self) -> float:
        """Round trip to the realm, in seconds."""
        start = time.perf_counter()
        await self._call("ping")
        return time.perf_counter() - start

    async def help(self) -> list[str]:
        """The realm's command list."""
        r = await self._call("help")
        return [str(c) for c in r.get("commands", [])]

    # ---- files ----------------------------------------------------------------------------

    async def send_group_file(self, group: str, path: str | os.PathLike[str],
                              progress: ProgressCallback | None = None, *, name: str | None = None) -> Uploaded:
        """Uploads a local file to `group` (members only): every member gets a FileEvent whose
        file.group is set, and may download it with receive_file."""
        return await self.send_file("#" + _check_word(group, "group").lstrip("#"), path, progress, name=name)

    async def send_file(self, to: str, path: str | os.PathLike[str], progress: ProgressCallback | None = None,
                        *, name: str | None = None) -> Uploaded:
        """Uploads the local file `path` (~ expanded) to user `to` (or to a group: "#GROUP") as
        `name` (default: the file's own name), streaming it in chunks: never read whole into
        memory. Other commands queue behind the upload (events keep flowing). Raises NotFound
        if the local file is missing, InvalidArgument if it is not a regular file, and the
        realm's errors (NOT_FOUND for an unknown user or group, RESOURCE_EXHAUSTED when too
        large). The realm's sha256 is checked against the one computed while sending."""
        _check_word(to, "recipient")
        local = _expand(path)
        try:
            # Opened off the event loop: a slow or network disk must not stall events.
            f = await asyncio.to_thread(open, local, "rb")
        except FileNotFoundError:
            raise error_for("NOT_FOUND", f"no such local file: {local}") from None
        except OSError as e:
            raise InvalidArgument(f"cannot read {local}: {e.strerror or e}") from None
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidArgument(f"{local} is not a regular file")
            size = st.st_size
            file_name = base_file_name(name if name is not None else local.name)
            digest = hashlib.sha256()

            async def body(conn: _Conn) -> None:
                sent = 0
                if progress:
                    progress(0, size)
                while sent < size:
                    chunk = await asyncio.to_thread(f.read, min(FILE_CHUNK, size - sent))
                    if not chunk:
                        # The file shrank after we announced its size; the realm would wait for
                        # bytes that never come. Drop the connection: a broken upload is
                        # discarded by the server, never stored.
                        self._lost(conn, f"{local} changed while it was being sent")
                        raise InvalidArgument(f"{local} changed while it was being sent; try again")
                    digest.update(chunk)
                    conn.writer.write(chunk)
                    sent += len(chunk)
                    await conn.writer.drain()
                    if progress:
                        progress(sent, size)

            r = await self._call(f"sendfile {to} {file_name} {size}", body=body)
        finally:
            f.close()
        result = Uploaded(id=int(r.get("id", 0)), name=str(r.get("name", file_name)),
                          size=int(r.get("size", size)), sha256=str(r.get("sha256", "")))
        if result.sha256.lower() != digest.hexdigest() or result.size != size:
            raise Internal(f"the realm stored {result.size} bytes with sha256 {result.sha256}, "
                           f"but {size} bytes with sha256 {digest.hexdigest()} were sent")
        return result

    async def pending_files(self) -> list[FileInfo]:
        """Files waiting for this user (not yet downloaded)."""
        r = await self._call("receivefile")
        return [FileInfo.from_wire(f) for f in r.get("files", []) if isinstance(f, dict)]

    async def receive_file(self, file_id: int, dest_dir: str | os.PathLike[str],
                           progress: ProgressCallback | None = None) -> Downloaded:
        """Downloads file `file_id` into `dest_dir` (created if needed; ~ expanded). The bytes
        stream to a hidden temp file, the sha256 is verified, and only then the file gets its
        name: the sender's bare name, or "name (1).ext", "name (2).ext"... if taken. An existing
        file is never overwritten; a failed download leaves nothing behind. NOT_FOUND for an
        unknown id; Internal if the checksum does not match."""
        if not isinstance(file_id, int) or file_id < 0:
            raise InvalidArgument(f"invalid file id {file_id!r}")
        dest = _expand(dest_dir)
        try:
            await asyncio.to_thread(os.makedirs, dest, exist_ok=True)
        except OSError as e:
            raise InvalidArgument(f"cannot create download directory {dest}: {e.strerror or e}") from None

        async def payload(header: dict[str, Any], lines: LineReader,
                          fut: asyncio.Future[Any]) -> Downloaded | None:
            return await _download(header, lines, fut, dest, progress)

        return await self._call(f"receivefile {file_id}", payload=payload)


# ---- downloads ------------------------------------------------------------------------------

_DOUBLE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")


def _split_name(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # "README" or ".bashrc": no extension to keep apart
        return name, ""
    return stem, "." + ext


def claim_free_name(dest: Path, name: str) -> Path:
    """Creates (O_EXCL) and returns the first free path among dest/name, dest/"stem (1).ext", ...
    Creating it reserves it against other downloads racing for the same name."""
    stem, ext = _split_name(name)
    for i in range(100_000):
        candidate_name = name if i == 0 else f"{stem} ({i}){ext}"
        while len(candidate_name.encode()) > 255 and stem:
            stem = stem[:-1]
            candidate_name = f"{stem} ({i}){ext}"
        candidate = dest / candidate_name
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise Internal(f"no free file name for {name!r} in {dest}")


async def _download(header: dict[str, Any], lines: LineReader, fut: asyncio.Future[Any], dest: Path,
                    progress: ProgressCallback | None) -> Downloaded | None:
    """Consumes exactly header["size"] payload bytes whatever happens locally: leaving any in
    the stream would make the reader parse file bytes as protocol lines."""
    info = FileInfo.from_wire(header)
    size = info.size
    if fut.done():  # the caller gave up (cancelled or timed out): drop the bytes
        await lines.discard(size)
        return None
    try:
        safe = base_file_name(info.name)
    except ChatError:
        safe = f"file-{info.id}"
    digest = hashlib.sha256()
    local_error: OSError | None = None
    tmp_path: str | None = None
    out = None
    try:
        fd, tmp_path = tempfile.mkstemp(prefix=".", suffix=".part", dir=dest)
        out = os.fdopen(fd, "wb")
    except OSError as e:
        local_error = e
    received = 0
    try:
        if progress:
            progress(0, size)
        async for chunk in lines.iter_payload(size, FILE_CHUNK):
            if fut.done():
                # The caller gave up mid-way: stop writing (the finally removes the temp file)
                # but keep consuming, the stream must stay in sync.
                if out is not None:
                    out.close()
                    out = None
                continue
            digest.update(chunk)
            received += len(chunk)
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as e:  # disk full: keep consuming, report at the end
                    local_error = e
                    out.close()
                    out = None
            if progress:
                progress(received, size)
        if fut.done():
            return None
        if out is not None:
            out.close()
            out = None
        if local_error is not None:
            raise InvalidArgument(f"cannot write into {dest}: {local_error.strerror or local_error}")
        if digest.hexdigest() != info.sha256.lower():
            raise Internal(f"checksum mismatch for file {info.id} ({safe}): expected {info.sha256}, "
                           f"got {digest.hexdigest()}; nothing was saved")
        assert tmp_path is not None
        os.chmod(tmp_path, 0o666 & ~_umask)
        final = claim_free_name(dest, safe)
        os.replace(tmp_path, final)  # replaces only the placeholder we just created
        tmp_path = None
        return Downloaded(file=info, path=str(final))
    finally:
        if out is not None:
            out.close()
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
