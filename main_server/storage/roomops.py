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

import dataclasses
import datetime
import functools
import itertools
import re
import sqlite3
from collections.abc import Generator
from typing import Any, TypeVar

from realmchat.errors import NO_GROUP, NOT_MEMBER, AlreadyExists, NotFound, PermissionDenied, ResourceExhausted
from realmchat.names import name_key

from .. import rooms
from ..rooms import Standing
from .base import (
    BanRecord,
    Bound,
    FileRecord,
    GroupRecord,
    MemberInfo,
    MessageChange,
    MessageRecord,
    Roll,
    RoomChange,
    RoomInfo,
    User,
    Window,
    utc_now_iso,
)

T = TypeVar("T")
# (mode, sql, params): mode "one" (a row or None), "all" (rows), "val" (the first column of the
# first row, or None), "exec" (nothing).
Query = tuple[str, str, tuple[Any, ...]]
Op = Generator[Query, Any, T]

BROWSE_MAX = 500
MSG_COLS = "id, sender, text, ts, to_name, group_name, reply_to, edited, deleted"
FULL_COLS = MSG_COLS + ", sender_key, to_key, group_key"
REACTIONS_PER_USER_MAX = 20  # distinct emoji one user may put on one message
FILE_COLS = "id, sender, to_name, to_key, name, size, sha256, ts, group_name, group_key"


def message(r: Any) -> MessageRecord:
    try:
        mention = bool(r["mention"])
    except (IndexError, KeyError):  # the query did not ask for the reader's mention
        mention = False
    return MessageRecord(id=r["id"], sender=r["sender"], text=r["text"], ts=r["ts"],
                         to=r["to_name"], group=r["group_name"], reply_to=int(r["reply_to"] or 0),
                         edited=r["edited"] or "", deleted=bool(r["deleted"]), mention=mention)


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


def stamp(value: str | datetime.datetime) -> str:
    """A time as base.utc_now_iso() writes it: SQLite keeps that text, PostgreSQL a timestamptz."""
    if isinstance(value, datetime.datetime):
        t = value.astimezone(datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return value


def group(key: str) -> Op[GroupRecord]:
    g = yield ("one", "SELECT key, name, mode, topic, key_hash, created, topic_by, topic_at FROM groups WHERE key=?",
               (key,))
    if g is None:
        raise NotFound(f"no group {key!r}: check the name or create it with creategroup", reason=NO_GROUP)
    return GroupRecord(g["key"], g["name"], g["mode"], g["topic"], g["key_hash"], stamp(g["created"]),
                       g["topic_by"], g["topic_at"])


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


def room_for_one_more(user_key: str, most: int) -> Op[None]:
    """Refuses a membership beyond the user's limit (most; 0 = none). The user's row is locked
    first (an UPDATE that changes nothing): on PostgreSQL two joins of one user hold two
    different groups' locks, and must not both count the same memberships."""
    if not most:
        return
    yield ("exec", "UPDATE users SET name = name WHERE key=?", (user_key,))
    n = yield ("val", "SELECT COUNT(*) FROM members WHERE user_key=?", (user_key,))
    rooms.check_group_count(int(n), most)


def join(key: str, u: User, key_hash: str, most: int = 0) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, u.key)
    if me.member:
        return RoomChange(g, u.name, u.key, me.role, [], changed=False)
    rooms.check_admit(g, me, key_ok=bool(key_hash) and key_hash == g.key_hash)
    yield from room_for_one_more(u.key, most)
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
        raise NotFound(f"{target.name!r} is not a member of {g.name!r}", reason=NOT_MEMBER)
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
        raise NotFound(f"{target.name!r} is not a member of {g.name!r}", reason=NOT_MEMBER)
    rooms.check_target(g, me, ts, target.name, "given another role")
    yield ("exec", "UPDATE members SET role=? WHERE group_key=? AND user_key=?", (role, key, target.key))
    return RoomChange(g, target.name, target.key, role, (yield from member_keys(key)), changed=ts.role != role)


def set_topic(key: str, actor: User, topic: str, now: str) -> Op[RoomChange]:
    """now: when it is set (ISO-8601 UTC), kept with who set it."""
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, "set the topic")
    yield ("exec", "UPDATE groups SET topic=?, topic_by=?, topic_at=? WHERE key=?", (topic, actor.name, now, key))
    g = dataclasses.replace(g, topic=topic, topic_by=actor.name, topic_at=now)
    return RoomChange(g, actor.name, actor.key, me.role, (yield from member_keys(key)))


