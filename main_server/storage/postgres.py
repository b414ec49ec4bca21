"""PostgreSQL engine (asyncpg): the store several main replicas share.

No group commit of our own: PostgreSQL already flushes the WAL once for all the backends whose
commits are waiting, so concurrent operations on pooled connections share fsyncs by themselves.
What costs here is round trips and statements (each one is CPU in this process and in a
backend), so the hot operations are ONE statement in autocommit (atomic by itself; writable
CTEs where a message and its inbox rows go in together), and only operations that must read
before they write run in an explicit transaction (BEGIN and COMMIT are two more round trips).
Private sends go further: when every connection already carries a batch of them, the calls
that arrive queue up and the next free one stores them all in ONE statement over arrays.

Semantics follow the SQLite engine, whose single writer makes every operation serializable.
Here operations run concurrently under READ COMMITTED, so:
- membership changes and group sends exclude each other by an advisory lock per group
  (exclusive for join/leave, shared for sends: sends to one group still run side by side);
  a group send is one call of a function the migrations create (see MIGRATIONS[1]);
- an inbox page is read, not taken: main's delivery ledger decides what a page may hand out
  and deletes the entries once the realm reports the response written;
- deadlocks and serialization failures run the whole operation again (nothing of it was
  committed), and so does a lost connection whenever nothing can have been committed yet."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from realmchat.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unavailable

from ..dburl import POOL_MAX, POOL_MIN, parse_postgres_url, redact
from . import convops, roomops
from .base import (
    ConversationRecord,
    FileRecord,
    GroupInfo,
    GroupRecord,
    MessageChange,
    MessageRecord,
    ReadMark,
    Roll,
    RoomChange,
    RoomInfo,
    SessionRecord,
    Storage,
    Stored,
    User,
    Waiting,
    Window,
    utc_now_iso,
)
from .searchtext import CJK_CLASS, Term
from .searchtext import terms as search_terms

log = logging.getLogger(__name__)
T = TypeVar("T")

# Key of the advisory lock held while migrating: replicas starting together migrate once.
MIGRATION_LOCK = 0x7265616C6D636874  # "realmcht"
RETRIES = 5
ACQUIRE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# Bounds of one batch of private sends (rows; characters of text and names, roughly bytes):
# they keep one statement's time and memory small, and 500 rows already share a commit 500 ways.
BATCH_ROWS = 500
BATCH_BYTES = 1 << 20

# ts is made by the database, not by each replica's clock, so that all replicas agree; the
# format is base.utc_now_iso()'s (milliseconds, 'Z').
_TS = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

_C = ' COLLATE "C"'  # times compared as bytes: their index (MIGRATIONS[9]) is built so

# Versioned migrations: MIGRATIONS[i] brings the schema from version i to i+1. Each runs in one
# transaction (PostgreSQL's DDL is transactional) together with its schema_version row.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE users (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        pw_hash TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE sessions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        user_key TEXT NOT NULL REFERENCES users(key),
        realm TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE groups (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE members (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        role TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE INDEX members_by_user ON members(user_key);
    -- Identity ids come from one sequence, so they grow with time across all replicas.
    CREATE TABLE messages (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        to_name TEXT NOT NULL DEFAULT '',
        to_key TEXT NOT NULL DEFAULT '',
        group_name TEXT NOT NULL DEFAULT '',
        group_key TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        ts TEXT NOT NULL DEFAULT {_TS}
    );
    CREATE INDEX messages_private ON messages(sender_key, to_key, id) WHERE group_key = '';
    CREATE INDEX messages_group ON messages(group_key, id) WHERE group_key <> '';
    CREATE TABLE undelivered (
        user_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        msg_id BIGINT NOT NULL REFERENCES messages(id),
        PRIMARY KEY (user_key, group_key, msg_id)
    );
    CREATE TABLE files (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sender TEXT NOT NULL,
        to_name TEXT NOT NULL,
        to_key TEXT NOT NULL,
        name TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        ts TEXT NOT NULL DEFAULT {_TS},
        downloaded BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX files_pending ON files(to_key, id) WHERE NOT downloaded;
    """,
    # Every recipient is queued and a push marks (user, message) delivered: that lookup, and
    # peek_pending's oldest-first scan over all of a user's queues, need (user_key, msg_id).
    # store_group moves into the database so that it is one round trip AND exact: a VOLATILE
    # function takes a fresh snapshot per statement, so the member list it reads after taking
    # the group's lock (shared: sends run side by side; join/leave take it exclusive) stays
    # true until commit. A statement of ours could not do that: its snapshot predates any lock
    # it takes.
    """
    CREATE INDEX undelivered_by_msg ON undelivered(user_key, msg_id);
    CREATE FUNCTION realmchat_store_group(p_sender text, p_sender_key text, p_group_key text,
                                          p_text text, p_lock integer)
    RETURNS TABLE (out_name text, out_id bigint, out_ts text, out_recipients text[])
    LANGUAGE plpgsql VOLATILE AS $fn$
    DECLARE
        v_name text;
        v_id bigint;
        v_ts text;
        v_recipients text[];
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(2, p_lock);
        SELECT g.name INTO v_name FROM groups g WHERE g.key = p_group_key;
        IF v_name IS NULL THEN
            RETURN;  -- no row: no such group
        END IF;
        IF NOT EXISTS (SELECT 1 FROM members m WHERE m.group_key = p_group_key AND m.user_key = p_sender_key) THEN
            RETURN QUERY SELECT v_name, NULL::bigint, NULL::text, NULL::text[];  -- not a member
            RETURN;
        END IF;
        INSERT INTO messages(sender, sender_key, group_name, group_key, text)
            VALUES (p_sender, p_sender_key, v_name, p_group_key, p_text)
            RETURNING messages.id, messages.ts INTO v_id, v_ts;
        WITH q AS (
            INSERT INTO undelivered(user_key, group_key, msg_id)
            SELECT m.user_key, p_group_key, v_id FROM members m
            WHERE m.group_key = p_group_key AND m.user_key <> p_sender_key
            RETURNING undelivered.user_key)
        SELECT coalesce(array_agg(q.user_key ORDER BY q.user_key), '{}') INTO v_recipients FROM q;
        RETURN QUERY SELECT v_name, v_id, v_ts, v_recipients;
    END
    $fn$;
    """,
    # One b-tree instead of two: every recipient of every message is inserted here and deleted
    # once written. Keyed by (user, message), a delivery is found directly; an inbox page of
    # one conversation walks the user's entries in id order and keeps its conversation's.
    """
    ALTER TABLE undelivered DROP CONSTRAINT undelivered_pkey;
    DROP INDEX undelivered_by_msg;
    ALTER TABLE undelivered ADD PRIMARY KEY (user_key, msg_id);
    """,
    # Groups become rooms (see the SQLite engine's MIGRATIONS[3]): modes, topics, join keys,
    # roles, bans, invitations, join points and group files. Groups made before are public,
    # their creator the owner.
    """
    ALTER TABLE groups ADD COLUMN mode TEXT NOT NULL DEFAULT 'public',
        ADD COLUMN topic TEXT NOT NULL DEFAULT '',
        ADD COLUMN key_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE members ADD COLUMN joined_at_id BIGINT NOT NULL DEFAULT 0;
    INSERT INTO members(group_key, user_key, role) SELECT key, owner_key, 'owner' FROM groups
        ON CONFLICT (group_key, user_key) DO UPDATE SET role = 'owner';
    CREATE TABLE group_invites (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        by_key TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE group_bans (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        by_key TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        ts TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    ALTER TABLE files ADD COLUMN group_key TEXT NOT NULL DEFAULT '',
        ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
    CREATE INDEX files_by_group ON files(group_key, id) WHERE group_key <> '';
    CREATE TABLE file_recipients (
        file_id BIGINT NOT NULL REFERENCES files(id),
        user_key TEXT NOT NULL,
        downloaded BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (file_id, user_key)
    );
    CREATE INDEX file_recipients_pending ON file_recipients(user_key, file_id) WHERE NOT downloaded;
    """,
    # Conversation state follows the user (see the SQLite engine's MIGRATIONS[4] and
    # main_server/storage/convops.py).
    """
    CREATE TABLE private_peers (
        user_key TEXT NOT NULL,
        peer_key TEXT NOT NULL,
        last_id BIGINT NOT NULL,
        PRIMARY KEY (user_key, peer_key)
    );
    INSERT INTO private_peers(user_key, peer_key, last_id)
        SELECT a, b, MAX(id) FROM (SELECT sender_key AS a, to_key AS b, id FROM messages WHERE group_key = ''
                                   UNION ALL SELECT to_key, sender_key, id FROM messages WHERE group_key = '') x
        GROUP BY a, b;
    CREATE TABLE read_markers (
        user_key TEXT NOT NULL,
        peer_key TEXT NOT NULL,
        read_id BIGINT NOT NULL,
        PRIMARY KEY (user_key, peer_key)
    );
    -- Kept by a trigger, whichever statement stores a private message. The two rows are taken
    -- in key order, so two sends between the same pair never wait on each other crosswise.
    CREATE FUNCTION realmchat_keep_private_peers() RETURNS trigger LANGUAGE plpgsql AS $fn$
    DECLARE
        k text;
    BEGIN
        FOREACH k IN ARRAY ARRAY[LEAST(NEW.sender_key, NEW.to_key), GREATEST(NEW.sender_key, NEW.to_key)] LOOP
            INSERT INTO private_peers(user_key, peer_key, last_id)
                VALUES (k, CASE WHEN k = NEW.sender_key THEN NEW.to_key ELSE NEW.sender_key END, NEW.id)
                ON CONFLICT (user_key, peer_key) DO UPDATE SET last_id = EXCLUDED.last_id
                WHERE private_peers.last_id < EXCLUDED.last_id;
        END LOOP;
        RETURN NULL;
    END
    $fn$;
    CREATE TRIGGER private_peers_keep AFTER INSERT ON messages FOR EACH ROW WHEN (NEW.group_key = '')
        EXECUTE PROCEDURE realmchat_keep_private_peers();
    ALTER TABLE users ADD COLUMN receipts BOOLEAN NOT NULL DEFAULT true;
    CREATE TABLE IF NOT EXISTS mentions(user_key TEXT, msg_id BIGINT, PRIMARY KEY(user_key, msg_id));
    """,
    # Messages have a life (see the SQLite engine's MIGRATIONS[5]): replies, edits, deletes
    # (tombstones), reactions, mentions, and full-text search through a GIN index over
    # to_tsvector('simple', text) of the messages that are not deleted. Group sends gain the
    # reply and the mentions, stored in the same call (realmchat_store_group_v5; the older
    # function stays for a rolling upgrade). mentions is shared with conversation state.
    """
    ALTER TABLE messages ADD COLUMN reply_to BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN edited TEXT NOT NULL DEFAULT '',
        ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;
    CREATE TABLE reactions (
        msg_id BIGINT NOT NULL REFERENCES messages(id),
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        emoji TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (msg_id, user_key, emoji)
    );
    CREATE TABLE IF NOT EXISTS mentions (
        user_key TEXT NOT NULL,
        msg_id BIGINT NOT NULL,
        PRIMARY KEY (user_key, msg_id)
    );
    CREATE INDEX IF NOT EXISTS mentions_by_msg ON mentions(msg_id);
    CREATE INDEX messages_fts ON messages USING gin (to_tsvector('simple', text)) WHERE NOT deleted;
    CREATE FUNCTION realmchat_store_group_v5(p_sender text, p_sender_key text, p_group_key text,
                                             p_text text, p_lock integer, p_reply_to bigint,
                                             p_mentions text[])
    RETURNS TABLE (out_name text, out_id bigint, out_ts text, out_recipients text[], out_mentioned text[])
    LANGUAGE plpgsql VOLATILE AS $fn$
    DECLARE
        v_name text;
        v_id bigint;
        v_ts text;
        v_recipients text[];
        v_mentioned text[];
    BEGIN
        PERFORM pg_advisory_xact_lock_shared(2, p_lock);
        SELECT g.name INTO v_name FROM groups g WHERE g.key = p_group_key;
        IF v_name IS NULL THEN
            RETURN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM members m WHERE m.group_key = p_group_key AND m.user_key = p_sender_key) THEN
            RETURN QUERY SELECT v_name, NULL::bigint, NULL::text, NULL::text[], NULL::text[];
            RETURN;
        END IF;
        INSERT INTO messages(sender, sender_key, group_name, group_key, text, reply_to)
            VALUES (p_sender, p_sender_key, v_name, p_group_key, p_text, p_reply_to)
            RETURNING messages.id, messages.ts INTO v_id, v_ts;
        WITH q AS (
            INSERT INTO undelivered(user_key, group_key, msg_id)
            SELECT m.user_key, p_group_key, v_id FROM members m
            WHERE m.group_key = p_group_key AND m.user_key <> p_sender_key
            RETURNING undelivered.user_key)
        SELECT coalesce(array_agg(q.user_key ORDER BY q.user_key), '{}') INTO v_recipients FROM q;
        WITH n AS (
            INSERT INTO mentions(user_key, msg_id)
            SELECT DISTINCT u, v_id FROM unnest(p_mentions) AS u WHERE u = ANY(v_recipients)
            ON CONFLICT DO NOTHING
            RETURNING mentions.user_key)
        SELECT coalesce(array_agg(n.user_key ORDER BY n.user_key), '{}') INTO v_mentioned FROM n;
        RETURN QUERY SELECT v_name, v_id, v_ts, v_recipients, v_mentioned;
    END
    $fn$;
    """,
    # Search looks in the caller's conversations inside the index, as the SQLite engine's scope
    # column does: each message's words plus one lexeme per conversation it belongs to (a
    # control character first: no word of a text ever starts with one). No ANALYZE here: on a
    # new, empty database it would tell the planner that messages stays empty.
    """
    CREATE FUNCTION realmchat_search_doc(p_text text, p_sender_key text, p_to_key text, p_group_key text)
    RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT to_tsvector('simple', p_text) || array_to_tsvector(CASE WHEN p_group_key = ''
            THEN ARRAY[E'\\x01u' || p_sender_key, E'\\x01u' || p_to_key] ELSE ARRAY[E'\\x01g' || p_group_key] END)
    $fn$;
    CREATE INDEX messages_search ON messages
        USING gin (realmchat_search_doc(text, sender_key, to_key, group_key)) WHERE NOT deleted;
    DROP INDEX messages_fts;
    """,
    # Words inside Chinese, Japanese and Korean text are found, as in the SQLite engine's
    # MIGRATIONS[7]: the index is fed realmchat_search_text(text), each run of their letters as
    # its overlapping pairs of characters and its last one (searchtext.index_text; the class
    # below is searchtext.CJK_CLASS as it is today, fixed here as the index is). Text without
    # such letters takes the first branch and is fed as before. The index is built again over
    # the new function; realmchat_search_doc stays for a rolling upgrade (a replica still on it
    # searches without an index until it is upgraded too).
    f"""
    CREATE FUNCTION realmchat_cjk_grams(p_text text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT coalesce(string_agg(CASE WHEN r.m[1] IS NULL THEN r.m[2] ELSE
                (SELECT string_agg(substr(r.m[1], i, 2), ' ' ORDER BY i) FROM generate_series(1, length(r.m[1])) AS i)
            END, ' ' ORDER BY r.n), '')
        FROM regexp_matches(p_text, '([{CJK_CLASS}]+)|([^{CJK_CLASS}]+)', 'g') WITH ORDINALITY AS r(m, n)
    $fn$;
    CREATE FUNCTION realmchat_search_text(p_text text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT CASE WHEN octet_length(p_text) = length(p_text) OR p_text !~ '[{CJK_CLASS}]' THEN p_text
            ELSE realmchat_cjk_grams(p_text) END
    $fn$;
    CREATE FUNCTION realmchat_search_doc2(p_text text, p_sender_key text, p_to_key text, p_group_key text)
    RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT to_tsvector('simple', realmchat_search_text(p_text)) || array_to_tsvector(CASE WHEN p_group_key = ''
            THEN ARRAY[E'\\x01u' || p_sender_key, E'\\x01u' || p_to_key] ELSE ARRAY[E'\\x01g' || p_group_key] END)
    $fn$;
    CREATE INDEX messages_search2 ON messages
        USING gin (realmchat_search_doc2(text, sender_key, to_key, group_key)) WHERE NOT deleted;
    DROP INDEX messages_search;
    """,    # Who set a group's topic, and when (see the SQLite engine's MIGRATIONS[8]).
    """
    ALTER TABLE groups ADD COLUMN topic_by TEXT NOT NULL DEFAULT '',
        ADD COLUMN topic_at TEXT NOT NULL DEFAULT '';
    """,
    # History by time (CHATHISTORY's timestamps): each conversation's messages by ts, compared
    # byte by byte (COLLATE "C", as SQLite compares text) whatever the database's locale.
    """
    CREATE INDEX messages_private_ts ON messages(sender_key, to_key, ts COLLATE "C") WHERE group_key = '';
    CREATE INDEX messages_group_ts ON messages(group_key, ts COLLATE "C") WHERE group_key <> '';
    """,
]

