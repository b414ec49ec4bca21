"""The one place the domain's plain records and events meet chat.proto: records into pb
messages, events into pb Events (once per event, whatever the number of recipients)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from realmchat.pb import chat_pb2 as pb

from . import events as ev
from .domain.history import HistoryAsk, Ref
from .storage.base import (
    ConversationRecord,
    FileRecord,
    GroupInfo,
    GroupRecord,
    MessageRecord,
    RoomChange,
    RoomInfo,
)
from .trace import Hop

if TYPE_CHECKING:  # the hub imports this module, and the desks import the hub
    from .domain.accounts import Login
    from .domain.delivery import Page
    from .domain.groups import Roster

PbEvent = pb.Event


def message_pb(m: MessageRecord, mention: bool | None = None) -> pb.Message:
    """mention: the receiving user's flag when it differs from the record's (a live push)."""
    msg = pb.Message(**{"id": m.id, "from": m.sender, "to": m.to, "group": m.group, "text": m.text,
                        "ts": m.ts, "reply_to": m.reply_to, "edited": m.edited, "deleted": m.deleted,
                        "mention": m.mention if mention is None else mention})
    if m.reactions:  # none on a new message (the live push of every send)
        msg.reactions.extend(pb.Reaction(emoji=e, users=list(us)) for e, us in m.reactions)
    return msg


def file_pb(f: FileRecord) -> pb.FileInfo:
    return pb.FileInfo(**{"id": f.id, "from": f.sender, "to": f.to, "name": f.name, "size": f.size,
                          "sha256": f.sha256, "ts": f.ts, "group": f.group})


def _flat(event_cls: Any, pb_cls: Any) -> Callable[[Any], Any]:
    """Builds pb_cls from the event's fields by name; `sender` is the proto's `from` (a keyword)."""
    names = [(("from" if n == "sender" else n), n) for n in event_cls.__dataclass_fields__]
    return lambda e: pb_cls(**{field: getattr(e, n) for field, n in names})


# Event type -> (its field in pb.Event's oneof, how its payload is built).
_PAYLOAD: dict[type[Any], tuple[str, Callable[[Any], Any]]] = {
    ev.PrivateMessage: ("private", lambda e: message_pb(e.message, e.mention)),
    ev.GroupMessage: ("group", lambda e: message_pb(e.message, e.mention)),
    ev.FileOffered: ("file", lambda e: file_pb(e.file)),
    **{cls: (field, _flat(cls, pb_cls)) for cls, field, pb_cls in (
        (ev.Edited, "edited", pb.EditedEvent), (ev.Deleted, "deleted", pb.DeletedEvent),
        (ev.Reaction, "reaction", pb.ReactionEvent), (ev.Member, "member", pb.MemberEvent),
        (ev.Invited, "invited", pb.InvitedEvent), (ev.Topic, "topic", pb.TopicEvent),
        (ev.GroupMode, "group_mode", pb.GroupModeEvent), (ev.GroupKey, "group_key", pb.GroupKeyEvent),
        (ev.GroupDeleted, "group_deleted", pb.GroupDeletedEvent), (ev.Presence, "presence", pb.PresenceEvent),
        (ev.Typing, "typing", pb.TypingEvent), (ev.Read, "read", pb.ReadEvent), (ev.Seen, "seen", pb.SeenEvent))},
}


def event_template(event: ev.Event) -> pb.Event:
    """The pb Event of a plain event, without session ids or seq: built once per event."""
    name, build = _PAYLOAD[type(event)]
    out = pb.Event()
    getattr(out, name).CopyFrom(build(event))
    return out


def channel_event(template: pb.Event, session_ids: list[int], seq: int) -> pb.Event:
    """The copy of a template one channel gets: its target sessions and the ledger's seq."""
    out = pb.Event(session_ids=session_ids, seq=seq)
    out.MergeFrom(template)
    return out


# ---- replies built from records -------------------------------------------------------------


def messages_pb(page: Page) -> pb.MessageList:
    return pb.MessageList(messages=[message_pb(m) for m in page.messages], more=page.more,
                          delivery=page.delivery, delivery_link=page.delivery_link)


def _ref(request: pb.HistoryRequest, name: str) -> Ref | None:
    if not request.HasField(name):
        return None
    r = getattr(request, name)
    return Ref(id=r.id, ts=r.ts)


def history_ask(request: pb.HistoryRequest) -> HistoryAsk:
    return HistoryAsk(request.limit, request.before, request.after,
                      *(_ref(request, n) for n in ("before_ref", "after_ref", "around", "start", "end")))


def auth_pb(login: Login) -> pb.AuthResponse:
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


def trace_pb(msg_id: int, hops: list[Hop]) -> pb.TraceResponse:
    return pb.TraceResponse(id=msg_id, hops=[
        pb.TraceHop(at=iso_ms(h.at), step=h.step, users=list(h.users), realm=h.realm,
                    sessions=[sid for sid, _ in h.sessions], why=h.why) for h in hops])


def iso_ms(at: float) -> str:
    """Unix time in the form of a message's ts (storage.base.utc_now_iso)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def who_pb(online: list[tuple[str, str, str, str]]) -> pb.WhoResponse:
    return pb.WhoResponse(online=[pb.Presence(user=u, realm=r, status=st, message=msg) for u, r, st, msg in online])


def conversations_pb(convs: list[ConversationRecord]) -> pb.ConversationsResponse:
    out = []
    for c in convs:
        conv = pb.Conversation(peer=c.peer, kind=c.kind, unread=c.unread, mentions=c.mentions, read=c.read,
                               seen=c.seen)
        if c.last is not None:
            conv.last.CopyFrom(message_pb(c.last))
        out.append(conv)
    return pb.ConversationsResponse(conversations=out)


def topic_pb(g: GroupRecord) -> pb.TopicResponse:
    """A group's topic with who set it and when, and its settings as any reader may see them."""
    return pb.TopicResponse(group=g.name, topic=g.topic, topic_by=g.topic_by, topic_at=g.topic_at, mode=g.mode,
                            has_key=g.has_key, created=g.created)


def member_pb(change: RoomChange) -> pb.MemberResponse:
    return pb.MemberResponse(group=change.group.name, user=change.user, role=change.role)


def members_pb(r: Roster) -> pb.MembersResponse:
    return pb.MembersResponse(
        members=[pb.Member(user=m.user, role=m.role, online=m.online, realm=m.realm) for m in r.members],
        banned=[pb.Ban(user=b.user, by=b.by, reason=b.reason, at=b.ts) for b in r.banned or ()],
        moderator=r.banned is not None)


def rooms_pb(groups: list[RoomInfo]) -> pb.BrowseGroupsResponse:
    return pb.BrowseGroupsResponse(groups=[pb.RoomInfo(group=g.name, mode=g.mode, topic=g.topic, members=g.members)
                                           for g in groups])


def groups_pb(groups: list[GroupInfo]) -> pb.ListGroupsResponse:
    return pb.ListGroupsResponse(groups=[pb.GroupInfo(group=g.name, role=g.role, members=g.members) for g in groups])

