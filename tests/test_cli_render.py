"""The terminal client's pure parts: command parsing, local paths, rendering, sanitizing and the
no-overwrite naming of downloads. Table-driven, no servers."""

from __future__ import annotations

import asyncio
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


# ---- the terminal's own lines: styles, every event as a sentence, presence, slash commands ----


def test_styled_turns_the_renderers_styles_into_prompt_toolkit_ones_and_nothing_else() -> None:
    from chat_cli.render import BOLD_YELLOW, DIM, RESET, styled

    ts = "2026-11-24T10:42:01.123Z"
    m = Message(id=7, sender="bob", text="hi @alice", ts=ts, to="alice", edited=ts)
    frags = styled(fmt_message(m, "alice", NOW, ids=True, color=True))
    assert "".join(text for _, text in frags) == f"[bob → you {_local_hm(ts)}] hi @alice (edited)  #7"
    assert ("fg:ansibrightblack", "#7") in frags
    assert frags[0][0] == "bold fg:ansiyellow" and frags[0][1].startswith("[bob → you")
    assert not any("\x1b" in text for _, text in frags)
    # Any other sequence (text that skipped sanitize, or one the renderer did not make) is shown
    # as text; a status line keeps its base style through the renderer's own resets.
    assert styled("a\x1b[31mred\x9b2J\u202e") == [("", "a\\x1b[31mred\\x9b2J\\u202e")]
    assert styled(f"x {DIM}y{RESET} z", "fg:ansibrightblack") == [
        ("fg:ansibrightblack", "x "), ("fg:ansibrightblack fg:ansibrightblack", "y"), ("fg:ansibrightblack", " z")]
    assert styled(f"{BOLD_YELLOW}one\ntwo{RESET}") == [("bold fg:ansiyellow", "one\ntwo")]


def _terminal(lines: list[str]):  # type: ignore[no-untyped-def]
    """A Terminal on a client that never connects: what on_event prints, nothing sent."""
    from chat_cli.client import ChatClient
    from chat_cli.terminal import Terminal

    return Terminal(ChatClient("127.0.0.1", 9), download_dir=Path("."), json_mode=False, out=lines.append)


WIRE_EVENTS = [
    {"event": "private", "id": 1, "from": "bob", "to": "alice", "text": "hi", "ts": "2026-11-24T10:42:01.123Z"},
    {"event": "group", "id": 2, "from": "bob", "group": "crew", "text": "hi all", "ts": "2026-11-24T10:42:01Z"},
    {"event": "file", "id": 3, "from": "bob", "name": "a.pdf", "size": 10, "sha256": "ab", "ts": "x"},
    {"event": "member", "group": "crew", "user": "bob", "action": "kick", "by": "carol", "reason": "spam"},
    {"event": "member", "group": "crew", "user": "bob", "action": "frobbed", "by": "carol"},
    {"event": "topic", "group": "crew", "topic": "lunch", "by": "bob"},
    {"event": "groupdeleted", "group": "crew", "by": "bob"},
    {"event": "invited", "group": "crew", "by": "bob"},
    {"event": "session", "state": "expired"},
    {"event": "shutdown", "message": "the realm is shutting down"},
    {"event": "shutdown"},
    {"event": "closing", "reason": "idle_timeout", "message": "no command for 2 s: closing the connection"},
    {"event": "closing", "reason": "flood"},
    {"event": "read", "peer": "bob", "id": 4},
    {"event": "seen", "by": "bob", "id": 4},
    {"event": "presence", "user": "bob", "status": "away", "realm": "beta", "message": "lunch"},
    {"event": "typing", "user": "bob", "peer": "bob", "expires": 5},
    {"event": "edited", "id": 99, "text": "new", "edited": "x", "from": "bob", "to": "alice"},
    {"event": "deleted", "id": 99, "by": "bob"},
    {"event": "reaction", "id": 99, "user": "bob", "emoji": "👍", "on": True},
    {"event": "wave", "user": "bob", "nested": {"a": [1, 2]}, "list": [1, 2, 3]},
    {"event": "notice", "message": "maintenance at \x1b[2J noon"},
    {"event": ""},
]


@pytest.mark.parametrize("obj", WIRE_EVENTS, ids=lambda o: str(o.get("event")) or "empty")
def test_every_event_prints_as_a_sentence_never_a_repr(obj: dict[str, object]) -> None:
    lines: list[str] = []
    _terminal(lines).on_event(event_from_wire(obj))
    text = "\n".join(lines)
    assert text.strip(), obj
    for repr_mark in ("{'", '{"', "':", "Event(", "raw=", "None"):
        assert repr_mark not in text, text
    assert "\x1b" not in text, text


def test_connection_events_and_realm_notices_read_as_sentences() -> None:
    from chat_cli.models import ConnectionEvent, ConnState

    lines: list[str] = []
    term = _terminal(lines)
    for state in ConnState:
        term.on_event(ConnectionEvent(state, "127.0.0.1:8000", "alpha"))
    for obj in WIRE_EVENTS:
        if obj["event"] in ("closing", "shutdown", "wave", "notice"):
            term.on_event(event_from_wire(obj))
    assert lines == [
        "* connected to realm alpha at 127.0.0.1:8000",
        "* disconnected: 127.0.0.1:8000",
        "* reconnected to realm alpha: 127.0.0.1:8000",
        "* the realm is going away: the realm is shutting down",
        "* the realm is going away: the realm is shutting down",
        "* the realm is closing this connection: no command for 2 s: closing the connection",
        "* the realm is closing this connection: flood",
        "* the realm sent a notice this client does not know (wave) [user: bob, nested: 1 item, list: 3 items]",
        "* the realm sent a notice this client does not know (notice): maintenance at \\x1b[2J noon",
    ]


