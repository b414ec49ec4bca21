"""The life of a message on IRC (IRCv3 draft/message-redaction, +draft/reply, +draft/react,
+typing, +draft/edit): pure functions of an event and of the connection's nick and caps."""

from __future__ import annotations

from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from .casemap import group_to_channel
from .codec import Message, message
from .render import mask, text_lines

REDACTION = "draft/message-redaction"
TAGS = "message-tags"
REACT_TEXT_MAX = 40  # characters of the message quoted in a reaction NOTICE


def target(group: str, sender: str, to: str, me: str) -> str:
    """Where a message shows on this connection, as message_lines puts it: the channel; a
    private message from someone else at me; my own (another device) at its recipient."""
    if group:
        return group_to_channel(group)
    if name_key(sender) == name_key(me):
        return to or me
    return me


def event_lines(kind: str, ev: pb.Event, me: str, caps: frozenset[str], server: str) -> list[Message] | None:
    """Deletions, edits, reactions and typing as IRC lines; None for other kinds (render's)."""
    if kind == "deleted":
        d = ev.deleted
        where = target(d.group, getattr(d, "from"), d.to, me)
        who = d.by or getattr(d, "from")
        if REDACTION in caps:
            return [message(mask(who), "REDACT", where, str(d.id))]
        return [message(server, "NOTICE", where, f"{who} deleted message {d.id}")]
    if kind == "edited":
        e = ev.edited
        sender = getattr(e, "from")
        where = target(e.group, sender, e.to, me)
        if TAGS in caps:
            return text_lines(mask(sender), "PRIVMSG", where, e.text, {"+draft/edit": str(e.id)})
        return text_lines(mask(sender), "PRIVMSG", where, f"(edited) {e.text}", {})
    if kind == "reaction":
        r = ev.reaction
        author = getattr(r, "from")
        if r.group:
            where = group_to_channel(r.group)
        elif name_key(r.user) != name_key(me):
            where = me
        else:  # my own reaction from another device: shown at the other party
            where = r.to if name_key(author) == name_key(me) else author
        if TAGS in caps:
            tags = {"+draft/reply": str(r.id), ("+draft/react" if r.on else "+draft/unreact"): r.emoji}
            return [message(mask(r.user), "TAGMSG", where, tags=tags)]
        verb = "reacted" if r.on else "took back"
        return [message(server, "NOTICE", where, f"{r.user} {verb} {r.emoji} to message {r.id}")]
    if kind == "typing":
        t = ev.typing
        if TAGS not in caps:
            return None
        where = group_to_channel(t.peer) if name_key(t.peer) != name_key(t.user) else me
        return [message(mask(t.user), "TAGMSG", where, tags={"+typing": "active"})]
    return None
