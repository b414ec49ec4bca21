"""The pure line parser, as tables of cases (no sockets)."""

from __future__ import annotations

import pytest

from realmchat import textproto as tp
from realmchat.codes import Code
from realmchat.errors import ChatError

OK_CASES = [
    ("register alice pw", "register", ("alice", "pw"), None),
    ("REGISTER alice pw", "register", ("alice", "pw"), None),
    ("auth alice pw\r", "auth", ("alice", "pw"), None),
    ("  auth   alice   pw  ", "auth", ("alice", "pw"), None),
    ("sendprivate bob halo apa kabar", "sendprivate", ("bob", "halo apa kabar"), None),
    ("sendprivate bob  two  spaces ", "sendprivate", ("bob", " two  spaces "), None),
    ("sendgroup g hi", "sendgroup", ("g", "hi"), None),
    ("inbox", "inbox", (), None),
    ("inboxgroup g", "inboxgroup", ("g",), None),
    ("creategroup g", "creategroup", ("g",), None),
    ("joingroup g", "joingroup", ("g",), None),
    ("leavegroup g", "leavegroup", ("g",), None),
    ("creategroup g private", "creategroup", ("g", "private"), None),
    ("creategroup g PRIVATE", "creategroup", ("g", "private"), None),
    ("joingroup g s3cret", "joingroup", ("g", "s3cret"), None),
    ("invite g bob", "invite", ("g", "bob"), None),
    ("kick g bob", "kick", ("g", "bob"), None),
    ("kick  g  bob  too loud today", "kick", ("g", "bob", " too loud today"), None),
    ("ban g bob spam", "ban", ("g", "bob", "spam"), None),
    ("unban g bob", "unban", ("g", "bob"), None),
    ("role g bob Admin", "role", ("g", "bob", "admin"), None),
    ("role g bob member", "role", ("g", "bob", "member"), None),
    ("members g", "members", ("g",), None),
    ("topic g", "topic", ("g",), None),
    ("topic g   ", "topic", ("g",), None),
    ("topic g be kind, no spam", "topic", ("g", "be kind, no spam"), None),
    ("groupkey g -", "groupkey", ("g", "-"), None),
    ("deletegroup g", "deletegroup", ("g",), None),
    ("listgroups", "listgroups", (), None),
    ("listgroups te*m", "listgroups", ("te*m",), None),
    ("sendfile #g notes.txt 3", "sendfile", ("#g", "notes.txt", "3"), 3),
    ("sendfile bob a.txt 12", "sendfile", ("bob", "a.txt", "12"), 12),
    ("sendfile bob my report.pdf 0", "sendfile", ("bob", "my report.pdf", "0"), 0),
    ("receivefile", "receivefile", (), None),
    ("receivefile 7", "receivefile", ("7",), None),
    ("history bob", "history", ("bob",), None),
    ("history #g 20", "history", ("#g", "20"), None),
    ("who", "who", (), None),
    ("groups", "groups", (), None),
    ("help", "help", (), None),
    ("ping", "ping", (), None),
    ("logout", "logout", (), None),
    ("quit", "quit", (), None),
]


@pytest.mark.parametrize(("line", "verb", "args", "payload"), OK_CASES)
def test_parses(line: str, verb: str, args: tuple[str, ...], payload: int | None) -> None:
    cmd = tp.parse_line(line)
    assert cmd is not None
    assert (cmd.verb, cmd.args, cmd.payload_size) == (verb, args, payload)


@pytest.mark.parametrize("line", ["", "   ", "\r", "\t"])
def test_blank_lines_are_ignored(line: str) -> None:
    assert tp.parse_line(line) is None


