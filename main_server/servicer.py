"""The gRPC servicer: thin. Every call enters through one function, `invoke(method, request,
identity)`, whether it came as a unary RPC or relayed by a realm on its Relay stream: the same
access check (public, user token, realm credential), the same metrics (a closed set of method
labels) and the same error mapping. Handlers only convert between protobuf and the service's
plain records."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from realmchat import realmauth
from realmchat.errlog import ErrorLog
from realmchat.errors import (
    ChatError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from realmchat.names import check_name, name_key
from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import FILE_CHUNK, MAX_MESSAGE_BYTES, status_for, token_from

from .metrics import EVENT_LAG, rpc_errors, rpc_seconds
from .service import Caller, ChatService, Page, UploadSpec, file_pb, message_pb
from .storage.base import RoomChange

# A relayed call runs as the loop's current task without being an asyncio.Task (see _Running):
# the two hooks asyncio's own eager tasks use (no public API sets the current task).
_enter_task, _leave_task = asyncio.tasks._enter_task, asyncio.tasks._leave_task

log = logging.getLogger(__name__)
unexpected = ErrorLog(log)  # a traceback per kind, then one line each: a flood cannot flood the log

# One Link or Relay stream message stays far under the transport's cap (MAX_MESSAGE_BYTES).
BATCH_MAX_BYTES = 1 << 20
LINK_BATCH_MAX = 1024
# A single relayed reply larger than this fails alone (RESOURCE_EXHAUSTED), never the stream.
REPLY_MAX_BYTES = MAX_MESSAGE_BYTES // 2


class Access(enum.Enum):
    PUBLIC = "public"  # Register, Auth
    USER = "user"  # a user's bearer token
    REALM = "realm"  # the realm credential
    REALM_USER = "realm_user"  # both: a realm acting for one of its sessions


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the bearer token (if any), whether the realm credential came with it, and
    the peer address of a direct caller ('' for a realm: it limits its own clients per IP)."""

    token: str = ""
    realm: bool = False
    peer: str = ""


