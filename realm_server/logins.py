"""Logging in, registering and logging out, whatever the client protocol: the per-address
limits, the per-account and per-address locks, and the session's attach to main's link. Each
command table (text, IRC) only turns the answers into its own lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from realmchat.errors import ChatError, ResourceExhausted, Unauthenticated
from realmchat.names import name_key
from realmchat.pb import chat_pb2 as pb

from .session import Session

if TYPE_CHECKING:
    from .server import Realm

LOGIN_BUSY = "too many login attempts are waiting (for this account or from your address): wait for their answers"


class Logins:
    def __init__(self, realm: Realm) -> None:
        self.realm = realm
        self.up = realm.upstream

    async def register(self, s: Session, user: str, password: str) -> pb.RegisterResponse:
        """Creates an account (it does not log in). Every registration costs main a password
        hash, so each one counts against the address; one at a time per address (checked and
        counted together, before main is asked)."""
        realm = self.realm
        ip_key = realm.login_limit_key(s)
        async with realm.login_locks.hold("ip:" + ip_key if ip_key else "", LOGIN_BUSY):
            realm.login_attempts.check(ip_key)
            realm.login_attempts.fail(ip_key)
            return await self.up.call("Register", pb.RegisterRequest(user=user, password=password),
                                      timeout=self.up.timeout * 3)

    async def login(self, s: Session, user: str, password: str) -> pb.AuthResponse:
        """Logs the connection in (ending a session it had), attached to main's current link."""
        realm = self.realm
        ip_key = realm.login_limit_key(s)
        locks = realm.login_locks
        # One attempt in flight per account and per address; each attempt is counted before
        # main hashes (a success gives it back), so simultaneous guesses cannot all pass.
        async with (locks.hold("user:" + name_key(user[:64]), LOGIN_BUSY),
                    locks.hold("ip:" + ip_key if ip_key else "", LOGIN_BUSY)):
            realm.login_attempts.check(ip_key)  # before the old session ends or main hashes
            realm.login_attempts.fail(ip_key)
            if s.authed:
                await realm.end_session(s)
            link_id = self.up.link_id
            try:
                r = await self.up.call("Auth", pb.AuthRequest(user=user, password=password, link_id=link_id),
                                       timeout=self.up.timeout * 3, on_late=self.up.undo_login)
            except (Unauthenticated, ResourceExhausted):
                raise  # a wrong guess, or main's own limit: it counts
            except ChatError:
                realm.login_attempts.refund(ip_key)  # main could not answer: not a guess
                raise
            realm.login_attempts.refund(ip_key)
        realm.add_session(s, r.user, r.token, r.session_id)
        if not r.attached or link_id != self.up.link_id:
            await realm.attach(s)
        return r

    async def logout(self, s: Session) -> None:
        if s.authed:
            await self.realm.end_session(s)
