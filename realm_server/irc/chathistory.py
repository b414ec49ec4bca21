"""IRCv3 draft/chathistory on the IRC edge: CHATHISTORY BEFORE, AFTER, LATEST, AROUND, BETWEEN and
TARGETS as main's History and Conversations (which check every reference and apply the history
rules), answered in a `chathistory` (or `draft/chathistory-targets`) batch. Messages are rendered
as the live path renders them (render.message_lines, reactions as life.event_lines); the lines go
through IrcCommands.send, so labeled-response covers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from realmchat.errors import ChatError, InvalidArgument, NotFound, PermissionDenied
from realmchat.pb import chat_pb2 as pb

from . import life, markers, render
from .casemap import group_to_channel
from .codec import Message, message
from .features import msgid, peer_of
from .numerics import standard_reply

if TYPE_CHECKING:
    from ..session import Session
    from .edge import IrcCodec, IrcCommands

CAP = "draft/chathistory"
LIMIT_MAX = 100  # ISUPPORT CHATHISTORY: a larger limit is served as this many
BATCH, TARGETS_BATCH = "chathistory", "draft/chathistory-targets"
# The references each subcommand takes after its target (TARGETS has no target).
REFS = {"BEFORE": 1, "AFTER": 1, "LATEST": 1, "AROUND": 1, "BETWEEN": 2, "TARGETS": 2}
FUTURE = "9999-12-31T23:59:59.999Z"  # LATEST after a reference: the newest, counted back from here


def parse_ref(param: str) -> pb.HistoryRef | None:
    """`msgid=ID` or `timestamp=YYYY-MM-DDThh:mm:ss.sssZ` as main's reference; None if neither."""
    kind, eq, value = param.partition("=")
    if kind == "msgid" and eq:
        mid = msgid(value)
        return None if mid is None else pb.HistoryRef(id=mid)
    ts = markers.parse_timestamp(param)
    return None if ts is None else pb.HistoryRef(ts=ts)


def parse_limit(param: str) -> int | None:
    if not param.isascii() or not param.isdigit() or len(param) > 9 or int(param) < 1:
        return None
    return min(int(param), LIMIT_MAX)


def history_request(sub: str, peer: str, refs: list[pb.HistoryRef | None], limit: int) -> pb.HistoryRequest:
    r = pb.HistoryRequest(peer=peer, limit=limit)
    first = refs[0]
    if first is None:  # LATEST *
        return r
    if sub == "BEFORE":
        r.before_ref.CopyFrom(first)
    elif sub == "AFTER":
        r.after_ref.CopyFrom(first)
    elif sub == "AROUND":
        r.around.CopyFrom(first)
    elif sub == "LATEST":  # the newest messages after the reference
        r.start.CopyFrom(pb.HistoryRef(ts=FUTURE))
        r.end.CopyFrom(first)
    else:
        r.start.CopyFrom(first)
        assert refs[1] is not None
        r.end.CopyFrom(refs[1])
    return r


def reaction_lines(m: pb.Message, me: str, caps: frozenset[str], server: str) -> list[Message]:
    """A message's reactions as the live path shows each (one per user and emoji)."""
    out: list[Message] = []
    for r in m.reactions:
        for user in r.users:
            ev = pb.Event(
                reaction=pb.ReactionEvent(
                    **{
                        "id": m.id,
                        "user": user,
                        "emoji": r.emoji,
                        "on": True,
                        "from": getattr(m, "from"),
                        "to": m.to,
                        "group": m.group,
                    }
                )
            )
            out.extend(life.event_lines("reaction", ev, me, caps, server) or [])
    return out


