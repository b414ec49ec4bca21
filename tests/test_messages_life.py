"""Messages have a life, against real main + realm processes over the raw text protocol: edit,
delete, reply, reactions, mentions, history paging and search, with every access rule and the
events that cross realms."""

from __future__ import annotations

from collections.abc import Callable

from .stack import Stack
from .test_rooms import expect
from .textclient import login

Names = Callable[[str], str]


async def test_edit_delete_only_by_author_events_reach_both_parties_across_realms(stack: Stack, uname: Names) -> None:
    a, b, c = uname("ea"), uname("eb"), uname("ec")
    ca = await login(*stack.realm("alpha"), a)
    ca2 = await login(*stack.realm("beta"), a, register=False)  # the author's other session, on the other realm
    cb = await login(*stack.realm("beta"), b)
    cc = await login(*stack.realm("alpha"), c)
    sent = await ca.ok(f"sendprivate {b} hello there")
    await expect(cb, "private", id=sent["id"])
    # Nobody but the author edits; nobody outside the conversation even sees it.
    await cb.err(f"edit {sent['id']} hijacked", "PERMISSION_DENIED")
    await cc.err(f"edit {sent['id']} hijacked", "NOT_FOUND")
    await cc.err(f"delete {sent['id']}", "NOT_FOUND")
    await cb.err(f"delete {sent['id']}", "PERMISSION_DENIED")
    r = await ca.ok(f"edit {sent['id']} hello again")
    assert set(r) == {"status", "id", "edited"} and r["id"] == sent["id"]
    for client in (cb, ca2):
        ev = await expect(client, "edited", id=sent["id"])
        assert ev["text"] == "hello again" and ev["edited"] == r["edited"] and ev["from"] == a and ev["to"] == b
    await ca.no_event()  # the acting session has its OK
    hist = (await cb.ok(f"history {a}"))["messages"]
    assert [(m["id"], m["text"], m["edited"]) for m in hist] == [(sent["id"], "hello again", r["edited"])]
    assert (await ca.ok(f"delete {sent['id']}")) == {"status": "OK", "id": sent["id"]}
    for client in (cb, ca2):
        assert (await expect(client, "deleted", id=sent["id"]))["by"] == a
    tomb = (await cb.ok(f"history {a}"))["messages"]
    assert tomb[0]["deleted"] is True and tomb[0]["text"] == "" and tomb[0]["id"] == sent["id"]
    await ca.err(f"edit {sent['id']} back", "NOT_FOUND")
    await ca.err(f"delete {sent['id']}", "NOT_FOUND")
    for x in (ca, ca2, cb, cc):
        await x.close()


async def test_group_moderation_delete_and_member_rules(stack: Stack, uname: Names) -> None:
    owner, adm, m1, m2, out, g = (uname("go"), uname("gad"), uname("gm"), uname("gm"), uname("gx"),
                                  uname("grp"))
    co = await login(*stack.realm("alpha"), owner)
    cad = await login(*stack.realm("beta"), adm)
    c1 = await login(*stack.realm("alpha"), m1)
    c2 = await login(*stack.realm("beta"), m2)
    cx = await login(*stack.realm("alpha"), out)
    await co.ok(f"creategroup {g}")
    for x in (cad, c1, c2):
        await x.ok(f"joingroup {g}")
    await co.ok(f"role {g} {adm} admin")
    s1 = await c1.ok(f"sendgroup {g} first from m1")
    s2 = await c1.ok(f"sendgroup {g} second from m1")
    own = await co.ok(f"sendgroup {g} from the owner")
    await c2.err(f"delete {s1['id']}", "PERMISSION_DENIED")  # a plain member: only their own
    await c2.err(f"edit {s1['id']} x", "PERMISSION_DENIED")
    await co.err(f"edit {s1['id']} x", "PERMISSION_DENIED")  # moderators delete, never edit
    await cx.err(f"delete {s1['id']}", "NOT_FOUND")
    await cx.err(f"react {s1['id']} 👍", "NOT_FOUND")
    await cad.ok(f"delete {s1['id']}")  # an admin deletes a member's message
    await expect(c2, "deleted", id=s1["id"], by=adm)
    await co.ok(f"delete {s2['id']}")  # the owner too
    await expect(c1, "deleted", id=s2["id"], by=owner)
    # Reactions: members only; events to the group; the state shows in history.
    await c2.ok(f"react {own['id']} 👍")
    ev = await expect(co, "reaction", id=own["id"])
    assert ev == {"event": "reaction", "id": own["id"], "user": m2, "emoji": "👍", "on": True, "group": g}
    await c1.ok(f"react {own['id']} 👍")
    await c1.ok(f"react {own['id']} 🎉")
    await c1.ok(f"unreact {own['id']} 🎉")
    assert (await expect(co, "reaction", id=own["id"], emoji="🎉", on=False))["user"] == m1
    await c1.err(f"react {own['id']} {'x' * 17}", "INVALID_ARGUMENT")
    hist = {m["id"]: m for m in (await c2.ok(f"history #{g}"))["messages"]}
    assert hist[own["id"]]["reactions"] == {"👍": [m2, m1]}
    assert hist[s1["id"]]["deleted"] is True and hist[s1["id"]]["text"] == ""
    # Kicked: access ends for every verb at once.
    await co.ok(f"kick {g} {m1}")
    s3 = await co.ok(f"sendgroup {g} after the kick")
    await c1.err(f"react {s3['id']} 👍", "NOT_FOUND")
    await c1.err(f"reply {s3['id']} hi", "NOT_FOUND")
    for x in (co, cad, c1, c2, cx):
        await x.close()


