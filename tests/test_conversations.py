"""Conversation state follows the user, against real main + realm processes over the raw text
protocol: carbons and read markers across one user's sessions on two realms, unread counts
after logout/login, seen receipts on and off, presence (who hears it, coalescing), typing
(who hears it, rate limit) and the conversation list's order and counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .stack import Stack
from .textclient import TextClient, login

Names = Callable[[str], str]


async def expect(c: TextClient, kind: str, within: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The next event of this kind whose fields match (other events on the way are skipped)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} event with {fields} within {within}s"
        ev = await c.event(timeout=left)
        if ev["event"] == kind and all(ev.get(k) == v for k, v in fields.items()):
            return ev


async def none_of(c: TextClient, kind: str, wait: float, **fields: Any) -> list[dict[str, Any]]:
    """Reads events for `wait` seconds; fails on one of this kind matching fields. Returns all read."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            ev = await c.event(timeout=left)
        except TimeoutError:
            break
        assert not (ev["event"] == kind and all(ev.get(k) == v for k, v in fields.items())), ev
        seen.append(ev)
    return seen


async def watcher(stack: Stack, realm: str, user: str) -> TextClient:
    """A logged-in client that reads presence events too."""
    c = await login(*stack.realm(realm), user)
    c.ignore = frozenset()
    return c


def conv(r: dict[str, Any], peer: str) -> dict[str, Any]:
    return next(c for c in r["conversations"] if c["peer"] == peer)


async def test_carbons_and_read_markers_follow_the_user(stack: Stack, uname: Names) -> None:
    alice, bob = uname("ca"), uname("cb")
    a1 = await login(*stack.realm("alpha"), alice)
    a2 = await login(*stack.realm("beta"), alice, register=False)
    b = await login(*stack.realm("beta"), bob)
    # A message sent from one session reaches the other (from: the sender, to: the peer); the
    # sending session gets its response only.
    r = await a1.ok(f"sendprivate {bob} from my laptop")
    carbon = await expect(a2, "private", id=r["id"])
    assert carbon == {"event": "private", "id": r["id"], "from": alice, "to": bob, "text": "from my laptop",
                      "ts": r["ts"]}
    assert (await expect(b, "private"))["id"] == r["id"]
    await a1.no_event(0.3)
    # Bob answers twice: both of alice's sessions get them; one of them reads.
    m1 = await b.ok(f"sendprivate {alice} one")
    m2 = await b.ok(f"sendprivate {alice} two")
    for s in (a1, a2):
        await expect(s, "private", id=m2["id"])
    assert conv(await a2.ok("conversations"), bob)["unread"] == 2
    assert await a2.ok(f"read {bob} {m1['id']}") == {"status": "OK", "peer": bob, "read": m1["id"]}
    assert await expect(a1, "read") == {"event": "read", "peer": bob, "id": m1["id"]}
    await a2.no_event(0.2)  # the reading session is answered, not told
    c = conv(await a1.ok("conversations"), bob)
    assert (c["unread"], c["read"], c["last"]["id"]) == (1, m1["id"], m2["id"])
    # Never back: an older id leaves the marker (and tells nobody).
    assert (await a1.ok(f"read {bob} {r['id']}"))["read"] == m1["id"]
    await a2.no_event(0.3)
    for cl in (a1, a2, b):
        await cl.close()


