"""The command table: each verb of realmchat.textproto.COMMANDS maps to a cmd_<verb> handler
here. run() applies the shared rules once for all (login required, typed errors to ERROR
lines, payload bytes consumed even when the command fails)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from realmchat import textproto as tp
from realmchat.errlog import ErrorLog
from realmchat.errors import ChatError, Internal, ResourceExhausted, Unauthenticated
from realmchat.framing import CHUNK
from realmchat.pb import chat_pb2 as pb
from realmchat.textproto import Command

from .convert import conversation_dict, file_dict, history_request, message_dict, trace_hop_dict, waiting_dict
from .delivery import Tag, late_page, page_tag
from .metrics import commands
from .session import Session

if TYPE_CHECKING:
    from .server import Realm

log = logging.getLogger(__name__)
unexpected = ErrorLog(log)  # a traceback per kind, then one line each: no log flooding


@dataclass(frozen=True, slots=True)
class Reply:
    """A response that is also a delivery (an inbox page): main hears whether it was written."""

    line: bytes
    tag: Tag | None


Handler = Callable[[Session, Command], Awaitable["bytes | Reply | None"]]
CLOSE = b""  # returned by a handler: send nothing more, close the connection
ERROR_PREFIX = b'{"status":"ERROR","code":"'  # how every error line starts (textproto.error)


class Payload:
    """The raw bytes that follow a sendfile line, tracked so that whatever the handler did not
    consume is discarded before the next command is parsed."""

    def __init__(self, session: Session, size: int) -> None:
        self.session = session
        self.size = size
        self.consumed = 0

    async def _stalling(self, chunk: int) -> AsyncIterator[bytes]:
        """The rest of the payload; a client that sends nothing for stall_timeout_s (slowloris
        holding an upload open) gets ConnectionError, which closes the connection."""
        stall = self.session.stall_timeout_s
        it = aiter(self.session.lines.iter_payload(self.size - self.consumed, chunk))
        while True:
            try:
                async with asyncio.timeout(stall if stall > 0 else None):
                    data = await anext(it)
            except StopAsyncIteration:
                return
            except TimeoutError:
                # Like every other timeout: a last `closing` event says why, then the close.
                await self.session.close_with(tp.event(
                    "closing", reason="stall_timeout",
                    message=f"the file payload stalled: no data for {stall:g} s; closing the connection"),
                    "file payload stalled")
                raise ConnectionError("the payload stalled") from None
            self.consumed += len(data)
            yield data

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._stalling(256 * 1024):
            yield chunk

    async def discard_rest(self) -> None:
        async for _ in self._stalling(CHUNK):
            pass


class Commands:
    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.up = realm.upstream
        self.table: dict[str, Handler] = {verb: getattr(self, f"cmd_{verb}") for verb in tp.COMMANDS}
        self._payloads: dict[Session, Payload] = {}

    async def discard_payload(self, session: Session, size: int) -> None:
        """Drops the payload of a sendfile that is refused before it runs (flood control)."""
        await Payload(session, size).discard_rest()

    async def run(self, session: Session, cmd: Command) -> bool:
        """Runs one command and queues its one response. False: close the connection."""
        payload = Payload(session, cmd.payload_size) if cmd.payload_size is not None else None
        if payload:
            self._payloads[session] = payload
        try:
            if cmd.spec.needs_auth and not session.authed:
                raise Unauthenticated("log in first: auth USER PASS (or register USER PASS)")
            response = await self.table[cmd.verb](session, cmd)
        except ChatError as exc:
            response = tp.error_from(exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as exc:
            unexpected(f"command {cmd.verb} failed", exc)
            response = tp.error_from(Internal("internal error in the realm; try again"))
        finally:
            self._payloads.pop(session, None)
        if response == CLOSE:
            commands(cmd.verb, "OK").inc()
            return False
        if isinstance(response, Reply):
            commands(cmd.verb, "OK").inc()
            session.send(response.line, response.tag)
        elif response is not None:
            # Error lines start {"status":"ERROR","code":"X"...: the code is read without parsing.
            commands(cmd.verb, "OK" if response.startswith(b'{"status":"OK"') else
                            response[len(ERROR_PREFIX):].split(b'"', 1)[0].decode()).inc()
            session.send(response)
        if payload:
            # Bytes of a refused upload are read and dropped, never parsed as commands.
            try:
                await payload.discard_rest()
            except (ConnectionError, asyncio.IncompleteReadError):
                return False
        return True

    # ---- accounts ----------------------------------------------------------------------------

    async def cmd_register(self, s: Session, cmd: Command) -> bytes:
        r = await self.realm.logins.register(s, cmd.args[0], cmd.args[1])
        return tp.ok(user=r.user)

    async def cmd_auth(self, s: Session, cmd: Command) -> bytes:
        r = await self.realm.logins.login(s, cmd.args[0], cmd.args[1])
        # An extra field, only when something waits: older clients ignore it.
        if r.HasField("waiting") and r.waiting.total:
            return tp.ok(user=r.user, realm=self.realm.config.name, waiting=waiting_dict(r.waiting))
        return tp.ok(user=r.user, realm=self.realm.config.name)

    async def cmd_logout(self, s: Session, cmd: Command) -> bytes:
        await self.realm.logins.logout(s)
        return tp.ok()

    async def cmd_quit(self, s: Session, cmd: Command) -> bytes:
        s.send(tp.ok(bye=True))
        return CLOSE

    async def cmd_help(self, s: Session, cmd: Command) -> bytes:
        return tp.ok(commands=tp.help_lines())

    async def cmd_ping(self, s: Session, cmd: Command) -> bytes:
        return tp.ok(pong=True)

    async def cmd_who(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Who", pb.WhoRequest(), s.token)
        return tp.ok(online=[{"user": p.user, "realm": p.realm, "status": p.status or "online",
                              "message": p.message} for p in r.online])

    # ---- messages ----------------------------------------------------------------------------

    async def cmd_sendprivate(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("SendPrivate", pb.SendPrivateRequest(to=cmd.args[0], text=cmd.args[1]), s.token)
        return tp.ok(id=r.id, ts=r.ts)

    async def cmd_sendgroup(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("SendGroup", pb.SendGroupRequest(group=cmd.args[0], text=cmd.args[1]), s.token)
        return tp.ok(id=r.id, ts=r.ts)

    async def _inbox_page(self, s: Session, method: str, request: Any) -> Reply:
        sid = s.session_id

        def gave_up(r: pb.MessageList) -> None:  # main answered after our deadline: not written
            if (tag := late_page(r.delivery_link, r.delivery, sid)) is not None:
                self.up.report([], [tag])

        await self.up.wait_linked(self.up.timeout)  # a page needs the link to be reported on
        r = await self.up.call(method, request, s.token, on_late=gave_up)
        # A message this connection already got by push (main re-sends after a relink) is
        # left out; the page still counts as written.
        msgs = [message_dict(m) for m in r.messages if s.first_sight(m.id)]
        return Reply(tp.ok(messages=msgs, more=r.more),
                     page_tag(r.delivery_link, r.delivery, sid, s.user, (m.id for m in r.messages)))

    async def cmd_inbox(self, s: Session, cmd: Command) -> Reply:
        return await self._inbox_page(s, "Inbox", pb.InboxRequest())

    async def cmd_inboxgroup(self, s: Session, cmd: Command) -> Reply:
        return await self._inbox_page(s, "InboxGroup", pb.GroupRequest(group=cmd.args[0]))

    async def cmd_history(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("History", history_request(tp.history_query(cmd.args)), s.token)
        return tp.ok(messages=[message_dict(m) for m in r.messages], more=r.more)

    # ---- conversation state ------------------------------------------------------------------

    async def cmd_conversations(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Conversations", pb.ConversationsRequest(), s.token)
        return tp.ok(conversations=[conversation_dict(c) for c in r.conversations])

    async def cmd_read(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("MarkRead", pb.MarkReadRequest(peer=cmd.args[0], id=int(cmd.args[1])), s.token)
        return tp.ok(peer=r.peer, read=r.read)

    async def cmd_away(self, s: Session, cmd: Command) -> bytes:
        message = cmd.args[0].strip() if cmd.args else ""
        r = await self.up.call("SetStatus", pb.SetStatusRequest(away=True, message=message), s.token)
        # The new status is `presence`: `status` is every response's OK/ERROR.
        return tp.ok(presence=r.status, message=r.message)

    async def cmd_back(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("SetStatus", pb.SetStatusRequest(away=False), s.token)
        return tp.ok(presence=r.status, message="")

    async def cmd_typing(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Typing", pb.TypingRequest(peer=cmd.args[0]), s.token)
        return tp.ok(forwarded=r.forwarded)

    async def cmd_receipts(self, s: Session, cmd: Command) -> bytes:
        req = pb.SetReceiptsRequest(enabled=cmd.args[0] == "on") if cmd.args else pb.SetReceiptsRequest()
        r = await self.up.call("SetReceipts", req, s.token)
        return tp.ok(receipts="on" if r.enabled else "off")

    # ---- the life of a message -----------------------------------------------------------------

    async def cmd_edit(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Edit", pb.EditRequest(id=int(cmd.args[0]), text=cmd.args[1]), s.token)
        return tp.ok(id=r.id, edited=r.edited)

    async def cmd_delete(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Delete", pb.MessageRef(id=int(cmd.args[0])), s.token)
        return tp.ok(id=r.id)

    async def cmd_trace(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Trace", pb.TraceRequest(id=int(cmd.args[0])), s.token)
        return tp.ok(id=r.id, hops=[trace_hop_dict(h) for h in r.hops])

    async def cmd_reply(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Reply", pb.ReplyRequest(id=int(cmd.args[0]), text=cmd.args[1]), s.token)
        return tp.ok(id=r.id, ts=r.ts)

    async def cmd_react(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("React", pb.ReactRequest(id=int(cmd.args[0]), emoji=cmd.args[1]), s.token)
        return tp.ok(id=r.id)

    async def cmd_unreact(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Unreact", pb.ReactRequest(id=int(cmd.args[0]), emoji=cmd.args[1]), s.token)
        return tp.ok(id=r.id)

    async def cmd_search(self, s: Session, cmd: Command) -> bytes:
        scope, query = cmd.args
        request = pb.SearchRequest(query=query, group=scope[1:] if scope.startswith("#") else "",
                                   user=scope[1:] if scope.startswith("@") else "")
        r = await self.up.call("Search", request, s.token)
        return tp.ok(messages=[message_dict(m) for m in r.messages])

    # ---- groups ------------------------------------------------------------------------------

    async def cmd_creategroup(self, s: Session, cmd: Command) -> bytes:
        mode = cmd.args[1] if len(cmd.args) > 1 else "public"
        r = await self.up.call("CreateGroup", pb.CreateGroupRequest(group=cmd.args[0], mode=mode), s.token)
        return tp.ok(group=r.group, mode=r.mode)

    async def cmd_joingroup(self, s: Session, cmd: Command) -> bytes:
        key = cmd.args[1] if len(cmd.args) > 1 else ""
        r = await self.up.call("JoinGroup", pb.JoinGroupRequest(group=cmd.args[0], key=key), s.token)
        return tp.ok(group=r.group)

    async def cmd_leavegroup(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("LeaveGroup", pb.GroupRequest(group=cmd.args[0]), s.token)
        return tp.ok(group=r.group)

    async def cmd_groups(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("ListGroups", pb.ListGroupsRequest(), s.token)
        return tp.ok(groups=[{"group": g.group, "role": g.role, "members": g.members} for g in r.groups])

    # ---- rooms -------------------------------------------------------------------------------

    async def _member_call(self, s: Session, method: str, request: pb.MemberRequest) -> bytes:
        r = await self.up.call(method, request, s.token)
        return tp.ok(group=r.group, user=r.user, **({"role": r.role} if method == "SetRole" else {}))

    async def cmd_invite(self, s: Session, cmd: Command) -> bytes:
        return await self._member_call(s, "Invite", pb.MemberRequest(group=cmd.args[0], user=cmd.args[1]))

    async def cmd_kick(self, s: Session, cmd: Command) -> bytes:
        reason = cmd.args[2].strip() if len(cmd.args) > 2 else ""
        return await self._member_call(s, "Kick", pb.MemberRequest(group=cmd.args[0], user=cmd.args[1], reason=reason))

    async def cmd_ban(self, s: Session, cmd: Command) -> bytes:
        reason = cmd.args[2].strip() if len(cmd.args) > 2 else ""
        return await self._member_call(s, "Ban", pb.MemberRequest(group=cmd.args[0], user=cmd.args[1], reason=reason))

    async def cmd_unban(self, s: Session, cmd: Command) -> bytes:
        return await self._member_call(s, "Unban", pb.MemberRequest(group=cmd.args[0], user=cmd.args[1]))

    async def cmd_role(self, s: Session, cmd: Command) -> bytes:
        return await self._member_call(s, "SetRole", pb.MemberRequest(group=cmd.args[0], user=cmd.args[1],
                                                                      role=cmd.args[2]))

    async def cmd_members(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("Members", pb.GroupRequest(group=cmd.args[0]), s.token)
        members = [{"user": m.user, "role": m.role, "online": m.online, "realm": m.realm} for m in r.members]
        if not r.moderator:  # the bans are the owner's and admins' business only
            return tp.ok(group=cmd.args[0], members=members)
        return tp.ok(group=cmd.args[0], members=members,
                     banned=[{"user": b.user, "by": b.by, "reason": b.reason, "at": b.at} for b in r.banned])

    async def cmd_topic(self, s: Session, cmd: Command) -> bytes:
        if len(cmd.args) > 1:
            text = cmd.args[1].strip()
            request = pb.TopicRequest(group=cmd.args[0], topic="" if text == "-" else text, set=True)
        else:
            request = pb.TopicRequest(group=cmd.args[0])
        r = await self.up.call("Topic", request, s.token)
        # Who set the topic and when: absent when main does not know (set before it kept them).
        who = {"topic_by": r.topic_by, "topic_at": r.topic_at} if r.topic_by else {}
        return tp.ok(group=r.group, topic=r.topic, **who, mode=r.mode, has_key=r.has_key, created=r.created)

    async def cmd_groupkey(self, s: Session, cmd: Command) -> bytes:
        key = "" if cmd.args[1] == "-" else cmd.args[1]
        r = await self.up.call("GroupKey", pb.GroupKeyRequest(group=cmd.args[0], key=key), s.token)
        return tp.ok(group=r.group)

    async def cmd_groupmode(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("GroupMode", pb.GroupModeRequest(group=cmd.args[0], mode=cmd.args[1].lower()), s.token)
        return tp.ok(group=r.group, mode=r.mode)

    async def cmd_deletegroup(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("DeleteGroup", pb.GroupRequest(group=cmd.args[0]), s.token)
        return tp.ok(group=r.group)

    async def cmd_listgroups(self, s: Session, cmd: Command) -> bytes:
        r = await self.up.call("BrowseGroups", pb.BrowseGroupsRequest(pattern=cmd.args[0] if cmd.args else ""),
                               s.token)
        return tp.ok(groups=[{"group": g.group, "mode": g.mode, "topic": g.topic, "members": g.members}
                             for g in r.groups])

    # ---- files -------------------------------------------------------------------------------

    async def cmd_sendfile(self, s: Session, cmd: Command) -> bytes:
        to, name, _ = cmd.args
        payload = self._payloads[s]
        if payload.size > self.realm.config.max_file_bytes:
            raise ResourceExhausted(f"file too large: at most {self.realm.config.max_file_bytes} bytes")
        header = pb.UploadHeader(to=to, name=name, size=payload.size)
        # Refusals (unknown user, bad name, size) come back before any byte is streamed.
        await self.up.call("CheckUpload", header, s.token)
        f = await self.up.upload(s.token, header, payload.chunks())
        return tp.ok(id=f.id, name=f.name, size=f.size, sha256=f.sha256)

    async def cmd_receivefile(self, s: Session, cmd: Command) -> bytes | None:
        if not cmd.args:
            r = await self.up.call("ListFiles", pb.ListFilesRequest(), s.token)
            return tp.ok(files=[file_dict(f) for f in r.files])
        header, chunks = await self.up.download(s.token, int(cmd.args[0]))
        try:
            await s.send_stream(tp.ok(**file_dict(header)), chunks)
        except ChatError:
            # The header and part of the bytes are out: the framing cannot be repaired, so the
            # connection is closed rather than sending a short payload.
            log.warning("download %d broke mid-stream; closing %s", header.id, s.peer)
            return CLOSE
        return None
