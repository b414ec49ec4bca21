"""Room operations shared by both engines, written once and without I/O.

Each operation is a generator that yields queries and receives their results (the h11 idea:
logic that never touches a connection). The SQLite engine drives it on its writer thread
(`drive_sync`), the PostgreSQL engine on a pooled connection inside the transaction that holds
the group's lock (`drive_async`). The SQL is the dialect both engines share: `?` placeholders
(turned into `$n` for PostgreSQL), `ON CONFLICT DO NOTHING`, `TRUE`/`NOT downloaded` for flags,
CAST where PostgreSQL cannot infer a parameter's type. Every permission check is a call into
main_server/rooms.py with a standing read in the same transaction.
"""

from __future__ import annotations

import functools
import itertools
import re
import sqlite3
from collections.abc import Generator
from typing import Any, TypeVar

from realmchat.errors import AlreadyExists, NotFound, PermissionDenied
from realmchat.names import name_key

from .. import rooms
from ..rooms import Standing
from .base import FileRecord, GroupRecord, MemberInfo, MessageRecord, RoomChange, RoomInfo, User, utc_now_iso

T = TypeVar("T")
# (mode, sql, params): mode "one" (a row or None), "all" (rows), "val" (the first column of the
# first row, or None), "exec" (nothing).
Query = tuple[str, str, tuple[Any, ...]]
Op = Generator[Query, Any, T]

BROWSE_MAX = 500
MSG_COLS = "id, sender, text, ts, to_name, group_name"
FILE_COLS = "id, sender, to_name, to_key, name, size, sha256, ts, group_name, group_key"


def message(r: Any) -> MessageRecord:
    return MessageRecord(id=r["id"], sender=r["sender"], text=r["text"], ts=r["ts"],
                         to=r["to_name"], group=r["group_name"])


def file(r: Any) -> FileRecord:
    return FileRecord(id=r["id"], sender=r["sender"], to=r["to_name"], to_key=r["to_key"],
                      name=r["name"], size=r["size"], sha256=r["sha256"], ts=r["ts"],
                      group=r["group_name"], group_key=r["group_key"])


# ---- drivers -------------------------------------------------------------------------------


