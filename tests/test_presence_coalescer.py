"""The presence coalescer (main_server/presence.py), in-process: at most one announcement per
user per interval, the latest state wins, nothing equal to the last announcement, and going
offline held back by the grace time."""

from __future__ import annotations

import pytest

from main_server.presence import AWAY, OFFLINE, ONLINE, Coalescer, State


def test_first_change_goes_at_once_then_one_per_interval() -> None:
    c = Coalescer(interval=1.0, offline_grace=1.0)
    assert c.update("u", State(ONLINE, "alpha"), now=10.0) == 0.0
    assert c.take("u", now=10.0) == State(ONLINE, "alpha")
    # Within the interval: scheduled for its end; later changes ride along, the latest wins.
    assert c.update("u", State(AWAY, "alpha", "lunch"), now=10.2) == pytest.approx(0.8)
    assert c.update("u", State(ONLINE, "alpha"), now=10.3) is None
    assert c.update("u", State(AWAY, "alpha", "brb"), now=10.4) is None
    assert c.take("u", now=11.0) == State(AWAY, "alpha", "brb")
    assert c.scheduled() == 0


def test_back_to_the_announced_state_announces_nothing() -> None:
    c = Coalescer(interval=1.0, offline_grace=1.0)
    c.update("u", State(ONLINE, "alpha"), now=0.0)
    c.take("u", now=0.0)
    assert c.update("u", State(OFFLINE), now=5.0) == 1.0  # offline waits for the grace time
    assert c.update("u", State(ONLINE, "alpha"), now=5.3) is None  # a reconnect inside it
    assert c.take("u", now=6.0) is None


def test_offline_after_the_grace_and_never_before_online() -> None:
    c = Coalescer(interval=1.0, offline_grace=1.0)
    assert c.update("v", State(OFFLINE), now=0.0) == 1.0
    assert c.take("v", now=1.0) is None  # never announced online: nobody needs to hear it left
    c.update("u", State(ONLINE, "beta"), now=0.0)
    c.take("u", now=0.0)
    assert c.update("u", State(OFFLINE), now=3.0) == 1.0
    assert c.take("u", now=4.0) == State(OFFLINE)
    # Users are independent.
    assert c.update("w", State(ONLINE, "alpha"), now=4.0) == 0.0
