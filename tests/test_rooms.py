"""Groups are rooms, against real main + realm processes over the raw text protocol: every
permission rule, the events members see across realms, group files, and the version 1 flow."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .hardutil import wait_until
from .stack import Stack, start_stack
from .textclient import TextClient, login

Names = Callable[[str], str]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def expect(c: TextClient, kind: str, within: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The next event of this kind whose fields match (other events on the way are skipped)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} event with {fields} within {within}s"
        ev = await c.event(timeout=left)
        if ev["event"] == kind and all(ev.get(k) == v for k, v in fields.items()):
            return ev


async def send_file(c: TextClient, to: str, name: str, data: bytes) -> dict[str, Any]:
    await c.send_raw(f"sendfile {to} {name} {len(data)}\n".encode() + data)
    return await c.response()


async def download(c: TextClient, file_id: int) -> tuple[dict[str, Any], bytes]:
    head = await c.ok(f"receivefile {file_id}")
    return head, await c.read_exactly(head["size"])


async def test_version1_group_flow_unchanged(stack: Stack, uname: Names) -> None:
    owner, on, off, g = uname("vo"), uname("von"), uname("voff"), uname("vgrp")
    co = await login(*stack.realm("alpha"), owner)
    con = await login(*stack.realm("beta"), on)
    coff = await login(*stack.realm("beta"), off)
    assert await co.ok(f"creategroup {g}") == {"status": "OK", "group": g, "mode": "public"}
    assert (await con.ok(f"joingroup {g}"))["group"] == g
    assert (await coff.ok(f"joingroup {g}"))["group"] == g
    await coff.ok("logout")
    r = await co.ok(f"sendgroup {g} hello room")
    assert set(r) == {"status", "id", "ts"}
    ev = await expect(con, "group")
    assert ev == {"event": "group", "id": r["id"], "from": owner, "group": g, "text": "hello room", "ts": r["ts"]}
    await coff.ok(f"auth {off} pw-secret")
    msgs = (await coff.ok(f"inboxgroup {g}"))["messages"]
    assert [(m["id"], m["text"], m["group"]) for m in msgs] == [(r["id"], "hello room", g)]
    assert (await coff.ok(f"inboxgroup {g}"))["messages"] == []
    assert {"group": g, "role": "owner", "members": 3} in (await co.ok("groups"))["groups"]


async def test_private_group_needs_an_invitation(stack: Stack, uname: Names) -> None:
    owner, bob, out, g = uname("po"), uname("pb"), uname("px"), uname("priv")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    cx = await login(*stack.realm("beta"), out)
    assert await co.ok(f"creategroup {g} private") == {"status": "OK", "group": g, "mode": "private"}
    await co.ok(f"sendgroup {g} secret plans")
    # An outsider learns nothing but the name.
    await cb.err(f"joingroup {g}", "PERMISSION_DENIED")
    for line in (f"members {g}", f"topic {g}", f"history #{g}", f"sendgroup {g} hi", f"inboxgroup {g}",
                 f"invite {g} {out}"):
        await cx.err(line, "PERMISSION_DENIED")
    # Invited, bob may join; everyone in the room hears of it, across realms.
    assert await co.ok(f"invite {g} {bob}") == {"status": "OK", "group": g, "user": bob}
    assert await expect(cb, "invited") == {"event": "invited", "group": g, "by": owner}
    assert (await cb.ok(f"joingroup {g}"))["group"] == g
    assert await expect(co, "member", action="join") == {"event": "member", "group": g, "user": bob,
                                                        "action": "join", "by": bob}
    # A member sees history from their join on: not what was said before.
    assert (await cb.ok(f"history #{g}"))["messages"] == []
    after = await co.ok(f"sendgroup {g} welcome bob")
    assert [m["id"] for m in (await cb.ok(f"history #{g}"))["messages"]] == [after["id"]]
    assert [m["text"] for m in (await co.ok(f"history #{g}"))["messages"]] == ["secret plans", "welcome bob"]
    # An invitation is used up by the join: after leaving, bob needs a new one.
    assert (await cb.ok(f"leavegroup {g}"))["group"] == g
    assert await expect(co, "member", action="leave") == {"event": "member", "group": g, "user": bob,
                                                         "action": "leave", "by": bob}
    await cb.err(f"joingroup {g}", "PERMISSION_DENIED")
    await cb.err(f"history #{g}", "PERMISSION_DENIED")
    await co.err(f"leavegroup {g}", "PERMISSION_DENIED")  # the owner cannot leave


async def test_public_group_history_is_whole_for_newcomers(stack: Stack, uname: Names) -> None:
    owner, bob, g = uname("ho"), uname("hb"), uname("pub")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    await co.ok(f"creategroup {g}")
    first = await co.ok(f"sendgroup {g} before bob")
    await cb.ok(f"joingroup {g}")
    assert [m["id"] for m in (await cb.ok(f"history #{g}"))["messages"]] == [first["id"]]


async def test_join_keys(stack: Stack, uname: Names) -> None:
    owner, mem, carol, dave, g, p = uname("ko"), uname("km"), uname("kc"), uname("kd"), uname("kg"), uname("kp")
    co = await login(*stack.realm("alpha"), owner)
    cm = await login(*stack.realm("alpha"), mem)
    cc = await login(*stack.realm("beta"), carol)
    cd = await login(*stack.realm("beta"), dave)
    await co.ok(f"creategroup {g}")
    await cm.ok(f"joingroup {g}")
    assert await co.ok(f"groupkey {g} s3cret-key") == {"status": "OK", "group": g}
    await cm.err(f"groupkey {g} mine", "PERMISSION_DENIED")  # owner/admin only
    await cc.err(f"joingroup {g}", "PERMISSION_DENIED")
    await cc.err(f"joingroup {g} wrong-key", "PERMISSION_DENIED")
    assert (await cc.ok(f"joingroup {g} s3cret-key"))["group"] == g
    # An invitation lets a user in without the key.
    await co.ok(f"invite {g} {dave}")
    await cd.ok(f"joingroup {g}")
    await cd.ok(f"leavegroup {g}")
    await cd.err(f"joingroup {g} s3cret-kez", "PERMISSION_DENIED")
    await co.ok(f"groupkey {g} -")  # cleared: a public group is open again
    await cd.ok(f"joingroup {g}")
    # On a private group a key is the other way in (besides an invitation).
    await co.ok(f"creategroup {p} private")
    await co.ok(f"groupkey {p} pr1vate-key")
    await cc.err(f"joingroup {p}", "PERMISSION_DENIED")
    await cc.ok(f"joingroup {p} pr1vate-key")
    await co.ok(f"groupkey {p} -")
    await cd.err(f"joingroup {p} pr1vate-key", "PERMISSION_DENIED")


async def test_roles_kick_ban_unban(stack: Stack, uname: Names) -> None:
    owner, bob, carol, dave, g = uname("mo"), uname("mb"), uname("mc"), uname("md"), uname("mod")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    cc = await login(*stack.realm("beta"), carol)
    cd = await login(*stack.realm("alpha"), dave)
    await co.ok(f"creategroup {g}")
    for c in (cb, cc, cd):
        await c.ok(f"joingroup {g}")
    # A member cannot moderate.
    await cc.err(f"kick {g} {dave}", "PERMISSION_DENIED")
    await cb.err(f"kick {g} {carol}", "PERMISSION_DENIED")
    await cb.err(f"ban {g} {carol}", "PERMISSION_DENIED")
    await cb.err(f"invite {g} {uname('nobody')}", "PERMISSION_DENIED")
    # Roles: the owner's call; every member hears of it.
    assert await co.ok(f"role {g} {bob} admin") == {"status": "OK", "group": g, "user": bob, "role": "admin"}
    ev = await expect(cc, "member", action="role")
    assert ev == {"event": "member", "group": g, "user": bob, "action": "role", "by": owner, "role": "admin"}
    await cb.err(f"role {g} {carol} admin", "PERMISSION_DENIED")  # owner only
    await co.err(f"role {g} {carol} owner", "INVALID_ARGUMENT")
    await co.err(f"role {g} {owner} member", "PERMISSION_DENIED")  # the owner stays the owner
    # An admin kicks a member; never the owner, nor another admin.
    await cb.err(f"kick {g} {owner}", "PERMISSION_DENIED")
    await co.err(f"kick {g} {owner}", "PERMISSION_DENIED")
    await co.ok(f"role {g} {dave} admin")
    await cb.err(f"kick {g} {dave}", "PERMISSION_DENIED")
    await cb.err(f"kick {g} {uname('nobody')}", "NOT_FOUND")
    assert await cb.ok(f"kick {g} {carol} too loud today") == {"status": "OK", "group": g, "user": carol}
    kick = {"event": "member", "group": g, "user": carol, "action": "kick", "by": bob, "reason": "too loud today"}
    assert await expect(cc, "member", action="kick") == kick  # the kicked user hears it too
    assert await expect(co, "member", action="kick") == kick  # and the owner, on the other realm
    await cb.err(f"kick {g} {carol}", "NOT_FOUND")  # no longer a member
    # A kick is not a ban: carol may come back. A ban also kicks, and keeps her out.
    await cc.ok(f"joingroup {g}")
    assert await co.ok(f"ban {g} {carol} spam") == {"status": "OK", "group": g, "user": carol}
    ban = {"event": "member", "group": g, "user": carol, "action": "ban", "by": owner, "reason": "spam"}
    assert await expect(cc, "member", action="ban") == ban
    assert await expect(cb, "member", action="ban") == ban
    await cc.err(f"joingroup {g}", "PERMISSION_DENIED")
    await cc.err(f"sendgroup {g} let me back", "PERMISSION_DENIED")
    await co.err(f"invite {g} {carol}", "PERMISSION_DENIED")  # unban first
    assert carol not in {m["user"] for m in (await co.ok(f"members {g}"))["members"]}
    await cb.err(f"unban {g} {dave}", "NOT_FOUND")  # dave is not banned
    assert await cb.ok(f"unban {g} {carol}") == {"status": "OK", "group": g, "user": carol}
    assert await expect(cc, "member", action="unban") == {"event": "member", "group": g, "user": carol,
                                                         "action": "unban", "by": bob}
    await cc.ok(f"joingroup {g}")
    # A user may be banned before they ever joined.
    eve = uname("me")
    ce = await login(*stack.realm("beta"), eve)
    await co.ok(f"ban {g} {eve}")
    await ce.err(f"joingroup {g}", "PERMISSION_DENIED")
    roles = {m["user"]: m["role"] for m in (await cc.ok(f"members {g}"))["members"]}
    assert roles == {owner: "owner", bob: "admin", dave: "admin", carol: "member"}


async def test_members_lists_bans_to_owner_and_admins_only(stack: Stack, uname: Names) -> None:
    owner, adm, mem, out, carol, dave, g = (uname("bo"), uname("ba"), uname("bm"), uname("bx"), uname("bc"),
                                             uname("bd"), uname("bg"))
    co = await login(*stack.realm("alpha"), owner)
    ca = await login(*stack.realm("beta"), adm)
    cm = await login(*stack.realm("beta"), mem)
    cx = await login(*stack.realm("alpha"), out)
    cc = await login(*stack.realm("alpha"), carol)
    await login(*stack.realm("beta"), dave)
    await co.ok(f"creategroup {g}")  # public: anyone may ask for its members
    for c in (ca, cm, cc):
        await c.ok(f"joingroup {g}")
    await co.ok(f"role {g} {adm} admin")
    assert (await co.ok(f"members {g}"))["banned"] == []
    await ca.ok(f"ban {g} {carol} spam links")
    await co.ok(f"ban {g} {dave}")  # never joined
    for c in (co, ca):
        r = await c.ok(f"members {g}")
        banned = r["banned"]
        assert banned == [{"user": dave, "by": owner, "reason": "", "at": banned[0]["at"]},
                          {"user": carol, "by": adm, "reason": "spam links", "at": banned[1]["at"]}]  # newest first
        assert all(TS_RE.match(b["at"]) for b in banned) and banned[0]["at"] >= banned[1]["at"], banned
        assert [m["user"] for m in r["members"]] == [owner, adm, mem]
    # A plain member, an outsider and the banned user see the members, and no word of the bans.
    for c in (cm, cx, cc):
        r = await c.ok(f"members {g}")
        assert set(r) == {"status", "group", "members"}, r
        assert [m["user"] for m in r["members"]] == [owner, adm, mem]
    await ca.ok(f"unban {g} {carol}")
    assert [b["user"] for b in (await co.ok(f"members {g}"))["banned"]] == [dave]
    await co.ok(f"unban {g} {dave}")
    assert (await ca.ok(f"members {g}"))["banned"] == []
    # An admin made a member again loses the list with the role.
    await co.ok(f"role {g} {adm} member")
    assert "banned" not in await ca.ok(f"members {g}")


async def test_kicked_user_loses_everything_at_once(stack: Stack, uname: Names) -> None:
    owner, bob, g = uname("xo"), uname("xb"), uname("xg")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    await co.ok(f"creategroup {g} private")
    await co.ok(f"invite {g} {bob}")
    await cb.ok(f"joingroup {g}")
    data = b"minutes of the meeting\n"
    f = await send_file(co, f"#{g}", "minutes.txt", data)
    assert f["status"] == "OK", f
    assert (await expect(cb, "file", id=f["id"]))["group"] == g
    assert f["id"] in {x["id"] for x in (await cb.ok("receivefile"))["files"]}
    await cb.ok(f"history #{g}")
    await co.ok(f"kick {g} {bob}")
    # The very next commands are refused: nothing is cached.
    await cb.err(f"sendgroup {g} wait", "PERMISSION_DENIED")
    await cb.err(f"history #{g}", "PERMISSION_DENIED")
    await cb.err(f"inboxgroup {g}", "PERMISSION_DENIED")
    await cb.err(f"members {g}", "PERMISSION_DENIED")
    await cb.err(f"topic {g}", "PERMISSION_DENIED")
    await cb.err(f"receivefile {f['id']}", "PERMISSION_DENIED")
    assert f["id"] not in {x["id"] for x in (await cb.ok("receivefile"))["files"]}
    r = await send_file(cb, f"#{g}", "sneaky.txt", b"x" * 10)
    assert (r["status"], r["code"]) == ("ERROR", "PERMISSION_DENIED")
    assert (await cb.ok("ping"))["pong"] is True  # the refused payload was consumed, not parsed


async def test_group_files_reach_members_on_both_realms(stack: Stack, uname: Names) -> None:
    owner, bob, carol, out, g = uname("fo"), uname("fb"), uname("fc"), uname("fx"), uname("fg")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    cc = await login(*stack.realm("alpha"), carol)
    cx = await login(*stack.realm("beta"), out)
    await co.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    await cc.ok(f"joingroup {g}")
    data = bytes(range(256)) * 300 + b"\nend\r\n"
    digest = hashlib.sha256(data).hexdigest()
    r = await send_file(co, f"#{g}", "report.bin", data)
    assert (r["status"], r["name"], r["size"], r["sha256"]) == ("OK", "report.bin", len(data), digest)
    for c in (cb, cc):
        ev = await expect(c, "file", id=r["id"])
        assert ev == {"event": "file", "id": r["id"], "from": owner, "name": "report.bin", "size": len(data),
                      "sha256": digest, "ts": ev["ts"], "group": g}
        head, body = await download(c, r["id"])
        assert (head["group"], head["sha256"], hashlib.sha256(body).hexdigest()) == (g, digest, digest)
        assert r["id"] not in {x["id"] for x in (await c.ok("receivefile"))["files"]}  # downloaded
    await cx.no_event()
    await cx.err(f"receivefile {r['id']}", "PERMISSION_DENIED")
    refused = await send_file(cx, f"#{g}", "spam.bin", b"spam")
    assert (refused["status"], refused["code"]) == ("ERROR", "PERMISSION_DENIED")
    nogroup = await send_file(co, f"#{uname('nogroup')}", "x.bin", b"x")
    assert (nogroup["status"], nogroup["code"]) == ("ERROR", "NOT_FOUND")
    # In a private group, a file sent before a member joined is not theirs.
    p = uname("fp")
    await co.ok(f"creategroup {p} private")
    early = await send_file(co, f"#{p}", "early.txt", b"before you came")
    await co.ok(f"invite {p} {out}")
    await cx.ok(f"joingroup {p}")
    await cx.err(f"receivefile {early['id']}", "PERMISSION_DENIED")
    late = await send_file(co, f"#{p}", "late.txt", b"after you came")
    await expect(cx, "file", id=late["id"])
    assert (await download(cx, late["id"]))[1] == b"after you came"


async def test_topic_and_members(stack: Stack, uname: Names) -> None:
    owner, bob, carol, g = uname("to"), uname("tb"), uname("tc"), uname("tg")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    cc = await login(*stack.realm("beta"), carol)
    await co.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    await cc.ok(f"joingroup {g}")
    fresh = await cc.ok(f"topic {g}")
    assert {k: fresh[k] for k in ("status", "group", "topic")} == {"status": "OK", "group": g, "topic": ""}
    await cc.err(f"topic {g} my topic", "PERMISSION_DENIED")
    await co.ok(f"role {g} {bob} admin")
    set_ = await cb.ok(f"topic {g}  rules: be kind ")
    assert (set_["group"], set_["topic"], set_["topic_by"]) == (g, "rules: be kind", bob)
    topic = {"event": "topic", "group": g, "topic": "rules: be kind", "by": bob, "at": set_["topic_at"]}
    assert await expect(cc, "topic") == topic
    assert await expect(co, "topic") == topic
    assert (await cc.ok(f"topic {g}"))["topic"] == "rules: be kind"
    await co.ok(f"topic {g} -")
    assert (await cc.ok(f"topic {g}"))["topic"] == ""
    await cc.ok("logout")
    members = (await cb.ok(f"members {g}"))["members"]
    assert members == [{"user": owner, "role": "owner", "online": True, "realm": "alpha"},
                       {"user": bob, "role": "admin", "online": True, "realm": "beta"},
                       {"user": carol, "role": "member", "online": False, "realm": ""}]


async def test_listgroups_shows_public_and_own_private(stack: Stack, uname: Names) -> None:
    a, b = uname("la"), uname("lb")
    tag = uname("lst")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    pub, priv, other = f"{tag}.pub", f"{tag}.priv", f"{tag}.bobs"
    await ca.ok(f"creategroup {pub}")
    await ca.ok(f"topic {pub} all welcome")
    await ca.ok(f"creategroup {priv} private")
    await cb.ok(f"creategroup {other} private")
    mine = (await ca.ok(f"listgroups {tag}"))["groups"]
    assert mine == [{"group": priv, "mode": "private", "topic": "", "members": 1},
                    {"group": pub, "mode": "public", "topic": "all welcome", "members": 1}]  # not bob's
    assert [x["group"] for x in (await cb.ok(f"listgroups {tag}"))["groups"]] == [other, pub]
    assert [x["group"] for x in (await cb.ok(f"listgroups {tag}.p*"))["groups"]] == [pub]
    assert [x["group"] for x in (await cb.ok(f"listgroups {tag.upper()}.?ub"))["groups"]] == [pub]
    assert pub in [x["group"] for x in (await cb.ok("listgroups"))["groups"]]
    await cb.err("listgroups a/b", "INVALID_ARGUMENT")


async def test_deletegroup(stack: Stack, uname: Names) -> None:
    owner, bob, g = uname("do"), uname("db"), uname("dg")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    await co.ok(f"creategroup {g}")
    await cb.ok(f"joingroup {g}")
    await co.ok(f"sendgroup {g} soon gone")
    f = await send_file(co, f"#{g}", "gone.txt", b"bye")
    await cb.err(f"deletegroup {g}", "PERMISSION_DENIED")
    await co.ok(f"role {g} {bob} admin")
    await cb.err(f"deletegroup {g}", "PERMISSION_DENIED")  # owner only
    assert (await co.ok(f"deletegroup {g}"))["group"] == g
    assert await expect(cb, "groupdeleted") == {"event": "groupdeleted", "group": g, "by": owner}
    await cb.err(f"sendgroup {g} hello?", "NOT_FOUND")
    await cb.err(f"history #{g}", "NOT_FOUND")
    await cb.err(f"receivefile {f['id']}", "NOT_FOUND")
    assert all(x["group"] != g for x in (await cb.ok("groups"))["groups"])
    # The name is free again, and the new group starts empty.
    await cb.ok(f"creategroup {g}")
    assert (await cb.ok(f"history #{g}"))["messages"] == []


async def test_users_and_groups_never_share_a_name(stack: Stack, uname: Names) -> None:
    a, g = uname("na"), uname("ng")
    ca = await login(*stack.realm("alpha"), a)
    await ca.err(f"creategroup {a.upper()}", "ALREADY_EXISTS")
    await ca.ok(f"creategroup {g}")
    c = await TextClient.connect(*stack.realm("beta"))
    await c.err(f"register {g.upper()} pw-secret-1", "ALREADY_EXISTS")


async def test_racing_register_and_creategroup_of_one_name(stack: Stack, uname: Names) -> None:
    """One name, claimed at once as a user and as a group: exactly one of them gets it."""
    for _ in range(5):
        a, name = uname("ra"), uname("race")
        ca = await login(*stack.realm("alpha"), a)
        cr = await TextClient.connect(*stack.realm("beta"))
        created, registered = await asyncio.gather(ca.cmd(f"creategroup {name}"),
                                                   cr.cmd(f"register {name} pw-secret-1"))
        assert sorted([created["status"], registered["status"]]) == ["ERROR", "OK"], (created, registered)
        loser = created if created["status"] == "ERROR" else registered
        assert loser["code"] == "ALREADY_EXISTS"


async def test_a_deleted_group_takes_its_files_off_the_disk(stack: Stack, uname: Names) -> None:
    """Deleting a group removes its files' contents from the file store, except a content another
    file shares (stored once, still downloadable there) and one written in the last minute (an
    upload of the same bytes may be about to refer to it)."""
    owner, bob, g = uname("zo"), uname("zb"), uname("zg")
    co = await login(*stack.realm("alpha"), owner)
    cb = await login(*stack.realm("beta"), bob)
    await co.ok(f"creategroup {g}")
    only, shared, young = (f"{kind} {g}".encode() * 100 for kind in ("only in the group", "shared", "young"))
    for name, data in (("only.bin", only), ("shared.bin", shared)):
        assert (await send_file(co, f"#{g}", name, data))["status"] == "OK"
    private = await send_file(co, bob, "shared.bin", shared)
    objects = stack.data_dir / "files" / "objects"

    def stored(data: bytes) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        return objects / digest[:2] / digest

    an_hour_ago = time.time() - 3600
    for data in (only, shared):
        assert stored(data).exists()
        os.utime(stored(data), (an_hour_ago, an_hour_ago))  # as if uploaded an hour ago
    assert (await send_file(co, f"#{g}", "young.bin", young))["status"] == "OK"
    await co.ok(f"deletegroup {g}")
    assert not stored(only).exists()
    assert stored(shared).exists() and stored(young).exists()
    assert (await download(cb, private["id"]))[1] == shared


async def test_the_file_store_sweep_removes_contents_no_file_refers_to(tmp_path: Path, uname: Names) -> None:
    """Main sweeps its file store at start and every --file-sweep-s: a content no file refers to
    goes once it is older than the grace (a deleted group's file written in its last minute, an
    upload whose file was never recorded); one a file refers to, or a young one, stays."""
    s = start_stack(tmp_path / "data", main_extra=("--file-sweep-s", "0.2"))
    try:
        owner, bob, g = uname("so"), uname("sb"), uname("sg")
        co = await login(*s.realm("alpha"), owner)
        cb = await login(*s.realm("beta"), bob)
        await co.ok(f"creategroup {g}")
        objects = s.data_dir / "files" / "objects"

        def stored(data: bytes) -> Path:
            digest = hashlib.sha256(data).hexdigest()
            return objects / digest[:2] / digest

        def age(p: Path) -> None:
            an_hour_ago = time.time() - 3600
            os.utime(p, (an_hour_ago, an_hour_ago))

        late, kept = (f"{kind} {g}".encode() * 100 for kind in ("late", "kept"))
        assert (await send_file(co, f"#{g}", "late.bin", late))["status"] == "OK"
        sent = await send_file(co, bob, "kept.bin", kept)
        await co.ok(f"deletegroup {g}")
        stray = stored(b"an upload whose file was never recorded " + g.encode())
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"stray")
        young = stored(b"an upload about to be recorded " + g.encode())
        young.parent.mkdir(parents=True, exist_ok=True)
        young.write_bytes(b"young")
        await asyncio.sleep(1.0)  # several sweeps: all four are within the grace, so all stay
        assert all(p.exists() for p in (stored(late), stored(kept), stray, young))
        for p in (stored(late), stored(kept), stray):
            age(p)
        await wait_until(lambda: not stored(late).exists() and not stray.exists(), 30, "the sweep")
        assert stored(kept).exists() and young.exists()
        assert (await download(cb, sent["id"]))[1] == kept
        assert "stored file contents no file refers to" in s.main.log()
    finally:
        s.stop()


async def test_a_user_joins_so_many_groups_at_most(tmp_path: Path, uname: Names) -> None:
    """--groups-per-user bounds the groups one user is a member of, created or joined; leaving
    one makes room."""
    s = start_stack(tmp_path / "data", main_extra=("--groups-per-user", "2"))
    try:
        u, other = uname("gu"), uname("go")
        a, b, c = uname("ga"), uname("gb"), uname("gc")
        cu = await login(*s.realm("alpha"), u)
        co = await login(*s.realm("beta"), other)
        await cu.ok(f"creategroup {a}")
        await co.ok(f"creategroup {b}")
        await co.ok(f"creategroup {c}")
        await cu.ok(f"joingroup {b}")
        refused = await cu.err(f"joingroup {c}", "RESOURCE_EXHAUSTED")
        assert "member of 2 groups" in refused["message"] and "leave one" in refused["message"]
        await cu.err(f"creategroup {uname('gd')}", "RESOURCE_EXHAUSTED")
        assert sorted(g["group"] for g in (await cu.ok("groups"))["groups"]) == sorted([a, b])
        await cu.ok(f"leavegroup {b}")
        assert (await cu.ok(f"joingroup {c}"))["group"] == c
        await co.err(f"joingroup {a}", "RESOURCE_EXHAUSTED")  # the owner of two is full too
        third = await login(*s.realm("beta"), uname("gt"))
        await third.ok(f"joingroup {a}")  # the limit is per user, not per group
    finally:
        s.stop()
