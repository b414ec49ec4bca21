"""A message sent to a user at the very moment that user logs out must not be lost: either main
saw the logout first (the message waits for inbox) or the push was already on its way (the realm
still hands it to the connection that logged out). Before the realm kept ended sessions routable
for a grace period, about 1 in 100 such messages vanished: main counted the push as delivered and
the realm dropped it because the session was gone."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from .hardutil import drain_events
from .stack import Stack, start_stack
from .textclient import login

Names = Callable[[str], str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # cheap argon2 (tests only): the race needs hundreds of logins
    s = start_stack(tmp_path_factory.mktemp("data"), main_extra=("--argon2-time-cost", "1",
                                                                  "--argon2-memory-kib", "8192"))
    yield s
    s.stop()


async def test_message_racing_a_logout_is_never_lost(stack: Stack, uname: Names) -> None:
    a, b = uname("lr_a"), uname("lr_b")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    await cb.ok("logout")
    acked: list[int] = []
    for i in range(250):
        await cb.ok(f"auth {b} pw-secret")
        # the message and the logout leave at the same moment
        await asyncio.gather(ca.send_raw(f"sendprivate {b} race {i}\n".encode()), cb.send_raw(b"logout\n"))
        acked.append((await ca.response())["id"])
        assert (await cb.response())["status"] == "OK"
    pushed = [e["id"] for e in await drain_events(cb, 0.5) if e["event"] == "private"]
    await cb.ok(f"auth {b} pw-secret")
    waiting = [m["id"] for m in (await cb.ok("inbox"))["messages"]]
    got = Counter(pushed + waiting)
    assert sorted(set(acked) - set(got)) == []
    assert [k for k, v in got.items() if v > 1] == []
