"""Starts the real servers as subprocesses on port 0 with a temp data dir, the way an operator
would (`python -m main_server ...`, `python -m realm_server ...`). Used by every test module and
by the benchmark smoke test."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from realmchat.realmauth import ENV_SECRET

ROOT = Path(__file__).resolve().parent.parent
# Every main and realm the tests start shares one realm credential (through the environment).
os.environ.setdefault(ENV_SECRET, secrets.token_urlsafe(24))
# No IRC listener unless a test asks for one (--irc-port): realms of parallel tests share the host.
os.environ.setdefault("REALMCHAT_REALM_IRC_PORT", "0")
PYTHON = sys.executable
_LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    """One server subprocess; `addr` is known once it printed its 'listening on HOST:PORT' line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.name = name
        self.argv = argv
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self.output: deque[str] = deque(maxlen=2000)
        self.host = ""
        self.port = 0
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                if not ready.is_set():
                    m = _LISTEN_RE.search(line)
                    if m:
                        self.host, self.port = m.group(1), int(m.group(2))
                        ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True, name=f"pump-{name}").start()
        if not ready.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError(f"{name} did not start: {argv}\n" + "\n".join(self.output))

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9 and wait."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown); returns the exit code."""
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return "\n".join(self.output)


def start_main(data_dir: Path, port: int = 0, *extra: str, env: dict[str, str] | None = None
               ) -> ServerProcess:
    return ServerProcess("main", [PYTHON, "-m", "main_server", "--host", "127.0.0.1", "--port", str(port),
                                  "--data-dir", str(data_dir), *extra], env=env)


def start_realm(name: str, main_addr: str, port: int = 0, *extra: str,
                env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(f"realm-{name}", [PYTHON, "-m", "realm_server", "--host", "127.0.0.1",
                                           "--port", str(port), "--main", main_addr, "--name", name,
                                           *extra], env=env)


@dataclass
class Stack:
    """One main server and named realms, all real processes."""

    data_dir: Path
    main: ServerProcess
    realms: dict[str, ServerProcess] = field(default_factory=dict)
    main_extra: tuple[str, ...] = ()

    def realm(self, name: str) -> tuple[str, int]:
        r = self.realms[name]
        return r.host, r.port

    def restart_main(self, kill: bool = True) -> None:
        """kill -9 (or SIGTERM) the main server and start it again on the same port and data."""
        port = self.main.port
        if kill:
            self.main.kill()
        else:
            self.main.terminate()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.main = start_main(self.data_dir, port, *self.main_extra)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        for p in [*self.realms.values(), self.main]:
            if p.proc.poll() is None:
                p.signal(signal.SIGTERM)
        for p in [*self.realms.values(), self.main]:
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_stack(data_dir: Path, realms: tuple[str, ...] = ("alpha", "beta"),
                main_extra: tuple[str, ...] = (), realm_extra: tuple[str, ...] = ()) -> Stack:
    main = start_main(data_dir, 0, *main_extra)
    stack = Stack(data_dir=data_dir, main=main, main_extra=main_extra)
    try:
        for name in realms:
            stack.realms[name] = start_realm(name, main.addr, 0, *realm_extra)
    except Exception:
        stack.stop()
        raise
    return stack
