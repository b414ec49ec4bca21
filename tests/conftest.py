"""Fixtures: real main + realm processes on port 0 with a temp data dir."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from .gui_driver import Browser
from .pg import PgCluster, PgSetupError
from .stack import PYTHON, ServerProcess, Stack, start_stack

_names = itertools.count(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One main and realms alpha and beta, shared by a test module (use unique user names)."""
    s = start_stack(tmp_path_factory.mktemp("data"))
    yield s
    s.stop()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own for tests that kill or restart servers."""
    s = start_stack(tmp_path / "data")
    yield s
    s.stop()


@pytest.fixture
def uname() -> Callable[[str], str]:
    """Unique user/group names across a test session: uname('alice') -> 'alice_12_<pid>'."""
    pid = os.getpid() % 10000

    def make(prefix: str = "u") -> str:
        return f"{prefix}{next(_names)}_{pid}"

    return make


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL (tests/pg.py) for the whole session, started on first use. If it
    cannot start, every test that needs it fails with the reason: never a silent skip."""
    cluster: PgCluster | None = None
    error = ""
    try:
        cluster = PgCluster()
        cluster.start()
    except PgSetupError as exc:
        error = str(exc)
    if cluster is None or error:
        if cluster is not None:
            cluster.stop()
        # Outside the except block: the report shows the reason alone, without a traceback.
        pytest.fail(f"PostgreSQL for the tests could not be started: {error}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database per test (postgresql://postgres@127.0.0.1:PORT/NAME); for one
    shared by a module or by several mains, call pg_cluster.create_database() yourself."""
    return pg_cluster.create_database()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs of the test's own: free space nobody else changes."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


# The web GUI and a browser on it, for the browser tests (tests/gui_driver.py drives it).
@pytest.fixture(scope="module")
def gui_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The web GUI on a free port (it binds port 0 itself and prints `listening on HOST:PORT`),
    proposing realm alpha on its connect screen."""
    host, port = stack.realm("alpha")
    tmp = tmp_path_factory.mktemp("gui")
    proc = ServerProcess("gui", [PYTHON, "-m", "gui", "--web", "--host", "127.0.0.1", "--port", "0",
                                 "--realm", f"{host}:{port}", "--downloads", str(tmp / "downloads"),
                                 "--upload-dir", str(tmp / "uploads")],
                         env={"FLET_WEB_NO_CDN": "1"})
    yield proc
    code = proc.terminate()
    assert code == 0, f"the GUI did not shut down cleanly on SIGTERM (exit {code}):\n{proc.log()}"


@pytest.fixture
async def browser(gui_server: ServerProcess, tmp_path: Path) -> AsyncIterator[Browser]:
    """A fresh headless chromium (fresh profile) on the GUI's page. Downloads land in
    tmp_path/browser-downloads; file dialogs are intercepted (answered with choose_file)."""
    downloads = tmp_path / "browser-downloads"
    downloads.mkdir()

    async def setup(b: Browser) -> None:
        await b.allow_downloads(downloads)
        await b.intercept_file_chooser()

    b = await Browser.launch(f"http://{gui_server.addr}/", setup=setup)
    yield b
    await b.close()
