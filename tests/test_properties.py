"""Property-based tests (hypothesis).

- The text parser: parse_line never raises anything but ChatError, keeps the rest of the line
  exactly, never returns an argument with a line break or (outside the message) whitespace, and
  respects every command's arity.
- The encoder: any text becomes exactly one line with no raw ASCII control byte, and decodes back.
- The bounded line reader: under any chunking of any bytes, it returns exactly the lines a simple
  model says (over-long lines become one LINE_TOO_LONG, their tails are never lines).
- Delivery, as a state machine against a real main and two realms: random register / auth /
  sendprivate / inbox / logout; no message is lost, none is delivered twice.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from realmchat import textproto as tp
from realmchat.errors import ChatError
from realmchat.framing import LINE_TOO_LONG, LineReader

from .hardutil import connect
from .stack import Stack, start_realm, start_stack
from .textclient import TextClient

VERBS = list(tp.COMMANDS)
names = st.from_regex(r"[A-Za-z0-9_.\-]{1,32}", fullmatch=True)
verb_forms = st.sampled_from(VERBS).flatmap(lambda v: st.sampled_from([v, v.upper(), v.capitalize()]))
# Lines that look like commands, and lines that are anything at all.
command_like = st.builds(lambda v, sep, rest: v + sep + rest, verb_forms, st.sampled_from([" ", "  ", "\t", ""]),
                         st.text(max_size=80))
any_line = st.one_of(st.text(max_size=120), command_like)


# ---- the parser ----------------------------------------------------------------------------

@settings(max_examples=600, deadline=None)
@given(any_line)
@example("TOPIC \x1f")  # a control character Python counts as blank, where a group name should be
def test_parse_line_raises_only_chat_errors_and_keeps_its_promises(line: str) -> None:
    try:
        cmd = tp.parse_line(line)
    except ChatError as exc:
        assert exc.code in ("UNIMPLEMENTED", "INVALID_ARGUMENT") and exc.message
        return
    if cmd is None:
        assert not line.removesuffix("\r").strip()
        return
    spec = tp.COMMANDS[cmd.verb]
    assert cmd.verb == cmd.verb.lower()
    if cmd.verb == "search":  # parsed into (scope, query): scope "" or "#GROUP" or "@USER"
        scope, query = cmd.args
        assert query.strip() and (scope == "" or scope[:1] in "#@")
        return
    assert spec.min_args <= len(cmd.args) <= spec.max_args
    if "\n" not in line:
        assert not any("\n" in a for a in cmd.args)
    if spec.rest:
        if cmd.args:
            assert cmd.args[-1].strip()  # a message is never empty
        if len(cmd.args) > 1:
            assert " " not in cmd.args[0]  # the target ends at the first space (names are checked later)
    elif cmd.verb != "sendfile":
        assert not any(ch.isspace() for a in cmd.args for ch in a)
    else:
        assert cmd.payload_size == int(cmd.args[2])


message_text = st.text(min_size=1, max_size=200).filter(
    lambda t: "\n" not in t and not t.endswith("\r") and t.strip() != "")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["sendprivate", "sendgroup", "SENDPRIVATE"]), names, message_text)
def test_rest_of_line_text_round_trips(verb: str, target: str, text: str) -> None:
    cmd = tp.parse_line(f"{verb} {target} {text}")
    assert cmd is not None and cmd.args == (target, text)
    cmd_cr = tp.parse_line(f"{verb} {target} {text}\r")  # nc -C / telnet line ends
    assert cmd_cr is not None and cmd_cr.args == (target, text)


@settings(max_examples=300, deadline=None)
@given(names, st.text(min_size=1, max_size=60).filter(lambda n: n.strip(" ") and "\n" not in n and "\r" not in n),
       st.integers(min_value=0, max_value=2**40))
def test_sendfile_size_is_the_last_word(to: str, name: str, size: int) -> None:
    try:
        cmd = tp.parse_line(f"sendfile {to} {name} {size}")
    except ChatError:
        return  # e.g. a name of spaces only: a usage error, never a crash
    assert cmd is not None and cmd.payload_size == size and cmd.args[0] == to


# ---- the encoder ---------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.text(), st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_encoded_events_are_one_clean_line(text: str, extra: dict) -> None:
    line = tp.event("private", **{**{f"x_{k}": v for k, v in extra.items()}, "text": text})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert not any(b < 0x20 for b in line[:-1])
    raw = line.decode()
    assert not [ch for ch in raw if ch == "\x7f" or "\x80" <= ch <= "\x9f" or ch in "\u2028\u2029\u061c"
                or "\u202a" <= ch <= "\u202e" or "\u2066" <= ch <= "\u2069" or ch in "\u200e\u200f"]
    assert tp.decode(line)["text"] == text


# ---- the bounded line reader ---------------------------------------------------------------

LIMIT = 16


def model(data: bytes) -> list[bytes | str]:
    """What the realm must see: each line up to LIMIT bytes; each longer one as TOO_LONG once,
    including a final line without newline."""
    *complete, last = data.split(b"\n")
    out: list[bytes | str] = [seg if len(seg) <= LIMIT else "TOO_LONG" for seg in complete]
    if last:
        out.append(last if len(last) <= LIMIT else "TOO_LONG")
    return out


async def read_all(data: bytes, cuts: list[int]) -> list[bytes | str]:
    reader = asyncio.StreamReader(limit=LIMIT + 1)  # as the realm sets it: max_line + 1
    lines = LineReader(reader, LIMIT)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})

    async def feed() -> None:
        for a, b in itertools.pairwise(bounds):
            reader.feed_data(data[a:b])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    out: list[bytes | str] = []
    while (line := await lines.read_line()) is not None:
        out.append("TOO_LONG" if line is LINE_TOO_LONG else line)
    await feeder
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=LIMIT + 8), st.binary(min_size=LIMIT - 1, max_size=3 * LIMIT)),
                max_size=8).map(lambda segs: b"\n".join(segs).replace(b"\n\n\n", b"\n")),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
def test_line_reader_matches_the_model_under_any_chunking(data: bytes, cuts: list[int]) -> None:
    assert asyncio.run(read_all(data, cuts)) == model(data)


def test_final_line_one_byte_over_the_limit_is_reported() -> None:
    data = b"x" * (LIMIT + 1)
    assert asyncio.run(read_all(data, [])) == model(data) == ["TOO_LONG"]


# ---- delivery, as a state machine against real servers -------------------------------------

@pytest.fixture(scope="module")
def dstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Cheap argon2 (tests only): the machine registers and logs in a lot. Small send queues so
    # that a client that stops reading is cut off after a few messages.
    s = start_stack(tmp_path_factory.mktemp("data"),
                    main_extra=("--argon2-time-cost", "1", "--argon2-memory-kib", "8192"),
                    realm_extra=("--max-send-queue-bytes", "16384", "--cmd-rate", "0"))
    yield s
    s.stop()


_examples = itertools.count()
USERS = 3
BULK = "z" * 2000  # a flood of these cuts off a client that does not read


def salvage(c: TextClient) -> list[dict[str, Any]]:
    """The complete lines a dead connection still holds (asyncio keeps them in the reader's
    buffer but raises the reset first)."""
    data = bytes(c.reader._buffer)  # type: ignore[attr-defined]
    c.reader._buffer.clear()  # type: ignore[attr-defined]
    return [json.loads(x) for x in data.split(b"\n")[:-1] if x.strip()]


class Delivery(RuleBasedStateMachine):
    """Users on two realms send private and group messages; they log in and out, hang up, stop
    reading (and get cut off by the realm), call inbox and inboxgroup; realms are killed. Every
    acknowledged message must reach each recipient exactly once: as an event on one of its
    connections, or from inbox/inboxgroup."""

    stack: Stack
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        n = next(_examples)
        self.users = [f"p{n}_{i}_{os.getpid() % 10000}" for i in range(USERS)]
        self.group = f"pg{n}_{os.getpid() % 10000}"
        self.live: dict[str, tuple[TextClient, str]] = {}  # user -> (connection, realm)
        self.paused: set[str] = set()
        self.old: dict[str, list[TextClient]] = {u: [] for u in self.users}
        self.expected: dict[str, set[int]] = {u: set() for u in self.users}
        self.received: dict[str, Counter[int]] = {u: Counter() for u in self.users}
        self.texts = itertools.count()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    async def _connect(self, realm: str) -> TextClient:
        return await connect(*self.stack.realm(realm), rcvbuf=8192)

    def _count(self, user: str, objs: list[dict[str, Any]]) -> None:
        for obj in objs:
            if obj.get("event") in ("private", "group"):
                self.received[user][obj["id"]] += 1

    def _take_events(self, user: str, c: TextClient) -> None:
        while not c.events.empty():
            self._count(user, [c.events.get_nowait()])

    async def _read_pending(self, user: str, c: TextClient, wait: float) -> None:
        """Reads whatever arrives on c within `wait` seconds of quiet (to the end, if it died)."""
        self._take_events(user, c)
        while True:
            try:
                line = await asyncio.wait_for(c.reader.readline(), wait)
            except TimeoutError:
                break
            except (ConnectionError, OSError):
                self._count(user, salvage(c))
                break
            if not line:
                break
            obj = json.loads(line)
            assert "event" in obj, obj
            self._count(user, [obj])

    async def _quiet(self, wait: float = 0.5) -> None:
        """Everything in flight lands (and the realms report it to main) before a kill."""
        await asyncio.sleep(wait)
        for u, (c, _) in list(self.live.items()):
            if u not in self.paused:
                await self._read_pending(u, c, 0.05)

    @initialize()
    def register_all(self) -> None:
        async def go() -> None:
            c = await self._connect("alpha")
            for u in self.users:
                await c.ok(f"register {u} pw-secret")
            await c.ok(f"auth {self.users[0]} pw-secret")
            await c.ok(f"creategroup {self.group}")
            for u in self.users[1:]:
                await c.ok(f"auth {u} pw-secret")
                await c.ok(f"joingroup {self.group}")
            await c.ok("logout")
            await c.close()

        self.run(go())

    @precondition(lambda self: len(self.live) < USERS)
    @rule(i=st.integers(0, USERS - 1), realm=st.sampled_from(["alpha", "beta"]))
    def auth(self, i: int, realm: str) -> None:
        u = self.users[i]
        if u in self.live:
            return

        async def go() -> None:
            c = await self._connect(realm)
            await c.ok(f"auth {u} pw-secret")
            self.live[u] = (c, realm)

        self.run(go())

    def _retire(self, u: str) -> None:
        c, _ = self.live.pop(u)
        self.paused.discard(u)
        self.old[u].append(c)

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1))
    def logout(self, i: int) -> None:
        u = self.users[i]
        if u not in self.live or u in self.paused:
            return
        c = self.live[u][0]
        self.run(c.ok("logout"))
        self._take_events(u, c)
        self._retire(u)

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1))
    def hang_up(self, i: int) -> None:
        """The client closes its connection without logging out."""
        u = self.users[i]
        if u not in self.live or u in self.paused:
            return
        c = self.live[u][0]

        async def go() -> None:
            await self._read_pending(u, c, 0.1)
            await c.close()

        self.run(go())
        self._retire(u)

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1))
    def stop_reading(self, i: int) -> None:
        u = self.users[i]
        if u in self.live and u not in self.paused:
            self.live[u][0].writer.transport.pause_reading()
            self.paused.add(u)

    @precondition(lambda self: bool(self.paused))
    @rule(i=st.integers(0, USERS - 1))
    def read_again(self, i: int) -> None:
        """A client that stopped reading reads again: all it holds, or the end of a connection
        the realm cut off meanwhile."""
        u = self.users[i]
        if u not in self.paused:
            return
        c = self.live[u][0]
        c.writer.transport.resume_reading()
        self.paused.discard(u)

        async def go() -> bool:
            await self._read_pending(u, c, 0.2)
            return c.reader.at_eof() or c.reader.exception() is not None

        if self.run(go()):
            self._retire(u)

    def _sender(self, i: int) -> TextClient | None:
        u = self.users[i]
        if u not in self.live or u in self.paused:
            return None
        return self.live[u][0]

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1), j=st.integers(1, USERS - 1), bulk=st.integers(0, 12))
    def send(self, i: int, j: int, bulk: int) -> None:
        c = self._sender(i)
        if c is None:
            return
        to = self.users[(i + j) % USERS]  # never to oneself

        async def go() -> None:
            n = max(1, bulk)
            text = BULK if bulk else "m"
            await c.send_raw("".join(f"sendprivate {to} {text} {next(self.texts)}\n" for _ in range(n)).encode())
            for _ in range(n):
                r = await c.response()
                assert r["status"] == "OK", r
                self.expected[to].add(r["id"])

        self.run(go())
        self._take_events(self.users[i], c)

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1))
    def send_group(self, i: int) -> None:
        c = self._sender(i)
        if c is None:
            return
        r = self.run(c.ok(f"sendgroup {self.group} g{next(self.texts)}"))
        for k, u in enumerate(self.users):
            if k != i:
                self.expected[u].add(r["id"])
        self._take_events(self.users[i], c)

    async def _inbox(self, u: str, c: TextClient, verb: str) -> None:
        while True:
            r = await c.ok(verb)
            for m in r["messages"]:
                self.received[u][m["id"]] += 1
            if not r["more"]:
                break

    @precondition(lambda self: bool(self.live))
    @rule(i=st.integers(0, USERS - 1), group=st.booleans())
    def inbox(self, i: int, group: bool) -> None:
        u = self.users[i]
        c = self._sender(i)
        if c is None:
            return
        self.run(self._inbox(u, c, f"inboxgroup {self.group}" if group else "inbox"))
        self._take_events(u, c)

    @rule(realm=st.sampled_from(["alpha", "beta"]))
    def kill_realm(self, realm: str) -> None:
        """kill -9 of a realm (then a new one on the same port): its clients lose their
        connections; what was queued for them and never written comes back."""
        async def go() -> None:
            await self._quiet()
            proc = self.stack.realms[realm]
            port = proc.port
            proc.kill()
            for u, (c, r) in list(self.live.items()):
                if r == realm:
                    c.writer.transport.resume_reading()
                    await self._read_pending(u, c, 1.0)
                    self._retire(u)
            self.stack.realms[realm] = start_realm(realm, self.stack.main.addr, port,
                                                  "--max-send-queue-bytes", "16384", "--cmd-rate", "0")

        self.run(go())

    @invariant()
    def never_twice_never_unsent(self) -> None:
        for u in self.users:
            twice = [k for k, v in self.received[u].items() if v > 1]
            assert not twice, f"{u} got {twice} twice"
            assert set(self.received[u]) <= self.expected[u]

    def teardown(self) -> None:
        """Everything sent must have arrived: read what is still on its way, then each user's
        inbox and group inbox (logging in where needed)."""
        async def go() -> None:
            for u in list(self.paused):
                self.live[u][0].writer.transport.resume_reading()
            self.paused.clear()
            await asyncio.sleep(0.3)
            for u in self.users:
                for c in [*self.old[u], *([self.live[u][0]] if u in self.live else [])]:
                    await self._read_pending(u, c, 0.05)
            for u in self.users:
                if u in self.live and (self.live[u][0].reader.at_eof() or self.live[u][0].reader.exception()):
                    self._retire(u)
            for u in self.users:
                c = self.live[u][0] if u in self.live else await self._connect("alpha")
                if u not in self.live:
                    await c.ok(f"auth {u} pw-secret")
                    self.live[u] = (c, "alpha")
                for _ in range(2):  # what came back meanwhile is pushed, or waits for the next call
                    await self._inbox(u, c, "inbox")
                    await self._inbox(u, c, f"inboxgroup {self.group}")
                    await self._read_pending(u, c, 0.3)
            for u in self.users:
                missing = self.expected[u] - set(self.received[u])
                assert not missing, f"{u} never got {sorted(missing)}"
                twice = [k for k, v in self.received[u].items() if v > 1]
                assert not twice, f"{u} got {twice} twice"
            for c in [*(c for c, _ in self.live.values()), *(c for cs in self.old.values() for c in cs)]:
                await c.close()

        self.run(go())


EXAMPLES = int(os.environ.get("DELIVERY_EXAMPLES", "10"))


@pytest.mark.timeout(60 + 40 * EXAMPLES)  # room for a loaded machine: a bound, not a speed test
def test_delivery_state_machine(dstack: Stack) -> None:
    """Random runs of up to 30 steps; DELIVERY_EXAMPLES=60 for a longer hunt."""
    loop = asyncio.new_event_loop()
    Delivery.stack, Delivery.loop = dstack, loop
    try:
        run = Delivery.TestCase
        run.settings = settings(max_examples=EXAMPLES, stateful_step_count=30,
                                deadline=None,
                                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        run("runTest").runTest()
    finally:
        loop.close()
