"""Domain logic of the main server. Plain arguments in, records out, realmchat.errors raised;
the gRPC servicer is only a translation layer over this."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import logging
import re
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realmchat.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from realmchat.names import check_name, name_key
from realmchat.pb import chat_pb2 as pb
from realmchat.ratelimit import AttemptLimiter
from realmchat.textproto import HISTORY_MAX, base_file_name

from . import presence, rooms
from .blobs import BlobStore
from .cluster import Cluster
from .config import MainConfig
from .hub import Channel, Hub
from .ledger import Entry, Outcome
from .loginguard import TARPIT_S, GroupKeyGuard, LoginGuard, parse_networks
from .metrics import MESSAGES
from .password_policy import MAX_PASSWORD, check_password
from .passwords import PasswordHasher
from .storage.base import (
    BanRecord,
    ConversationRecord,
    FileRecord,
    GroupInfo,
    GroupRecord,
    MessageChange,
    MessageRecord,
    ReadMark,
    RoomChange,
    RoomInfo,
    SessionRecord,
    Storage,
    User,
    Waiting,
)
from .storage.searchtext import prefix_problem
from .uploads import UploadSlots

log = logging.getLogger(__name__)

PRIVATE_STORED, GROUP_STORED, FILES_STORED = (MESSAGES.labels(k) for k in ("private", "group", "file"))
BAD_LOGIN = "wrong user name or password"
REPUSH_DELAY_S = 0.05
PUSH_PENDING_MAX_BYTES = 32 * 1024  # well under any realm's per-connection send queue
BAD_TOKEN = "session expired or unknown: auth again"
UNKNOWN_TOKENS_MAX = 100_000  # negative cache of token hashes the database does not know
UNKNOWN_TOKENS_TTL_S = 300.0
TYPING_INTERVAL_S = 2.0  # at most one typing notice per user and conversation forwarded in this time
TYPING_EXPIRES_S = 5  # what clients are told: a typing notice stands for about this long
TYPING_MAX = 100_000  # bound on remembered (user, conversation) pairs


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """What an upload announces before its bytes."""

    to: str
    name: str
    size: int
    sha256: str = ""


RELINKING = "the realm is reconnecting to the main server; try again shortly"
WAITING_LISTED = 10  # conversations named in the waiting summary of a login; the rest are counted


@dataclass(frozen=True, slots=True)
class Login:
    """A successful auth: the token (only its hash is stored), the session, whether it was
    attached to the realm's link, and what waits undelivered for the user."""

    token: str
    session: SessionRecord
    attached: bool
    waiting: Waiting


@dataclass(frozen=True, slots=True)
class Page:
    """Messages for a reply. `delivery` (seq on link `delivery_link`): the realm reports back
    whether it wrote them to the client; until then they stay undelivered."""

    messages: list[MessageRecord]
    more: bool = False
    delivery: int = 0
    delivery_link: str = ""


def fit_bytes(msgs: list[MessageRecord], max_bytes: int, newest: bool = False) -> tuple[list[MessageRecord], bool]:
    """The oldest (or newest) messages whose encoded size stays under max_bytes (always at least
    one), so that no reply comes near the transport's message cap; and whether any were cut."""
    total = 0
    kept: list[MessageRecord] = []
    for m in reversed(msgs) if newest else msgs:
        size = len(m.text.encode()) + len(m.sender) + len(m.to) + len(m.group) + len(m.ts) + 32
        if kept and total + size > max_bytes:
            break
        total += size
        kept.append(m)
    return (kept[::-1] if newest else kept), len(kept) < len(msgs)


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member as `members` shows them: role from storage, presence from the hub."""

    user: str
    role: str
    online: bool
    realm: str


@dataclass(frozen=True, slots=True)
class Roster:
    """What `members` answers: the members, and for the group's owner and admins the bans in
    force (newest first, capped); None for everyone else, who are not told of them."""

    members: list[MemberView]
    banned: list[BanRecord] | None


GROUP_KEY_MAX = 64


def token_hash(token: str) -> str:
    # Only hashes of tokens are stored: a copy of the database does not hand out sessions.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the session and the hash of its token; via_realm when a realm
    (holding the realm credential) makes the call for the session's connection."""

    session: SessionRecord
    token_hash: str
    via_realm: bool = False

    @property
    def user(self) -> User:
        return User(self.session.user_key, self.session.user_name, "")


def message_pb(m: MessageRecord, mention: bool | None = None) -> pb.Message:
    """mention: the receiving user's flag when it differs from the record's (a live push)."""
    msg = pb.Message(**{"id": m.id, "from": m.sender, "to": m.to, "group": m.group, "text": m.text,
                        "ts": m.ts, "reply_to": m.reply_to, "edited": m.edited, "deleted": m.deleted,
                        "mention": m.mention if mention is None else mention})
    if m.reactions:  # none on a new message (the live push of every send)
        msg.reactions.extend(pb.Reaction(emoji=e, users=list(us)) for e, us in m.reactions)
    return msg


SEARCH_MAX = 50
SEARCH_WORDS_MAX = 16
EMOJI_MAX = 16
MENTIONS_MAX = 50
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,32})")
_WORD = re.compile(r"\w+\**|\*+")  # a word and the stars after it, or stars alone


