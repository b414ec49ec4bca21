"""SQLite engine: WAL mode, one writer thread, group commit.

Every operation is a function run on the writer thread's connection. The thread takes all
operations that are waiting (up to BATCH_MAX), runs each inside its own SAVEPOINT within one
transaction, commits once, then resolves their futures: under load many messages share one
fsync, and no caller is answered before its commit."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from realmchat.errors import AlreadyExists, ChatError, NotFound, PermissionDenied

from ..metrics import COMMIT_OPS, COMMIT_SECONDS
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
from .searchtext import Term, fold, index_text
from .searchtext import terms as search_terms
from .walcheck import check_and_mark, mark_closed

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH_MAX = 512

# Versioned migrations: MIGRATIONS[i] brings the schema from version i to i+1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        pw_hash TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash TEXT NOT NULL UNIQUE,
        user_key TEXT NOT NULL REFERENCES users(key),
        realm TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE groups (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE members (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        role TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    ) WITHOUT ROWID;
    CREATE INDEX members_by_user ON members(user_key);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        to_name TEXT NOT NULL DEFAULT '',
        to_key TEXT NOT NULL DEFAULT '',
        group_name TEXT NOT NULL DEFAULT '',
        group_key TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX messages_private ON messages(sender_key, to_key, id) WHERE group_key = '';
    CREATE INDEX messages_group ON messages(group_key, id) WHERE group_key != '';
    CREATE TABLE undelivered (
        user_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        msg_id INTEGER NOT NULL REFERENCES messages(id),
        PRIMARY KEY (user_key, group_key, msg_id)
    ) WITHOUT ROWID;
    CREATE TABLE files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL,
        to_name TEXT NOT NULL,
        to_key TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        ts TEXT NOT NULL,
        downloaded INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX files_pending ON files(to_key, id) WHERE downloaded = 0;
    """,
    # Deliveries are marked by (user, message) without the group.
    """
    CREATE INDEX undelivered_by_msg ON undelivered(user_key, msg_id);
    """,
    # One b-tree instead of two: every recipient of every message is inserted here and deleted
    # once written, so the second index doubled the writer's work for the hottest rows. Keyed
    # by (user, message), a delivery is found directly; an inbox page of one conversation walks
    # the user's entries in id order and keeps its conversation's.
    """
    CREATE TABLE undelivered_v3 (
        user_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        msg_id INTEGER NOT NULL REFERENCES messages(id),
        PRIMARY KEY (user_key, msg_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO undelivered_v3(user_key, group_key, msg_id)
        SELECT user_key, group_key, msg_id FROM undelivered;
    DROP TABLE undelivered;
    ALTER TABLE undelivered_v3 RENAME TO undelivered;
    """,
    # Groups become rooms: public or private, a topic, an optional join key (its password
    # hash), roles owner/admin/member, bans, invitations, and each member's join point (the
    # group's newest message id when they joined: a private group shows history from there).
    # Group files are stored once; file_recipients says who they wait for. Groups made before
    # are public, their creator the owner (back in the group if they had left it).
    """
    ALTER TABLE groups ADD COLUMN mode TEXT NOT NULL DEFAULT 'public';
    ALTER TABLE groups ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    ALTER TABLE groups ADD COLUMN key_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE members ADD COLUMN joined_at_id INTEGER NOT NULL DEFAULT 0;
    INSERT INTO members(group_key, user_key, role) SELECT key, owner_key, 'owner' FROM groups WHERE true
        ON CONFLICT(group_key, user_key) DO UPDATE SET role = 'owner';
    CREATE TABLE group_invites (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        by_key TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    ) WITHOUT ROWID;
    CREATE TABLE group_bans (
        group_key TEXT NOT NULL REFERENCES groups(key),
        user_key TEXT NOT NULL REFERENCES users(key),
        by_key TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        ts TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    ) WITHOUT ROWID;
    ALTER TABLE files ADD COLUMN group_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE files ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
    CREATE INDEX files_by_group ON files(group_key, id) WHERE group_key != '';
    CREATE TABLE file_recipients (
        file_id INTEGER NOT NULL REFERENCES files(id),
        user_key TEXT NOT NULL,
        downloaded INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (file_id, user_key)
    ) WITHOUT ROWID;
    CREATE INDEX file_recipients_pending ON file_recipients(user_key, file_id) WHERE downloaded = 0;
    """,
    # Conversation state follows the user (main_server/storage/convops.py): each user's private
    # conversations with their newest message id (kept by a trigger at every private send, so listing them
    # never scans messages), a read marker per (user, conversation), the read-receipts setting,
    # and the mentions table (filled where messages are stored; counted here).
    """
    CREATE TABLE private_peers (
        user_key TEXT NOT NULL,
        peer_key TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        PRIMARY KEY (user_key, peer_key)
    ) WITHOUT ROWID;
    INSERT INTO private_peers(user_key, peer_key, last_id)
        SELECT a, b, MAX(id) FROM (SELECT sender_key AS a, to_key AS b, id FROM messages WHERE group_key = ''
                                   UNION ALL SELECT to_key, sender_key, id FROM messages WHERE group_key = '')
        GROUP BY a, b;
    CREATE TABLE read_markers (
        user_key TEXT NOT NULL,
        peer_key TEXT NOT NULL,
        read_id INTEGER NOT NULL,
        PRIMARY KEY (user_key, peer_key)
    ) WITHOUT ROWID;
    CREATE TRIGGER private_peers_keep AFTER INSERT ON messages WHEN NEW.group_key = '' BEGIN
        INSERT INTO private_peers(user_key, peer_key, last_id) VALUES (NEW.sender_key, NEW.to_key, NEW.id)
            ON CONFLICT(user_key, peer_key) DO UPDATE SET last_id = excluded.last_id;
        INSERT INTO private_peers(user_key, peer_key, last_id) VALUES (NEW.to_key, NEW.sender_key, NEW.id)
            ON CONFLICT(user_key, peer_key) DO UPDATE SET last_id = excluded.last_id;
    END;
    ALTER TABLE users ADD COLUMN receipts INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE IF NOT EXISTS mentions(user_key TEXT, msg_id INTEGER, PRIMARY KEY(user_key, msg_id))
    """,
    # Messages have a life: replies, edits, deletes (tombstones), reactions, mentions and
    # full-text search. messages_fts is a contentless FTS5 index kept in step by triggers: the
    # text, and a `scope` column of conversation tokens (u<hex user key> for both parties of a
    # private message, g<hex group key> for a group) so that a search looks only inside the
    # conversations the caller may read. mentions is shared with conversation state (unread
    # mentions), hence IF NOT EXISTS.
    """
    ALTER TABLE messages ADD COLUMN reply_to INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN edited TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE reactions (
        msg_id INTEGER NOT NULL REFERENCES messages(id),
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        emoji TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (msg_id, user_key, emoji)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS mentions (
        user_key TEXT NOT NULL,
        msg_id INTEGER NOT NULL,
        PRIMARY KEY (user_key, msg_id)
    );
    CREATE INDEX IF NOT EXISTS mentions_by_msg ON mentions(msg_id);
    CREATE VIRTUAL TABLE messages_fts USING fts5(text, scope, content='', tokenize='unicode61 remove_diacritics 2');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, text, scope) VALUES (new.id, new.text, CASE WHEN new.group_key = ''
            THEN 'u' || hex(new.sender_key) || ' u' || hex(new.to_key) ELSE 'g' || hex(new.group_key) END);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id, old.text,
            CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
        INSERT INTO messages_fts(rowid, text, scope) VALUES (new.id, new.text, CASE WHEN new.group_key = ''
            THEN 'u' || hex(new.sender_key) || ' u' || hex(new.to_key) ELSE 'g' || hex(new.group_key) END);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id, old.text,
            CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
    END;
    INSERT INTO messages_fts(rowid, text, scope) SELECT id, text,
        CASE WHEN group_key = '' THEN 'u' || hex(sender_key) || ' u' || hex(to_key) ELSE 'g' || hex(group_key) END
        FROM messages;
    """,
    # The search index is fed once per commit, not once per message: FTS5 writes its pending
    # terms out as a new segment at every savepoint, and every operation runs in one, so
    # indexing from an insert trigger cost a segment (and its merging) per message. fts_state
    # says up to which message id the index is complete; each commit moves it to the newest
    # message (messages_fts_catch_up indexes the ones in between, in the same transaction).
    # Edits and deletes touch the index only for messages it already holds: a newer one is
    # indexed later in its current state.
    """
    DROP TRIGGER messages_fts_insert;
    DROP TRIGGER messages_fts_update;
    DROP TRIGGER messages_fts_delete;
    CREATE TABLE fts_state (upto INTEGER NOT NULL);
    INSERT INTO fts_state(upto) SELECT coalesce(max(id), 0) FROM messages;
    CREATE TRIGGER messages_fts_catch_up AFTER UPDATE OF upto ON fts_state BEGIN
        INSERT INTO messages_fts(rowid, text, scope) SELECT id, text, CASE WHEN group_key = ''
            THEN 'u' || hex(sender_key) || ' u' || hex(to_key) ELSE 'g' || hex(group_key) END
            FROM messages WHERE id > old.upto AND id <= new.upto;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
    WHEN old.id <= (SELECT upto FROM fts_state) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id, old.text,
            CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
        INSERT INTO messages_fts(rowid, text, scope) VALUES (new.id, new.text, CASE WHEN new.group_key = ''
            THEN 'u' || hex(new.sender_key) || ' u' || hex(new.to_key) ELSE 'g' || hex(new.group_key) END);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT upto FROM fts_state) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id, old.text,
            CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
    END;
    """,
    # Words inside Chinese, Japanese and Korean text are found: the index is fed
    # realmchat_search_text(text) (searchtext.index_text: each run of their letters as its
    # overlapping pairs of characters), registered on the writer's connection. A text without
    # such letters is fed what it was fed before; the messages indexed already whose text has
    # some are indexed again (their old entries deleted with the text they were fed).
    """
    DROP TRIGGER messages_fts_catch_up;
    DROP TRIGGER messages_fts_update;
    DROP TRIGGER messages_fts_delete;
    INSERT INTO messages_fts(messages_fts, rowid, text, scope) SELECT 'delete', id, text,
        CASE WHEN group_key = '' THEN 'u' || hex(sender_key) || ' u' || hex(to_key) ELSE 'g' || hex(group_key) END
        FROM messages WHERE id <= (SELECT upto FROM fts_state) AND realmchat_search_text(text) <> text;
    INSERT INTO messages_fts(rowid, text, scope) SELECT id, realmchat_search_text(text),
        CASE WHEN group_key = '' THEN 'u' || hex(sender_key) || ' u' || hex(to_key) ELSE 'g' || hex(group_key) END
        FROM messages WHERE id <= (SELECT upto FROM fts_state) AND realmchat_search_text(text) <> text;
    CREATE TRIGGER messages_fts_catch_up AFTER UPDATE OF upto ON fts_state BEGIN
        INSERT INTO messages_fts(rowid, text, scope) SELECT id, realmchat_search_text(text), CASE WHEN group_key = ''
            THEN 'u' || hex(sender_key) || ' u' || hex(to_key) ELSE 'g' || hex(group_key) END
            FROM messages WHERE id > old.upto AND id <= new.upto;
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages
    WHEN old.id <= (SELECT upto FROM fts_state) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id,
            realmchat_search_text(old.text), CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
        INSERT INTO messages_fts(rowid, text, scope) VALUES (new.id, realmchat_search_text(new.text),
            CASE WHEN new.group_key = ''
            THEN 'u' || hex(new.sender_key) || ' u' || hex(new.to_key) ELSE 'g' || hex(new.group_key) END);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT upto FROM fts_state) BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text, scope) VALUES ('delete', old.id,
            realmchat_search_text(old.text), CASE WHEN old.group_key = ''
            THEN 'u' || hex(old.sender_key) || ' u' || hex(old.to_key) ELSE 'g' || hex(old.group_key) END);
    END;
    """,    # Who set a group's topic, and when; groups whose topic was set before: not known ('').
    """
    ALTER TABLE groups ADD COLUMN topic_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE groups ADD COLUMN topic_at TEXT NOT NULL DEFAULT '';
    """,
    # History by time (CHATHISTORY's timestamps): each conversation's messages by ts.
    """
    CREATE INDEX messages_private_ts ON messages(sender_key, to_key, ts) WHERE group_key = '';
    CREATE INDEX messages_group_ts ON messages(group_key, ts) WHERE group_key != '';
    """,
]
# Run before every commit (and once at start, for rows written while main was down): indexes
# the messages stored since the last one. Does nothing when no message was stored.
FTS_CATCH_UP = ("UPDATE fts_state SET upto = (SELECT max(id) FROM messages) "
                "WHERE upto < (SELECT max(id) FROM messages)")

