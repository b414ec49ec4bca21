"""The IRCv3 message commands of the IRC edge: REDACT (draft/message-redaction), TAGMSG with
+draft/react, +draft/unreact and +typing, PRIVMSG with +draft/reply or +draft/edit, MARKREAD
(draft/read-marker) and SEARCH. Each calls main through the upstream like every IRC command;
the answers go through IrcCommands.send, so labeled-response covers them too."""

from __future__ import annotations

from typing import TYPE_CHECKING

from realmchat.errors import ChatError, InvalidArgument, NotFound, PermissionDenied
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from . import markers, render
from .casemap import CHANTYPES, channel_to_group, group_to_channel, is_valid_nick
from .codec import Message, message
from .numerics import standard_reply

if TYPE_CHECKING:
    from ..session import Session
    from .edge import IrcCodec, IrcCommands

MSGID_MAX = (1 << 63) - 1
CONTEXT_MAX = 64  # characters of a client's value echoed back in a FAIL
SEARCH_HITS = 20  # NOTICE lines a SEARCH answers at most
SEARCH_TEXT = 120  # characters of each hit shown


def msgid(value: str) -> int | None:
    """A realmchat message id written by a client, or None if it is not one."""
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    n = int(value)
    return n if 0 < n <= MSGID_MAX else None


def peer_of(target: str) -> str | None:
    """A channel or nick as main's peer (`#group` forces a group); None if it is neither."""
    if target.startswith(CHANTYPES):
        group = channel_to_group(target)
        return None if group is None else "#" + group
    return target if is_valid_nick(target) else None


def _cut(value: str) -> str:
    return value[:CONTEXT_MAX] or "*"


