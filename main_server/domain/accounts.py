"""Accounts and sessions: register, auth, the caller of a token (a bounded cache and a negative
cache in front of storage), attach and logout."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from realmchat.errors import AlreadyExists, NotFound, ResourceExhausted, Unauthenticated
from realmchat.names import check_name, name_key
from realmchat.ratelimit import AttemptLimiter

from .. import events
from ..config import MainConfig
from ..hub import Hub
from ..loginguard import TARPIT_S, LoginGuard, parse_networks
from ..password_policy import MAX_PASSWORD, check_password
from ..passwords import PasswordHasher
from ..storage.base import SessionRecord, Storage, User, Waiting
from .notify import Notify

BAD_LOGIN = "wrong user name or password"
BAD_TOKEN = "session expired or unknown: auth again"
UNKNOWN_TOKENS_MAX = 100_000  # negative cache of token hashes the database does not know
UNKNOWN_TOKENS_TTL_S = 300.0
SESSIONS_CACHED_MAX = 200_000
WAITING_LISTED = 10  # conversations named in the waiting summary of a login; the rest are counted


def token_hash(token: str) -> str:
    # Only hashes of tokens are stored: a copy of the database does not hand out sessions.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Login:
    """A successful auth: the token (only its hash is stored), the session, whether it was
    attached to the realm's link, and what waits undelivered for the user."""

    token: str
    session: SessionRecord
    attached: bool
    waiting: Waiting


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


class Accounts:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, hasher: PasswordHasher,
                 notify: Notify) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.hasher = hasher
        self.notify = notify
        # Token hash -> (session, monotonic time it expires): the TTL holds for cached sessions.
        self._sessions: dict[str, tuple[SessionRecord, float]] = {}
        # Token hashes just looked up and not found (a token flood): answered without storage.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self.bad_tokens = AttemptLimiter(config.bad_token_limit, config.bad_token_window_s,
                                         detail="calls with unknown tokens from your address are limited")
        # Hardening (docs/SECURITY.md): password attempts per account and per direct peer.
        self.logins = LoginGuard(config.login_max_failures, config.login_window_s, config.peer_login_attempts,
                                 config.peer_login_window_s, parse_networks(config.trusted_nets))

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
        if len(self._sessions) > SESSIONS_CACHED_MAX:  # bounded cache; the database is the truth
            self._sessions.clear()
        ttl = self.config.session_ttl_s
        left = ttl - (time.time() - session.created) if session.created else ttl
        self._sessions[th] = (session, time.monotonic() + left)

    def forget(self, th: str) -> None:
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
            self.forget(th)
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
            self.forget(th)
            raise Unauthenticated(BAD_TOKEN)
        self.bad_tokens.refund(pk)
        self._cache(th, session)
        return Caller(session, th, via_realm)

    async def logout(self, caller: Caller) -> None:
        self.forget(caller.token_hash)
        self.hub.detach(caller.session.id, caller.session.user_key)
        await self.storage.delete_session(caller.token_hash)
        if (cluster := self.notify.cluster) is not None:
            # The other replicas may have the session cached: they drop it at once.
            cluster.publish_notice(events.LoggedOut(caller.token_hash, caller.session.id, caller.session.user_key))

    def logged_out_elsewhere(self, th: str, session_id: int, user_key: str) -> None:
        """Another replica ended a session: it works here no more either."""
        self.forget(th)
        self.hub.detach(session_id, user_key)

    def attach(self, caller: Caller, link_id: str) -> None:
        channel = self.hub.channels.get(link_id)
        if channel is None:
            raise NotFound("unknown link: it has closed; open a new Link")
        self.hub.attach(channel, caller.session.id, caller.session.user_key, caller.session.user_name)