Handler = Callable[["ChatServicer", Any, Caller | None, Identity], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    handler: Handler
    access: Access
    request_class: Any


METHODS: dict[str, Method] = {}  # every unary method, by name: the closed set of labels
_CHAT = pb.DESCRIPTOR.services_by_name["Chat"]


def unary(access: Access = Access.USER) -> Callable[[Handler], Any]:
    """Registers a handler `(self, request, caller, identity) -> response` as a unary method:
    the gRPC entry point it returns goes through invoke like a relayed call does."""

    def deco(fn: Handler) -> Any:
        name = fn.__name__
        METHODS[name] = Method(fn, access, getattr(pb, _CHAT.methods_by_name[name].input_type.name))

        @functools.wraps(fn)
        async def entry(self: ChatServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await self.invoke(name, request, self.identify(context))
            except ChatError as exc:
                await context.abort(status_for(exc.code), exc.message)

        return entry

    return deco


def as_chat_error(exc: BaseException, what: str) -> ChatError:
    """Typed errors pass; anything else is a bug: logged once, INTERNAL to the caller."""
    if isinstance(exc, ChatError):
        return exc
    unexpected(f"{what} failed", exc)
    return Internal("internal error; the server log has details")


def _member(change: RoomChange) -> pb.MemberResponse:
    return pb.MemberResponse(group=change.group.name, user=change.user, role=change.role)


def _messages(page: Page) -> pb.MessageList:
    return pb.MessageList(messages=[message_pb(m) for m in page.messages], more=page.more,
                          delivery=page.delivery, delivery_link=page.delivery_link)


class ChatServicer(pb_grpc.ChatServicer):
    def __init__(self, service: ChatService, realm_secret: str) -> None:
        self.service = service
        self.realm_secret = realm_secret

    # ---- the one entry point -----------------------------------------------------------------

    def identify(self, context: grpc.aio.ServicerContext) -> Identity:
        md = context.invocation_metadata()
        realm = realmauth.matches(realmauth.presented(md), self.realm_secret)
        return Identity(token_from(md), realm, "" if realm else context.peer())

    async def authorize(self, access: Access, identity: Identity) -> Caller | None:
        if access in (Access.REALM, Access.REALM_USER) and not identity.realm:
            if identity.token:
                raise PermissionDenied("this call is for realm servers only")
            raise Unauthenticated("this call needs the realm credential (x-realm-credential metadata)")
        if access in (Access.USER, Access.REALM_USER):
            return await self.service.caller(identity.token, identity.peer, via_realm=identity.realm)
        return None

    async def invoke(self, method: str, request: Any, identity: Identity) -> Any:
        """Runs one unary method for a caller; raises ChatError (unexpected failures become
        Internal, logged once)."""
        spec = METHODS.get(method)
        label = method if spec is not None else "unknown"
        t0 = time.perf_counter()
        try:
            if spec is None:
                raise Unimplemented(f"no unary method {method[:60]!r}")
            return await spec.handler(self, request, await self.authorize(spec.access, identity), identity)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            err = as_chat_error(exc, method if spec is not None else "unknown method")
            rpc_errors(label, err.code.value).inc()
            raise err from None
        finally:
            rpc_seconds(label).observe(time.perf_counter() - t0)

    async def _streaming(self, context: grpc.aio.ServicerContext, access: Access) -> Caller | None:
        try:
            return await self.authorize(access, self.identify(context))
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)
            raise

    # ---- accounts ----------------------------------------------------------------------------

    @unary(Access.PUBLIC)
    async def Register(self, request: pb.RegisterRequest, _: None, identity: Identity) -> pb.RegisterResponse:
        user = await self.service.register(request.user, request.password, identity.peer)
        return pb.RegisterResponse(user=user.name)

    @unary(Access.PUBLIC)
    async def Auth(self, request: pb.AuthRequest, _: None, identity: Identity) -> pb.AuthResponse:
        if request.link_id and not identity.realm:
            raise PermissionDenied("link_id is for realm servers only: leave it empty")
        login = await self.service.auth(request.user, request.password, request.link_id, identity.peer)
        session = login.session
        reply = pb.AuthResponse(user=session.user_name, token=login.token, session_id=session.id,
                                realm=session.realm, attached=login.attached)
        w = login.waiting
        if w.total:
            reply.waiting.CopyFrom(pb.Waiting(
                total=w.total, unlisted=w.unlisted,
                conversations=[pb.WaitingConversation(peer=c.peer, kind=c.kind, count=c.count)
                               for c in w.conversations]))
        return reply

    @unary()
    async def Logout(self, request: pb.LogoutRequest, caller: Caller, identity: Identity) -> pb.LogoutResponse:
        await self.service.logout(caller)
        return pb.LogoutResponse()

    @unary()
    async def Who(self, request: pb.WhoRequest, caller: Caller, identity: Identity) -> pb.WhoResponse:
        return pb.WhoResponse(online=[pb.Presence(user=u, realm=r, status=st, message=msg)
                                      for u, r, st, msg in self.service.who_status()])

    # ---- messages ----------------------------------------------------------------------------

    @unary()
    async def SendPrivate(self, request: pb.SendPrivateRequest, caller: Caller, identity: Identity
                          ) -> pb.SendResponse:
        m = await self.service.send_private(caller, request.to, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def Inbox(self, request: pb.InboxRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return _messages(await self.service.inbox(caller))

    @unary()
    async def SendGroup(self, request: pb.SendGroupRequest, caller: Caller, identity: Identity) -> pb.SendResponse:
        m = await self.service.send_group(caller, request.group, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def InboxGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return _messages(await self.service.inbox_group(caller, request.group))

    @unary()
    async def History(self, request: pb.HistoryRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return _messages(await self.service.history(caller, request.peer, request.limit, request.before,
                                                    request.after))

    # ---- the life of a message -----------------------------------------------------------------

    @unary()
    async def Edit(self, request: pb.EditRequest, caller: Caller, identity: Identity) -> pb.EditResponse:
        change = await self.service.edit(caller, request.id, request.text)
        return pb.EditResponse(id=change.message.id, edited=change.message.edited)

    @unary()
    async def Delete(self, request: pb.MessageRef, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.service.delete(caller, request.id)).message.id)

    @unary()
    async def Reply(self, request: pb.ReplyRequest, caller: Caller, identity: Identity) -> pb.SendResponse:
        m = await self.service.reply(caller, request.id, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def React(self, request: pb.ReactRequest, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.service.react(caller, request.id, request.emoji, True)).message.id)

    @unary()
    async def Unreact(self, request: pb.ReactRequest, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.service.react(caller, request.id, request.emoji, False)).message.id)

    @unary()
    async def Search(self, request: pb.SearchRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        found = await self.service.search(caller, request.query, request.group, request.user)
        return pb.MessageList(messages=[message_pb(m) for m in found])

    # ---- conversation state ------------------------------------------------------------------

    @unary()
    async def Conversations(self, request: pb.ConversationsRequest, caller: Caller, identity: Identity
                            ) -> pb.ConversationsResponse:
        out = []
        for c in await self.service.conversations(caller):
            conv = pb.Conversation(peer=c.peer, kind=c.kind, unread=c.unread, mentions=c.mentions, read=c.read,
                                   seen=c.seen)
            if c.last is not None:
                conv.last.CopyFrom(message_pb(c.last))
            out.append(conv)
        return pb.ConversationsResponse(conversations=out)

    @unary()
    async def MarkRead(self, request: pb.MarkReadRequest, caller: Caller, identity: Identity) -> pb.MarkReadResponse:
        mark = await self.service.mark_read(caller, request.peer, request.id)
        return pb.MarkReadResponse(peer=mark.peer, read=mark.read)

    @unary()
    async def SetStatus(self, request: pb.SetStatusRequest, caller: Caller, identity: Identity
                        ) -> pb.SetStatusResponse:
        status, message = await self.service.set_status(caller, request.away, request.message)
        return pb.SetStatusResponse(status=status, message=message)

    @unary()
    async def Typing(self, request: pb.TypingRequest, caller: Caller, identity: Identity) -> pb.TypingResponse:
        return pb.TypingResponse(forwarded=await self.service.typing(caller, request.peer))

    @unary()
    async def SetReceipts(self, request: pb.SetReceiptsRequest, caller: Caller, identity: Identity
                          ) -> pb.SetReceiptsResponse:
        enabled = request.enabled if request.HasField("enabled") else None
        return pb.SetReceiptsResponse(enabled=await self.service.set_receipts(caller, enabled))

    # ---- groups ------------------------------------------------------------------------------

    @unary()
    async def CreateGroup(self, request: pb.CreateGroupRequest, caller: Caller, identity: Identity
                          ) -> pb.GroupResponse:
        g = await self.service.create_group(caller, request.group, request.mode)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def JoinGroup(self, request: pb.JoinGroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.service.join_group(caller, request.group, request.key)).name)

    @unary()
    async def LeaveGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.service.leave_group(caller, request.group)).name)

    @unary()
    async def Invite(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return _member(await self.service.invite(caller, request.group, request.user))

    @unary()
    async def Kick(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return _member(await self.service.kick(caller, request.group, request.user, request.reason))

    @unary()
    async def Ban(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return _member(await self.service.ban(caller, request.group, request.user, request.reason))

    @unary()
    async def Unban(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return _member(await self.service.unban(caller, request.group, request.user))

    @unary()
    async def SetRole(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return _member(await self.service.set_role(caller, request.group, request.user, request.role))

    @unary()
    async def Members(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.MembersResponse:
        r = await self.service.members(caller, request.group)
        return pb.MembersResponse(
            members=[pb.Member(user=m.user, role=m.role, online=m.online, realm=m.realm) for m in r.members],
            banned=[pb.Ban(user=b.user, by=b.by, reason=b.reason, at=b.ts) for b in r.banned or ()],
            moderator=r.banned is not None)

    @unary()
    async def Topic(self, request: pb.TopicRequest, caller: Caller, identity: Identity) -> pb.TopicResponse:
        g = await self.service.topic(caller, request.group, request.topic if request.set else None)
        return pb.TopicResponse(group=g.name, topic=g.topic)

    @unary()
    async def GroupKey(self, request: pb.GroupKeyRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        g = await self.service.set_group_key(caller, request.group, request.key)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def DeleteGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        g = await self.service.delete_group(caller, request.group)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def BrowseGroups(self, request: pb.BrowseGroupsRequest, caller: Caller, identity: Identity
                           ) -> pb.BrowseGroupsResponse:
        groups = await self.service.browse_groups(caller, request.pattern)
        return pb.BrowseGroupsResponse(groups=[pb.RoomInfo(group=g.name, mode=g.mode, topic=g.topic,
                                                           members=g.members) for g in groups])

    @unary()
    async def ListGroups(self, request: pb.ListGroupsRequest, caller: Caller, identity: Identity
                         ) -> pb.ListGroupsResponse:
        groups = await self.service.list_groups(caller)
        return pb.ListGroupsResponse(groups=[pb.GroupInfo(group=g.name, role=g.role, members=g.members)
                                             for g in groups])

    # ---- files -------------------------------------------------------------------------------

    @staticmethod
    def _upload_spec(h: pb.UploadHeader) -> UploadSpec:
        return UploadSpec(to=h.to, name=h.name, size=h.size, sha256=h.sha256)

    async def UploadFile(self, request_iterator: AsyncIterator[pb.UploadRequest], context: Any) -> pb.FileInfo:
        caller = await self._streaming(context, Access.USER)
        assert caller is not None
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("part") != "header":
                raise InvalidArgument("the first UploadRequest must carry the header")

            async def chunks() -> AsyncIterator[bytes]:
                async for part in request_iterator:
                    if part.WhichOneof("part") != "chunk":
                        raise InvalidArgument("only the first UploadRequest may carry a header")
                    yield part.chunk

            return file_pb(await self.service.upload(caller, self._upload_spec(first.header), chunks()))
        except Exception as exc:
            err = as_chat_error(exc, "UploadFile")
            await context.abort(status_for(err.code), err.message)
            raise

    @unary()
    async def CheckUpload(self, request: pb.UploadHeader, caller: Caller, identity: Identity
                          ) -> pb.CheckUploadResponse:
        _, name = await self.service.check_upload(self._upload_spec(request), caller)
        return pb.CheckUploadResponse(name=name)

    @unary()
    async def ListFiles(self, request: pb.ListFilesRequest, caller: Caller, identity: Identity) -> pb.FileList:
        return pb.FileList(files=[file_pb(f) for f in await self.service.pending_files(caller)])

    async def DownloadFile(self, request: pb.DownloadRequest, context: Any) -> AsyncIterator[pb.DownloadResponse]:
        caller = await self._streaming(context, Access.USER)
        assert caller is not None
        try:
            record, path = await self.service.open_download(caller, request.id)
            yield pb.DownloadResponse(header=file_pb(record))
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, FILE_CHUNK):
                    yield pb.DownloadResponse(chunk=chunk)
            # Reached only after the last chunk was taken by the transport.
            await self.service.mark_downloaded(caller, record.id)
        except Exception as exc:
            err = as_chat_error(exc, "DownloadFile")
            await context.abort(status_for(err.code), err.message)

    # ---- push --------------------------------------------------------------------------------

    async def _batches(self, channel: Any, max_events: int) -> AsyncIterator[list[pb.Event]]:
        """The channel's events in batches of what is waiting, bounded in count and bytes: under
        load one stream message carries many."""
        try:
            while True:
                item = await channel.queue.get()
                if item is None:
                    return
                items, size = [item], item.size
                while len(items) < max_events and not channel.queue.empty():
                    nxt = channel.queue._queue[0]  # type: ignore[attr-defined]
                    if nxt is None or size + nxt.size > BATCH_MAX_BYTES:
                        break
                    items.append(channel.queue.get_nowait())
                    size += nxt.size
                now = time.monotonic()
                for i in items:
                    EVENT_LAG.observe(now - i.queued)
                yield [i.event for i in items]
        finally:
            # What was not written stays undelivered (the ledger returns it with the link).
            self.service.close_channel(channel)

    async def Link(self, request: pb.LinkRequest, context: Any) -> AsyncIterator[pb.EventBatch]:
        await self._streaming(context, Access.REALM)
        try:
            realm = check_name(request.realm, "realm")
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)
        channel = self.service.hub.open_channel(realm)
        ids = await self.service.resume(list(request.resume_tokens), channel)
        yield pb.EventBatch(events=[pb.Event(linked=pb.Linked(link_id=channel.id, session_ids=ids))])
        async for events in self._batches(channel, LINK_BATCH_MAX):
            yield pb.EventBatch(events=events)

    @unary(Access.REALM)
    async def AckEvents(self, request: pb.AckEventsRequest, _: None, identity: Identity) -> pb.AckEventsResponse:
        known = self.service.acked(request.link_id, [(d.seq, d.session_id) for d in request.written],
                                   [(d.seq, d.session_id) for d in request.dropped], list(request.written_all),
                                   [(name_key(e.user), i) for e in request.entries for i in e.ids])
        return pb.AckEventsResponse(link_closed=not known)

    @unary(Access.REALM_USER)
    async def Attach(self, request: pb.AttachRequest, caller: Caller, identity: Identity) -> pb.AttachResponse:
        self.service.attach(caller, request.link_id)
        return pb.AttachResponse()

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> AsyncIterator[pb.Event]:
        caller = await self._streaming(context, Access.USER)
        assert caller is not None
        hub = self.service.hub
        channel = hub.open_channel("grpc")
        hub.attach(channel, caller.session.id, caller.session.user_key, caller.session.user_name)
        async for events in self._batches(channel, 1):
            ev = events[0]
            yield ev
            # The transport took it and asked for the next one: as far as main can tell, written.
            hub.written(channel.id, [(ev.seq, sid) for sid in ev.session_ids])

    async def Relay(self, request_iterator: AsyncIterator[pb.RelayRequests], context: Any
                    ) -> AsyncIterator[pb.RelayReplies]:
        """Runs the calls of each batch concurrently (so storage can commit them together) and
        streams results back in batches, as they complete. A call that fails fails alone."""
        await self._streaming(context, Access.REALM)
        stream = _RelayStream(self)

        async def read_calls() -> None:
            try:
                async for batch in request_iterator:
                    for call in batch.calls:
                        stream.start(call)
            finally:
                stream.end_of_calls()

        reader = asyncio.create_task(read_calls())
        try:
            while (replies := await stream.next_replies()) is not None:
                yield replies
        finally:
            reader.cancel()
            stream.close()

    async def wait_tasks(self) -> None:
        await self.service.flush()


# Relay deadlines are checked on a coarse wheel: a call is stopped within this much after its
# deadline, with no timer of its own.
DEADLINE_TICK_S = 0.025
REPLIES_MAX = 4096  # results per RelayReplies
_RESULT_OVERHEAD = 32  # bytes a result adds around its payload, at most (id, tags, lengths, code)


class _RelayStream:
    """One Relay stream: its running calls, their deadlines, the replies not yet sent.

    A call is a coroutine of `invoke`, driven here without an asyncio task: its first step runs
    as soon as the call is read, so a call that needs no I/O answers at once; after that every
    future it awaits resumes it through a done callback (what a Task does, minus the task's
    creation, registration and scheduling, which showed at one call per message). A deadline
    sweep on a timer wheel cancels what ran past its deadline: UNAVAILABLE, like before."""

    def __init__(self, servicer: ChatServicer) -> None:
        self.servicer = servicer
        self.loop = asyncio.get_running_loop()
        self.running: set[_Running] = set()
        self.wheel: dict[int, set[_Running]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.ready: list[pb.RelayReplies] = []  # replies filled, oldest first
        self.ready_bytes = 0  # of the last one
        self.waiter: asyncio.Future[None] | None = None
        self.reading = True
        self.closed = False

    # ---- calls -------------------------------------------------------------------------------

    def start(self, call: pb.RelayCall) -> None:
        spec = METHODS.get(call.method)
        try:
            request = spec.request_class.FromString(call.payload) if spec is not None else None
        except DecodeError:
            self.failed(call.id, call.method, InvalidArgument(f"the payload of {call.method} does not parse"))
            return
        run = _Running(self, call.id, call.method,
                       self.servicer.invoke(call.method, request, Identity(call.token, realm=True)))
        self.running.add(run)
        if call.timeout_ms > 0:
            # Past the realm's deadline nobody waits for the answer: stop (a login the realm
            # gave up on must leave no session behind). Slot: the first tick at or past it.
            slot = -int(-(time.monotonic() + call.timeout_ms / 1000) // DEADLINE_TICK_S)
            due = self.wheel.get(slot)
            if due is None:
                due = self.wheel[slot] = set()
                if self.sweeper is None:
                    self.sweeper = self.loop.call_later(DEADLINE_TICK_S, self._sweep)
            due.add(run)
            run.slot = due
        run.step()

    def _sweep(self) -> None:
        self.sweeper = None
        now = time.monotonic() / DEADLINE_TICK_S
        wheel = self.wheel
        for slot in [s for s in wheel if s <= now]:  # a few hundred slots at most: one per tick
            for run in wheel.pop(slot):
                run.slot = None
                run.expire()
        if wheel and not self.closed:
            self.sweeper = self.loop.call_later(DEADLINE_TICK_S, self._sweep)

    def finished(self, run: _Running, response: Any, exc: BaseException | None) -> None:
        self.running.discard(run)
        if run.slot is not None:
            run.slot.discard(run)
            run.slot = None
        if self.closed:
            return
        if exc is None:
            try:
                payload = response.SerializeToString()
            except Exception as bad:  # a handler's bug: the call fails, never the stream
                self.failed(run.id, run.method, bad)
            else:
                if len(payload) <= REPLY_MAX_BYTES:
                    self._add(run.id, payload, len(payload) + _RESULT_OVERHEAD)
                else:
                    self.failed(run.id, run.method,
                                ResourceExhausted("the reply is too large to send: ask for less"))
        elif isinstance(exc, asyncio.CancelledError) and run.expired:
            self.failed(run.id, run.method, Unavailable("the call ran past its deadline"))
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        else:
            self.failed(run.id, run.method, exc)
        if not self.reading and not self.running:
            self._wake()

    def failed(self, call_id: int, method: str, exc: BaseException) -> None:
        err = exc if isinstance(exc, ChatError) else as_chat_error(exc, f"relayed {method[:40]!r}")
        result = pb.RelayResult(id=call_id, code=err.code.value, message=err.message)
        self._add(call_id, result, result.ByteSize() + 8)

    # ---- replies -----------------------------------------------------------------------------

    def _add(self, call_id: int, payload: bytes | pb.RelayResult, size: int) -> None:
        """Appends a result to the newest reply batch (a new one past the byte or count bound):
        filled in place, not built and copied."""
        if not self.ready or self.ready_bytes + size > BATCH_MAX_BYTES or len(self.ready[-1].results) >= REPLIES_MAX:
            self.ready.append(pb.RelayReplies())
            self.ready_bytes = 0
        if isinstance(payload, bytes):
            self.ready[-1].results.add(id=call_id, payload=payload)
        else:
            self.ready[-1].results.append(payload)
        self.ready_bytes += size
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next_replies(self) -> pb.RelayReplies | None:
        """The next batch of results (waits for one); None once the calls ended and all answered."""
        while not self.ready:
            if not self.reading and not self.running:
                return None
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        replies = self.ready.pop(0)
        if not self.ready:
            self.ready_bytes = 0
        return replies

    def end_of_calls(self) -> None:
        self.reading = False
        self._wake()

    def close(self) -> None:
        """The stream ended: its running calls are cancelled (nobody reads their answers)."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for run in list(self.running):
            run.cancel()


class _Running:
    """One relayed call's coroutine, stepped by hand (see _RelayStream). While a step runs it is
    the loop's current task, with Task's cancel/uncancel/cancelling, so that code under it that
    asks for its task (asyncio.timeout, asyncpg's timeouts) works as it does under a Task."""

    __slots__ = ("__weakref__", "cancels", "coro", "expired", "finished", "id", "method", "must_cancel", "slot",
                 "stream", "waiting")

    def __init__(self, stream: _RelayStream, call_id: int, method: str, coro: Any) -> None:
        self.stream = stream
        self.id = call_id
        self.method = method
        self.coro = coro
        self.waiting: asyncio.Future[Any] | None = None
        self.expired = False
        self.cancels = 0  # cancellation requests not taken back (Task.cancelling())
        self.must_cancel = False  # CancelledError is thrown in at the next step
        self.slot: set[_Running] | None = None
        self.finished = False

    def step(self, _fut: Any = None) -> None:
        self.waiting = None
        loop = self.stream.loop
        outer = asyncio.current_task(loop)  # the Relay reader, for a call's first step
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, self)
        try:
            if self.must_cancel:
                self.must_cancel = False
                awaited = self.coro.throw(asyncio.CancelledError())
            else:
                awaited = self.coro.send(None)
        except StopIteration as stop:
            self._done(stop.value, None)
            return
        except BaseException as exc:  # every outcome is the call's answer
            self._done(None, exc)
            return
        finally:
            _leave_task(loop, self)
            if outer is not None:
                _enter_task(loop, outer)
        if getattr(awaited, "_asyncio_future_blocking", None):
            # An asyncio future (what `await fut` hands up): resume when it is done.
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(self.step)
            self.waiting = awaited
            if self.must_cancel and awaited.cancel():
                self.must_cancel = False
        elif awaited is None:
            # A bare yield (asyncio.sleep(0)): run again on the next loop iteration.
            loop.call_soon(self.step)
        else:
            self.coro.close()
            self._done(None, RuntimeError(f"relayed call awaited {awaited!r}, not an asyncio future"))

    def _done(self, value: Any, exc: BaseException | None) -> None:
        self.finished = True
        self.stream.finished(self, value, exc)

    # ---- what asyncio.timeout and the deadline sweep use of a Task ---------------------------

    def done(self) -> bool:
        return self.finished

    def cancel(self, msg: Any = None) -> bool:
        if self.finished:
            return False
        self.cancels += 1
        if self.waiting is not None and self.waiting.cancel():
            return True
        self.must_cancel = True
        return True

    def uncancel(self) -> int:
        if self.cancels > 0:
            self.cancels -= 1
        return self.cancels

    def cancelling(self) -> int:
        return self.cancels

    def expire(self) -> None:
        if not self.expired and not self.finished:
            self.expired = True
            self.cancel()
