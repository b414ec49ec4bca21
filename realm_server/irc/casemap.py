"""Case mapping and name rules of the IRC edge.

The edge advertises CASEMAPPING=ascii. realmchat user and group names are 1-32 characters of
A-Z a-z 0-9 _ . - and unique ignoring ASCII case (realmchat/names.py, name_key). rfc1459 differs
from ascii only in also folding []\\~ to {}|^, characters no realmchat name can contain, so on
valid names both give the same identity; ascii is the one that says exactly what realmchat does,
and a client that folds with it agrees with realmchat even on names it has not seen validated.

The fold functions touch ASCII only: str.lower() would also fold non-ASCII look-alikes (the
Kelvin sign U+212A becomes "k"), which would let a nick that realmchat refuses compare equal to
one it accepts.

A nick is a realmchat user name; a channel is '#' followed by a group name. Nothing is
normalised: a name that breaks the rule is refused (432 ERR_ERRONEUSNICKNAME, 403 for
channels), never mapped to a valid one.
"""

from __future__ import annotations

from realmchat.names import NAME_MAX, is_valid_name

CASEMAPPING = "ascii"
CHANTYPES = "#"
NICKLEN = NAME_MAX
CHANNELLEN = NAME_MAX + len(CHANTYPES)

_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")


def fold_ascii(name: str) -> str:
    """CASEMAPPING=ascii: A-Z to a-z, nothing else."""
    return name.translate(_ASCII)


def fold_rfc1459(name: str) -> str:
    """CASEMAPPING=rfc1459: A-Z to a-z and []\\~ to {}|^."""
    return name.translate(_RFC1459)


fold = fold_ascii  # the mapping the edge advertises (CASEMAPPING above)


def is_valid_nick(nick: str) -> bool:
    return is_valid_name(nick)


def is_valid_channel(channel: str) -> bool:
    return channel[:1] == CHANTYPES and is_valid_name(channel[1:])


def channel_to_group(channel: str) -> str | None:
    """The group name of a channel ("#progjar" -> "progjar"), None if it is not a valid channel."""
    return channel[1:] if is_valid_channel(channel) else None


def group_to_channel(group: str) -> str:
    return CHANTYPES + group
