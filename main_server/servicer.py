"""The gRPC servicer: thin. One decorator resolves the caller's token and translates typed
errors to gRPC status codes; each method only converts between protobuf and the service."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from realmchat.errlog import ErrorLog
from realmchat.errors import ChatError, InvalidArgument, Unimplemented
from realmchat.names import check_name
from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import FILE_CHUNK, status_for, token_from

from .metrics import EVENT_LAG, rpc_errors, rpc_seconds
from .service import Caller, ChatService, file_pb, message_pb

log = logging.getLogger(__name__)
unexpected = ErrorLog(log)  # a traceback per kind, then one line each: a flood cannot flood the log


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, ChatError):
        await context.abort(status_for(exc.code), exc.message)
    unexpected("unexpected error", exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has details")


# Unary methods that Relay may call: name -> (undecorated method, needs auth, request class).
RELAYABLE: dict[str, tuple[Any, bool, Any]] = {}
_CHAT = pb.DESCRIPTOR.services_by_name["Chat"]


def count_error(method: str, exc: BaseException) -> None:
    rpc_errors(method, exc.code.value if isinstance(exc, ChatError) else "INTERNAL").inc()


def _message_class(method: str) -> Any:
    return getattr(pb, _CHAT.methods_by_name[method].input_type.name)


def rpc(*, auth: bool = True) -> Callable[[Any], Any]:
    """Wraps a servicer method (unary, client-streaming or server-streaming). With auth, the
    method gets the Caller for the request's bearer token, or the call fails UNAUTHENTICATED."""

    def deco(fn: Any) -> Any:
        async def caller_of(self: ChatServicer, context: grpc.aio.ServicerContext) -> Caller | None:
            if not auth:
                return None
            return await self.service.caller(token_from(context.invocation_metadata()), context.peer())

        if inspect.isasyncgenfunction(fn):
            @functools.wraps(fn)
            async def stream(self: ChatServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    c = await caller_of(self, context)
                    async for item in fn(self, request, context, c):
                        yield item
                except (ChatError, Exception) as exc:
                    await _abort(context, exc)

            return stream

        timer = rpc_seconds(fn.__name__)

        @functools.wraps(fn)
        async def unary(self: ChatServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(self, request, context, await caller_of(self, context))
            except (ChatError, Exception) as exc:
                count_error(fn.__name__, exc)
                await _abort(context, exc)
            finally:
                timer.observe(time.perf_counter() - t0)

        RELAYABLE[fn.__name__] = (fn, auth, _message_class(fn.__name__))
        return unary

    return deco


def _messages(msgs: list[Any], more: bool = False) -> pb.MessageList:
    return pb.MessageList(messages=[message_pb(m) for m in msgs], more=more)


class ChatServicer(pb_grpc.ChatServicer):
    def __init__(self, service: ChatService) -> None:
        self.service = service

    # ---- accounts ----------------------------------------------------------------------------

    @rpc(auth=False)
    async def Register(self, request: pb.RegisterRequest, context: Any, _: None) -> pb.RegisterResponse:
        user = await self.service.register(request.user, request.password, context.peer() if context else "")
        return pb.RegisterResponse(user=user.name)

    @rpc(auth=False)
    async def Auth(self, request: pb.AuthRequest, context: Any, _: None) -> pb.AuthResponse:
        token, session, attached = await self.service.auth(request.user, request.password, request.link_id,
                                                           context.peer() if context else "")
        return pb.AuthResponse(user=session.user_name, token=token, session_id=session.id,
                               realm=session.realm, attached=attached)

    @rpc()
    async def Logout(self, request: pb.LogoutRequest, context: Any, caller: Caller) -> pb.LogoutResponse:
        await self.service.logout(caller)
        return pb.LogoutResponse()

    @rpc()
    async def Who(self, request: pb.WhoRequest, context: Any, caller: Caller) -> pb.WhoResponse:
        return pb.WhoResponse(online=[pb.Presence(user=u, realm=r) for u, r in self.service.who()])

    # ---- messages ----------------------------------------------------------------------------

    @rpc()
    async def SendPrivate(self, request: pb.SendPrivateRequest, context: Any, caller: Caller
                          ) -> pb.SendResponse:
        m = await self.service.send_private(caller, request.to, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @rpc()
    async def Inbox(self, request: pb.InboxRequest, context: Any, caller: Caller) -> pb.MessageList:
        msgs, more = await self.service.inbox(caller)
        return _messages(msgs, more)

    @rpc()
    async def SendGroup(self, request: pb.SendGroupRequest, context: Any, caller: Caller) -> pb.SendResponse:
        m = await self.service.send_group(caller, request.group, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @rpc()
    async def InboxGroup(self, request: pb.GroupRequest, context: Any, caller: Caller) -> pb.MessageList:
        msgs, more = await self.service.inbox_group(caller, request.group)
        return _messages(msgs, more)

    @rpc()
    async def History(self, request: pb.HistoryRequest, context: Any, caller: Caller) -> pb.MessageList:
        return _messages(await self.service.history(caller, request.peer, request.limit))

    # ---- groups ------------------------------------------------------------------------------

    @rpc()
    async def CreateGroup(self, request: pb.GroupRequest, context: Any, caller: Caller) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.service.create_group(caller, request.group)).name)

    @rpc()
    async def JoinGroup(self, request: pb.GroupRequest, context: Any, caller: Caller) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.service.join_group(caller, request.group)).name)

    @rpc()
    async def LeaveGroup(self, request: pb.GroupRequest, context: Any, caller: Caller) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.service.leave_group(caller, request.group)).name)

    @rpc()
    async def ListGroups(self, request: pb.ListGroupsRequest, context: Any, caller: Caller
                         ) -> pb.ListGroupsResponse:
        groups = await self.service.list_groups(caller)
        return pb.ListGroupsResponse(groups=[pb.GroupInfo(group=g.name, role=g.role, members=g.members)
                                             for g in groups])

    # ---- files -------------------------------------------------------------------------------

    @rpc()
    async def UploadFile(self, request_iterator: AsyncIterator[pb.UploadRequest], context: Any,
                         caller: Caller) -> pb.FileInfo:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadRequest must carry the header")

        async def chunks() -> AsyncIterator[bytes]:
            async for part in request_iterator:
                if part.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only the first UploadRequest may carry a header")
                yield part.chunk

        return file_pb(await self.service.upload(caller, first.header, chunks()))

    @rpc()
    async def CheckUpload(self, request: pb.UploadHeader, context: Any, caller: Caller) -> pb.CheckUploadResponse:
        _, name = await self.service.check_upload(request, caller)
        return pb.CheckUploadResponse(name=name)

    @rpc()
    async def ListFiles(self, request: pb.ListFilesRequest, context: Any, caller: Caller) -> pb.FileList:
        return pb.FileList(files=[file_pb(f) for f in await self.service.pending_files(caller)])

    @rpc()
    async def DownloadFile(self, request: pb.DownloadRequest, context: Any, caller: Caller
                           ) -> AsyncIterator[pb.DownloadResponse]:
        record, path = await self.service.open_download(caller, request.id)
        yield pb.DownloadResponse(header=file_pb(record))
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, FILE_CHUNK):
                yield pb.DownloadResponse(chunk=chunk)
        # Reached only after the last chunk was taken by the transport.
        await self.service.mark_downloaded(record.id)

    # ---- push --------------------------------------------------------------------------------

    async def _drain(self, channel: Any, batch_max: int, acked: bool) -> AsyncIterator[list[pb.Event]]:
        """Yields the channel's events in batches of what is waiting (at most batch_max): under
        load one stream message carries many events. With acked, a batch counts as delivered
        when the realm acknowledges its seq (AckEvents), else once the transport took it."""
        unconfirmed: list[Any] = []  # yielded, but the transport has not asked for more yet
        try:
            while True:
                item = await channel.queue.get()
                if item is None:
                    return
                items = [item]
                while len(items) < batch_max and not channel.queue.empty():
                    nxt = channel.queue.get_nowait()
                    if nxt is None:
                        channel.queue.put_nowait(None)
                        break
                    items.append(nxt)
                now = time.monotonic()
                for i in items:
                    EVENT_LAG.observe(now - i.queued)
                if acked:
                    channel.seq += 1
                    channel.unacked[channel.seq] = items
                    channel.unacked_events += len(items)
                    yield [i.event for i in items]
                    continue
                unconfirmed = items
                yield [i.event for i in items]
                unconfirmed = []
                for i in items:
                    self.service.sent(i)
        finally:
            for i in unconfirmed:
                # Perhaps sent, perhaps not: it stays undelivered (a resume re-sends it and the
                # realm drops what a session has already seen).
                self.service.hub.settle(i)
            self.service.close_channel(channel)

    @rpc(auth=False)
    async def Link(self, request: pb.LinkRequest, context: Any, _: None) -> AsyncIterator[pb.EventBatch]:
        realm = check_name(request.realm, "realm")
        channel = self.service.hub.open_channel(realm)
        ids = await self.service.resume(list(request.resume_tokens), channel)
        yield pb.EventBatch(events=[pb.Event(linked=pb.Linked(link_id=channel.id, session_ids=ids))])
        async for events in self._drain(channel, 1024, acked=True):
            yield pb.EventBatch(events=events, seq=channel.seq)

    @rpc(auth=False)
    async def AckEvents(self, request: pb.AckEventsRequest, context: Any, _: None) -> pb.AckEventsResponse:
        # The link id is the capability: only the realm holding the stream knows it.
        self.service.acked(request.link_id, request.seq)
        return pb.AckEventsResponse()

    @rpc()
    async def Attach(self, request: pb.AttachRequest, context: Any, caller: Caller) -> pb.AttachResponse:
        self.service.attach(caller, request.link_id)
        return pb.AttachResponse()

    @rpc()
    async def Subscribe(self, request: pb.SubscribeRequest, context: Any, caller: Caller
                        ) -> AsyncIterator[pb.Event]:
        channel = self.service.hub.open_channel("grpc")
        self.service.hub.attach(channel, caller.session.id, caller.session.user_key, caller.session.user_name)
        async for events in self._drain(channel, 1, acked=False):
            yield events[0]

    async def Relay(self, request_iterator: AsyncIterator[pb.RelayRequests], context: Any
                    ) -> AsyncIterator[pb.RelayReplies]:
        """Runs the calls of each batch concurrently (so storage can commit them together) and
        streams results back in batches, as they complete."""
        results: asyncio.Queue[pb.RelayResult | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()

        async def run_call(call: pb.RelayCall) -> None:
            t0 = time.perf_counter()
            try:
                entry = RELAYABLE.get(call.method)
                if entry is None:
                    raise Unimplemented(f"no unary method {call.method[:60]!r}")
                fn, auth, request_class = entry
                caller = await self.service.caller(call.token) if auth else None
                response = await fn(self, request_class.FromString(call.payload), None, caller)
                result = pb.RelayResult(id=call.id, payload=response.SerializeToString())
                rpc_seconds(call.method).observe(time.perf_counter() - t0)
            except ChatError as exc:
                result = pb.RelayResult(id=call.id, code=exc.code.value, message=exc.message)
                count_error(call.method[:40], exc)
            except Exception as exc:
                unexpected(f"relayed {call.method[:40]} failed", exc)
                result = pb.RelayResult(id=call.id, code="INTERNAL", message="internal error; see the server log")
                count_error(call.method[:40], exc)
            results.put_nowait(result)

        async def read_calls() -> None:
            try:
                async for batch in request_iterator:
                    for call in batch.calls:
                        task = asyncio.create_task(run_call(call))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if running:
                    await asyncio.wait(list(running))
            finally:
                results.put_nowait(None)

        reader = asyncio.create_task(read_calls())
        try:
            while (first := await results.get()) is not None:
                batch = [first]
                while not results.empty() and len(batch) < 4096:
                    item = results.get_nowait()
                    if item is None:
                        results.put_nowait(None)
                        break
                    batch.append(item)
                yield pb.RelayReplies(results=batch)
        finally:
            reader.cancel()

    async def wait_tasks(self) -> None:
        await self.service.flush()