def mentions_in(text: str) -> tuple[str, ...]:
    """Keys of the names written as @name (also without trailing . or -: "thanks @bob.")."""
    if "@" not in text:  # most messages: no regex scan
        return ()
    keys: set[str] = set()
    for m in _MENTION.finditer(text):
        name = m.group(1)
        keys.add(name_key(name))
        if (bare := name.rstrip(".-")) and bare != name:
            keys.add(name_key(bare))
        if len(keys) >= MENTIONS_MAX:
            break
    return tuple(sorted(keys))


def search_words(query: str) -> list[str]:
    """The words of a search query, lower case; one ending in `*` is a prefix (searchtext)."""
    words = [w.lower() for w in _WORD.findall(query)]
    if not words:
        raise InvalidArgument("search for at least one word (letters or digits)")
    for w in words:
        if "*" in w and (problem := prefix_problem(w)):
            raise InvalidArgument(problem)
    if len(words) > SEARCH_WORDS_MAX or any(len(w) > 64 for w in words):
        raise InvalidArgument(f"search for at most {SEARCH_WORDS_MAX} words of at most 64 characters")
    return words


def check_emoji(emoji: str) -> str:
    if not 1 <= len(emoji) <= EMOJI_MAX or any(c.isspace() or unicodedata.category(c) == "Cc" for c in emoji):
        raise InvalidArgument(f"a reaction is 1-{EMOJI_MAX} characters without spaces")
    return emoji


def file_pb(f: FileRecord) -> pb.FileInfo:
    return pb.FileInfo(**{"id": f.id, "from": f.sender, "to": f.to, "name": f.name, "size": f.size,
                          "sha256": f.sha256, "ts": f.ts, "group": f.group})


