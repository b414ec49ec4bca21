"""The realm's connection to main: gRPC calls with a deadline, and ONE event stream (Link) for
all of the realm's sessions, re-opened with backoff whenever it breaks. A re-opened link resumes
every logged-in session by its token, so users keep working without logging in again. Several
main addresses are tried in order (failover). Every call carries the realm credential; what the
realm did with each delivery goes back to main in coalesced AckEvents calls, as
realm_server/delivery.py (Reports) says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from realmchat import realmauth
from realmchat.errors import Unavailable, error_for
from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import KEEPALIVE_OPTIONS, bearer, error_from_rpc

from .delivery import AckCall, Reports, Tag
from .metrics import upstream_seconds

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
ACK_DELAY_S = 0.02
# gRPC's own reconnect backoff grows to 120 s: after a long outage of main, a realm would stay
# cut off for up to two minutes after main is back. Capped at our link loop's pace instead.
CHANNEL_OPTIONS = [
    *KEEPALIVE_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Upstream:
    def __init__(self, addrs: list[str], realm: str, timeout: float,
                 on_event: Callable[[pb.Event], None],
                 on_linked: Callable[[list[str], list[int]], None],
                 tokens: Callable[[], list[str]], secret: str = "") -> None:
        self.addrs = addrs
        self.realm = realm
        self.timeout = timeout
        self.credential = realmauth.metadata(secret)
        self.on_event = on_event
        self.on_linked = on_linked
        self.tokens = tokens
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._index = 0
        self.stub = self._stub(addrs[0])
        self.link_id = ""
        self.linked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.relay = Relay(lambda: self.stub, self.credential)
        self.reports = Reports()
        self._ack_task: asyncio.Task[None] | None = None
        self._ack_now = asyncio.Event()
        self._ack_retry: asyncio.TimerHandle | None = None  # reports kept after UNAVAILABLE
        self._ack_backoff = BACKOFF_MIN
        self._tasks: set[asyncio.Task[Any]] = set()

    def report(self, written: list[Tag], dropped: list[Tag]) -> None:
        """What the realm did with deliveries: sent to main in coalesced AckEvents calls."""
        self.reports.add(written, dropped)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._send_acks())

    async def flush_reports(self) -> None:
        """Sends what is reported so far now and waits for it (at most the call timeout): a
        session's deliveries must reach main before its Logout does (or main would count
        written ones as dropped)."""
        self.reports.flush()
        if self.reports:
            self.report([], [])
        if self._ack_task is not None and not self._ack_task.done():
            self._ack_now.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._ack_task), self.timeout)

    async def _send_acks(self) -> None:
        # A short wait lets one call report many deliveries when events arrive steadily.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ack_now.wait(), ACK_DELAY_S)
        self._ack_now.clear()
        while self.reports:
            batch = self.reports.take()
            try:
                closed = False
                for c in self.reports.calls(batch, self.link_id):
                    r = await self.call("AckEvents", _ack_request(c))
                    if r.link_closed and self.reports.link_closed(c):
                        closed = True
                if closed:
                    self.reports.again(batch)  # this time what was written there is named
                    continue
            except Unavailable as exc:
                # Sent again later. This task ends here: flush_reports waits for one attempt,
                # not for main to return.
                self.reports.failed(batch, retry=True)
                if self._ack_retry is None:
                    if self._ack_backoff == BACKOFF_MIN:  # once per outage, not at every retry
                        log.info("reporting deliveries failed (%s); trying again until main answers", exc)
                    self._ack_retry = asyncio.get_running_loop().call_later(self._ack_backoff, self._retry_acks)
                    self._ack_backoff = min(self._ack_backoff * 2, BACKOFF_MAX)
                return
            except Exception as exc:
                self.reports.failed(batch, retry=False)
                log.warning("reporting deliveries failed: %s", exc)
            else:
                self._ack_backoff = BACKOFF_MIN

    def _retry_acks(self) -> None:
        self._ack_retry = None
        if self.reports:
            self.report([], [])

    async def wait_linked(self, timeout: float) -> bool:
        """True once the event stream to main is up (False after timeout)."""
        if self.linked.is_set():
            return True
        try:
            await asyncio.wait_for(self.linked.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def undo_login(self, response: pb.AuthResponse) -> None:
        """An Auth that main finished after the realm gave up on it: nobody holds that session."""
        if response.token:
            log.info("a login of %s finished after its deadline: undoing it", response.user)
            task = asyncio.create_task(self._logout_quietly(response.token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _logout_quietly(self, token: str) -> None:
        with contextlib.suppress(Exception):
            await self.call("Logout", pb.LogoutRequest(), token)

    def _stub(self, addr: str) -> pb_grpc.ChatStub:
        ch = self._channels.get(addr)
        if ch is None:
            ch = grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)
            self._channels[addr] = ch
        return pb_grpc.ChatStub(ch)

    @property
    def addr(self) -> str:
        return self.addrs[self._index]

    def start(self) -> None:
        self._task = asyncio.create_task(self._link_loop(), name="link")
        self.relay.start()

    async def close(self) -> None:
        # Reports still failing by now have no main to go to.
        if self._ack_retry is not None:
            self._ack_retry.cancel()
        if self._ack_task is not None:
            self._ack_task.cancel()
        await self.relay.close()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for ch in self._channels.values():
            await ch.close()

    # ---- calls -------------------------------------------------------------------------------

    async def call(self, method: str, request: Any, token: str = "", timeout: float | None = None,
                   on_late: Callable[[Any], None] | None = None) -> Any:
        """A unary call to main, over the relay stream when it is up; failures come back as
        typed ChatErrors. Should main answer after the deadline, on_late gets the answer."""
        t0 = time.perf_counter()
        try:
            if self.relay.connected:
                return await self.relay.call(method, request, token, timeout or self.timeout, on_late)
            # Main cancels the call at its deadline too (gRPC propagates it).
            fn = getattr(self.stub, method)
            return await fn(request, metadata=self._metadata(token), timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            upstream_seconds(method).observe(time.perf_counter() - t0)

    def _metadata(self, token: str) -> tuple[tuple[str, str], ...]:
        return (*bearer(token), *self.credential) if token else self.credential

    async def upload(self, token: str, header: pb.UploadHeader, chunks: AsyncIterator[bytes]) -> pb.FileInfo:
        """Streams header and chunks. The chunks are read here, in the caller's task (not by a
        gRPC task), so when main refuses midway the caller can consume the rest of the payload
        without two readers on one socket."""
        call = self.stub.UploadFile(metadata=self._metadata(token))
        try:
            await call.write(pb.UploadRequest(header=header))
            async for chunk in chunks:
                await call.write(pb.UploadRequest(chunk=chunk))
            await call.done_writing()
            return await call
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        except asyncio.InvalidStateError:
            # Main ended the call (refused the upload) while we were writing: its status says why.
            code, details = await call.code(), await call.details()
            raise error_for(code.name, details or "upload refused") from None
        except BaseException:
            call.cancel()
            raise

    async def download(self, token: str, file_id: int) -> tuple[pb.FileInfo, AsyncIterator[bytes]]:
        """The header, then an iterator over the bytes. Errors before the header are raised here;
        errors after it surface from the iterator (the caller must drop the connection then)."""
        call = self.stub.DownloadFile(pb.DownloadRequest(id=file_id), metadata=self._metadata(token))
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        if first is grpc.aio.EOF or first.WhichOneof("part") != "header":
            call.cancel()
            raise Unavailable("the main server sent no file header")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    part = await call.read()
                    if part is grpc.aio.EOF:
                        return
                    yield part.chunk
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc) from None
            finally:
                call.cancel()

        return first.header, chunks()

    # ---- the event stream --------------------------------------------------------------------

    async def _link_loop(self) -> None:
        backoff = BACKOFF_MIN
        down_since = 0.0  # when the link last broke (0: up, or never linked yet)
        while True:
            addr = self.addr
            stub = self._stub(addr)
            tokens = self.tokens()
            got_linked = False
            try:
                call = stub.Link(pb.LinkRequest(realm=self.realm, resume_tokens=tokens), metadata=self.credential)
                async for batch in call:
                    for ev in batch.events:
                        if ev.HasField("linked"):
                            self.stub = stub
                            self.link_id = ev.linked.link_id
                            self.reports.relinked()
                            got_linked = True
                            backoff = BACKOFF_MIN
                            outage = f" after {time.monotonic() - down_since:.1f} s" if down_since else ""
                            down_since = 0.0
                            log.info("linked to main %s%s (%d sessions resumed)", addr, outage,
                                     sum(1 for i in ev.linked.session_ids if i))
                            self.on_linked(tokens, list(ev.linked.session_ids))
                            self.linked.set()
                        else:
                            self.on_event(ev)
                log.warning("main %s ended the event stream", addr)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("main %s refused this realm: %s (check --secret-file / $%s)", addr,
                              exc.details(), realmauth.ENV_SECRET)
                elif got_linked or not down_since:
                    # Said once per outage, not at every retry.
                    log.warning("main %s is unreachable (%s); retrying every %g s at most", addr,
                                exc.code().name, BACKOFF_MAX)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event stream failed")
            if not down_since:
                down_since = time.monotonic()
            self.linked.clear()
            self.link_id = ""
            if len(self.addrs) > 1:
                # This main failed or did not answer: calls and the next link go to the next
                # one at once (we stay on whichever links).
                self._index = (self._index + 1) % len(self.addrs)
                self.stub = self._stub(self.addr)
                if got_linked:
                    continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


def _ack_request(c: AckCall) -> pb.AckEventsRequest:
    r = pb.AckEventsRequest(link_id=c.link_id, written_all=c.written_all)
    for tag in c.written:
        r.written.add(seq=tag.seq, session_id=tag.session_id)
    for tag in c.dropped:
        r.dropped.add(seq=tag.seq, session_id=tag.session_id)
    for user, ids in c.entries:
        r.entries.add(user=user, ids=ids)
    return r


_CHAT = pb.DESCRIPTOR.services_by_name["Chat"]


def _response_class(method: str) -> Any:
    return getattr(pb, _CHAT.methods_by_name[method].output_type.name)


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Relay:
    """Unary calls multiplexed on one bidirectional stream to main. Calls queued while a batch
    is in flight go out together in the next stream message; results come back in batches."""

    def __init__(self, stub: Callable[[], pb_grpc.ChatStub], credential: tuple[tuple[str, str], ...] = ()) -> None:
        self._stub = stub
        self._credential = credential
        # Calls that timed out and want their answer should it still come: id -> (method, hook).
        self._gave_up: dict[int, tuple[str, Callable[[Any], None]]] = {}
        self._pending: dict[int, tuple[asyncio.Future[Any], str]] = {}
        # One outbox per stream: a dead stream's request iterator must not take new calls.
        self._outbox: asyncio.Queue[pb.RelayCall | None] | None = None
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._outbox is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._fail_all()

    async def call(self, method: str, request: Any, token: str, timeout: float,
                   on_late: Callable[[Any], None] | None = None) -> Any:
        outbox = self._outbox
        if outbox is None:
            raise Unavailable("the main server is unavailable, try again shortly")
        self._next_id += 1
        call_id = self._next_id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[call_id] = (fut, method)
        outbox.put_nowait(pb.RelayCall(id=call_id, method=method, token=token, timeout_ms=int(timeout * 1000),
                                       payload=request.SerializeToString()))
        # A timer, not asyncio.wait_for: every command passes here, and wait_for costs a task.
        timer = loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except TimeoutError:
            # Main stops the call at the same deadline; should its answer still come, it is
            # handed to on_late (a login nobody will use is undone).
            if on_late is not None and len(self._gave_up) < 10_000:
                self._gave_up[call_id] = (method, on_late)
            raise Unavailable(f"the main server did not answer within {timeout:g} s; try again") from None
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)

    @staticmethod
    async def _requests(outbox: asyncio.Queue[pb.RelayCall | None]) -> AsyncIterator[pb.RelayRequests]:
        # None ends the iterator (the stream failed): gRPC's consuming task must not outlive it.
        while (first := await outbox.get()) is not None:
            batch = [first]
            while not outbox.empty() and len(batch) < 4096:
                item = outbox.get_nowait()
                if item is None:
                    yield pb.RelayRequests(calls=batch)
                    return
                batch.append(item)
            yield pb.RelayRequests(calls=batch)

    def _fail_all(self) -> None:
        self._outbox = None
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable("the main server is unavailable, try again shortly"))

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            outbox: asyncio.Queue[pb.RelayCall | None] = asyncio.Queue()
            call = self._stub().Relay(self._requests(outbox), metadata=self._credential)
            try:
                await call.wait_for_connection()
                self._outbox = outbox
                async for replies in call:
                    backoff = BACKOFF_MIN
                    for r in replies.results:
                        entry = self._pending.get(r.id)
                        if entry is None or entry[0].done():
                            late = self._gave_up.pop(r.id, None)
                            if late and not r.code:
                                late[1](_response_class(late[0]).FromString(r.payload))
                            continue  # timed out meanwhile
                        fut, method = entry
                        if r.code:
                            err = error_for(r.code, r.message)
                            err.reason = r.reason
                            fut.set_exception(err)
                        else:
                            fut.set_result(_response_class(method).FromString(r.payload))
            except grpc.aio.AioRpcError:
                pass
            except asyncio.CancelledError:
                call.cancel()
                raise
            finally:
                outbox.put_nowait(None)
                call.cancel()
                self._fail_all()
                self._gave_up.clear()  # a new stream: the old one's answers never come
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
