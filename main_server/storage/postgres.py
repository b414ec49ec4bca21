"""PostgreSQL engine (asyncpg): the store several main replicas share.

One transaction per operation on a pooled connection. There is no group commit of our own:
PostgreSQL already flushes the WAL once for all the backends whose commits are waiting, so
concurrent operations on different pooled connections share fsyncs by themselves.

Semantics follow the SQLite engine, whose single writer makes every operation serializable.
Here operations run concurrently under READ COMMITTED, so the few that read-then-write take a
lock first (see _lock_user and the FOR UPDATE / FOR KEY SHARE on groups), and the ones that can
deadlock or hit a serialization failure are retried as a whole: an operation is a pure function
of the database (is_online has no side effects), so running it again is safe."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from realmchat.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unavailable

from .base import (
    FileRecord,
    GroupInfo,
    GroupRecord,
    MessageRecord,
    SessionRecord,
    Storage,
    Stored,
    User,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Key of the advisory lock held while migrating: replicas starting together migrate once.
MIGRATION_LOCK = 0x7265616C6D636874  # "realmcht"
RETRIES = 5
ACQUIRE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0

# ts is made by the database, not by each replica's clock, so that all replicas agree; the
# format is base.utc_now_iso()'s (milliseconds, 'Z').
_TS = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

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
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)

_MSG_COLS = "id, sender, text, ts, to_name, group_name"
_FILE_COLS = "id, sender, to_name, to_key, name, size, sha256, ts"


def _message(r: asyncpg.Record) -> MessageRecord:
    return MessageRecord(id=r["id"], sender=r["sender"], text=r["text"], ts=r["ts"],
                         to=r["to_name"], group=r["group_name"])


def _file(r: asyncpg.Record) -> FileRecord:
    return FileRecord(id=r["id"], sender=r["sender"], to=r["to_name"], to_key=r["to_key"],
                      name=r["name"], size=r["size"], sha256=r["sha256"], ts=r["ts"])


def _no_nul(*values: str) -> None:
    # PostgreSQL TEXT cannot hold U+0000 (SQLite can): say so plainly instead of a driver error.
    for v in values:
        if "\x00" in v:
            raise InvalidArgument("text must not contain NUL characters (U+0000)")


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def split_pool_options(url: str, min_size: int, max_size: int) -> tuple[str, int, int]:
    """Takes pool_min / pool_max out of the URL's query (asyncpg would send unknown query
    parameters to the server as settings, which rejects them)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    rest: list[tuple[str, str]] = []
    for k, v in query:
        if k == "pool_min":
            min_size = int(v)
        elif k == "pool_max":
            max_size = int(v)
        else:
            rest.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(rest))), min(min_size, max_size), max_size


