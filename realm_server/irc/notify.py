"""IRCv3 notifications about people, for the connections that asked for them: `away-notify`
(main's presence events as AWAY lines) and `extended-join` (JOIN with the account and real
name; on realmchat both are the nick)."""

from __future__ import annotations

from realmchat.pb import chat_pb2 as pb

from .casemap import group_to_channel
from .codec import Message, message
from .render import mask

AWAY_NOTIFY = "away-notify"
EXTENDED_JOIN = "extended-join"
CAPS = (AWAY_NOTIFY, EXTENDED_JOIN)


def join_line(nick: str, chan: str, caps: frozenset[str]) -> Message:
    if EXTENDED_JOIN in caps:
        return message(mask(nick), "JOIN", chan, nick, nick)
    return message(mask(nick), "JOIN", chan)


def event_lines(kind: str, ev: pb.Event, me: str, caps: frozenset[str]) -> list[Message] | None:
    """The lines these caps make of an event; None: not theirs (rendered elsewhere, or not at all)."""
    if kind == "presence":
        p = ev.presence
        # An offline user is shown by nothing: IRC has no QUIT for a user still in the channel.
        if AWAY_NOTIFY not in caps or p.status == "offline" or p.user == me:
            return []
        return [message(mask(p.user), "AWAY", p.message or "away")] if p.status == "away" \
            else [message(mask(p.user), "AWAY")]
    if kind == "member" and ev.member.action == "join" and EXTENDED_JOIN in caps:
        return [join_line(ev.member.user, group_to_channel(ev.member.group), caps)]
    return None
