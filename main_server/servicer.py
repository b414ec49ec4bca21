"""The gRPC servicer: thin. Every call passes one guard (`guarded`): the same access check
(public, user token, realm credential), the same metrics (a closed set of method labels) and
the same error mapping, whether it is a unary RPC, a call a realm relays on its Relay stream
(both through `invoke(method, request, identity)`) or a streaming RPC. Handlers only convert
between protobuf (main_server/wire.py) and the desks' plain records."""

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
    Unauthenticated,
    Unimplemented,
)
from realmchat.names import check_name, name_key
from realmchat.pb import chat_pb2 as pb
from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.rpc import FILE_CHUNK, reason_metadata, status_for, token_from

from . import wire
from .domain.accounts import Caller
from .domain.files import UploadSpec
from .metrics import EVENT_LAG, rpc_errors, rpc_seconds
from .relay import BATCH_MAX_BYTES, DEADLINE_TICK_S, REPLY_MAX_BYTES, RelayStream
from .service import ChatService
from .wire import file_pb, message_pb

log = logging.getLogger(__name__)
unexpected = ErrorLog(log)  # a traceback per kind, then one line each: a flood cannot flood the log

LINK_BATCH_MAX = 1024
__all__ = ["BATCH_MAX_BYTES", "DEADLINE_TICK_S", "REPLY_MAX_BYTES", "ChatServicer", "add_to_server"]


class Access(enum.Enum):
    PUBLIC = "public"  # Register, Auth
    USER = "user"  # a user's bearer token
    REALM = "realm"  # the realm credential
    REALM_USER = "realm_user"  # both: a realm acting for one of its sessions
    USER_OR_OPERATOR = "user_or_operator"  # a user's token, or the realm credential alone (an operator)


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
                await context.abort(status_for(exc.code), exc.message, reason_metadata(exc))

        return entry

    return deco


def as_chat_error(exc: BaseException, what: str) -> ChatError:
    """Typed errors pass; anything else is a bug: logged once, INTERNAL to the caller."""
    if isinstance(exc, ChatError):
        return exc
    unexpected(f"{what} failed", exc)
    return Internal("internal error; the server log has details")


SERVICE_NAME = _CHAT.full_name


def add_to_server(servicer: ChatServicer, server: grpc.aio.Server) -> None:
    pb_grpc.add_ChatServicer_to_server(servicer, server)


class Guarded:
    """One call's passage through the edge (see ChatServicer.guarded): entering authorizes the
    identity for the access the call needs; an error raised by the body, or by that check,
    leaves as ChatError and is counted; the time spent is observed either way. Cancellation
    and a stream closed by its reader pass through untouched."""

    __slots__ = ("access", "identity", "label", "servicer", "t0")

    def __init__(self, servicer: ChatServicer, label: str, access: Access, identity: Identity) -> None:
        self.servicer = servicer
        self.label = label
        self.access = access
        self.identity = identity
        self.t0 = 0.0

    async def __aenter__(self) -> Caller | None:
        self.t0 = time.perf_counter()
        try:
            return await self.servicer.authorize(self.access, self.identity)
        except BaseException as exc:
            self._end()
            raise self._error(exc) from None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._end()
        if exc is not None and not isinstance(exc, asyncio.CancelledError | GeneratorExit):
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return exc
        err = as_chat_error(exc, self.label if self.label != "unknown" else "unknown method")
        rpc_errors(self.label, err.code.value).inc()
        return err

    def _end(self) -> None:
        rpc_seconds(self.label).observe(time.perf_counter() - self.t0)


