"""A throwaway PostgreSQL cluster for tests and benchmarks, from Debian's `postgresql` package
(scripts/apt-packages-test.txt): initdb into a temp dir owned by the `postgres` user, a free port on
127.0.0.1 with trust auth, the unix socket inside the temp dir, stopped and removed at the end.

Stdlib only (no asyncpg), so conftest can import it and a missing PostgreSQL shows up as a clear
failure of the tests that need it, not as an import error of every test module.

    with PgCluster() as pg:
        url = pg.create_database()   # postgresql://postgres@127.0.0.1:PORT/rc_1_PID
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

SUPERUSER = "postgres"
_db_names = itertools.count(1)


class PgSetupError(RuntimeError):
    """PostgreSQL could not be started; the message says why and what to do."""


def find_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin that has initdb, pg_ctl and psql."""
    env = os.environ.get("REALMCHAT_PG_BIN")  # a non-Debian install can point here

    def major(p: str) -> int:
        v = Path(p).parent.name
        return int(v) if v.isdigit() else 0

    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for c in candidates:
        d = Path(c)
        if all((d / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return d
    raise PgSetupError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                       "run `make test` (it apt-installs `postgresql` from scripts/apt-packages-test.txt) "
                       "or set REALMCHAT_PG_BIN to a directory holding initdb, pg_ctl and psql")


def free_port() -> int:
    # Bind to port 0 and let the kernel pick; the small race until postgres binds it is retried.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One postgres server on a free port. fsync=False (the default) makes tests fast: the
    cluster is thrown away, and durability is not what these tests check."""

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync
        self.bin = find_bin_dir()
        self.port = 0
        self.tmp: Path | None = None
        self._started = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        # initdb and postgres refuse to run as root: as root we run them as `postgres`.
        self._as_postgres = os.geteuid() == 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", SUPERUSER, "--", *argv] if self._as_postgres else list(argv)

    def _run(self, what: str, argv: list[str], timeout: float = 120) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgSetupError(f"{what} failed: {argv}: {exc}{self._log_tail()}") from exc
        if p.returncode != 0:
            raise PgSetupError(f"{what} failed (exit {p.returncode}): {' '.join(argv)}\n"
                               f"{p.stdout}{p.stderr}{self._log_tail()}")
        return p.stdout

    def _log_tail(self) -> str:
        if self.tmp is None:
            return ""
        log = self.tmp / "postgres.log"
        try:
            return "\n--- postgres.log ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def start(self) -> PgCluster:
        # Not pytest's tmp_path: its parent is root-only (0700), which `postgres` cannot enter.
        self.tmp = Path(tempfile.mkdtemp(prefix="realmchat-pg-", dir="/tmp" if self._as_postgres else None))
        if self._as_postgres:
            try:
                pw = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise PgSetupError("no `postgres` user: install Debian's postgresql package (`make test`)") from None
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        data = self.tmp / "data"
        self._run("initdb", self._cmd(str(self.bin / "initdb"), "-D", str(data), "-U", SUPERUSER,
                                      "--auth-local=trust", "--auth-host=trust", "-E", "UTF8",
                                      "--locale=C.UTF-8", "--no-sync"))
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.tmp}'",
            "max_connections = 200",  # several mains with a pool each, plus the storage suite
            "shared_buffers = 32MB",
            f"fsync = {'on' if self.fsync else 'off'}",
            f"synchronous_commit = {'on' if self.fsync else 'off'}",
            f"full_page_writes = {'on' if self.fsync else 'off'}",
        ]
        with (data / "postgresql.conf").open("a") as f:
            f.write("\n# realmchat test cluster\n" + "\n".join(conf) + "\n")
        for attempt in range(5):
            self.port = free_port()
            try:
                self._run("pg_ctl start", self._cmd(str(self.bin / "pg_ctl"), "-D", str(data),
                                                    "-l", str(self.tmp / "postgres.log"), "-w", "-t", "60",
                                                    "-o", f"-p {self.port}", "start"))
            except PgSetupError:
                if attempt == 4:
                    raise
                continue  # most likely the port was taken in between: pick another
            self._started = True
            self._start_watchdog(data)
            return self
        raise AssertionError("unreachable")

    def _start_watchdog(self, data: Path) -> None:
        """A detached shell that stops the cluster and removes its directory once this process
        is gone: a test run killed by a timeout or kill -9 runs no finalizer, and a leaked
        postgres would hold memory and a port on a shared machine until reboot."""
        assert self.tmp is not None
        stop = self._cmd(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        script = ('owner=$1; dir=$2; shift 2; while kill -0 "$owner" 2>/dev/null; do sleep 1; done; '
                  '"$@" >/dev/null 2>&1; rm -rf "$dir"')
        self._watchdog = subprocess.Popen(["sh", "-c", script, "pg-watchdog", str(os.getpid()), str(self.tmp), *stop],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self.tmp is None:
            return
        if self._started:
            # immediate: nothing in a throwaway cluster needs a clean shutdown checkpoint.
            with contextlib.suppress(PgSetupError):
                self._run("pg_ctl stop", self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.tmp / "data"),
                                                   "-m", "immediate", "-w", "stop"), timeout=60)
            self._started = False
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def require_password(self, dbname: str, user: str) -> None:
        """Connections of `user` to `dbname` over TCP must give the role's password (SCRAM), as
        on a deployed server; everyone else keeps trust auth."""
        assert self.tmp is not None
        hba = self.tmp / "data" / "pg_hba.conf"
        rule = f"host {dbname} {user} 127.0.0.1/32 scram-sha-256\n"
        self._run("pg_hba.conf", self._cmd("sh", "-c", f"printf '%s' '{rule}' | cat - {hba} > {hba}.new "
                                                 f"&& mv {hba}.new {hba}"))
        self._run("pg_ctl reload", self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.tmp / "data"), "reload"))

    # ---- databases ---------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Runs SQL as the superuser over TCP (trust auth), returns unaligned tuples-only output."""
        return self._run("psql", [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                  "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", dbname,
                                  "-c", sql], timeout=60)

    def create_database(self, name: str = "") -> str:
        """A new empty database; returns its URL."""
        name = name or f"rc_{next(_db_names)}_{os.getpid()}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)
