"""irctest's server controller for realmchat (dev tooling; docs/IRC.md, "irctest").

For each test case: a temp dir, a real main (`python -m main_server`, SQLite) and a realm
(`python -m realm_server`) with its IRC listener, both on free ports, and the test-only proxy of
scripts/irctest_proxy.py on the port irctest connects to, which logs NICK/USER-only connections
in to their nick's account. registerUser creates the account on the realm's text port.

Run from an irctest checkout, with this directory on PYTHONPATH:

    PYTHONPATH=/path/to/realmchat/scripts .venv/bin/python -m pytest \
        --controller irctest_controller irctest/server_tests/cap.py

The servers run on the project's interpreter ($REALMCHAT_PYTHON, else the project's
.venv/bin/python); this module itself needs only irctest and the standard library.
"""

from __future__ import annotations

import atexit
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from irctest import patma
from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.cases import BaseServerTestCase
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities, OptionalBehaviors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from irctest_proxy import Accounts, ProxyThread, register_account

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("REALMCHAT_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
REALM = "My.Little.Server"  # the server name irctest expects in 004, PONG, 312
START_TIMEOUT = 30.0

# Generous limits: irctest opens many connections from one address and logs in often.
MAIN_FLAGS = (
    "--argon2-time-cost",
    "1",
    "--argon2-memory-kib",
    "8192",
    "--min-password-length",
    "1",
    "--login-max-failures",
    "0",
    "--peer-login-attempts",
    "0",
    "--hash-queue",
    "0",
)
REALM_FLAGS = (
    "--max-conns-per-ip",
    "1000",
    "--login-attempts-per-ip",
    "0",
    "--cmd-rate",
    "1000",
    "--cmd-burst",
    "1000",
    "--byte-rate",
    "10000000",
    "--byte-burst",
    "10000000",
)


_running: set[subprocess.Popen] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Servers of a case irctest left without tearDown (an interrupted run)."""
    for proc in _running:
        if proc.poll() is None:
            proc.kill()


class RealmchatController(BaseServerController, DirectoryBasedController):
    software_name = "realmchat"
    supported_sasl_mechanisms = {"PLAIN"}
    supports_sts = False
    capabilities = frozenset(
        (
            Capabilities.ACCOUNT_TAG,
            Capabilities.AWAY_NOTIFY,
            Capabilities.BATCH,
            Capabilities.ECHO_MESSAGE,
            Capabilities.EXTENDED_JOIN,
            Capabilities.LABELED_RESPONSE,
            Capabilities.MESSAGE_REDACTION,
            Capabilities.MESSAGE_TAGS,
            Capabilities.MULTI_PREFIX,
            Capabilities.READ_MARKER,
            Capabilities.SERVER_TIME,
        )
    )
    optional_behaviors = frozenset((OptionalBehaviors.MULTI_JOIN, OptionalBehaviors.MULTI_PRIVMSG))
    isupport = {
        "CASEMAPPING": "ascii",
        "PREFIX": "(qo)~@",
        "TARGMAX": patma.ANYSTR,
        "WHOX": None,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.main: subprocess.Popen | None = None
        self.proxy: ProxyThread | None = None
        self.irc: tuple[str, int] = ("127.0.0.1", 0)
        self.text: tuple[str, int] = ("127.0.0.1", 0)
        self.accounts: Accounts | None = None

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None,
        websocket_hostname: str | None = None,
        websocket_port: int | None = None,
    ) -> None:
        if password is not None:
            raise NotImplementedByController("server password (PASS logs in to an account)")
        if ssl:
            raise NotImplementedByController("TLS")
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        self.create_config()
        assert self.directory
        self.port = port
        try:
            self._start_servers(hostname, port)
        except BaseException:
            self.kill_proc()  # irctest skips tearDown when setUp fails
            raise

    def _start_servers(self, hostname: str, port: int) -> None:
        assert self.directory
        env = {**os.environ, "REALMCHAT_REALM_SECRET": secrets.token_urlsafe(24), "PYTHONUNBUFFERED": "1"}
        _, main_port = self.get_hostname_and_port()
        _, text_port = self.get_hostname_and_port()
        _, irc_port = self.get_hostname_and_port()
        self.main = self._start(
            "main",
            [
                PYTHON,
                "-m",
                "main_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(main_port),
                "--data-dir",
                str(self.directory / "data"),
                *MAIN_FLAGS,
            ],
            env,
        )
        self._wait_for("main", "listening on")
        self.proc = self._start(
            "realm",
            [
                PYTHON,
                "-m",
                "realm_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(text_port),
                "--irc-port",
                str(irc_port),
                "--main",
                f"127.0.0.1:{main_port}",
                "--name",
                REALM,
                *REALM_FLAGS,
            ],
            env,
        )
        self._wait_for("realm", "IRC listening on")
        self.irc = ("127.0.0.1", irc_port)
        self.text = ("127.0.0.1", text_port)
        self.accounts = Accounts(self.directory / "accounts.json")
        self.proxy = ProxyThread((hostname, port), self.irc, self.text, self.accounts)

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        assert self.directory
        log = (self.directory / f"{name}.log").open("w")
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _running.add(proc)
        return proc

    def _wait_for(self, name: str, text: str) -> None:
        assert self.directory
        path = self.directory / f"{name}.log"
        deadline = time.monotonic() + START_TIMEOUT
        while text not in path.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{path.read_text()}")
            time.sleep(0.05)

    def wait_for_services(self) -> None:
        pass  # no services: accounts are the realm's own

    def registerUser(self, case: BaseServerTestCase, username: str, password: str | None = None) -> None:
        assert password and self.accounts
        if not register_account(*self.text, username, password):
            raise RuntimeError(f"could not register {username}")
        self.accounts.remember(username, password)

    def kill_proc(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.proc is not None:
            _running.discard(self.proc)
            super().kill_proc()
        if self.main is not None:
            _running.discard(self.main)
            self.main.terminate()
            try:
                self.main.wait(10)
            except subprocess.TimeoutExpired:
                self.main.kill()
                self.main.wait(10)
            self.main = None

    def kill(self) -> None:
        self.kill_proc()
        super().kill()


def get_irctest_controller_class() -> type[RealmchatController]:
    return RealmchatController
