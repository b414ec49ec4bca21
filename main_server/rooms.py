"""Who may do what in a group: every room rule, in one place and without I/O.

Both storage engines read a user's standing in a group inside the transaction that makes a
change (main_server/storage/roomops.py) and ask these functions, so a check and the change it
allows are one atomic step, and every path (send, history, inbox, members, files, moderation)
applies the same rule. Roles rank owner > admin > member (one integer per user per room, as
Matrix power levels): a moderator acts only on users ranked below them; the owner, never a
target, is the one who may set roles and delete the group.
"""

from __future__ import annotations

from dataclasses import dataclass

from realmchat.errors import (
    JOIN_BANNED,
    JOIN_INVITE,
    JOIN_KEY,
    NO_USER,
    NOT_MEMBER,
    NOT_MODERATOR,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from realmchat.names import NAME_MAX, name_key

from .storage.base import GroupRecord

OWNER, ADMIN, MEMBER = "owner", "admin", "member"
PUBLIC, PRIVATE = "public", "private"
MODES = (PUBLIC, PRIVATE)
ASSIGNABLE_ROLES = (ADMIN, MEMBER)
RANK = {"": 0, MEMBER: 1, ADMIN: 2, OWNER: 3}
TOPIC_MAX_BYTES = 512
REASON_MAX_BYTES = 512
BANS_SHOWN_MAX = 200  # members shows a moderator the newest bans, at most this many


@dataclass(frozen=True, slots=True)
class Standing:
    """One user's standing in one group, read in the transaction that acts on it."""

    role: str = ""  # "" = not a member
    joined_at_id: int = 0  # the group's newest message id when the user joined
    invited: bool = False
    banned: bool = False

    @property
    def member(self) -> bool:
        return bool(self.role)


def check_mode(mode: str) -> str:
    mode = (mode or PUBLIC).lower()
    if mode not in MODES:
        raise InvalidArgument(f"a group is 'public' or 'private', not {mode[:20]!r}")
    return mode


def check_mode_change(mode: str) -> str:
    """The mode a group is switched to: said, never defaulted."""
    if not mode:
        raise InvalidArgument("a group is made 'public' or 'private': say which")
    return check_mode(mode)


def check_role(role: str) -> str:
    if role.lower() not in ASSIGNABLE_ROLES:
        raise InvalidArgument(f"the role is 'admin' or 'member', not {role[:20]!r} (the owner is the creator)")
    return role.lower()


def check_text(text: str, what: str, limit: int) -> str:
    if "\x00" in text or any(c in text for c in "\r\n"):
        raise InvalidArgument(f"the {what} must be one line without NUL characters")
    if len(text.encode()) > limit:
        raise InvalidArgument(f"the {what} is too long: at most {limit} bytes")
    return text.strip()


def can_see(group: GroupRecord, me: Standing) -> None:
    """Members, topic: a private group shows a non-member nothing but its name."""
    if group.mode == PRIVATE and not me.member:
        raise PermissionDenied(f"{group.name!r} is a private group: only its members see it", reason=NOT_MEMBER)


def check_group_count(count: int, most: int) -> None:
    """One more membership for a user who has count: within the server's limit (0 = none)."""
    if most and count >= most:
        raise ResourceExhausted(f"you are a member of {count} groups, the most one user may be: leave one first")


def sees_bans(me: Standing) -> bool:
    """Who is banned from a group is for those who may lift a ban: its owner and admins."""
    return RANK[me.role] >= RANK[ADMIN]


def check_member(group: GroupRecord, me: Standing, hint: str = ": joingroup first") -> None:
    """Sends, history, inbox, files: members only, in every group."""
    if not me.member:
        raise PermissionDenied(f"you are not a member of {group.name!r}{hint}", reason=NOT_MEMBER)


def history_floor(group: GroupRecord, me: Standing) -> int:
    """Messages with ids above this are the member's to read: in a private group, those sent
    since they joined; in a public one, all."""
    return me.joined_at_id if group.mode == PRIVATE else 0


def check_admit(group: GroupRecord, me: Standing, key_ok: bool) -> None:
    """Joining: a banned user never; an invitation admits (no key needed); otherwise a group
    with a key wants the key, and a private group without one wants an invitation."""
    if me.banned:
        raise PermissionDenied(f"you are banned from {group.name!r}", reason=JOIN_BANNED)
    if me.member or me.invited:
        return
    if group.key_hash:
        if not key_ok:
            raise PermissionDenied(f"{group.name!r} needs its key: joingroup {group.name} KEY", reason=JOIN_KEY)
        return
    if group.mode == PRIVATE:
        raise PermissionDenied(f"{group.name!r} is private: you need an invitation from its owner or an admin",
                               reason=JOIN_INVITE)


def check_moderator(group: GroupRecord, me: Standing, what: str) -> None:
    if RANK[me.role] < RANK[ADMIN]:
        raise PermissionDenied(f"only the owner or an admin of {group.name!r} may {what}", reason=NOT_MODERATOR)


def check_owner(group: GroupRecord, me: Standing, what: str) -> None:
    if me.role != OWNER:
        raise PermissionDenied(f"only the owner of {group.name!r} may {what}", reason=NOT_MODERATOR)


def check_target(group: GroupRecord, me: Standing, target: Standing, target_name: str, what: str) -> None:
    """A moderator acts on users ranked below them: never the owner, and an admin not on
    another admin (nor on themselves: leavegroup is for that)."""
    if target.role == OWNER:
        raise PermissionDenied(f"{target_name!r} owns {group.name!r}: the owner cannot be {what}")
    if RANK[target.role] >= RANK[me.role]:
        raise PermissionDenied(f"{target_name!r} is an admin of {group.name!r}: only the owner may do that")


def check_leave(group: GroupRecord, me: Standing) -> None:
    check_member(group, me, ", so there is nothing to leave")
    if me.role == OWNER:
        raise PermissionDenied(f"you own {group.name!r}: the owner cannot leave; deletegroup {group.name} "
                               "removes it")


def check_download(group: GroupRecord, me: Standing, recipient: bool, sender: bool) -> None:
    """A group file: members only; in a private group, only those who were members when it was
    sent (and its sender)."""
    check_member(group, me)
    if group.mode == PRIVATE and not (recipient or sender):
        raise PermissionDenied(f"that file was sent to {group.name!r} before you joined")


def no_user(name: str) -> NotFound:
    return NotFound(f"no user {name!r}: check the name", reason=NO_USER)


def glob_to_like(pattern: str) -> str:
    """A listgroups PATTERN as a LIKE pattern over group keys (escape: backslash): * and ? are
    wildcards; a pattern without them matches any name that contains it."""
    if len(pattern) > 2 * NAME_MAX or any(not (c.isascii() and (c.isalnum() or c in "_.-*?")) for c in pattern):
        raise InvalidArgument("a PATTERN is a part of a group name, with * and ? as wildcards")
    escaped = name_key(pattern).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if "*" in pattern or "?" in pattern:
        return escaped.replace("*", "%").replace("?", "_")
    return f"%{escaped}%"


# ---- the life of a message -------------------------------------------------------------------


def can_read(group: GroupRecord, me: Standing, msg_id: int) -> bool:
    """A group message: members only, and in a private group only those sent since they joined
    (the same rule as history, applied by edit, delete, reply, react and search)."""
    return me.member and msg_id > history_floor(group, me)


def check_edit(author: bool) -> None:
    if not author:
        raise PermissionDenied("only its author may edit a message")


def check_delete(group: GroupRecord | None, me: Standing | None, author: bool) -> None:
    """The author; in a group, an owner or admin too."""
    if author:
        return
    if group is None or me is None or RANK[me.role] < RANK[ADMIN]:
        where = f" or an owner/admin of {group.name!r}" if group is not None else ""
        raise PermissionDenied(f"only its author{where} may delete a message")
