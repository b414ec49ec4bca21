"""Rules for user and group names: 1-32 characters of A-Z a-z 0-9 _ . -, unique ignoring case.
The ASCII-only alphabet is the look-alike policy: no homoglyphs, invisible or bidi characters
can get in, so case folding is the only normalisation needed."""

from __future__ import annotations

import re

from .errors import InvalidArgument

NAME_MAX = 32
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def is_valid_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


def check_name(name: str, kind: str = "user") -> str:
    """Returns the name if valid, else raises InvalidArgument naming the rule."""
    if not is_valid_name(name):
        raise InvalidArgument(
            f"invalid {kind} name {name[:40]!r}: use 1-{NAME_MAX} characters of A-Z a-z 0-9 _ . -"
        )
    return name


def name_key(name: str) -> str:
    """The case-insensitive identity of a name (what uniqueness is checked on)."""
    return name.lower()
