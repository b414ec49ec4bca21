"""A test-only proxy in front of a realm's IRC port, for irctest (scripts/irctest_controller.py).

Most irctest cases register with NICK and USER alone and expect 001; on a realm every IRC
connection logs in to an account. The proxy passes every line through unchanged, except that
when a connection is about to finish registration (NICK, USER and any CAP negotiation done)
without having logged in (no PASS of its own, no 900 from SASL, no REGISTER SUCCESS), it makes
sure the nick's account exists (`register` on the realm's text port) and sends
`PASS nick:password` just before the line that completes registration. The product itself keeps
refusing password-less logins. Standard library only: it runs inside irctest's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PASSWORD = "irctest-pw-7k2"


def command_of(line: bytes) -> tuple[str, list[str]]:
    """The command (upper case) and parameters of one IRC line, tags and source dropped."""
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if text.startswith("@"):
        text = text.partition(" ")[2]
    if text.startswith(":"):
        text = text.partition(" ")[2]
    head, sep, trailing = text.partition(" :")
    words = head.split()
    if not words:
        return "", []
    return words[0].upper(), words[1:] + ([trailing] if sep else [])


@dataclass
class Registration:
    """What the proxy knows of one connection's registration, from the lines both ways."""

    nick: str = ""
    user_given: bool = False
    cap_pending: bool = False
    own_login: bool = False  # the client sent PASS, or SASL or REGISTER logged it in
    registered: bool = False
    injected: bool = False

    def client_line(self, line: bytes) -> str | None:
        """Notes a line from the client; the nick to log in as (PASS to send before this
        line) when the line completes a registration that has no login of its own."""
        command, params = command_of(line)
        if self.registered:
            return None
        if command == "NICK" and params:
            self.nick = params[0]
        elif command == "USER":
            self.user_given = True
        elif command == "PASS":
            self.own_login = True
        elif command == "CAP" and params:
            sub = params[0].upper()
            if sub in ("LS", "REQ"):
                self.cap_pending = True
            elif sub == "END":
                self.cap_pending = False
        completes = bool(self.nick) and self.user_given and not self.cap_pending
        if completes and not (self.own_login or self.injected):
            self.injected = True
            return self.nick
        return None

    def server_line(self, line: bytes) -> None:
        command, params = command_of(line)
        if command == "001":
            self.registered = True
        elif command == "900" or (command == "REGISTER" and params[:1] == ["SUCCESS"]):
            self.own_login = True


class Accounts:
    """Accounts and their passwords, in a JSON file shared with the controller's registerUser."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def password(self, nick: str) -> str | None:
        with self.lock:
            return self._load().get(nick.lower())

    def remember(self, nick: str, password: str) -> None:
        with self.lock:
            known = self._load()
            known[nick.lower()] = password
            self.path.write_text(json.dumps(known))

    def _load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}


def register_account(host: str, port: int, nick: str, password: str, timeout: float = 10.0) -> bool:
    """Creates the account on the realm's text port (`register USER PASS`: no 512-byte IRC line
    limit on the password); True if it exists afterwards."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # the hello event
        sock.sendall(f"register {nick} {password}\n".encode())
        while line := reader.readline():
            reply = json.loads(line)
            if "status" in reply:
                sock.sendall(b"quit\n")
                return reply["status"] == "OK" or reply.get("code") == "ALREADY_EXISTS"
    return False


class Proxy:
    """Listens on (host, port) and relays each connection to the realm's IRC port."""

    def __init__(self, upstream: tuple[str, int], text: tuple[str, int], accounts: Accounts) -> None:
        self.upstream = upstream  # the realm's IRC port
        self.text = text  # its text port, where accounts are made
        self.accounts = accounts

    async def login_for(self, nick: str) -> str | None:
        """The PASS line for nick, creating the account if needed; None if it cannot be."""
        known = self.accounts.password(nick)
        if known is not None:
            return f"PASS {nick}:{known}\r\n"
        ok = await asyncio.to_thread(register_account, *self.text, nick, DEFAULT_PASSWORD)
        if not ok:
            return None
        self.accounts.remember(nick, DEFAULT_PASSWORD)
        return f"PASS {nick}:{DEFAULT_PASSWORD}\r\n"

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # Cancelled when the proxy stops: the connection simply ends.
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay(client_r, client_w)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        except OSError:
            client_w.close()
            return
        reg = Registration()

        async def up() -> None:
            while line := await client_r.readline():
                nick = reg.client_line(line)
                if nick is not None and (pass_line := await self.login_for(nick)) is not None:
                    server_w.write(pass_line.encode())
                server_w.write(line)
                await server_w.drain()

        async def down() -> None:
            while line := await server_r.readline():
                reg.server_line(line)
                client_w.write(line)
                await client_w.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (server_w, client_w):
                with contextlib.suppress(Exception):
                    w.close()


class ProxyThread:
    """The proxy on its own event loop in a daemon thread (irctest itself is synchronous)."""

    def __init__(
        self, listen: tuple[str, int], upstream: tuple[str, int], text: tuple[str, int], accounts: Accounts
    ) -> None:
        self.proxy = Proxy(upstream, text, accounts)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: asyncio.Server | None = None
        self.thread = threading.Thread(target=self._run, args=(listen,), daemon=True, name="irctest-proxy")
        self.thread.start()
        if not self.ready.wait(10) or self.server is None:
            raise RuntimeError(f"the irctest proxy could not listen on {listen}")

    def _run(self, listen: tuple[str, int]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(asyncio.start_server(self.proxy.handle, *listen))
        finally:
            self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
