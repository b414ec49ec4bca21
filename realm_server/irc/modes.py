"""Channel and user MODE for the IRC edge, mapped onto realmchat's groups: +i a private group
(GroupMode), +k the join key (GroupKey), +b a ban by nick (Ban/Unban, the list from Members),
+o the admin role (SetRole), +q shown for the owner. parse_changes, channel_modes and
event_lines are pure; Modes runs the changes.

Main keeps a group's key only as a hash: the key itself is shown to the one who sets it and,
in the MODE line of the change, to the group's owner and admins. Everyone else, and every
`MODE #chan` answer later, gets HIDDEN_KEY in its place (a +k always has a parameter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from realmchat.errors import NO_GROUP, NO_USER, NOT_MEMBER, ChatError, InvalidArgument, NotFound, PermissionDenied
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from . import render
from .casemap import CHANTYPES, channel_to_group, group_to_channel, is_valid_nick
from .codec import Message, message, numeric
from .numerics import Numeric as N
from .numerics import reply

if TYPE_CHECKING:
    from ..session import Session
    from .edge import IrcCodec, IrcCommands

MAX_CHANGES = 12  # mode changes applied from one line; the rest are refused in one reply
USER_MODES = frozenset("iwsBR")  # accepted, without effect: realmchat has no user modes
WITH_PARAM = frozenset("bko")  # (k and b take one when set; -k may omit it; a bare b lists)
HIDDEN_KEY = "*"


@dataclass(frozen=True, slots=True)
class Change:
    sign: str  # "+" or "-"
    char: str
    param: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: N
    char: str


def parse_changes(spec: str, args: list[str]) -> list[Change | Refusal]:
    """`+k-b key bob` -> the changes in order, each with its parameter; unknown chars and
    missing parameters as refusals in their place."""
    out: list[Change | Refusal] = []
    sign = "+"
    rest = list(args)
    for ch in spec:
        if ch in "+-":
            sign = ch
            continue
        if ch == "i":
            out.append(Change(sign, ch, None))
        elif ch in WITH_PARAM:
            param = rest.pop(0) if rest else None
            if param is None and ch == "o":
                out.append(Refusal(N.ERR_NEEDMOREPARAMS, ch))
            elif not param and ch == "k" and sign == "+":  # `+k :` sets no key (it is not -k)
                out.append(Refusal(N.ERR_INVALIDMODEPARAM, ch))
            else:
                out.append(Change(sign, ch, param))
        else:
            out.append(Refusal(N.ERR_UNKNOWNMODE, ch))
    return out


def channel_modes(private: bool, has_key: bool) -> list[str]:
    """324's mode word and its parameters."""
    word = "+" + ("i" if private else "") + ("k" if has_key else "")
    return [word, HIDDEN_KEY] if has_key else [word]


def event_lines(kind: str, ev: pb.Event, server: str) -> list[Message] | None:
    """Another member's mode or key change as the MODE line a channel member sees; None for
    any other event."""
    if kind == "group_mode":
        gm = ev.group_mode
        shown = ["+i" if gm.mode == "private" else "-i"]
        by, chan = gm.by, group_to_channel(gm.group)
    elif kind == "group_key":
        gk = ev.group_key
        shown = ["+k", gk.key or HIDDEN_KEY] if gk.has_key else ["-k"]
        by, chan = gk.by, group_to_channel(gk.group)
    else:
        return None
    return [message(render.mask(by) if by else server, "MODE", chan, *shown)]


