"""The terminal client's pure parts: command parsing, local paths, rendering, sanitizing and the
no-overwrite naming of downloads. Table-driven, no servers."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat_cli.client import claim_free_name
from chat_cli.models import Ban, FileInfo, GroupInfo, Message, Presence, event_from_wire
from chat_cli.render import (
    fmt_bans,
    fmt_error,
    fmt_file_offer,
    fmt_groups,
    fmt_message,
    fmt_size,
    fmt_table,
    fmt_time,
    fmt_who,
    progress_bar,
    sanitize,
)
from chat_cli.terminal import UserCommand, help_text, parse_user_line, resolve_local_path
from realmchat.codes import Code
from realmchat.errors import ChatError, NotFound

# ---- parsing what the user types --------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("auth alice pw", UserCommand("auth", ("alice", "pw"))),
    ("AUTH alice pw", UserCommand("auth", ("alice", "pw"))),
    ("sendprivate bob halo apa kabar", UserCommand("sendprivate", ("bob", "halo apa kabar"))),
    ("sendgroup progjar  two  spaces", UserCommand("sendgroup", ("progjar", " two  spaces"))),
    ("sendfile bob ~/laporan.pdf", UserCommand("sendfile", ("bob", "~/laporan.pdf"))),
    ("sendfile bob my report final.pdf", UserCommand("sendfile", ("bob", "my report final.pdf"))),
    ("receivefile", UserCommand("receivefile", ())),
    ("receivefile 12", UserCommand("receivefile", ("12",))),
    ("history #progjar 5", UserCommand("history", ("#progjar", "5"))),
    ("exit", UserCommand("quit", ())),
    ("  who  ", UserCommand("who", ())),
    ("", None),
    ("   ", None),
    ("# comment", None),
])
def test_parse_user_line(line: str, expected: UserCommand | None) -> None:
    assert parse_user_line(line) == expected


@pytest.mark.parametrize(("line", "code", "needle"), [
    ("frobnicate", Code.UNIMPLEMENTED, "unknown command"),
    ("auth alice", Code.INVALID_ARGUMENT, "usage: auth USER PASS"),
    ("sendprivate bob", Code.INVALID_ARGUMENT, "usage: sendprivate"),
    ("sendfile bob", Code.INVALID_ARGUMENT, "sendfile TO PATH"),
    ("receivefile abc", Code.INVALID_ARGUMENT, "file ID"),
    ("history bob 0", Code.INVALID_ARGUMENT, "N"),
    ("who extra", Code.INVALID_ARGUMENT, "usage: who"),
])
def test_parse_user_line_errors(line: str, code: Code, needle: str) -> None:
    with pytest.raises(ChatError) as e:
        parse_user_line(line)
    assert e.value.code is code and needle in e.value.message


def test_help_shows_the_terminal_forms() -> None:
    text = help_text()
    assert "sendfile TO PATH" in text and "sendfile TO NAME SIZE" not in text
    assert "sendprivate TO MESSAGE" in text and "history USER|GROUP [N]" in text


def test_resolve_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    f = tmp_path / "my report.pdf"
    f.write_bytes(b"x")
    assert resolve_local_path(str(f)) == f                    # spaces as typed
    assert resolve_local_path("~/my report.pdf") == f         # ~ expanded
    assert resolve_local_path(f"'{f}'") == f                  # shell quotes removed
    assert resolve_local_path(str(f).replace(" ", "\\ ")) == f  # shell escapes removed
    with pytest.raises(NotFound, match="no such local file"):
        resolve_local_path("~/nope.pdf")
    with pytest.raises(NotFound, match="NAME SIZE form"):
        resolve_local_path("report.pdf 1234")  # the wire's form typed by mistake


# ---- sanitizing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("halo apa kabar", "halo apa kabar"),
    ("emoji 🎉 and ümlaut, 中文", "emoji 🎉 and ümlaut, 中文"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
    ("c1 \x9b2J", "c1 \\x9b2J"),
    ("line\nbreak\rback", "line\\x0abreak\\x0dback"),
    ("tab\there", "tab here"),
    ("\u202eevil\u202c", "\\u202eevil\\u202c"),
    ("a\u2028b", "a\\u2028b"),
])
def test_sanitize(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


@given(st.text())
def test_sanitize_never_lets_a_control_character_through(text: str) -> None:
    out = sanitize(text)
    assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in out)
    assert "\u202e" not in out and "\u2066" not in out


# ---- rendering --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _local_hm(ts: str) -> str:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%H:%M")


def test_fmt_message_private_and_group() -> None:
    ts = "2026-11-24T10:42:01.123Z"
    hm = _local_hm(ts)
    m = Message(id=1, sender="alice", text="halo", ts=ts, to="bob")
    assert fmt_message(m, "bob", NOW) == f"[alice → you {hm}] halo"
    assert fmt_message(m, "Alice", NOW) == f"[you → bob {hm}] halo"  # names ignore case
    assert fmt_message(m, "carol", NOW) == f"[alice → bob {hm}] halo"
    g = Message(id=2, sender="bob", text="hi", ts=ts, group="progjar")
    assert fmt_message(g, "alice", NOW) == "[#progjar] bob: hi"
    assert fmt_message(g, "bob", NOW) == "[#progjar] you: hi"
    evil = Message(id=3, sender="x\x1b[2Jy", text="\x1b[2J", ts=ts, group="g")
    assert "\x1b" not in fmt_message(evil, None, NOW)


def test_fmt_time() -> None:
    now = datetime(2026, 11, 24, 12, 0).astimezone()
    today = now.replace(hour=10, minute=42).astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert fmt_time(today, now) == "10:42"
    assert fmt_time("2020-01-02T03:04:05Z", now).startswith("2020-01-0")
    assert fmt_time("garbage\x1b", now) == "garbage\\x1b"


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (20 * 1024 * 1024, "20.0 MiB"), (3 * 1024**3, "3.0 GiB"),
])
def test_fmt_size(n: int, text: str) -> None:
    assert fmt_size(n) == text


def test_tables() -> None:
    assert fmt_table(("A", "BB"), [("xyz", 1), ("q", 22)]) == "A    BB\n---  --\nxyz  1\nq    22"
    assert fmt_who([]) == "nobody is online"
    assert fmt_who([Presence("alice", "alpha"), Presence("bob", "beta")]).splitlines() == [
        "USER   REALM", "-----  -----", "alice  alpha", "bob    beta"]
    assert fmt_groups([]) == "you are in no groups"
    assert fmt_groups([GroupInfo("progjar", "owner", 3)]).splitlines()[2] == "#progjar  owner  3"


def test_fmt_bans() -> None:
    now = datetime(2026, 11, 24, 12, 0).astimezone()
    today = now.replace(hour=9, minute=5).astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert fmt_bans([]) == "nobody is banned"
    bans = [Ban.from_wire({"user": "eve", "by": "alice", "reason": "spam \x1b[2J", "at": today}),
            Ban.from_wire({"user": "mallory", "by": "bob", "at": "2020-01-02T03:04:05Z"})]
    lines = fmt_bans(bans, now).splitlines()
    assert lines[0].split() == ["BANNED", "BY", "WHEN", "REASON"]
    assert lines[2].split() == ["eve", "alice", "09:05", "spam", "\\x1b[2J"]  # the reason is sanitized
    row = lines[3].split()
    assert row[:2] == ["mallory", "bob"] and row[2].startswith("2020-01-0") and len(row) == 4  # no reason
    assert bans[1].reason == "" and bans[1].when == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_fmt_error_and_offer_and_progress() -> None:
    assert fmt_error(NotFound("no user 'zed'\nsecond line")) == "error NOT_FOUND: no user 'zed' second line"
    f = FileInfo(id=7, sender="alice", name="a.pdf", size=2048, sha256="ab")
    assert fmt_file_offer(f) == "[file from alice] a.pdf (2.0 KiB), id 7: type 'receivefile 7' to download"
    assert progress_bar(5, 10, width=10) == "[#####.....]  50% 5 B/10 B"
    assert progress_bar(10, 10, width=4).startswith("[####] 100%")


def test_events_from_wire_tolerate_unknown_kinds() -> None:
    ev = event_from_wire({"event": "private", "id": 3, "from": "a", "to": "b", "text": "t", "ts": "x"})
    assert ev.kind == "private"
    other = event_from_wire({"event": "wave", "user": "a"})
    assert other.kind == "wave" and other.raw == {"event": "wave", "user": "a"}  # type: ignore[union-attr]


# ---- download naming ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "taken", "expected"), [
    ("a.pdf", [], "a.pdf"),
    ("a.pdf", ["a.pdf"], "a (1).pdf"),
    ("a.pdf", ["a.pdf", "a (1).pdf"], "a (2).pdf"),
    ("README", ["README"], "README (1)"),
    (".bashrc", [".bashrc"], ".bashrc (1)"),
    ("data.tar.gz", ["data.tar.gz"], "data (1).tar.gz"),
])
def test_claim_free_name_never_overwrites(tmp_path: Path, name: str, taken: list[str], expected: str) -> None:
    for t in taken:
        (tmp_path / t).write_bytes(b"keep")
    got = claim_free_name(tmp_path, name)
    assert got == tmp_path / expected
    assert got.exists()  # reserved at once, so a concurrent download cannot take it
    for t in taken:
        assert (tmp_path / t).read_bytes() == b"keep"


def test_claim_free_name_keeps_names_within_255_bytes(tmp_path: Path) -> None:
    name = "x" * 251 + ".pdf"
    (tmp_path / name).write_bytes(b"")
    got = claim_free_name(tmp_path, name)
    assert len(os.fsencode(got.name)) <= 255 and got.name.endswith(" (1).pdf")
