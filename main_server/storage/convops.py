"""Conversation state shared by both engines, written once and without I/O (the roomops idea:
generators that yield queries in the dialect both engines share and receive their results).

What it reads and keeps:
- `private_peers(user_key, peer_key, last_id)`: one row per private conversation and side,
  kept at every private send, so listing a user's conversations never scans messages;
- `read_markers(user_key, peer_key, read_id)`: where the user has read up to, per conversation
  (a user or a group: their names never collide), only ever moved forward;
- `users.receipts`: whether senders are told when the user reads their private messages;
- `mentions(user_key, msg_id)`: messages that name the user (filled where messages are stored).

Unread counts walk only the unread part of one conversation on its index (messages_private:
sender, recipient, id; messages_group: group, id) and leave deleted messages (tombstones) out;
mentions walk the user's own mention rows above the marker. A private conversation also says
how far the peer has read the user's own messages (`seen`), while the peer's receipts are on:
the same rule as the live `seen` event, so a new login shows the ticks at once.
`waiting` counts what is undelivered for a user, by conversation, for the summary at login.
"""

from __future__ import annotations

from typing import Any

from .. import rooms
from .base import ConversationRecord, MessageRecord, ReadMark, Waiting, WaitingCount
from .roomops import Op, group, standing

_LAST = "lm.id AS last_id, lm.sender, lm.text, lm.ts, lm.to_name, lm.group_name, lm.deleted AS last_deleted"

_PRIVATE = f"""
SELECT p.peer_key, u.name AS peer, COALESCE(r.read_id, 0) AS read_id, {_LAST},
  (SELECT COUNT(*) FROM messages m WHERE m.group_key = '' AND m.sender_key = p.peer_key
     AND m.to_key = p.user_key AND m.sender_key <> p.user_key AND m.id > COALESCE(r.read_id, 0)
     AND NOT m.deleted) AS unread,
  (SELECT COUNT(*) FROM mentions x JOIN messages m ON m.id = x.msg_id
     WHERE x.user_key = p.user_key AND x.msg_id > COALESCE(r.read_id, 0) AND m.group_key = ''
       AND m.sender_key = p.peer_key AND m.to_key = p.user_key AND m.sender_key <> p.user_key
       AND NOT m.deleted) AS mentions,
  CASE WHEN u.receipts AND p.peer_key <> p.user_key THEN
    (SELECT MAX(m.id) FROM messages m WHERE m.group_key = '' AND m.sender_key = p.user_key
       AND m.to_key = p.peer_key AND m.id <= pr.read_id) END AS seen
FROM private_peers p JOIN users u ON u.key = p.peer_key
LEFT JOIN read_markers r ON r.user_key = p.user_key AND r.peer_key = p.peer_key
LEFT JOIN read_markers pr ON pr.user_key = p.peer_key AND pr.peer_key = p.user_key
LEFT JOIN messages lm ON lm.id = p.last_id
WHERE p.user_key = ?"""

# c.seen: the read marker, never below the join point of a private group (what came before is
# not the member's to read, so it is neither unread nor shown as the last message). Groups have
# no receipts: their `seen` is 0.
_GROUPS = f"""
SELECT c.key AS peer_key, c.name AS peer, c.seen AS read_id, {_LAST},
  (SELECT COUNT(*) FROM messages m WHERE m.group_key = c.key AND m.id > c.seen AND m.sender_key <> ?
     AND NOT m.deleted) AS unread,
  (SELECT COUNT(*) FROM mentions x JOIN messages m ON m.id = x.msg_id
     WHERE x.user_key = ? AND x.msg_id > c.seen AND m.group_key = c.key AND m.sender_key <> ?
       AND NOT m.deleted) AS mentions,
  0 AS seen
FROM (
  SELECT f.key, f.name, f.floor,
    CASE WHEN COALESCE(r.read_id, 0) > f.floor THEN r.read_id ELSE f.floor END AS seen,
    (SELECT MAX(m.id) FROM messages m WHERE m.group_key = f.key) AS last_id
  FROM (SELECT g.key, g.name, CASE WHEN g.mode = 'private' THEN mb.joined_at_id ELSE 0 END AS floor
        FROM members mb JOIN groups g ON g.key = mb.group_key WHERE mb.user_key = ?) f
  LEFT JOIN read_markers r ON r.user_key = ? AND r.peer_key = f.key
) c
LEFT JOIN messages lm ON lm.id = c.last_id AND c.last_id > c.floor"""

_UPSERT_READ = (
    "INSERT INTO read_markers(user_key, peer_key, read_id) VALUES (?, ?, ?) "
    "ON CONFLICT (user_key, peer_key) DO UPDATE SET read_id = "
    "CASE WHEN excluded.read_id > read_markers.read_id THEN excluded.read_id ELSE read_markers.read_id END "
    "RETURNING read_id")