class ChatHistory:
    """The CHATHISTORY handler, bound to the command table it is registered in."""

    def __init__(self, cmds: IrcCommands) -> None:
        self.cmds = cmds
        self.up = cmds.up

    def fail(self, s: Session, c: IrcCodec, code: str, *context: str, why: str) -> None:
        self.cmds.send(
            s,
            standard_reply(
                "FAIL", "CHATHISTORY", code, *(x[:64] or "*" for x in context), description=why, source=c.server
            ),
        )

    def batch(self, s: Session, c: IrcCodec, kind: str, params: list[str], lines: list[Message]) -> None:
        """The lines in a batch of this kind (without the batch cap: the lines alone)."""
        if "batch" not in c.caps:
            self.cmds.send(s, *lines)
            return
        c.batches += 1
        ref = f"H{c.batches}"
        self.cmds.send(
            s,
            message(c.server, "BATCH", f"+{ref}", kind, *params),
            *(Message(m.command, m.params, m.source, {**m.tags, "batch": ref}) for m in lines),
            message(c.server, "BATCH", f"-{ref}"),
        )

    async def chathistory(self, s: Session, c: IrcCodec, m: Message) -> None:
        sub = m.params[0].upper()
        if sub not in REFS:
            self.fail(s, c, "UNKNOWN_COMMAND", sub, why="CHATHISTORY BEFORE, AFTER, LATEST, AROUND, BETWEEN or TARGETS")
            return
        args = m.params[1:]
        target = "" if sub == "TARGETS" else (args.pop(0) if args else "")
        if len(args) != REFS[sub] + 1:
            self.fail(s, c, "INVALID_PARAMS", sub, why=f"CHATHISTORY {sub} takes {_usage(sub)}")
            return
        star = sub == "LATEST" and args[0] == "*"  # LATEST *: no reference
        refs = [None if star else parse_ref(a) for a in args[:-1]]
        limit = parse_limit(args[-1])
        bad = next((a for a, r in zip(args[:-1], refs, strict=True) if r is None and not star), None)
        if bad is not None or limit is None:
            why = (
                f"a limit is a number from 1 (at most {LIMIT_MAX} are sent)"
                if bad is None
                else "a reference is msgid=ID or timestamp=YYYY-MM-DDThh:mm:ss.sssZ"
            )
            self.fail(s, c, "INVALID_PARAMS", sub, bad or args[-1], why=why)
            return
        if sub == "TARGETS":
            await self._targets(s, c, refs, limit)
            return
        peer = peer_of(target)
        if peer is None:
            self.fail(s, c, "INVALID_TARGET", sub, target, why="not a channel or a nick")
            return
        try:
            r = await self.up.call("History", history_request(sub, peer, refs, limit), s.token)
        except (NotFound, PermissionDenied) as exc:
            self.fail(s, c, "INVALID_TARGET", sub, target, why=exc.message)
            return
        except InvalidArgument as exc:
            self.fail(s, c, "INVALID_PARAMS", sub, why=exc.message)
            return
        except ChatError as exc:
            self.fail(s, c, "MESSAGE_ERROR", sub, target, why=exc.message)
            return
        lines: list[Message] = []
        for msg in r.messages:
            lines += render.message_lines(render.dated(msg, c.caps), c.nick, c.caps)
            lines += reaction_lines(msg, c.nick, c.caps, c.server)
        self.batch(s, c, BATCH, [target], lines)

    async def _targets(self, s: Session, c: IrcCodec, refs: list[pb.HistoryRef | None], limit: int) -> None:
        """The conversations whose newest message lies between the two times, in time order;
        the limit counts from the first time given."""
        times = [r.ts if r is not None else "" for r in refs]
        if not all(times):
            self.fail(s, c, "INVALID_PARAMS", "TARGETS", why="TARGETS takes two timestamp= references")
            return
        lo, hi = sorted(times)
        request = pb.ConversationsRequest(active_after=lo, active_before=hi, limit=limit, oldest=times[0] < times[1])
        try:
            r = await self.up.call("Conversations", request, s.token)
        except ChatError as exc:
            self.fail(s, c, "MESSAGE_ERROR", "TARGETS", why=exc.message)
            return
        lines = [
            message(
                c.server,
                "CHATHISTORY",
                "TARGETS",
                group_to_channel(conv.peer) if conv.kind == "group" else conv.peer,
                render.server_time(conv.last.ts),
            )
            for conv in reversed(r.conversations)
        ]
        self.batch(s, c, TARGETS_BATCH, [], lines)


def _usage(sub: str) -> str:
    if sub == "TARGETS":
        return "two timestamps and a limit"
    if sub == "BETWEEN":
        return "a target, two references and a limit"
    return "a target, a reference" + (" (or *)" if sub == "LATEST" else "") + " and a limit"
