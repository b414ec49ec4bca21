"""The GUI's controller (gui/controller.py) against a real stack: main + realms alpha and beta.

The controller is exactly what the Flet views call, so these tests cover the GUI's behaviour
without a browser: login, live messages across realms, sending, groups, files, errors shown to
the user, and reconnecting after a realm restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from chat_cli import ChatClient
from gui.controller import Change, ChatController
from gui.state import Kind, LineKind, Status, TransferState, conv_key
from realmchat.errors import AlreadyExists, ChatError, InvalidArgument, NotFound, Unauthenticated, Unavailable

from .stack import Stack
from .textclient import login

T = TypeVar("T")
PW = "pw-secret"


async def until(check: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """Polls a condition on the controller's state with a deadline (state changes come from
    the client's reader task, so there is nothing to await directly)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def make_controller(tmp_path: Path) -> AsyncIterator[Callable[..., ChatController]]:
    made: list[ChatController] = []

    def make(**kw: object) -> ChatController:
        c = ChatController(tmp_path / f"downloads{len(made)}", who_interval=0.5, **kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def logged_in(ctl: ChatController, addr: tuple[str, int], user: str, register: bool = True) -> ChatController:
    await ctl.connect(*addr)
    if register:
        await ctl.register(user, PW)
    await ctl.login(user, PW)
    return ctl


async def test_login_live_message_from_other_realm_and_reply(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob = uname("alice"), uname("bob")
    ctl = make_controller()
    changes: list[Change] = []
    ctl.subscribe(changes.append)
    await logged_in(ctl, stack.realm("alpha"), alice)
    assert ctl.state.status is Status.ONLINE
    assert ctl.state.user == alice and ctl.state.realm == "alpha"
    assert Change.STATUS in changes

    # bob is on the OTHER realm, with the plain text protocol.
    b = await login(*stack.realm("beta"), bob)
    b.ignore = b.ignore | {"seen", "typing"}  # the GUI reads what it shows
    try:
        await b.ok(f"sendprivate {alice} hello from beta")
        key = conv_key(Kind.PRIVATE, bob)
        conv = await until(lambda: ctl.state.conversations.get(key), "bob's conversation")
        await until(lambda: conv.last and conv.last.text == "hello from beta", "the live message")
        assert conv.unread == 1 and not conv.last.own and conv.last.ts is not None
        assert conv.preview == "hello from beta"
        assert Change.CONVERSATIONS in changes

        # Opening the conversation clears the unread count and loads history without duplicating.
        await ctl.open_conversation(key)
        assert conv.unread == 0 and ctl.state.current == key
        assert [ln.text for ln in conv.lines] == ["hello from beta"]

        # The reply appears at once (pending), then is confirmed with the server's id.
        task = asyncio.create_task(ctl.send("hi bob, alice here"))
        await until(lambda: conv.last.text == "hi bob, alice here", "own line shown")
        line = await task
        assert line.own and not line.pending and not line.error and line.id
        ev = await b.event()
        assert ev["event"] == "private" and ev["from"] == alice and ev["text"] == "hi bob, alice here"

        # Who is online shows bob with his realm.
        await ctl.refresh_online()
        assert any(p.user == bob and p.realm == "beta" for p in ctl.state.online)
    finally:
        await b.close()


async def test_messages_waiting_at_login_and_history(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob = uname("alice"), uname("bob")
    a = await login(*stack.realm("alpha"), alice)
    await a.ok("logout")
    b = await login(*stack.realm("beta"), bob)
    b.ignore = b.ignore | {"seen", "typing"}  # the GUI reads what it shows
    try:
        await b.ok(f"sendprivate {alice} sent while you were away")
        ctl = make_controller()
        await logged_in(ctl, stack.realm("alpha"), alice, register=False)
        conv = ctl.state.conversations[conv_key(Kind.PRIVATE, bob)]
        assert conv.unread == 1 and conv.last.text == "sent while you were away"

        # Starting a chat with a user loads its history (delivered messages included).
        ctl2 = make_controller()
        await logged_in(ctl2, stack.realm("beta"), bob, register=False)
        started = await ctl2.start_private(alice)
        assert started.history_loaded and [ln.text for ln in started.lines] == ["sent while you were away"]
        assert started.lines[0].own
        with pytest.raises(NotFound):
            await ctl2.start_private(uname("nobody"))
        with pytest.raises(InvalidArgument):
            await ctl2.start_private("not a name!")
    finally:
        await a.close()
        await b.close()


async def test_groups_create_join_talk_leave(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, team = uname("alice"), uname("bob"), uname("team")
    ca = await logged_in(make_controller(), stack.realm("alpha"), alice)
    cb = await logged_in(make_controller(), stack.realm("beta"), bob)

    conv = await ca.create_group(team)
    assert conv.kind is Kind.GROUP and ca.state.current == conv.key
    assert team.casefold() in ca.state.groups and ca.state.groups[team.casefold()].role == "owner"
    with pytest.raises(AlreadyExists):
        await cb.create_group(team)

    bconv = await cb.join_group(team)
    assert team.casefold() in cb.state.groups
    await ca.send(f"welcome to {team}")
    await until(lambda: bconv.last and bconv.last.text == f"welcome to {team}", "group message at bob")
    assert bconv.last.sender == alice and not bconv.last.own

    await cb.send("thanks")
    await until(lambda: conv.last and conv.last.text == "thanks", "group reply at alice")

    await cb.leave_group(team)
    assert bconv.key not in cb.state.conversations and team.casefold() not in cb.state.groups
    with pytest.raises(ChatError):
        await cb.send("gone", key=bconv.key)
    with pytest.raises(NotFound):
        await cb.join_group(uname("nosuchgroup"))


async def test_send_and_receive_file_checksum_verified(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController],
        tmp_path: Path) -> None:
    alice, bob = uname("alice"), uname("bob")
    ca = await logged_in(make_controller(), stack.realm("alpha"), alice)
    cb = await logged_in(make_controller(), stack.realm("beta"), bob)
    data = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: several chunks, real progress
    src = tmp_path / "report v1.bin"
    src.write_bytes(data)

    progress: list[float] = []
    ca.subscribe(lambda ch: progress.append(ca.state.transfers[-1].progress) if ch is Change.FILES
                 and ca.state.transfers else None)
    up = await ca.send_file(bob, src)
    assert up.state is TransferState.DONE and up.sha256 == hashlib.sha256(data).hexdigest()
    assert any(0 < p < 1 for p in progress) and progress[-1] == 1.0

    info = await until(lambda: next(iter(cb.state.incoming_files.values()), None), "the file event")
    assert info.name == "report v1.bin" and info.size == len(data) and info.sender == alice
    bconv = cb.state.conversations[conv_key(Kind.PRIVATE, alice)]
    assert bconv.last.kind is LineKind.FILE and bconv.last.file == info and bconv.unread == 1

    down = await cb.save_file(info.id)
    assert down.state is TransferState.DONE
    saved = Path(down.path)
    assert await asyncio.to_thread(saved.read_bytes) == data and saved.parent == cb.downloads
    assert info.id not in cb.state.incoming_files and cb.state.saved_files[info.id] == down.path

    with pytest.raises(NotFound):
        await ca.send_file(uname("nobody"), src)
    assert ca.state.transfers[-1].state is TransferState.FAILED


async def test_errors_are_plain(stack: Stack, uname: Callable[[str], str],
                                make_controller: Callable[..., ChatController]) -> None:
    alice = uname("alice")
    ctl = make_controller()
    # Realm down: nothing listens on this port.
    with pytest.raises(Unavailable) as down:
        await ctl.connect("127.0.0.1", 1)
    assert "cannot reach the realm" in down.value.message and ctl.state.status is Status.OFFLINE

    await ctl.connect(*stack.realm("alpha"))
    assert ctl.state.status is Status.CONNECTED
    await ctl.register(alice, PW)
    with pytest.raises(AlreadyExists):  # name taken
        await ctl.register(alice.upper(), PW)
    with pytest.raises(Unauthenticated):  # wrong password
        await ctl.login(alice, "wrong-password")
    assert not ctl.state.logged_in
    await ctl.login(alice, PW)
    await ctl.logout()
    assert ctl.state.status is Status.CONNECTED and not ctl.state.logged_in and not ctl.state.conversations


async def test_reconnects_after_realm_restart(
        fresh_stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    from .stack import start_realm

    alice, bob = uname("alice"), uname("bob")
    ctl = await logged_in(make_controller(), fresh_stack.realm("alpha"), alice)
    statuses: list[Status] = []
    ctl.subscribe(lambda ch: statuses.append(ctl.state.status) if ch is Change.STATUS else None)

    realm = fresh_stack.realms["alpha"]
    port = realm.port
    realm.kill()
    await until(lambda: ctl.state.status is Status.RECONNECTING, "the reconnecting state")
    fresh_stack.realms["alpha"] = start_realm("alpha", fresh_stack.main.addr, port)
    await until(lambda: ctl.state.status is Status.ONLINE, "online again", timeout=20)
    assert Status.RECONNECTING in statuses and ctl.state.user == alice

    # Live messages flow again after the reconnect.
    b = await ChatClient.connect(*fresh_stack.realm("beta"))
    try:
        await b.register(bob, PW)
        await b.auth(bob, PW)
        await b.send_private(alice, "after the restart")
        await until(lambda: (c := ctl.state.conversations.get(conv_key(Kind.PRIVATE, bob)))
                    and c.last.text == "after the restart", "a message after the restart")
    finally:
        await b.close()