# Errors after which the whole operation is run again: nothing of it was committed.
_RETRY = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
# Errors that mean the database cannot be reached right now: callers get UNAVAILABLE, which
# realms and clients already treat as "try again", instead of INTERNAL.
_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    # What asyncpg raises when the server's goodbye (FATAL, then EOF) arrives on an idle
    # connection that is used before the loop noticed: the connection is gone all the same.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

_MSG_COLS = roomops.MSG_COLS
_FILE_COLS = roomops.FILE_COLS


def _group_lock_id(key: str) -> int:
    """The advisory lock id of a group: a stable hash computed here (the same in every
    replica; realmchat_store_group gets it as an argument). Key space (2, id): 2 = groups."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)


def _group_lock(key: str) -> str:
    """BEGIN plus the group's exclusive lock, as ONE simple query (one round trip); the SQL
    holds only integers, so there is nothing to quote."""
    return f"BEGIN; SELECT pg_advisory_xact_lock(2, {_group_lock_id(key)})"


def _name_lock(key: str) -> str:
    """BEGIN plus the lock of a name shared by users and groups (key space 3 = names): a
    register and a creategroup of one name cannot both pass their check of the other table."""
    return f"BEGIN; SELECT pg_advisory_xact_lock(3, {_group_lock_id(key)})"


# One round trip: the recipient's name, the message and its undelivered row. No row = no user.
_STORE_PRIVATE = """
WITH u AS (SELECT name FROM users WHERE key = $2),
m AS (INSERT INTO messages(sender, sender_key, to_name, to_key, text, reply_to)
      SELECT $1, $3, u.name, $2, $4, $5 FROM u RETURNING id, ts, to_name),