_STOP = object()
# A word's document frequency, for its weight, is counted up to this many matches and estimated
# beyond from how far back its newest DF_SAMPLE matches reach.
DF_SAMPLE = 1000
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants
# The reader's mention flag, for queries over undelivered d joined to messages m.
_MENTION = "EXISTS (SELECT 1 FROM mentions x WHERE x.user_key = d.user_key AND x.msg_id = m.id) AS mention"


_message = roomops.message
_file = roomops.file


def split_statements(script: str) -> list[str]:
    """The statements of a migration, whole: a trigger's body holds semicolons of its own."""
    out: list[str] = []
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf)
    return out


def scope_token(kind: str, key: str) -> str:
    """A conversation token of messages_fts.scope: 'u' or 'g' and the key's UTF-8 in hex (as
    SQLite's hex() writes it in the triggers)."""
    return f'"{kind}{key.encode().hex().upper()}"'


def term_weight(c: sqlite3.Connection, term: Term, total: int) -> float:
    """bm25's IDF of one query term over all messages, its document frequency counted, or
    estimated for a very common one (FTS5's own bm25() walks every posting of every word, tens
    of ms for a word in half the messages)."""
    # One walk of the newest DF_SAMPLE matches: a prefix term merges the postings of all its
    # words at every query, so it is not done twice.
    match = f"text : ({fts_terms([term])})"
    n, oldest = c.execute("SELECT count(*), min(rowid) FROM (SELECT rowid FROM messages_fts WHERE messages_fts "
                          "MATCH ? ORDER BY rowid DESC LIMIT ?)", (match, DF_SAMPLE)).fetchone()
    df = n if n < DF_SAMPLE else min(total, DF_SAMPLE * total / max(total - oldest + 1, 1))
    return max(math.log((total - df + 0.5) / (df + 0.5)), 1e-6)


