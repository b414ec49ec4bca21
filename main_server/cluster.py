"""Several main replicas on one PostgreSQL database.

Replicas talk through PostgreSQL's LISTEN/NOTIFY (no extra server): a replica that stores a
message notifies the others with its id and recipients, and each pushes it to the sessions
attached to it (marking delivery as usual; what no replica pushes stays undelivered in the
database for inbox or the next resume). What the service tells the others (a message or file
stored, a live event, a logout, a status) is a notice of main_server/events.py, sent in its
one encoding (events.to_plain). Who is attached where is this module's own business: attach
and detach notices, a heartbeat, and a snapshot on request; a replica not heard from for
STALE_AFTER_S is dropped, so `who` stays right when one dies.

NOTIFY delivers every replica's notices to all of them in one order (commit order). When a
user's last session here ends, whether it was their last anywhere is decided once this
replica's own notices come back (`settle_detach`): by then every detach ordered before ours has
arrived, so of two replicas whose last sessions of a user end at the same moment exactly one,
the one whose detach was ordered last, says the user went offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from . import events

log = logging.getLogger(__name__)

CHANNEL = "realmchat"
HEARTBEAT_S = 1.0
STALE_AFTER_S = 4.0
PAYLOAD_MAX = 7000  # NOTIFY payloads must stay under 8000 bytes
USERS_PER_NOTICE = 150

Handler = Callable[[events.Notice], Awaitable[None]]
NOTICE = "ev"  # the kind of a line carrying a notice of main_server/events.py


class Cluster:
    def __init__(self, dsn: str, local_presence: Callable[[], list[tuple[int, str, str]]]) -> None:
        self.url = dsn  # parsed by main_server/dburl.py: no pool options left in it
        self.replica = secrets.token_hex(6)
        self.local_presence = local_presence  # [(session id, user name, realm)] attached here
        # replica -> (last heard, {session id: (user name, realm)})
        self.remote: dict[str, tuple[float, dict[int, tuple[str, str]]]] = {}
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listen_conn: Any = None
        self._publish_conn: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: Handler | None = None
        self._on_lost: Callable[[], Awaitable[None]] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._local: dict[int, str] = {}  # session id -> user name, attached here
        # user name -> [detach decisions waiting for our barrier notice, whether another
        # replica's detach of that user was ordered after our latest one]
        self._settling: dict[str, list[Any]] = {}
        self._decide: dict[str, list[Callable[[bool], None]]] = {}

    async def start(self, handler: Handler, on_lost: Callable[[], Awaitable[None]] | None = None) -> None:
        """handler gets the service's notices (events.Notice); on_lost runs when a replica goes silent (what
        it stored but never announced is still undelivered: push it to our sessions)."""
        import asyncpg

        self._handler = handler
        self._on_lost = on_lost
        self._listen_conn = await asyncpg.connect(self.url)
        self._publish_conn = await asyncpg.connect(self.url)
        await self._listen_conn.add_listener(CHANNEL, self._on_notify)
        self._tasks = [asyncio.create_task(self._publisher(), name="cluster-publish"),
                       asyncio.create_task(self._heartbeat(), name="cluster-heartbeat")]
        self.publish({"k": "hello"})
        log.info("cluster replica %s listening", self.replica)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for conn in (self._listen_conn, self._publish_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    # ---- sending -------------------------------------------------------------------------

    def publish(self, notice: dict[str, Any]) -> None:
        notice["r"] = self.replica
        self._out.put_nowait(notice)

    def publish_notice(self, notice: events.Notice) -> None:
        """A notice for the other replicas, in parts of at most USERS_PER_NOTICE users."""
        for part in events.split(notice, USERS_PER_NOTICE):
            self.publish({"k": NOTICE, "e": events.to_plain(part)})

    def publish_message(self, msg_id: int, users: list[str], track: list[str], exclude_session: int,
                        mentioned: Iterable[str] = ()) -> None:
        # The users the text names get the message flagged on every replica.
        self.publish_notice(events.MessageStored(msg_id, tuple(users), tuple(track), exclude_session,
                                                 tuple(mentioned)))

    async def _publisher(self) -> None:
        # Notices are packed into as few NOTIFYs as fit: one round trip carries many.
        while True:
            first = await self._out.get()
            notices, lines = [first], [orjson.dumps(first)]
            size = len(lines[0])
            while not self._out.empty():
                nxt = orjson.dumps(self._out._queue[0])  # peek: stop before overflowing
                if size + len(nxt) + 1 > PAYLOAD_MAX:
                    break
                notices.append(self._out.get_nowait())
                lines.append(nxt)
                size += len(nxt) + 1
            try:
                await self._publish_conn.execute("SELECT pg_notify($1, $2)", CHANNEL, b"\n".join(lines).decode())
            except Exception:
                log.exception("cluster notify failed (%d notices dropped: receivers catch up on resume)",
                              len(lines))
                for notice in notices:  # a detach decision must not wait for a barrier that never comes
                    if notice["k"] == "bar":
                        self._own(notice)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.publish({"k": "hb"})
            now = time.monotonic()
            for replica, (heard, _) in list(self.remote.items()):
                if now - heard > STALE_AFTER_S:
                    log.warning("replica %s silent for %.0f s: dropping its presence", replica, now - heard)
                    del self.remote[replica]
                    if self._on_lost is not None:
                        self._running.add(task := asyncio.create_task(self._on_lost()))
                        task.add_done_callback(self._running.discard)

    # ---- receiving -----------------------------------------------------------------------

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        # Presence bookkeeping happens here, in the order the notices came; only the handler's
        # work (reading storage, pushing) runs in tasks.
        for line in payload.split("\n"):
            try:
                notice = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if notice.get("r") == self.replica:
                self._own(notice)
            elif notice.get("k") == NOTICE:
                self._seen(notice["r"])
                try:
                    decoded = events.from_plain(notice["e"]) if isinstance(notice.get("e"), dict) else None
                except ValueError as exc:
                    decoded = None
                    log.warning("cluster notice from %s ignored: %s", notice["r"], exc)
                if decoded is None:
                    continue
                task = asyncio.create_task(self._dispatch(decoded))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            else:
                self._presence_notice(notice)

    def _own(self, notice: dict[str, Any]) -> None:
        kind = notice.get("k")
        if kind not in ("det", "bar"):
            return
        state = self._settling.get(notice.get("n", ""))
        if state is None:
            return
        name = notice["n"]
        if kind == "det":
            state[1] = False  # what counts is a detach elsewhere ordered after our latest one
        elif kind == "bar":
            state[0] -= 1
            if state[0] <= 0:
                del self._settling[name]
            decide = self._decide[name].pop(0)
            if not self._decide[name]:
                del self._decide[name]
            decide(not state[1])

    def _seen(self, replica: str) -> dict[int, tuple[str, str]]:
        entry = self.remote.get(replica)
        sessions = entry[1] if entry else {}
        self.remote[replica] = (time.monotonic(), sessions)
        return sessions

    def _presence_notice(self, notice: dict[str, Any]) -> None:
        kind = notice.get("k")
        sessions = self._seen(notice["r"])
        if kind == "att":
            sessions[notice["s"]] = (notice["n"], notice["realm"])
        elif kind == "det":
            gone = sessions.pop(notice["s"], None)
            state = self._settling.get(gone[0]) if gone else None
            if state is not None:
                state[1] = True  # ordered after our detach: that replica decides
        elif kind == "hello":
            # A new replica: tell it who is attached here (in parts that fit a NOTIFY).
            local = [[sid, n, realm] for sid, n, realm in self.local_presence()]
            for i in range(0, max(len(local), 1), 100):
                self.publish({"k": "snap", "p": local[i:i + 100], "reset": i == 0})
        elif kind == "snap":
            if notice.get("reset"):
                sessions.clear()
            sessions.update({sid: (n, realm) for sid, n, realm in notice["p"]})

    async def _dispatch(self, notice: events.Notice) -> None:
        if self._handler is not None:
            try:
                await self._handler(notice)
            except Exception:
                log.exception("cluster notice %s failed", type(notice).__name__)

    # ---- presence --------------------------------------------------------------------------

    def attached(self, session_id: int, user_name: str, realm: str) -> None:
        self._local[session_id] = user_name
        self.publish({"k": "att", "s": session_id, "n": user_name, "realm": realm})

    def detached(self, session_id: int) -> None:
        self.publish({"k": "det", "s": session_id, "n": self._local.pop(session_id, "")})

    def settle_detach(self, name: str, decide: Callable[[bool], None]) -> None:
        """The user's last session here just ended (its detach is published): decide(last)
        runs once that detach has its place among every replica's, last=True when no other
        replica's detach of the user was ordered after it (then it is ours to tell)."""
        state = self._settling.setdefault(name, [0, False])
        state[0] += 1
        self._decide.setdefault(name, []).append(decide)
        self.publish({"k": "bar", "n": name})

    def online_names(self) -> set[str]:
        """Names of users with a session on another replica."""
        return {n for _, sessions in self.remote.values() for n, _ in sessions.values()}

    def who(self) -> set[tuple[str, str]]:
        return {(n, realm) for _, sessions in self.remote.values() for n, realm in sessions.values()}
