"""`make run`'s script (scripts/run.sh) as a user meets it: a busy port is one line naming the
make variable and nothing starts; a main that exits is started again while the realm keeps its
users logged in; when the realm or the GUI dies the others stop and the script says which. And
the setup that `make run` uses installs no database server and no browser."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from .stack import ROOT
from .textclient import TextClient, until_ok

RUN = str(ROOT / "scripts" / "run.sh")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_a_busy_port_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    main_port, gui_port = free_ports(2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        realm_port = busy.getsockname()[1]
        r = subprocess.run([RUN, str(tmp_path / "data"), str(main_port), str(realm_port), "alpha", str(gui_port)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1
    assert r.stdout == "", r.stdout  # no banner, no server output: nothing started
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {realm_port}" in lines[0] and "REALM_PORT=" in lines[0], r.stderr
    assert not (tmp_path / "data").exists()


def start_run(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int], list[str]]:
    """run.sh started and its banner seen: (the script, its ports, what it printed so far)."""
    ports = free_ports(3)
    proc = subprocess.Popen([RUN, str(tmp_path / "data"), str(ports[0]), str(ports[1]), "alpha", str(ports[2])],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            start_new_session=True)
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + 90
    while not any(line.startswith("realmchat: main on") for line in out):
        assert time.monotonic() < deadline and proc.poll() is None, "\n".join(out)
        out.append(proc.stdout.readline().rstrip("\n"))
    return proc, ports, out


def read_until(proc: subprocess.Popen[str], out: list[str], text: str, within: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + within
    while not any(text in line for line in out):
        assert time.monotonic() < deadline and proc.poll() is None, "\n".join(out)
        out.append(proc.stdout.readline().rstrip("\n"))


def parts_of(proc: subprocess.Popen[str]) -> dict[int, str]:
    return {c.pid: " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)}


async def test_a_main_that_exits_is_started_again_and_nobody_is_logged_out(tmp_path: Path) -> None:
    proc, (_, realm_port, _), out = start_run(tmp_path)
    try:
        a, b = await TextClient.connect("127.0.0.1", realm_port), await TextClient.connect("127.0.0.1", realm_port)
        for c, user in ((a, "runalice"), (b, "runbob")):  # the realm's link to main may still be coming up
            await until_ok(c, f"register {user} pw-secret")
            await c.ok(f"auth {user} pw-secret")
        before = parts_of(proc)
        (main,) = [pid for pid, cmd in before.items() if "main_server" in cmd]
        os.kill(main, signal.SIGKILL)
        await asyncio.to_thread(read_until, proc, out, "the main server exited (code 137); starting it again")
        # The same connection, no new login: the realm resumed the session on the new main.
        sent = await until_ok(a, "sendprivate runbob still here", within=30)
        assert (await b.event())["id"] == sent["id"]
        for _ in range(100):  # presence comes back as the realm attaches its sessions again
            online = (await a.ok("who"))["online"]
            if len(online) == 2:
                break
            await asyncio.sleep(0.2)
        assert {u["user"] for u in online} == {"runalice", "runbob"}, online
        after = parts_of(proc)
        kept = [pid for pid, cmd in before.items() if "main_server" not in cmd and "-m " in cmd]
        assert kept and all(pid in after for pid in kept), (before, after)  # realm and GUI: the same processes
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_when_the_realm_dies_the_others_stop_with_a_reason(tmp_path: Path) -> None:
    proc, _, _ = start_run(tmp_path)
    try:
        parts = parts_of(proc)
        realm = [pid for pid, cmd in parts.items() if "realm_server" in cmd]
        assert len(realm) == 1 and any("main_server" in c for c in parts.values()) and \
            any("-m gui" in c for c in parts.values()), parts
        os.kill(realm[0], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert "the realm server exited (code 137); stopping the others" in rest, rest
        for pid in parts:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, parts[pid]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_make_run_installs_no_database_server_and_no_browser() -> None:
    def packages(name: str) -> set[str]:
        text = (ROOT / "scripts" / name).read_text()
        return {w for line in text.splitlines() if (w := line.split("#", 1)[0].strip())}

    run, test = packages("apt-packages-run.txt"), packages("apt-packages-test.txt")
    assert not {p for p in run if p.startswith(("postgresql", "chromium", "firefox"))}, run
    assert {"postgresql", "chromium"} <= test
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    # The test list is read only with --test; `make run` calls setup without it.
    assert 'lists+=(scripts/apt-packages-test.txt)' in setup and '[ "$mode" = test ] && lists+=' in setup
    makefile = (ROOT / "Makefile").read_text()
    assert "run: setup\n" in makefile and "test: setup-test\n" in makefile
