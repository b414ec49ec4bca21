"""chat_cli's ChatClient against a real main server and two realms (alpha, beta)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chat_cli import (
    AlreadyExists,
    ChatClient,
    ChatError,
    ConnectionEvent,
    ConnState,
    Event,
    FileEvent,
    InvalidArgument,
    MessageEvent,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SessionEvent,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from realmchat.codes import Code

from .stack import Stack, start_realm, start_stack

PW = "pw-secret1"
MiB = 1024 * 1024


class Recorder:
    """Collects every event of a client (through on_event, in wire order)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def messages(self) -> list[MessageEvent]:
        return [e for e in self.events if isinstance(e, MessageEvent)]

    def states(self) -> list[ConnState]:
        return [e.state for e in self.events if isinstance(e, ConnectionEvent)]


async def until(cond: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Polls `cond` until it is truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def user(addr: tuple[str, int], name: str, register: bool = True, **options: object
               ) -> tuple[ChatClient, Recorder]:
    rec = Recorder()
    c = await ChatClient.connect(addr[0], addr[1], on_event=rec, **options)  # type: ignore[arg-type]
    if register:
        await c.register(name, PW)
    await c.auth(name, PW)
    return c, rec


def write_random_file(path: Path, size: int) -> str:
    """Writes `size` pseudo-random bytes in chunks; returns their sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(MiB, left))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_bytes(path: Path | str) -> bytes:
    return Path(path).read_bytes()


def sha256_of(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- messages and groups ----------------------------------------------------------------------


async def test_private_and_group_messages_across_realms(stack: Stack, uname: Callable[[str], str]) -> None:
    a_name, b_name, group = uname("alice"), uname("bob"), uname("progjar")
    alice, a_rec = await user(stack.realm("alpha"), a_name)
    bob, b_rec = await user(stack.realm("beta"), b_name)
    try:
        assert alice.realm == "alpha" and bob.realm == "beta"
        assert alice.user == a_name

        sent = await alice.send_private(b_name, "halo apa kabar")
        assert sent.id > 0 and sent.time is not None
        await until(lambda: b_rec.messages(), what="bob's private event")
        m = b_rec.messages()[0].message
        assert (m.id, m.sender, m.to, m.text, m.group) == (sent.id, a_name, b_name, "halo apa kabar", None)
        assert b_rec.messages()[0].kind == "private" and not b_rec.messages()[0].backlog
        # The sender gets its response, not an event.
        assert not a_rec.messages()

        reply = await bob.send_private(a_name, "baik, kamu?")
        await until(lambda: a_rec.messages(), what="alice's private event")
        assert a_rec.messages()[0].message.text == "baik, kamu?"
        assert a_rec.messages()[0].message.id == reply.id > sent.id

        assert await alice.create_group(group) == group
        assert await bob.join_group(group) == group
        groups = {g.name: g for g in await alice.groups()}
        assert groups[group].role == "owner" and groups[group].members == 2
        assert [g.role for g in await bob.groups() if g.name == group] == ["member"]

        g_sent = await bob.send_group(group, "hi all")
        await until(lambda: len(a_rec.messages()) == 2, what="alice's group event")
        gm = a_rec.messages()[1].message
        assert (gm.id, gm.sender, gm.group, gm.text, gm.to) == (g_sent.id, b_name, group, "hi all", None)
        assert a_rec.messages()[1].kind == "group"

        online = {(p.user, p.realm) for p in await alice.who()}
        assert {(a_name, "alpha"), (b_name, "beta")} <= online

        hist = await alice.history(b_name)
        assert [(h.sender, h.text) for h in hist] == [(a_name, "halo apa kabar"), (b_name, "baik, kamu?")]
        assert [h.text for h in await alice.history(b_name, 1)] == ["baik, kamu?"]
        assert [h.text for h in await alice.history("#" + group)] == ["hi all"]

        assert await bob.leave_group(group) == group
        assert [g for g in await bob.groups() if g.name == group] == []
        assert await alice.ping() >= 0
        assert any(c.startswith("sendprivate") for c in await alice.help())
    finally:
        await alice.close()
        await bob.close()


async def test_offline_messages_wait_in_inbox(stack: Stack, uname: Callable[[str], str]) -> None:
    a_name, b_name, group = uname("alice"), uname("bob"), uname("grp")
    bob, _ = await user(stack.realm("beta"), b_name)
    await bob.create_group(group)
    await bob.close()  # bob is offline now
    alice, _ = await user(stack.realm("alpha"), a_name)
    try:
        await alice.join_group(group)
        ids = [(await alice.send_private(b_name, f"msg {i}")).id for i in range(3)]
        g = await alice.send_group(group, "while you were out")
        bob, b_rec = await user(stack.realm("beta"), b_name, register=False)
        inbox = await bob.inbox()
        assert [(m.id, m.text, m.sender, m.to) for m in inbox] == [
            (ids[i], f"msg {i}", a_name, b_name) for i in range(3)]
        assert await bob.inbox() == []  # delivered once
        assert [(m.id, m.group) for m in await bob.inbox_group(group)] == [(g.id, group)]
        assert await bob.inbox_group(group) == []
        assert not b_rec.messages()  # fetched, not pushed
    finally:
        await alice.close()
        await bob.close()


async def test_events_arrive_while_pipelined_calls_are_in_flight(stack: Stack,
                                                                 uname: Callable[[str], str]) -> None:
    a_name, b_name = uname("alice"), uname("bob")
    alice, _ = await user(stack.realm("alpha"), a_name)
    bob, b_rec = await user(stack.realm("beta"), b_name)
    stream = bob.events()
    try:
        for i in range(5):
            await bob.send_private(a_name, f"seed {i}")

        async def bob_calls() -> list[object]:
            # Many different commands in flight at once: each result must be its own response.
            calls = []
            for i in range(60):
                calls += [bob.ping(), bob.history(a_name, 1 + i % 5), bob.who(), bob.groups()]
            return await asyncio.gather(*calls)

        async def alice_sends() -> list[int]:
            return [s.id for s in await asyncio.gather(*(alice.send_private(b_name, f"live {i}")
                                                          for i in range(40)))]

        results, sent_ids = await asyncio.gather(bob_calls(), alice_sends())
        for i in range(60):
            rtt, hist, who, groups = results[4 * i: 4 * i + 4]
            assert isinstance(rtt, float)
            assert isinstance(hist, list) and len(hist) == 1 + i % 5  # history N matched its call
            assert any(p.user == b_name for p in who)  # type: ignore[attr-defined]
            assert groups == []

        await until(lambda: len(b_rec.messages()) == 40, what="40 live events")
        got = [e.message for e in b_rec.messages()]
        assert sorted(m.id for m in got) == sorted(sent_ids)
        assert {m.text for m in got} == {f"live {i}" for i in range(40)}
        # The events() iterator saw the same events, in the same order, after CONNECTED.
        seen: list[Event] = []
        while len([e for e in seen if isinstance(e, MessageEvent)]) < 40:
            seen.append(await asyncio.wait_for(anext(stream), 10))
        assert isinstance(seen[0], ConnectionEvent) and seen[0].state is ConnState.CONNECTED
        assert [e.message.id for e in seen if isinstance(e, MessageEvent)] == [m.id for m in got]
    finally:
        await alice.close()
        await bob.close()
    # After close the iterator ends (CLOSED is its last event).
    rest = [e async for e in stream]
    assert isinstance(rest[-1], ConnectionEvent) and rest[-1].state is ConnState.CLOSED


# ---- files ------------------------------------------------------------------------------------


async def test_20_mib_file_from_local_path_to_download_dir(stack: Stack, uname: Callable[[str], str],
                                                          tmp_path: Path) -> None:
    a_name, b_name = uname("alice"), uname("bob")
    src = tmp_path / "laporan akhir.pdf"
    digest = write_random_file(src, 20 * MiB)
    dl = tmp_path / "downloads"
    alice, _ = await user(stack.realm("alpha"), a_name)
    bob, b_rec = await user(stack.realm("beta"), b_name)
    try:
        sent_progress: list[tuple[int, int]] = []
        tracemalloc.start()
        try:
            up = await alice.send_file(b_name, str(src), lambda d, t: sent_progress.append((d, t)))
            send_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            # A message sent while a download is in flight still arrives as an event.
            await until(lambda: any(isinstance(e, FileEvent) for e in b_rec.events), what="file event")
            offer = next(e.file for e in b_rec.events if isinstance(e, FileEvent))
            recv_progress: list[tuple[int, int]] = []
            down, _ = await asyncio.gather(
                bob.receive_file(offer.id, dl, lambda d, t: recv_progress.append((d, t))),
                alice.send_private(b_name, "did you get it?"),
            )
            recv_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Streamed: never the whole 20 MiB in memory on either side.
        assert send_peak < 6 * MiB and recv_peak < 6 * MiB, (send_peak, recv_peak)
        assert (up.name, up.size, up.sha256) == ("laporan akhir.pdf", 20 * MiB, digest)
        assert sent_progress[-1] == (20 * MiB, 20 * MiB) and len(sent_progress) > 10
        assert recv_progress[-1] == (20 * MiB, 20 * MiB)
        assert (offer.id, offer.sender, offer.name, offer.size, offer.sha256) == (
            up.id, a_name, "laporan akhir.pdf", 20 * MiB, digest)
        assert down.path == str(dl / "laporan akhir.pdf")
        assert sha256_of(down.path) == digest and down.sha256 == digest
        await until(lambda: b_rec.messages(), what="message during download")
        assert await bob.pending_files() == []

        # No overwrite: the same name again lands next to it as "laporan akhir (1).pdf".
        small = tmp_path / "laporan akhir.pdf"
        small.write_bytes(b"second version")
        up2 = await alice.send_file(b_name, small)
        pending = await bob.pending_files()
        assert [(f.id, f.name, f.size) for f in pending] == [(up2.id, "laporan akhir.pdf", 14)]
        down2 = await bob.receive_file(up2.id, dl)
        assert down2.path == str(dl / "laporan akhir (1).pdf")
        assert read_bytes(down2.path) == b"second version"
        assert sha256_of(dl / "laporan akhir.pdf") == digest  # the first download is untouched
        assert sorted(p.name for p in dl.iterdir()) == ["laporan akhir (1).pdf", "laporan akhir.pdf"]
    finally:
        await alice.close()
        await bob.close()


async def test_file_errors_keep_the_connection_usable(stack: Stack, uname: Callable[[str], str],
                                                      tmp_path: Path) -> None:
    a_name = uname("alice")
    alice, _ = await user(stack.realm("alpha"), a_name)
    try:
        src = tmp_path / "a.txt"
        src.write_bytes(b"x" * 1000)
        with pytest.raises(NotFound) as e:
            await alice.send_file(uname("nobody"), src)  # the realm consumed the 1000 bytes
        assert e.value.code is Code.NOT_FOUND
        with pytest.raises(NotFound, match="no such local file"):
            await alice.send_file(a_name, tmp_path / "missing.txt")
        with pytest.raises(InvalidArgument):
            await alice.send_file(a_name, tmp_path)  # a directory
        with pytest.raises(NotFound):
            await alice.receive_file(987654321, tmp_path / "dl")
        assert not any((tmp_path / "dl").iterdir())  # a failed download leaves nothing
        # Still in sync: the next responses belong to the next calls.
        up = await alice.send_file(a_name, src)
        down = await alice.receive_file(up.id, tmp_path / "dl")
        assert read_bytes(down.path) == b"x" * 1000
    finally:
        await alice.close()


# ---- typed errors -----------------------------------------------------------------------------


async def test_each_error_code_raises_its_typed_exception(stack: Stack, uname: Callable[[str], str]) -> None:
    host, port = stack.realm("alpha")
    a_name, b_name, group = uname("alice"), uname("bob"), uname("grp")
    c = await ChatClient.connect(host, port)
    bob, _ = await user(stack.realm("beta"), b_name)
    try:
        with pytest.raises(Unauthenticated) as e1:
            await c.inbox()  # not logged in yet
        await c.register(a_name, PW)
        with pytest.raises(AlreadyExists) as e2:
            await c.register(a_name.upper(), PW)  # unique ignoring case
        with pytest.raises(Unauthenticated) as e3:
            await c.auth(a_name, "wrong-password")
        with pytest.raises(InvalidArgument) as e4:
            await c.register("bad/name", PW)
        await c.auth(a_name, PW)
        with pytest.raises(NotFound) as e5:
            await c.send_private(uname("ghost"), "hello?")
        await bob.create_group(group)
        with pytest.raises(AlreadyExists):
            await c.create_group(group)
        with pytest.raises(PermissionDenied) as e6:
            await c.send_group(group, "let me in")
        with pytest.raises(NotFound):
            await c.join_group(uname("nogroup"))
        with pytest.raises(Unimplemented) as e7:
            await c.command("frobnicate now")
        # Checked locally, before anything is sent: a line break would inject a command.
        with pytest.raises(InvalidArgument):
            await c.send_private(b_name, "two\nlines")
        with pytest.raises(InvalidArgument):
            await c.join_group("two words")
        for e, code in ((e1, Code.UNAUTHENTICATED), (e2, Code.ALREADY_EXISTS), (e3, Code.UNAUTHENTICATED),
                        (e4, Code.INVALID_ARGUMENT), (e5, Code.NOT_FOUND), (e6, Code.PERMISSION_DENIED),
                        (e7, Code.UNIMPLEMENTED)):
            assert isinstance(e.value, ChatError)
            assert e.value.code is code and e.value.message, e.value
        # The connection survived every error.
        assert (await c.send_private(b_name, "still here")).id > 0
        await c.logout()
        assert c.user is None
        with pytest.raises(Unauthenticated):
            await c.inbox()
    finally:
        await c.close()
        await bob.close()


@pytest.fixture(scope="module")
def limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with small limits: inbox pages of 3, files of at most 64 KiB."""
    s = start_stack(tmp_path_factory.mktemp("limits"), realms=("alpha",),
                    main_extra=("--inbox-page", "3", "--max-file-bytes", str(64 * 1024)),
                    realm_extra=("--max-file-bytes", str(64 * 1024)))
    yield s
    s.stop()


async def test_inbox_pages_and_file_limit(limits_stack: Stack, uname: Callable[[str], str],
                                          tmp_path: Path) -> None:
    a_name, b_name = uname("alice"), uname("bob")
    bob, _ = await user(limits_stack.realm("alpha"), b_name)
    await bob.close()
    alice, _ = await user(limits_stack.realm("alpha"), a_name)
    try:
        for i in range(8):
            await alice.send_private(b_name, f"m{i}")
        bob, _ = await user(limits_stack.realm("alpha"), b_name, register=False)
        # Three pages of 3, 3 and 2 come back as one list.
        assert [m.text for m in await bob.inbox()] == [f"m{i}" for i in range(8)]
        big = tmp_path / "big.bin"
        big.write_bytes(b"\0" * (64 * 1024 + 1))
        with pytest.raises(ResourceExhausted) as e:
            await alice.send_file(b_name, big)
        assert e.value.code is Code.RESOURCE_EXHAUSTED and e.value.message
        assert await bob.pending_files() == []
        assert await alice.ping() >= 0  # in sync after the refused payload
    finally:
        await alice.close()
        await bob.close()


# ---- failures of the servers ------------------------------------------------------------------


async def test_realm_death_fails_pending_calls_with_unavailable(fresh_stack: Stack,
                                                                uname: Callable[[str], str]) -> None:
    a_name = uname("alice")
    alice, rec = await user(fresh_stack.realm("alpha"), a_name)
    stream = alice.events()
    realm = fresh_stack.realms["alpha"]
    # Frozen, the realm cannot answer: the calls below are certainly pending when it dies.
    realm.signal(signal.SIGSTOP)
    pending = [asyncio.create_task(alice.ping()), asyncio.create_task(alice.who())]
    await until(lambda: alice.pending_calls == 2, what="2 pending calls")
    assert not any(t.done() for t in pending)
    realm.kill()
    for t in pending:
        with pytest.raises(Unavailable) as e:
            await asyncio.wait_for(t, 10)
        assert e.value.code is Code.UNAVAILABLE
    await until(lambda: ConnState.DISCONNECTED in rec.states(), what="DISCONNECTED event")
    assert not alice.connected and alice.user is None
    with pytest.raises(Unavailable):
        await alice.send_private(a_name, "anyone?")  # fails at once, not hangs
    # Without auto_reconnect the event stream ends after DISCONNECTED.
    seen = [e async for e in stream]
    assert [e.state for e in seen if isinstance(e, ConnectionEvent)] == [ConnState.CONNECTED,
                                                                         ConnState.DISCONNECTED]
    await alice.close()


async def test_auto_reconnect_after_realm_restart(fresh_stack: Stack, uname: Callable[[str], str]) -> None:
    a_name, b_name = uname("alice"), uname("bob")
    alice, a_rec = await user(fresh_stack.realm("alpha"), a_name, auto_reconnect=True,
                              reconnect_max_delay=0.5)
    bob, _ = await user(fresh_stack.realm("beta"), b_name)
    try:
        old = fresh_stack.realms["alpha"]
        old.kill()
        await until(lambda: ConnState.DISCONNECTED in a_rec.states(), what="DISCONNECTED")
        with pytest.raises(Unavailable):
            await alice.ping()
        # Sent while alice has no session: waits in her inbox, then the library's catch-up
        # delivers it as a backlog event.
        offline = await bob.send_private(a_name, "while you were away")
        fresh_stack.realms["alpha"] = start_realm("alpha", fresh_stack.main.addr, old.port)
        await until(lambda: ConnState.RECONNECTED in a_rec.states(), timeout=30, what="RECONNECTED")
        assert alice.connected and alice.user == a_name  # re-authenticated by itself
        await until(lambda: any(m.message.id == offline.id for m in a_rec.messages()), what="catch-up")
        assert [m.backlog for m in a_rec.messages() if m.message.id == offline.id] == [True]
        live = await bob.send_private(a_name, "welcome back")  # events resumed
        await until(lambda: any(m.message.id == live.id and not m.backlog for m in a_rec.messages()),
                    what="live event after reconnect")
        assert a_rec.states()[:3] == [ConnState.CONNECTED, ConnState.DISCONNECTED, ConnState.RECONNECTING]
    finally:
        await alice.close()
        await bob.close()


async def test_main_restart_is_survived(fresh_stack: Stack, uname: Callable[[str], str]) -> None:
    a_name, b_name = uname("alice"), uname("bob")
    alice, _ = await user(fresh_stack.realm("alpha"), a_name, auto_reconnect=True)
    bob, b_rec = await user(fresh_stack.realm("beta"), b_name, auto_reconnect=True)
    try:
        fresh_stack.restart_main(kill=True)
        # While the realms re-link, calls may answer UNAVAILABLE; then they work again with the
        # same sessions (no new auth by the user). Both users online again = both realms linked.
        deadline = time.monotonic() + 30
        while True:
            try:
                if {a_name, b_name} <= {p.user for p in await alice.who()}:
                    break
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the realms did not re-link after the main restart")
            await asyncio.sleep(0.1)
        sent = await alice.send_private(b_name, "after the restart")
        await until(lambda: any(m.message.id == sent.id for m in b_rec.messages()), timeout=20,
                    what="bob's event after main restart")
        assert alice.user == a_name and bob.user == b_name
    finally:
        await alice.close()
        await bob.close()


async def test_expired_session_is_renewed_by_auto_reconnect(tmp_path: Path, uname: Callable[[str], str]
                                                            ) -> None:
    ttl = 2
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=("--session-ttl-s", str(ttl)))
    try:
        a_name = uname("alice")
        alice, rec = await user(s.realm("alpha"), a_name, auto_reconnect=True)
        authed_at = time.monotonic()
        # The session must outlive its TTL in main's database before main restarts: waiting for
        # time itself to pass, not for a condition.
        await until(lambda: time.monotonic() - authed_at > ttl + 0.5, timeout=ttl + 5, what="TTL")
        s.restart_main(kill=True)
        # The realm re-links, main no longer knows the session -> "session expired" event -> the
        # library logs in again with the remembered credentials.
        await until(lambda: any(isinstance(e, SessionEvent) and e.state == "expired" for e in rec.events),
                    timeout=30, what="session expired event")
        deadline = time.monotonic() + 30
        while True:
            try:
                await alice.send_private(a_name, "note to self")
                break
            except (Unavailable, Unauthenticated):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert alice.user == a_name
        await alice.close()
    finally:
        s.stop()


