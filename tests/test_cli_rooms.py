"""Groups as rooms through chat_cli: the library's typed methods and events for every room verb,
and the terminal client, against a real main server and two realms (alpha, beta)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from chat_cli import (
    AlreadyExists,
    ChatClient,
    ChatError,
    FileEvent,
    GroupDeletedEvent,
    InvalidArgument,
    InvitedEvent,
    MemberEvent,
    NotFound,
    PermissionDenied,
    TopicEvent,
)

from .stack import Stack
from .test_cli_terminal import LiveCli, run_cli
from .test_client_lib import PW, Recorder, until, user


def member_events(rec: Recorder, group: str, action: str | None = None) -> list[MemberEvent]:
    return [e for e in rec.events if isinstance(e, MemberEvent) and e.group.lower() == group.lower()
            and (action is None or e.action == action)]


def of(rec: Recorder, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in rec.events if isinstance(e, kind)]


async def close_all(*clients: ChatClient) -> None:
    for c in clients:
        await c.close()


async def test_private_group_invitation_key_members_and_listing(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b, c, d, g = uname("ann"), uname("ben"), uname("cat"), uname("dan"), uname("secret")
    alice, a_rec = await user(stack.realm("alpha"), a)
    bob, b_rec = await user(stack.realm("beta"), b)
    carol, _ = await user(stack.realm("alpha"), c)
    dave, _ = await user(stack.realm("beta"), d)
    try:
        assert await alice.create_group(g, private=True) == g
        with pytest.raises(AlreadyExists):
            await alice.create_group(g.upper())          # unique ignoring case
        with pytest.raises(AlreadyExists):
            await alice.create_group(b)                  # a user has that name
        # Private: not invited and no key is refused.
        with pytest.raises(PermissionDenied):
            await bob.join_group(g)

        invited = await alice.invite(g, b)
        assert (invited.group.lower(), invited.user.lower()) == (g.lower(), b.lower())
        await until(lambda: of(b_rec, InvitedEvent), what="bob's invited event")
        inv = of(b_rec, InvitedEvent)[0]
        assert inv.group.lower() == g.lower() and inv.by == a and inv.kind == "invited"
        assert await bob.join_group(g) in (g, g.lower())
        await until(lambda: member_events(a_rec, g, "join"), what="alice sees bob join")
        join = member_events(a_rec, g, "join")[0]
        assert join.user == b and join.kind == "member" and not join.removes

        members = {m.user: m for m in await alice.members(g)}
        assert set(members) == {a, b}
        assert (members[a].role, members[a].online, members[a].realm) == ("owner", True, "alpha")
        assert (members[b].role, members[b].online, members[b].realm) == ("member", True, "beta")
        # A private group's members are for its members only.
        with pytest.raises(PermissionDenied):
            await dave.members(g)

        # A key lets anyone who knows it in; a wrong or missing key does not; "-" clears it.
        await alice.set_group_key(g, "k3y-42")
        with pytest.raises(PermissionDenied):
            await carol.join_group(g, "wrong")
        with pytest.raises(PermissionDenied):
            await carol.join_group(g)
        await carol.join_group(g, "k3y-42")
        await alice.clear_group_key(g)
        with pytest.raises(PermissionDenied):
            await dave.join_group(g, "k3y-42")
        with pytest.raises(InvalidArgument):
            await alice.set_group_key(g, "-")            # the library says to use clear_group_key
        with pytest.raises(PermissionDenied):
            await bob.set_group_key(g, "mine")           # owner/admin only

        # Listing: public groups plus the private ones you are in.
        listed = {x.name.lower(): x for x in await bob.list_groups()}
        assert listed[g.lower()].private and listed[g.lower()].members == 3
        assert g.lower() not in {x.name.lower() for x in await dave.list_groups()}
        assert g.lower() in [x.name.lower() for x in await bob.list_groups(g)]
        groups = {x.name.lower(): x for x in await bob.groups()}
        assert groups[g.lower()].role == "member"
    finally:
        await close_all(alice, bob, carol, dave)


async def test_roles_topic_kick_ban_unban_delete(stack: Stack, uname: Callable[[str], str]) -> None:
    a, b, c, g = uname("own"), uname("adm"), uname("mem"), uname("room")
    alice, a_rec = await user(stack.realm("alpha"), a)
    bob, b_rec = await user(stack.realm("beta"), b)
    carol, c_rec = await user(stack.realm("beta"), c)
    try:
        await alice.create_group(g)   # public
        await bob.join_group(g)
        await carol.join_group(g)
        assert await alice.topic(g) == ""
        with pytest.raises(PermissionDenied):
            await bob.set_topic(g, "not yet an admin")

        r = await alice.set_role(g, b, "admin")
        assert (r.user, r.role) == (b, "admin")
        await until(lambda: member_events(c_rec, g, "role"), what="carol sees the role change")
        ev = member_events(c_rec, g, "role")[0]
        assert (ev.user, ev.by, ev.role) == (b, a, "admin")
        with pytest.raises(PermissionDenied):
            await bob.set_role(g, c, "admin")             # owner only
        with pytest.raises(InvalidArgument):
            await alice.set_role(g, c, "owner")           # admin or member

        assert await bob.set_topic(g, "rules: be kind, no spam") == "rules: be kind, no spam"
        await until(lambda: of(c_rec, TopicEvent) and of(a_rec, TopicEvent), what="topic events")
        t = of(c_rec, TopicEvent)[0]
        assert (t.group.lower(), t.topic, t.by) == (g.lower(), "rules: be kind, no spam", b)
        assert await carol.topic(g) == "rules: be kind, no spam"
        await bob.clear_topic(g)
        await until(lambda: len(of(c_rec, TopicEvent)) == 2, what="the cleared-topic event")
        assert of(c_rec, TopicEvent)[1].topic == "" and await carol.topic(g) == ""

        # Kick: the kicked user hears it too, and loses access at once; the owner cannot be kicked.
        await bob.kick(g, c, "too loud today")
        await until(lambda: member_events(c_rec, g, "kick"), what="carol's own kick event")
        kick = member_events(c_rec, g, "kick")[0]
        assert (kick.user, kick.by, kick.removes) == (c, b, True)
        assert "too loud" in kick.reason
        await until(lambda: member_events(a_rec, g, "kick"), what="alice sees the kick")
        with pytest.raises(PermissionDenied):
            await carol.send_group(g, "still here?")
        with pytest.raises(PermissionDenied):
            await bob.kick(g, a)
        with pytest.raises(PermissionDenied):
            await carol.kick(g, b)                        # not a member, not a moderator
        assert c not in {m.user for m in await alice.members(g)}

        # A kick is not a ban: carol may come back. A ban also kicks and keeps her out.
        await carol.join_group(g)
        assert (await alice.members(g)).banned == []     # the owner is told: nobody is banned
        await alice.ban(g, c, "spam")
        await until(lambda: member_events(c_rec, g, "ban"), what="carol's ban event")
        with pytest.raises(PermissionDenied):
            await carol.join_group(g)
        # The owner and the admin see who is banned, by whom, why and when.
        for moderator in (alice, bob):
            listed = await moderator.members(g)
            assert listed.banned is not None
            assert [(x.user, x.by, x.reason) for x in listed.banned] == [(c, a, "spam")]
            assert listed.banned[0].when is not None, listed.banned[0].at
            assert {m.user for m in listed} == {a, b}   # still a list of the members
        await alice.unban(g, c)
        assert (await bob.members(g)).banned == []
        await carol.join_group(g)
        mine = await carol.members(g)
        roles = {m.user: m.role for m in mine}
        assert roles == {a: "owner", b: "admin", c: "member"}
        assert mine.banned is None                       # a member is not told of bans

        # Only the owner deletes; every member hears it; the group is gone.
        with pytest.raises(PermissionDenied):
            await bob.delete_group(g)
        await alice.delete_group(g)
        await until(lambda: of(b_rec, GroupDeletedEvent) and of(c_rec, GroupDeletedEvent), what="groupdeleted")
        gd = of(c_rec, GroupDeletedEvent)[0]
        assert (gd.group.lower(), gd.by) == (g.lower(), a)
        with pytest.raises(NotFound):
            await bob.send_group(g, "hello?")
        assert g.lower() not in {x.name.lower() for x in await bob.groups()}
    finally:
        await close_all(alice, bob, carol)


async def test_group_file_reaches_every_member(stack: Stack, uname: Callable[[str], str], tmp_path: Path) -> None:
    a, b, d, g = uname("fa"), uname("fb"), uname("fd"), uname("share")
    alice, _ = await user(stack.realm("alpha"), a)
    bob, b_rec = await user(stack.realm("beta"), b)
    dave, _ = await user(stack.realm("alpha"), d)
    try:
        await alice.create_group(g, private=True)
        await alice.invite(g, b)
        await bob.join_group(g)
        data = os.urandom(200_000)
        src = tmp_path / "notes.bin"
        src.write_bytes(data)
        up = await alice.send_group_file(g, src)
        assert up.size == len(data) and up.name == "notes.bin"
        await until(lambda: of(b_rec, FileEvent), what="bob's group file event")
        f = of(b_rec, FileEvent)[0].file
        assert f.id == up.id and (f.group or "").lower() == g.lower() and f.is_group and f.sender == a
        got = await bob.receive_file(f.id, tmp_path / "bob")
        assert await asyncio.to_thread(Path(got.path).read_bytes) == data
        # Outsiders can neither send to the group nor fetch its file.
        with pytest.raises(ChatError) as e1:
            await dave.send_file(f"#{g}", src)
        assert e1.value.code.value in ("PERMISSION_DENIED", "NOT_FOUND")
        with pytest.raises(ChatError) as e2:
            await dave.receive_file(f.id, tmp_path / "dave")
        assert e2.value.code.value in ("PERMISSION_DENIED", "NOT_FOUND")
    finally:
        await close_all(alice, bob, dave)


async def test_library_refuses_malformed_room_arguments(stack: Stack, uname: Callable[[str], str]) -> None:
    """Arguments that would split into another command never reach the wire."""
    alice, _ = await user(stack.realm("alpha"), uname("lib"))
    try:
        for call in (alice.invite("g", "two words"), alice.join_group("g", "a key"),
                     alice.kick("g", "u", "line\nbreak"), alice.set_topic("g", "x\ninject")):
            with pytest.raises(InvalidArgument):
                await call
        assert await alice.ping() >= 0                    # the connection is still in step
    finally:
        await alice.close()


def test_terminal_rooms(stack: Stack, uname: Callable[[str], str]) -> None:
    """The terminal: a private group, an invitation that shows live on the other realm, the
    members table, kick with a reason shown to the kicked user, topic, listgroups."""
    a, b, g = uname("tann"), uname("tbob"), uname("tgrp")
    bob = LiveCli(stack.realm("beta"))
    try:
        bob.send(f"register {b} {PW}")
        bob.send(f"auth {b} {PW}")
        bob.wait_for(rf"logged in as {b}")
        lines = [f"register {a} {PW}", f"auth {a} {PW}", f"creategroup {g} private", f"invite {g} {b}"]
        r = run_cli(stack.realm("alpha"), lines)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"created private group #{g}" in r.stdout and f"invited {b} to #{g}" in r.stdout
        bob.wait_for(rf"\* {a} invited you to #{g}: type 'joingroup {g}' to join")
        bob.send(f"joingroup {g}")
        bob.wait_for(rf"joined #{g}")

        # A member's members table says nothing of bans; the owner's says there are none.
        r = run_cli(stack.realm("beta"), [f"auth {b} {PW}", f"members {g}"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"#{g}: 2 members" in r.stdout and "banned" not in r.stdout, r.stdout
        r = run_cli(stack.realm("alpha"), [f"auth {a} {PW}", f"members {g}", f"topic {g} weekly sync, be brief",
                                           f"kick {g} {b} off topic", f"listgroups {g}"])
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert re.search(r"USER\s+ROLE\s+REALM", out), out
        assert re.search(rf"[●○]\s+{a} \(you\)\s+owner\s+alpha", out), out
        assert re.search(rf"●\s+{b}\s+member\s+beta", out), out
        assert f"nobody is banned from #{g}" in out, out
        assert f"topic of #{g} set: weekly sync, be brief" in out
        assert f"kicked {b} from #{g}" in out
        assert re.search(rf"#{g}\s+private\s+1\s+weekly sync, be brief", out), out
        bob.wait_for(rf"\* \[#{g}\] {a} set the topic: weekly sync, be brief")
        bob.wait_for(rf"\* \[#{g}\] you were kicked by {a}: off topic")
        bob.send(f"sendgroup {g} let me back")
        bob.wait_for(r"error PERMISSION_DENIED")
        bob.send(f"kick {g}")                              # usage from the terminal itself
        bob.wait_for(re.escape("error INVALID_ARGUMENT: usage: kick GROUP USER [REASON]"))

        # The owner's members table lists the bans under the members.
        r = run_cli(stack.realm("alpha"), [f"auth {a} {PW}", f"ban {g} {b} flooding", f"members {g}"])
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert f"banned {b} from #{g}" in out and f"1 banned from #{g}:" in out, out
        assert re.search(r"BANNED\s+BY\s+WHEN\s+REASON", out), out
        assert re.search(rf"^{b}\s+{a}\s+(\d{{4}}-\d\d-\d\d )?\d\d:\d\d\s+flooding$", out, re.M), out
    finally:
        bob.send("quit")
        bob.proc.wait(15)


def test_terminal_completes_groups_and_users() -> None:
    from chat_cli.terminal import Terminal

    term = Terminal(ChatClient(), download_dir=Path("."), json_mode=False, out=lambda s: None)
    term.users.update({"bob", "bea", "carol"})
    term.groups.update({"books", "progjar"})
    assert term.completions("kick", "b", 1) == ["books"]
    assert term.completions("kick", "b", 2) == ["bea", "bob"]
    assert term.completions("invite", "pr", 1) == ["progjar"]
    assert term.completions("members", "", 1) == ["books", "progjar"]
    assert term.completions("sendfile", "#p", 1) == ["#progjar"]
    assert term.completions("role", "c", 2) == ["carol"]
    asyncio.run(asyncio.sleep(0))