def drive_sync(op: Op[T], conn: sqlite3.Connection) -> T:
    result: Any = None
    try:
        while True:
            mode, sql, params = op.send(result)
            cur = conn.execute(sql, params)
            if mode == "one":
                result = cur.fetchone()
            elif mode == "all":
                result = cur.fetchall()
            elif mode == "val":
                row = cur.fetchone()
                result = row[0] if row is not None else None
            else:
                result = None
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1, $2, ...` (the shared SQL has no `?` in literals)."""
    n = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(n)}", sql)


async def drive_async(op: Op[T], conn: Any) -> T:
    result: Any = None
    try:
        while True:
            mode, sql, params = op.send(result)
            q = pg_sql(sql)
            if mode == "one":
                result = await conn.fetchrow(q, *params)
            elif mode == "all":
                result = await conn.fetch(q, *params)
            elif mode == "val":
                result = await conn.fetchval(q, *params)
            else:
                await conn.execute(q, *params)
                result = None
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


# ---- reads every operation uses -------------------------------------------------------------


def group(key: str) -> Op[GroupRecord]:
    g = yield ("one", "SELECT key, name, mode, topic, key_hash FROM groups WHERE key=?", (key,))
    if g is None:
        raise NotFound(f"no group {key!r}: check the name or create it with creategroup")
    return GroupRecord(g["key"], g["name"], g["mode"], g["topic"], g["key_hash"])


def standing(group_key: str, user_key: str) -> Op[Standing]:
    r = yield ("one",
               "SELECT (SELECT role FROM members WHERE group_key=? AND user_key=?) AS role, "
               "(SELECT joined_at_id FROM members WHERE group_key=? AND user_key=?) AS joined, "
               "EXISTS (SELECT 1 FROM group_invites WHERE group_key=? AND user_key=?) AS invited, "
               "EXISTS (SELECT 1 FROM group_bans WHERE group_key=? AND user_key=?) AS banned",
               (group_key, user_key) * 4)
    return Standing(r["role"] or "", int(r["joined"] or 0), bool(r["invited"]), bool(r["banned"]))


def user(key: str) -> Op[User]:
    r = yield ("one", "SELECT key, name FROM users WHERE key=?", (key,))
    if r is None:
        raise rooms.no_user(key)
    return User(r["key"], r["name"], "")


def member_keys(group_key: str) -> Op[list[str]]:
    rows = yield ("all", "SELECT user_key FROM members WHERE group_key=?", (group_key,))
    return sorted(r[0] for r in rows)


def _remove_member(group_key: str, user_key: str) -> Op[None]:
    """The user's membership, what waits for them in the group and their claim on its files."""
    yield ("exec", "DELETE FROM members WHERE group_key=? AND user_key=?", (group_key, user_key))
    yield ("exec", "DELETE FROM undelivered WHERE user_key=? AND group_key=?", (user_key, group_key))
    yield ("exec", "DELETE FROM file_recipients WHERE user_key=? AND file_id IN "
                   "(SELECT id FROM files WHERE group_key=?)", (user_key, group_key))


def _moderated(key: str, actor: User, target_key: str, what: str) -> Op[tuple[GroupRecord, Standing, User, Standing]]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, what)
    target = yield from user(target_key)
    return g, me, target, (yield from standing(key, target.key))


# ---- membership --------------------------------------------------------------------------------


def join(key: str, u: User, key_hash: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, u.key)
    if me.member:
        return RoomChange(g, u.name, u.key, me.role, [], changed=False)
    rooms.check_admit(g, me, key_ok=bool(key_hash) and key_hash == g.key_hash)
    # The join point: messages up to here were sent before the user came (private groups
    # keep them from the newcomer). Sends to this group are excluded while it runs (the
    # SQLite writer is single; PostgreSQL holds the group's lock), so no smaller id can follow.
    floor = yield ("val", "SELECT COALESCE(MAX(id), 0) FROM messages WHERE group_key=?", (key,))
    yield ("exec", "INSERT INTO members(group_key, user_key, role, joined_at_id) VALUES (?, ?, ?, ?)",
           (key, u.key, rooms.MEMBER, int(floor)))
    yield ("exec", "DELETE FROM group_invites WHERE group_key=? AND user_key=?", (key, u.key))
    return RoomChange(g, u.name, u.key, rooms.MEMBER, (yield from member_keys(key)))


def leave(key: str, u: User) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, u.key)
    rooms.check_leave(g, me)
    yield from _remove_member(key, u.key)
    return RoomChange(g, u.name, u.key, "", (yield from member_keys(key)))


def invite(key: str, actor: User, target_key: str) -> Op[RoomChange]:
    g, _, target, ts = yield from _moderated(key, actor, target_key, "invite")
    if ts.banned:
        raise PermissionDenied(f"{target.name!r} is banned from {g.name!r}: unban them first")
    if ts.member:
        raise AlreadyExists(f"{target.name!r} is already a member of {g.name!r}")
    yield ("exec", "INSERT INTO group_invites(group_key, user_key, by_key, ts) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT DO NOTHING", (key, target.key, actor.key, utc_now_iso()))
    return RoomChange(g, target.name, target.key, "", (yield from member_keys(key)))


def kick(key: str, actor: User, target_key: str) -> Op[RoomChange]:
    g, me, target, ts = yield from _moderated(key, actor, target_key, "kick")
    if not ts.member:
        raise NotFound(f"{target.name!r} is not a member of {g.name!r}")
    rooms.check_target(g, me, ts, target.name, "kicked")
    told = yield from member_keys(key)  # the kicked user hears of it too
    yield from _remove_member(key, target.key)
    return RoomChange(g, target.name, target.key, "", told)


def ban(key: str, actor: User, target_key: str, reason: str) -> Op[RoomChange]:
    g, me, target, ts = yield from _moderated(key, actor, target_key, "ban")
    rooms.check_target(g, me, ts, target.name, "banned")
    told = yield from member_keys(key)
    if ts.member:
        yield from _remove_member(key, target.key)
    yield ("exec", "DELETE FROM group_invites WHERE group_key=? AND user_key=?", (key, target.key))
    yield ("exec", "DELETE FROM group_bans WHERE group_key=? AND user_key=?", (key, target.key))
    yield ("exec", "INSERT INTO group_bans(group_key, user_key, by_key, reason, ts) VALUES (?, ?, ?, ?, ?)",
           (key, target.key, actor.key, reason, utc_now_iso()))
    return RoomChange(g, target.name, target.key, "", sorted({*told, target.key}))


def unban(key: str, actor: User, target_key: str) -> Op[RoomChange]:
    g, _, target, ts = yield from _moderated(key, actor, target_key, "unban")
    if not ts.banned:
        raise NotFound(f"{target.name!r} is not banned from {g.name!r}")
    yield ("exec", "DELETE FROM group_bans WHERE group_key=? AND user_key=?", (key, target.key))
    told = yield from member_keys(key)
    return RoomChange(g, target.name, target.key, "", sorted({*told, target.key}))


def set_role(key: str, actor: User, target_key: str, role: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_owner(g, me, "set roles")
    target = yield from user(target_key)
    ts = yield from standing(key, target.key)
    if not ts.member:
        raise NotFound(f"{target.name!r} is not a member of {g.name!r}")
    rooms.check_target(g, me, ts, target.name, "given another role")
    yield ("exec", "UPDATE members SET role=? WHERE group_key=? AND user_key=?", (role, key, target.key))
    return RoomChange(g, target.name, target.key, role, (yield from member_keys(key)), changed=ts.role != role)


def set_topic(key: str, actor: User, topic: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, "set the topic")
    yield ("exec", "UPDATE groups SET topic=? WHERE key=?", (topic, key))
    g = GroupRecord(g.key, g.name, g.mode, topic, g.key_hash)
    return RoomChange(g, actor.name, actor.key, me.role, (yield from member_keys(key)))


def set_group_key(key: str, actor: User, key_hash: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, "set the key")
    yield ("exec", "UPDATE groups SET key_hash=? WHERE key=?", (key_hash, key))
    return RoomChange(GroupRecord(g.key, g.name, g.mode, g.topic, key_hash), actor.name, actor.key, me.role)


def delete_group(key: str, actor: User) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_owner(g, me, "delete it")
    told = yield from member_keys(key)
    yield ("exec", "DELETE FROM file_recipients WHERE file_id IN (SELECT id FROM files WHERE group_key=?)", (key,))
    yield ("exec", "DELETE FROM files WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM undelivered WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM messages WHERE group_key=?", (key,))
    for table in ("members", "group_invites", "group_bans"):
        yield ("exec", f"DELETE FROM {table} WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM read_markers WHERE peer_key=?", (key,))
    yield ("exec", "DELETE FROM groups WHERE key=?", (key,))
    return RoomChange(g, actor.name, actor.key, me.role, told)


# ---- reads with access rules -------------------------------------------------------------------


def room(key: str, user_key: str) -> Op[GroupRecord]:
    g = yield from group(key)
    rooms.can_see(g, (yield from standing(key, user_key)))
    return g


def members(key: str, user_key: str) -> Op[tuple[GroupRecord, list[MemberInfo]]]:
    g = yield from group(key)
    rooms.can_see(g, (yield from standing(key, user_key)))
    rows = yield ("all", "SELECT m.user_key, u.name, m.role FROM members m JOIN users u ON u.key = m.user_key "
                         "WHERE m.group_key=?", (key,))
    out = [MemberInfo(r["user_key"], r["name"], r["role"]) for r in rows]
    return g, sorted(out, key=lambda m: (-rooms.RANK.get(m.role, 0), m.key))


def browse(user_key: str, like: str, collate: str = "") -> Op[list[RoomInfo]]:
    rows = yield ("all",
                  "SELECT g.name, g.mode, g.topic, (SELECT COUNT(*) FROM members x WHERE x.group_key = g.key) AS n "
                  "FROM groups g WHERE g.key LIKE ? ESCAPE '\\' AND (g.mode = 'public' OR EXISTS "
                  "(SELECT 1 FROM members m WHERE m.group_key = g.key AND m.user_key = ?)) "
                  f"ORDER BY g.key{collate} LIMIT {BROWSE_MAX}", (like, user_key))
    return [RoomInfo(r["name"], r["mode"], r["topic"], int(r["n"])) for r in rows]


def check_member(key: str, user_key: str) -> Op[GroupRecord]:
    g = yield from group(key)
    rooms.check_member(g, (yield from standing(key, user_key)))
    return g


def history(user_key: str, key: str, limit: int) -> Op[list[MessageRecord]]:
    g = yield from group(key)
    me = yield from standing(key, user_key)
    rooms.check_member(g, me)
    rows = yield ("all", f"SELECT {MSG_COLS} FROM messages WHERE group_key=? AND id > ? ORDER BY id DESC LIMIT ?",
                  (key, rooms.history_floor(g, me), limit))
    return [message(r) for r in reversed(rows)]


# ---- group files -----------------------------------------------------------------------------


def add_group_file(sender: User, key: str, name: str, size: int, sha256: str, ts: str | None
                   ) -> Op[tuple[FileRecord, list[str]]]:
    """ts None: the database makes it (PostgreSQL's column default, one clock for all replicas)."""
    g = yield from check_member(key, sender.key)
    cols, marks, params = "sender, to_name, to_key, name, size, sha256, group_name, group_key", \
        "?, '', '', ?, ?, ?, ?, ?", (sender.name, name, size, sha256, g.name, key)
    if ts is not None:
        cols, marks, params = cols + ", ts", marks + ", ?", (*params, ts)
    r = yield ("one", f"INSERT INTO files({cols}) VALUES ({marks}) RETURNING id, ts", params)
    file_id = int(r["id"])
    yield ("exec", "INSERT INTO file_recipients(file_id, user_key) SELECT CAST(? AS BIGINT), user_key "
                   "FROM members WHERE group_key=? AND user_key <> ?", (file_id, key, sender.key))
    recipients = [k for k in (yield from member_keys(key)) if k != sender.key]
    return FileRecord(file_id, sender.name, "", "", name, size, sha256, r["ts"], g.name, key), recipients


def open_file(file_id: int, user_key: str) -> Op[FileRecord]:
    r = yield ("one", f"SELECT {FILE_COLS} FROM files WHERE id=?", (file_id,))
    mine = f"no file {file_id} for you: 'receivefile' lists yours"
    if r is None:
        raise NotFound(mine)
    f = file(r)
    if not f.group_key:
        if f.to_key != user_key:
            raise NotFound(mine)
        return f
    g = yield from group(f.group_key)
    me = yield from standing(f.group_key, user_key)
    recipient = yield ("val", "SELECT 1 FROM file_recipients WHERE file_id=? AND user_key=?", (file_id, user_key))
    rooms.check_download(g, me, recipient is not None, name_key(f.sender) == user_key)
    return f


def mark_downloaded(file_id: int, user_key: str) -> Op[None]:
    yield ("exec", "UPDATE files SET downloaded = TRUE WHERE id=? AND to_key=?", (file_id, user_key))
    yield ("exec", "UPDATE file_recipients SET downloaded = TRUE WHERE file_id=? AND user_key=?",
           (file_id, user_key))
