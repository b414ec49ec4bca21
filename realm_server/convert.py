"""Protobuf records -> the text protocol's JSON objects."""

from __future__ import annotations

from typing import Any

from realmchat.pb import chat_pb2 as pb
from realmchat.textproto import HistoryQuery, is_time_ref


def message_dict(m: pb.Message) -> dict[str, Any]:
    d: dict[str, Any] = {"id": m.id, "from": getattr(m, "from")}
    if m.group:
        d["group"] = m.group
    else:
        d["to"] = m.to
    d["text"] = m.text
    d["ts"] = m.ts
    if m.reply_to:
        d["reply_to"] = m.reply_to
    if m.edited:
        d["edited"] = m.edited
    if m.deleted:
        d["deleted"] = True
    if m.reactions:
        d["reactions"] = {r.emoji: list(r.users) for r in m.reactions}
    if m.mention:
        d["mention"] = True
    return d


def _where(e: Any) -> dict[str, Any]:
    return {"group": e.group} if e.group else {"from": getattr(e, "from"), "to": e.to}


def file_dict(f: pb.FileInfo) -> dict[str, Any]:
    d = {"id": f.id, "from": getattr(f, "from"), "name": f.name, "size": f.size, "sha256": f.sha256,
         "ts": f.ts}
    if f.group:
        d["group"] = f.group
    return d


def room_event(kind: str, ev: pb.Event) -> dict[str, Any] | None:
    """A live notice (rooms, conversation state) as the text protocol's event object (kind:
    the Event's oneof field)."""
    if kind == "member":
        m = ev.member
        d: dict[str, Any] = {"event": "member", "group": m.group, "user": m.user, "action": m.action, "by": m.by}
        if m.reason:
            d["reason"] = m.reason
        if m.role:
            d["role"] = m.role
        return d
    if kind == "topic":
        t = ev.topic
        return {"event": "topic", "group": t.group, "topic": t.topic, "by": t.by, **({"at": t.at} if t.at else {})}
    if kind == "group_mode":
        return {"event": "groupmode", "group": ev.group_mode.group, "mode": ev.group_mode.mode, "by": ev.group_mode.by}
    if kind == "group_key":
        k = ev.group_key
        d = {"event": "groupkey", "group": k.group, "has_key": k.has_key, "by": k.by}
        if k.key:  # only the owner and admins are sent the key itself
            d["key"] = k.key
        return d
    if kind == "group_deleted":
        return {"event": "groupdeleted", "group": ev.group_deleted.group, "by": ev.group_deleted.by}
    if kind == "invited":
        return {"event": "invited", "group": ev.invited.group, "by": ev.invited.by}
    if kind == "read":
        return {"event": "read", "peer": ev.read.peer, "id": ev.read.id}
    if kind == "seen":
        return {"event": "seen", "by": ev.seen.by, "id": ev.seen.id}
    if kind == "presence":
        p = ev.presence
        return {"event": "presence", "user": p.user, "status": p.status, "realm": p.realm, "message": p.message}
    if kind == "typing":
        return {"event": "typing", "user": ev.typing.user, "peer": ev.typing.peer, "expires": TYPING_EXPIRES_S}
    if kind == "edited":
        e = ev.edited
        d = {"event": "edited", "id": e.id, "text": e.text, "edited": e.edited, **_where(e)}
        if e.group:
            d["from"] = getattr(e, "from")
        if e.mention:
            d["mention"] = True
        return d
    if kind == "deleted":
        return {"event": "deleted", "id": ev.deleted.id, "by": ev.deleted.by, **_where(ev.deleted)}
    if kind == "reaction":
        r = ev.reaction
        return {"event": "reaction", "id": r.id, "user": r.user, "emoji": r.emoji, "on": r.on, **_where(r)}
    return None


TYPING_EXPIRES_S = 5  # seconds a typing notice stands for (main forwards at most one per 2 s)


def conversation_dict(c: pb.Conversation) -> dict[str, Any]:
    d: dict[str, Any] = {"peer": c.peer, "kind": c.kind}
    d["last"] = message_dict(c.last) if c.HasField("last") else None
    d.update(unread=c.unread, mentions=c.mentions, read=c.read, seen=c.seen)
    return d


def waiting_dict(w: pb.Waiting) -> dict[str, Any]:
    """The `waiting` summary of an auth reply."""
    return {"total": w.total, "conversations": [{"peer": c.peer, "kind": c.kind, "count": c.count}
                                                for c in w.conversations], "unlisted": w.unlisted}


def trace_hop_dict(h: pb.TraceHop) -> dict[str, Any]:
    d: dict[str, Any] = {"at": h.at, "step": h.step}
    if h.users:
        d["users"] = list(h.users)
    if h.realm:
        d["realm"] = h.realm
    if h.sessions:
        d["sessions"] = list(h.sessions)
    if h.why:
        d["why"] = h.why
    return d


def history_ref(word: str) -> pb.HistoryRef:
    """A history reference as written (textproto: a message ID or a time)."""
    return pb.HistoryRef(ts=word) if is_time_ref(word) else pb.HistoryRef(id=int(word))


def history_request(q: HistoryQuery) -> pb.HistoryRequest:
    """A history command as main's request; `before ID` and `after ID` keep their paging meaning
    (plain bounds), every other reference is checked by main (HistoryRef)."""
    r = pb.HistoryRequest(peer=q.peer, limit=q.n)
    refs = [history_ref(w) for w in q.refs]
    if q.form in ("before", "after") and refs[0].id:
        setattr(r, q.form, refs[0].id)
    elif q.form in ("before", "after"):
        getattr(r, f"{q.form}_ref").CopyFrom(refs[0])
    elif q.form == "around":
        r.around.CopyFrom(refs[0])
    elif q.form == "between":
        r.start.CopyFrom(refs[0])
        r.end.CopyFrom(refs[1])
    return r
