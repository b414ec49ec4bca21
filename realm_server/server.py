"""The realm: accepts clients, runs their commands through the command table, and fans events
from main's link out to the sessions they name. What the clients' protocol decides (how lines
read, what the realm's own lines look like) is the connection's codec (session.Codec; the text
protocol's is textcodec.TextCodec); what happens to deliveries is realm_server/delivery.py's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from realmchat.errors import ChatError, ResourceExhausted
from realmchat.framing import LineTooLong
from realmchat.metrics import serve_metrics
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb
from realmchat.ratelimit import AttemptLimiter, KeyedLocks
from realmchat.realmauth import DEFAULT_FILE, ENV_SECRET, CredentialError, read_secret
from realmchat.runtime import until_stopped
from realmchat.tls import channel_credentials, client_port_context

from .commands import Commands
from .config import RealmConfig
from .conn import EOF, NEED_MORE, Conn
from .fdlimit import connection_cap
from .irc.edge import IrcCodec, IrcCommands
from .irc.framing import LINE_MAX as IRC_LINE_MAX
from .limits import IpTable, Pacer, parse_networks, peer_ip, unread_bytes
from .logins import Logins
from .metrics import CONNECTIONS, LINK_UP, REPORTS_AWAITING, SESSIONS, commands, events
from .session import Codec, Session
from .textcodec import TextCodec
from .transport import SecureUpstream
from .upstream import Upstream

log = logging.getLogger("realm_server")
SETTLE_S = 5.0  # how long a logout waits for the deliveries being written to the client
SWEEP_GAP_S = 0.25  # timeouts are checked at most this often


class Realm:
    def __init__(self, config: RealmConfig) -> None:
        self.config = config
        self.codec: Codec = TextCodec()  # the client port's protocol (its command table: self.commands)
        self.connections: set[Session] = set()
        self.by_session_id: dict[int, Session] = {}
        secret = read_secret(config.secret_file)
        if not secret:
            raise CredentialError(f"no realm credential: pass --secret-file (main writes DATA_DIR/{DEFAULT_FILE}) "
                                  f"or set ${ENV_SECRET}")
        if config.main_ca:
            self.upstream: Upstream = SecureUpstream(
                config.main_addrs, config.name, config.rpc_timeout_s, on_event=self.dispatch,
                on_linked=self.on_linked, tokens=self.tokens, secret=secret,
                credentials=channel_credentials(config.main_ca, config.main_cert, config.main_key),
                server_name=config.main_server_name)
        else:
            self.upstream = Upstream(config.main_addrs, config.name, config.rpc_timeout_s,
                                     on_event=self.dispatch, on_linked=self.on_linked, tokens=self.tokens,
                                     secret=secret)
        self.ips = IpTable(config.max_conns_per_ip, parse_networks(config.trusted_nets))
        self.login_attempts = AttemptLimiter(config.login_attempts_per_ip, config.login_window_s,
                                             detail="login and register attempts from your address are limited")
        self.login_locks = KeyedLocks()
        self.pacers: dict[str, Pacer] = {}  # account -> its flood control, shared by its connections
        self.max_connections = connection_cap(config.max_connections)
        self._full_logged = 0.0
        self.logins = Logins(self)  # shared by both command tables
        self.commands = Commands(self)
        self.irc = IrcCommands(self)  # the IRC port's command table (its codec is per connection)
        # Each protocol's command table, by its codec: a connection's codec says which runs its lines.
        self._tables: dict[type, Commands | IrcCommands] = {TextCodec: self.commands, IrcCodec: self.irc}
        CONNECTIONS.set_function(lambda: len(self.connections))
        SESSIONS.set_function(lambda: len(self.by_session_id))
        LINK_UP.set_function(lambda: 1 if self.upstream.linked.is_set() else 0)
        REPORTS_AWAITING.set_function(self.upstream.reports.awaiting)
        self._server: asyncio.Server | None = None
        self._irc_server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # connection tasks and attach calls
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at: float | None = None

    # ---- sessions ----------------------------------------------------------------------------

    def tokens(self) -> list[str]:
        return [s.token for s in self.by_session_id.values()]

    def add_session(self, s: Session, user: str, token: str, session_id: int) -> None:
        s.login(user, token, session_id)
        self.by_session_id[session_id] = s

    async def attach(self, s: Session) -> None:
        """Attaches a session that logged in while the link was down or being re-opened. Waits
        (up to the call deadline) for the link: until attached, main has nowhere to deliver."""
        await self.upstream.wait_linked(self.config.rpc_timeout_s)
        link_id = self.upstream.link_id
        if not link_id or not s.authed:
            return  # the next link resumes it by token
        try:
            await self.upstream.call("Attach", pb.AttachRequest(link_id=link_id), s.token)
        except ChatError as exc:
            log.info("attach of %s failed (%s); the next link resumes it", s.user, exc.code)

    async def end_session(self, s: Session) -> None:
        """Logs the session out here and in main. Events still queued for it are reported
        dropped (they come back to the user), never written to whoever logs in next."""
        token = s.token
        self.by_session_id.pop(s.session_id, None)
        s.logout()
        if not await s.settled(SETTLE_S):
            # The client does not take what was sent to the old session: it cannot be told
            # apart from what the next login gets, so the connection goes.
            s.close_reason = "logged out without reading its messages"
            s.abort()
        await self.upstream.flush_reports()
        with contextlib.suppress(ChatError):
            await self.upstream.call("Logout", pb.LogoutRequest(), token)

    def on_linked(self, tokens: list[str], session_ids: list[int]) -> None:
        resumed = dict(zip(tokens, session_ids, strict=True))
        for s in list(self.by_session_id.values()):
            sid = resumed.get(s.token)
            if sid == 0:
                # Main no longer knows this session (expired, or its data is gone).
                self.by_session_id.pop(s.session_id, None)
                s.logout()
                self._watch(s)  # the login timeout runs again
                s.send_event(s.codec.session_expired())
            elif sid is None:
                # Logged in while the link was being re-opened.
                task = asyncio.create_task(self.attach(s))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    def dispatch(self, ev: pb.Event) -> None:
        kind = ev.WhichOneof("kind")
        if kind is None:
            return
        msg_id = ev.private.id if kind == "private" else ev.group.id if kind == "group" else 0
        events(kind).inc(len(ev.session_ids))
        seq = ev.seq
        todo = self.upstream.reports.fan_out(self.upstream.link_id, seq, msg_id, ev.session_ids,
                                             self.by_session_id.get)
        # Encoded once per codec (the text port's is shared; an IRC connection has its own).
        codec: Codec | None = None
        line: bytes | None = None
        for s, tag in todo.write:
            if s.codec is not codec:
                codec = s.codec
                line = codec.event(kind, ev)
            if line is not None:
                s.send_event(line, tag, msg_id)
            elif tag is not None:
                # Nothing to show in this protocol: still written in order (an empty entry), so
                # its delivery and the fan-out it belongs to are reported like any other.
                s.send_event(b"", tag, msg_id)
        for s, tag in todo.repeat:  # a repeat after a relink: this connection has (or is being sent) it
            s.send_repeat(tag, msg_id)
        if todo.dropped:
            self.upstream.report([], todo.dropped)

    # ---- connections -------------------------------------------------------------------------

    def login_limit_key(self, s: Session) -> str:
        """The key that per-IP login limits count under; '' for trusted addresses (exempt)."""
        ip = peer_ip(s.peer)
        return "" if self.ips.is_trusted(ip) else ip

    def _new_pacer(self, now: float) -> Pacer:
        c = self.config
        return Pacer(c.cmd_rate, c.cmd_burst, c.byte_rate, max(c.byte_burst, c.max_line), now)

    def _pacer(self, s: Session, conn: Conn, now: float) -> Pacer:
        """The account's pacer once logged in (its connections share one rate), else the connection's."""
        if not s.authed:
            if conn.pacer is None:
                conn.pacer = self._new_pacer(now)
            return conn.pacer
        key = name_key(s.user)
        p = self.pacers.get(key)
        if p is None:
            if len(self.pacers) > 2 * len(self.connections) + 1000:  # bounded: idle ones go
                for k in [k for k, v in self.pacers.items() if v.idle(now)]:
                    del self.pacers[k]
            p = self.pacers[key] = self._new_pacer(now)
        return p

    async def _paced(self, s: Session, pacer: Pacer, nbytes: int, now: float) -> bool:
        """Waits until the command may run, reading nothing meanwhile (TCP pushes back). False:
        the client's unread backlog passed the limit, the connection is being closed."""
        wait = pacer.delay(now, nbytes)
        if wait <= 0:
            return True
        limit = self.config.max_unread_bytes
        if limit > 0 and unread_bytes(s.lines.buffered, s.transport) > limit:
            await self._close_flooder(s, s.codec.closing(
                "flood", f"more than {limit} bytes sent ahead of what the realm reads at your rate "
                         f"(at most {self.config.cmd_rate:g} commands per second)"))
            return False
        await asyncio.sleep(wait)
        return True

    async def _close_flooder(self, s: Session, event: bytes) -> None:
        """Closes with the `closing` event such that the client can read it: closing a socket
        with unread input sends a reset, which can destroy the event in the client's buffer. So:
        flush, half-close (FIN after the event), drop the client's input for a moment, close."""
        s.send(event)
        transport = s.transport
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                while s.queued_bytes or transport.get_write_buffer_size():  # noqa: ASYNC110 (no event for it)
                    await asyncio.sleep(0.01)
                if transport.can_write_eof():
                    transport.write_eof()
                while await s.lines.read(1 << 16):
                    pass
        log.warning("%s (%s) flooded past --max-unread-bytes: disconnecting", s.peer, s.user or "-")
        s.close_reason = "flood"
        s.abort()

    def _refuse(self, transport: asyncio.Transport, message: str, codec: Codec) -> None:
        """Answers a connection that is over a limit with one ERROR line, then closes it."""
        with contextlib.suppress(Exception):
            transport.write(codec.refused(message))
            transport.close()  # once the line is out

    def _deadline(self, s: Session) -> tuple[float, str] | None:
        """When the next line must have arrived, and which timeout that is."""
        c = self.config
        best: tuple[float, str] | None = None
        if c.idle_timeout_s > 0:
            best = (s.last_command + c.idle_timeout_s, "idle")
        if c.login_timeout_s > 0 and not s.authed:
            at = s.unauth_since + c.login_timeout_s
            if best is None or at < best[0]:
                best = (at, "login")
        return best

    def _timeout_event(self, s: Session, reason: str) -> bytes:
        if reason == "login":
            msg = f"not logged in within {self.config.login_timeout_s:g} s: closing the connection"
        else:
            msg = f"no command for {self.config.idle_timeout_s:g} s: closing the connection (send ping to stay)"
        return s.codec.closing(f"{reason}_timeout", msg)

    # Timeouts: one timer for the realm, not one per connection. It fires at the earliest
    # deadline it knows of; a sweep closes the connections past theirs and sets it again.
    # Deadlines only move later (a command, a login), except at connect and logout, which
    # call _watch.

    def _watch(self, s: Session) -> None:
        d = self._deadline(s)
        if d is None or (self._sweep_at is not None and self._sweep_at <= d[0]):
            return
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = d[0]
        self._sweep_handle = asyncio.get_running_loop().call_at(d[0], self._sweep)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweep_handle = self._sweep_at = None
        now = loop.time()
        nxt: float | None = None
        for s in self.connections:
            d = self._deadline(s)
            if d is None:
                continue
            if d[0] > now:
                if nxt is None or d[0] < nxt:
                    nxt = d[0]
            elif s.lines.task is None and not s.is_closed:
                # Waiting for a line (a running command has no deadline: its connection is
                # watched again once it waits for the next line).
                self._start(s.lines, self._time_out(s, d[1]))
        if nxt is not None:
            # Not more often than SWEEP_GAP_S: a timeout may fire that much late.
            self._sweep_at = max(nxt, now + SWEEP_GAP_S)
            self._sweep_handle = loop.call_at(self._sweep_at, self._sweep)

    async def _time_out(self, s: Session, reason: str) -> None:
        try:
            await s.close_with(self._timeout_event(s, reason), f"{reason} timeout")
        finally:
            await self._end(s)

    # ---- connections -----------------------------------------------------------------------------

    def _open(self, conn: Conn, irc: bool = False) -> Session | None:
        """A new connection (TLS handshake done): its Session, or None when it is refused.
        irc: it came in on the IRC port, so it gets a codec of its own."""
        c = self.config
        codec: Codec = IrcCodec(c.name) if irc else self.codec
        transport = conn.transport
        assert transport is not None
        ip = peer_ip(transport.get_extra_info("peername"))
        if self.max_connections > 0 and len(self.connections) >= self.max_connections:
            now = asyncio.get_running_loop().time()
            if now - self._full_logged > 10:  # one line per 10 s, not one per refused connection
                self._full_logged = now
                log.warning("the realm is full: %d connections (--max-connections / descriptor limit); "
                            "refusing new ones", len(self.connections))
            self._refuse(transport, "the realm is full: too many connections, try again later", codec)
            return None
        if not self.ips.open(ip):
            self._refuse(transport, f"too many connections from your address: at most {c.max_conns_per_ip}", codec)
            return None
        conn.ip = ip
        s = Session(conn, transport, codec, c.max_send_queue, c.max_send_queue_bytes, c.stall_timeout_s,
                    report=self.upstream.report)
        self.connections.add(s)
        s.send(s.codec.hello(c.name))
        self._watch(s)
        return s

    def _start(self, conn: Conn, coro: Coroutine[Any, Any, None]) -> None:
        conn.task = task = asyncio.get_running_loop().create_task(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _on_input(self, conn: Conn) -> None:
        """A line (or the end of input) is there and no task serves the connection: start one."""
        self._start(conn, self._serve(conn))

    async def _serve(self, conn: Conn) -> None:
        """Runs the connection's commands, in order, while complete lines are buffered; then
        ends, leaving the connection idle with no task (Conn starts it again on input)."""
        s = conn.session
        assert s is not None
        c = self.config
        loop = asyncio.get_running_loop()
        idle = False
        try:
            while not s.is_closed:
                # A client that sends without reading its responses waits here (TCP pushes back
                # on it) instead of growing its queue: every response, error or refusal counts.
                await s.wait_for_room()
                line = conn.next_line()
                if line is NEED_MORE:
                    idle = True
                    conn.task = None
                    self._watch(s)  # its deadline may have passed while a command ran
                    return
                if line is EOF:
                    break
                now = loop.time()
                s.last_command = now
                cmd, err = self._parse(s, line)
                if cmd is None and err is None:
                    continue  # a blank line: no response, no cost
                nbytes = len(line) if isinstance(line, bytes) else c.max_line
                if not await self._paced(s, self._pacer(s, conn, now), nbytes, now):
                    break
                if err is not None:
                    commands("-", err.code.value).inc()  # unparsed: no verb to name
                    s.send(s.codec.error(err))
                    continue
                assert cmd is not None
                if not await self._tables[type(s.codec)].run(s, cmd):
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if not idle:
                await self._end(s)

    async def _end(self, s: Session) -> None:
        """The connection is over: its address, its session here and in main, its socket. Runs
        once; the connection's task stays set, so no input starts another."""
        if s not in self.connections:
            return
        if s.close_reason:
            log.info("closed %s (%s): %s", s.peer, s.user or "-", s.close_reason)
        self.ips.close(s.lines.ip)
        self.connections.discard(s)
        if s.authed:
            # A closed connection ends its session: main marks the user offline at once.
            await self.end_session(s)
        await s.close()

    def _parse(self, s: Session, line: bytes | LineTooLong) -> tuple[Any, ChatError | None]:
        """(the command, None), (None, why the line is no command), or (None, None): a blank line."""
        if isinstance(line, LineTooLong):
            return None, ResourceExhausted(
                f"line too long: at most {self.config.max_line} bytes; the rest of it is discarded")
        try:
            return s.codec.parse(line), None
        except ChatError as exc:
            return None, exc

    async def start(self) -> int:
        self.upstream.start()
        ssl_ctx = client_port_context(self.config.tls_cert, self.config.tls_key) if self.config.tls_cert else None
        max_line = self.config.max_line
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Conn(max_line, self._open, self._on_input), self.config.host, self.config.port,
            reuse_address=True, ssl=ssl_ctx, ssl_handshake_timeout=15 if ssl_ctx else None)
        return self._server.sockets[0].getsockname()[1]

    async def start_irc(self) -> int | None:
        """The IRC listener (--irc-port; 0: none), on the same sessions, limits and upstream as
        the text port; IRC framing (512 bytes + tags) instead of the text port's line limit."""
        if not self.config.irc_port:
            return None
        ssl_ctx = client_port_context(self.config.tls_cert, self.config.tls_key) if self.config.tls_cert else None
        self._irc_server = await asyncio.get_running_loop().create_server(
            lambda: Conn(IRC_LINE_MAX, lambda conn: self._open(conn, irc=True), self._on_input),
            self.config.host, self.config.irc_port, reuse_address=True, ssl=ssl_ctx,
            ssl_handshake_timeout=15 if ssl_ctx else None)
        return int(self._irc_server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        if self._irc_server:
            self._irc_server.close()
        for s in list(self.connections):
            s.send_event(s.codec.shutdown())
            await s.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        await self.upstream.flush_reports()  # what the last writes delivered, before the link goes
        await self.upstream.close()


async def serve(config: RealmConfig) -> None:
    try:
        realm = Realm(config)
    except CredentialError as exc:
        raise SystemExit(f"realm_server: {exc}") from None
    port = await realm.start()
    try:
        irc_port = await realm.start_irc()
    except OSError as exc:
        await realm.stop()
        raise SystemExit(f"realm_server: cannot listen for IRC on {config.host}:{config.irc_port}: "
                         f"{exc.strerror or exc} (pick another --irc-port, or 0 for none)") from None
    print(f"realm_server {config.name} listening on {config.host}:{port}", flush=True)
    if irc_port is not None:
        print(f"realm_server {config.name} IRC listening on {config.host}:{irc_port}", flush=True)
    log.info("main server(s): %s; at most %d connections", ", ".join(config.main_addrs), realm.max_connections)
    if config.metrics_port >= 0:
        serve_metrics(config.host, config.metrics_port, f"realm_server {config.name}")
    await until_stopped()
    log.info("shutting down")
    await realm.stop()
    log.info("stopped")
