"""Fixtures: real main + realm processes on port 0 with a temp data dir."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .stack import Stack, start_stack

_names = itertools.count(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One main and realms alpha and beta, shared by a test module (use unique user names)."""
    s = start_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own for tests that kill or restart servers."""
    s = start_stack(tmp_path / "data")
    yield s
    s.stop()


@pytest.fixture
def uname() -> Callable[[str], str]:
    """Unique user/group names across a test session: uname('alice') -> 'alice_12_<pid>'."""
    pid = os.getpid() % 10000

    def make(prefix: str = "u") -> str:
        return f"{prefix}{next(_names)}_{pid}"

    return make
