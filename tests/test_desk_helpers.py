"""The desks' pure helpers in process, from their homes in main_server/domain/."""

from __future__ import annotations

import hashlib

import pytest

from main_server.domain.accounts import token_hash
from main_server.domain.delivery import fit_bytes
from main_server.domain.messages import (
    EMOJI_MAX,
    MENTIONS_MAX,
    SEARCH_WORDS_MAX,
    check_emoji,
    mentions_in,
    search_words,
)
from main_server.storage.base import MessageRecord
from realmchat.errors import InvalidArgument


def msg(i: int, size: int) -> MessageRecord:
    return MessageRecord(i, "a", "x" * size, "t")


def test_fit_bytes_keeps_the_oldest_or_the_newest_and_always_one() -> None:
    msgs = [msg(i, 100) for i in range(1, 11)]
    kept, cut = fit_bytes(msgs, 410)
    assert [m.id for m in kept] == [1, 2, 3] and cut
    kept, cut = fit_bytes(msgs, 410, newest=True)
    assert [m.id for m in kept] == [8, 9, 10] and cut
    kept, cut = fit_bytes([msg(1, 10_000)], 10)
    assert [m.id for m in kept] == [1] and not cut, "one message always goes, whatever its size"
    assert fit_bytes(msgs, 10**6) == (msgs, False)


def test_mentions_are_keys_without_trailing_punctuation_and_bounded() -> None:
    assert mentions_in("no at sign") == ()
    assert mentions_in("thanks @Bob. and @ann-") == ("ann", "ann-", "bob", "bob.")
    assert mentions_in("mail me at x@example.org") == ()
    assert len(mentions_in(" ".join(f"@u{i}" for i in range(200)))) == MENTIONS_MAX


def test_search_words_lower_case_with_prefixes_and_limits() -> None:
    assert search_words("Hello, WORLD meet*") == ["hello", "world", "meet*"]
    for bad in ("", "!!!", " ".join(["w"] * (SEARCH_WORDS_MAX + 1)), "x" * 65, "a*"):
        with pytest.raises(InvalidArgument):
            search_words(bad)


def test_check_emoji_refuses_spaces_controls_and_long_ones() -> None:
    assert check_emoji("👍") == "👍"
    for bad in ("", "a b", "\x07", "x" * (EMOJI_MAX + 1)):
        with pytest.raises(InvalidArgument):
            check_emoji(bad)


def test_only_hashes_of_tokens_are_kept() -> None:
    assert token_hash("t") == hashlib.sha256(b"t").hexdigest()
    assert len(token_hash("t" * 200)) == 64