# The user's undelivered entries (the key's prefix of the undelivered table), counted per
# conversation in the database: one row per listed conversation comes back, whatever the
# backlog, with the total and the number of conversations beside each.
_WAITING = """
SELECT w.peer, w.kind, w.n, COUNT(*) OVER () AS convs, SUM(w.n) OVER () AS total FROM (
  SELECT CASE WHEN d.group_key = '' THEN m.sender_key ELSE d.group_key END AS conv,
    CASE WHEN d.group_key = '' THEN 'user' ELSE 'group' END AS kind,
    MAX(CASE WHEN d.group_key = '' THEN m.sender ELSE m.group_name END) AS peer,
    COUNT(*) AS n, MAX(d.msg_id) AS newest
  FROM undelivered d JOIN messages m ON m.id = d.msg_id
  WHERE d.user_key = ? AND NOT m.deleted
  GROUP BY 1, 2
) w
ORDER BY w.n DESC, w.newest DESC LIMIT ?"""

_AUDIENCE = (
    "SELECT m2.user_key FROM members m1 JOIN members m2 ON m2.group_key = m1.group_key "
    "WHERE m1.user_key = ? AND m2.user_key <> ? "
    "UNION SELECT peer_key FROM private_peers WHERE user_key = ? AND peer_key <> ?")


def _conversation(r: Any, kind: str) -> ConversationRecord:
    last = None
    if r["last_id"] is not None:
        last = MessageRecord(id=r["last_id"], sender=r["sender"], text=r["text"], ts=r["ts"], to=r["to_name"],
                             group=r["group_name"], deleted=bool(r["last_deleted"]))
    return ConversationRecord(peer=r["peer"], peer_key=r["peer_key"], kind=kind, last=last,
                              unread=int(r["unread"]), mentions=int(r["mentions"]), read=int(r["read_id"]),
                              seen=int(r["seen"] or 0))


def conversations(user_key: str) -> Op[list[ConversationRecord]]:
    private = yield ("all", _PRIVATE, (user_key,))
    groups = yield ("all", _GROUPS, (user_key,) * 5)
    out = [_conversation(r, "user") for r in private] + [_conversation(r, "group") for r in groups]
    # Newest first (ids grow with time); conversations with nothing said yet last, by name.
    out.sort(key=lambda c: (-(c.last.id if c.last else 0), c.peer_key))
    return out


def mark_read(user_key: str, peer_key: str, msg_id: int) -> Op[ReadMark]:
    u = yield ("one", "SELECT name FROM users WHERE key=?", (peer_key,))
    floor = 0
    if u is not None:
        kind, name = "user", u["name"]
        last = yield ("val", "SELECT last_id FROM private_peers WHERE user_key=? AND peer_key=?", (user_key, peer_key))
    else:
        g = yield from group(peer_key)  # NotFound: neither a user nor a group
        me = yield from standing(peer_key, user_key)
        rooms.check_member(g, me)
        kind, name = "group", g.name
        floor = rooms.history_floor(g, me)
        last = yield ("val", "SELECT MAX(id) FROM messages WHERE group_key=?", (peer_key,))
    # A marker past the newest message would swallow messages not sent yet: clamped.
    target = min(msg_id, int(last or 0))
    old = yield ("val", "SELECT read_id FROM read_markers WHERE user_key=? AND peer_key=?", (user_key, peer_key))
    old = max(int(old or 0), floor)
    if target <= old:
        return ReadMark(name, peer_key, kind, old, moved=False)
    now = int((yield ("val", _UPSERT_READ, (user_key, peer_key, target))))
    seen = 0
    if kind == "user" and peer_key != user_key:
        receipts = yield ("val", "SELECT receipts FROM users WHERE key=?", (user_key,))
        if receipts:
            seen = yield ("val", "SELECT MAX(id) FROM messages WHERE group_key = '' AND sender_key=? AND to_key=? "
                                 "AND id > ? AND id <= ?", (peer_key, user_key, old, now))
    return ReadMark(name, peer_key, kind, now, moved=True, seen_id=int(seen or 0))


def set_receipts(user_key: str, enabled: bool | None) -> Op[bool]:
    if enabled is not None:
        yield ("exec", "UPDATE users SET receipts=? WHERE key=?", (enabled, user_key))
    return bool((yield ("val", "SELECT receipts FROM users WHERE key=?", (user_key,))))


def waiting(user_key: str, limit: int) -> Op[Waiting]:
    if limit < 1:
        raise ValueError("waiting lists at least one conversation")
    rows = yield ("all", _WAITING, (user_key, limit))
    if not rows:
        return Waiting()
    listed = [WaitingCount(peer=r["peer"], kind=r["kind"], count=int(r["n"])) for r in rows]
    return Waiting(total=int(rows[0]["total"]), conversations=listed, unlisted=int(rows[0]["convs"]) - len(listed))


def audience(user_key: str) -> Op[list[str]]:
    rows = yield ("all", _AUDIENCE, (user_key,) * 4)
    return [r[0] for r in rows]
