"""What a user reads when a command is refused, through a real realm: the message says what is
wrong and what to do."""

from __future__ import annotations

from collections.abc import Callable

from .stack import Stack
from .textclient import TextClient, login

PW = "pw-secret-44"


async def test_leaving_a_group_you_are_not_in_says_so(stack: Stack, uname: Callable[[str], str]) -> None:
    owner, other, group = uname("owner"), uname("other"), uname("grp")
    a = await login(*stack.realm("alpha"), owner, PW)
    b = await login(*stack.realm("alpha"), other, PW)
    try:
        await a.ok(f"creategroup {group}")
        r = await b.err(f"leavegroup {group}", "PERMISSION_DENIED")
        assert "not a member" in r["message"] and "joingroup first" not in r["message"], r
        # Sending is where joining is the answer.
        r = await b.err(f"sendgroup {group} hi", "PERMISSION_DENIED")
        assert "joingroup" in r["message"], r
    finally:
        await a.close()
        await b.close()


async def test_a_password_with_spaces_is_named_as_the_problem(stack: Stack, uname: Callable[[str], str]) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    try:
        for verb in ("register", "auth"):
            r = await c.err(f"{verb} {uname('carol')} pw with spaces", "INVALID_ARGUMENT")
            assert "passwords cannot contain spaces" in r["message"], r
        r = await c.err("register onlyname", "INVALID_ARGUMENT")
        assert r["message"] == "usage: register USER PASS", r
    finally:
        await c.close()