def moderator_keys(group_key: str) -> Op[list[str]]:
    rows = yield ("all", "SELECT user_key FROM members WHERE group_key=? AND role IN (?, ?)",
                  (group_key, rooms.OWNER, rooms.ADMIN))
    return sorted(r[0] for r in rows)


def set_group_key(key: str, actor: User, key_hash: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, "set the key")
    yield ("exec", "UPDATE groups SET key_hash=? WHERE key=?", (key_hash, key))
    return RoomChange(dataclasses.replace(g, key_hash=key_hash), actor.name, actor.key, me.role,
                      (yield from member_keys(key)), moderators=(yield from moderator_keys(key)))


def set_group_mode(key: str, actor: User, mode: str) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_moderator(g, me, "make it public or private")
    if g.mode == mode:
        return RoomChange(g, actor.name, actor.key, me.role, changed=False)
    yield ("exec", "UPDATE groups SET mode=? WHERE key=?", (mode, key))
    if mode == rooms.PRIVATE:
        # Members of a group made private keep what they could read: private history starts
        # at each member's join point, so theirs goes back to the start.
        yield ("exec", "UPDATE members SET joined_at_id = 0 WHERE group_key=?", (key,))
    return RoomChange(dataclasses.replace(g, mode=mode), actor.name, actor.key, me.role,
                      (yield from member_keys(key)))


def delete_group(key: str, actor: User) -> Op[RoomChange]:
    g = yield from group(key)
    me = yield from standing(key, actor.key)
    rooms.check_owner(g, me, "delete it")
    told = yield from member_keys(key)
    # The group's files whose content no other file shares: the file store may drop them.
    gone = yield ("all", "SELECT DISTINCT sha256 FROM files WHERE group_key=? AND sha256 NOT IN "
                         "(SELECT sha256 FROM files WHERE group_key <> ?)", (key, key))
    yield ("exec", "DELETE FROM file_recipients WHERE file_id IN (SELECT id FROM files WHERE group_key=?)", (key,))
    yield ("exec", "DELETE FROM files WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM undelivered WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM messages WHERE group_key=?", (key,))
    for table in ("members", "group_invites", "group_bans"):
        yield ("exec", f"DELETE FROM {table} WHERE group_key=?", (key,))
    yield ("exec", "DELETE FROM read_markers WHERE peer_key=?", (key,))
    yield ("exec", "DELETE FROM groups WHERE key=?", (key,))
    return RoomChange(g, actor.name, actor.key, me.role, told, unreferenced=[r[0] for r in gone])


# ---- reads with access rules -------------------------------------------------------------------


def room(key: str, user_key: str) -> Op[GroupRecord]:
    g = yield from group(key)
    rooms.can_see(g, (yield from standing(key, user_key)))
    return g


def members(key: str, user_key: str, bans: int = 0) -> Op[Roll]:
    """The group's members, best role first; with bans > 0, its newest bans too (at most that
    many) when the user may see them, in the same read as the members and the user's role."""
    g = yield from group(key)
    me = yield from standing(key, user_key)
    rooms.can_see(g, me)
    rows = yield ("all", "SELECT m.user_key, u.name, m.role FROM members m JOIN users u ON u.key = m.user_key "
                         "WHERE m.group_key=?", (key,))
    out = sorted((MemberInfo(r["user_key"], r["name"], r["role"]) for r in rows),
                 key=lambda m: (-rooms.RANK.get(m.role, 0), m.key))
    if bans <= 0 or not rooms.sees_bans(me):
        return Roll(g, out, None)
    # by_key has no foreign key: the LEFT JOIN lists the ban whatever it holds.
    rows = yield ("all", "SELECT u.name AS user_name, COALESCE(a.name, b.by_key) AS by_name, b.reason, b.ts "
                         "FROM group_bans b JOIN users u ON u.key = b.user_key "
                         "LEFT JOIN users a ON a.key = b.by_key "
                         "WHERE b.group_key=? ORDER BY b.ts DESC, b.user_key LIMIT ?", (g.key, bans))
    return Roll(g, out, [BanRecord(r["user_name"], r["by_name"], r["reason"], r["ts"]) for r in rows])


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


def history(user_key: str, key: str, window: Window, collate: str = "") -> Op[list[MessageRecord]]:
    g = yield from group(key)
    me = yield from standing(key, user_key)
    rooms.check_member(g, me)
    return (yield from _page("group_key=? AND id > ?", (key, rooms.history_floor(g, me)), window, collate))


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