async def test_unread_counts_survive_logout_and_login(stack: Stack, uname: Names) -> None:
    alice, bob, g = uname("ua"), uname("ub"), uname("ug")
    a = await login(*stack.realm("alpha"), alice)
    b = await login(*stack.realm("beta"), bob)
    await a.ok(f"creategroup {g}")
    await b.ok(f"joingroup {g}")
    await a.ok("logout")
    sent = [await b.ok(f"sendprivate {alice} p{i}") for i in range(3)]
    gsent = [await b.ok(f"sendgroup {g} g{i}") for i in range(2)]
    await b.ok(f"sendgroup {g} hi @{alice}")
    await a.ok(f"auth {alice} pw-secret")
    r = await a.ok("conversations")
    assert [c["peer"] for c in r["conversations"]] == [g, bob]  # newest first
    assert (conv(r, bob)["unread"], conv(r, bob)["kind"], conv(r, bob)["read"]) == (3, "user", 0)
    assert (conv(r, g)["unread"], conv(r, g)["kind"]) == (3, "group")
    # Fetching the inbox delivers messages; it does not read them.
    assert len((await a.ok("inbox"))["messages"]) == 3
    await a.ok(f"read {g} {gsent[1]['id']}")
    await a.ok("logout")
    await a.ok(f"auth {alice} pw-secret")
    r = await a.ok("conversations")
    assert (conv(r, bob)["unread"], conv(r, g)["unread"], conv(r, g)["read"]) == (3, 1, gsent[1]["id"])
    assert conv(r, bob)["last"]["text"] == "p2" and sent[2]["id"] == conv(r, bob)["last"]["id"]
    await a.close()
    await b.close()


async def test_seen_receipts_on_and_off(stack: Stack, uname: Names) -> None:
    alice, bob = uname("ra"), uname("rb")
    a = await login(*stack.realm("alpha"), alice)
    b = await login(*stack.realm("beta"), bob)
    m1 = await a.ok(f"sendprivate {bob} did you see this")
    await expect(b, "private", id=m1["id"])
    await b.ok(f"read {alice} {m1['id']}")
    assert await expect(a, "seen") == {"event": "seen", "by": bob, "id": m1["id"]}
    assert await b.ok("receipts") == {"status": "OK", "receipts": "on"}  # no word: only asks
    assert await b.ok("receipts off") == {"status": "OK", "receipts": "off"}
    # The setting is the account's: another device of bob's asks and learns it.
    b2 = await login(*stack.realm("alpha"), bob, register=False)
    assert await b2.ok("receipts") == {"status": "OK", "receipts": "off"}
    await b2.close()
    m2 = await a.ok(f"sendprivate {bob} and this")
    await expect(b, "private", id=m2["id"])
    await b.ok(f"read {alice} {m2['id']}")
    await none_of(a, "seen", 0.6)
    assert (await b.ok("receipts on"))["receipts"] == "on"
    m3 = await a.ok(f"sendprivate {bob} third")
    await expect(b, "private", id=m3["id"])
    await b.ok(f"read {alice} {m3['id']}")
    assert (await expect(a, "seen"))["id"] == m3["id"]
    await b.err("receipts maybe", "INVALID_ARGUMENT")
    await a.close()
    await b.close()


async def test_presence_reaches_who_shares_and_is_coalesced(stack: Stack, uname: Names) -> None:
    u, member, partner, stranger, g = uname("pu"), uname("pm"), uname("pp"), uname("ps"), uname("pg")
    m = await watcher(stack, "alpha", member)
    p = await watcher(stack, "beta", partner)
    s = await watcher(stack, "alpha", stranger)
    c = await login(*stack.realm("beta"), u)
    await m.ok(f"creategroup {g}")
    await c.ok(f"joingroup {g}")
    await c.ok(f"sendprivate {partner} hello")
    await c.ok("logout")
    # Offline: to the group member and the conversation partner, not to the stranger.
    for w in (m, p):
        assert await expect(w, "presence", user=u, status="offline") == {
            "event": "presence", "user": u, "status": "offline", "realm": "", "message": ""}
    await c.ok(f"auth {u} pw-secret")
    ev = await expect(m, "presence", user=u, status="online")
    assert ev["realm"] == "beta"
    await expect(p, "presence", user=u, status="online")
    assert await c.ok("away lunch, back at 2") == {"status": "OK", "presence": "away", "message": "lunch, back at 2"}
    ev = await expect(p, "presence", user=u, status="away")
    assert ev["message"] == "lunch, back at 2"
    who = {e["user"]: e for e in (await s.ok("who"))["online"]}
    assert (who[u]["status"], who[u]["message"]) == ("away", "lunch, back at 2")
    assert who[member]["status"] == "online"
    # Coalesced: a burst of changes within a second gives at most a couple of events, the
    # latest state last.
    t0 = time.monotonic()
    for i in range(6):
        await c.ok(f"away {i}")
        await c.ok("back")
    await c.ok("away final")
    burst_s = time.monotonic() - t0
    got = [e for e in await none_of(m, "presence", 2.5, user=u, status="offline")
           if e["event"] == "presence" and e["user"] == u]
    assert got and got[-1]["status"] == "away" and got[-1]["message"] == "final", got
    # 13 changes: one announcement at once, then at most one per second of the burst, then the last.
    assert len(got) <= 2 + int(burst_s), (burst_s, got)
    await none_of(s, "presence", 0.5, user=u)
    assert not [e for e in s.ignored if e.get("user") == u]
    assert await c.ok("back") == {"status": "OK", "presence": "online", "message": ""}
    for w in (m, p, s, c):
        await w.close()


