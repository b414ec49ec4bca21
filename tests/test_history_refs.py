"""History by time, around a message and between two references, through the realm's text
port against a real main (sqlite): every form, mixed references, tombstones, the paging forms
unchanged, and bad references answered INVALID_ARGUMENT with what is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from realmchat.pb import chat_pb2 as pb

from .hardutil import Grpc, bearer
from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]


async def conversation(stack: Stack, uname: Names, n: int) -> tuple[TextClient, TextClient, str, str, list[Any]]:
    a, b = uname("ra"), uname("rb")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    for i in range(n):
        await (ca if i % 2 == 0 else cb).ok(f"sendprivate {b if i % 2 == 0 else a} m{i}")
    msgs = (await ca.ok(f"history {b}"))["messages"]
    assert [m["text"] for m in msgs] == [f"m{i}" for i in range(n)]
    return ca, cb, a, b, msgs


def texts(r: dict[str, Any]) -> list[str]:
    return [m["text"] for m in r["messages"]]


async def test_around_before_after_and_between(stack: Stack, uname: Names) -> None:
    ca, cb, a, b, msgs = await conversation(stack, uname, 10)
    ids = [m["id"] for m in msgs]
    r = await ca.ok(f"history {b} 5 around {ids[5]}")
    assert texts(r) == ["m3", "m4", "m5", "m6", "m7"] and r["more"]  # two each side, the message with them
    r = await cb.ok(f"history {a} 4 around {ids[1]}")
    assert texts(r) == ["m0", "m1", "m2"] and r["more"]  # limit/2 each side: one older is all there is
    assert texts(await ca.ok(f"history {b} 1 around {ids[9]}")) == ["m9"]
    # Times: the messages' own times as references.
    t = msgs[6]["ts"]
    assert set(texts(await ca.ok(f"history {b} 100 before {t}"))) >= {"m0", "m5"}
    assert "m6" not in texts(await ca.ok(f"history {b} 100 before {t}"))
    assert "m6" not in texts(await ca.ok(f"history {b} 100 after {t}"))
    assert texts(await ca.ok(f"history {b} 100 after 2000-01-01T00:00:00Z"))[:2] == ["m0", "m1"]
    assert texts(await ca.ok(f"history {b} 2 before 2999-01-01T00:00:00.000+00:00")) == ["m8", "m9"]
    # Between: both left out, in either order, counted from the first.
    r = await ca.ok(f"history {b} 3 between {ids[1]} {ids[8]}")
    assert texts(r) == ["m2", "m3", "m4"] and r["more"]
    r = await ca.ok(f"history {b} 3 between {ids[8]} {ids[1]}")
    assert texts(r) == ["m5", "m6", "m7"] and r["more"]
    r = await ca.ok(f"history {b} 100 between {ids[1]} {ids[4]}")
    assert texts(r) == ["m2", "m3"] and not r["more"]
    r = await ca.ok(f"history {b} 100 between 2000-01-01T00:00:00Z {ids[2]}")  # a time and an id
    assert texts(r) == ["m0", "m1"]
    # The paging forms are as they were: any id is a bound.
    assert texts(await ca.ok(f"history {b} 2 before {ids[3]}")) == ["m1", "m2"]
    assert texts(await ca.ok(f"history {b} 2 after {ids[3]}")) == ["m4", "m5"]


async def test_a_deleted_message_stays_in_its_place(stack: Stack, uname: Names) -> None:
    ca, cb, a, _b, msgs = await conversation(stack, uname, 5)
    await ca.ok(f"delete {msgs[2]['id']}")
    got = (await cb.ok(f"history {a} 3 around {msgs[2]['id']}"))["messages"]
    assert [m["id"] for m in got] == [m["id"] for m in msgs[1:4]]
    assert got[1].get("deleted") is True and got[1]["text"] == ""


async def test_groups_follow_the_history_rules(stack: Stack, uname: Names) -> None:
    a, b, g = uname("ga"), uname("gb"), uname("gg")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await ca.ok(f"creategroup {g} private")
    early = (await ca.ok(f"sendgroup {g} before you came"))["id"]
    await ca.ok(f"invite {g} {b}")
    await cb.ok(f"joingroup {g}")
    later = [(await ca.ok(f"sendgroup {g} g{i}"))["id"] for i in range(3)]
    assert texts(await cb.ok(f"history #{g} 3 around {later[1]}")) == ["g0", "g1", "g2"]
    # A message before the join point is not one the member may see.
    r = await cb.err(f"history #{g} 3 around {early}", "INVALID_ARGUMENT")
    assert "not one of this conversation's" in r["message"]
    assert texts(await ca.ok(f"history #{g} 3 around {early}")) == ["before you came", "g0"]
    outsider = await login(*stack.realm("alpha"), uname("go"))
    await outsider.err(f"history #{g} 3 around {later[0]}", "PERMISSION_DENIED")


async def test_bad_references(stack: Stack, uname: Names) -> None:
    ca, _cb, a, b, msgs = await conversation(stack, uname, 3)
    elsewhere = (await ca.ok(f"sendprivate {a} a note to self"))["id"]
    for line in (
        f"history {b} 3 around {elsewhere}",
        f"history {b} 3 between {elsewhere} {msgs[0]['id']}",
        f"history {b} 3 around 999999999",
    ):
        r = await ca.err(line, "INVALID_ARGUMENT")
        assert "not one of this conversation's" in r["message"], r
    r = await ca.err(f"history {b} 3 before 2026-13-45T00:00:00Z", "INVALID_ARGUMENT")
    assert "no such time" in r["message"]
    r = await ca.err(f"history {b} 3 around yesterday", "INVALID_ARGUMENT")
    assert "a message ID or a time" in r["message"]
    await ca.err(f"history {b} 3 between {msgs[0]['id']}", "INVALID_ARGUMENT")
    await ca.err(f"history {b} 1001 around {msgs[0]['id']}", "INVALID_ARGUMENT")


async def test_main_refuses_what_no_client_sends(stack: Stack, uname: Names) -> None:
    """Straight to main's History and Conversations: limits out of range, two forms at once, a
    reference naming both an id and a time; and Conversations by activity."""
    a, b = uname("pa"), uname("pb")
    g = Grpc(stack.main.addr)
    try:
        token = await g.login(a)
        await g.login(b)
        sent = await g.send_private(token, b, "hello")
        meta = bearer(token)
        bad = [
            pb.HistoryRequest(peer=b, limit=1001),
            pb.HistoryRequest(peer=b, limit=-1),
            pb.HistoryRequest(peer=b, before=sent.id, around=pb.HistoryRef(id=sent.id)),
            pb.HistoryRequest(peer=b, around=pb.HistoryRef(id=sent.id, ts=sent.ts)),
            pb.HistoryRequest(peer=b, around=pb.HistoryRef()),
            pb.HistoryRequest(peer=b, start=pb.HistoryRef(id=sent.id)),
        ]
        for request in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await g.stub.History(request, metadata=meta, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        r = await g.stub.History(pb.HistoryRequest(peer=b, around=pb.HistoryRef(ts=sent.ts)), metadata=meta, timeout=10)
        assert [m.id for m in r.messages] == [sent.id]
        active = await g.stub.Conversations(
            pb.ConversationsRequest(active_after="2000-01-01T00:00:00Z"), metadata=meta, timeout=10
        )
        assert [c.peer for c in active.conversations] == [b]
        none = await g.stub.Conversations(pb.ConversationsRequest(active_after=sent.ts), metadata=meta, timeout=10)
        assert list(none.conversations) == []  # strictly after its newest message
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await g.stub.Conversations(pb.ConversationsRequest(active_before="soon"), metadata=meta, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await g.close()