def term_count(tokens: list[str], phrase: tuple[str, ...], prefix: bool) -> int:
    """How often a term's phrase occurs in a text's tokens (its last token a prefix or not)."""
    *head, last = phrase
    n = len(head)
    return sum(1 for i in range(len(tokens) - n)
               if tokens[i:i + n] == head and (tokens[i + n].startswith(last) if prefix else tokens[i + n] == last))


def bm25_order(c: sqlite3.Connection, records: list[MessageRecord], terms: list[Term]) -> list[MessageRecord]:
    """The records best first by BM25 over their indexed text (as FTS5's bm25() would rank
    them, a phrase counted as one word, with estimated weights for very common terms), newest
    first among equals."""
    if not records:
        return records
    total = c.execute("SELECT max(id) FROM messages").fetchone()[0] or 1
    wanted = [(tuple(fold(t.text)), t.prefix, term_weight(c, t, total)) for t in terms]
    # One word (the usual term) is counted by list.count; phrases and prefixes by term_count.
    words = [(phrase[0], idf) for phrase, prefix, idf in wanted if len(phrase) == 1 and not prefix]
    others = [(phrase, prefix, idf) for phrase, prefix, idf in wanted if len(phrase) > 1 or prefix]
    tokens = [fold(r.text if r.text.isascii() else index_text(r.text)) for r in records]
    avg = max(sum(map(len, tokens)) / len(tokens), 1.0)

    def score(toks: list[str]) -> float:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(toks) / avg)
        value = sum(idf * (tf := toks.count(w)) * (BM25_K1 + 1) / (tf + norm) for w, idf in words)
        if others:
            value += sum(idf * (tf := term_count(toks, phrase, prefix)) * (BM25_K1 + 1) / (tf + norm)
                         for phrase, prefix, idf in others)
        return value

    scored = sorted(zip(records, tokens, strict=True), key=lambda rt: (-score(rt[1]), -rt[0].id))
    return [r for r, _ in scored]