q AS (INSERT INTO undelivered(user_key, group_key, msg_id) SELECT $2, '', id FROM m),
n AS (INSERT INTO mentions(user_key, msg_id) SELECT $2, id FROM m WHERE $6)
SELECT id, ts, to_name FROM m"""

# Many private sends in ONE statement (one parse/bind/execute, one commit, one WAL flush);
# a lone send takes _STORE_PRIVATE, which costs the backend half as much for one row:
# arrays in, one row per stored message out, tagged with its input's ordinal (RETURNING order
# is not relied on). Unknown recipients drop out at the join and get NotFound alone.
# Ids are taken from the messages' sequence first and handed to the stored rows by rank, so
# they grow in the callers' order however the planner evaluates nextval. Rows go in sorted by
# conversation (the private_peers trigger locks both of its rows per message): batches from
# several replicas lock those rows in one global order and cannot deadlock on them. One ts
# for the batch: its rows commit together, and ts never goes back as ids grow.
_STORE_PRIVATE_BATCH = f"""
WITH b AS (
    SELECT t.ord, t.sender, t.sender_key, t.to_key, t.text, t.reply_to, t.named, u.name AS to_name,
           row_number() OVER (ORDER BY t.ord) AS rn
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[])
         WITH ORDINALITY AS t(sender, sender_key, to_key, text, reply_to, named, ord)
    JOIN users u ON u.key = t.to_key),
seq AS (SELECT pg_get_serial_sequence('messages', 'id')::regclass AS s),
ids AS (SELECT nextval(seq.s) AS id FROM seq, generate_series(1, (SELECT count(*) FROM b))),
v AS (SELECT b.*, i.id, now_ts.ts
      FROM b JOIN (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM ids) i USING (rn),
           (SELECT {_TS} AS ts) now_ts),
m AS (INSERT INTO messages(id, sender, sender_key, to_name, to_key, text, reply_to, ts) OVERRIDING SYSTEM VALUE
      SELECT id, sender, sender_key, to_name, to_key, text, reply_to, ts FROM v
      ORDER BY least(sender_key, to_key), greatest(sender_key, to_key), id),
