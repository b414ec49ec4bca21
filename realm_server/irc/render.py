"""What realmchat's records and events look like on an IRC connection: pure functions of the
record and of the connection's state (its nick and negotiated caps), no I/O."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import replace

from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from .casemap import group_to_channel
from .codec import Message, message, numeric, split_text, text_prefix_len
from .numerics import Numeric as N

HOST = "realmchat"  # the host part of every user's prefix: realmchat has no per-user hosts


def mask(nick: str) -> str:
    return f"{nick}!{nick}@{HOST}"


def server_time(ts: str) -> str:
    """realmchat's ISO-8601 UTC timestamps as IRCv3 server-time (YYYY-MM-DDThh:mm:ss.sssZ)."""
    if not ts:
        return ts
    t = ts.replace("+00:00", "Z")
    if not t.endswith("Z"):
        t += "Z"
    date, _, rest = t.partition("T")
    clock = rest[:-1]
    if "." not in clock:
        clock += ".000"
    else:
        whole, frac = clock.split(".", 1)
        clock = f"{whole}.{(frac + '000')[:3]}"
    return f"{date}T{clock}Z"


def unix_time(ts: str) -> str:
    """An ISO-8601 UTC time as the seconds IRC's 329 and 333 carry; "" when it is not one."""
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return str(int(t.replace(tzinfo=t.tzinfo or datetime.UTC).timestamp()))


def topic_numerics(nick: str, server: str, chan: str, t: pb.TopicResponse) -> list[Message]:
    """332 and, when main knows who set the topic and when, 333; nothing without a topic."""
    if not t.topic:
        return []
    out = [numeric(N.RPL_TOPIC, nick, chan, t.topic, source=server)]
    if t.topic_by and (at := unix_time(t.topic_at)):
        out.append(numeric(N.RPL_TOPICWHOTIME, nick, chan, t.topic_by, at, source=server))
    return out


def lines(msgs: Iterable[Message]) -> bytes:
    return b"".join(m.serialize() for m in msgs)


def text_lines(source: str, command: str, target: str, text: str, tags: dict[str, str]) -> list[Message]:
    """One message's text as IRC lines (split at newlines and at the line limit); the tags go on
    the first line only, so a msgid names one line."""
    pieces = split_text(text_prefix_len(source, command, target), text) or [" "]
    out = [message(source, command, target, pieces[0], tags=tags)]
    out.extend(message(source, command, target, p) for p in pieces[1:])
    return out


def dated(m: pb.Message, caps: frozenset[str]) -> pb.Message:
    """A message from the past as shown: without server-time its time goes before the text."""
    if "server-time" in caps or not m.ts:
        return m
    shown = pb.Message()
    shown.CopyFrom(m)
    shown.text = f"[{m.ts[:16].replace('T', ' ')}] {m.text}"
    return shown


def message_lines(m: pb.Message, me: str, caps: frozenset[str]) -> list[Message]:
    """A private or group message as PRIVMSG from its sender. A private message sent by this
    user on another device (a carbon) reads `:me PRIVMSG peer`, as IRC bouncers show them."""
    sender = getattr(m, "from")
    if m.group:
        target = group_to_channel(m.group)
    elif name_key(sender) == name_key(me):
        target = m.to or me
    else:
        target = me
    tags: dict[str, str] = {}
    if "server-time" in caps and m.ts:
        tags["time"] = server_time(m.ts)
    if "message-tags" in caps:
        tags["msgid"] = str(m.id)
        if m.reply_to:
            tags["+draft/reply"] = str(m.reply_to)
    if "account-tag" in caps:
        tags["account"] = sender
    text = m.text if not m.deleted else "(deleted)"
    return text_lines(mask(sender), "PRIVMSG", target, text, tags)


def with_account(m: Message) -> Message:
    """account-tag on a line from a user (`nick!user@host`): the account is the nick."""
    if not m.source or "!" not in m.source or "account" in m.tags:
        return m
    return replace(m, tags={**m.tags, "account": m.source.split("!", 1)[0]})


def event_lines(kind: str, ev: pb.Event, me: str, caps: frozenset[str], server: str) -> list[Message] | None:
    """An event from main as IRC lines; None if IRC shows no such event."""
    if kind in ("private", "group"):
        return message_lines(ev.private if kind == "private" else ev.group, me, caps)
    if kind == "member":
        mv = ev.member
        chan = group_to_channel(mv.group)
        if mv.action == "join":
            return [message(mask(mv.user), "JOIN", chan)]
        if mv.action == "leave":
            return [message(mask(mv.user), "PART", chan)]
        if mv.action == "kick":  # no reason given: the kicker's nick, as RFC 2812 has it
            return [message(mask(mv.by or server), "KICK", chan, mv.user, mv.reason or mv.by or mv.action)]
        if mv.action == "ban":  # the ban as a mode, then the banned user out
            return [message(mask(mv.by or server), "MODE", chan, "+b", f"{mv.user}!*@*"),
                    message(mask(mv.by or server), "KICK", chan, mv.user, mv.reason or mv.action)]
        if mv.action == "unban":
            return [message(mask(mv.by or server), "MODE", chan, "-b", f"{mv.user}!*@*")]
        if mv.action == "role":
            mode = {"owner": "+q", "admin": "+o"}.get(mv.role, "-o")
            return [message(mask(mv.by or server), "MODE", chan, mode, mv.user)]
        if mv.action == "invite":
            return [message(server, "NOTICE", chan, f"{mv.by} invited {mv.user}")]
        return None
    if kind == "topic":
        t = ev.topic
        return [message(mask(t.by or server), "TOPIC", group_to_channel(t.group), t.topic)]
    if kind == "invited":
        return [message(mask(ev.invited.by or server), "INVITE", me, group_to_channel(ev.invited.group))]
    if kind == "group_deleted":
        g = ev.group_deleted
        return [message(mask(g.by or server), "KICK", group_to_channel(g.group), me, "the group was deleted")]
    if kind == "file":
        f = ev.file
        target = group_to_channel(f.group) if f.group else me
        return [message(mask(getattr(f, "from")), "NOTICE", target,
                        f"sent a file: {f.name} ({f.size} bytes, id {f.id}); fetch it on the realm's text port "
                        f"with `receivefile {f.id}` (the terminal client, the GUI or nc)")]
    return None
