"""The GUI's rooms (private groups, members, moderation, topic, invitations, group files) through
its controller and state, against a real stack: main + realms alpha and beta. The views call
exactly these operations and render exactly this state."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gui.controller import ChatController
from gui.state import Kind, LineKind, conv_key
from realmchat.errors import PermissionDenied

from .stack import Stack
from .test_gui_logic import logged_in, make_controller, until
from .textclient import login

__all__ = ["make_controller"]  # the fixture, re-used


def notices(ctl: ChatController, group: str) -> list[str]:
    conv = ctl.state.conversations.get(conv_key(Kind.GROUP, group))
    return [ln.text for ln in conv.lines if ln.kind is LineKind.NOTICE] if conv else []


def roles(ctl: ChatController, group: str) -> dict[str, str]:
    return {m.user: m.role for m in ctl.state.members.get(group.casefold(), [])}


async def test_private_group_invite_members_roles_topic_kick(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, carol, g = uname("alice"), uname("bob"), uname("carol"), uname("club")
    owner = await logged_in(make_controller(), stack.realm("alpha"), alice)
    member = await logged_in(make_controller(), stack.realm("beta"), bob)

    conv = await owner.create_group(g, private=True)
    assert owner.state.current == conv.key
    await until(lambda: roles(owner, g) == {alice: "owner"}, "the owner in the members panel")
    assert owner.state.role_in(g) == "owner" and owner.state.can_moderate(g)
    assert owner.state.groups[g.casefold()].mode in ("private", "")

    # Not invited: the join dialog shows the realm's refusal.
    with pytest.raises(PermissionDenied):
        await member.join_group(g)
    await owner.invite(bob, g)
    inv = await until(lambda: member.state.invitations, "bob's invitation")
    assert inv[0].group.casefold() == g.casefold() and inv[0].by == alice
    await member.join_group(inv[0].group)                # the invitation's Join
    assert member.state.invitations == []
    assert member.state.current == conv_key(Kind.GROUP, g)
    assert not member.state.can_moderate(g)

    # The owner's members panel follows the join live, online dots and realms included.
    await until(lambda: roles(owner, g) == {alice: "owner", bob: "member"}, "bob in the owner's panel")
    by_user = {m.user: m for m in owner.state.members[g.casefold()]}
    assert by_user[bob].online and by_user[bob].realm == "beta"
    await until(lambda: any(bob in n and "joined" in n for n in notices(owner, g)), "a join notice")

    # Promote: both panels show the new role; bob may now set the topic.
    await owner.set_role(bob, "admin", g)
    await until(lambda: roles(member, g).get(bob) == "admin", "bob sees himself admin")
    assert member.state.can_moderate(g)
    await member.set_topic("  plans  for   saturday ", g)
    await until(lambda: owner.state.topic_of(g) == "plans for saturday", "the topic on the owner's screen")
    await until(lambda: any("set the topic" in n for n in notices(owner, g)), "a topic notice")
    await owner.set_role(bob, "member", g)
    await until(lambda: not member.state.can_moderate(g), "bob is a member again")
    with pytest.raises(PermissionDenied):
        await member.set_topic("mine now", g)
    assert await owner.set_topic("   ", g) == ""        # empty clears it
    await until(lambda: member.state.topic_of(g) == "", "the topic cleared on bob's screen")

    # A third user joins with the key.
    await owner.set_group_key("letmein", g)
    third = await logged_in(make_controller(), stack.realm("beta"), carol)
    with pytest.raises(PermissionDenied):
        await third.join_group(g, "nope")
    await third.join_group(g, "letmein")
    await until(lambda: carol in roles(owner, g), "carol in the panel")

    # Kick: the kicked user's conversation closes with the reason; the panels drop him.
    await owner.kick(bob, "see you next week", g)
    gone = await until(lambda: member.state.conversations[conv_key(Kind.GROUP, g)].closed, "bob's closed group")
    assert "kicked" in gone and alice in gone
    assert g.casefold() not in member.state.groups and not member.state.can_moderate(g)
    await until(lambda: bob not in roles(owner, g), "bob gone from the owner's panel")
    await until(lambda: bob not in roles(third, g), "bob gone from carol's panel")
    with pytest.raises(PermissionDenied):
        await member.send("hello?", conv_key(Kind.GROUP, g))

    # Ban keeps carol out; deleting closes the group for whoever is left.
    await owner.ban(carol, "", g)
    await until(lambda: third.state.conversations[conv_key(Kind.GROUP, g)].closed, "carol's closed group")
    with pytest.raises(PermissionDenied):
        await third.join_group(g, "letmein")
    # The owner's panel lists the ban; bob (a member again, not a moderator) is not told of it.
    assert [(b.user, b.by) for b in owner.state.banned[g.casefold()]] == [(carol, alice)]
    await member.join_group(g, "letmein")
    await member.refresh_members(g)
    assert g.casefold() in member.state.members and g.casefold() not in member.state.banned
    await owner.unban(carol, g)
    assert owner.state.banned[g.casefold()] == []  # unban refreshed the list
    await third.join_group(g, "letmein")
    await owner.delete_group(g)
    deleted = await until(lambda: third.state.conversations[conv_key(Kind.GROUP, g)].closed, "deleted for carol")
    assert "deleted" in deleted


async def test_owner_makes_the_group_private_and_members_see_who_set_the_topic(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, carol, g = uname("alice"), uname("bob"), uname("carol"), uname("town")
    owner = await logged_in(make_controller(), stack.realm("alpha"), alice)
    member = await logged_in(make_controller(), stack.realm("beta"), bob)
    outsider = await login(*stack.realm("beta"), carol)
    await owner.create_group(g)
    await member.join_group(g)
    await until(lambda: member.state.mode_of(g) == "public", "the mode in bob's groups")
    # A plain member is refused (and the panel shows no such control to him).
    with pytest.raises(PermissionDenied):
        await member.set_group_mode(True, g)
    assert not member.state.can_moderate(g)

    assert await owner.set_group_mode(True, g) == "private"
    assert owner.state.mode_of(g) == "private"
    assert any("you made the group private" in n for n in notices(owner, g))
    await until(lambda: member.state.mode_of(g) == "private", "bob's screen follows")
    await until(lambda: any(f"{alice} made the group private" in n for n in notices(member, g)), "bob's notice")
    assert (await outsider.ok(f"listgroups {g}"))["groups"] == []

    # The topic shows who set it and when, from the event and from the server alike.
    await owner.set_topic("market day", g)
    assert owner.state.topic_setter(g).startswith("set by you · ")
    await until(lambda: member.state.topic_setter(g).startswith(f"set by {alice} · "), "the setter on bob's screen")
    member.state.topic_set.clear()
    assert await member.refresh_topic(g) == "market day"
    assert member.state.topic_setter(g).startswith(f"set by {alice} · ")

    # A key: the members hear of it, without the key.
    await owner.set_group_key("letmein", g)
    await until(lambda: any(f"{alice} set a key to join the group" in n for n in notices(member, g)), "key notice")
    assert not any("letmein" in n for n in notices(member, g))

    await owner.set_group_mode(False, g)
    await until(lambda: member.state.mode_of(g) == "public", "public again on bob's screen")
    assert [x["group"] for x in (await outsider.ok(f"listgroups {g}"))["groups"]] == [g]
    await outsider.close()


async def test_group_file_in_the_group_conversation(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController],
        tmp_path: Path) -> None:
    alice, bob, g = uname("fa"), uname("fb"), uname("docs")
    owner = await logged_in(make_controller(), stack.realm("alpha"), alice)
    member = await logged_in(make_controller(), stack.realm("beta"), bob)
    await owner.create_group(g)
    await member.join_group(g)
    src = tmp_path / "agenda.txt"
    data = os.urandom(50_000)
    src.write_bytes(data)

    t = await owner.send_file(f"#{g}", src)
    assert t.error == "" and t.sha256
    key = conv_key(Kind.GROUP, g)
    own = [ln for ln in owner.state.conversations[key].lines if ln.kind is LineKind.FILE]
    assert len(own) == 1 and own[0].own and "agenda.txt" in own[0].text

    line = await until(lambda: [ln for ln in member.state.conversations.get(key, None).lines
                                if ln.kind is LineKind.FILE] if key in member.state.conversations else None,
                       "the file line in bob's group conversation")
    f = line[0].file
    assert f is not None and (f.group or "").casefold() == g.casefold()
    # Not in a private chat with the sender: it belongs to the group.
    assert conv_key(Kind.PRIVATE, alice) not in member.state.conversations
    saved = await member.save_file(f.id)
    assert await asyncio.to_thread(Path(saved.path).read_bytes) == data
    # If the sender's own copy comes back as an event, it is still one line.
    await asyncio.sleep(0.5)
    assert len([ln for ln in owner.state.conversations[key].lines if ln.kind is LineKind.FILE]) == 1


async def test_invitation_from_a_raw_client_and_dismiss(
        stack: Stack, uname: Callable[[str], str], make_controller: Callable[..., ChatController]) -> None:
    alice, bob, g1, g2 = uname("ra"), uname("rb"), uname("inv1"), uname("inv2")
    ctl = await logged_in(make_controller(), stack.realm("alpha"), alice)
    raw = await login(*stack.realm("beta"), bob)
    try:
        for g in (g1, g2):
            await raw.ok(f"creategroup {g} private")
            await raw.ok(f"invite {g} {alice}")
        await until(lambda: len(ctl.state.invitations) == 2, "two invitations")
        ctl.dismiss_invitation(g1)
        assert [i.group.casefold() for i in ctl.state.invitations] == [g2.casefold()]
        await ctl.join_group(g2)
        assert ctl.state.invitations == []
        assert ctl.state.role_in(g2) == "member"
    finally:
        await raw.close()


def test_leave_group_does_not_look_like_log_out() -> None:
    """On a phone Log out (header) and Leave group (the group's header) are icon buttons on one
    screen: Leave group is a door, not another arrow out of a box."""
    import flet as ft

    from gui.views.chat import ConversationPane, Header

    async def nothing() -> None:
        return None

    def icon_of(button: ft.Control) -> object:
        assert isinstance(button, ft.MergeSemantics) and isinstance(button.content, ft.Semantics)
        assert isinstance(button.content.content, ft.IconButton)
        return button.content.content.icon

    ctl = ChatController(who_interval=0)
    header = Header(ctl, nothing)
    pane = ConversationPane(ctl, None, lambda text: None, nothing)  # type: ignore[arg-type]
    logout = {icon_of(header.logout_icon), header.logout_text.icon}
    leave = {icon_of(pane.leave_icon), pane.leave_button.icon}
    arrows_out = {ft.Icons.LOGOUT, ft.Icons.LOGOUT_OUTLINED, ft.Icons.LOGOUT_ROUNDED, ft.Icons.EXIT_TO_APP,
                  ft.Icons.EXIT_TO_APP_OUTLINED, ft.Icons.EXIT_TO_APP_ROUNDED}
    assert logout <= arrows_out and not leave & arrows_out, (logout, leave)