class Modes:
    """MODE, run through the IRC command table (edge.py)."""

    def __init__(self, commands: IrcCommands) -> None:
        self.cmds = commands
        self.up = commands.up

    def _say(self, s: Session, c: IrcCodec, code: N, *params: str) -> None:
        """A numeric whose last param is this edge's own text."""
        self.cmds.send(s, numeric(code, c.nick, *params, source=c.server))

    async def mode(self, s: Session, c: IrcCodec, m: Message) -> None:
        target = m.params[0]
        if not target.startswith(CHANTYPES):
            self._user_mode(s, c, m)
            return
        group = channel_to_group(target)
        if group is None:
            self.cmds.num(s, c, N.ERR_NOSUCHCHANNEL, target[:64])
            return
        if len(m.params) == 1:
            await self._query(s, c, target, group)
            return
        changes = parse_changes(m.params[1][:64], m.params[2:])
        if len(changes) > MAX_CHANGES:
            self._say(s, c, N.ERR_UNKNOWNERROR, "MODE", f"at most {MAX_CHANGES} mode changes in one line")
            changes = changes[:MAX_CHANGES]
        for ch in changes:
            if not await self._apply(s, c, target, group, ch):
                return

    def _user_mode(self, s: Session, c: IrcCodec, m: Message) -> None:
        if name_key(m.params[0]) != name_key(c.nick):
            self.cmds.num(s, c, N.ERR_USERSDONTMATCH)
            return
        spec = m.params[1] if len(m.params) > 1 else ""
        if any(ch not in "+-" and ch not in USER_MODES for ch in spec):
            self.cmds.num(s, c, N.ERR_UMODEUNKNOWNFLAG)
            return
        self.cmds.send(s, numeric(N.RPL_UMODEIS, c.nick, "+", source=c.server))

    async def _query(self, s: Session, c: IrcCodec, chan: str, group: str) -> None:
        """324, then 329 (when the group was made) as servers answer `MODE #chan`."""
        try:
            t = await self.up.call("Topic", pb.TopicRequest(group=group), s.token)
        except NotFound:
            self.cmds.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        except PermissionDenied:
            self.cmds.num(s, c, N.ERR_NOTONCHANNEL, chan[:64])
            return
        chan = group_to_channel(t.group)
        out = [numeric(N.RPL_CHANNELMODEIS, c.nick, chan, *channel_modes(t.mode == "private", t.has_key),
                       source=c.server)]
        if created := render.unix_time(t.created):
            out.append(numeric(N.RPL_CREATIONTIME, c.nick, chan, created, source=c.server))
        self.cmds.send(s, *out)

    async def _apply(self, s: Session, c: IrcCodec, chan: str, group: str, ch: Change | Refusal) -> bool:
        """One change, answered; False: the channel itself is refused (stop the line)."""
        if isinstance(ch, Refusal):
            if ch.code is N.ERR_NEEDMOREPARAMS:
                self.cmds.num(s, c, ch.code, "MODE")
            elif ch.code is N.ERR_INVALIDMODEPARAM:
                self._say(s, c, ch.code, chan, ch.char, "*", "a key is needed: MODE #chan +k key")
            else:
                self.cmds.num(s, c, ch.code, ch.char[:4])
            return True
        if ch.char == "b" and ch.param is None:
            return await self._bans(s, c, chan, group)
        if ch.char == "b" and ch.param:  # a mask names its nick: realmchat bans accounts
            ch = Change(ch.sign, ch.char, ch.param.partition("!")[0])
        if ch.char in "bo" and not is_valid_nick(ch.param or ""):
            self._say(s, c, N.ERR_INVALIDMODEPARAM, chan, ch.char, (ch.param or "*")[:64], "not a nick")
            return True
        try:
            if ch.char == "i":
                mode = "private" if ch.sign == "+" else "public"
                await self.up.call("GroupMode", pb.GroupModeRequest(group=group, mode=mode), s.token)
                shown = [f"{ch.sign}i"]
            elif ch.char == "k":
                key = (ch.param or "") if ch.sign == "+" else ""
                await self.up.call("GroupKey", pb.GroupKeyRequest(group=group, key=key), s.token)
                shown = [f"{ch.sign}k", *([key] if key else [])]  # the setter may see it
            elif ch.char == "b":
                rpc = "Ban" if ch.sign == "+" else "Unban"
                r = await self.up.call(rpc, pb.MemberRequest(group=group, user=ch.param or ""), s.token)
                shown = [f"{ch.sign}b", f"{r.user}!*@*"]
            else:
                role = "admin" if ch.sign == "+" else "member"
                r = await self.up.call("SetRole", pb.MemberRequest(group=group, user=ch.param or "", role=role),
                                       s.token)
                shown = [f"{ch.sign}o", r.user]
        except NotFound as exc:
            if exc.reason == NO_GROUP:
                self.cmds.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
                return False
            if exc.reason == NOT_MEMBER:
                self.cmds.num(s, c, N.ERR_USERNOTINCHANNEL, (ch.param or "*")[:64], chan[:64])
            elif exc.reason == NO_USER:
                self.cmds.num(s, c, N.ERR_NOSUCHNICK, (ch.param or "*")[:64])
            else:  # e.g. -b for a nick that is not banned
                self.cmds.send(s, message(c.server, "NOTICE", c.nick, f"MODE {chan}: {exc.message}"))
            return True
        except PermissionDenied as exc:
            self.cmds.send(s, numeric(N.ERR_CHANOPRIVSNEEDED, c.nick, chan, exc.message, source=c.server))
            return True
        except InvalidArgument as exc:
            self._say(s, c, N.ERR_INVALIDMODEPARAM, chan, ch.char, (ch.param or "*")[:64], exc.message)
            return True
        except ChatError as exc:
            self.cmds.send(s, message(c.server, "NOTICE", c.nick, f"MODE {chan}: {exc.message}"))
            return True
        self.cmds.send(s, message(render.mask(c.nick), "MODE", group_to_channel(group), *shown))
        return True

    async def _bans(self, s: Session, c: IrcCodec, chan: str, group: str) -> bool:
        try:
            r = await self.up.call("Members", pb.GroupRequest(group=group), s.token)
        except NotFound:
            self.cmds.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return False
        except PermissionDenied:
            self.cmds.num(s, c, N.ERR_NOTONCHANNEL, chan[:64])
            return False
        for b in r.banned:
            self.cmds.send(s, numeric(N.RPL_BANLIST, c.nick, chan, f"{b.user}!*@*", b.by or c.server,
                                      source=c.server))
        self.cmds.send(s, reply(N.RPL_ENDOFBANLIST, c.nick, chan, source=c.server))
        return True
