"""The name policy (realmchat/names.py, docs/SECURITY.md): ASCII only, so look-alikes, invisible
and bidi characters are refused with INVALID_ARGUMENT on every path (text protocol and gRPC),
never normalised; uniqueness ignores case; a register race has exactly one winner."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable, Iterator

import grpc
import pytest

from realmchat.names import check_name, is_valid_name, name_key
from realmchat.pb import chat_pb2 as pb

from .hardutil import Grpc
from .stack import Stack, start_stack
from .textclient import TextClient, login

Names = Callable[[str], str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's own stack, with cheap argon2 (tests only): it registers a lot. The register
    race still races: every racer passes the 'name taken?' check before the first insert lands,
    or loses at the insert (the unique key); both paths must end in ALREADY_EXISTS."""
    s = start_stack(tmp_path_factory.mktemp("data"), main_extra=("--argon2-time-cost", "1",
                                                                  "--argon2-memory-kib", "8192"))
    yield s
    s.stop()

# (what, name): each looks like, or hides inside, the plain "alice".
HOSTILE = [
    ("fullwidth", "\uff41\uff4c\uff49\uff43\uff45"),
    ("cyrillic a", "\u0430lice"),
    ("cyrillic e and i", "al\u0456c\u0435"),
    ("greek omicron", "b\u03bfb"),
    ("mathematical bold", "\U0001d41alice"),
    ("kelvin sign", "\u212aate"),          # NFKC: K; matches k under re.IGNORECASE
    ("long s", "\u017fam"),                # casefolds to s
    ("ligature fi", "\ufb01sh"),           # NFKC: fi
    ("dotless i", "al\u0131ce"),
    ("sharp s", "stra\u00dfe"),
    ("zero-width space", "ali\u200bce"),
    ("zero-width joiner", "ali\u200dce"),
    ("zero-width non-joiner", "ali\u200cce"),
    ("word joiner", "ali\u2060ce"),
    ("bom", "\ufeffalice"),
    ("soft hyphen", "ali\u00adce"),
    ("combining acute", "ali\u0301ce"),
    ("rlo", "\u202eecila"),
    ("lri", "\u2066alice\u2069"),
    ("lrm", "alice\u200e"),
    ("arabic letter mark", "alice\u061c"),
    ("hangul filler", "alice\u3164"),
    ("nul", "ali\x00ce"),
    ("escape", "ali\x1b[31mce"),
    ("del", "alice\x7f"),
    ("trailing newline", "alice\n"),
    ("tab", "ali\tce"),
    ("nbsp", "ali\u00a0ce"),
    ("too long", "a" * 33),
    ("empty", ""),
    ("slash", "a/b"),
]


@pytest.mark.parametrize(("what", "name"), HOSTILE, ids=[w for w, _ in HOSTILE])
def test_hostile_names_are_invalid(what: str, name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(Exception) as ei:
        check_name(name)
    assert getattr(ei.value, "code", None) == "INVALID_ARGUMENT"
    # The message never carries the raw invisible/bidi character back to a terminal.
    msg = ei.value.args[0]
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in msg), msg


def test_plain_names_and_case() -> None:
    for ok in ("alice", "Alice_01", "a", "a" * 32, "x.y-z", "A-Z.a_z"):
        assert check_name(ok) == ok
    assert name_key("ALICE") == name_key("alice") == "alice"


def test_nfkc_and_casefold_are_moot_for_valid_names() -> None:
    # A valid name is already NFKC-normal and its casefold is its ASCII lower case: there is
    # nothing that normalisation could merge or split.
    for name in ("alice", "Bob_2", "x.Y-z"):
        assert unicodedata.normalize("NFKC", name) == name
        assert name.casefold() == name_key(name)
    # ...and everything NFKC or casefolding would change is refused outright.
    for _, name in HOSTILE:
        if unicodedata.normalize("NFKC", name) != name or name.casefold() != name.lower():
            assert not is_valid_name(name)


SAMPLE = ["\uff41lice", "\u0430lice", "ali\u200bce", "\u202eecila", "ali\u0301ce", "\u212aate"]


async def test_hostile_names_refused_over_the_text_protocol(stack: Stack, uname: Names) -> None:
    c = await TextClient.connect(*stack.realm("alpha"))
    for name in SAMPLE:
        await c.err(f"register {name} pw-secret", "INVALID_ARGUMENT")
        await c.err(f"auth {name} pw-secret", "UNAUTHENTICATED")  # no such user; no crash
    await c.ok(f"register {uname('nm')} pw-secret")
    a = uname("nmuser")
    ca = await login(*stack.realm("alpha"), a)
    for name in SAMPLE:
        await ca.err(f"creategroup {name}", "INVALID_ARGUMENT")
        await ca.err(f"sendprivate {name} hello", "INVALID_ARGUMENT")
        await ca.err(f"joingroup {name}", "INVALID_ARGUMENT")


async def test_hostile_names_refused_over_grpc(stack: Stack) -> None:
    g = Grpc(stack.main.addr)
    try:
        for name in [*SAMPLE, "ali\nce", "alice\x00"]:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await g.stub.Register(pb.RegisterRequest(user=name, password="pw-secret"), timeout=10)
            assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "use 1-32 characters of A-Z a-z 0-9 _ . -" in (ei.value.details() or "")
    finally:
        await g.close()


async def test_a_look_alike_cannot_register_next_to_the_original(stack: Stack, uname: Names) -> None:
    real = uname("paypal")
    c = await TextClient.connect(*stack.realm("beta"))
    await c.ok(f"register {real} pw-secret")
    await c.err(f"register {real.upper()} pw-secret", "ALREADY_EXISTS")
    await c.err(f"register {real.replace('a', chr(0x430), 1)} pw-secret", "INVALID_ARGUMENT")


async def test_concurrent_register_of_one_name_has_exactly_one_winner(stack: Stack, uname: Names) -> None:
    base = uname("race")
    variants = [base, base.upper(), base.capitalize()]
    clients = [await TextClient.connect(*stack.realm("alpha" if i % 2 else "beta")) for i in range(12)]
    for i, c in enumerate(clients):  # all lines out before any answer comes back
        await c.send_raw(f"register {variants[i % 3]} pw-{i}-secret\n".encode())
    results = await asyncio.gather(*(c.response(timeout=60) for c in clients))
    oks = [i for i, r in enumerate(results) if r["status"] == "OK"]
    assert len(oks) == 1, results
    assert all(r["code"] == "ALREADY_EXISTS" for i, r in enumerate(results) if i not in oks), results
    # The winner's password is the one that works.
    w = oks[0]
    await clients[0].ok(f"auth {base} pw-{w}-secret")
    for c in clients:
        await c.close()
