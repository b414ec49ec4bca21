"""`trace ID`: where a message went, hop by hop. The hop log in process (main_server/trace.py),
then real servers: a message delivered, one waiting for an offline user, one dropped when its
realm died and returned to undelivered; what the sender, a recipient, a stranger and an
operator (the realm credential over gRPC) may see."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from main_server.trace import (
    DROPPED,
    HOPS_MOST,
    IN_FLIGHT,
    LINK_CLOSED,
    OFFLINE,
    PUSHED,
    RETURNED,
    WRITTEN,
    Hop,
    Trace,
    as_sender,
    seen_by,
    waiting_why,
)
from realmchat import realmauth
from realmchat.pb import chat_pb2 as pb

from .hardutil import Grpc, bearer
from .stack import Stack
from .test_cli_terminal import PW, run_cli
from .textclient import TextClient, login

Names = Callable[[str], str]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


# ---- the hop log, in process ---------------------------------------------------------------------


def test_hops_are_kept_per_message_for_the_most_recent_messages_only() -> None:
    t = Trace(Clock(), most=3)
    for msg in (1, 2, 3, 4):
        t.note(msg, PUSHED, ["bob"], "beta", {7: "bob"})
    assert t.hops(1) == []  # the oldest was forgotten
    assert t.hops(4) == [Hop(1004.0, PUSHED, ("bob",), "beta", ((7, "bob"),))]
    for _ in range(HOPS_MOST + 10):
        t.note(4, WRITTEN, ["bob"])
    assert len(t.hops(4)) == HOPS_MOST  # a message bounced forever stays bounded
    off = Trace(Clock(), most=0)
    off.note(1, PUSHED, ["bob"])
    assert off.hops(1) == []


def test_entries_become_one_hop_per_message() -> None:
    t = Trace(Clock())
    t.note_entries([("bob", 5), ("carol", 5), ("bob", 6)], DROPPED, "beta", why=LINK_CLOSED)
    assert [(h.users, h.why) for h in t.hops(5)] == [(("bob", "carol"), LINK_CLOSED)]
    assert [h.users for h in t.hops(6)] == [("bob",)]


def test_each_sees_only_their_own_realm_and_sessions() -> None:
    hops = [Hop(1.0, PUSHED, ("bob", "carol", "ann"), "beta", ((7, "bob"), (8, "carol"), (9, "ann"))),
            Hop(2.0, WRITTEN, ("bob",), "beta", ((7, "bob"),))]
    # The sender sees every recipient, but nobody's realm or session except their own.
    assert as_sender(hops, "ann") == [Hop(1.0, PUSHED, ("bob", "carol", "ann"), "", ((9, "ann"),)),
                                      Hop(2.0, WRITTEN, ("bob",), "", ())]
    # A recipient sees only the hops about them, naming only them.
    assert seen_by(hops, "carol") == [Hop(1.0, PUSHED, ("carol",), "beta", ((8, "carol"),))]
    assert seen_by(hops, "bob")[1] == Hop(2.0, WRITTEN, ("bob",), "beta", ((7, "bob"),))


def test_why_a_message_waits() -> None:
    pushed = Hop(1.0, PUSHED, ("bob",))
    dropped = Hop(2.0, DROPPED, ("bob",), why=LINK_CLOSED)
    assert waiting_why([], "bob") == OFFLINE
    assert waiting_why([pushed], "bob") == IN_FLIGHT
    assert waiting_why([pushed, dropped, Hop(2.0, RETURNED, ("bob",))], "bob") == f"dropped: {LINK_CLOSED}"


# ---- real servers --------------------------------------------------------------------------------


async def until_trace(c: TextClient, msg_id: int, done: Callable[[list[dict[str, Any]]], bool],
                      within: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        hops: list[dict[str, Any]] = (await c.ok(f"trace {msg_id}"))["hops"]
        if done(hops):
            return hops
        assert time.monotonic() < deadline, f"trace of {msg_id} never got there: {hops}"
        await asyncio.sleep(0.1)


def steps(hops: list[dict[str, Any]]) -> list[str]:
    return [h["step"] for h in hops]


async def test_a_delivered_message_as_its_sender_its_recipient_and_a_stranger_see_it(
        stack: Stack, uname: Names) -> None:
    a, b, c = uname("tra"), uname("trb"), uname("trc")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    cc = await login(*stack.realm("alpha"), c)
    msg_id = (await ca.ok(f"sendprivate {b} where did I go"))["id"]
    assert (await cb.event())["id"] == msg_id
    mine = await until_trace(ca, msg_id, lambda h: "delivered" in steps(h))
    assert steps(mine) == ["stored", "pushed", "written", "delivered"]
    assert mine[0]["users"] == [a]
    assert all(h["users"] == [b] for h in mine[1:])
    # Never the recipient's realm or session, to the sender.
    assert not any("realm" in h or "sessions" in h for h in mine[1:]), mine
    ats = [h["at"] for h in mine]
    assert ats == sorted(ats)
    theirs = await until_trace(cb, msg_id, lambda h: "delivered" in steps(h))
    assert steps(theirs) == ["stored", "pushed", "written", "delivered"]
    assert theirs[1]["realm"] == "beta" and len(theirs[1]["sessions"]) == 1
    assert theirs[2]["realm"] == "beta"
    err = await cc.err(f"trace {msg_id}", "NOT_FOUND")
    assert str(msg_id) in err["message"] or "message" in err["message"]
    await cc.err("trace 99999999999", "NOT_FOUND")
    await cc.err("trace nope", "INVALID_ARGUMENT")
    for cl in (ca, cb, cc):
        await cl.close()


async def test_a_message_for_an_offline_user_waits_in_inbox_and_says_why(stack: Stack, uname: Names) -> None:
    a, b = uname("toa"), uname("tob")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await cb.ok("logout")
    await cb.close()
    msg_id = (await ca.ok(f"sendprivate {b} are you there"))["id"]
    hops = (await ca.ok(f"trace {msg_id}"))["hops"]
    assert steps(hops) == ["stored", "inbox"]
    assert hops[1]["users"] == [b] and "no session" in hops[1]["why"]
    # Once they fetch it, it is delivered.
    cb = await login(*stack.realm("beta"), b, register=False)
    assert [m["id"] for m in (await cb.ok("inbox"))["messages"]] == [msg_id]
    after = await until_trace(ca, msg_id, lambda h: "delivered" in steps(h))
    assert steps(after) == ["stored", "pushed", "written", "delivered"]
    assert after[1]["why"] == "an inbox page"
    await ca.close()
    await cb.close()


async def test_a_push_lost_with_its_realm_is_dropped_returned_and_waits(fresh_stack: Stack, uname: Names) -> None:
    s = fresh_stack
    a, b = uname("tda"), uname("tdb")
    ca = await login(*s.realm("alpha"), a)
    cb = await login(*s.realm("beta"), b)
    beta = s.realms["beta"]
    beta.signal(signal.SIGSTOP)  # frozen: main pushes to its link, nobody writes it
    try:
        msg_id = (await ca.ok(f"sendprivate {b} into the void"))["id"]
        await until_trace(ca, msg_id, lambda h: "pushed" in steps(h))
    finally:
        beta.kill()  # the link dies with what it carried
    hops = await until_trace(ca, msg_id, lambda h: "inbox" in steps(h) and "returned" in steps(h))
    assert steps(hops) == ["stored", "pushed", "dropped", "returned", "inbox"]
    assert hops[2]["why"] == LINK_CLOSED
    assert hops[4]["why"] == f"dropped: {LINK_CLOSED}"
    # The operator, with the realm credential over gRPC, sees realms and sessions too.
    g = Grpc(s.main.addr)
    try:
        md = realmauth.metadata(os.environ[realmauth.ENV_SECRET])
        r = await g.stub.Trace(pb.TraceRequest(id=msg_id), metadata=md, timeout=10)
        assert [h.step for h in r.hops] == ["stored", "pushed", "dropped", "returned", "inbox"]
        assert r.hops[1].realm == "beta" and len(r.hops[1].sessions) == 1
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await g.stub.Trace(pb.TraceRequest(id=msg_id), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # A user's own token over gRPC: the sender's view.
        token = await g.login(a, register=False)
        r = await g.stub.Trace(pb.TraceRequest(id=msg_id), metadata=bearer(token), timeout=10)
        assert r.hops[1].realm == "" and list(r.hops[1].sessions) == []
    finally:
        await g.close()
    await ca.close()
    await cb.close()


async def test_the_terminal_shows_a_trace_line_by_hop(stack: Stack, uname: Names) -> None:
    a, b = uname("tta"), uname("ttb")
    ca = await login(*stack.realm("alpha"), a, PW)
    cb = await login(*stack.realm("beta"), b, PW)
    await cb.ok("logout")
    await cb.close()
    msg_id = (await ca.ok(f"sendprivate {b} traced from the terminal"))["id"]
    await ca.close()
    r = await asyncio.to_thread(run_cli, stack.realm("alpha"), [f"auth {a} {PW}", f"/trace {msg_id}"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"#{msg_id}:" in r.stdout
    assert re.search(rf"^  \d\d:\d\d:\d\d\.\d{{3}}  stored  {a}$", r.stdout, re.M), r.stdout
    assert re.search(rf"^  \d\d:\d\d:\d\d\.\d{{3}}  inbox  {b}  \(the user had no session", r.stdout, re.M), r.stdout
