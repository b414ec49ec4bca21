"""The realm: accepts text-protocol clients, runs their commands through the command table,
and fans events from main's link out to the sessions they name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from realmchat import textproto as tp
from realmchat.errors import ChatError, InvalidArgument, ResourceExhausted
from realmchat.framing import LINE_TOO_LONG
from realmchat.pb import chat_pb2 as pb

from .commands import Commands
from .config import RealmConfig
from .convert import file_dict, message_dict
from .session import Session
from .upstream import Upstream

log = logging.getLogger("realm_server")


class Realm:
    def __init__(self, config: RealmConfig) -> None:
        self.config = config
        self.connections: set[Session] = set()
        self.by_session_id: dict[int, Session] = {}
        self.upstream = Upstream(config.main_addrs, config.name, config.rpc_timeout_s,
                                 on_event=self.dispatch, on_linked=self.on_linked, tokens=self.tokens)
        self.commands = Commands(self)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # connection handlers and attach calls

    # ---- sessions ----------------------------------------------------------------------------

    def tokens(self) -> list[str]:
        return [s.token for s in self.by_session_id.values()]

    def add_session(self, s: Session, user: str, token: str, session_id: int) -> None:
        s.login(user, token, session_id)
        self.by_session_id[session_id] = s

    async def attach(self, s: Session) -> None:
        link_id = self.upstream.link_id
        if not link_id:
            return  # the next link resumes it by token
        try:
            await self.upstream.call("Attach", pb.AttachRequest(link_id=link_id), s.token)
        except ChatError as exc:
            log.info("attach of %s failed (%s); the next link resumes it", s.user, exc.code)

    async def end_session(self, s: Session) -> None:
        token = s.token
        self.by_session_id.pop(s.session_id, None)
        s.logout()
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
                s.send_event(tp.event("session", state="expired",
                                      message="your session ended; log in again with auth USER PASS"))
            elif sid is None:
                # Logged in while the link was being re-opened.
                task = asyncio.create_task(self.attach(s))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    def dispatch(self, ev: pb.Event) -> None:
        kind = ev.WhichOneof("kind")
        if kind == "private":
            line = tp.event("private", **message_dict(ev.private))
        elif kind == "group":
            line = tp.event("group", **message_dict(ev.group))
        elif kind == "file":
            line = tp.event("file", **file_dict(ev.file))
        else:
            return
        # Encoded once, written to every target session.
        for sid in ev.session_ids:
            s = self.by_session_id.get(sid)
            if s is not None:
                s.send_event(line)

    # ---- connections -------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task:
            self._handlers.add(task)
        s = Session(reader, writer, self.config.max_line, self.config.max_send_queue)
        self.connections.add(s)
        s.send(tp.event("hello", realm=self.config.name, protocol=tp.PROTOCOL_VERSION))
        try:
            while not s.closed.is_set():
                line = await s.lines.read_line()
                if line is None:
                    break
                if line is LINE_TOO_LONG:
                    s.send(tp.error_from(ResourceExhausted(
                        f"line too long: at most {self.config.max_line} bytes; the rest of it is discarded")))
                    continue
                assert isinstance(line, bytes)
                try:
                    cmd = tp.parse_line(line.decode("utf-8"))
                except UnicodeDecodeError:
                    s.send(tp.error_from(InvalidArgument("the line is not valid UTF-8")))
                    continue
                except ChatError as exc:
                    s.send(tp.error_from(exc))
                    continue
                if cmd is not None and not await self.commands.run(s, cmd):
                    break
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.discard(s)
            if s.authed:
                # A closed connection ends its session: main marks the user offline at once.
                await self.end_session(s)
            await s.close()
            if task:
                self._handlers.discard(task)

    async def start(self) -> int:
        self.upstream.start()
        # limit: a line may be max_line bytes; the reader discards longer ones itself.
        self._server = await asyncio.start_server(self.handle, self.config.host, self.config.port,
                                                  limit=self.config.max_line + 1, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for s in list(self.connections):
            s.send_event(tp.event("shutdown", message="the realm is shutting down"))
            await s.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        await self.upstream.close()


async def serve(config: RealmConfig) -> None:
    realm = Realm(config)
    port = await realm.start()
    print(f"realm_server {config.name} listening on {config.host}:{port}", flush=True)
    log.info("main server(s): %s", ", ".join(config.main_addrs))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await realm.stop()
    log.info("stopped")