# ---- the life of a message ------------------------------------------------------------------


def _marks(n: int) -> str:
    return ",".join("?" * n)


def with_reactions(msgs: list[MessageRecord]) -> Op[list[MessageRecord]]:
    """The messages with their reactions: emoji in the order they were first given, users in
    the order they reacted."""
    ids = [m.id for m in msgs if not m.deleted]
    if not ids:
        return msgs
    rows = yield ("all", f"SELECT msg_id, emoji, user_name FROM reactions WHERE msg_id IN ({_marks(len(ids))}) "
                         "ORDER BY msg_id, ts, user_name", tuple(ids))
    by_msg: dict[int, dict[str, list[str]]] = {}
    for r in rows:
        by_msg.setdefault(int(r["msg_id"]), {}).setdefault(r["emoji"], []).append(r["user_name"])
    if not by_msg:
        return msgs
    return [dataclasses.replace(m, reactions=tuple((e, tuple(us)) for e, us in by_msg[m.id].items()))
            if m.id in by_msg else m for m in msgs]


def visible(user_key: str, msg_id: int) -> Op[tuple[Any, GroupRecord | None, Standing | None]]:
    """The message row if the user may see it: a party to a private message, or a member of
    the group who may read it (rooms.can_read). NotFound otherwise, whether it exists or not."""
    missing = NotFound(f"no message {msg_id} that you can see: check the id (history shows them)")
    if not 0 < msg_id < 1 << 63:
        raise missing
    r = yield ("one", f"SELECT {FULL_COLS} FROM messages WHERE id=?", (msg_id,))
    if r is None:
        raise missing
    if r["group_key"]:
        g = yield from group(r["group_key"])
        me = yield from standing(g.key, user_key)
        if not rooms.can_read(g, me, msg_id):
            raise missing
        return r, g, me
    if user_key not in (r["sender_key"], r["to_key"]):
        raise missing
    return r, None, None


def audience(r: Any, g: GroupRecord | None) -> Op[list[str]]:
    """Everyone who can see the message (its events go to them)."""
    if g is None:
        return sorted({r["sender_key"], r["to_key"]})
    if g.mode == rooms.PRIVATE:
        rows = yield ("all", "SELECT user_key FROM members WHERE group_key=? AND joined_at_id < ?", (g.key, r["id"]))
        return sorted(x[0] for x in rows)
    return (yield from member_keys(g.key))


def _live(r: Any) -> None:
    if r["deleted"]:
        raise NotFound(f"message {r['id']} was deleted")