class Features:
    """The handlers, bound to the command table they are registered in (edge.IrcCommands)."""

    def __init__(self, cmds: IrcCommands) -> None:
        self.cmds = cmds
        self.up = cmds.up

    def fail(self, s: Session, c: IrcCodec, command: str, code: str, *context: str, why: str) -> None:
        self.cmds.send(s, standard_reply("FAIL", command, code, *(_cut(x) for x in context), description=why,
                                         source=c.server))

    def _refused(self, s: Session, c: IrcCodec, command: str, exc: ChatError, *context: str,
                 missing: str = "UNKNOWN_MSGID") -> None:
        """main's refusal as FAIL; `missing` is the code of a NotFound (the message, or the target)."""
        if isinstance(exc, NotFound):
            self.fail(s, c, command, missing, *context, why=exc.message)
        elif isinstance(exc, PermissionDenied):
            code = "REDACT_FORBIDDEN" if command == "REDACT" else "FORBIDDEN"
            self.fail(s, c, command, code, *context, why=exc.message)
        elif isinstance(exc, InvalidArgument):
            self.fail(s, c, command, "INVALID_PARAMS", *context, why=exc.message)
        else:
            self.fail(s, c, command, "TEMPORARILY_UNAVAILABLE", *context, why=exc.message)

    # ---- REDACT ----------------------------------------------------------------------------------

    async def redact(self, s: Session, c: IrcCodec, m: Message) -> None:
        """REDACT target msgid [:reason]: main's Delete (the author, or a group's owner/admin).
        realmchat keeps no reason: it is echoed back, not stored."""
        target, raw = m.params[0], m.params[1]
        if peer_of(target) is None:
            self.fail(s, c, "REDACT", "INVALID_TARGET", target, why="not a channel or a nick")
            return
        mid = msgid(raw)
        if mid is None:
            self.fail(s, c, "REDACT", "UNKNOWN_MSGID", target, raw, why="not a message id")
            return
        try:
            await self.up.call("Delete", pb.MessageRef(id=mid), s.token)
        except ChatError as exc:
            self._refused(s, c, "REDACT", exc, target, raw)
            return
        params = [target, str(mid), *m.params[2:3]]
        self.cmds.send(s, message(render.mask(c.nick), "REDACT", *params))

    # ---- TAGMSG ----------------------------------------------------------------------------------

    async def tagmsg(self, s: Session, c: IrcCodec, m: Message) -> None:
        """TAGMSG target with +draft/react or +draft/unreact (and +draft/reply, the message), or
        +typing (active: a typing notice; paused and done: nothing, main has no "stopped")."""
        target = m.params[0]
        peer = peer_of(target)
        if peer is None:
            self.fail(s, c, "TAGMSG", "INVALID_TARGET", target, why="not a channel or a nick")
            return
        tags = m.client_tags
        emoji = tags.get("+draft/react") or tags.get("+draft/unreact")
        if emoji is not None:
            raw = tags.get("+draft/reply", "")
            mid = msgid(raw)
            if mid is None:
                self.fail(s, c, "TAGMSG", "UNKNOWN_MSGID", target, raw,
                          why="a reaction needs +draft/reply=<msgid> naming the message")
                return
            method = "React" if "+draft/react" in tags else "Unreact"
            try:
                await self.up.call(method, pb.ReactRequest(id=mid, emoji=emoji), s.token)
            except ChatError as exc:
                self._refused(s, c, "TAGMSG", exc, target, raw)
                return
            if "echo-message" in c.caps:
                self.cmds.send(s, message(render.mask(c.nick), "TAGMSG", target, tags=tags))
            return
        typing = tags.get("+typing")
        if typing is not None:
            if typing not in ("active", "paused", "done"):
                self.fail(s, c, "TAGMSG", "INVALID_PARAMS", target, typing, why="+typing is active, paused or done")
                return
            if typing == "active":
                try:
                    await self.up.call("Typing", pb.TypingRequest(peer=peer), s.token)
                except ChatError as exc:
                    self._refused(s, c, "TAGMSG", exc, target, missing="INVALID_TARGET")
            return
        self.fail(s, c, "TAGMSG", "INVALID_PARAMS", target,
                  why="TAGMSG carries +draft/react, +draft/unreact or +typing here")

    # ---- MARKREAD -------------------------------------------------------------------------------

    async def markread(self, s: Session, c: IrcCodec, m: Message) -> None:
        """MARKREAD target [timestamp=...]: sets the marker to the newest message at or before
        the time (main keeps markers monotonic), or asks it; answers the marker as it is."""
        if not m.params:  # the read-marker spec's standard reply, not 461
            self.fail(s, c, "MARKREAD", "NEED_MORE_PARAMS", why="MARKREAD target [timestamp=...]")
            return
        target = m.params[0]
        peer = peer_of(target)
        if peer is None:
            self.fail(s, c, "MARKREAD", "INVALID_PARAMS", target, why="not a channel or a nick")
            return
        try:
            if len(m.params) > 1:
                ts = markers.parse_timestamp(m.params[1])
                if ts is None:
                    self.fail(s, c, "MARKREAD", "INVALID_PARAMS", target, m.params[1],
                              why="timestamp=YYYY-MM-DDThh:mm:ss.sssZ")
                    return
                found = await markers.newest_until(self.up, s.token, peer, ts)
                read = found.id if found is not None else 0
                if found is not None:
                    r = await self.up.call("MarkRead", pb.MarkReadRequest(peer=peer, id=found.id), s.token)
                    read = r.read
                else:
                    read = await markers.marker(self.up, s.token, peer)
            else:
                read = await markers.marker(self.up, s.token, peer)
            at = await markers.message_at(self.up, s.token, peer, read) if read else None
        except NotFound as exc:
            self.fail(s, c, "MARKREAD", "INVALID_PARAMS", target, why=exc.message)
            return
        except ChatError as exc:
            self._refused(s, c, "MARKREAD", exc, target)
            return
        self.cmds.send(s, markers.markread(c.server, target, at.ts if at is not None else ""))

    # ---- SEARCH ---------------------------------------------------------------------------------

    async def search(self, s: Session, c: IrcCodec, m: Message) -> None:
        """SEARCH [#chan|@nick] words: main's full-text Search, best first, as NOTICE lines
        (at most SEARCH_HITS) and an end line counting them."""
        params = m.params
        scope = ""
        if len(params) > 1 and params[0][:1] in ("#", "@"):  # as the text verb: a word is never a scope
            scope, params = params[0], params[1:]
        query = " ".join(params).strip()
        if not query:
            self.fail(s, c, "SEARCH", "INVALID_PARAMS", why="SEARCH [#chan|@nick] words")
            return
        group = channel_to_group(scope) if scope.startswith(CHANTYPES) else None
        request = pb.SearchRequest(query=query, group=group or "", user=scope[1:] if scope.startswith("@") else "")
        if scope and not group and not (scope.startswith("@") and is_valid_nick(scope[1:])):
            self.fail(s, c, "SEARCH", "INVALID_TARGET", scope, why="a scope is #channel or @nick")
            return
        try:
            r = await self.up.call("Search", request, s.token)
        except ChatError as exc:
            self._refused(s, c, "SEARCH", exc, scope or "*", missing="INVALID_TARGET")
            return
        lines = []
        for hit in r.messages[:SEARCH_HITS]:
            where = group_to_channel(hit.group) if hit.group else hit.to if name_key(getattr(hit, "from")) == \
                name_key(c.nick) else getattr(hit, "from")
            text = hit.text if len(hit.text) <= SEARCH_TEXT else hit.text[:SEARCH_TEXT] + "…"
            lines.append(message(c.server, "NOTICE", c.nick,
                                 f"[{hit.id}] {hit.ts[:16].replace('T', ' ')} {where} <{getattr(hit, 'from')}> {text}"))
        shown = len(lines)
        more = f" (the best {shown} of {len(r.messages)})" if len(r.messages) > shown else ""
        lines.append(message(c.server, "NOTICE", c.nick, f"SEARCH {query}: {shown} found{more}"))
        self.cmds.send(s, *lines)

    # ---- PRIVMSG with client tags ----------------------------------------------------------------

    async def tagged_text(self, s: Session, c: IrcCodec, m: Message, quiet: bool) -> bool:
        """A PRIVMSG/NOTICE with +draft/reply (main's Reply) or +draft/edit (main's Edit); False
        when it has neither (a plain message)."""
        tags = m.client_tags
        edit, reply_to = tags.get("+draft/edit"), tags.get("+draft/reply")
        if (edit is None and reply_to is None) or len(m.params) < 2 or not m.params[1]:
            return False
        target, text = m.params[0].split(",")[0], m.params[1]
        raw = edit if edit is not None else reply_to
        assert raw is not None
        mid = msgid(raw)
        if mid is None:
            if not quiet:
                self.fail(s, c, m.command, "UNKNOWN_MSGID", target, raw, why="not a message id")
            return True
        try:
            if edit is not None:
                await self.up.call("Edit", pb.EditRequest(id=mid, text=text), s.token)
                shown: dict[str, str] = {"+draft/edit": str(mid)}
            else:
                r = await self.up.call("Reply", pb.ReplyRequest(id=mid, text=text), s.token)
                shown = {"+draft/reply": str(mid)}
                if "message-tags" in c.caps:
                    shown["msgid"] = str(r.id)
                if "server-time" in c.caps:
                    shown["time"] = render.server_time(r.ts)
        except ChatError as exc:
            if not quiet:
                self._refused(s, c, m.command, exc, target, raw)
            return True
        if "echo-message" in c.caps:
            if "message-tags" not in c.caps:
                shown = {k: v for k, v in shown.items() if k == "time"}
            self.cmds.send(s, *render.text_lines(render.mask(c.nick), m.command, target, text, shown))
        return True
