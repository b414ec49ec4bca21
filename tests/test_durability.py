"""An acknowledged message survives kill -9 of main; realms recover by themselves and their
users keep working without logging in again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .hardutil import drain_events
from .stack import Stack
from .textclient import TextClient, login, until_ok

Names = Callable[[str], str]




async def test_acknowledged_messages_survive_kill_9(fresh_stack: Stack, uname: Names) -> None:
    s = fresh_stack
    a, b, c_ = uname("da"), uname("db"), uname("dc")
    ca = await login(*s.realm("alpha"), a)
    cb = await login(*s.realm("beta"), b)
    cc = await login(*s.realm("beta"), c_)
    g = uname("dg")
    await ca.ok(f"creategroup {g}")
    await cc.ok(f"joingroup {g}")
    await cb.ok("logout")
    await cc.ok("logout")
    # Pipelined burst: every OK that arrives is a promise that the message is durable.
    await ca.send_raw("".join(f"sendprivate {b} m{i}\nsendgroup {g} g{i}\n" for i in range(200)).encode())
    acked = [await ca.response() for _ in range(400)]
    assert all(r["status"] == "OK" for r in acked)
    s.main.kill()
    # Commands while main is down fail fast and clearly.
    t0 = time.monotonic()
    r = await ca.cmd("inbox")
    assert r["code"] == "UNAVAILABLE" and time.monotonic() - t0 < 6
    await ca.ok("ping")  # the realm itself keeps answering
    s.restart_main()

    # alpha's session is resumed by token: no new auth needed
    await until_ok(ca, "who")
    # Each arrives once: from the inbox, or pushed to a session that logged in while its realm
    # re-linked (a resumed session gets what waits pushed).
    await until_ok(cb, f"auth {b} pw-secret")
    msgs = await all_waiting(cb, "inbox")
    assert [m["text"] for m in msgs] == [f"m{i}" for i in range(200)]
    assert [m["id"] for m in msgs] == [r["id"] for r in acked[0::2]]
    await cc.ok(f"auth {c_} pw-secret")
    gmsgs = await all_waiting(cc, f"inboxgroup {g}")
    assert [m["text"] for m in gmsgs] == [f"g{i}" for i in range(200)]


async def all_waiting(c: TextClient, verb: str) -> list[dict[str, Any]]:
    """What was pushed plus every page of the inbox, in id order."""
    got = (await c.ok(verb))["messages"]
    got += [e for e in await drain_events(c, 0.5) if e["event"] in ("private", "group")]
    while (r := await c.ok(verb))["messages"]:
        got += r["messages"]
    return sorted(got, key=lambda m: m["id"])


async def test_push_resumes_after_main_restart(fresh_stack: Stack, uname: Names) -> None:
    s = fresh_stack
    a, b = uname("pa"), uname("pb")
    ca = await login(*s.realm("alpha"), a)
    cb = await login(*s.realm("beta"), b)
    s.restart_main(kill=False)  # SIGTERM: graceful
    await until_ok(ca, f"sendprivate {b} after restart")
    ev = await cb.event()
    assert ev["text"] == "after restart"  # b's session was re-attached to beta's new link
    await until_ok(cb, f"sendprivate {a} and back")
    assert (await ca.event())["text"] == "and back"
    assert {"user": b, "realm": "beta", "status": "online", "message": ""} in (await ca.ok("who"))["online"]


async def test_sigterm_is_a_graceful_exit(fresh_stack: Stack) -> None:
    s = fresh_stack
    assert s.realms["alpha"].terminate() == 0
    assert s.main.terminate() == 0
