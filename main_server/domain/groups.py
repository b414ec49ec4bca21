"""Groups (rooms). Every rule lives in main_server/rooms.py and is applied by storage inside the
transaction that makes the change. Room events are live notices: pushed like messages, through
the hub and the delivery ledger, but with no undelivered entry (a client that was not
connected asks `members`, `topic` or `groups` for the state instead)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from realmchat.errors import InvalidArgument
from realmchat.names import check_name, name_key

from .. import events, rooms
from ..config import MainConfig
from ..loginguard import GroupKeyGuard
from ..passwords import PasswordHasher
from ..storage.base import BanRecord, GroupInfo, GroupRecord, RoomChange, RoomInfo, Storage
from .accounts import Caller
from .files import Files
from .notify import Notify

GROUP_KEY_MAX = 64


def group_key(group: str) -> str:
    return name_key(check_name(group.removeprefix("#"), "group"))


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


class Groups:
    def __init__(self, config: MainConfig, storage: Storage, hasher: PasswordHasher, notify: Notify, files: Files,
                 who: Callable[[], list[tuple[str, str]]]) -> None:
        self.config = config
        self.storage = storage
        self.hasher = hasher
        self.notify = notify
        self.files = files
        self.who = who  # (name, realm) of everyone online: presence for `members`
        self.group_keys = GroupKeyGuard(config.group_key_attempts, config.group_key_window_s)

    def _member_event(self, caller: Caller, change: RoomChange, action: str, users: list[str],
                      reason: str = "", role: str = "") -> None:
        self.notify.member_event(caller.session.user_name, caller.session.id, change, action, users, reason, role)

    async def create_group(self, caller: Caller, group: str, mode: str = "") -> GroupRecord:
        check_name(group, "group")
        return await self.storage.create_group(name_key(group), group, caller.user, rooms.check_mode(mode),
                                               self.config.groups_per_user)

    async def join_group(self, caller: Caller, group: str, key: str = "") -> GroupRecord:
        gkey = group_key(group)
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
        change = await self.storage.leave_group(group_key(group), caller.user)
        self._member_event(caller, change, "leave", [*change.members, caller.session.user_key])
        return change.group

    async def list_groups(self, caller: Caller) -> list[GroupInfo]:
        return await self.storage.list_groups(caller.session.user_key)

    async def browse_groups(self, caller: Caller, pattern: str) -> list[RoomInfo]:
        return await self.storage.browse_groups(caller.session.user_key, rooms.glob_to_like(pattern))

    async def invite(self, caller: Caller, group: str, user: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.invite(group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "invite", change.members)
        self.notify.send([change.user_key], events.Invited(change.group.name, caller.session.user_name),
                         caller.session.id)
        return change

    async def kick(self, caller: Caller, group: str, user: str, reason: str = "") -> RoomChange:
        check_name(user, "user")
        reason = rooms.check_text(reason, "reason", rooms.REASON_MAX_BYTES)
        change = await self.storage.kick(group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "kick", change.members, reason=reason)
        return change

    async def ban(self, caller: Caller, group: str, user: str, reason: str = "") -> RoomChange:
        check_name(user, "user")
        reason = rooms.check_text(reason, "reason", rooms.REASON_MAX_BYTES)
        change = await self.storage.ban(group_key(group), caller.user, name_key(user), reason)
        self._member_event(caller, change, "ban", change.members, reason=reason)
        return change

    async def unban(self, caller: Caller, group: str, user: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.unban(group_key(group), caller.user, name_key(user))
        self._member_event(caller, change, "unban", change.members)
        return change

    async def set_role(self, caller: Caller, group: str, user: str, role: str) -> RoomChange:
        check_name(user, "user")
        change = await self.storage.set_role(group_key(group), caller.user, name_key(user), rooms.check_role(role))
        if change.changed:
            self._member_event(caller, change, "role", change.members, role=change.role)
        return change

    async def members(self, caller: Caller, group: str) -> Roster:
        roll = await self.storage.members(group_key(group), caller.session.user_key, rooms.BANS_SHOWN_MAX)
        where: dict[str, str] = {}
        for name, realm in self.who():  # sorted: a user on several realms shows the first
            where.setdefault(name_key(name), realm)
        return Roster([MemberView(m.name, m.role, m.key in where, where.get(m.key, "")) for m in roll.members],
                      roll.banned)

    async def topic(self, caller: Caller, group: str, text: str | None) -> GroupRecord:
        gkey = group_key(group)
        if text is None:
            return await self.storage.room(gkey, caller.session.user_key)
        change = await self.storage.set_topic(gkey, caller.user, rooms.check_text(text, "topic", rooms.TOPIC_MAX_BYTES))
        e = events.Topic(change.group.name, change.group.topic, caller.session.user_name, change.group.topic_at)
        self.notify.send(change.members, e, caller.session.id)
        return change.group

    async def set_group_key(self, caller: Caller, group: str, key: str) -> GroupRecord:
        gkey = group_key(group)
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
        change = await self.storage.set_group_key(gkey, caller.user, key_hash)
        # The key itself only to those who may set it; the other members learn that there is one.
        name, by, moderators = change.group.name, caller.session.user_name, set(change.moderators)
        self.notify.send(moderators, events.GroupKey(name, bool(key_hash), by, key), caller.session.id)
        self.notify.send([k for k in change.members if k not in moderators], events.GroupKey(name, bool(key_hash), by),
                         caller.session.id)
        return change.group

    async def set_group_mode(self, caller: Caller, group: str, mode: str) -> GroupRecord:
        change = await self.storage.set_group_mode(group_key(group), caller.user, rooms.check_mode_change(mode))
        if change.changed:
            e = events.GroupMode(change.group.name, change.group.mode, caller.session.user_name)
            self.notify.send(change.members, e, caller.session.id)
        return change.group

    async def delete_group(self, caller: Caller, group: str) -> GroupRecord:
        change = await self.storage.delete_group(group_key(group), caller.user)
        e = events.GroupDeleted(change.group.name, caller.session.user_name)
        self.notify.send(change.members, e, caller.session.id)
        await self.files.discard_group(change.group.name, change.unreferenced)  # the group's files go with it
        return change.group
