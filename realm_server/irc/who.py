"""WHO for the IRC edge: `WHO #chan` (352 per member), `WHO nick`, and WHOX
(`WHO #chan %tnuhraf,42` -> 354 with the asked fields). H/G is here/gone: gone when the
user is away or offline; the server is the realm the user is on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from realmchat.errors import NotFound, PermissionDenied
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from . import render
from .casemap import CHANTYPES, channel_to_group, is_valid_nick
from .codec import Message, numeric
from .numerics import Numeric as N

if TYPE_CHECKING:
    from ..session import Session
    from .edge import IrcCodec, IrcCommands

WHOX_FIELDS = "tcuihsnfdlaor"  # the order 354 carries them in, whatever order they were asked
PREFIX = {"owner": "~", "admin": "@"}


@dataclass(frozen=True, slots=True)
class Row:
    channel: str
    user: str
    realm: str
    here: bool
    role: str


def parse_whox(arg: str) -> tuple[str, str] | None:
    """`%tnuf,42` -> (the known fields asked, in reply order; the token); None: not WHOX."""
    if not arg.startswith("%"):
        return None
    fields, _, token = arg[1:].partition(",")
    if not (token.isdigit() and len(token) <= 3):
        token = ""
    return "".join(f for f in WHOX_FIELDS if f in fields), token


def whox_params(row: Row, fields: str, token: str) -> list[str]:
    """The 354 params (after the target) for one row."""
    flags = ("H" if row.here else "G") + PREFIX.get(row.role, "")
    value = {"t": token or "0", "c": row.channel, "u": row.user, "i": "255.255.255.255", "h": render.HOST,
             "s": row.realm, "n": row.user, "f": flags, "d": "0", "l": "0", "a": row.user, "o": "n/a",
             "r": row.user}
    return [value[f] for f in fields]


class Who:
    def __init__(self, commands: IrcCommands) -> None:
        self.cmds = commands
        self.up = commands.up

    async def who(self, s: Session, c: IrcCodec, m: Message) -> None:
        mask = m.params[0] if m.params else "*"
        whox = parse_whox(m.params[1]) if len(m.params) > 1 else None
        r = await self.up.call("Who", pb.WhoRequest(), s.token)
        online = {name_key(p.user): p for p in r.online}
        rows: list[Row] = []
        if mask.startswith(CHANTYPES):
            group = channel_to_group(mask)
            members: list[pb.Member] = []
            if group is not None:
                try:
                    members = await self.cmds._members(s, group)
                except (NotFound, PermissionDenied):
                    members = []
            for mb in members:
                p = online.get(name_key(mb.user))
                rows.append(Row(mask, mb.user, mb.realm or c.server, p is not None and p.status != "away", mb.role))
        elif is_valid_nick(mask):
            p = online.get(name_key(mask))
            if p is not None:  # offline users are not shown (no hosts to show; WHOIS says 401)
                rows.append(Row("*", p.user, p.realm or c.server, p.status != "away", ""))
        for row in rows:
            if whox is not None:
                self.cmds.send(s, numeric(N.RPL_WHOSPCRPL, c.nick, *whox_params(row, *whox),
                                          source=c.server))
            else:
                flags = ("H" if row.here else "G") + PREFIX.get(row.role, "")
                self.cmds.send(s, numeric(N.RPL_WHOREPLY, c.nick, row.channel, row.user, render.HOST, row.realm,
                                          row.user, flags, f"0 {row.user}", source=c.server))
        self.cmds.num(s, c, N.RPL_ENDOFWHO, mask[:64])