class ChatService:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, hasher: PasswordHasher,
                 blobs: BlobStore) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.hasher = hasher
        self.blobs = blobs
        # Token hash -> (session, monotonic time it expires): the TTL holds for cached sessions.
        self._sessions: dict[str, tuple[SessionRecord, float]] = {}
        # Token hashes just looked up and not found (a token flood): answered without storage.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self.bad_tokens = AttemptLimiter(config.bad_token_limit, config.bad_token_window_s,
                                         detail="calls with unknown tokens from your address are limited")
        self._delivered: list[Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._returned: set[str] = set()  # users with entries back in undelivered
        self._repusher: asyncio.Task[None] | None = None
        self._direct_calls = itertools.count(1)
        hub.on_outcome = self._on_outcome
        self.cluster: Cluster | None = None  # set when replicas share a PostgreSQL database
        # Hardening (docs/SECURITY.md): password attempts per account and per direct peer.
        self.logins = LoginGuard(config.login_max_failures, config.login_window_s, config.peer_login_attempts,
                                 config.peer_login_window_s, parse_networks(config.trusted_nets))
        self.group_keys = GroupKeyGuard(config.group_key_attempts, config.group_key_window_s)
        self.uploads = UploadSlots(config.max_uploads_per_user, config.max_uploads)
        # Conversation state: presence (coalesced, main_server/presence.py), away messages of
        # users online here or on other replicas, and when each typing notice was forwarded.
        self.presence = presence.Coalescer()
        self._status: dict[str, tuple[str, str]] = {}  # user key -> (away, message)
        self._typing: dict[tuple[str, str], float] = {}
        self._presence_tasks: set[asyncio.Task[None]] = set()
        self.presence_sent = 0  # presence events queued for sessions (bench, metrics)
        hub.on_presence = self._on_presence

    # ---- accounts and sessions -------------------------------------------------------------

    async def register(self, user: str, password: str, peer: str = "") -> User:
        check_name(user, "user")
        check_password(user, password, self.config.min_password_length)
        key = name_key(user)
        # Every registration costs a hash: counted per direct peer (a realm limits its clients
        # per IP). Not per account: racing registrations of one name get ALREADY_EXISTS.
        async with self.logins.attempt(user, peer, account=False):
            existing = await self.storage.get_user(key)
            if existing is not None:  # skip the slow hash when it is taken
                same = "" if existing.name == user else " (names ignore case)"
                raise AlreadyExists(f"user {existing.name!r} already exists{same}: pick another name")
            return await self.storage.create_user(key, user, await self.hasher.hash(password))

    async def auth(self, user: str, password: str, link_id: str, peer: str = "") -> Login:
        # Counted per account (and per direct peer) before the slow hash, one in flight at a
        # time. Unknown names are limited the same way: the answer tells nothing about which
        # accounts exist.
        async with self.logins.attempt(user, peer):
            record = await self.storage.get_user(name_key(user)) if len(user) <= 64 else None
            if (not await self.hasher.verify(record.pw_hash if record else None, password[:MAX_PASSWORD])
                    or not record):
                raise Unauthenticated(BAD_LOGIN)
        self.logins.succeeded(user, peer)
        # Counted before the session exists, so a failing count fails the login with nothing
        # left behind; it only counts (nothing is delivered or marked).
        waiting = await self.storage.waiting(record.key, WAITING_LISTED)
        channel = self.hub.channels.get(link_id) if link_id else None
        realm = channel.realm if channel else ""
        token = secrets.token_urlsafe(32)
        th = token_hash(token)
        session = await self.storage.create_session(th, record, realm)
        self._cache(th, session)
        if channel is not None:
            self.hub.attach(channel, session.id, session.user_key, session.user_name)
        return Login(token, session, channel is not None, waiting)

    def _cache(self, th: str, session: SessionRecord) -> None:
        if len(self._sessions) > 200_000:  # bounded cache; the database is the truth
            self._sessions.clear()
        ttl = self.config.session_ttl_s
        left = ttl - (time.time() - session.created) if session.created else ttl
        self._sessions[th] = (session, time.monotonic() + left)

    def _forget(self, th: str) -> None:
        """The token no longer works here: out of the cache, into the negative cache."""
        self._sessions.pop(th, None)
        self._unknown[th] = time.monotonic() + UNKNOWN_TOKENS_TTL_S
        self._unknown.move_to_end(th)
        while len(self._unknown) > UNKNOWN_TOKENS_MAX:
            self._unknown.popitem(last=False)

    async def caller(self, token: str, peer: str = "", via_realm: bool = False) -> Caller:
        if not token or len(token) > 200:
            raise Unauthenticated("missing or invalid token: call Auth and send 'authorization: Bearer TOKEN'")
        th = token_hash(token)
        now = time.monotonic()
        cached = self._sessions.get(th)
        if cached is not None:
            if now < cached[1]:
                return Caller(cached[0], th, via_realm)
            # Expired while cached: the TTL is checked on every use, not only on a lookup.
            self._forget(th)
            await self.storage.delete_session(th)
            raise Unauthenticated(BAD_TOKEN)
        # Unknown tokens: limited per direct peer, and answered from a bounded negative cache
        # without touching storage, so a flood of random tokens cannot slow anyone's writes.
        # Counted before the lookup and given back when the token is good, so concurrent
        # lookups cannot all pass the check first.
        pk = self.logins.peer_key(peer)
        try:
            self.bad_tokens.check(pk)
        except ResourceExhausted:
            await asyncio.sleep(TARPIT_S)
            raise
        self.bad_tokens.fail(pk)
        until = self._unknown.get(th)
        if until is not None:
            if now < until:
                raise Unauthenticated(BAD_TOKEN)
            del self._unknown[th]
        session = await self.storage.get_session(th, self.config.session_ttl_s)
        if session is None:
            self._forget(th)
            raise Unauthenticated(BAD_TOKEN)
        self.bad_tokens.refund(pk)
        self._cache(th, session)
        return Caller(session, th, via_realm)

    async def logout(self, caller: Caller) -> None:
        self._forget(caller.token_hash)
        self.hub.detach(caller.session.id, caller.session.user_key)
        await self.storage.delete_session(caller.token_hash)
        if self.cluster is not None:
            # The other replicas may have the session cached: they drop it at once.
            self.cluster.publish({"k": "lo", "h": caller.token_hash, "s": caller.session.id,
                                  "uk": caller.session.user_key})

    def attach(self, caller: Caller, link_id: str) -> None:
        channel = self.hub.channels.get(link_id)
        if channel is None:
            raise NotFound("unknown link: it has closed; open a new Link")
        self.hub.attach(channel, caller.session.id, caller.session.user_key, caller.session.user_name)

    async def resume(self, tokens: list[str], channel: Channel) -> list[int]:
        ids: list[int] = []
        for token in tokens:
            try:
                c = await self.caller(token)
            except Unauthenticated:
                ids.append(0)
                continue
            self.hub.attach(channel, c.session.id, c.session.user_key, c.session.user_name)
            ids.append(c.session.id)
            await self._push_pending(c.session.user_key)
        return ids

    async def _push_pending(self, user_key: str) -> None:
        """Pushes the user's undelivered messages to their attached sessions, as if live: a
        resumed session (what arrived while its realm was cut off) or a user whose delivery was
        dropped while they still have a connection. Nothing in flight is pushed twice."""
        ledger = self.hub.ledger
        ledger.begin_read(user_key)
        msgs: list[MessageRecord] = []
        try:
            msgs = await self.storage.peek_pending(user_key, self.config.inbox_page)
        finally:
            fresh = set(ledger.end_read(user_key, [m.id for m in msgs]))
        # A bounded burst: a connection's send queue must not overflow on it (what is left waits
        # for inbox, which pages).
        for m in fit_bytes([m for m in msgs if m.id in fresh], PUSH_PENDING_MAX_BYTES)[0]:
            self._push_message(m, [user_key], {user_key}, exclude_session=0, publish=False)

    def _push_message(self, m: MessageRecord, users: list[str], track: set[str] | frozenset[str] | list[str],
                      exclude_session: int, publish: bool = True, mentioned: Iterable[str] = ()) -> None:
        named = set(mentioned)
        # Users the text names get the message flagged ("mention": true): a push of its own.
        plain, flagged = [u for u in users if u not in named], [u for u in users if u in named]
        for group_users, flag in ((plain, None), (flagged, True)):
            if not group_users:
                continue
            p = message_pb(m, flag)
            if m.group:
                self.hub.push(group_users, lambda ev, p=p: ev.group.CopyFrom(p), exclude_session, m.id,
                              frozenset(track))
            else:
                self.hub.push(group_users, lambda ev, p=p: ev.private.CopyFrom(p), exclude_session, m.id,
                              frozenset(track))
        if publish and self.cluster is not None:
            self.cluster.publish_message(m.id, users, list(track), exclude_session, named)

    async def on_notice(self, notice: dict[str, Any]) -> None:
        """Another replica stored something for users who may be attached here, or ended a session."""
        if notice["k"] == "lo":
            self._forget(notice["h"])
            self.hub.detach(notice["s"], notice["uk"])
            return
        if notice["k"] == "st":
            if notice["s"] == presence.AWAY:
                self._status[notice["uk"]] = (presence.AWAY, notice["m"])
            else:
                self._status.pop(notice["uk"], None)
            return
        local = [u for u in notice["u"] if self.hub.is_online(u)]
        if not local:
            return
        if notice["k"] == "m":
            for m in await self.storage.get_messages([notice["id"]]):
                self._push_message(m, local, [u for u in notice["t"] if u in local], notice["x"], publish=False,
                                   mentioned=notice.get("n", ()))
        elif notice["k"] == "ev":
            ev = pb.Event.FromString(base64.b64decode(notice["e"]))
            self.hub.push(local, lambda e: e.MergeFrom(ev), notice["x"])
        elif notice["k"] == "f":
            record = await self.storage.get_file(notice["id"])
            if record is not None:
                f = file_pb(record)
                self.hub.push(local, lambda ev: ev.file.CopyFrom(f), notice["x"])

    async def push_all_pending(self) -> None:
        """Pushes every attached session's undelivered messages (another replica died and may
        have stored messages for them that it never announced). Realms drop repeats."""
        for user_key in {u for _, u, _ in self.hub.local_sessions()}:
            await self._push_pending(user_key)

    def close_channel(self, channel: Channel) -> None:
        self.hub.close_channel(channel)

    def acked(self, link_id: str, written: list[tuple[int, int]], dropped: list[tuple[int, int]],
              written_all: list[int], elsewhere: Sequence[Entry]) -> bool:
        """A realm's report on its link's deliveries (see main_server/ledger.py); elsewhere:
        entries written on a link of that realm that has closed since. False: the link is
        closed, and what it carried went back to undelivered already."""
        if elsewhere:
            self._on_outcome(self.hub.ledger.written_elsewhere(elsewhere))
        if link_id not in self.hub.channels:
            return False
        self.hub.written(link_id, written, written_all)
        self.hub.dropped(link_id, dropped)
        return True

    def _on_outcome(self, out: Outcome) -> None:
        if out.delivered:
            self._delivered.extend(out.delivered)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_delivered())
        for user, _ in out.returned:
            if self.hub.is_online(user):
                self._returned.add(user)
        if self._returned and (self._repusher is None or self._repusher.done()):
            self._repusher = asyncio.create_task(self._repush())

    async def _flush_delivered(self) -> None:
        while self._delivered:
            pairs, self._delivered = self._delivered, []
            try:
                await self.storage.mark_delivered(pairs)
            except Exception:
                # They stay undelivered: inbox or the next resume brings them (at least once).
                log.exception("marking %d deliveries failed", len(pairs))
            finally:
                self.hub.ledger.committed(pairs)

    async def _repush(self) -> None:
        """Entries that went back to undelivered while their user is still online are pushed
        again. The short wait lets a burst of drops (a session closing) settle first, and keeps
        a session the realm does not know yet from bouncing deliveries at full speed."""
        while self._returned:
            await asyncio.sleep(REPUSH_DELAY_S)
            users, self._returned = self._returned, set()
            for user in users:
                if self.hub.is_online(user):
                    try:
                        await self._push_pending(user)
                    except Exception:
                        log.exception("pushing returned messages to %s failed", user)

    async def flush(self) -> None:
        """Waits until every sent event is marked delivered (graceful shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher

    def who(self) -> list[tuple[str, str]]:
        return self.hub.who(self.cluster.who() if self.cluster is not None else None)

    def who_status(self) -> list[tuple[str, str, str, str]]:
        """`who` with each user's status (online or away) and away message."""
        out = []
        for name, realm in self.who():
            status, message = self._status.get(name_key(name), (presence.ONLINE, ""))
            out.append((name, realm, status, message))
        return out

    # ---- conversation state: presence, read markers, typing, receipts -------------------------

    def _online_anywhere(self) -> Callable[[str], bool]:
        remote = {name_key(n) for n in self.cluster.online_names()} if self.cluster is not None else set()
        return lambda key: self.hub.is_online(key) or key in remote

    def _on_presence(self, user_key: str, name: str, realm: str, online: bool) -> None:
        """The hub saw a user's first session attach or their last one leave (here)."""
        if online:
            status, message = self._status.get(user_key, (presence.ONLINE, ""))
            self._presence(user_key, name, presence.State(status, realm, message))
            return
        if self.cluster is None:
            self._gone(user_key, name)
            return
        # Whether another replica still has a session is known once our detach has its place
        # among theirs (two last sessions ending at once on two replicas: one of them tells).
        cluster = self.cluster

        def settled(last: bool) -> None:
            if last and not self.hub.is_online(user_key) and name not in cluster.online_names():
                self._gone(user_key, name)

        cluster.settle_detach(name, settled)

    def _gone(self, user_key: str, name: str) -> None:
        """The user has no session anywhere now."""
        # Away lasts until back or until the last session ends (the other replicas forget it too).
        if self._status.pop(user_key, None) is not None and self.cluster is not None:
            self.cluster.publish({"k": "st", "uk": user_key, "s": presence.ONLINE, "m": ""})
        self._presence(user_key, name, presence.State(presence.OFFLINE))

    def _presence(self, user_key: str, name: str, state: presence.State) -> None:
        delay = self.presence.update(user_key, state, time.monotonic())
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self._start_presence_flush, user_key, name)

    def _start_presence_flush(self, user_key: str, name: str) -> None:
        task = asyncio.create_task(self._flush_presence(user_key, name))
        self._presence_tasks.add(task)
        task.add_done_callback(self._presence_tasks.discard)

    async def _flush_presence(self, user_key: str, name: str) -> None:
        state = self.presence.take(user_key, time.monotonic())
        if state is None:
            return
        try:
            audience = await self.storage.audience(user_key)
        except Exception:
            log.exception("presence of %s: reading who shares a conversation failed", user_key)
            return
        online = self._online_anywhere()
        targets = [u for u in audience if online(u)]
        if not targets:
            return
        e = pb.PresenceEvent(user=name, status=state.status, realm=state.realm, message=state.message)
        self.presence_sent += len(targets)
        self._notify(targets, lambda ev: ev.presence.CopyFrom(e), 0)

    async def set_status(self, caller: Caller, away: bool, message: str) -> tuple[str, str]:
        key = caller.session.user_key
        message = rooms.check_text(message, "away message", presence.STATUS_MESSAGE_MAX_BYTES) if away else ""
        if away:
            self._status[key] = (presence.AWAY, message)
        else:
            self._status.pop(key, None)
        status = presence.AWAY if away else presence.ONLINE
        if self.cluster is not None:
            self.cluster.publish({"k": "st", "uk": key, "s": status, "m": message})
        realm = self.hub.realm_of(key) or caller.session.realm
        self._presence(key, caller.session.user_name, presence.State(status, realm, message))
        return status, message

    async def conversations(self, caller: Caller) -> list[ConversationRecord]:
        return await self.storage.conversations(caller.session.user_key)

    @staticmethod
    def _peer_key(peer: str) -> str:
        return name_key(check_name(peer.removeprefix("#"), "user or group"))

    async def mark_read(self, caller: Caller, peer: str, msg_id: int) -> ReadMark:
        if msg_id < 0:
            raise InvalidArgument("ID is a message id (a whole number)")
        me = caller.session.user_key
        mark = await self.storage.mark_read(me, self._peer_key(peer), msg_id)
        if mark.moved:
            e = pb.ReadEvent(peer=mark.peer, id=mark.read)
            self._notify([me], lambda ev: ev.read.CopyFrom(e), caller.session.id)
            if mark.seen_id:
                seen = pb.SeenEvent(by=caller.session.user_name, id=mark.seen_id)
                self._notify([mark.peer_key], lambda ev: ev.seen.CopyFrom(seen), 0)
        return mark

    async def set_receipts(self, caller: Caller, enabled: bool | None) -> bool:
        """Turns read receipts on or off (None: leaves them); returns the setting now."""
        return await self.storage.set_receipts(caller.session.user_key, enabled)

    async def typing(self, caller: Caller, peer: str) -> bool:
        """Forwards a typing notice to the peer or the group's members (not stored); at most one
        per TYPING_INTERVAL_S per user and conversation, the rest are accepted and dropped."""
        me = caller.session.user_key
        key = self._peer_key(peer)
        now = time.monotonic()
        last = self._typing.get((me, key))
        if last is not None and now - last < TYPING_INTERVAL_S:
            return False
        if await self.storage.get_user(key) is not None and not peer.startswith("#"):
            targets = [key] if key != me else []
            e = pb.TypingEvent(user=caller.session.user_name, peer=caller.session.user_name)
        else:
            roll = await self.storage.members(key, me)
            g, members = roll.group, roll.members
            if me not in {m.key for m in members}:
                raise PermissionDenied(f"you are not a member of {g.name!r}: joingroup first")
            targets = [m.key for m in members if m.key != me]
            e = pb.TypingEvent(user=caller.session.user_name, peer=g.name)
        if len(self._typing) >= TYPING_MAX:
            self._typing = {k: t for k, t in self._typing.items() if now - t < TYPING_INTERVAL_S}
        self._typing[(me, key)] = now
        self._notify(targets, lambda ev: ev.typing.CopyFrom(e), 0)
        return True

    # ---- messages ----------------------------------------------------------------------------

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InvalidArgument("the message must not be empty")
        if "\x00" in text:  # PostgreSQL cannot store it; refused on every engine alike
            raise InvalidArgument("the message must not contain NUL characters (U+0000)")
        if len(text.encode()) > self.config.max_message_bytes:
            raise ResourceExhausted(f"message too long: at most {self.config.max_message_bytes} bytes")

    async def send_private(self, caller: Caller, to: str, text: str, reply_to: int = 0) -> MessageRecord:
        check_name(to, "user")
        self._check_text(text)
        stored = await self.storage.store_private(caller.user, name_key(to), text, reply_to, mentions_in(text))
        PRIVATE_STORED.inc()
        # Carbons: the sender's other sessions get it too (no undelivered entry is theirs).
        users = sorted({*stored.recipients, caller.session.user_key})
        self._push_message(stored.message, users, stored.recipients, caller.session.id,
                           mentioned=stored.mentioned)
        return stored.message

    async def send_group(self, caller: Caller, group: str, text: str, reply_to: int = 0) -> MessageRecord:
        check_name(group, "group")
        self._check_text(text)
        stored = await self.storage.store_group(caller.user, name_key(group), text, reply_to, mentions_in(text))
        GROUP_STORED.inc()
        # The sender's other sessions see it too; only recipients have entries to mark.
        self._push_message(stored.message, [*stored.recipients, caller.session.user_key], stored.recipients,
                           caller.session.id, mentioned=stored.mentioned)
        return stored.message

    # ---- the life of a message ------------------------------------------------------------------
    # Every rule is checked by storage in the transaction that makes the change (roomops, with
    # rooms.py's rules). Events are live notices to everyone who can see the message, the
    # actor's other sessions included (the acting session has its OK): no undelivered entry.
    # What waits undelivered is read from storage when delivered, so it arrives as it is then.

    @staticmethod
    def _where(m: MessageRecord) -> dict[str, str]:
        return {"group": m.group} if m.group else {"from": m.sender, "to": m.to}

    async def reply(self, caller: Caller, msg_id: int, text: str) -> MessageRecord:
        self._check_text(text)
        target = await self.storage.message_for(caller.session.user_key, msg_id)
        if target.deleted:
            raise NotFound(f"message {msg_id} was deleted")
        if target.group:
            return await self.send_group(caller, target.group, text, reply_to=msg_id)
        # The other party of the conversation (to oneself: notes to self).
        me = caller.session.user_name
        peer = target.to if name_key(target.sender) == caller.session.user_key else target.sender
        return await self.send_private(caller, peer or me, text, reply_to=msg_id)

    async def edit(self, caller: Caller, msg_id: int, text: str) -> MessageChange:
        self._check_text(text)
        change = await self.storage.edit_message(caller.user, msg_id, text, mentions_in(text))
        m = change.message
        named = set(change.mentioned)
        for users, flag in (([u for u in change.audience if u not in named], False),
                            ([u for u in change.audience if u in named], True)):
            e = pb.EditedEvent(id=m.id, text=m.text, edited=m.edited, mention=flag, **self._where(m))
            self._notify(users, lambda ev, e=e: ev.edited.CopyFrom(e), caller.session.id)
        return change

    async def delete(self, caller: Caller, msg_id: int) -> MessageChange:
        change = await self.storage.delete_message(caller.user, msg_id)
        e = pb.DeletedEvent(id=msg_id, by=caller.session.user_name, **self._where(change.message))
        self._notify(change.audience, lambda ev: ev.deleted.CopyFrom(e), caller.session.id)
        return change

    async def react(self, caller: Caller, msg_id: int, emoji: str, on: bool) -> MessageChange:
        change = await self.storage.react(caller.user, msg_id, check_emoji(emoji), on)
        if change.changed:
            e = pb.ReactionEvent(id=msg_id, user=caller.session.user_name, emoji=emoji, on=on,
                                 **self._where(change.message))
            self._notify(change.audience, lambda ev: ev.reaction.CopyFrom(e), caller.session.id)
        return change

    async def search(self, caller: Caller, query: str, group: str = "", user: str = "") -> list[MessageRecord]:
        words = search_words(query)
        if group and user:
            raise InvalidArgument("search one conversation at a time: #GROUP or @USER")
        gkey = self._group_key(group) if group else ""
        ukey = ""
        if user:
            ukey = name_key(check_name(user.removeprefix("@"), "user"))
            if await self.storage.get_user(ukey) is None:
                raise NotFound(f"no user {user!r}: check the name")
        return await self.storage.search(caller.session.user_key, words, gkey, ukey, SEARCH_MAX)

    async def inbox(self, caller: Caller) -> Page:
        return await self._inbox_page(caller, "")

    async def inbox_group(self, caller: Caller, group: str) -> Page:
        check_name(group, "group")
        return await self._inbox_page(caller, name_key(group))

    async def _inbox_page(self, caller: Caller, group_key: str) -> Page:
        """A page of undelivered messages. Through a realm, its entries stay undelivered until the
        realm reports the response written (the page is a delivery on the session's link);
        answered directly (grpcurl), they are delivered as the page is returned."""
        sid, user = caller.session.id, caller.session.user_key
        if caller.via_realm and self.hub.channel_of(sid, user) is None:
            raise Unavailable(RELINKING)
        ledger = self.hub.ledger
        ledger.begin_read(user)
        msgs: list[MessageRecord] = []
        try:
            skip = ledger.in_flight(user)
            if group_key:
                msgs, more = await self.storage.peek_inbox_group(user, group_key, self.config.inbox_page, skip)
            else:
                msgs, more = await self.storage.peek_inbox(user, self.config.inbox_page, skip)
        finally:
            fresh = set(ledger.end_read(user, [m.id for m in msgs]))
        page, cut = fit_bytes([m for m in msgs if m.id in fresh], self.config.reply_max_bytes)
        ids = [m.id for m in page]
        if caller.via_realm:
            channel = self.hub.channel_of(sid, user)
            if channel is None:  # the link closed while storage answered
                raise Unavailable(RELINKING)
            seq = ledger.record(channel.id, {sid: user}, {user: ids} if ids else {})
            return Page(page, more or cut, seq, channel.id)
        link = f"call-{next(self._direct_calls)}"
        ledger.open(link)
        self._on_outcome(ledger.written(link, ledger.record(link, {sid: user}, {user: ids}), sid))
        ledger.close(link)
        return Page(page, more or cut)

    async def history(self, caller: Caller, peer: str, limit: int, before: int = 0, after: int = 0) -> Page:
        """Oldest first: the newest `limit` messages, or the `limit` just before / after an id;
        `more`: older ones exist (newer ones, for after)."""
        if limit <= 0:
            limit = self.config.history_default
        limit = min(limit, HISTORY_MAX)
        if before and after:
            raise InvalidArgument("page with before ID or after ID, not both")
        if before < 0 or after < 0:
            raise InvalidArgument("a message id is a positive number")
        force_group = peer.startswith("#")
        name = peer[1:] if force_group else peer
        check_name(name, "group" if force_group else "user or group")
        key = name_key(name)
        # One more than asked: whether more lie beyond the page.
        if not force_group and await self.storage.get_user(key) is not None:
            msgs = await self.storage.history_private(caller.session.user_key, key, limit + 1, before, after)
        elif await self.storage.get_group(key) is None:
            raise NotFound(f"no user or group {name!r}")
        else:
            msgs = await self.storage.history_group(caller.session.user_key, key, limit + 1, before, after)
        beyond = len(msgs) > limit
        msgs = msgs[:limit] if after else msgs[-limit:]
        # Too many bytes: the messages nearest the anchor are kept (after: the oldest).
        page, cut = fit_bytes(msgs, self.config.reply_max_bytes, newest=not after)
        return Page(page, beyond or cut)

    # ---- groups (rooms) ---------------------------------------------------------------------
    # Every rule lives in main_server/rooms.py and is applied by storage inside the transaction
    # that makes the change. Room events are live notices: pushed like messages, through the
    # hub and the delivery ledger, but with no undelivered entry (a client that was not
    # connected asks `members`, `topic` or `groups` for the state instead).

    def _notify(self, users: Iterable[str], fill: Callable[[pb.Event], None], exclude_session: int) -> None:
        targets = sorted(set(users))
        if not targets:
            return
        self.hub.push(targets, fill, exclude_session)
        if self.cluster is not None:
            ev = pb.Event()
            fill(ev)
            self.cluster.publish_event(base64.b64encode(ev.SerializeToString()).decode(), targets,
                                       exclude_session)

    def _member_event(self, caller: Caller, change: RoomChange, action: str, users: Iterable[str],
                      reason: str = "", role: str = "") -> None:
        e = pb.MemberEvent(group=change.group.name, user=change.user, action=action, by=caller.session.user_name,
                           reason=reason, role=role)
        self._notify(users, lambda ev: ev.member.CopyFrom(e), caller.session.id)

    @staticmethod
    def _group_key(group: str) -> str:
        return name_key(check_name(group.removeprefix("#"), "group"))

    async def create_group(self, caller: Caller, group: str, mode: str = "") -> GroupRecord:
        check_name(group, "group")
        return await self.storage.create_group(name_key(group), group, caller.user, rooms.check_mode(mode),
                                               self.config.groups_per_user)

    async def join_group(self, caller: Caller, group: str, key: str = "") -> GroupRecord:
        gkey = self._group_key(group)
        verified = ""
        if key:
            # The key is checked against its hash off the event loop, outside the transaction;
            # the join then passes only if that hash still is the group's key.
            g = await self.storage.get_group(gkey)
            if g is not None and g.key_hash:
                user = caller.session.user_key
                async with self.group_keys.attempt(user, gkey):
                    right = await self.hasher.verify(g.key_hash, key[:GROUP_KEY_MAX])
                if right:
                    verified = g.key_hash
                    self.group_keys.succeeded(user, gkey)
        change = await self.storage.join_group(gkey, caller.user, verified, self.config.groups_per_user)
        if change.changed:
            self._member_event(caller, change, "join", change.members)
        return change.group

    async def leave_group(self, caller: Caller, group: str) -> GroupRecord:
        change = await self.storage.leave_group(self._group_key(group), caller.user)
        self._member_event(caller, change, "leave", [*change.members, caller.session.user_key])
        return change.group

    async def list_groups(self, caller: Caller) -> list[GroupInfo]:
        return await self.storage.list_groups(caller.session.user_key)

    async def browse_groups(self, caller: Caller, pattern: str) -> list[RoomInfo]:
        return await self.storage.browse_groups(caller.session.user_key, rooms.glob_to_like(pattern))

    async def invite(self, caller: Caller, group: str, user: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.invite(self._group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "invite", change.members)
        e = pb.InvitedEvent(group=change.group.name, by=caller.session.user_name)
        self._notify([change.user_key], lambda ev: ev.invited.CopyFrom(e), caller.session.id)
        return change

    async def kick(self, caller: Caller, group: str, user: str, reason: str = "") -> RoomChange:
        check_name(user, "user")
        reason = rooms.check_text(reason, "reason", rooms.REASON_MAX_BYTES)
        change = await self.storage.kick(self._group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "kick", change.members, reason=reason)
        return change

    async def ban(self, caller: Caller, group: str, user: str, reason: str = "") -> RoomChange:
        check_name(user, "user")
        reason = rooms.check_text(reason, "reason", rooms.REASON_MAX_BYTES)
        change = await self.storage.ban(self._group_key(group), caller.user, name_key(user), reason)
        self._member_event(caller, change, "ban", change.members, reason=reason)
        return change

    async def unban(self, caller: Caller, group: str, user: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.unban(self._group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "unban", change.members)
        return change

    async def set_role(self, caller: Caller, group: str, user: str, role: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.set_role(self._group_key(group), caller.user, name_key(user),
                                             rooms.check_role(role))
        if change.changed:
            self._member_event(caller, change, "role", change.members, role=change.role)
        return change

    async def members(self, caller: Caller, group: str) -> Roster:
        roll = await self.storage.members(self._group_key(group), caller.session.user_key, rooms.BANS_SHOWN_MAX)
        where: dict[str, str] = {}
        for name, realm in self.who():  # sorted: a user on several realms shows the first
            where.setdefault(name_key(name), realm)
        return Roster([MemberView(m.name, m.role, m.key in where, where.get(m.key, "")) for m in roll.members],
                      roll.banned)

    async def topic(self, caller: Caller, group: str, text: str | None) -> GroupRecord:
        gkey = self._group_key(group)
        if text is None:
            return await self.storage.room(gkey, caller.session.user_key)
        change = await self.storage.set_topic(gkey, caller.user, rooms.check_text(text, "topic", rooms.TOPIC_MAX_BYTES))
        e = pb.TopicEvent(group=change.group.name, topic=change.group.topic, by=caller.session.user_name)
        self._notify(change.members, lambda ev: ev.topic.CopyFrom(e), caller.session.id)
        return change.group

    async def set_group_key(self, caller: Caller, group: str, key: str) -> GroupRecord:
        gkey = self._group_key(group)
        key_hash = ""
        if key:
            if len(key) > GROUP_KEY_MAX or any(c.isspace() or c == "\x00" for c in key):
                raise InvalidArgument(f"a group key is 1-{GROUP_KEY_MAX} characters without spaces")
            # Refused before the (slow) hash when the caller may not set it; storage checks again.
            roll = await self.storage.members(gkey, caller.session.user_key)
            g, members = roll.group, roll.members
            role = next((m.role for m in members if m.key == caller.session.user_key), "")
            rooms.check_moderator(g, rooms.Standing(role), "set the key")
            key_hash = await self.hasher.hash(key)
        return (await self.storage.set_group_key(gkey, caller.user, key_hash)).group

    async def delete_group(self, caller: Caller, group: str) -> GroupRecord:
        change = await self.storage.delete_group(self._group_key(group), caller.user)
        e = pb.GroupDeletedEvent(group=change.group.name, by=caller.session.user_name)
        self._notify(change.members, lambda ev: ev.group_deleted.CopyFrom(e), caller.session.id)
        try:  # the group's files go with it, from the disk too
            await self.blobs.discard(change.unreferenced, time.time())
        except OSError:
            log.exception("removing the files of deleted group %s failed", change.group.name)
        return change.group

    async def sweep_files(self, now: float) -> int:
        """Removes stored contents no file refers to: a deleted group's written in its last
        minute, an upload's whose file was never recorded (main stopped or the commit failed
        in between). Returns how many. A content must be unreferenced when storage is asked and
        still older than the grace when removed: an upload of the same bytes renames it anew."""
        settled = await self.blobs.settled(now)
        if not settled:
            return 0
        referenced = await self.storage.file_digests()
        return await self.blobs.discard([d for d in settled if d not in referenced], now)

    # ---- files -------------------------------------------------------------------------------

    async def check_upload(self, header: UploadSpec, caller: Caller, slots: bool = True
                           ) -> tuple[User | GroupRecord, str]:
        """The recipient (a user, or for `#GROUP` a group the caller is a member of) and the bare
        file name, or the error the upload would end with."""
        if slots:
            # Refused here with its clear message: once the bytes flow, gRPC may only say that
            # main ended the transfer early.
            self.uploads.check(caller.session.user_key)
        group = header.to.startswith("#")
        check_name(header.to[1:] if group else header.to, "group" if group else "user")
        name = base_file_name(header.name)
        if header.size < 0:
            raise InvalidArgument("size must not be negative")
        if header.size > self.config.max_file_bytes:
            raise ResourceExhausted(f"file too large: at most {self.config.max_file_bytes} bytes")
        to: User | GroupRecord | None
        if group:
            to = await self.storage.member_group(name_key(header.to[1:]), caller.session.user_key)
        else:
            to = await self.storage.get_user(name_key(header.to))
            if to is None:
                raise NotFound(f"no user {header.to!r}: check the name")
        self.blobs.fits(header.size)
        return to, name

    async def upload(self, caller: Caller, header: UploadSpec, chunks: AsyncIterator[bytes]
                     ) -> FileRecord:
        to, name = await self.check_upload(header, caller, slots=False)
        with self.uploads.slot(caller.session.user_key):
            up = self.blobs.upload(header.size)  # reserves the declared size on the disk
            try:
                it = aiter(chunks)
                while (chunk := await self._next_chunk(it)) is not None:
                    await up.write(chunk)
                digest = await up.finish(header.sha256)
            except BaseException:
                up.abort()
                raise
        if isinstance(to, GroupRecord):
            # Stored once; it waits for every member but the sender (the sender's other
            # sessions see it too). Membership is checked again in the same transaction.
            record, recipients = await self.storage.add_group_file(caller.user, to.key, name, header.size, digest)
            users = [*recipients, caller.session.user_key]
        else:
            record = await self.storage.add_file(caller.user, to, name, header.size, digest)
            users = [to.key]
        FILES_STORED.inc()
        f = file_pb(record)
        self.hub.push(users, lambda ev: ev.file.CopyFrom(f), caller.session.id)
        if self.cluster is not None:
            self.cluster.publish_file(record.id, users, caller.session.id)
        return record

    async def _next_chunk(self, it: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk; an upload that sends nothing for upload_stall_s is ended (it holds a
        temp file, a disk reservation and an upload slot)."""
        stall = self.config.upload_stall_s
        try:
            async with asyncio.timeout(stall if stall > 0 else None):
                return await anext(it)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise Unavailable(f"upload stalled: no data for {stall:g} s; send the file again") from None

    async def pending_files(self, caller: Caller) -> list[FileRecord]:
        return await self.storage.pending_files(caller.session.user_key)

    async def open_download(self, caller: Caller, file_id: int) -> tuple[FileRecord, Path]:
        # The recipient of a private file; for a group file, rooms.check_download's rule.
        record = await self.storage.open_file(file_id, caller.session.user_key)
        return record, self.blobs.path(record.sha256)

    async def mark_downloaded(self, caller: Caller, file_id: int) -> None:
        await self.storage.mark_downloaded(file_id, caller.session.user_key)