def test_presence_lines_only_when_the_shown_state_changes() -> None:
    from chat_cli.models import PresenceEvent
    from chat_cli.terminal import PresenceLines, Shown

    p = PresenceLines(limit=2, settle=5.0)
    on = PresenceEvent("bob", "online", "beta")
    off = PresenceEvent("Bob", "offline")
    assert p.offer(on, 0) is Shown.SHOW
    assert p.offer(PresenceEvent("BOB", "online", "Beta"), 1) is Shown.SKIP  # a restart's repeat
    # A realm restart: offline, then back within the settle time: nothing at all.
    assert p.offer(off, 2) is Shown.HOLD
    assert p.offer(off, 2.5) is Shown.SKIP
    assert p.due(6.9) == []
    assert p.offer(on, 3) is Shown.SKIP
    assert p.due(100) == [] and not p.holding
    # Really gone: the offline is due once it has lasted; a second one is no news.
    assert p.offer(off, 10) is Shown.HOLD and p.next_due() == 15
    assert p.due(14.9) == [] and p.due(15) == [off]
    assert p.offer(off, 16) is Shown.SKIP
    assert p.offer(on, 17) is Shown.SHOW
    # Back, but elsewhere or away: a change, shown (the held offline is dropped).
    assert p.offer(off, 18) is Shown.HOLD
    assert p.offer(PresenceEvent("bob", "away", "beta", "lunch"), 19) is Shown.SHOW and not p.holding
    assert p.offer(PresenceEvent("bob", "online", "alpha"), 20) is Shown.SHOW
    # Bounded: the least recently heard user is forgotten (so its repeat shows again).
    assert p.offer(PresenceEvent("carol", "online", "a"), 21) is Shown.SHOW
    assert p.offer(PresenceEvent("dave", "online", "a"), 22) is Shown.SHOW
    assert p.offer(PresenceEvent("bob", "online", "alpha"), 23) is Shown.SHOW
    for i in range(5):
        p.offer(PresenceEvent(f"u{i}", "offline"), 24)
    assert len(p._held) <= 2 and len(p._shown) <= 2


async def test_terminal_prints_a_held_offline_when_it_lasts() -> None:
    from chat_cli.models import PresenceEvent
    from chat_cli.terminal import PresenceLines

    lines: list[str] = []
    term = _terminal(lines)
    term.presence = PresenceLines(settle=0.1)
    for ev in (PresenceEvent("bob", "online", "beta"), PresenceEvent("bob", "online", "beta"),
               PresenceEvent("bob", "offline"), PresenceEvent("bob", "online", "beta")):
        term.on_event(ev)
    await asyncio.sleep(0.3)
    assert lines == ["· bob is online on realm beta"]
    term.on_event(PresenceEvent("bob", "offline"))
    assert lines == ["· bob is online on realm beta"]
    await asyncio.sleep(0.3)
    assert lines == ["· bob is online on realm beta", "· bob is offline"]


@pytest.mark.parametrize(("line", "expected"), [
    ("/query bob", UserCommand("/query", ("bob",))),
    ("/QUERY #crew", UserCommand("/query", ("#crew",))),
    ("/query", UserCommand("/query", ())),
    ("/join #crew", UserCommand("/join", ("crew",))),
    ("/join crew s3cret", UserCommand("/join", ("crew", "s3cret"))),
    ("/msg bob  hi  there", UserCommand("/msg", ("bob", "hi  there"))),
    ("/msg #crew hi", UserCommand("/msg", ("#crew", "hi"))),
    ("/me waves at  you", UserCommand("/me", ("waves at  you",))),
    ("/who", UserCommand("who", ())),
    ("/sendprivate bob hi", UserCommand("sendprivate", ("bob", "hi"))),
    ("/exit", UserCommand("quit", ())),
])
def test_parse_slash_lines(line: str, expected: UserCommand) -> None:
    assert parse_user_line(line) == expected


@pytest.mark.parametrize(("line", "code", "needle"), [
    ("/query bob carol", Code.INVALID_ARGUMENT, "usage: /query [USER|#GROUP]"),
    ("/query b@d", Code.INVALID_ARGUMENT, "invalid user name"),
    ("/query #b@d", Code.INVALID_ARGUMENT, "invalid group name"),
    ("/join", Code.INVALID_ARGUMENT, "usage: /join GROUP [KEY]"),
    ("/msg bob", Code.INVALID_ARGUMENT, "usage: /msg USER|#GROUP TEXT"),
    ("/me", Code.INVALID_ARGUMENT, "usage: /me TEXT"),
    ("//hello", Code.INVALID_ARGUMENT, "no current conversation"),
    ("/", Code.UNIMPLEMENTED, "/help"),
    ("/frobnicate", Code.UNIMPLEMENTED, "unknown command"),
])
def test_parse_slash_line_errors(line: str, code: Code, needle: str) -> None:
    with pytest.raises(ChatError) as e:
        parse_user_line(line)
    assert e.value.code is code and needle in e.value.message


def test_help_lists_the_conversation_commands() -> None:
    text = help_text()
    for usage in ("/query [USER|#GROUP]", "/join GROUP [KEY]", "/msg USER|#GROUP TEXT", "/me TEXT"):
        assert usage in text
