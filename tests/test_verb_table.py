"""The client side's one verb table (chat_cli/verbs.py) against the realm's command table: every
protocol verb the realm runs has an entry, a ChatClient method that exists and a terminal
command the terminal's parser accepts and dispatches; no entry names a verb the realm does not
know; and the terminal and the GUI take their verb knowledge from that table."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from chat_cli import ChatClient, verbs
from chat_cli import terminal as term
from chat_cli.terminal import Terminal, UserCommand, parse_user_line
from realm_server.commands import Commands
from realmchat.codes import Code
from realmchat.errors import ChatError, InvalidArgument

ROOT = Path(__file__).resolve().parent.parent


def realm_verbs() -> set[str]:
    """The verbs the realm's command table runs (its handlers, read from the table itself)."""
    table = Commands(SimpleNamespace(upstream=None)).table  # type: ignore[arg-type]
    assert table, "the realm's command table is empty"
    return set(table)


# A valid argument for each word of a usage line, so that every command can be typed once.
EXAMPLE_WORDS = {"USER": "bob", "TO": "bob", "PASS": "pw-secret1", "GROUP": "crew", "MESSAGE": "hi there",
                 "TEXT": "hi there", "ID": "12", "EMOJI": "👍", "PEER": "bob", "KEY": "k3y", "N": "5",
                 "PATTERN": "cr*", "PATH": "~/report.pdf", "QUERY": "lunch", "REASON": "off topic",
                 "NAME": "a.txt", "SIZE": "3"}


def example_line(v: verbs.Verb) -> str:
    """The command typed with its required arguments, from its usage line."""
    words = [v.command]
    for word in re.sub(r"\[[^]]*\]", "", v.usage).split()[1:]:  # the optional parts left out
        first = word.split("|")[0]
        words.append(EXAMPLE_WORDS.get(first, first))
    return " ".join(words)


def test_every_realm_verb_has_an_entry_a_client_method_and_a_terminal_command() -> None:
    realm = realm_verbs()
    handlers = Terminal(ChatClient(), download_dir=Path("."), json_mode=True, out=lambda _: None)._handlers
    missing = sorted(realm - set(verbs.BY_WIRE))
    assert not missing, f"protocol verbs without an entry in chat_cli's verb table: {missing}"
    for wire in sorted(realm):
        entry = verbs.BY_WIRE[wire]
        assert entry.client_methods, f"{wire}: no ChatClient method"
        for name in entry.client_methods:
            method = getattr(ChatClient, name, None)
            assert method is not None and inspect.iscoroutinefunction(method), f"{wire}: ChatClient.{name}"
        line = example_line(entry)
        cmd = parse_user_line(line)
        assert cmd is not None and cmd.verb == entry.command, f"{wire}: the terminal does not take {line!r}"
        assert parse_user_line("/" + line) == cmd, f"{wire}: the terminal does not take '/{line}'"
        assert cmd.verb in handlers, f"{wire}: the terminal has no handler for {cmd.verb}"
        assert entry.command in term.VERBS, f"{wire}: not offered by tab completion"
        assert entry.usage in term.help_text(), f"{wire}: not in the terminal's help"


def test_no_entry_names_a_verb_the_realm_does_not_know() -> None:
    realm = realm_verbs()
    unknown = sorted(v.wire for v in verbs.VERBS if v.wire is not None and v.wire not in realm)
    assert not unknown, f"chat_cli's verb table names verbs the realm does not run: {unknown}"
    assert len(verbs.BY_WIRE) == len([v for v in verbs.VERBS if v.wire is not None]), "a verb listed twice"


def test_terminal_only_commands_are_slash_commands_with_handlers() -> None:
    only = [v for v in verbs.VERBS if v.terminal_only]
    assert {v.command for v in only} == {"/query", "/join", "/msg", "/me"}
    for v in only:
        assert v.command.startswith("/") and v.method is None
        with pytest.raises(ChatError) as e:  # typed without its slash, it is no command
            parse_user_line(v.command.removeprefix("/") + " bob")
        assert e.value.code is Code.UNIMPLEMENTED
        with pytest.raises(ChatError):  # and it sends nothing of its own
            v.line("bob")


def test_the_terminal_keeps_no_verb_table_of_its_own() -> None:
    """Its parser, dispatch, help and completion come from chat_cli/verbs.py: no spec class, no
    per-verb dict of handlers or usages in terminal.py."""
    source = (ROOT / "chat_cli" / "terminal.py").read_text()
    assert parse_user_line is verbs.parse_user_line
    assert not re.search(r"class \w*Spec\b", source), "terminal.py defines a command spec of its own"
    assert not re.search(r"^\s+\"(sendprivate|kick|history)\": self\._", source, re.M), "terminal.py lists handlers"
    assert "from realmchat.textproto import COMMANDS" not in source
    assert set(term.SLASH_VERBS) >= {v.command for v in verbs.VERBS if v.terminal_only}


def test_the_client_builds_its_lines_with_the_table() -> None:
    assert verbs.verb("kick").line("crew", "bob", "off topic") == "kick crew bob off topic"
    assert verbs.verb("kick").line("crew", "bob", "  ") == "kick crew bob"
    assert verbs.verb("history").line("bob", 20, 812) == "history bob 20 before 812"
    assert verbs.verb("search").line("lunch", "bob") == "search @bob lunch"
    assert verbs.verb("groupkey").line("crew", verbs.CLEAR) == "groupkey crew -"
    with pytest.raises(InvalidArgument, match="one word"):
        verbs.verb("invite").line("crew", "bob smith")
    with pytest.raises(InvalidArgument, match="single line"):
        verbs.verb("sendprivate").line("bob", "hi\nauth mallory pw")


def test_the_gui_controller_keeps_no_list_of_verbs() -> None:
    """It checks what the table knows (a key is one protocol word) through the table."""
    source = (ROOT / "gui" / "controller.py").read_text()
    assert "from chat_cli.verbs import" in source
    assert "isspace()" not in source, "the controller re-implements an argument rule of the verb table"
    assert not re.search(r"\b(COMMANDS|VERBS)\s*[:=]", source)


@pytest.mark.parametrize(("line", "expected"), [
    ("kick crew bob off topic", UserCommand("kick", ("crew", "bob", "off topic"))),
    ("/react #12 👍", UserCommand("react", ("12", "👍"))),
    ("exit", UserCommand("quit", ())),
])
def test_the_terminal_parses_through_the_table(line: str, expected: UserCommand) -> None:
    assert parse_user_line(line) == expected