async def test_reply_goes_to_the_conversation_and_mentions_flag(stack: Stack, uname: Names) -> None:
    a, b, c, g = uname("ra"), uname("rb"), uname("rc"), uname("rg")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    cc = await login(*stack.realm("alpha"), c)
    first = await ca.ok(f"sendprivate {b} question?")
    await expect(cb, "private", id=first["id"])
    rep = await cb.ok(f"reply {first['id']} answer")
    ev = await expect(ca, "private", id=rep["id"])
    assert ev["reply_to"] == first["id"] and ev["to"] == a and ev["from"] == b
    await cc.err(f"reply {first['id']} butting in", "NOT_FOUND")
    await ca.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    await cc.ok(f"joingroup {g}")
    m = await ca.ok(f"sendgroup {g} hey @{b}, look")
    evb = await expect(cb, "group", id=m["id"])
    evc = await expect(cc, "group", id=m["id"])
    assert evb["mention"] is True and "mention" not in evc
    r2 = await cc.ok(f"reply {m['id']} in the group")
    ev = await expect(cb, "group", id=r2["id"])
    assert ev["reply_to"] == m["id"] and ev["group"] == g
    for x in (ca, cb, cc):
        await x.close()


async def test_offline_user_gets_final_state_never_deleted(stack: Stack, uname: Names) -> None:
    a, b = uname("oa"), uname("ob")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await cb.ok("logout")
    keep = await ca.ok(f"sendprivate {b} draft text @{b}")
    gone = await ca.ok(f"sendprivate {b} oops wrong person")
    await ca.ok(f"edit {keep['id']} final text @{b}")
    await ca.ok(f"delete {gone['id']}")
    await cb.ok(f"auth {b} pw-secret")
    got: list[dict[str, object]] = []
    try:
        while True:
            ev = await cb.event(timeout=2.0)
            if ev["event"] == "private":
                got.append(ev)
    except (TimeoutError, AssertionError):
        pass
    got += (await cb.ok("inbox"))["messages"]
    assert [(m["id"], m["text"]) for m in got] == [(keep["id"], f"final text @{b}")]
    assert got[0]["edited"] and got[0]["mention"] is True
    for x in (ca, cb):
        await x.close()


