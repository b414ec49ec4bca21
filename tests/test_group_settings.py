"""A group's settings over the raw text protocol, against real main + realm processes: making a
group private or public (`groupmode`), what that means for members, the directory and joining,
the key change told to members (the key itself to the owner and admins only), and `topic`
answering who set the topic and when, the mode, whether there is a key and the creation time;
and the same through chat_cli's library and the terminal."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from chat_cli import GroupModeEvent, InvalidArgument, PermissionDenied

from .stack import Stack
from .test_cli_terminal import run_cli
from .test_client_lib import PW, until, user
from .test_rooms import TS_RE, expect
from .textclient import login

Names = Callable[[str], str]


async def test_groupmode_by_the_owner_told_to_members_on_another_realm(stack: Stack, uname: Names) -> None:
    owner, mem, out, g = uname("gmo"), uname("gmm"), uname("gmx"), uname("gmg")
    co = await login(*stack.realm("alpha"), owner)
    cm = await login(*stack.realm("beta"), mem)
    cx = await login(*stack.realm("beta"), out)
    await co.ok(f"creategroup {g}")
    await cm.ok(f"joingroup {g}")
    await co.ok(f"sendgroup {g} said while public")
    await expect(cm, "group", text="said while public")
    # A plain member may not; the refusal names who may.
    refused = await cm.err(f"groupmode {g} private", "PERMISSION_DENIED")
    assert "owner or an admin" in refused["message"]
    assert [x["group"] for x in (await cx.ok(f"listgroups {g}"))["groups"]] == [g]
    assert await co.ok(f"groupmode {g} private") == {"status": "OK", "group": g, "mode": "private"}
    ev = await expect(cm, "groupmode", group=g)
    assert ev == {"event": "groupmode", "group": g, "mode": "private", "by": owner}
    # Gone from other users' directory; the member keeps it, and its history.
    assert (await cx.ok(f"listgroups {g}"))["groups"] == []
    assert [(x["group"], x["mode"]) for x in (await cm.ok(f"listgroups {g}"))["groups"]] == [(g, "private")]
    assert [m["text"] for m in (await cm.ok(f"history #{g}"))["messages"]] == ["said while public"]
    await cx.err(f"joingroup {g}", "PERMISSION_DENIED")
    await cx.err(f"topic {g}", "PERMISSION_DENIED")
    # Public again: anyone may join.
    await co.ok(f"groupmode {g} PUBLIC")
    assert (await expect(cm, "groupmode", group=g))["mode"] == "public"
    assert [x["mode"] for x in (await cx.ok(f"listgroups {g}"))["groups"]] == ["public"]
    await cx.ok(f"joingroup {g}")


async def test_groupmode_bad_input_gets_a_clear_error(stack: Stack, uname: Names) -> None:
    owner, g = uname("gbo"), uname("gbg")
    co = await login(*stack.realm("alpha"), owner)
    await co.ok(f"creategroup {g}")
    assert "public" in (await co.err(f"groupmode {g} secret", "INVALID_ARGUMENT"))["message"]
    assert "usage" in (await co.err(f"groupmode {g}", "INVALID_ARGUMENT"))["message"]
    await co.err(f"groupmode {uname('nogroup')} private", "NOT_FOUND")


async def test_a_key_change_is_told_to_members_the_key_to_admins_only(stack: Stack, uname: Names) -> None:
    owner, adm, mem, g = uname("gko"), uname("gka"), uname("gkm"), uname("gkg")
    co = await login(*stack.realm("alpha"), owner)
    ca = await login(*stack.realm("beta"), adm)
    cm = await login(*stack.realm("beta"), mem)
    await co.ok(f"creategroup {g}")
    for c in (ca, cm):
        await c.ok(f"joingroup {g}")
    await co.ok(f"role {g} {adm} admin")
    await co.ok(f"groupkey {g} sesame")
    assert await expect(ca, "groupkey", group=g) == {
        "event": "groupkey",
        "group": g,
        "has_key": True,
        "by": owner,
        "key": "sesame",
    }
    assert await expect(cm, "groupkey", group=g) == {"event": "groupkey", "group": g, "has_key": True, "by": owner}
    assert (await cm.ok(f"topic {g}"))["has_key"] is True
    await ca.ok(f"groupkey {g} -")
    assert await expect(cm, "groupkey", group=g) == {"event": "groupkey", "group": g, "has_key": False, "by": adm}
    # The owner hears of the admin's change, and sees no key to show (there is none).
    assert "key" not in await expect(co, "groupkey", group=g, has_key=False, by=adm)
    assert (await cm.ok(f"topic {g}"))["has_key"] is False


async def test_topic_answers_who_set_it_and_when(stack: Stack, uname: Names) -> None:
    owner, mem, g = uname("gto"), uname("gtm"), uname("gtg")
    co = await login(*stack.realm("alpha"), owner)
    cm = await login(*stack.realm("beta"), mem)
    await co.ok(f"creategroup {g} private")
    await co.ok(f"invite {g} {mem}")
    await cm.ok(f"joingroup {g}")
    fresh = await cm.ok(f"topic {g}")
    # No topic yet: nobody set it, so no setter or time at all.
    assert set(fresh) == {"status", "group", "topic", "mode", "has_key", "created"}
    assert (fresh["topic"], fresh["mode"], fresh["has_key"]) == ("", "private", False)
    assert TS_RE.match(fresh["created"])
    await co.ok(f"topic {g} the plan")
    ev = await expect(cm, "topic", group=g)
    assert (ev["topic"], ev["by"]) == ("the plan", owner) and TS_RE.match(ev["at"])
    t = await cm.ok(f"topic {g}")
    assert (t["topic"], t["topic_by"], t["topic_at"], t["created"]) == ("the plan", owner, ev["at"], fresh["created"])


async def test_the_client_library_and_the_terminal_switch_the_mode(stack: Stack, uname: Names) -> None:
    owner, mem, g = uname("gco"), uname("gcm"), uname("gcg")
    alice, _ = await user(stack.realm("alpha"), owner)
    bob, b_rec = await user(stack.realm("beta"), mem)
    try:
        await alice.create_group(g)
        await bob.join_group(g)
        with pytest.raises(PermissionDenied):
            await bob.set_group_mode(g, "private")
        with pytest.raises(InvalidArgument):
            await alice.set_group_mode(g, "hidden")  # refused before it is sent
        assert await alice.set_group_mode(g, "private") == "private"
        await until(lambda: any(isinstance(e, GroupModeEvent) for e in b_rec.events), what="groupmode event")
        ev = next(e for e in b_rec.events if isinstance(e, GroupModeEvent))
        assert (ev.group, ev.private, ev.by) == (g, True, owner)
        await alice.set_topic(g, "plans")
        info = await bob.topic_info(g)
        assert (info.topic, info.by, info.mode, info.has_key) == ("plans", owner, "private", False)
        assert info.set_when is not None and TS_RE.match(info.created)
    finally:
        await alice.close()
        await bob.close()
    r = run_cli(stack.realm("alpha"), [f"auth {owner} {PW}", f"groupmode {g} public", f"topic {g}"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"#{g} is public now: anyone may join" in r.stdout, r.stdout
    assert re.search(rf"topic of #{g}: plans \(set by {owner} on \d{{4}}-\d\d-\d\d \d\d:\d\d UTC\)", r.stdout), r.stdout