ERROR_CASES = [
    ("frobnicate", Code.UNIMPLEMENTED),
    ("register", Code.INVALID_ARGUMENT),
    ("register alice", Code.INVALID_ARGUMENT),
    ("register alice pw extra", Code.INVALID_ARGUMENT),
    ("auth a b c", Code.INVALID_ARGUMENT),
    ("sendprivate", Code.INVALID_ARGUMENT),
    ("sendprivate bob", Code.INVALID_ARGUMENT),
    ("sendprivate bob    ", Code.INVALID_ARGUMENT),
    ("sendgroup g", Code.INVALID_ARGUMENT),
    ("inbox now", Code.INVALID_ARGUMENT),
    ("creategroup", Code.INVALID_ARGUMENT),
    ("creategroup a b", Code.INVALID_ARGUMENT),
    ("creategroup a private x", Code.INVALID_ARGUMENT),
    ("joingroup g key extra", Code.INVALID_ARGUMENT),
    ("invite g", Code.INVALID_ARGUMENT),
    ("kick g", Code.INVALID_ARGUMENT),
    ("ban", Code.INVALID_ARGUMENT),
    ("unban g bob now", Code.INVALID_ARGUMENT),
    ("role g bob owner", Code.INVALID_ARGUMENT),
    ("role g bob", Code.INVALID_ARGUMENT),
    ("members", Code.INVALID_ARGUMENT),
    ("topic", Code.INVALID_ARGUMENT),
    ("groupkey g", Code.INVALID_ARGUMENT),
    ("groupkey g two words", Code.INVALID_ARGUMENT),
    ("deletegroup", Code.INVALID_ARGUMENT),
    ("listgroups a b", Code.INVALID_ARGUMENT),
    ("sendfile bob ~/a.pdf", Code.INVALID_ARGUMENT),
    ("sendfile bob", Code.INVALID_ARGUMENT),
    ("sendfile bob a.txt -5", Code.INVALID_ARGUMENT),
    ("sendfile bob a.txt 1e3", Code.INVALID_ARGUMENT),
    ("sendfile bob a.txt ١٢", Code.INVALID_ARGUMENT),
    ("receivefile x", Code.INVALID_ARGUMENT),
    ("receivefile 1 2", Code.INVALID_ARGUMENT),
    ("history", Code.INVALID_ARGUMENT),
    ("history bob 0", Code.INVALID_ARGUMENT),
    ("history bob lots", Code.INVALID_ARGUMENT),
    ("history bob 5 6", Code.INVALID_ARGUMENT),
    ("ping pong", Code.INVALID_ARGUMENT),
]


@pytest.mark.parametrize(("line", "code"), ERROR_CASES)
def test_rejects(line: str, code: Code) -> None:
    with pytest.raises(ChatError) as info:
        tp.parse_line(line)
    assert info.value.code is code
    assert info.value.message


def test_two_argument_sendfile_shows_three_argument_form() -> None:
    with pytest.raises(ChatError) as info:
        tp.parse_line("sendfile bob ~/laporan.pdf")
    assert "sendfile TO NAME SIZE" in info.value.message


@pytest.mark.parametrize(("name", "base"), [
    ("a.txt", "a.txt"), ("/etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
    ("dir/sub/x y.pdf", "x y.pdf"),
])
def test_file_names_lose_their_directories(name: str, base: str) -> None:
    assert tp.base_file_name(name) == base


@pytest.mark.parametrize("name", ["..", "a/..", "", "x/", "bad\x1bname"])
def test_bad_file_names(name: str) -> None:
    with pytest.raises(ChatError):
        tp.base_file_name(name)


def test_encoded_lines_cannot_be_forged() -> None:
    line = tp.event("private", text="hi\n{\"status\":\"OK\"}\r\x1b[31m\x00")
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert b"\x1b" not in line and b"\x00" not in line and b"\r" not in line
    assert tp.decode(line)["text"] == "hi\n{\"status\":\"OK\"}\r\x1b[31m\x00"


def test_screen_acting_characters_are_escaped() -> None:
    text = "del\x7f csi\x9b31m ls\u2028 rlo\u202e lri\u2066 alm\u061c ok é"
    line = tp.event("private", text=text)
    assert tp.decode(line)["text"] == text
    raw = line.decode()
    assert not any(ch == "\x7f" or "\x80" <= ch <= "\x9f" or ch in "\u2028\u202e\u2066\u061c" for ch in raw)
