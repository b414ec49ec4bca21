"""CPU and memory of the processes under test (main, each realm) and of the generator, read
with psutil so that the generator's own cost is reported beside the servers' (it must not be the
bottleneck)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MB = 1024 * 1024


@dataclass
class Window:
    """CPU% (100 = one core) and RSS over one measured interval."""

    seconds: float
    cpu_pct: dict[str, float]
    rss_mb: dict[str, float]
    peak_rss_mb: dict[str, float]
    start_rss_mb: dict[str, float]
    threads: dict[str, dict[str, float]] = field(default_factory=dict)  # process -> thread name -> CPU%


_DUMP_THREAD = re.compile(r'^Thread (\d+) \([^)]*\): "(.*)"', re.M)


def python_thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from `py-spy dump` when py-spy is installed: CPython
    3.11 leaves every thread's comm at "python", so /proc alone cannot tell the event loop from
    the SQLite writer or the password-hash workers."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return {}
    try:
        out = subprocess.run([spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {int(tid): name for tid, name in _DUMP_THREAD.findall(out)}


def thread_cpu(pid: int, names: dict[int, str] | None = None) -> dict[str, float]:
    """CPU seconds per thread name: tells the event loop, the SQLite writer, gRPC's C-core
    threads (their comm, e.g. "event_engine") and hash workers apart, which the process total
    cannot (and py-spy, seeing Python frames only, cannot either)."""
    out: dict[str, float] = {}
    try:
        for t in psutil.Process(pid).threads():
            try:
                comm = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
            except OSError:
                continue
            name = (names or {}).get(t.id) or (f"{comm}:{t.id}" if comm == "python" else comm)
            out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    except psutil.Error:
        pass
    return out


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


class Meter:
    """Named groups of processes ("main", "alpha", "beta", "gen"); a background thread samples
    RSS so that the peak of a window is known (a file transfer's buffers come and go)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.groups: dict[str, list[psutil.Process]] = {}
        self.interval = interval
        self._peak: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="rss-sampler")
        self._thread.start()

    def set(self, name: str, pids: list[int]) -> None:
        with self._lock:
            self.groups[name] = [psutil.Process(p) for p in pids]

    def drop(self, name: str) -> None:
        with self._lock:
            self.groups.pop(name, None)

    def names(self) -> list[str]:
        return list(self.groups)

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in list(self.groups.items()):
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def rss_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in list(self.groups.items()):
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            out[name] = total / MB
        return out

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = self.rss_mb()
            with self._lock:
                for k, v in rss.items():
                    if v > self._peak.get(k, 0.0):
                        self._peak[k] = v

    def start(self, threads: bool = True) -> _Open:
        with self._lock:
            self._peak = {}
        thread_pids = {n: ps[0].pid for n, ps in self.groups.items() if n != "gen" and ps} if threads else {}
        names = {n: python_thread_names(p) for n, p in thread_pids.items()}
        return _Open(self, time.monotonic(), self.cpu_seconds(), self.rss_mb(),
                     {n: thread_cpu(p, names[n]) for n, p in thread_pids.items()}, thread_pids, names,
                     busy_cpu_seconds())

    def close(self) -> None:
        self._stop.set()


@dataclass
class _Open:
    meter: Meter
    t0: float
    cpu0: dict[str, float]
    rss0: dict[str, float]
    threads0: dict[str, dict[str, float]]
    thread_pids: dict[str, int]
    names: dict[str, dict[int, str]]
    busy0: float

    def stop(self) -> Window:
        m = self.meter
        dt = max(time.monotonic() - self.t0, 1e-9)
        cpu1 = m.cpu_seconds()
        busy1 = busy_cpu_seconds()
        rss1 = m.rss_mb()
        with m._lock:
            peak = {k: max(v, rss1.get(k, 0.0)) for k, v in m._peak.items()}
        threads: dict[str, dict[str, float]] = {}
        for name, pid in self.thread_pids.items():
            before = self.threads0.get(name, {})
            # threads started during the window (hash workers) are named by a second dump
            names = {**python_thread_names(pid), **self.names.get(name, {})}
            after = thread_cpu(pid, names)
            deltas = {t: round(100 * (v - before.get(t, 0.0)) / dt, 1) for t, v in after.items()}
            threads[name] = {t: v for t, v in sorted(deltas.items(), key=lambda kv: -kv[1]) if v >= 0.5}
        cpu = {k: 100 * (cpu1.get(k, 0.0) - self.cpu0.get(k, 0.0)) / dt for k in cpu1}
        # Whatever else ran on the machine meanwhile (other people's tests): a run with a high
        # "other" figure measured a shared machine, not realmchat.
        cpu["other"] = max(0.0, 100 * (busy1 - self.busy0) / dt - sum(cpu.values()))
        return Window(
            seconds=dt,
            cpu_pct=cpu,
            rss_mb=rss1, peak_rss_mb=peak, start_rss_mb=self.rss0, threads=threads,
        )