def fts_terms(terms: list[Term]) -> str:
    """The terms as FTS5 phrases (each quoted, a quote inside doubled; `*` after a prefix):
    never query syntax of the caller's."""
    return " ".join('"' + t.text.replace('"', '""') + '"' + ("*" if t.prefix else "") for t in terms)


class SQLiteStorage(Storage):
    def __init__(self, path: Path, synchronous: str = "FULL", allow_wal_loss: bool = False) -> None:
        self.path = path
        self.synchronous = synchronous
        self.allow_wal_loss = allow_wal_loss
        # Reads that must not wait behind writes (token lookups) run on their own connection
        # and thread: WAL lets readers and the writer work at once.
        self._reader: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.ops = 0
        self.lazy_commits = 0  # commits that left their fsync to the next synchronous one
        self._catch_up = ""  # FTS_CATCH_UP once the schema has fts_state
        # The writer's memory of user names by key (users are never renamed or removed): a
        # private send reads its recipient's name from here. Forgotten when a batch rolls back,
        # which may undo a user this batch created.
        self._names: dict[str, str] = {}

    # ---- the writer thread -------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = check_and_mark(self.path, self.allow_wal_loss)  # raises WalLost
        if problem:
            log.warning("--allow-wal-loss: %s", problem)
        # Data files are the owner's only (SQLite gives -wal and -shm the database file's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                os.chmod(p, 0o600)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()

        def started(exc: BaseException | None) -> None:
            if exc is None:
                ready.set_result(None)
            else:
                ready.set_exception(exc)

        self._thread = threading.Thread(target=self._run, args=(started,), name="sqlite-writer",
                                        daemon=True)
        self._thread.start()
        await ready
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=True)
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            # The writer's connection was the last: SQLite checkpointed and removed the log.
            mark_closed(self.path)

    def _close_reader(self) -> None:
        conn = getattr(self._reader_local, "conn", None)
        if conn is not None:
            conn.close()
            self._reader_local.conn = None

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._reader_local.conn = conn
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise RuntimeError("storage is closed")
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(reader, lambda: fn(self._reader_conn()))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        # What the search index is fed (its triggers call it): only this connection writes.
        conn.create_function("realmchat_search_text", 1, index_text, deterministic=True)
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            for stmt in split_statements(MIGRATIONS[i]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={i + 1}")
            conn.execute("COMMIT")
            log.info("sqlite schema migrated to version %d", i + 1)

    def _run(self, started: Callable[[BaseException | None], None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            conn = self._connect()
            self._migrate(conn)
            # Tests open databases of older schema versions, which index by trigger.
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fts_state'").fetchone():
                self._catch_up = FTS_CATCH_UP
                conn.execute(FTS_CATCH_UP)
        except BaseException as exc:
            loop.call_soon_threadsafe(started, exc)
            return
        loop.call_soon_threadsafe(started, None)
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < BATCH_MAX:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(nxt)
            results = self._run_batch(conn, batch)
            loop.call_soon_threadsafe(_resolve_all, results)
        conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, Any, Any]]:
        results: list[tuple[Any, Any, Any]] = []
        t0 = time.perf_counter()
        # A batch of nothing but lazy writes commits without its own fsync: in WAL mode its frames
        # become durable with the next synchronous commit (or checkpoint). A process crash loses
        # nothing either way; a power cut may undo it.
        lazy = self.synchronous == "FULL" and all(item[3] for item in batch)
        if lazy:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut, checks_first, _ in batch:
                if checks_first:
                    # Its refusals come before its first write: nothing to roll back. Any other
                    # error fails the whole batch (below), as a failed commit would.
                    try:
                        results.append((fut, fn(conn), None))
                    except ChatError as exc:
                        results.append((fut, None, exc))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                except BaseException as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((fut, None, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((fut, value, None))
            if self._catch_up:
                conn.execute(self._catch_up)
            conn.execute("COMMIT")
            self.commits += 1
            self.ops += len(batch)
            COMMIT_SECONDS.observe(time.perf_counter() - t0)
            COMMIT_OPS.observe(len(batch))
            if lazy:
                self.lazy_commits += 1
        except BaseException as exc:  # the commit itself failed: nobody's write happened
            log.exception("sqlite batch failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._names.clear()
            return [(fut, None, exc) for _, fut, _, _ in batch]
        finally:
            if lazy:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return results

    async def _do(self, fn: Callable[[sqlite3.Connection], T], checks_first: bool = False, lazy: bool = False) -> T:
        """Runs fn on the writer thread inside the next batch's transaction; an error it raises
        undoes its writes alone (a savepoint each), or, with checks_first (fn raises ChatError
        only before its first write, the hot paths), nothing needs undoing and no savepoint is
        spent on it. lazy: a write whose loss in a power cut is harmless (see _run_batch)."""
        if self._thread is None:
            raise RuntimeError("storage is closed")
        assert self._loop is not None
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, fut, checks_first, lazy))
        return await fut

    # ---- users and sessions ------------------------------------------------------------------

    async def create_user(self, key: str, name: str, pw_hash: str) -> User:
        def op(c: sqlite3.Connection) -> User:
            if c.execute("SELECT 1 FROM groups WHERE key=?", (key,)).fetchone():
                raise AlreadyExists(f"{name!r} is the name of a group: pick another user name")
            try:
                c.execute("INSERT INTO users(key, name, pw_hash, created) VALUES (?,?,?,?)",
                          (key, name, pw_hash, utc_now_iso()))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"user {name!r} already exists: pick another name") from None
            return User(key, name, pw_hash)

        return await self._do(op)

    async def get_user(self, key: str) -> User | None:
        def op(c: sqlite3.Connection) -> User | None:
            r = c.execute("SELECT key, name, pw_hash FROM users WHERE key=?", (key,)).fetchone()
            return User(r["key"], r["name"], r["pw_hash"]) if r else None

        return await self._do(op)

    async def create_session(self, token_hash: str, user: User, realm: str) -> SessionRecord:
        def op(c: sqlite3.Connection) -> SessionRecord:
            now = time.time()
            cur = c.execute("INSERT INTO sessions(token_hash, user_key, realm, created) VALUES (?,?,?,?)",
                            (token_hash, user.key, realm, now))
            return SessionRecord(int(cur.lastrowid or 0), user.key, user.name, realm, now)

        return await self._do(op)

    async def get_session(self, token_hash: str, max_age_s: float) -> SessionRecord | None:
        # On the read connection: a flood of unknown tokens must not queue on the writer.
        def op(c: sqlite3.Connection) -> sqlite3.Row | None:
            return c.execute(  # type: ignore[no-any-return]
                "SELECT s.id, s.user_key, u.name, s.realm, s.created FROM sessions s "
                "JOIN users u ON u.key = s.user_key WHERE s.token_hash=?", (token_hash,)).fetchone()

        r = await self._read(op)
        if r is None:
            return None
        if time.time() - r["created"] > max_age_s:
            await self.delete_session(token_hash)
            return None
        return SessionRecord(r["id"], r["user_key"], r["name"], r["realm"], r["created"])

    async def delete_session(self, token_hash: str) -> None:
        await self._do(lambda c: c.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,)))

    # ---- messages ----------------------------------------------------------------------------

    async def store_private(self, sender: User, to_key: str, text: str, reply_to: int = 0,
                            mentions: tuple[str, ...] = ()) -> Stored:
        def op(c: sqlite3.Connection) -> Stored:
            to_name = self._names.get(to_key)
            if to_name is None:
                r = c.execute("SELECT name FROM users WHERE key=?", (to_key,)).fetchone()
                if r is None:
                    raise NotFound(f"no user {to_key!r}: check the name (who lists online users)")
                to_name = self._names[to_key] = r["name"]
            ts = utc_now_iso()
            cur = c.execute(
                "INSERT INTO messages(sender, sender_key, to_name, to_key, text, ts, reply_to) VALUES (?,?,?,?,?,?,?)",
                (sender.name, sender.key, to_name, to_key, text, ts, reply_to))
            msg_id = int(cur.lastrowid or 0)
            c.execute("INSERT INTO undelivered(user_key, group_key, msg_id) VALUES (?,?,?)", (to_key, "", msg_id))
            named = [to_key] if to_key in mentions and to_key != sender.key else []
            if named:
                c.execute("INSERT INTO mentions(user_key, msg_id) VALUES (?,?)", (to_key, msg_id))
            return Stored(MessageRecord(msg_id, sender.name, text, ts, to=to_name, reply_to=reply_to), [to_key],
                          named)

        return await self._do(op, checks_first=True)

    async def store_group(self, sender: User, group_key: str, text: str, reply_to: int = 0,
                          mentions: tuple[str, ...] = ()) -> Stored:
        def op(c: sqlite3.Connection) -> Stored:
            g = c.execute("SELECT name FROM groups WHERE key=?", (group_key,)).fetchone()
            if g is None:
                raise NotFound(f"no group {group_key!r}: create it with creategroup")
            # One row, split here: a row object per member cost more than the query.
            joined = c.execute("SELECT group_concat(user_key, ' ') FROM members WHERE group_key=?",
                               (group_key,)).fetchone()[0]
            members = joined.split(" ") if joined else []  # names hold no spaces (realmchat.names)
            if sender.key not in members:
                raise PermissionDenied(f"you are not a member of {g['name']!r}: joingroup first")
            ts = utc_now_iso()
            cur = c.execute(
                "INSERT INTO messages(sender, sender_key, group_name, group_key, text, ts, reply_to) "
                "VALUES (?,?,?,?,?,?,?)", (sender.name, sender.key, g["name"], group_key, text, ts, reply_to))
            msg_id = int(cur.lastrowid or 0)
            recipients = [m for m in members if m != sender.key]
            # One statement, not one per recipient: the rows come from members in SQLite's own loop.
            c.execute("INSERT INTO undelivered(user_key, group_key, msg_id) SELECT user_key, group_key, ? "
                      "FROM members WHERE group_key=? AND user_key != ?", (msg_id, group_key, sender.key))
            named = sorted(set(mentions) & set(recipients))
            c.executemany("INSERT INTO mentions(user_key, msg_id) VALUES (?,?)", [(k, msg_id) for k in named])
            return Stored(MessageRecord(msg_id, sender.name, text, ts, group=g["name"], reply_to=reply_to),
                          recipients, named)

        return await self._do(op, checks_first=True)

    async def mark_delivered(self, pairs: list[tuple[str, int]]) -> None:
        # Lazy: a delivered row that a power cut brings back only repeats a message, which
        # clients drop by id.
        await self._do(lambda c: c.executemany("DELETE FROM undelivered WHERE user_key=? AND msg_id=?", pairs),
                       checks_first=True, lazy=True)

    def _peek(self, c: sqlite3.Connection, user_key: str, group_key: str, limit: int, skip: frozenset[int]
              ) -> tuple[list[MessageRecord], bool]:
        rows = c.execute(
            f"SELECT m.*, {_MENTION} FROM undelivered d JOIN messages m ON m.id = d.msg_id "
            "WHERE d.user_key=? AND d.group_key=? ORDER BY d.msg_id LIMIT ?",
            (user_key, group_key, limit + 1 + len(skip))).fetchall()
        rows = [r for r in rows if r["id"] not in skip]
        more = len(rows) > limit
        return roomops.drive_sync(roomops.with_reactions([_message(r) for r in rows[:limit]]), c), more

    async def peek_inbox(self, user_key: str, limit: int, skip: frozenset[int] = frozenset()
                         ) -> tuple[list[MessageRecord], bool]:
        return await self._do(lambda c: self._peek(c, user_key, "", limit, skip))

    async def peek_inbox_group(self, user_key: str, group_key: str, limit: int,
                               skip: frozenset[int] = frozenset()) -> tuple[list[MessageRecord], bool]:
        def op(c: sqlite3.Connection) -> tuple[list[MessageRecord], bool]:
            self._check_member(c, group_key, user_key)
            return self._peek(c, user_key, group_key, limit, skip)

        return await self._do(op)

    async def peek_pending(self, user_key: str, limit: int) -> list[MessageRecord]:
        def op(c: sqlite3.Connection) -> list[MessageRecord]:
            rows = c.execute(
                f"SELECT m.*, {_MENTION} FROM undelivered d JOIN messages m ON m.id = d.msg_id "
                "WHERE d.user_key=? ORDER BY d.msg_id LIMIT ?", (user_key, limit)).fetchall()
            return roomops.drive_sync(roomops.with_reactions([_message(r) for r in rows]), c)

        return await self._do(op)

    async def waiting_for(self, msg_id: int, limit: int) -> list[str]:
        # On the read connection: a trace never holds up the writer.
        return await self._read(lambda c: [r[0] for r in c.execute(
            "SELECT user_key FROM undelivered WHERE msg_id=? ORDER BY user_key LIMIT ?", (msg_id, limit))])

    async def get_messages(self, ids: list[int]) -> list[MessageRecord]:
        def op(c: sqlite3.Connection) -> list[MessageRecord]:
            marks = ",".join("?" * len(ids))
            return [_message(r) for r in c.execute(f"SELECT * FROM messages WHERE id IN ({marks}) ORDER BY id", ids)]

        return await self._do(op) if ids else []

    async def window_private(self, a_key: str, b_key: str, window: Window) -> list[MessageRecord]:
        return await self._room(roomops.history_private(a_key, b_key, window))

    async def window_group(self, user_key: str, group_key: str, window: Window) -> list[MessageRecord]:
        return await self._room(roomops.history(user_key, group_key, window))

    # ---- the life of a message ---------------------------------------------------------------

    async def message_for(self, user_key: str, msg_id: int) -> MessageRecord:
        return await self._room(roomops.message_for(user_key, msg_id))

    async def edit_message(self, user: User, msg_id: int, text: str, mentions: tuple[str, ...] = ()
                           ) -> MessageChange:
        return await self._room(roomops.edit(user, msg_id, text, mentions, "?", (utc_now_iso(),)))

    async def delete_message(self, user: User, msg_id: int) -> MessageChange:
        return await self._room(roomops.delete(user, msg_id))

    async def react(self, user: User, msg_id: int, emoji: str, on: bool) -> MessageChange:
        return await self._room(roomops.react(user, msg_id, emoji, on))

    async def search(self, user_key: str, words: list[str], group_key: str = "", peer_key: str = "",
                     limit: int = 50) -> list[MessageRecord]:
        # On the read connection: a search never waits behind the writer, nor holds it up.
        def op(c: sqlite3.Connection) -> list[MessageRecord]:
            if group_key:
                roomops.drive_sync(roomops.check_member(group_key, user_key), c)
                scope = scope_token("g", group_key)
            elif peer_key:
                scope = f"{scope_token('u', user_key)} {scope_token('u', peer_key)}"
            else:
                groups = roomops.drive_sync(roomops.user_groups(user_key), c)
                scope = " OR ".join([scope_token("u", user_key), *(scope_token("g", g) for g in groups)])
            wanted = search_terms(words)
            if not wanted:  # words of punctuation only: nothing (never everything in scope)
                return []
            match = f"text : ({fts_terms(wanted)}) AND scope : ({scope})"
            extra = ("AND m.group_key = '' AND ((m.sender_key = ? AND m.to_key = ?) OR (m.sender_key = ? AND "
                     "m.to_key = ?)) ", (user_key, peer_key, peer_key, user_key)) if peer_key else ("", ())
            # The newest SEARCH_CANDIDATES matches inside the caller's conversations (FTS5 walks its
            # postings newest first and stops there), the access check on those rows only,
            # then BM25 here: a word found in most messages costs about what a rarer one does.
            rows = c.execute(
                f"SELECT {', '.join('m.' + col for col in roomops.MSG_COLS.split(', '))} FROM ("
                "SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT ?) f "
                f"JOIN messages m ON m.id = f.id {roomops.SEARCH_JOIN} WHERE {roomops.SEARCH_ACCESS} {extra[0]}",
                (match, roomops.SEARCH_CANDIDATES, user_key, user_key, user_key, *extra[1])).fetchall()
            best = bm25_order(c, [_message(r) for r in rows], wanted)[:limit]
            return roomops.drive_sync(roomops.with_reactions(best), c)

        return await self._read(op)

    async def bulk_load(self, rows: list[tuple[str, str, str, str, str, str, str, str]]) -> None:
        """Stored messages in bulk, delivered already (a benchmark's or an import's load):
        (sender, sender_key, to_name, to_key, group_name, group_key, text, ts) each."""
        await self._do(lambda c: c.executemany(
            "INSERT INTO messages(sender, sender_key, to_name, to_key, group_name, group_key, text, ts) "
            "VALUES (?,?,?,?,?,?,?,?)", rows))

    # ---- groups ------------------------------------------------------------------------------

    async def _room(self, op: roomops.Op[T]) -> T:
        """A shared room operation (roomops), run by the writer: atomic with its checks."""
        return await self._do(lambda c: roomops.drive_sync(op, c))

    def _check_member(self, c: sqlite3.Connection, group_key: str, user_key: str) -> GroupRecord:
        return roomops.drive_sync(roomops.check_member(group_key, user_key), c)

    async def create_group(self, key: str, name: str, owner: User, mode: str = "public",
                           most: int = 0) -> GroupRecord:
        def op(c: sqlite3.Connection) -> GroupRecord:
            if c.execute("SELECT 1 FROM users WHERE key=?", (key,)).fetchone():
                raise AlreadyExists(f"{name!r} is the name of a user: pick another group name")
            roomops.drive_sync(roomops.room_for_one_more(owner.key, most), c)
            created = utc_now_iso()
            try:
                c.execute("INSERT INTO groups(key, name, owner_key, created, mode) VALUES (?,?,?,?,?)",
                          (key, name, owner.key, created, mode))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"group {name!r} already exists: joingroup to join it") from None
            c.execute("INSERT INTO members(group_key, user_key, role) VALUES (?,?,?)", (key, owner.key, "owner"))
            return GroupRecord(key, name, mode, created=created)

        return await self._do(op)

    async def get_group(self, key: str) -> GroupRecord | None:
        def op(c: sqlite3.Connection) -> GroupRecord | None:
            try:
                return roomops.drive_sync(roomops.group(key), c)
            except NotFound:
                return None

        return await self._do(op)

    async def join_group(self, key: str, user: User, key_hash: str = "", most: int = 0) -> RoomChange:
        return await self._room(roomops.join(key, user, key_hash, most))

    async def leave_group(self, key: str, user: User) -> RoomChange:
        return await self._room(roomops.leave(key, user))

    async def list_groups(self, user_key: str) -> list[GroupInfo]:
        def op(c: sqlite3.Connection) -> list[GroupInfo]:
            rows = c.execute(
                "SELECT g.name, m.role, (SELECT COUNT(*) FROM members x WHERE x.group_key = g.key) AS n "
                "FROM members m JOIN groups g ON g.key = m.group_key WHERE m.user_key=? ORDER BY g.key",
                (user_key,)).fetchall()
            return [GroupInfo(r["name"], r["role"], r["n"]) for r in rows]

        return await self._do(op)

    async def invite(self, key: str, actor: User, target_key: str) -> RoomChange:
        return await self._room(roomops.invite(key, actor, target_key))

    async def kick(self, key: str, actor: User, target_key: str) -> RoomChange:
        return await self._room(roomops.kick(key, actor, target_key))

    async def ban(self, key: str, actor: User, target_key: str, reason: str = "") -> RoomChange:
        return await self._room(roomops.ban(key, actor, target_key, reason))

    async def unban(self, key: str, actor: User, target_key: str) -> RoomChange:
        return await self._room(roomops.unban(key, actor, target_key))

    async def set_role(self, key: str, actor: User, target_key: str, role: str) -> RoomChange:
        return await self._room(roomops.set_role(key, actor, target_key, role))

    async def set_topic(self, key: str, actor: User, topic: str) -> RoomChange:
        return await self._room(roomops.set_topic(key, actor, topic, utc_now_iso()))

    async def set_group_key(self, key: str, actor: User, key_hash: str) -> RoomChange:
        return await self._room(roomops.set_group_key(key, actor, key_hash))

    async def set_group_mode(self, key: str, actor: User, mode: str) -> RoomChange:
        return await self._room(roomops.set_group_mode(key, actor, mode))

    async def delete_group(self, key: str, actor: User) -> RoomChange:
        return await self._room(roomops.delete_group(key, actor))

    async def room(self, key: str, user_key: str) -> GroupRecord:
        return await self._room(roomops.room(key, user_key))

    async def member_group(self, key: str, user_key: str) -> GroupRecord:
        return await self._room(roomops.check_member(key, user_key))

    async def members(self, key: str, user_key: str, bans: int = 0) -> Roll:
        return await self._room(roomops.members(key, user_key, bans))

    async def browse_groups(self, user_key: str, like: str) -> list[RoomInfo]:
        return await self._room(roomops.browse(user_key, like))

    # ---- conversation state (convops) --------------------------------------------------------

    async def conversations(self, user_key: str) -> list[ConversationRecord]:
        # Reads: on the read connection, so a busy writer does not hold them up (nor they it).
        return await self._read(lambda c: roomops.drive_sync(convops.conversations(user_key), c))

    async def mark_read(self, user_key: str, peer_key: str, msg_id: int) -> ReadMark:
        return await self._do(lambda c: roomops.drive_sync(convops.mark_read(user_key, peer_key, msg_id), c))

    async def set_receipts(self, user_key: str, enabled: bool | None) -> bool:
        return await self._do(lambda c: roomops.drive_sync(convops.set_receipts(user_key, enabled), c))

    async def waiting(self, user_key: str, limit: int) -> Waiting:
        return await self._read(lambda c: roomops.drive_sync(convops.waiting(user_key, limit), c))

    async def audience(self, user_key: str) -> list[str]:
        return await self._read(lambda c: roomops.drive_sync(convops.audience(user_key), c))

    # ---- files -------------------------------------------------------------------------------

    async def add_file(self, sender: User, to: User, name: str, size: int, sha256: str) -> FileRecord:
        def op(c: sqlite3.Connection) -> FileRecord:
            ts = utc_now_iso()
            cur = c.execute(
                "INSERT INTO files(sender, to_name, to_key, name, size, sha256, ts) VALUES (?,?,?,?,?,?,?)",
                (sender.name, to.name, to.key, name, size, sha256, ts))
            return FileRecord(int(cur.lastrowid or 0), sender.name, to.name, to.key, name, size, sha256, ts)

        return await self._do(op)

    async def add_group_file(self, sender: User, group_key: str, name: str, size: int, sha256: str
                             ) -> tuple[FileRecord, list[str]]:
        return await self._room(roomops.add_group_file(sender, group_key, name, size, sha256, utc_now_iso()))

    async def pending_files(self, user_key: str) -> list[FileRecord]:
        def op(c: sqlite3.Connection) -> list[FileRecord]:
            rows = c.execute(
                f"SELECT {roomops.FILE_COLS} FROM files WHERE to_key=? AND downloaded=0 UNION ALL "
                f"SELECT {', '.join('f.' + col for col in roomops.FILE_COLS.split(', '))} "
                "FROM file_recipients r JOIN files f ON f.id = r.file_id WHERE r.user_key=? AND r.downloaded=0 "
                "ORDER BY id", (user_key, user_key)).fetchall()
            return [_file(r) for r in rows]

        return await self._do(op)

    async def file_digests(self) -> set[str]:
        return await self._read(lambda c: {r[0] for r in c.execute("SELECT DISTINCT sha256 FROM files")})

    async def get_file(self, file_id: int) -> FileRecord | None:
        def op(c: sqlite3.Connection) -> FileRecord | None:
            r = c.execute(f"SELECT {roomops.FILE_COLS} FROM files WHERE id=?", (file_id,)).fetchone()
            return _file(r) if r else None

        return await self._do(op)

    async def open_file(self, file_id: int, user_key: str) -> FileRecord:
        return await self._room(roomops.open_file(file_id, user_key))

    async def mark_downloaded(self, file_id: int, user_key: str) -> None:
        await self._room(roomops.mark_downloaded(file_id, user_key))


def _resolve_all(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)


def backup(src: Path, dest: Path) -> int:
    """Copies a live database with SQLite's online backup API (a consistent snapshot, taken
    while main keeps writing). Returns the pages copied."""
    if not src.exists():
        raise FileNotFoundError(f"no database at {src}")
    source = sqlite3.connect(src)
    old = os.umask(0o077)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target, pages=1024)
            pages = int(target.execute("PRAGMA page_count").fetchone()[0])
        finally:
            target.close()
    finally:
        os.umask(old)
        source.close()
    return pages
