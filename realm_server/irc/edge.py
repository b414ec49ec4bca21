"""The IRC edge of a realm: a connection's IRC state and codec (IrcCodec, a session.Codec) and
the IRC command table (IrcCommands), beside the text protocol's. Sessions, the single writer,
pacing, delivery reports and the upstream are the realm's own: logins and registrations run
through the text commands' handlers, everything else through the same upstream calls."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from realmchat.errlog import ErrorLog
from realmchat.errors import (
    JOIN_BANNED,
    JOIN_INVITE,
    JOIN_KEY,
    NO_GROUP,
    NOT_MEMBER,
    AlreadyExists,
    ChatError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from ..delivery import Tag, late_page, page_tag
from ..metrics import commands as command_metric
from . import chathistory, labels, life, markers, modes, notify, render
from .casemap import (
    CASEMAPPING,
    CHANNELLEN,
    CHANTYPES,
    NICKLEN,
    channel_to_group,
    fold,
    group_to_channel,
    is_valid_nick,
)
from .codec import IrcParseError, Message, message, numeric, parse
from .features import Features
from .modes import MAX_CHANGES, Modes
from .numerics import Numeric as N
from .numerics import isupport, reply, standard_reply
from .who import Who

if TYPE_CHECKING:
    from ..server import Realm
    from ..session import Session

log = logging.getLogger(__name__)
unexpected = ErrorLog(log)

CAPS = ("sasl", "server-time", "message-tags", "echo-message", "account-tag", "multi-prefix",
        "draft/account-registration", "batch", "labeled-response", "draft/message-redaction",
        markers.CAP, chathistory.CAP, *notify.CAPS, "userhost-in-names")
CAP_VALUES = {"sasl": "PLAIN", "draft/account-registration": "before-connect"}
SASL_CHUNK = 400
SASL_MAX = 4096  # bytes of base64 a SASL exchange may take in all
TARGMAX = 4  # PRIVMSG/NOTICE/JOIN/PART targets per command
TOPICLEN = 512
MAX_CATCH_UP_PAGES = 50  # inbox pages fetched per conversation at registration
MAX_REJOIN = 200  # channels announced at registration
NICK_IS_ACCOUNT = "the nick is the account: log in to another account on another connection"
REGISTER_HINT = ("no such account or a wrong password. New here? Create the account first: "
                 "/quote REGISTER * * PASSWORD (the nick becomes the account), then reconnect "
                 "with PASS account:password or SASL PLAIN")


class IrcCodec:
    """One IRC connection's state (nick, caps, registration, SASL) and how the realm's lines
    look to it. Made per connection: what a client is shown depends on its nick and caps."""

    __slots__ = ("batches", "cap_pending", "caps", "capture", "capture_tags", "nick", "password", "registered",
                 "sasl_buf", "sasl_mech", "server", "user_given", "watcher")

    def __init__(self, server: str) -> None:
        self.server = server
        self.nick = "*"
        self.user_given = False
        self.password: str | None = None
        self.caps: frozenset[str] = frozenset()
        self.cap_pending = False  # CAP LS or REQ seen, END not yet: registration waits
        self.registered = False   # 001 sent
        self.sasl_mech: str | None = None
        self.sasl_buf = ""
        # A labelled command's own lines, held until it ends (labels.labelled); None: sent as made.
        self.capture: list[Message] | None = None
        self.capture_tags: list[Tag] = []
        self.batches = 0  # batch ids handed out on this connection
        self.watcher: markers.Watcher | None = None  # read markers moved elsewhere (set at welcome)

    # ---- session.Codec -----------------------------------------------------------------------

    def hello(self, realm: str) -> bytes:
        return message(self.server, "NOTICE", "*",
                       f"*** realmchat realm {realm}: log in with PASS account:password or SASL PLAIN; "
                       f"new accounts: REGISTER * * PASSWORD").serialize()

    def parse(self, line: bytes) -> Message | IrcParseError | None:
        """The message; a refused line as its IrcParseError (its reply is sent in order with
        every other answer); None for a line IRC ignores."""
        try:
            return parse(line[:-1] if line.endswith(b"\r") else line)
        except IrcParseError as exc:
            return None if exc.silent else exc

    def error(self, exc: ChatError) -> bytes:
        if isinstance(exc, ResourceExhausted) and "line too long" in exc.message:
            return reply(N.ERR_INPUTTOOLONG, self.nick, source=self.server).serialize()
        return message(self.server, "NOTICE", self.nick, exc.message).serialize()

    def event(self, kind: str, ev: pb.Event) -> bytes | None:
        if kind == "read":  # IRC names markers by time: looked up, then sent (markers.Watcher)
            if self.watcher is not None:
                self.watcher.moved(ev.read.peer, ev.read.id)
            return None
        msgs = notify.event_lines(kind, ev, self.nick, self.caps) \
            or render.event_lines(kind, ev, self.nick, self.caps, self.server) \
            or modes.event_lines(kind, ev, self.server) \
            or life.event_lines(kind, ev, self.nick, self.caps, self.server)
        if msgs and "account-tag" in self.caps:  # every line a user is the source of (INVITE, KICK, ...)
            msgs = [render.with_account(m) for m in msgs]
        return render.lines(msgs) if msgs else None

    def closing(self, reason: str, message_: str) -> bytes:
        return Message("ERROR", [f"Closing link: {message_}"]).serialize()

    def refused(self, message_: str) -> bytes:
        return self.closing("refused", message_)

    def session_expired(self) -> bytes:
        return message(self.server, "NOTICE", self.nick,
                       "your session ended; reconnect to log in again").serialize()

    def shutdown(self) -> bytes:
        return Message("ERROR", ["Closing link: the realm is shutting down"]).serialize()


Handler = Callable[["Session", IrcCodec, Message], Awaitable[bool | None]]


@dataclass(frozen=True, slots=True)
class Spec:
    """One command of the table and the rules run() applies before its handler."""

    handler: Handler
    min_params: int = 0  # fewer: 461
    before_welcome: bool = False  # usable before registration completes (else 451 until then)
    only_before: bool = False  # registration itself: 462 once registered


def _split_pass(password: str, nick: str) -> tuple[str, str]:
    """PASS account:password, or PASS password with the nick as account."""
    acct, colon, pw = password.partition(":")
    if colon and is_valid_nick(acct):
        return acct, pw
    return nick, password


# A refused join's reason (ChatError.reason, set by main) -> its numeric.
JOIN_NUMERIC = {JOIN_BANNED: N.ERR_BANNEDFROMCHAN, JOIN_KEY: N.ERR_BADCHANNELKEY, JOIN_INVITE: N.ERR_INVITEONLYCHAN}


class IrcCommands:
    """The IRC command table: each command -> its handler; run() applies the shared rules
    (registration first, typed errors to numerics or notices)."""

    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.up = realm.upstream
        pre = {"before_welcome": True}
        self.table: dict[str, Spec] = {
            "CAP": Spec(self.cap, **pre), "NICK": Spec(self.nick, **pre),
            "USER": Spec(self.user, 4, only_before=True, **pre), "PASS": Spec(self.pass_, 1, only_before=True, **pre),
            "AUTHENTICATE": Spec(self.authenticate, 1, **pre), "REGISTER": Spec(self.register, 2, **pre),
            "PING": Spec(self.ping, **pre), "PONG": Spec(self.pong, **pre), "QUIT": Spec(self.quit, **pre),
            "PRIVMSG": Spec(self.privmsg), "NOTICE": Spec(self.notice), "JOIN": Spec(self.join, 1),
            "PART": Spec(self.part, 1), "NAMES": Spec(self.names), "TOPIC": Spec(self.topic, 1),
            "MOTD": Spec(self.motd), "WHOIS": Spec(self.whois),
            "AWAY": Spec(self.away), "LIST": Spec(self.list_), "KICK": Spec(self.kick, 2),
            "INVITE": Spec(self.invite, 2),
        }
        v3 = Features(self)  # IRCv3 message features (irc/features.py)
        self.table.update({"REDACT": Spec(v3.redact, 2), "TAGMSG": Spec(v3.tagmsg, 1),
                           "MARKREAD": Spec(v3.markread), "SEARCH": Spec(v3.search, 1)})
        self.v3 = v3
        self.table["CHATHISTORY"] = Spec(chathistory.ChatHistory(self).chathistory, 1)
        # Channel modes and WHO/WHOX (irc/modes.py, irc/who.py).
        self.table.update({"MODE": Spec(Modes(self).mode, 1), "WHO": Spec(Who(self).who)})

    # ---- running -----------------------------------------------------------------------------

    @staticmethod
    def send(s: Session, *msgs: Message, tag: Tag | None = None) -> None:
        """Every answer of a command goes through here, so a labelled one can be held whole."""
        c = s.codec
        if isinstance(c, IrcCodec) and c.capture is not None:
            c.capture.extend(msgs)
            if tag is not None:
                c.capture_tags.append(tag)
            return
        s.send(render.lines(msgs), tag)

    def num(self, s: Session, c: IrcCodec, code: N, *params: str) -> None:
        self.send(s, reply(code, c.nick, *params, source=c.server))

    async def run(self, s: Session, cmd: Message | IrcParseError) -> bool:
        """Runs one command. False: close the connection. With labeled-response, a command
        carrying a `label` tag has its own lines held and sent labelled once it ends; events
        pushed meanwhile go out as they come (Session.send_event), outside the batch."""
        c = s.codec
        assert isinstance(c, IrcCodec)
        # Registration is not labelled: its catch-up pages wait for each other to be written.
        label = cmd.tags.get("label") if c.registered and "labeled-response" in c.caps else None
        if not label:
            return await self._run(s, c, cmd)
        if len(label.encode()) > labels.LABEL_MAX:
            self.send(s, standard_reply("FAIL", cmd.command if isinstance(cmd, Message) else "*", "INVALID_LABEL",
                                        description="label too long",
                                        source=c.server))
            return True
        c.capture, c.capture_tags = [], []
        try:
            return await self._run(s, c, cmd)
        finally:
            held, tags = c.capture, c.capture_tags
            c.capture, c.capture_tags = None, []
            c.batches += 1
            s.send(render.lines(labels.labelled(label, held, c.server, f"L{c.batches}")))
            for t in tags:  # reported written once the lines before them are
                s.send(b"", t)

    async def _run(self, s: Session, c: IrcCodec, cmd: Message | IrcParseError) -> bool:
        if isinstance(cmd, IrcParseError):
            answer = cmd.reply(c.nick, c.server)
            if answer is not None:
                self.send(s, answer)
            command_metric("irc", f"ERR_{cmd.numeric}").inc()
            return True
        spec = self.table.get(cmd.command)
        if spec is None:
            command_metric("irc", "ERR_421").inc()
            self.num(s, c, N.ERR_UNKNOWNCOMMAND, cmd.command[:32])
            return True
        verb = "irc_" + cmd.command.lower()
        refusal = self._refusal(spec, c, cmd)
        if refusal is not None:
            command_metric(verb, f"ERR_{refusal.value}").inc()
            self.num(s, c, refusal, *([cmd.command] if refusal is N.ERR_NEEDMOREPARAMS else []))
            return True
        try:
            keep = await spec.handler(s, c, cmd)
        except ChatError as exc:
            command_metric(verb, exc.code.value).inc()
            self.send(s, message(c.server, "NOTICE", c.nick, f"{cmd.command}: {exc.message}"))
            return True
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as exc:
            unexpected(f"IRC command {cmd.command} failed", exc)
            self.send(s, numeric(N.ERR_UNKNOWNERROR, c.nick, cmd.command, "internal error in the realm; try again",
                                 source=c.server))
            return True
        command_metric(verb, "OK").inc()
        return keep is not False

    @staticmethod
    def _refusal(spec: Spec, c: IrcCodec, cmd: Message) -> N | None:
        """The numeric a command gets before its handler runs, if any."""
        if not c.registered and not spec.before_welcome:
            return N.ERR_NOTREGISTERED
        if spec.only_before and c.registered:
            return N.ERR_ALREADYREGISTERED
        if len(cmd.params) < spec.min_params:
            return N.ERR_NEEDMOREPARAMS
        return None

    # ---- registration ------------------------------------------------------------------------

    async def cap(self, s: Session, c: IrcCodec, m: Message) -> None:
        sub = m.params[0].upper() if m.params else ""
        target = c.nick
        if sub == "LS":
            if not c.registered:
                c.cap_pending = True
            v302 = len(m.params) > 1 and m.params[1].isdigit() and int(m.params[1]) >= 302
            caps = " ".join(f"{k}={CAP_VALUES[k]}" if v302 and k in CAP_VALUES else k for k in CAPS)
            self.send(s, message(c.server, "CAP", target, "LS", caps))
        elif sub == "LIST":
            self.send(s, message(c.server, "CAP", target, "LIST", " ".join(sorted(c.caps))))
        elif sub == "REQ":
            if not c.registered:
                c.cap_pending = True
            asked = m.params[1].split() if len(m.params) > 1 else []
            names = [a[1:] if a.startswith("-") else a for a in asked]
            if not asked or any(n not in CAPS for n in names):
                self.send(s, message(c.server, "CAP", target, "NAK", " ".join(asked)))
                return
            caps = set(c.caps)
            for a in asked:
                if a.startswith("-"):
                    caps.discard(a[1:])
                else:
                    caps.add(a)
            c.caps = frozenset(caps)
            self.send(s, message(c.server, "CAP", target, "ACK", " ".join(asked)))
        elif sub == "END":
            c.cap_pending = False
            await self._try_welcome(s, c)
        else:
            self.send(s, numeric("410", c.nick, sub[:32] or "*", "Invalid CAP command", source=c.server))

    async def nick(self, s: Session, c: IrcCodec, m: Message) -> None:
        if not m.params or not m.params[0]:
            self.num(s, c, N.ERR_NONICKNAMEGIVEN)
            return
        new = m.params[0]
        if not is_valid_nick(new):
            self.num(s, c, N.ERR_ERRONEUSNICKNAME, new[:64])
            return
        if s.authed:
            if name_key(new) != name_key(s.user):
                # The nick is the account: another nick is another account (another connection).
                # 400 NICK as ergo answers with its nicks locked to accounts: clients show the
                # text and keep their nick (433 would send some looking for another one).
                self.send(s, numeric(N.ERR_UNKNOWNERROR, c.nick, "NICK", NICK_IS_ACCOUNT, source=c.server))
            return
        c.nick = new
        await self._try_welcome(s, c)

    async def user(self, s: Session, c: IrcCodec, m: Message) -> None:
        if not m.params[0] or not m.params[3]:  # an empty username or realname is a missing one
            self.num(s, c, N.ERR_NEEDMOREPARAMS, "USER")
            return
        c.user_given = True
        await self._try_welcome(s, c)

    async def pass_(self, s: Session, c: IrcCodec, m: Message) -> None:
        c.password = m.params[0]
        if c.nick != "*" and c.user_given and not c.cap_pending:
            await self._try_welcome(s, c)  # PASS after NICK and USER: a (re)try by hand

    async def _login(self, s: Session, c: IrcCodec, account: str, password: str) -> None:
        """Logs in as every protocol does (realm_server/logins.py: the same limits, locks, attach)."""
        await self.realm.logins.login(s, account, password)
        self._nick_is_account(s, c)

    @staticmethod
    def _nick_is_account(s: Session, c: IrcCodec) -> None:
        # Logins all come before 001, which names the nick: clients take it from there, and a
        # NICK line before 001 is one no client expects.
        c.nick = s.user

    async def _try_welcome(self, s: Session, c: IrcCodec) -> None:
        if c.registered or c.cap_pending or c.nick == "*" or not c.user_given:
            return
        if not s.authed:
            if c.password is None:
                self.send(s, message(c.server, "NOTICE", c.nick,
                                     "log in first: PASS account:password (or SASL PLAIN); "
                                     "new here? REGISTER * * PASSWORD creates the account of your nick"))
                return
            account, password = _split_pass(c.password, c.nick)
            c.password = None
            try:
                await self._login(s, c, account, password)
            except Unauthenticated:
                self.num(s, c, N.ERR_PASSWDMISMATCH)
                self.send(s, message(c.server, "NOTICE", c.nick, REGISTER_HINT))
                return
        await self._welcome(s, c)

    async def authenticate(self, s: Session, c: IrcCodec, m: Message) -> None:
        arg = m.params[0]
        if s.authed:
            self.num(s, c, N.ERR_SASLALREADY)
            return
        if arg == "*":
            c.sasl_mech, c.sasl_buf = None, ""
            self.num(s, c, N.ERR_SASLABORTED)
            return
        if c.sasl_mech is None:
            if arg.upper() != "PLAIN":
                self.send(s, numeric(N.RPL_SASLMECHS, c.nick, "PLAIN", "are available SASL mechanisms",
                                     source=c.server))
                self.num(s, c, N.ERR_SASLFAIL)
                return
            c.sasl_mech = "PLAIN"
            self.send(s, message(c.server, "AUTHENTICATE", "+"))
            return
        if arg != "+":
            c.sasl_buf += arg
            # 905 is for one line over 400 bytes (the SASL 3.1 spec); an exchange that grows past
            # SASL_MAX in 400-byte lines simply fails (904).
            if len(arg) > SASL_CHUNK or len(c.sasl_buf) > SASL_MAX:
                c.sasl_mech, c.sasl_buf = None, ""
                self.num(s, c, N.ERR_SASLTOOLONG if len(arg) > SASL_CHUNK else N.ERR_SASLFAIL)
                return
            if len(arg) == SASL_CHUNK:
                return  # more follows
        data, c.sasl_mech, c.sasl_buf = c.sasl_buf, None, ""
        try:
            parts = base64.b64decode(data, validate=True).decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError):
            parts = []
        if len(parts) != 3 or not parts[1]:
            self.num(s, c, N.ERR_SASLFAIL)
            return
        authzid, authcid, password = parts
        if authzid and name_key(authzid) != name_key(authcid):
            self.num(s, c, N.ERR_SASLFAIL)
            return
        try:
            await self._login(s, c, authcid, password)
        except Unauthenticated:
            self.num(s, c, N.ERR_SASLFAIL)
            self.send(s, message(c.server, "NOTICE", c.nick, REGISTER_HINT))
            return
        except ChatError as exc:
            self.num(s, c, N.ERR_SASLFAIL)
            self.send(s, message(c.server, "NOTICE", c.nick, exc.message))
            return
        self.send(s, numeric(N.RPL_LOGGEDIN, c.nick, render.mask(c.nick), s.user,
                             f"You are now logged in as {s.user}", source=c.server),
                  reply(N.RPL_SASLSUCCESS, c.nick, source=c.server))
        await self._try_welcome(s, c)

    async def register(self, s: Session, c: IrcCodec, m: Message) -> None:
        """draft/account-registration: REGISTER <account|*> <email|*> <password> (or without
        the email); the account is created as by every protocol (realm_server/logins.py), then logged in."""
        account, password = m.params[0], m.params[-1]
        if account == "*":
            account = c.nick
        if s.authed:
            self.send(s, standard_reply("FAIL", "REGISTER", "ALREADY_AUTHENTICATED", account,
                                        description="you are logged in already", source=c.server))
            return
        if account == "*":
            self.send(s, standard_reply("FAIL", "REGISTER", "NEED_NICK", "*",
                                        description="send NICK first (the nick is the account)", source=c.server))
            return
        try:
            await self.realm.logins.register(s, account, password)
        except AlreadyExists as exc:
            self.send(s, standard_reply("FAIL", "REGISTER", "ACCOUNT_EXISTS", account, description=exc.message,
                                        source=c.server))
            return
        except ChatError as exc:
            code = "WEAK_PASSWORD" if "password" in exc.message else "BAD_ACCOUNT_NAME" \
                if "name" in exc.message else "TEMPORARILY_UNAVAILABLE"
            self.send(s, standard_reply("FAIL", "REGISTER", code, account, description=exc.message,
                                        source=c.server))
            return
        await self._login(s, c, account, password)
        self.send(s, message(c.server, "REGISTER", "SUCCESS", s.user, "account created, you are logged in"))
        await self._try_welcome(s, c)

    async def _welcome(self, s: Session, c: IrcCodec) -> None:
        c.registered = True
        c.watcher = markers.Watcher(self.up, s, c)
        me, srv = c.nick, c.server
        self.send(s, numeric(N.RPL_WELCOME, me, f"Welcome to realmchat, {render.mask(me)}", source=srv),
                  numeric(N.RPL_YOURHOST, me, f"Your host is {srv}, running realmchat", source=srv),
                  numeric(N.RPL_CREATED, me, "This realm is part of a realmchat network", source=srv),
                  numeric(N.RPL_MYINFO, me, srv, "realmchat", "i", "kqo", source=srv),
                  *isupport(me, [("CASEMAPPING", CASEMAPPING), ("CHANTYPES", CHANTYPES),
                                 ("PREFIX", "(qo)~@"), ("CHANMODES", "b,k,,i"), ("NICKLEN", str(NICKLEN)),
                                 ("CHANNELLEN", str(CHANNELLEN)), ("TOPICLEN", str(TOPICLEN)),
                                 ("TARGMAX", f"PRIVMSG:{TARGMAX},NOTICE:{TARGMAX},JOIN:{TARGMAX},"
                                             f"PART:{TARGMAX}"),
                                 ("NETWORK", "realmchat"), ("MODES", str(MAX_CHANGES)),
                                 ("WHOX", None), ("CHATHISTORY", str(chathistory.LIMIT_MAX)),
                                 ("MSGREFTYPES", "msgid,timestamp")], source=srv))
        self._motd(s, c)
        groups = await self._rejoin(s, c)
        await self._catch_up(s, c, groups)

    def _motd(self, s: Session, c: IrcCodec) -> None:
        self.send(s, numeric(N.RPL_MOTDSTART, c.nick, f"- {c.server} Message of the day -", source=c.server),
                  numeric(N.RPL_MOTD, c.nick, f"- realmchat realm {c.server}: channels are groups "
                                              f"(#name), nicks are accounts", source=c.server),
                  reply(N.RPL_ENDOFMOTD, c.nick, source=c.server))

    async def motd(self, s: Session, c: IrcCodec, m: Message) -> None:
        self._motd(s, c)

    async def _rejoin(self, s: Session, c: IrcCodec) -> list[str]:
        """The groups the account is in, shown as channels joined (membership is the account's)."""
        r = await self.up.call("ListGroups", pb.ListGroupsRequest(), s.token)
        groups = [g.group for g in r.groups]
        reads = None
        if markers.CAP in c.caps and groups:  # one Conversations call for every channel's marker
            try:
                reads = await markers.group_reads(self.up, s.token)
            except ChatError:
                reads = None
        for g in groups[:MAX_REJOIN]:
            await self._joined(s, c, g, reads)
        return groups

    async def _catch_up(self, s: Session, c: IrcCodec, groups: list[str]) -> None:
        """What waits undelivered, as a reconnecting client would fetch it: the inbox, then each
        group's; shown as PRIVMSGs with their original time."""
        requests: list[tuple[str, pb.InboxRequest | pb.GroupRequest]] = [("Inbox", pb.InboxRequest())]
        requests += [("InboxGroup", pb.GroupRequest(group=g)) for g in groups]
        for method, request in requests:
            for _ in range(MAX_CATCH_UP_PAGES):
                if not await self._page(s, c, method, request):
                    break

    async def _page(self, s: Session, c: IrcCodec, method: str, request: object) -> bool:
        """One inbox page written as one delivery (delivery.page_tag); True if more wait."""
        sid = s.session_id

        def gave_up(r: pb.MessageList) -> None:  # main answered after our deadline: not written
            if (tag := late_page(r.delivery_link, r.delivery, sid)) is not None:
                self.up.report([], [tag])

        await self.up.wait_linked(self.up.timeout)
        r = await self.up.call(method, request, s.token, on_late=gave_up)
        out: list[Message] = []
        for m in r.messages:
            if not s.first_sight(m.id):
                continue  # pushed to this connection already
            out.extend(render.message_lines(render.dated(m, c.caps), c.nick, c.caps))
        tag = page_tag(r.delivery_link, r.delivery, sid, s.user, (m.id for m in r.messages))
        self.send(s, *out, tag=tag)
        if r.more and r.messages:  # (an empty page with more would only repeat itself)
            # The next page is asked for once this one is reported written (else it is the same).
            await s.settled(5.0)
            await self.up.flush_reports()
        return r.more and bool(r.messages)

    # ---- connection --------------------------------------------------------------------------

    async def ping(self, s: Session, c: IrcCodec, m: Message) -> None:
        if not m.params:
            self.num(s, c, N.ERR_NOORIGIN)
            return
        self.send(s, message(c.server, "PONG", c.server, m.params[0]))

    async def pong(self, s: Session, c: IrcCodec, m: Message) -> None:
        return None

    async def quit(self, s: Session, c: IrcCodec, m: Message) -> bool:
        reason = m.params[0] if m.params else "Client Quit"
        self.send(s, Message("ERROR", [f"Closing link: {render.mask(c.nick)} (Quit: {reason})"]))
        return False

    # ---- messages ----------------------------------------------------------------------------

    async def privmsg(self, s: Session, c: IrcCodec, m: Message) -> None:
        await self._send_text(s, c, m, quiet=False)

    async def notice(self, s: Session, c: IrcCodec, m: Message) -> None:
        await self._send_text(s, c, m, quiet=True)  # NOTICE gets no error replies (RFC 1459)

    async def _send_text(self, s: Session, c: IrcCodec, m: Message, quiet: bool) -> None:
        if not m.params or not m.params[0]:
            if not quiet:
                self.num(s, c, N.ERR_NORECIPIENT)
            return
        if len(m.params) < 2 or not m.params[1]:
            if not quiet:
                self.num(s, c, N.ERR_NOTEXTTOSEND)
            return
        if await self.v3.tagged_text(s, c, m, quiet):
            return
        text = m.params[1]
        for target in m.params[0].split(",")[:TARGMAX]:
            try:
                if target.startswith(CHANTYPES):
                    group = channel_to_group(target)
                    if group is None:
                        raise NotFound(target)
                    r = await self.up.call("SendGroup", pb.SendGroupRequest(group=group, text=text), s.token)
                elif is_valid_nick(target):
                    r = await self.up.call("SendPrivate", pb.SendPrivateRequest(to=target, text=text), s.token)
                else:
                    raise NotFound(target)
            except NotFound:
                if not quiet:
                    self.num(s, c, N.ERR_NOSUCHCHANNEL if target.startswith(CHANTYPES) else N.ERR_NOSUCHNICK,
                             target[:64])
                continue
            except PermissionDenied as exc:
                if not quiet:
                    self.send(s, numeric(N.ERR_CANNOTSENDTOCHAN, c.nick, target, exc.message, source=c.server))
                continue
            except ChatError as exc:
                if not quiet:
                    self.send(s, message(c.server, "NOTICE", c.nick, f"{target}: {exc.message}"))
                continue
            to_self = not target.startswith(CHANTYPES) and fold(target) == fold(c.nick)
            if "echo-message" not in c.caps and not to_self:
                continue
            tags: dict[str, str] = {}
            if "server-time" in c.caps:
                tags["time"] = render.server_time(r.ts)
            if "message-tags" in c.caps:
                tags["msgid"] = str(r.id)
            lines = render.text_lines(render.mask(c.nick), m.command, target, text, tags)
            if "echo-message" in c.caps:
                self.send(s, *lines)
            if to_self:
                # The target's copy of a message to one's own nick (main does not push it to the
                # session that sent it): like any delivery, never part of a labelled answer.
                s.send_event(render.lines(lines))

    # ---- channels ----------------------------------------------------------------------------

    async def _joined(self, s: Session, c: IrcCodec, group: str, reads: dict[str, int] | None = None) -> None:
        """JOIN, the topic, the read marker (draft/read-marker) and the names, as a server
        answers a join. reads: the markers by group name_key, when the caller has them."""
        chan = group_to_channel(group)
        self.send(s, notify.join_line(c.nick, chan, c.caps))
        try:
            t = await self.up.call("Topic", pb.TopicRequest(group=group), s.token)
            if topic := render.topic_numerics(c.nick, c.server, chan, t):
                self.send(s, *topic)
        except ChatError:
            pass
        if markers.CAP in c.caps:
            try:
                self.send(s, await markers.on_join(self.up, s.token, c.server, chan, group, reads))
            except ChatError:
                pass  # main away: the names still follow, and MARKREAD asks again
        await self._names(s, c, chan)

    async def join(self, s: Session, c: IrcCodec, m: Message) -> None:
        keys = m.params[1].split(",") if len(m.params) > 1 else []
        for i, chan in enumerate(m.params[0].split(",")[:TARGMAX]):
            group = channel_to_group(chan)
            if group is None:
                self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
                continue
            key = keys[i] if i < len(keys) else ""
            try:
                r = await self._join_or_create(s, group, key)
            except AlreadyExists as exc:  # the name is a user's: users and groups share names
                self.send(s, numeric(N.ERR_NOSUCHCHANNEL, c.nick, chan, exc.message, source=c.server))
                continue
            except PermissionDenied as exc:
                code = JOIN_NUMERIC.get(exc.reason, N.ERR_INVITEONLYCHAN)
                self.send(s, numeric(code, c.nick, chan, exc.message, source=c.server))
                continue
            except ResourceExhausted as exc:
                self.send(s, numeric(N.ERR_TOOMANYCHANNELS, c.nick, chan, exc.message, source=c.server))
                continue
            await self._joined(s, c, r.group)

    async def _join_or_create(self, s: Session, group: str, key: str) -> pb.GroupResponse:
        try:
            return await self.up.call("JoinGroup", pb.JoinGroupRequest(group=group, key=key), s.token)
        except NotFound:
            pass
        # IRC semantics: joining an unknown channel creates it, the joiner its owner.
        try:
            r = await self.up.call("CreateGroup", pb.CreateGroupRequest(group=group, mode="public"), s.token)
        except AlreadyExists as taken:
            try:  # made by someone else meanwhile: join it
                return await self.up.call("JoinGroup", pb.JoinGroupRequest(group=group, key=key), s.token)
            except NotFound:
                raise taken from None  # still none: the name is taken by a user
        if key:
            await self.up.call("GroupKey", pb.GroupKeyRequest(group=r.group, key=key), s.token)
        return r

    async def part(self, s: Session, c: IrcCodec, m: Message) -> None:
        reason = m.params[1] if len(m.params) > 1 else ""
        for chan in m.params[0].split(",")[:TARGMAX]:
            group = channel_to_group(chan)
            if group is None:
                self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
                continue
            try:
                r = await self.up.call("LeaveGroup", pb.GroupRequest(group=group), s.token)
            except NotFound:
                self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
                continue
            except PermissionDenied as exc:
                if exc.reason == NOT_MEMBER:
                    self.num(s, c, N.ERR_NOTONCHANNEL, chan[:64])
                else:  # the owner: realmchat groups keep their owner (DELETE is the way out)
                    self.send(s, message(c.server, "NOTICE", c.nick, f"{chan}: {exc.message}"))
                continue
            params = [group_to_channel(r.group), reason] if reason else [group_to_channel(r.group)]
            self.send(s, message(render.mask(c.nick), "PART", *params))

    async def _members(self, s: Session, group: str) -> list[pb.Member]:
        r = await self.up.call("Members", pb.GroupRequest(group=group), s.token)
        return list(r.members)

    async def _names(self, s: Session, c: IrcCodec, chan: str) -> None:
        group = channel_to_group(chan)
        members: list[pb.Member] = []
        if group is not None:
            try:
                members = await self._members(s, group)
            except (NotFound, PermissionDenied):
                members = []
        prefix = {"owner": "~", "admin": "@"}
        full = "userhost-in-names" in c.caps
        names = [prefix.get(mb.role, "") + (render.mask(mb.user) if full else mb.user) for mb in members]
        fixed = len(numeric(N.RPL_NAMREPLY, c.nick, "=", chan, "", source=c.server).serialize())
        line: list[str] = []
        used = fixed
        for n in names:
            if line and used + len(n) + 1 > 500:
                self.send(s, numeric(N.RPL_NAMREPLY, c.nick, "=", chan, " ".join(line), source=c.server))
                line, used = [], fixed
            line.append(n)
            used += len(n) + 1
        if line:
            self.send(s, numeric(N.RPL_NAMREPLY, c.nick, "=", chan, " ".join(line), source=c.server))
        self.num(s, c, N.RPL_ENDOFNAMES, chan[:64])

    async def names(self, s: Session, c: IrcCodec, m: Message) -> None:
        if not m.params:
            self.num(s, c, N.RPL_ENDOFNAMES, "*")
            return
        for chan in m.params[0].split(",")[:TARGMAX]:
            await self._names(s, c, chan)

    async def topic(self, s: Session, c: IrcCodec, m: Message) -> None:
        chan = m.params[0]
        group = channel_to_group(chan)
        if group is None:
            self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        setting = len(m.params) > 1
        request = pb.TopicRequest(group=group, topic=m.params[1].strip(), set=True) if setting \
            else pb.TopicRequest(group=group)
        try:
            r = await self.up.call("Topic", request, s.token)
        except NotFound:
            self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        except PermissionDenied as exc:
            code = N.ERR_NOTONCHANNEL if exc.reason == NOT_MEMBER else N.ERR_CHANOPRIVSNEEDED
            self.num(s, c, code, chan[:64])
            return
        chan = group_to_channel(r.group)
        if setting:
            self.send(s, message(render.mask(c.nick), "TOPIC", chan, r.topic))
        elif r.topic:
            self.send(s, *render.topic_numerics(c.nick, c.server, chan, r))
        else:
            self.num(s, c, N.RPL_NOTOPIC, chan)

    # ---- users and rooms -----------------------------------------------------------------------

    async def whois(self, s: Session, c: IrcCodec, m: Message) -> None:
        """Who is online where (realmchat shows presence, not hosts); offline: 401."""
        if not m.params:
            self.num(s, c, N.ERR_NONICKNAMEGIVEN)
            return
        nick = m.params[-1]
        r = await self.up.call("Who", pb.WhoRequest(), s.token)
        found = next((p for p in r.online if name_key(p.user) == name_key(nick)), None)
        if found is None:
            self.num(s, c, N.ERR_NOSUCHNICK, nick[:64])
        else:
            self.send(s, numeric(N.RPL_WHOISUSER, c.nick, found.user, found.user, render.HOST, "*", found.user,
                                 source=c.server),
                      numeric(N.RPL_WHOISSERVER, c.nick, found.user, found.realm, "realmchat realm",
                              source=c.server))
            if found.status == "away":
                self.send(s, numeric(N.RPL_AWAY, c.nick, found.user, found.message or "away", source=c.server))
        self.num(s, c, N.RPL_ENDOFWHOIS, nick[:64])

    async def away(self, s: Session, c: IrcCodec, m: Message) -> None:
        text = m.params[0].strip() if m.params else ""
        await self.up.call("SetStatus", pb.SetStatusRequest(away=bool(text), message=text), s.token)
        self.num(s, c, N.RPL_NOWAWAY if text else N.RPL_UNAWAY)

    async def list_(self, s: Session, c: IrcCodec, m: Message) -> None:
        """The groups one may see (listgroups); a mask param is the realm's pattern (* and ?)."""
        pattern = m.params[0] if m.params and not m.params[0].startswith(CHANTYPES) else \
            (m.params[0][1:] if m.params else "")
        r = await self.up.call("BrowseGroups", pb.BrowseGroupsRequest(pattern=pattern), s.token)
        self.send(s, numeric(N.RPL_LISTSTART, c.nick, "Channel", "Users Name", source=c.server))
        for g in r.groups:
            self.send(s, numeric(N.RPL_LIST, c.nick, group_to_channel(g.group), str(g.members), g.topic or " ",
                                 source=c.server))
        self.num(s, c, N.RPL_LISTEND)

    async def kick(self, s: Session, c: IrcCodec, m: Message) -> None:
        chan, nick = m.params[0], m.params[1]
        reason = m.params[2] if len(m.params) > 2 else ""
        group = channel_to_group(chan)
        if group is None:
            self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        try:
            r = await self.up.call("Kick", pb.MemberRequest(group=group, user=nick, reason=reason), s.token)
        except NotFound:
            self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        except PermissionDenied as exc:
            self.send(s, numeric(N.ERR_CHANOPRIVSNEEDED, c.nick, chan, exc.message, source=c.server))
            return
        self.send(s, message(render.mask(c.nick), "KICK", group_to_channel(r.group), r.user, reason or c.nick))

    async def invite(self, s: Session, c: IrcCodec, m: Message) -> None:
        nick, chan = m.params[0], m.params[1]
        group = channel_to_group(chan)
        if group is None:
            self.num(s, c, N.ERR_NOSUCHCHANNEL, chan[:64])
            return
        try:
            r = await self.up.call("Invite", pb.MemberRequest(group=group, user=nick), s.token)
        except NotFound as exc:
            code = N.ERR_NOSUCHCHANNEL if exc.reason == NO_GROUP else N.ERR_NOSUCHNICK
            self.num(s, c, code, (chan if code == N.ERR_NOSUCHCHANNEL else nick)[:64])
            return
        except PermissionDenied as exc:
            self.send(s, numeric(N.ERR_CHANOPRIVSNEEDED, c.nick, chan, exc.message, source=c.server))
            return
        self.send(s, numeric(N.RPL_INVITING, c.nick, r.user, group_to_channel(r.group), source=c.server))