def set_mentions(msg_id: int, wanted: tuple[str, ...], readers: list[str], replace: bool) -> Op[list[str]]:
    """Flags the message for the readers its text names (mentions table); returns them."""
    if replace:
        yield ("exec", "DELETE FROM mentions WHERE msg_id=?", (msg_id,))
    named = sorted(set(wanted) & set(readers))
    for k in named:
        yield ("exec", "INSERT INTO mentions(user_key, msg_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (k, msg_id))
    return named


def message_for(user_key: str, msg_id: int) -> Op[MessageRecord]:
    r, _, _ = yield from visible(user_key, msg_id)
    return message(r)


def edit(u: User, msg_id: int, text: str, mentions: tuple[str, ...], ts_sql: str, ts_params: tuple[Any, ...]
         ) -> Op[MessageChange]:
    """ts_sql: how the engine writes the edit time (SQLite: a parameter; PostgreSQL: its clock)."""
    r, g, _ = yield from visible(u.key, msg_id)
    _live(r)
    rooms.check_edit(r["sender_key"] == u.key)
    edited = yield ("val", f"UPDATE messages SET text=?, edited={ts_sql} WHERE id=? RETURNING edited",
                    (text, *ts_params, msg_id))
    told = yield from audience(r, g)
    named = yield from set_mentions(msg_id, mentions, [k for k in told if k != u.key], replace=True)
    m = dataclasses.replace(message(r), text=text, edited=edited)
    return MessageChange((yield from with_reactions([m]))[0], told, mentioned=named)


def delete(u: User, msg_id: int) -> Op[MessageChange]:
    r, g, me = yield from visible(u.key, msg_id)
    _live(r)
    rooms.check_delete(g, me, r["sender_key"] == u.key)
    told = yield from audience(r, g)
    yield ("exec", "UPDATE messages SET text='', deleted=TRUE WHERE id=?", (msg_id,))
    # Nobody who has not received it yet ever will: its undelivered entries go in the same step.
    waiting = [r["to_key"]] if g is None else told
    if waiting:
        yield ("exec", f"DELETE FROM undelivered WHERE msg_id=? AND user_key IN ({_marks(len(waiting))})",
               (msg_id, *waiting))
    yield ("exec", "DELETE FROM reactions WHERE msg_id=?", (msg_id,))
    yield ("exec", "DELETE FROM mentions WHERE msg_id=?", (msg_id,))
    return MessageChange(dataclasses.replace(message(r), text="", deleted=True), told)


def react(u: User, msg_id: int, emoji: str, on: bool) -> Op[MessageChange]:
    r, g, _ = yield from visible(u.key, msg_id)
    _live(r)
    if on:
        n = yield ("val", "SELECT COUNT(*) FROM reactions WHERE msg_id=? AND user_key=?", (msg_id, u.key))
        if int(n) >= REACTIONS_PER_USER_MAX:
            raise ResourceExhausted(f"at most {REACTIONS_PER_USER_MAX} different reactions of yours on one message")
        done = yield ("val", "INSERT INTO reactions(msg_id, user_key, user_name, emoji, ts) VALUES (?, ?, ?, ?, ?) "
                             "ON CONFLICT DO NOTHING RETURNING 1", (msg_id, u.key, u.name, emoji, utc_now_iso()))
    else:
        done = yield ("val", "DELETE FROM reactions WHERE msg_id=? AND user_key=? AND emoji=? RETURNING 1",
                      (msg_id, u.key, emoji))
    told = yield from audience(r, g)
    m = (yield from with_reactions([message(r)]))[0]
    return MessageChange(m, told, changed=done is not None)


def _bound(b: Bound, op: str, collate: str) -> tuple[str, Any]:
    """One end of a window as a condition: on the id, or on the time (times sort as text; the
    PostgreSQL engine compares them byte by byte, as its index on them does)."""
    op += "=" if b.inclusive else ""
    return (f" AND id {op} ?", b.id) if b.id else (f" AND ts{collate} {op} ?", b.ts)


def _page(where: str, params: tuple[Any, ...], w: Window, collate: str = "") -> Op[list[MessageRecord]]:
    bounds = [_bound(b, op, collate) for b, op in ((w.after, ">"), (w.before, "<")) if b is not None]
    conds = "".join(c for c, _ in bounds)
    order = "DESC" if w.newest else ""
    rows = yield ("all", f"SELECT {MSG_COLS} FROM messages WHERE {where}{conds} ORDER BY id {order} LIMIT ?",
                  (*params, *(v for _, v in bounds), w.limit))
    if w.newest:
        rows = list(reversed(rows))
    return (yield from with_reactions([message(r) for r in rows]))


def history_private(a_key: str, b_key: str, window: Window, collate: str = "") -> Op[list[MessageRecord]]:
    # Both directions through the (sender_key, to_key, id) index.
    if a_key == b_key:  # notes to self: one direction
        return (yield from _page("group_key='' AND sender_key=? AND to_key=?", (a_key, a_key), window, collate))
    return (yield from _page("group_key='' AND ((sender_key=? AND to_key=?) OR (sender_key=? AND to_key=?))",
                             (a_key, b_key, b_key, a_key), window, collate))


# A search ranks the newest this many matches in the caller's conversations: all of them but for
# the commonest words, whose older matches are not ranked (see docs/PERFORMANCE.md).
SEARCH_CANDIDATES = 2000

# What a search may return to user ? (three times: in SEARCH_JOIN, then twice in SEARCH_ACCESS)
# of messages m: never deleted, private messages of the user's own conversations, group messages
# under rooms.can_read's rule. The user's groups are read once, joined to the candidates (not
# looked up again for each of them).
SEARCH_JOIN = (
    "LEFT JOIN (SELECT x.group_key, CASE WHEN g.mode = 'public' THEN 0 ELSE x.joined_at_id END AS floor "
    "FROM members x JOIN groups g ON g.key = x.group_key WHERE x.user_key = ?) r ON r.group_key = m.group_key"
)
SEARCH_ACCESS = "NOT m.deleted AND ((m.group_key = '' AND (m.sender_key = ? OR m.to_key = ?)) OR m.id > r.floor)"


def user_groups(user_key: str) -> Op[list[str]]:
    rows = yield ("all", "SELECT group_key FROM members WHERE user_key=?", (user_key,))
    return sorted(r[0] for r in rows)