async def test_cancelled_download_leaves_nothing_and_stays_in_sync(stack: Stack, uname: Callable[[str], str],
                                                                  tmp_path: Path) -> None:
    a_name = uname("alice")
    alice, _ = await user(stack.realm("alpha"), a_name)
    try:
        src = tmp_path / "big.bin"
        write_random_file(src, 8 * MiB)
        up = await alice.send_file(a_name, src)
        dl = tmp_path / "dl"
        task: asyncio.Task[object] | None = None

        def cancel_midway(done: int, total: int) -> None:
            if done > MiB and task is not None and not task.done():
                task.cancel()

        task = asyncio.create_task(alice.receive_file(up.id, dl, cancel_midway))
        with pytest.raises(asyncio.CancelledError):
            await task
        # The rest of the payload is consumed by the reader; the next responses line up.
        sent = await alice.send_private(a_name, "after the cancel")
        hist = await alice.history(a_name, 1)
        assert [(m.id, m.text) for m in hist] == [(sent.id, "after the cancel")]
        await until(lambda: alice.pending_calls == 0, what="idle connection")
        assert list(dl.iterdir()) == []  # no partial file, no temp file
    finally:
        await alice.close()


async def test_refused_uploads_answer_not_found_and_keep_the_connection(stack: Stack, uname: Callable[[str], str],
                                                                        tmp_path: Path) -> None:
    """An upload to an unknown user is refused while its bytes are still streaming; every time
    the answer must be NOT_FOUND and the connection must stay in sync (repeated because the
    realm-side failure modes are races)."""
    a_name = uname("alice")
    alice, rec = await user(stack.realm("alpha"), a_name)
    src = tmp_path / "refused.bin"
    write_random_file(src, MiB)
    try:
        for i in range(20):
            with pytest.raises(ChatError) as e:
                await alice.send_file(uname("nobody"), src)
            assert e.value.code is Code.NOT_FOUND, (i, e.value)
            assert await alice.ping() >= 0, i
        assert ConnState.DISCONNECTED not in rec.states()
    finally:
        await alice.close()