class ChatServicer(pb_grpc.ChatServicer):
    def __init__(self, service: ChatService, realm_secret: str) -> None:
        self.service = service
        self.realm_secret = realm_secret
        # The desks the methods call (plain arguments in, records out; pb stays on this side).
        self.accounts, self.delivery, self.conversation = service.accounts, service.delivery, service.conversation
        self.messages, self.groups, self.files = service.messages, service.groups, service.files

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
        if access is Access.USER_OR_OPERATOR and not identity.token:
            if not identity.realm:
                raise Unauthenticated("send 'authorization: Bearer TOKEN' (or, as an operator, the realm credential)")
            return None
        if access in (Access.USER, Access.REALM_USER, Access.USER_OR_OPERATOR):
            return await self.accounts.caller(identity.token, identity.peer, via_realm=identity.realm)
        return None

    def guarded(self, label: str, access: Access, identity: Identity) -> Guarded:
        """`async with servicer.guarded(...) as caller:` runs one call's body: authorized,
        timed, and with every error raised as ChatError (unexpected ones Internal, logged once)."""
        return Guarded(self, label, access, identity)

    async def invoke(self, method: str, request: Any, identity: Identity) -> Any:
        """Runs one unary method for a caller; raises ChatError."""
        spec = METHODS.get(method)
        if spec is None:
            async with self.guarded("unknown", Access.PUBLIC, identity):
                raise Unimplemented(f"no unary method {method[:60]!r}")
        async with self.guarded(method, spec.access, identity) as caller:
            return await spec.handler(self, request, caller, identity)

    def _relayed(self, call: pb.RelayCall) -> Any:
        """The coroutine of one call a realm relays (InvalidArgument when its payload does not parse)."""
        spec = METHODS.get(call.method)
        try:
            request = spec.request_class.FromString(call.payload) if spec is not None else None
        except DecodeError:
            raise InvalidArgument(f"the payload of {call.method} does not parse") from None
        return self.invoke(call.method, request, Identity(call.token, realm=True))

    # ---- accounts ----------------------------------------------------------------------------

    @unary(Access.PUBLIC)
    async def Register(self, request: pb.RegisterRequest, _: None, identity: Identity) -> pb.RegisterResponse:
        user = await self.accounts.register(request.user, request.password, identity.peer)
        return pb.RegisterResponse(user=user.name)

    @unary(Access.PUBLIC)
    async def Auth(self, request: pb.AuthRequest, _: None, identity: Identity) -> pb.AuthResponse:
        if request.link_id and not identity.realm:
            raise PermissionDenied("link_id is for realm servers only: leave it empty")
        return wire.auth_pb(await self.accounts.auth(request.user, request.password, request.link_id, identity.peer))

    @unary()
    async def Logout(self, request: pb.LogoutRequest, caller: Caller, identity: Identity) -> pb.LogoutResponse:
        await self.accounts.logout(caller)
        return pb.LogoutResponse()

    @unary()
    async def Who(self, request: pb.WhoRequest, caller: Caller, identity: Identity) -> pb.WhoResponse:
        return wire.who_pb(self.conversation.who_status())

    # ---- messages ----------------------------------------------------------------------------

    @unary()
    async def SendPrivate(self, request: pb.SendPrivateRequest, caller: Caller, identity: Identity
                          ) -> pb.SendResponse:
        m = await self.messages.send_private(caller, request.to, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def Inbox(self, request: pb.InboxRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return wire.messages_pb(await self.messages.inbox(caller))

    @unary()
    async def SendGroup(self, request: pb.SendGroupRequest, caller: Caller, identity: Identity) -> pb.SendResponse:
        m = await self.messages.send_group(caller, request.group, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def InboxGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return wire.messages_pb(await self.messages.inbox_group(caller, request.group))

    @unary()
    async def History(self, request: pb.HistoryRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        return wire.messages_pb(await self.messages.history(caller, request.peer, wire.history_ask(request)))

    # ---- the life of a message -----------------------------------------------------------------

    @unary()
    async def Edit(self, request: pb.EditRequest, caller: Caller, identity: Identity) -> pb.EditResponse:
        change = await self.messages.edit(caller, request.id, request.text)
        return pb.EditResponse(id=change.message.id, edited=change.message.edited)

    @unary()
    async def Delete(self, request: pb.MessageRef, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.messages.delete(caller, request.id)).message.id)

    @unary(Access.USER_OR_OPERATOR)
    async def Trace(self, request: pb.TraceRequest, caller: Caller | None, identity: Identity) -> pb.TraceResponse:
        return wire.trace_pb(request.id, await self.delivery.trace_of(caller, request.id))

    @unary()
    async def Reply(self, request: pb.ReplyRequest, caller: Caller, identity: Identity) -> pb.SendResponse:
        m = await self.messages.reply(caller, request.id, request.text)
        return pb.SendResponse(id=m.id, ts=m.ts)

    @unary()
    async def React(self, request: pb.ReactRequest, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.messages.react(caller, request.id, request.emoji, True)).message.id)

    @unary()
    async def Unreact(self, request: pb.ReactRequest, caller: Caller, identity: Identity) -> pb.MessageRef:
        return pb.MessageRef(id=(await self.messages.react(caller, request.id, request.emoji, False)).message.id)

    @unary()
    async def Search(self, request: pb.SearchRequest, caller: Caller, identity: Identity) -> pb.MessageList:
        found = await self.messages.search(caller, request.query, request.group, request.user)
        return pb.MessageList(messages=[message_pb(m) for m in found])

    # ---- conversation state ------------------------------------------------------------------

    @unary()
    async def Conversations(self, request: pb.ConversationsRequest, caller: Caller, identity: Identity
                            ) -> pb.ConversationsResponse:
        return wire.conversations_pb(await self.conversation.conversations(
            caller, request.active_after, request.active_before, request.limit, request.oldest))

    @unary()
    async def MarkRead(self, request: pb.MarkReadRequest, caller: Caller, identity: Identity) -> pb.MarkReadResponse:
        mark = await self.conversation.mark_read(caller, request.peer, request.id)
        return pb.MarkReadResponse(peer=mark.peer, read=mark.read)

    @unary()
    async def SetStatus(self, request: pb.SetStatusRequest, caller: Caller, identity: Identity
                        ) -> pb.SetStatusResponse:
        status, message = await self.conversation.set_status(caller, request.away, request.message)
        return pb.SetStatusResponse(status=status, message=message)

    @unary()
    async def Typing(self, request: pb.TypingRequest, caller: Caller, identity: Identity) -> pb.TypingResponse:
        return pb.TypingResponse(forwarded=await self.conversation.typing(caller, request.peer))

    @unary()
    async def SetReceipts(self, request: pb.SetReceiptsRequest, caller: Caller, identity: Identity
                          ) -> pb.SetReceiptsResponse:
        enabled = request.enabled if request.HasField("enabled") else None
        return pb.SetReceiptsResponse(enabled=await self.conversation.set_receipts(caller, enabled))

    # ---- groups ------------------------------------------------------------------------------

    @unary()
    async def CreateGroup(self, request: pb.CreateGroupRequest, caller: Caller, identity: Identity
                          ) -> pb.GroupResponse:
        g = await self.groups.create_group(caller, request.group, request.mode)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def JoinGroup(self, request: pb.JoinGroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.groups.join_group(caller, request.group, request.key)).name)

    @unary()
    async def LeaveGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        return pb.GroupResponse(group=(await self.groups.leave_group(caller, request.group)).name)

    @unary()
    async def Invite(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return wire.member_pb(await self.groups.invite(caller, request.group, request.user))

    @unary()
    async def Kick(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return wire.member_pb(await self.groups.kick(caller, request.group, request.user, request.reason))

    @unary()
    async def Ban(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return wire.member_pb(await self.groups.ban(caller, request.group, request.user, request.reason))

    @unary()
    async def Unban(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return wire.member_pb(await self.groups.unban(caller, request.group, request.user))

    @unary()
    async def SetRole(self, request: pb.MemberRequest, caller: Caller, identity: Identity) -> pb.MemberResponse:
        return wire.member_pb(await self.groups.set_role(caller, request.group, request.user, request.role))

    @unary()
    async def Members(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.MembersResponse:
        return wire.members_pb(await self.groups.members(caller, request.group))

    @unary()
    async def Topic(self, request: pb.TopicRequest, caller: Caller, identity: Identity) -> pb.TopicResponse:
        g = await self.groups.topic(caller, request.group, request.topic if request.set else None)
        return wire.topic_pb(g)

    @unary()
    async def GroupKey(self, request: pb.GroupKeyRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        g = await self.groups.set_group_key(caller, request.group, request.key)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def GroupMode(self, request: pb.GroupModeRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        g = await self.groups.set_group_mode(caller, request.group, request.mode)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def DeleteGroup(self, request: pb.GroupRequest, caller: Caller, identity: Identity) -> pb.GroupResponse:
        g = await self.groups.delete_group(caller, request.group)
        return pb.GroupResponse(group=g.name, mode=g.mode)

    @unary()
    async def BrowseGroups(self, request: pb.BrowseGroupsRequest, caller: Caller, identity: Identity
                           ) -> pb.BrowseGroupsResponse:
        return wire.rooms_pb(await self.groups.browse_groups(caller, request.pattern))

    @unary()
    async def ListGroups(self, request: pb.ListGroupsRequest, caller: Caller, identity: Identity
                         ) -> pb.ListGroupsResponse:
        return wire.groups_pb(await self.groups.list_groups(caller))

    # ---- files -------------------------------------------------------------------------------

    @staticmethod
    def _upload_spec(h: pb.UploadHeader) -> UploadSpec:
        return UploadSpec(to=h.to, name=h.name, size=h.size, sha256=h.sha256)

    async def UploadFile(self, request_iterator: AsyncIterator[pb.UploadRequest], context: Any) -> pb.FileInfo:
        try:
            async with self.guarded("UploadFile", Access.USER, self.identify(context)) as caller:
                assert caller is not None
                return await self._upload(caller, request_iterator)
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)
            raise

    async def _upload(self, caller: Caller, request_iterator: AsyncIterator[pb.UploadRequest]) -> pb.FileInfo:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("the first UploadRequest must carry the header")

        async def chunks() -> AsyncIterator[bytes]:
            async for part in request_iterator:
                if part.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only the first UploadRequest may carry a header")
                yield part.chunk

        return file_pb(await self.files.upload(caller, self._upload_spec(first.header), chunks()))

    @unary()
    async def CheckUpload(self, request: pb.UploadHeader, caller: Caller, identity: Identity
                          ) -> pb.CheckUploadResponse:
        _, name = await self.files.check_upload(self._upload_spec(request), caller)
        return pb.CheckUploadResponse(name=name)

    @unary()
    async def ListFiles(self, request: pb.ListFilesRequest, caller: Caller, identity: Identity) -> pb.FileList:
        return pb.FileList(files=[file_pb(f) for f in await self.files.pending_files(caller)])

    async def DownloadFile(self, request: pb.DownloadRequest, context: Any) -> AsyncIterator[pb.DownloadResponse]:
        try:
            async with self.guarded("DownloadFile", Access.USER, self.identify(context)) as caller:
                assert caller is not None
                record, path = await self.files.open_download(caller, request.id)
                yield pb.DownloadResponse(header=file_pb(record))
                with path.open("rb") as f:
                    while chunk := await asyncio.to_thread(f.read, FILE_CHUNK):
                        yield pb.DownloadResponse(chunk=chunk)
                # Reached only after the last chunk was taken by the transport.
                await self.files.mark_downloaded(caller, record.id)
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)

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
            self.delivery.close_channel(channel)

    async def Link(self, request: pb.LinkRequest, context: Any) -> AsyncIterator[pb.EventBatch]:
        try:
            async with self.guarded("Link", Access.REALM, self.identify(context)):
                realm = check_name(request.realm, "realm")
                channel = self.service.hub.open_channel(realm)
                ids = await self.service.resume(list(request.resume_tokens), channel)
                yield pb.EventBatch(events=[pb.Event(linked=pb.Linked(link_id=channel.id, session_ids=ids))])
                async for events in self._batches(channel, LINK_BATCH_MAX):
                    yield pb.EventBatch(events=events)
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)

    @unary(Access.REALM)
    async def AckEvents(self, request: pb.AckEventsRequest, _: None, identity: Identity) -> pb.AckEventsResponse:
        known = self.delivery.acked(request.link_id, [(d.seq, d.session_id) for d in request.written],
                                   [(d.seq, d.session_id) for d in request.dropped], list(request.written_all),
                                   [(name_key(e.user), i) for e in request.entries for i in e.ids])
        return pb.AckEventsResponse(link_closed=not known)

    @unary(Access.REALM_USER)
    async def Attach(self, request: pb.AttachRequest, caller: Caller, identity: Identity) -> pb.AttachResponse:
        self.accounts.attach(caller, request.link_id)
        return pb.AttachResponse()

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> AsyncIterator[pb.Event]:
        try:
            async with self.guarded("Subscribe", Access.USER, self.identify(context)) as caller:
                assert caller is not None
                hub = self.service.hub
                channel = hub.open_channel("grpc")
                hub.attach(channel, caller.session.id, caller.session.user_key, caller.session.user_name)
                async for events in self._batches(channel, 1):
                    ev = events[0]
                    yield ev
                    # The transport took it and asked for the next one.
                    self.delivery.handed_over(channel, ev.seq, ev.session_ids)
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)

    async def Relay(self, request_iterator: AsyncIterator[pb.RelayRequests], context: Any
                    ) -> AsyncIterator[pb.RelayReplies]:
        """Runs the calls of each batch concurrently (so storage can commit them together) and
        streams results back in batches, as they complete. A call that fails fails alone."""
        try:
            async with self.guarded("Relay", Access.REALM, self.identify(context)):
                stream = RelayStream(self._relayed, as_chat_error)

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
        except ChatError as exc:
            await context.abort(status_for(exc.code), exc.message)

    async def wait_tasks(self) -> None:
        await self.delivery.flush()