q AS (INSERT INTO undelivered(user_key, group_key, msg_id) SELECT to_key, '', id FROM v),
n AS (INSERT INTO mentions(user_key, msg_id) SELECT to_key, id FROM v WHERE named)
SELECT ord, id, ts, to_name FROM v"""

# One index probe per (user, message) pair, then a TID scan. The plain DELETE ... USING
# unnest(...) was planned as a hash join over a scan of the whole table (10x slower at 16k
# queued rows, and worse as it grows); OFFSET 0 keeps the planner from flattening the LATERAL
# back into that join. Rows are only ever inserted and deleted, so a ctid read here still names
# the same row when the DELETE reaches it (or a row someone else deleted: skipped).
_LAZY_BEGIN = "BEGIN; SET LOCAL synchronous_commit TO off"

_MARK_DELIVERED = """
DELETE FROM undelivered WHERE ctid = ANY(ARRAY(
    SELECT d.ctid FROM unnest($1::text[], $2::bigint[]) AS p(u, m),
    LATERAL (SELECT ctid FROM undelivered WHERE user_key = p.u AND msg_id = p.m OFFSET 0) d))"""

# The group and its owner's membership together; no row when the key is taken.
_CREATE_GROUP = """
WITH g AS (INSERT INTO groups(key, name, owner_key, mode) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
           RETURNING key, created),
m AS (INSERT INTO members(group_key, user_key, role) SELECT key, $3, 'owner' FROM g)
SELECT created FROM g"""

# A page of an inbox. Ids in $4 are in flight right now: left out. limit + 1 rows are looked at
# to tell whether more are waiting; every output row carries it.
_PEEK = """
WITH picked AS (
    SELECT msg_id FROM undelivered
    WHERE user_key = $1 AND group_key = $3 AND msg_id <> ALL($4::bigint[])
    ORDER BY msg_id LIMIT $2 + 1),
n AS (SELECT count(*) AS n FROM picked)
SELECT m.id, m.sender, m.text, m.ts, m.to_name, m.group_name, m.reply_to, m.edited, m.deleted, n.n > $2 AS more,
    EXISTS (SELECT 1 FROM mentions x WHERE x.user_key = $1 AND x.msg_id = m.id) AS mention
FROM messages m, n WHERE m.id IN (SELECT msg_id FROM picked ORDER BY msg_id LIMIT $2) ORDER BY m.id"""


_message = roomops.message
_file = roomops.file


def _id(value: int) -> int:
    """An id bound as given when it fits BIGINT; beyond it no message lies past it anyway."""
    return max(0, min(value, (1 << 63) - 1))


def _fit(w: Window) -> Window:
    """A window's id ends within BIGINT (beyond it no message lies anyway); times as given."""
    ends = [b if b is None or not b.id else dataclasses.replace(b, id=_id(b.id)) for b in (w.after, w.before)]
    return dataclasses.replace(w, after=ends[0], before=ends[1])


def _scope(kind: str, key: str) -> str:
    """A conversation's lexeme in realmchat_search_doc, as tsquery text (keys are names: no quote
    or backslash to escape)."""
    return f"'\x01{kind}{key}'"


def _tsquery(terms: list[Term]) -> str:
    """The terms as to_tsquery text: each a phrase of quoted chunks (the parser splits a chunk
    as it split the text), `:*` after a prefix, all of them required."""
    def quoted(chunk: str) -> str:
        return "'" + chunk.replace("\\", "\\\\").replace("'", "''") + "'"

    return " & ".join("(" + " <-> ".join(map(quoted, t.chunks)) + (":*" if t.prefix else "") + ")" for t in terms)


