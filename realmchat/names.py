"""Rules for user, group and realm names: 1-32 characters of A-Z a-z 0-9 _ . -, unique ignoring case.

The ASCII-only alphabet is the look-alike policy (docs/SECURITY.md):
- homoglyphs cannot get in: Cyrillic a (U+0430), Greek omicron (U+03BF), fullwidth a (U+FF41),
  mathematical bold a (U+1D41A), the Kelvin sign (U+212A), ligatures - every non-ASCII character
  is refused, so a Cyrillic-a "alice" can never pose as the Latin one;
- invisible and direction-changing characters cannot get in: zero-width space/joiners, BOM, soft
  hyphen, bidi overrides and isolates (RLO U+202E ...), control characters, any whitespace;
- so NFKC normalisation and Unicode case folding are moot: input that they would change is
  refused, not silently mapped. Uniqueness is on the ASCII lower case (name_key).
The pattern must stay free of re.IGNORECASE: with it, Python matches the Kelvin sign and the long
s against k and s. Names are refused with INVALID_ARGUMENT, never normalised.
"""

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