class PostgresStorage(Storage):
    def __init__(self, url: str, min_size: int = 2, max_size: int = 10) -> None:
        # Ten connections saturate a small server; more only add lock and memory contention.
        # Operators tune it with ?pool_max=N in --db.
        self.url, self.min_size, self.max_size = split_pool_options(url, min_size, max_size)
        self._pool: asyncpg.Pool | None = None
        self.ops = 0
        self.retries = 0

    # ---- pool, transactions, migrations ------------------------------------------------------

    async def open(self) -> None:
        try:
            # timeout: connecting; asyncpg's default (60 s) would hold callers far past the
            # point where UNAVAILABLE (and a realm's failover) is the better answer.
            self._pool = await asyncpg.create_pool(self.url, min_size=self.min_size, max_size=self.max_size,
                                                   timeout=CONNECT_TIMEOUT_S)
        except (*_DOWN, asyncpg.exceptions.PostgresError) as exc:
            raise RuntimeError(f"cannot open PostgreSQL at {redact(self.url)}: {exc}") from exc
        try:
            await self._migrate()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def close(self) -> None:
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
        return await self._tx(lambda c: c.fetchval("SELECT max(version) FROM schema_version"))

    async def _tx(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Runs fn in one transaction on a pooled connection; returns after COMMIT."""
        if self._pool is None:
            raise RuntimeError("storage is closed")
        for attempt in range(RETRIES):
            committing = False
            try:
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as c, c.transaction():
                    value = await fn(c)
                    committing = True  # from here on the outcome of a failure is unknown
                self.ops += 1
                return value
            except _RETRY:
                if attempt == RETRIES - 1:
                    raise
                self.retries += 1
                await asyncio.sleep(0.005 * (attempt + 1))
            except _DOWN as exc:
                # A pooled connection the server closed (restart, failover, idle timeout) fails on
                # first use; nothing was committed before COMMIT, so once more on a fresh one.
                if not committing and attempt == 0 and not isinstance(exc, TimeoutError):
                    self.retries += 1
                    continue
                # Past COMMIT it may or may not have happened; UNAVAILABLE never promises it did.
                raise Unavailable(f"the database is unavailable ({type(exc).__name__}): try again") from exc
        raise AssertionError("unreachable")

    # ---- users and sessions ------------------------------------------------------------------

    async def create_user(self, key: str, name: str, pw_hash: str) -> User:
        _no_nul(key, name, pw_hash)

        async def op(c: asyncpg.Connection) -> User:
            # ON CONFLICT instead of catching UniqueViolation: the transaction stays usable.
            done = await c.fetchval("INSERT INTO users(key, name, pw_hash) VALUES ($1, $2, $3) "
                                    "ON CONFLICT DO NOTHING RETURNING 1", key, name, pw_hash)
            if done is None:
                raise AlreadyExists(f"user {name!r} already exists: pick another name")
            return User(key, name, pw_hash)

        return await self._tx(op)

    async def get_user(self, key: str) -> User | None:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> User | None:
            r = await c.fetchrow("SELECT key, name, pw_hash FROM users WHERE key=$1", key)
            return User(r["key"], r["name"], r["pw_hash"]) if r else None

        return await self._tx(op)

    async def create_session(self, token_hash: str, user: User, realm: str) -> SessionRecord:
        _no_nul(token_hash, realm)

        async def op(c: asyncpg.Connection) -> SessionRecord:
            sid = await c.fetchval("INSERT INTO sessions(token_hash, user_key, realm) VALUES ($1, $2, $3) "
                                   "RETURNING id", token_hash, user.key, realm)
            return SessionRecord(sid, user.key, user.name, realm)

        return await self._tx(op)

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
            return SessionRecord(r["id"], r["user_key"], r["name"], r["realm"])

        return await self._tx(op)

    async def delete_session(self, token_hash: str) -> None:
        _no_nul(token_hash)

        async def op(c: asyncpg.Connection) -> None:
            await c.execute("DELETE FROM sessions WHERE token_hash=$1", token_hash)

        await self._tx(op)

    # ---- messages ----------------------------------------------------------------------------

    async def store_private(self, sender: User, to_key: str, text: str,
                            is_online: Callable[[str], bool]) -> Stored:
        _no_nul(to_key, text)

        async def op(c: asyncpg.Connection) -> Stored:
            to_name = await c.fetchval("SELECT name FROM users WHERE key=$1", to_key)
            if to_name is None:
                raise NotFound(f"no user {to_key!r}: check the name (who lists online users)")
            r = await c.fetchrow(
                "INSERT INTO messages(sender, sender_key, to_name, to_key, text) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING id, ts", sender.name, sender.key, to_name, to_key, text)
            online = [to_key] if is_online(to_key) else []
            if not online:
                await c.execute("INSERT INTO undelivered(user_key, group_key, msg_id) VALUES ($1, '', $2)",
                                to_key, r["id"])
            return Stored(MessageRecord(r["id"], sender.name, text, r["ts"], to=to_name), online)

        return await self._tx(op)

    async def store_group(self, sender: User, group_key: str, text: str,
                          is_online: Callable[[str], bool]) -> Stored:
        _no_nul(group_key, text)

        async def op(c: asyncpg.Connection) -> Stored:
            # KEY SHARE: sends to one group run side by side, but not beside a join or leave
            # (FOR UPDATE there), so the member list read here stays true until commit.
            g = await c.fetchval("SELECT name FROM groups WHERE key=$1 FOR KEY SHARE", group_key)
            if g is None:
                raise NotFound(f"no group {group_key!r}: create it with creategroup")
            members = [r[0] for r in await c.fetch("SELECT user_key FROM members WHERE group_key=$1", group_key)]
            if sender.key not in members:
                raise PermissionDenied(f"you are not a member of {g!r}: joingroup first")
            r = await c.fetchrow(
                "INSERT INTO messages(sender, sender_key, group_name, group_key, text) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING id, ts", sender.name, sender.key, g, group_key, text)
            online: list[str] = []
            offline: list[str] = []
            for m in members:
                if is_online(m):
                    online.append(m)
                elif m != sender.key:
                    offline.append(m)
            if offline:
                # One statement for all offline members instead of a round trip each.
                await c.execute("INSERT INTO undelivered(user_key, group_key, msg_id) "
                                "SELECT u, $2, $3 FROM unnest($1::text[]) AS u", offline, group_key, r["id"])
            return Stored(MessageRecord(r["id"], sender.name, text, r["ts"], group=g), online)

        return await self._tx(op)

    async def requeue(self, user_keys: list[str], message: MessageRecord) -> None:
        group_key = message.group.lower()

        async def op(c: asyncpg.Connection) -> None:
            await c.execute("INSERT INTO undelivered(user_key, group_key, msg_id) "
                            "SELECT u, $2, $3 FROM unnest($1::text[]) AS u ON CONFLICT DO NOTHING",
                            user_keys, group_key, message.id)

        if user_keys:
            await self._tx(op)

    @staticmethod
    async def _lock_user(c: asyncpg.Connection, user_key: str) -> None:
        # Two takes for one user (two sessions calling inbox at once) must not both return the
        # same messages: they queue on a per-user lock held until commit. A hash collision
        # only makes two users' takes wait for each other.
        await c.execute("SELECT pg_advisory_xact_lock(hashtextextended('inbox:' || $1, 0))", user_key)

    async def _take(self, c: asyncpg.Connection, user_key: str, group_key: str | None, limit: int
                    ) -> tuple[list[MessageRecord], bool]:
        await self._lock_user(c, user_key)
        if group_key is None:
            rows = await c.fetch(
                f"SELECT {_MSG_COLS} FROM messages WHERE id IN ("
                "SELECT msg_id FROM undelivered WHERE user_key=$1 ORDER BY msg_id LIMIT $2) ORDER BY id",
                user_key, limit + 1)
        else:
            rows = await c.fetch(
                f"SELECT {_MSG_COLS} FROM messages WHERE id IN ("
                "SELECT msg_id FROM undelivered WHERE user_key=$1 AND group_key=$2 ORDER BY msg_id LIMIT $3) "
                "ORDER BY id", user_key, group_key, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        if rows:
            # Exactly the rows returned: a message whose id is lower but that committed after
            # our snapshot (ids are taken before commit) stays queued for the next take.
            ids = [r["id"] for r in rows]
            if group_key is None:
                await c.execute("DELETE FROM undelivered WHERE user_key=$1 AND msg_id = ANY($2::bigint[])",
                                user_key, ids)
            else:
                await c.execute("DELETE FROM undelivered WHERE user_key=$1 AND group_key=$2 "
                                "AND msg_id = ANY($3::bigint[])", user_key, group_key, ids)
        return [_message(r) for r in rows], more

    async def take_inbox(self, user_key: str, limit: int) -> tuple[list[MessageRecord], bool]:
        return await self._tx(lambda c: self._take(c, user_key, "", limit))

    async def take_inbox_group(self, user_key: str, group_key: str, limit: int
                               ) -> tuple[list[MessageRecord], bool]:
        async def op(c: asyncpg.Connection) -> tuple[list[MessageRecord], bool]:
            await self._check_member(c, group_key, user_key)
            return await self._take(c, user_key, group_key, limit)

        return await self._tx(op)

    async def take_pending(self, user_key: str, limit: int) -> list[MessageRecord]:
        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            msgs, _ = await self._take(c, user_key, None, limit)
            return msgs

        return await self._tx(op)

    async def history_private(self, a_key: str, b_key: str, limit: int) -> list[MessageRecord]:
        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            if a_key == b_key:  # notes to self: one direction, or UNION ALL would list each twice
                rows = await c.fetch(f"SELECT {_MSG_COLS} FROM messages WHERE group_key='' AND sender_key=$1 "
                                     "AND to_key=$1 ORDER BY id DESC LIMIT $2", a_key, limit)
                return [_message(r) for r in reversed(rows)]
            # Two index range scans (one per direction) rather than an OR the planner may not split.
            rows = await c.fetch(
                f"SELECT * FROM (SELECT {_MSG_COLS} FROM messages "
                "WHERE group_key='' AND sender_key=$1 AND to_key=$2 "
                f"UNION ALL SELECT {_MSG_COLS} FROM messages WHERE group_key='' AND sender_key=$2 AND to_key=$1) m "
                "ORDER BY id DESC LIMIT $3", a_key, b_key, limit)
            return [_message(r) for r in reversed(rows)]

        return await self._tx(op)

    async def history_group(self, user_key: str, group_key: str, limit: int) -> list[MessageRecord]:
        async def op(c: asyncpg.Connection) -> list[MessageRecord]:
            await self._check_member(c, group_key, user_key)
            rows = await c.fetch(f"SELECT {_MSG_COLS} FROM messages WHERE group_key=$1 ORDER BY id DESC LIMIT $2",
                                 group_key, limit)
            return [_message(r) for r in reversed(rows)]

        return await self._tx(op)

    # ---- groups ------------------------------------------------------------------------------

    @staticmethod
    async def _group(c: asyncpg.Connection, key: str, lock: str = "") -> GroupRecord:
        g = await c.fetchrow(f"SELECT key, name FROM groups WHERE key=$1 {lock}", key)
        if g is None:
            raise NotFound(f"no group {key!r}: check the name or create it with creategroup")
        return GroupRecord(g["key"], g["name"])

    async def _check_member(self, c: asyncpg.Connection, group_key: str, user_key: str,
                            lock: str = "") -> GroupRecord:
        g = await self._group(c, group_key, lock)
        if await c.fetchval("SELECT 1 FROM members WHERE group_key=$1 AND user_key=$2", group_key, user_key) is None:
            raise PermissionDenied(f"you are not a member of {g.name!r}: joingroup first")
        return g

    async def create_group(self, key: str, name: str, owner: User) -> GroupRecord:
        _no_nul(key, name)

        async def op(c: asyncpg.Connection) -> GroupRecord:
            done = await c.fetchval("INSERT INTO groups(key, name, owner_key) VALUES ($1, $2, $3) "
                                    "ON CONFLICT DO NOTHING RETURNING 1", key, name, owner.key)
            if done is None:
                raise AlreadyExists(f"group {name!r} already exists: joingroup to join it")
            await c.execute("INSERT INTO members(group_key, user_key, role) VALUES ($1, $2, 'owner')",
                            key, owner.key)
            return GroupRecord(key, name)

        return await self._tx(op)

    async def get_group(self, key: str) -> GroupRecord | None:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> GroupRecord | None:
            try:
                return await self._group(c, key)
            except NotFound:
                return None

        return await self._tx(op)

    async def join_group(self, key: str, user: User) -> GroupRecord:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> GroupRecord:
            g = await self._group(c, key, "FOR UPDATE")  # waits for sends in flight (KEY SHARE)
            await c.execute("INSERT INTO members(group_key, user_key, role) VALUES ($1, $2, 'member') "
                            "ON CONFLICT DO NOTHING", key, user.key)
            return g

        return await self._tx(op)

    async def leave_group(self, key: str, user: User) -> GroupRecord:
        _no_nul(key)

        async def op(c: asyncpg.Connection) -> GroupRecord:
            # FOR UPDATE: no send can queue a message for this user after its queue is emptied.
            g = await self._check_member(c, key, user.key, "FOR UPDATE")
            await c.execute("DELETE FROM members WHERE group_key=$1 AND user_key=$2", key, user.key)
            await c.execute("DELETE FROM undelivered WHERE user_key=$1 AND group_key=$2", user.key, key)
            return g

        return await self._tx(op)

    async def list_groups(self, user_key: str) -> list[GroupInfo]:
        async def op(c: asyncpg.Connection) -> list[GroupInfo]:
            rows = await c.fetch(
                "SELECT g.name, m.role, (SELECT count(*) FROM members x WHERE x.group_key = g.key) AS n "
                "FROM members m JOIN groups g ON g.key = m.group_key WHERE m.user_key=$1 "
                'ORDER BY g.key COLLATE "C"', user_key)
            return [GroupInfo(r["name"], r["role"], r["n"]) for r in rows]

        return await self._tx(op)

    # ---- files -------------------------------------------------------------------------------

    async def add_file(self, sender: User, to: User, name: str, size: int, sha256: str) -> FileRecord:
        _no_nul(name, sha256)

        async def op(c: asyncpg.Connection) -> FileRecord:
            r = await c.fetchrow(
                "INSERT INTO files(sender, to_name, to_key, name, size, sha256) VALUES ($1, $2, $3, $4, $5, $6) "
                "RETURNING id, ts", sender.name, to.name, to.key, name, size, sha256)
            return FileRecord(r["id"], sender.name, to.name, to.key, name, size, sha256, r["ts"])

        return await self._tx(op)

    async def pending_files(self, user_key: str) -> list[FileRecord]:
        async def op(c: asyncpg.Connection) -> list[FileRecord]:
            rows = await c.fetch(f"SELECT {_FILE_COLS} FROM files WHERE to_key=$1 AND NOT downloaded ORDER BY id",
                                 user_key)
            return [_file(r) for r in rows]

        return await self._tx(op)

    async def get_file(self, file_id: int) -> FileRecord | None:
        async def op(c: asyncpg.Connection) -> FileRecord | None:
            r = await c.fetchrow(f"SELECT {_FILE_COLS} FROM files WHERE id=$1", file_id)
            return _file(r) if r else None

        if not -(1 << 63) <= file_id < 1 << 63:
            return None  # out of BIGINT range: no such file (not a driver overflow error)
        return await self._tx(op)

    async def mark_downloaded(self, file_id: int) -> None:
        async def op(c: asyncpg.Connection) -> None:
            await c.execute("UPDATE files SET downloaded = true WHERE id=$1", file_id)

        if -(1 << 63) <= file_id < 1 << 63:
            await self._tx(op)