def _no_nul(*values: str) -> None:
    # PostgreSQL TEXT cannot hold U+0000 (SQLite can): say so plainly instead of a driver error.
    for v in values:
        if "\x00" in v:
            raise InvalidArgument("text must not contain NUL characters (U+0000)")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, in place of asyncpg's default (pg_advisory_unlock_all,
    CLOSE ALL, UNLISTEN *, RESET ALL: one more round trip per operation). Pooled connections
    keep no session state: no SET, no cursors, no session locks; LISTEN needs a connection
    of its own. An open transaction is still rolled back by asyncpg before this runs."""


@dataclasses.dataclass(slots=True)
class _PrivateSend:
    """A store_private call waiting for its batch."""

    sender: User
    to_key: str
    text: str
    reply_to: int
    named: bool
    done: asyncio.Future[Stored]
    size: int = 0

    def __post_init__(self) -> None:
        self.size = len(self.text) + len(self.to_key) + len(self.sender.name) + len(self.sender.key) + 64


class PostgresStorage(Storage):
    def __init__(self, url: str, min_size: int = POOL_MIN, max_size: int = POOL_MAX) -> None:
        # Operators size the pool with ?pool_max=N in --db (main_server/dburl.py).
        db = parse_postgres_url(url, min_size, max_size)
        self.url, self.min_size, self.max_size = db.dsn, db.pool_min, db.pool_max
        self._pool: asyncpg.Pool | None = None
        self._sends: collections.deque[_PrivateSend] = collections.deque()  # queued store_private calls
        self._senders: set[asyncio.Task[None]] = set()  # tasks sending them, a batch at a time each
        self._sending = 0  # of those, the ones still looping (done() comes a turn later)
        self.max_batches = self.max_size  # batches of sends on the database at once
        self.ops = 0
        self.retries = 0

    # ---- pool, transactions, migrations ------------------------------------------------------

    async def open(self) -> None:
        try:
            # timeout: connecting; asyncpg's default (60 s) would hold callers far past the
            # point where UNAVAILABLE (and a realm's failover) is the better answer.
            self._pool = await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size,
                                                   timeout=CONNECT_TIMEOUT_S, reset=_keep_session)
        except (*_DOWN, asyncpg.exceptions.PostgresError) as exc:
            raise RuntimeError(f"cannot open PostgreSQL at {redact(self.url)}: {exc}") from exc
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def close(self) -> None:
        if self._senders:
            await asyncio.wait(self._senders, timeout=10)  # sends already accepted finish first
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                log.warning("postgres pool did not close in time; terminating its connections")
                pool.terminate()

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as c, c.transaction():
            # Held to the end of this transaction: a second replica waits here and then finds
            # the schema current.
            await c.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await c.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                            "version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL DEFAULT now())")
            version = await c.fetchval("SELECT COALESCE(max(version), 0) FROM schema_version")
            if version > len(MIGRATIONS):
                raise RuntimeError(f"the database schema is version {version}, newer than this server "
                                   f"knows ({len(MIGRATIONS)}): upgrade realmchat")
            for i in range(version, len(MIGRATIONS)):
                # A savepoint per step, so a failing step names itself and nothing of it stays.
                async with c.transaction():
                    await c.execute(MIGRATIONS[i])  # no arguments: simple protocol, many statements
                    await c.execute("INSERT INTO schema_version(version) VALUES ($1)", i + 1)
                log.info("postgres schema migrated to version %d", i + 1)

    async def schema_version(self) -> int:
        return await self._auto(lambda c: c.fetchval("SELECT max(version) FROM schema_version"))

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], begin: str = "BEGIN") -> T:
        """Runs fn in one transaction on a pooled connection; returns after COMMIT. begin may
        take locks in the same round trip (see _group_lock)."""
        return await self._run(fn, begin=begin, idempotent=False)

    async def _auto(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], idempotent: bool = True) -> T:
        """Runs fn (ONE statement, or reads) in autocommit. idempotent=False for a write that
        must not run twice: its statement commits as it ends, so a connection lost during it
        may have committed it."""
        return await self._run(fn, begin="", idempotent=idempotent)

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], begin: str, idempotent: bool) -> T:
        if self._pool is None:
            raise RuntimeError("storage is closed")
        conflicts = 0
        stale = 0
        while True:
            acquired = maybe_committed = False
            try:
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as c:
                    acquired = True
                    if begin:
                        # BEGIN/COMMIT by hand rather than c.transaction(): BEGIN can carry the
                        # operation's lock in the same round trip.
                        await c.execute(begin)
                        try:
                            value = await fn(c)
                        except Exception:
                            with contextlib.suppress(Exception):  # a dead connection: nothing to undo
                                await c.execute("ROLLBACK")
                            raise
                        maybe_committed = True  # from here on a failure's outcome is unknown
                        await c.execute("COMMIT")
                    else:
                        maybe_committed = not idempotent
                        value = await fn(c)
                self.ops += 1
                return value
            except _RETRY:
                conflicts += 1
                if conflicts >= RETRIES:
                    raise
                self.retries += 1
                await asyncio.sleep(0.005 * conflicts)
            except _DOWN as exc:
                # Pooled connections the server closed (restart, failover, idle timeout) fail on
                # first use: while nothing can have been committed, go on with the next one (at
                # worst every pooled connection is stale). A failure to connect is not retried:
                # the database is down, and callers should hear it now.
                if acquired and not maybe_committed and not isinstance(exc, TimeoutError) \
                        and stale <= self.max_size:
                    stale += 1
                    self.retries += 1
                    continue
                # It may or may not have happened: UNAVAILABLE never promises that it did.
                raise Unavailable(f"the database is unavailable ({type(exc).__name__}): try again") from exc

    # ---- users and sessions ------------------------------------------------------------------

    async def create_user(self, key: str, name: str, pw_hash: str) -> User:
        _no_nul(key, name, pw_hash)

        async def op(c: asyncpg.Connection) -> User:
            if await c.fetchval("SELECT 1 FROM groups WHERE key=$1", key):
                raise AlreadyExists(f"{name!r} is the name of a group: pick another user name")
            # ON CONFLICT instead of catching UniqueViolation: no error path in the server log.
            done = await c.fetchval("INSERT INTO users(key, name, pw_hash) VALUES ($1, $2, $3) "
                                    "ON CONFLICT DO NOTHING RETURNING 1", key, name, pw_hash)
            if done is None:
                raise AlreadyExists(f"user {name!r} already exists: pick another name")
            return User(key, name, pw_hash)

        return await self._tx(op, begin=_name_lock(key))

    async def get_user(self, key: str) -> User | None:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> User | None:
            r = await c.fetchrow("SELECT key, name, pw_hash FROM users WHERE key=$1", key)
            return User(r["key"], r["name"], r["pw_hash"]) if r else None

        return await self._auto(op)

    async def create_session(self, token_hash: str, user: User, realm: str) -> SessionRecord:
        _no_nul(token_hash, realm)

        async def op(c: asyncpg.Connection) -> SessionRecord:
            sid = await c.fetchval("INSERT INTO sessions(token_hash, user_key, realm) VALUES ($1, $2, $3) "
                                   "RETURNING id", token_hash, user.key, realm)
            return SessionRecord(sid, user.key, user.name, realm, time.time())

        return await self._auto(op, idempotent=False)

    async def get_session(self, token_hash: str, max_age_s: float) -> SessionRecord | None:
        _no_nul(token_hash)

        async def op(c: asyncpg.Connection) -> SessionRecord | None:
            # Age by the database clock, which every replica shares; compared as seconds so an
            # infinite max_age_s works too.
            r = await c.fetchrow(
                "SELECT s.id, s.user_key, u.name, s.realm, "
                "extract(epoch FROM clock_timestamp() - s.created)::float8 AS age "
                "FROM sessions s JOIN users u ON u.key = s.user_key WHERE s.token_hash=$1", token_hash)
            if r is None:
                return None
            if r["age"] > max_age_s:
                await c.execute("DELETE FROM sessions WHERE token_hash=$1", token_hash)
                return None
            return SessionRecord(r["id"], r["user_key"], r["name"], r["realm"], time.time() - r["age"])

        return await self._auto(op)  # a read, and deleting an expired session twice is harmless

    async def delete_session(self, token_hash: str) -> None:
        _no_nul(token_hash)

        async def op(c: asyncpg.Connection) -> None:
            await c.execute("DELETE FROM sessions WHERE token_hash=$1", token_hash)

        await self._auto(op)

    # ---- messages ----------------------------------------------------------------------------

    async def store_private(self, sender: User, to_key: str, text: str, reply_to: int = 0,
                            mentions: tuple[str, ...] = ()) -> Stored:
        _no_nul(to_key, text)
        named = to_key in mentions and to_key != sender.key
        call = _PrivateSend(sender, to_key, text, reply_to, named, asyncio.get_running_loop().create_future())
        self._sends.append(call)
        if self._sending < self.max_batches:
            # A call goes at once while a connection is free for it (next loop turn: calls of
            # this turn join it); when every one carries a batch, calls queue and go together
            # in the next batch. At low rates that is one call per statement, as before.
            self._sending += 1
            task = asyncio.create_task(self._send_batches())
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        # The batch runs in its own task: a caller that gives up does not cancel the batch
        # (its message may be committed all the same, as with a statement cancelled late).
        return await call.done

    def _take_batch(self) -> list[_PrivateSend]:
        batch: list[_PrivateSend] = []
        size = 0
        while self._sends and len(batch) < BATCH_ROWS and (not batch or size + self._sends[0].size <= BATCH_BYTES):
            call = self._sends.popleft()
            if not call.done.done():  # a caller cancelled while queued: nothing of it was sent
                batch.append(call)
                size += call.size
        return batch

    async def _send_batches(self) -> None:
        try:
            await self._send_queued()
        finally:
            self._sending -= 1  # in the same turn as the queue was found empty: no call is left behind

    async def _send_queued(self) -> None:
        while self._sends:
            batch = self._take_batch()
            if not batch:
                continue
            results: list[Stored | BaseException]
            try:
                results = await self._store_batch(batch)
            except asyncpg.exceptions.PostgresError as exc:
                if len(batch) == 1:
                    self._answer(batch, [exc])
                    continue
                # The statement failed as a whole (or the driver refused an argument before
                # sending it), so nothing of it was committed: each call runs alone and fails
                # alone (one bad row must not fail its neighbours).
                results = [await self._settle(self._store_batch([call])) for call in batch]
            except Exception as exc:  # Unavailable, closed storage: the same for everyone
                results = [exc] * len(batch)
            except BaseException:
                self._answer(batch, [Unavailable("the server is stopping: try again")] * len(batch))
                raise
            self._answer(batch, results)

    @staticmethod
    async def _settle(single: Awaitable[list[Stored | BaseException]]) -> Stored | BaseException:
        try:
            return (await single)[0]
        except Exception as exc:
            return exc

    @staticmethod
    def _answer(batch: list[_PrivateSend], results: list[Stored | BaseException]) -> None:
        for call, r in zip(batch, results, strict=True):
            if call.done.done():
                continue  # its caller gave up
            if isinstance(r, BaseException):
                call.done.set_exception(r)
            else:
                call.done.set_result(r)

    async def _store_batch(self, batch: list[_PrivateSend]) -> list[Stored | BaseException]:
        async def op(c: asyncpg.Connection) -> list[Any]:
            if len(batch) == 1:
                x = batch[0]
                r = await c.fetchrow(_STORE_PRIVATE, x.sender.name, x.to_key, x.sender.key, x.text, x.reply_to,
                                     x.named)
                return [] if r is None else [{"ord": 1, **r}]
            return await c.fetch(_STORE_PRIVATE_BATCH, [x.sender.name for x in batch],
                                 [x.sender.key for x in batch], [x.to_key for x in batch],
                                 [x.text for x in batch], [x.reply_to for x in batch], [x.named for x in batch])

        # One statement in autocommit: a lost connection may have committed it (not retried);
        # a deadlock or serialization failure committed nothing (the whole batch runs again).
        rows = {r["ord"]: r for r in await self._auto(op, idempotent=False)}
        out: list[Stored | BaseException] = []
        for i, x in enumerate(batch, 1):
            r = rows.get(i)
            if r is None:
                out.append(NotFound(f"no user {x.to_key!r}: check the name (who lists online users)"))
            else:
                out.append(Stored(MessageRecord(r["id"], x.sender.name, x.text, r["ts"], to=r["to_name"],
                                                reply_to=x.reply_to), [x.to_key], [x.to_key] if x.named else []))
        return out

    async def store_group(self, sender: User, group_key: str, text: str, reply_to: int = 0,
                          mentions: tuple[str, ...] = ()) -> Stored:
        _no_nul(group_key, text, *mentions)

        async def op(c: asyncpg.Connection) -> Stored:
            r = await c.fetchrow("SELECT * FROM realmchat_store_group_v5($1, $2, $3, $4, $5, $6, $7)",
                                 sender.name, sender.key, group_key, text, _group_lock_id(group_key), reply_to,
                                 list(mentions))
            if r is None:
                raise NotFound(f"no group {group_key!r}: create it with creategroup")
            if r["out_id"] is None:
                raise PermissionDenied(f"you are not a member of {r['out_name']!r}: joingroup first")
            return Stored(MessageRecord(r["out_id"], sender.name, text, r["out_ts"], group=r["out_name"],
                                        reply_to=reply_to), list(r["out_recipients"]), list(r["out_mentioned"]))

        return await self._auto(op, idempotent=False)

    async def mark_delivered(self, pairs: list[tuple[str, int]]) -> None:
        async def op(c: asyncpg.Connection) -> None:
            await c.execute(_MARK_DELIVERED, [u for u, _ in pairs], [m for _, m in pairs])

        if pairs:
            # Deleting twice is harmless (retried on a stale connection). The commit does not wait
            # for its WAL flush: a delivered row that a crash of the database brings back only
            # repeats a message, which clients drop by id; the next synchronous commit flushes it.
            await self._run(op, begin=_LAZY_BEGIN, idempotent=True)

    @staticmethod
    async def _peek(c: asyncpg.Connection, user_key: str, group_key: str, limit: int, skip: frozenset[int]
                    ) -> tuple[list[MessageRecord], bool]:
        skipped = sorted(skip)
        if limit <= 0:
            waiting = await c.fetchval("SELECT EXISTS (SELECT 1 FROM undelivered WHERE user_key=$1 "
                                       "AND group_key=$2 AND msg_id <> ALL($3::bigint[]))",
                                       user_key, group_key, skipped)
            return [], bool(waiting)
        rows = await c.fetch(_PEEK, user_key, limit, group_key, skipped)
        msgs = await roomops.drive_async(roomops.with_reactions([_message(r) for r in rows]), c)
        return msgs, bool(rows) and rows[0]["more"]

    async def peek_inbox(self, user_key: str, limit: int, skip: frozenset[int] = frozenset()
                         ) -> tuple[list[MessageRecord], bool]:
        return await self._auto(lambda c: self._peek(c, user_key, "", limit, skip))

    async def peek_inbox_group(self, user_key: str, group_key: str, limit: int,
                               skip: frozenset[int] = frozenset()) -> tuple[list[MessageRecord], bool]:
        async def op(c: asyncpg.Connection) -> tuple[list[MessageRecord], bool]:
            await self._check_member(c, group_key, user_key)
            return await self._peek(c, user_key, group_key, limit, skip)

        return await self._auto(op)

    async def peek_pending(self, user_key: str, limit: int) -> list[MessageRecord]:
        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            rows = await c.fetch(
                f"SELECT {_MSG_COLS}, EXISTS (SELECT 1 FROM mentions x WHERE x.user_key = $1 AND x.msg_id = m.id) "
                "AS mention FROM messages m WHERE id IN ("
                "SELECT msg_id FROM undelivered WHERE user_key=$1 ORDER BY msg_id LIMIT $2) ORDER BY id",
                user_key, limit)
            return await roomops.drive_async(roomops.with_reactions([_message(r) for r in rows]), c)

        return await self._auto(op)

    async def waiting_for(self, msg_id: int, limit: int) -> list[str]:
        async def op(c: asyncpg.Connection) -> list[str]:
            rows = await c.fetch("SELECT user_key FROM undelivered WHERE msg_id=$1 ORDER BY user_key LIMIT $2",
                                 msg_id, limit)
            return [r["user_key"] for r in rows]

        return await self._auto(op)

    async def get_messages(self, ids: list[int]) -> list[MessageRecord]:
        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            rows = await c.fetch(f"SELECT {_MSG_COLS} FROM messages WHERE id = ANY($1::bigint[]) ORDER BY id", wanted)
            return [_message(r) for r in rows]

        wanted = [i for i in ids if 0 < i < 1 << 63]  # others name no message (and overflow BIGINT)
        return await self._auto(op) if wanted else []

    async def window_private(self, a_key: str, b_key: str, window: Window) -> list[MessageRecord]:
        _no_nul(a_key, b_key)
        return await self._read_room(roomops.history_private(a_key, b_key, _fit(window), _C))

    async def window_group(self, user_key: str, group_key: str, window: Window) -> list[MessageRecord]:
        _no_nul(group_key)
        return await self._read_room(roomops.history(user_key, group_key, _fit(window), _C))

    # ---- the life of a message ---------------------------------------------------------------
    # Writes run in a transaction holding the message's group lock (exclusive, as room changes):
    # the access check and the change are one step against joins, leaves and kicks.

    async def _on_message(self, msg_id: int, op: roomops.Op[T]) -> T:
        async def run(c: asyncpg.Connection) -> T:
            gk = await c.fetchval("SELECT group_key FROM messages WHERE id=$1", msg_id) if 0 < msg_id < 1 << 63 else ""
            if gk:
                await c.execute(f"SELECT pg_advisory_xact_lock(2, {_group_lock_id(gk)})")
            return await roomops.drive_async(op, c)

        return await self._tx(run)

    async def message_for(self, user_key: str, msg_id: int) -> MessageRecord:
        return await self._read_room(roomops.message_for(user_key, msg_id))

    async def edit_message(self, user: User, msg_id: int, text: str, mentions: tuple[str, ...] = ()
                           ) -> MessageChange:
        _no_nul(text, *mentions)
        return await self._on_message(msg_id, roomops.edit(user, msg_id, text, mentions, _TS, ()))

    async def delete_message(self, user: User, msg_id: int) -> MessageChange:
        return await self._on_message(msg_id, roomops.delete(user, msg_id))

    async def react(self, user: User, msg_id: int, emoji: str, on: bool) -> MessageChange:
        _no_nul(emoji)
        return await self._on_message(msg_id, roomops.react(user, msg_id, emoji, on))

    async def search(self, user_key: str, words: list[str], group_key: str = "", peer_key: str = "",
                     limit: int = 50) -> list[MessageRecord]:
        _no_nul(group_key, peer_key, *words)
        wanted = search_terms(words)

        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            if group_key:
                await roomops.drive_async(roomops.check_member(group_key, user_key), c)
                lexemes = [_scope("g", group_key)]
                scope, params = "AND m.group_key = $5 ", (group_key,)
            elif peer_key:
                lexemes = [f"{_scope('u', user_key)} & {_scope('u', peer_key)}"]
                scope = ("AND m.group_key = '' AND ((m.sender_key = $2 AND m.to_key = $5) "
                         "OR (m.sender_key = $5 AND m.to_key = $2)) ")
                params = (peer_key,)
            else:
                groups = await roomops.drive_async(roomops.user_groups(user_key), c)
                lexemes = [_scope("u", user_key), *(_scope("g", g) for g in groups)]
                scope, params = "", ()
            if not wanted:  # words of punctuation only: nothing (never everything in scope)
                return []
            join, access = (q.replace("?", "$2") for q in (roomops.SEARCH_JOIN, roomops.SEARCH_ACCESS))
            # The matches in the caller's conversations come from the index alone (a bitmap,
            # whatever the planner would guess from the LIMIT: walking the table backwards
            # computes every row's words); the newest SEARCH_CANDIDATES of them are checked
            # exactly and ranked: a word found in most messages costs about what a rarer one does.
            rows = await c.fetch(
                "WITH hits AS MATERIALIZED (SELECT m.id FROM messages m "
                "WHERE realmchat_search_doc2(m.text, m.sender_key, m.to_key, m.group_key) "
                "@@ (to_tsquery('simple', $1) && $4::tsquery) AND NOT m.deleted "
                # Words the parser finds nothing in make no query: never "everything in scope".
                "AND numnode(to_tsquery('simple', $1)) > 0) "
                f"SELECT {', '.join('m.' + col for col in _MSG_COLS.split(', '))}, "
                "ts_rank(to_tsvector('simple', realmchat_search_text(m.text)), to_tsquery('simple', $1)) AS rank "
                "FROM messages m "
                f"{join} "
                f"WHERE m.id IN (SELECT id FROM hits ORDER BY id DESC LIMIT {roomops.SEARCH_CANDIDATES}) "
                f"AND {access} {scope}ORDER BY rank DESC, m.id DESC LIMIT $3",
                _tsquery(wanted), user_key, limit, " | ".join(lexemes), *params)
            return await roomops.drive_async(roomops.with_reactions([_message(r) for r in rows]), c)

        return await self._auto(op)

    async def bulk_load(self, rows: list[tuple[str, str, str, str, str, str, str, str]]) -> None:
        """Stored messages in bulk, delivered already (a benchmark's or an import's load):
        (sender, sender_key, to_name, to_key, group_name, group_key, text, ts) each. COPY, one
        round trip; the private-conversation trigger and the search index follow as for a send."""
        for r in rows:
            _no_nul(*r)

        async def op(c: asyncpg.Connection) -> None:
            await c.copy_records_to_table(
                "messages", records=rows,
                columns=["sender", "sender_key", "to_name", "to_key", "group_name", "group_key", "text", "ts"])

        await self._tx(op)

    # ---- groups ------------------------------------------------------------------------------

    async def _room(self, key: str, op: roomops.Op[T]) -> T:
        """A shared room operation (roomops) in one transaction holding the group's exclusive
        lock: sends to the group wait, so a membership change and every send are ordered."""
        return await self._tx(lambda c: roomops.drive_async(op, c), _group_lock(key))

    async def _read_room(self, op: roomops.Op[T]) -> T:
        return await self._auto(lambda c: roomops.drive_async(op, c))

    async def _check_member(self, c: asyncpg.Connection, group_key: str, user_key: str) -> GroupRecord:
        return await roomops.drive_async(roomops.check_member(group_key, user_key), c)

    async def create_group(self, key: str, name: str, owner: User, mode: str = "public",
                           most: int = 0) -> GroupRecord:
        _no_nul(key, name)

        async def op(c: asyncpg.Connection) -> GroupRecord:
            if await c.fetchval("SELECT 1 FROM users WHERE key=$1", key):
                raise AlreadyExists(f"{name!r} is the name of a user: pick another group name")
            await roomops.drive_async(roomops.room_for_one_more(owner.key, most), c)
            created = await c.fetchval(_CREATE_GROUP, key, name, owner.key, mode)
            if created is None:
                raise AlreadyExists(f"group {name!r} already exists: joingroup to join it")
            return GroupRecord(key, name, mode, created=roomops.stamp(created))

        return await self._tx(op, begin=_name_lock(key))

    async def get_group(self, key: str) -> GroupRecord | None:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> GroupRecord | None:
            try:
                return await roomops.drive_async(roomops.group(key), c)
            except NotFound:
                return None

        return await self._auto(op)

    async def join_group(self, key: str, user: User, key_hash: str = "", most: int = 0) -> RoomChange:
        _no_nul(key)
        return await self._room(key, roomops.join(key, user, key_hash, most))  # waits for sends in flight

    async def leave_group(self, key: str, user: User) -> RoomChange:
        _no_nul(key)
        # Exclusive: no send can queue a message for this user after its queue is emptied.
        return await self._room(key, roomops.leave(key, user))

    async def list_groups(self, user_key: str) -> list[GroupInfo]:
        async def op(c: asyncpg.Connection) -> list[GroupInfo]:
            # COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
            rows = await c.fetch(
                "SELECT g.name, m.role, (SELECT count(*) FROM members x WHERE x.group_key = g.key) AS n "
                "FROM members m JOIN groups g ON g.key = m.group_key WHERE m.user_key=$1 "
                'ORDER BY g.key COLLATE "C"', user_key)
            return [GroupInfo(r["name"], r["role"], r["n"]) for r in rows]

        return await self._auto(op)

    async def invite(self, key: str, actor: User, target_key: str) -> RoomChange:
        _no_nul(key, target_key)
        return await self._room(key, roomops.invite(key, actor, target_key))

    async def kick(self, key: str, actor: User, target_key: str) -> RoomChange:
        _no_nul(key, target_key)
        return await self._room(key, roomops.kick(key, actor, target_key))

    async def ban(self, key: str, actor: User, target_key: str, reason: str = "") -> RoomChange:
        _no_nul(key, target_key, reason)
        return await self._room(key, roomops.ban(key, actor, target_key, reason))

    async def unban(self, key: str, actor: User, target_key: str) -> RoomChange:
        _no_nul(key, target_key)
        return await self._room(key, roomops.unban(key, actor, target_key))

    async def set_role(self, key: str, actor: User, target_key: str, role: str) -> RoomChange:
        _no_nul(key, target_key, role)
        return await self._room(key, roomops.set_role(key, actor, target_key, role))

    async def set_topic(self, key: str, actor: User, topic: str) -> RoomChange:
        _no_nul(key, topic)
        return await self._room(key, roomops.set_topic(key, actor, topic, utc_now_iso()))

    async def set_group_key(self, key: str, actor: User, key_hash: str) -> RoomChange:
        _no_nul(key, key_hash)
        return await self._room(key, roomops.set_group_key(key, actor, key_hash))

    async def set_group_mode(self, key: str, actor: User, mode: str) -> RoomChange:
        _no_nul(key)
        return await self._room(key, roomops.set_group_mode(key, actor, mode))

    async def delete_group(self, key: str, actor: User) -> RoomChange:
        _no_nul(key)
        return await self._room(key, roomops.delete_group(key, actor))

    async def room(self, key: str, user_key: str) -> GroupRecord:
        _no_nul(key)
        return await self._read_room(roomops.room(key, user_key))

    async def member_group(self, key: str, user_key: str) -> GroupRecord:
        _no_nul(key)
        return await self._read_room(roomops.check_member(key, user_key))

    async def members(self, key: str, user_key: str, bans: int = 0) -> Roll:
        _no_nul(key)
        if bans <= 0:
            return await self._read_room(roomops.members(key, user_key))
        # One snapshot: the bans are shown by the role the same read lists.
        return await self._tx(lambda c: roomops.drive_async(roomops.members(key, user_key, bans), c),
                              begin="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    async def browse_groups(self, user_key: str, like: str) -> list[RoomInfo]:
        _no_nul(like)
        return await self._read_room(roomops.browse(user_key, like, ' COLLATE "C"'))

    # ---- conversation state (convops) --------------------------------------------------------

    async def conversations(self, user_key: str) -> list[ConversationRecord]:
        return await self._auto(lambda c: roomops.drive_async(convops.conversations(user_key), c))

    async def mark_read(self, user_key: str, peer_key: str, msg_id: int) -> ReadMark:
        # Statements in autocommit: the upsert alone keeps the marker monotonic (its CASE is
        # evaluated on the locked row), so running it again is harmless.
        return await self._auto(lambda c: roomops.drive_async(convops.mark_read(user_key, peer_key, msg_id), c))

    async def set_receipts(self, user_key: str, enabled: bool | None) -> bool:
        return await self._auto(lambda c: roomops.drive_async(convops.set_receipts(user_key, enabled), c))

    async def waiting(self, user_key: str, limit: int) -> Waiting:
        return await self._auto(lambda c: roomops.drive_async(convops.waiting(user_key, limit), c))

    async def audience(self, user_key: str) -> list[str]:
        return await self._auto(lambda c: roomops.drive_async(convops.audience(user_key), c))

    # ---- files -------------------------------------------------------------------------------

    async def add_file(self, sender: User, to: User, name: str, size: int, sha256: str) -> FileRecord:
        _no_nul(name, sha256)

        async def op(c: asyncpg.Connection) -> FileRecord:
            r = await c.fetchrow(
                "INSERT INTO files(sender, to_name, to_key, name, size, sha256) VALUES ($1, $2, $3, $4, $5, $6) "
                "RETURNING id, ts", sender.name, to.name, to.key, name, size, sha256)
            return FileRecord(r["id"], sender.name, to.name, to.key, name, size, sha256, r["ts"])

        return await self._auto(op, idempotent=False)

    async def add_group_file(self, sender: User, group_key: str, name: str, size: int, sha256: str
                             ) -> tuple[FileRecord, list[str]]:
        _no_nul(group_key, name, sha256)
        return await self._room(group_key, roomops.add_group_file(sender, group_key, name, size, sha256, None))

    async def pending_files(self, user_key: str) -> list[FileRecord]:
        async def op(c: asyncpg.Connection) -> list[FileRecord]:
            rows = await c.fetch(
                f"SELECT {_FILE_COLS} FROM files WHERE to_key=$1 AND NOT downloaded UNION ALL "
                f"SELECT {', '.join('f.' + col for col in _FILE_COLS.split(', '))} FROM file_recipients r "
                "JOIN files f ON f.id = r.file_id WHERE r.user_key=$1 AND NOT r.downloaded ORDER BY id", user_key)
            return [_file(r) for r in rows]

        return await self._auto(op)

    async def file_digests(self) -> set[str]:
        return {r[0] for r in await self._auto(lambda c: c.fetch("SELECT DISTINCT sha256 FROM files"))}

    async def get_file(self, file_id: int) -> FileRecord | None:
        async def op(c: asyncpg.Connection) -> FileRecord | None:
            r = await c.fetchrow(f"SELECT {_FILE_COLS} FROM files WHERE id=$1", file_id)
            return _file(r) if r else None

        if not -(1 << 63) <= file_id < 1 << 63:
            return None  # out of BIGINT range: no such file (not a driver overflow error)
        return await self._auto(op)

    async def open_file(self, file_id: int, user_key: str) -> FileRecord:
        if not -(1 << 63) <= file_id < 1 << 63:
            raise NotFound(f"no file {file_id} for you: 'receivefile' lists yours")
        return await self._read_room(roomops.open_file(file_id, user_key))

    async def mark_downloaded(self, file_id: int, user_key: str) -> None:
        if -(1 << 63) <= file_id < 1 << 63:
            await self._read_room(roomops.mark_downloaded(file_id, user_key))  # idempotent: retried freely
