"""Domain logic of the main server. Plain arguments in, records out, realmchat.errors raised;
the gRPC servicer is only a translation layer over this."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realmchat.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from realmchat.names import check_name, name_key
from realmchat.pb import chat_pb2 as pb
from realmchat.ratelimit import AttemptLimiter
from realmchat.textproto import HISTORY_MAX, base_file_name

from .blobs import BlobStore
from .cluster import Cluster
from .config import MainConfig
from .hub import Channel, Hub
from .ledger import Entry, Outcome
from .metrics import MESSAGES
from .passwords import PasswordHasher
from .storage.base import FileRecord, GroupInfo, GroupRecord, MessageRecord, SessionRecord, Storage, User

log = logging.getLogger(__name__)

PRIVATE_STORED, GROUP_STORED, FILES_STORED = (MESSAGES.labels(k) for k in ("private", "group", "file"))
BAD_LOGIN = "wrong user name or password"
REPUSH_DELAY_S = 0.05
PUSH_PENDING_MAX_BYTES = 128 * 1024
COMMON_PASSWORDS = frozenset({"password", "123456", "12345678", "qwerty", "111111", "letmein"})


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """What an upload announces before its bytes."""

    to: str
    name: str
    size: int
    sha256: str = ""


RELINKING = "the realm is reconnecting to the main server; try again shortly"


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


def message_pb(m: MessageRecord) -> pb.Message:
    return pb.Message(**{"id": m.id, "from": m.sender, "to": m.to, "group": m.group, "text": m.text,
                         "ts": m.ts})


def file_pb(f: FileRecord) -> pb.FileInfo:
    return pb.FileInfo(**{"id": f.id, "from": f.sender, "to": f.to, "name": f.name, "size": f.size,
                          "sha256": f.sha256, "ts": f.ts})


class ChatService:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, hasher: PasswordHasher,
                 blobs: BlobStore) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.hasher = hasher
        self.blobs = blobs
        self._sessions: dict[str, SessionRecord] = {}
        self._delivered: list[Entry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._returned: set[str] = set()  # users with entries back in undelivered
        self._repusher: asyncio.Task[None] | None = None
        self._direct_calls = itertools.count(1)
        hub.on_outcome = self._on_outcome
        self.cluster: Cluster | None = None  # set when replicas share a PostgreSQL database
        # Hardening (docs/SECURITY.md): failed logins per account, keyed by the user key.
        self.login_failures = AttemptLimiter(config.login_max_failures, config.login_window_s,
                                             detail="failed logins for this account are limited")

    # ---- accounts and sessions -------------------------------------------------------------

    def _check_password(self, user: str, password: str) -> None:
        if len(password) < self.config.min_password_length:
            raise InvalidArgument(
                f"password too short: use at least {self.config.min_password_length} characters")
        if len(password) > 1024:
            raise InvalidArgument("password too long: at most 1024 characters")
        if password.lower() == user.lower() or password.lower() in COMMON_PASSWORDS:
            raise InvalidArgument("password too easy to guess: pick another one")

    async def register(self, user: str, password: str) -> User:
        check_name(user, "user")
        self._check_password(user, password)
        key = name_key(user)
        if await self.storage.get_user(key) is not None:  # skip the slow hash when it is taken
            raise AlreadyExists(f"user {user!r} already exists: pick another name")
        return await self.storage.create_user(key, user, await self.hasher.hash(password))

    async def auth(self, user: str, password: str, link_id: str) -> tuple[str, SessionRecord, bool]:
        # Login rate limit per account, checked before the slow hash. Unknown names are limited
        # the same way, so the answer tells nothing about which accounts exist.
        limit_key = name_key(user[:64])
        self.login_failures.check(limit_key)
        record = await self.storage.get_user(name_key(user)) if len(user) <= 64 else None
        if not await self.hasher.verify(record.pw_hash if record else None, password[:1024]) or not record:
            self.login_failures.fail(limit_key)
            raise Unauthenticated(BAD_LOGIN)
        self.login_failures.reset(limit_key)
        channel = self.hub.channels.get(link_id) if link_id else None
        realm = channel.realm if channel else ""
        token = secrets.token_urlsafe(32)
        th = token_hash(token)
        session = await self.storage.create_session(th, record, realm)
        self._sessions[th] = session
        if channel is not None:
            self.hub.attach(channel, session.id, session.user_key, session.user_name)
        return token, session, channel is not None

    async def caller(self, token: str, via_realm: bool = False) -> Caller:
        if not token or len(token) > 200:
            raise Unauthenticated("missing or invalid token: call Auth and send 'authorization: Bearer TOKEN'")
        th = token_hash(token)
        session = self._sessions.get(th)
        if session is None:
            session = await self.storage.get_session(th, self.config.session_ttl_s)
            if session is None:
                raise Unauthenticated("session expired or unknown: auth again")
            if len(self._sessions) > 200_000:  # bounded cache; the database is the truth
                self._sessions.clear()
            self._sessions[th] = session
        return Caller(session, th, via_realm)

    async def logout(self, caller: Caller) -> None:
        self._sessions.pop(caller.token_hash, None)
        self.hub.detach(caller.session.id, caller.session.user_key)
        await self.storage.delete_session(caller.token_hash)

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
                      exclude_session: int, publish: bool = True) -> None:
        p = message_pb(m)
        if m.group:
            self.hub.push(users, lambda ev: ev.group.CopyFrom(p), exclude_session, m.id, frozenset(track))
        else:
            self.hub.push(users, lambda ev: ev.private.CopyFrom(p), exclude_session, m.id, frozenset(track))
        if publish and self.cluster is not None:
            self.cluster.publish_message(m.id, users, list(track), exclude_session)

    async def on_notice(self, notice: dict[str, Any]) -> None:
        """Another replica stored something for users who may be attached here."""
        local = [u for u in notice["u"] if self.hub.is_online(u)]
        if not local:
            return
        if notice["k"] == "m":
            for m in await self.storage.get_messages([notice["id"]]):
                self._push_message(m, local, [u for u in notice["t"] if u in local], notice["x"], publish=False)
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

    def acked(self, link_id: str, written: list[tuple[int, int]], dropped: list[tuple[int, int]]) -> None:
        """A realm's report on its link's deliveries (see main_server/ledger.py)."""
        if link_id not in self.hub.channels:
            return  # a closed link: everything on it went back to undelivered already
        self.hub.written(link_id, written)
        self.hub.dropped(link_id, dropped)

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

    # ---- messages ----------------------------------------------------------------------------

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InvalidArgument("the message must not be empty")
        if "\x00" in text:  # PostgreSQL cannot store it; refused on every engine alike
            raise InvalidArgument("the message must not contain NUL characters (U+0000)")
        if len(text.encode()) > self.config.max_message_bytes:
            raise ResourceExhausted(f"message too long: at most {self.config.max_message_bytes} bytes")

    async def send_private(self, caller: Caller, to: str, text: str) -> MessageRecord:
        check_name(to, "user")
        self._check_text(text)
        stored = await self.storage.store_private(caller.user, name_key(to), text)
        PRIVATE_STORED.inc()
        self._push_message(stored.message, stored.recipients, stored.recipients, caller.session.id)
        return stored.message

    async def send_group(self, caller: Caller, group: str, text: str) -> MessageRecord:
        check_name(group, "group")
        self._check_text(text)
        stored = await self.storage.store_group(caller.user, name_key(group), text)
        GROUP_STORED.inc()
        # The sender's other sessions see it too; only recipients have entries to mark.
        self._push_message(stored.message, [*stored.recipients, caller.session.user_key], stored.recipients,
                           caller.session.id)
        return stored.message

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
            seq = ledger.record(channel.id, {sid: user}, {user: ids})
            return Page(page, more or cut, seq, channel.id)
        link = f"call-{next(self._direct_calls)}"
        ledger.open(link)
        self._on_outcome(ledger.written(link, ledger.record(link, {sid: user}, {user: ids}), sid))
        ledger.close(link)
        return Page(page, more or cut)

    async def history(self, caller: Caller, peer: str, limit: int) -> Page:
        if limit <= 0:
            limit = self.config.history_default
        limit = min(limit, HISTORY_MAX)
        force_group = peer.startswith("#")
        name = peer[1:] if force_group else peer
        check_name(name, "group" if force_group else "user or group")
        key = name_key(name)
        if not force_group and await self.storage.get_user(key) is not None:
            msgs = await self.storage.history_private(caller.session.user_key, key, limit)
        elif await self.storage.get_group(key) is None:
            raise NotFound(f"no user or group {name!r}")
        else:
            msgs = await self.storage.history_group(caller.session.user_key, key, limit)
        page, cut = fit_bytes(msgs, self.config.reply_max_bytes, newest=True)
        return Page(page, cut)

    # ---- groups ------------------------------------------------------------------------------

    async def create_group(self, caller: Caller, group: str) -> GroupRecord:
        check_name(group, "group")
        return await self.storage.create_group(name_key(group), group, caller.user)

    async def join_group(self, caller: Caller, group: str) -> GroupRecord:
        check_name(group, "group")
        return await self.storage.join_group(name_key(group), caller.user)

    async def leave_group(self, caller: Caller, group: str) -> GroupRecord:
        check_name(group, "group")
        return await self.storage.leave_group(name_key(group), caller.user)

    async def list_groups(self, caller: Caller) -> list[GroupInfo]:
        return await self.storage.list_groups(caller.session.user_key)

    # ---- files -------------------------------------------------------------------------------

    async def check_upload(self, header: UploadSpec) -> tuple[User, str]:
        """The recipient and the bare file name, or the error the upload would end with."""
        check_name(header.to, "user")
        name = base_file_name(header.name)
        if header.size < 0:
            raise InvalidArgument("size must not be negative")
        if header.size > self.config.max_file_bytes:
            raise ResourceExhausted(f"file too large: at most {self.config.max_file_bytes} bytes")
        to = await self.storage.get_user(name_key(header.to))
        if to is None:
            raise NotFound(f"no user {header.to!r}: check the name")
        return to, name

    async def upload(self, caller: Caller, header: UploadSpec, chunks: AsyncIterator[bytes]
                     ) -> FileRecord:
        to, name = await self.check_upload(header)
        up = self.blobs.upload(header.size)
        try:
            async for chunk in chunks:
                await up.write(chunk)
            digest = await up.finish(header.sha256)
        except BaseException:
            up.abort()
            raise
        record = await self.storage.add_file(caller.user, to, name, header.size, digest)
        FILES_STORED.inc()
        f = file_pb(record)
        self.hub.push([to.key], lambda ev: ev.file.CopyFrom(f), caller.session.id)
        if self.cluster is not None:
            self.cluster.publish_file(record.id, to.key, caller.session.id)
        return record

    async def pending_files(self, caller: Caller) -> list[FileRecord]:
        return await self.storage.pending_files(caller.session.user_key)

    async def open_download(self, caller: Caller, file_id: int) -> tuple[FileRecord, Path]:
        record = await self.storage.get_file(file_id)
        if record is None or record.to_key != caller.session.user_key:
            raise NotFound(f"no file {file_id} for you: 'receivefile' lists yours")
        return record, self.blobs.path(record.sha256)

    async def mark_downloaded(self, file_id: int) -> None:
        await self.storage.mark_downloaded(file_id)

