"""Every path that can drop, delay or fail a delivery, tried as a hostile user and a careless
network would, against real processes. Each test checks the same promise: every acknowledged
message reaches its recipient exactly once (pushed, or returned by inbox), bystanders' calls
succeed, and main holds no session without a connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from realmchat import realmauth
from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import bearer

from .hardutil import Grpc
from .stack import Stack, start_main, start_stack
from .textclient import TextClient, login, until_ok

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


@pytest.fixture
def open_stack(tmp_path: Path) -> Iterator[Stack]:
    """No flood control (the tests pipeline thousands of commands), small send queues."""
    s = start_stack(tmp_path / "data", main_extra=CHEAP,
                    realm_extra=("--cmd-rate", "0", "--max-send-queue-bytes", "262144", "--rpc-timeout-s", "1"))
    yield s
    for p in [s.main, *s.realms.values()]:
        p.signal(signal.SIGCONT)
    s.stop()


async def inbox_all(c: TextClient, verb: str = "inbox") -> list[dict[str, Any]]:
    """Every page of the inbox; each page line stays far under a transport cap."""
    got: list[dict[str, Any]] = []
    while True:
        await c.send_raw(verb.encode() + b"\n")
        line = await asyncio.wait_for(c.reader.readline(), 30)
        while b'"event"' in line[:20]:
            c.events.put_nowait(json.loads(line))
            line = await asyncio.wait_for(c.reader.readline(), 30)
        assert len(line) < 2 * 1024 * 1024, f"an inbox page of {len(line)} bytes"
        r = json.loads(line)
        assert r["status"] == "OK", r
        got += r["messages"]
        if not r["more"]:
            return got


def pushed(c: TextClient, kind: str = "private") -> list[int]:
    out = []
    while not c.events.empty():
        ev = c.events.get_nowait()
        if ev.get("event") == kind:
            out.append(ev["id"])
    return out


def exactly_once(acked: list[int], got: list[int]) -> None:
    counts = Counter(got)
    missing = sorted(set(acked) - set(counts))
    assert not missing, f"{len(missing)} acknowledged messages never arrived, e.g. {missing[:5]}"
    twice = [k for k, v in counts.items() if v > 1]
    assert not twice, f"delivered twice: {twice[:5]}"
    assert set(counts) <= set(acked), "something arrived that was never acknowledged"


async def send_many(c: TextClient, to: str, n: int, text: str, verb: str = "sendprivate") -> list[int]:
    """Pipelines n sends (one write) and returns the acknowledged ids."""
    await c.send_raw("".join(f"{verb} {to} {text} {i}\n" for i in range(n)).encode())
    ids = []
    for _ in range(n):
        r = await c.response(60)
        assert r["status"] == "OK", r
        ids.append(r["id"])
    return ids


# ---- 1. replies larger than a transport message ------------------------------------------------

async def test_oversized_inbox_is_paged_and_bystanders_are_unharmed(open_stack: Stack, uname: Names) -> None:
    host, port = open_stack.realm("alpha")
    bob, carol, alice = uname("big_bob"), uname("big_carol"), uname("big_alice")
    for u in (bob, carol):
        c = await login(host, port, u)
        await c.ok("logout")
        await c.close()
    ca = await login(host, port, alice)
    big = "x" * 16000
    acked_bob = await send_many(ca, bob, 600, big)  # ~9.6 MB waiting: over gRPC's 8 MiB cap
    acked_carol = await send_many(ca, carol, 50, "small")

    cb = await login(host, port, bob, register=False)
    cc = await login(*open_stack.realm("beta"), carol, register=False)
    got_bob, got_carol = await asyncio.gather(inbox_all(cb), inbox_all(cc))
    exactly_once(acked_bob, [m["id"] for m in got_bob] + pushed(cb))
    exactly_once(acked_carol, [m["id"] for m in got_carol] + pushed(cc))
    assert (await cb.ok("inbox"))["messages"] == []

    # One user asking for huge histories over and over fails nobody else's calls.
    async def abuse() -> None:
        for _ in range(15):
            r = await ca.ok(f"history {bob} 1000")
            assert r["more"] and 0 < len(r["messages"]) < 1000

    async def bystander() -> None:
        for i in range(200):
            await cc.ok(f"sendprivate {alice} fine {i}")

    await asyncio.gather(abuse(), bystander())


async def test_big_reply_waiting_beside_an_event_is_not_a_slow_reader(open_stack: Stack, uname: Names) -> None:
    """A reply the client asked for, larger than the event queue bound, is still queued when a
    message arrives: the client reads normally and must not be taken for one that does not."""
    host, port = open_stack.realm("alpha")
    reader, writer = uname("bq_reader"), uname("bq_writer")
    cw = await login(host, port, writer)
    await cw.ok(f"register {reader} pw-secret")
    await send_many(cw, reader, 70, "z" * 16000)  # history replies of ~1 MiB (queue bound: 256 KiB)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    # Big replies asked for and not read yet: the first ones fill the socket buffers (a few MB),
    # the last waits in the realm's queue; then a message is pushed.
    asks = 8
    sock.sendall(f"auth {reader} pw-secret\n".encode() + f"history {writer} 100\n".encode() * asks)
    await asyncio.sleep(1.5)
    sent = (await cw.ok(f"sendprivate {reader} while you read"))["id"]
    await asyncio.sleep(0.5)
    sock.sendall(b"quit\n")
    lines = await asyncio.to_thread(raw_lines, sock)
    sock.close()
    assert not [x for x in lines if x.get("event") == "closing"], "cut off as a slow reader"
    replies = [x for x in lines if "status" in x]
    assert [x["status"] for x in replies] == ["OK"] * (asks + 2), [str(x)[:200] for x in replies]
    assert all(r["messages"] and r["more"] for r in replies[1:-1])
    exactly_once([sent], [x["id"] for x in lines if x.get("event") == "private"])


# ---- 2. a slow reader cut off by the realm -----------------------------------------------------

def raw_lines(sock: socket.socket) -> list[dict[str, Any]]:
    """Every line the socket still holds, up to the end or the reset. (A reset does not take
    away bytes already received; asyncio's stream reader would drop them, so: raw recv.)"""
    data = b""
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except (ConnectionError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    # An unterminated last line was cut by the reset: it was not delivered (and comes back).
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line.strip()]


async def test_slow_reader_disconnected_loses_nothing(open_stack: Stack, uname: Names) -> None:
    host, port = open_stack.realm("alpha")
    victim, flooder = uname("slow_victim"), uname("slow_flood")
    c = await login(host, port, flooder)
    await c.ok(f"register {victim} pw-secret")
    await c.close()
    # The victim logs in, then reads nothing, through a small socket buffer: the realm's queue
    # fills and the realm cuts it off.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((host, port))
    sock.sendall(f"auth {victim} pw-secret\n".encode())
    await asyncio.sleep(0.5)
    floods = [await login(*open_stack.realm(r), flooder, register=False) for r in ("alpha", "beta", "alpha")]
    acked: list[int] = []

    async def flood(f: TextClient) -> None:
        for _ in range(4):
            acked.extend(await send_many(f, victim, 300, "y" * 900))

    await asyncio.gather(*(flood(f) for f in floods))
    # Whatever the victim's socket holds was acknowledged by its TCP: that part was delivered.
    lines = await asyncio.to_thread(raw_lines, sock)
    sock.close()
    assert any(x.get("event") == "closing" or x.get("status") == "OK" for x in lines), lines[:3]
    got = [x["id"] for x in lines if x.get("event") == "private"]
    assert len(got) < len(acked), "the victim should have been cut off by the realm"
    cv2 = await login(host, port, victim, register=False)
    await asyncio.sleep(0.3)  # pushes of what came back, if any
    got += [m["id"] for m in await inbox_all(cv2)]
    await asyncio.sleep(0.3)
    got += [m["id"] for m in await inbox_all(cv2)] + pushed(cv2)
    exactly_once(acked, got)


def repeat_stack(tmp_path: Path) -> Stack:
    """A queue bound well above what the socket buffers take: the realm keeps a backlog. Main
    drops a realm that stops answering its pings within about 2 s."""
    return start_stack(tmp_path / "data", main_extra=(*CHEAP, "--keepalive-time-s", "1", "--keepalive-timeout-s", "1"),
                       realm_extra=("--cmd-rate", "0", "--max-send-queue-bytes", str(16 << 20)))


async def break_link(stack: Stack, how: str, sender: TextClient, sender_name: str, user: str) -> None:
    """Main forgets the link to realm alpha: killed and restarted, or alpha freezes until main
    drops it (its sessions go offline), then thaws and links anew."""
    if how == "main killed":
        stack.restart_main()
        await until_ok(sender, f"sendprivate {sender_name} main is back")
    else:
        alpha = stack.realms["alpha"]
        alpha.signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 15
            while any(p["user"] == user for p in (await sender.ok("who"))["online"]):
                assert time.monotonic() < deadline, "main kept a frozen realm's link"
                await asyncio.sleep(0.2)
        finally:
            alpha.signal(signal.SIGCONT)
        deadline = time.monotonic() + 15
        while not any(p["user"] == user for p in (await sender.ok("who"))["online"]):
            assert time.monotonic() < deadline, "the thawed realm did not link again"
            await asyncio.sleep(0.2)


async def reader_that_stopped(host: str, port: int, user: str, first: str = "") -> socket.socket:
    """A logged-in connection that reads nothing, through a small window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((host, port))
    sock.sendall(f"auth {user} pw-secret\n{first}".encode())
    await asyncio.sleep(0.5)
    return sock


async def logout_and_collect(stack: Stack, sock: socket.socket, user: str, first: str = "",
                             group: str = "") -> list[int]:
    """Sends `first`, logs the stopped reader out, reads what its connection still holds, then
    logs in anew: the message ids it got, in all (events and inbox pages; of the group if one
    is named, else private)."""
    kind, inbox = ("group", f"inboxgroup {group}") if group else ("private", "inbox")
    sock.sendall(f"{first}logout\nquit\n".encode())
    lines = await asyncio.to_thread(raw_lines, sock)
    sock.close()
    assert not [x for x in lines if x.get("event") == "closing"], "cut off as a slow reader"
    got = [x["id"] for x in lines if x.get("event") == kind]
    got += [m["id"] for x in lines if x.get("more") is not None and "status" in x
            for m in x.get("messages", []) if not m["text"].startswith("h")]  # pages, not history
    c = await login(*stack.realm("alpha"), user, register=False)
    await asyncio.sleep(0.5)  # pushes of what came back, if any
    got += [m["id"] for m in await inbox_all(c, inbox)]
    await asyncio.sleep(0.3)
    return got + [m["id"] for m in await inbox_all(c, inbox)] + pushed(c, kind)


@pytest.mark.parametrize("how", ["main killed", "realm frozen"])
async def test_written_after_the_link_broke_is_not_delivered_again(tmp_path: Path, uname: Names, how: str) -> None:
    """The link breaks while a client reads slowly: main restarts (and knows nothing of the old
    link), or the realm freezes and main drops it (and gives back what was on its way). The
    messages queued for the client on the old link are written after the new link is up; the
    realm names them to main, so that none comes back a second time."""
    stack = repeat_stack(tmp_path)
    try:
        victim, sender = uname("rw_victim"), uname("rw_sender")
        cs = await login(*stack.realm("beta"), sender)
        await cs.ok(f"register {victim} pw-secret")
        sock = await reader_that_stopped(*stack.realm("alpha"), victim)
        acked = await send_many(cs, victim, 1500, "q" * 2000)
        await asyncio.sleep(0.5)
        await break_link(stack, how, cs, sender, victim)
        await asyncio.sleep(1.5)  # the victim's session is on the new link
        exactly_once(acked, await logout_and_collect(stack, sock, victim))
    finally:
        stack.stop()


async def test_group_messages_written_after_main_restarts_come_once(tmp_path: Path, uname: Names) -> None:
    """The same with group messages, which the realm reports for all of its members at once:
    a member who reads and one who does not, on one realm, across a kill -9 of main. Each
    gets every message exactly once."""
    stack = repeat_stack(tmp_path)
    try:
        victim, reader, sender, g = uname("gw_victim"), uname("gw_reader"), uname("gw_sender"), uname("gw_grp")
        cs = await login(*stack.realm("beta"), sender)
        await cs.ok(f"creategroup {g}")
        cv = await login(*stack.realm("alpha"), victim)
        await cv.ok(f"joingroup {g}")
        await cv.ok("logout")
        await cv.close()
        cr = await login(*stack.realm("alpha"), reader)
        await cr.ok(f"joingroup {g}")
        read: list[int] = []

        async def keep_reading() -> None:
            while True:
                ev = await cr.event(timeout=60)
                if ev.get("event") == "group":
                    read.append(ev["id"])

        drain = asyncio.create_task(keep_reading())
        sock = await reader_that_stopped(*stack.realm("alpha"), victim)
        acked = await send_many(cs, g, 1500, "q" * 2000, verb="sendgroup")
        await asyncio.sleep(0.5)
        stack.restart_main()
        await until_ok(cs, f"sendprivate {sender} main is back")
        await asyncio.sleep(1.5)  # both sessions are on the new link
        exactly_once(acked, await logout_and_collect(stack, sock, victim, group=g))
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        read += [m["id"] for m in await inbox_all(cr, f"inboxgroup {g}")] + pushed(cr, "group")
        exactly_once(acked, read)
    finally:
        stack.stop()


@pytest.mark.parametrize("then", ["", "inbox\n"], ids=["logout", "inbox-then-logout"])
async def test_a_repeat_waits_for_its_first_copy(tmp_path: Path, uname: Names, then: str) -> None:
    """After main restarts it pushes again what it never heard written, though the realm still
    holds the first copies in the client's queue (behind large replies the client asked for
    and does not read). The repeat is not a delivery of its own: when the client logs out
    and those first copies are dropped, the messages must come back. An inbox page asked for
    then leaves out what the connection was sent already; the logout keeps what that page
    left out, since the page itself is written."""
    stack = repeat_stack(tmp_path)
    try:
        victim, sender = uname("rr_victim"), uname("rr_sender")
        cs = await login(*stack.realm("beta"), sender)
        await cs.ok(f"register {victim} pw-secret")
        await send_many(cs, victim, 100, "h" * 16000)  # a history to ask for
        cv = await login(*stack.realm("alpha"), victim, register=False)
        assert len(await inbox_all(cv)) == 100
        await cv.ok("logout")
        await cv.close()
        # Replies of about 1 MiB each (the reply cap) fill the socket buffers; what follows waits
        # in the queue.
        sock = await reader_that_stopped(*stack.realm("alpha"), victim, f"history {sender} 100\n" * 8)
        acked = await send_many(cs, victim, 300, "q" * 2000)
        await asyncio.sleep(0.5)
        stack.restart_main()
        await until_ok(cs, f"sendprivate {sender} main is back")
        await asyncio.sleep(1.5)  # the victim's session is on the new link; the repeats came
        exactly_once(acked, await logout_and_collect(stack, sock, victim, then))
    finally:
        stack.stop()


# ---- 3. a login the realm gave up on -----------------------------------------------------------

async def test_abandoned_login_leaves_no_phantom_session(open_stack: Stack, uname: Names) -> None:
    host, port = open_stack.realm("alpha")
    ghost, watcher = uname("ghost"), uname("watcher")
    c = await login(host, port, ghost)
    await c.ok("logout")
    cw = await login(*open_stack.realm("beta"), watcher)
    open_stack.main.signal(signal.SIGSTOP)  # main is slow: the realm's auth deadline (3 s) passes
    try:
        r = await c.cmd(f"auth {ghost} pw-secret", timeout=20)
        assert r["status"] == "ERROR" and r["code"] == "UNAVAILABLE", r
    finally:
        open_stack.main.signal(signal.SIGCONT)
    # main finishes the login after all; the realm undoes it.
    await asyncio.sleep(1.0)

    async def ghost_online() -> bool:
        return any(p["user"] == ghost for p in (await until_ok(cw, "who"))["online"])

    deadline = time.monotonic() + 10
    while await ghost_online():
        assert time.monotonic() < deadline, "a session nobody holds is online"
        await asyncio.sleep(0.2)
    sent = (await cw.ok(f"sendprivate {ghost} are you there"))["id"]
    await c.close()
    c2 = await login(host, port, ghost, register=False)
    exactly_once([sent], [m["id"] for m in await inbox_all(c2)] + pushed(c2))


# ---- 4. realm-only calls need the realm credential ---------------------------------------------

async def test_realm_only_calls_refuse_users_and_strangers(open_stack: Stack, uname: Names) -> None:
    addr = open_stack.main.addr
    user = Grpc(addr)
    token = await user.login(uname("rc_user"))
    stub = user.stub
    secret = os.environ[realmauth.ENV_SECRET]

    async def code_of(call: Any) -> grpc.StatusCode:
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    async def link_code(md: Any) -> grpc.StatusCode:
        call = stub.Link(pb.LinkRequest(realm="evil"), metadata=md)
        try:
            first = await call.read()
            assert first.events[0].HasField("linked")
            call.cancel()
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()

    assert await link_code(None) == grpc.StatusCode.UNAUTHENTICATED
    assert await link_code(bearer(token)) == grpc.StatusCode.PERMISSION_DENIED
    assert await link_code(realmauth.metadata("wrong-" + secret)) == grpc.StatusCode.UNAUTHENTICATED
    assert await link_code(realmauth.metadata(secret)) == grpc.StatusCode.OK
    assert await code_of(stub.AckEvents(pb.AckEventsRequest(link_id="x"))) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(stub.AckEvents(pb.AckEventsRequest(link_id="x"), metadata=bearer(token))
                         ) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.Attach(pb.AttachRequest(link_id="x"), metadata=bearer(token))
                         ) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(stub.Auth(pb.AuthRequest(user="nobody", password="x", link_id="x"))
                         ) == grpc.StatusCode.PERMISSION_DENIED

    async def relay_code(md: Any) -> grpc.StatusCode:
        async def calls() -> Any:
            # Sent only after a moment: a write racing main's refusal turns its status into
            # INTERNAL on the client side (grpcio; see realmchat/rpc.py CORE_WRITE_RACE).
            await asyncio.sleep(0.5)
            yield pb.RelayRequests(calls=[pb.RelayCall(id=1, method="Who", token=token)])

        try:
            async for _ in stub.Relay(calls(), metadata=md):
                return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    assert await relay_code(None) == grpc.StatusCode.UNAUTHENTICATED
    assert await relay_code(bearer(token)) == grpc.StatusCode.PERMISSION_DENIED
    # Many anonymous Link attempts: every one refused, nobody appears online for them.
    codes = await asyncio.gather(*(link_code(None) for _ in range(300)))
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
    who = await stub.Who(pb.WhoRequest(), metadata=bearer(token))
    assert all(p.realm != "evil" for p in who.online)
    await user.close()


async def test_main_says_a_link_closed_and_takes_written_messages_by_name(open_stack: Stack, uname: Names) -> None:
    """A realm that reports on a link main has closed is told so; messages named as written
    (the realm wrote them from a closed link) are delivered, and inbox no longer returns them."""
    g = Grpc(open_stack.main.addr)
    sender, reader = uname("nm_sender"), uname("nm_reader")
    token = await g.login(sender)
    await g.login(reader)
    ids = [(await g.send_private(token, reader, f"named {i}")).id for i in range(3)]
    md = realmauth.metadata(os.environ[realmauth.ENV_SECRET])
    link = g.stub.Link(pb.LinkRequest(realm="nm"), metadata=md)
    link_id = (await link.read()).events[0].linked.link_id
    r = await g.stub.AckEvents(pb.AckEventsRequest(link_id=link_id), metadata=md)
    assert not r.link_closed
    link.cancel()
    deadline = time.monotonic() + 10
    while not (await g.stub.AckEvents(pb.AckEventsRequest(link_id=link_id), metadata=md)).link_closed:
        assert time.monotonic() < deadline, "main kept a cancelled link open"
        await asyncio.sleep(0.1)
    named = pb.AckEventsRequest(link_id=link_id, entries=[pb.WrittenEntries(user=reader, ids=ids[:2])])
    assert (await g.stub.AckEvents(named, metadata=md)).link_closed
    c = await login(*open_stack.realm("alpha"), reader, register=False)
    await asyncio.sleep(0.3)  # a push of what is still undelivered, if any
    left = [m["id"] for m in await inbox_all(c)] + pushed(c)
    assert left == [ids[2]], left


# ---- 5. relink after a long outage -------------------------------------------------------------

async def test_realm_serves_within_two_seconds_of_main_returning(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=CHEAP)
    try:
        host, port = s.realm("alpha")
        c = await login(host, port, uname("relink"))
        port_main = s.main.port
        s.main.kill()
        await asyncio.sleep(25)  # long enough for gRPC's own backoff to have grown past 10 s
        s.main = start_main(s.data_dir, port_main, *CHEAP)
        t0 = time.monotonic()
        while (await c.cmd("who"))["status"] != "OK":
            assert time.monotonic() - t0 < 2.0, "the realm is still cut off from main"
            await asyncio.sleep(0.05)
        log = s.realms["alpha"].log()
        assert log.count("is unreachable") == 1, log[-2000:]
    finally:
        s.stop()