async def test_typing_reaches_the_peer_only_and_is_rate_limited(stack: Stack, uname: Names) -> None:
    alice, bob, carol, dave, g = uname("ta"), uname("tb"), uname("tc"), uname("td"), uname("tg")
    a = await login(*stack.realm("alpha"), alice)
    b = await login(*stack.realm("beta"), bob)
    c = await login(*stack.realm("alpha"), carol)
    d = await login(*stack.realm("beta"), dave)
    assert await a.ok(f"typing {bob}") == {"status": "OK", "forwarded": True}
    ev = await expect(b, "typing")
    assert (ev["user"], ev["peer"]) == (alice, alice)
    assert ev["expires"] == 5
    # Within 2 s: accepted, not forwarded.
    assert (await a.ok(f"typing {bob}"))["forwarded"] is False
    await none_of(b, "typing", 0.5)
    await c.no_event(0.1)
    await a.ok(f"creategroup {g}")
    await b.ok(f"joingroup {g}")
    await a.ok(f"typing {g}")
    ev = await expect(b, "typing", peer=g)
    assert ev["user"] == alice
    await d.err(f"typing {g}", "PERMISSION_DENIED")
    await a.err(f"typing {uname('nobody')}", "NOT_FOUND")
    await asyncio.sleep(2.1)
    assert (await a.ok(f"typing {bob}"))["forwarded"] is True
    await expect(b, "typing", peer=alice)
    await none_of(c, "typing", 0.3)
    await none_of(d, "typing", 0.1)
    for cl in (a, b, c, d):
        await cl.close()


async def test_conversation_list_order_and_counts(stack: Stack, uname: Names) -> None:
    me, x, y, g, h = uname("oa"), uname("ox"), uname("oy"), uname("og"), uname("oh")
    a = await login(*stack.realm("alpha"), me)
    cx = await login(*stack.realm("beta"), x)
    cy = await login(*stack.realm("alpha"), y)
    await a.ok(f"creategroup {g}")
    await a.ok(f"creategroup {h} private")
    await cx.ok(f"joingroup {g}")
    await cx.ok(f"sendprivate {me} 1")
    await cy.ok(f"sendprivate {me} 2")
    await cx.ok(f"sendgroup {g} 3")
    await a.ok(f"sendprivate {x} 4 (mine)")
    r = await a.ok("conversations")
    assert [(c["peer"], c["kind"], c["unread"], c["mentions"], c["last"] and c["last"]["text"])
            for c in r["conversations"]] == [(x, "user", 1, 0, "4 (mine)"), (g, "group", 1, 0, "3"),
                                             (y, "user", 1, 0, "2"), (h, "group", 0, 0, None)]
    await a.err("read nobody_here 1", "NOT_FOUND")
    await a.err(f"read {x} many", "INVALID_ARGUMENT")
    for cl in (a, cx, cy):
        await cl.close()