async def test_history_paging_before_and_after(stack: Stack, uname: Names) -> None:
    a, b = uname("ha"), uname("hb")
    ca = await login(*stack.realm("alpha"), a)
    await login(*stack.realm("beta"), b)
    ids = []
    for i in range(1105):
        await ca.send_raw(f"sendprivate {b} n{i}\n".encode())
    for _ in range(1105):
        ids.append((await ca.response())["id"])
    last = await ca.ok(f"history {b} 1000")
    assert [m["id"] for m in last["messages"]] == ids[-1000:] and last["more"] is True
    older = await ca.ok(f"history {b} 1000 before {ids[-1000]}")
    assert [m["id"] for m in older["messages"]] == ids[:105] and older["more"] is False
    page = await ca.ok(f"history {b} 10 before {ids[500]}")
    assert [m["id"] for m in page["messages"]] == ids[490:500] and page["more"] is True
    page = await ca.ok(f"history {b} 10 after {ids[500]}")
    assert [m["id"] for m in page["messages"]] == ids[501:511] and page["more"] is True
    tail = await ca.ok(f"history {b} 50 after {ids[-3]}")
    assert [m["text"] for m in tail["messages"]] == ["n1103", "n1104"] and tail["more"] is False
    await ca.err(f"history {b} 10 before", "INVALID_ARGUMENT")
    await ca.err(f"history {b} sideways 3", "INVALID_ARGUMENT")
    await ca.close()


async def test_search_never_leaks(stack: Stack, uname: Names) -> None:
    a, b, c, owner, pub, priv = (uname("sa"), uname("sb"), uname("sc"), uname("so"), uname("spub"),
                                 uname("spriv"))
    word = uname("zebra").replace("_", "x")  # one word nobody else's test writes
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    cc = await login(*stack.realm("alpha"), c)
    co = await login(*stack.realm("beta"), owner)
    mine = await ca.ok(f"sendprivate {b} {word} private to b")
    other = await cb.ok(f"sendprivate {c} {word} between b and c")
    await co.ok(f"creategroup {pub}")
    await co.ok(f"creategroup {priv} private")
    in_pub = await co.ok(f"sendgroup {pub} {word} in public")
    early = await co.ok(f"sendgroup {priv} {word} before a joined")
    await co.ok(f"invite {priv} {a}")
    await ca.ok(f"joingroup {priv}")
    late = await co.ok(f"sendgroup {priv} {word} {word} after a joined")
    dead = await ca.ok(f"sendprivate {b} {word} regrettable")
    await ca.ok(f"delete {dead['id']}")
    edited = await ca.ok(f"sendprivate {c} plain words")
    await ca.ok(f"edit {edited['id']} now with {word}")
    found = (await ca.ok(f"search {word}"))["messages"]
    ids = {m["id"] for m in found}
    assert ids == {mine["id"], late["id"], edited["id"]}
    assert other["id"] not in ids and in_pub["id"] not in ids and early["id"] not in ids and dead["id"] not in ids
    assert found[0]["id"] == late["id"]  # twice the word: ranked first
    assert all(("to" in m) != ("group" in m) for m in found)
    await ca.ok(f"joingroup {pub}")  # a public group shows all its history
    assert in_pub["id"] in {m["id"] for m in (await ca.ok(f"search {word}"))["messages"]}
    assert [m["id"] for m in (await ca.ok(f"search #{priv} {word}"))["messages"]] == [late["id"]]
    assert [m["id"] for m in (await ca.ok(f"search @{b} {word}"))["messages"]] == [mine["id"]]
    assert (await ca.ok(f"search {uname('nothing')}"))["messages"] == []
    await cc.err(f"search #{priv} {word}", "PERMISSION_DENIED")
    await ca.err("search ...", "INVALID_ARGUMENT")
    # The old text is gone from the index.
    assert edited["id"] not in {m["id"] for m in (await ca.ok(f"search @{c} plain"))["messages"]}
    await co.ok(f"kick {priv} {a}")
    assert late["id"] not in {m["id"] for m in (await ca.ok(f"search {word}"))["messages"]}
    for x in (ca, cb, cc, co):
        await x.close()


async def test_search_returns_at_most_50(stack: Stack, uname: Names) -> None:
    a, b = uname("la"), uname("lb")
    word = uname("yak").replace("_", "x")
    ca = await login(*stack.realm("alpha"), a)
    await login(*stack.realm("beta"), b)
    for i in range(60):
        await ca.send_raw(f"sendprivate {b} {word} {i}\n".encode())
    for _ in range(60):
        await ca.response()
    assert len((await ca.ok(f"search {word}"))["messages"]) == 50
    await ca.close()
