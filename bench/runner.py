"""The coordinator: starts a real stack per workload family (tests/stack.py launches the servers,
so the bench and the tests start them the same way), spreads client connections over the
generator processes, runs phases on all of them at once and merges what they measured.

Loss accounting: every sender process numbers its messages; receivers count deliveries per
(sender process, number); a message whose OK was received must be delivered `fanout` times
(1 for private, members - 1 for a group), otherwise it is lost and the run fails.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tests.stack import Stack, start_stack

from . import worker as wk
from .meter import Meter, Window

# The production argon2id setting costs ~0.3 s of CPU per hash on this machine: logging in the
# thousands of users that workloads 1-6 need would take many minutes and measure nothing about
# messaging. Those stacks use the main server's own knobs for a cheap hash; workload 7 measures
# logins with the production default.
CHEAP_HASH = ("--argon2-time-cost", "1", "--argon2-memory-kib", "1024")
REALMS = ("alpha", "beta")


def main_extra() -> tuple[str, ...]:
    """Setting up thousands of accounts at once would pass main's bound on waiting password
    hashes (it answers "busy, try again"): that bound is for floods, not what a capacity run
    measures. Older mains have no such option, hence the check."""
    helptext = subprocess.run([sys.executable, "-m", "main_server", "--help"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent).stdout
    return ("--hash-queue", "0") if "--hash-queue" in helptext else ()


def realm_extra() -> tuple[str, ...]:
    """The realm's flood control (commands/s and bytes/s per account) would pace a full-speed
    client: it protects the realm from one abuser and is not what a capacity run measures. Older
    realms have no such options, hence the check."""
    helptext = subprocess.run([sys.executable, "-m", "realm_server", "--help"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent).stdout
    extra: tuple[str, ...] = ("--cmd-rate", "0") if "--cmd-rate" in helptext else ()
    return extra + (("--byte-rate", "0") if "--byte-rate" in helptext else ())


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One line of the results table (and of the JSON)."""

    workload: str
    name: str
    target: str
    rate: float | None = None  # delivered/s (or MB/s, logins/s: see unit)
    unit: str = "msg/s"
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    lost: int = 0
    errors: int = 0
    ok: bool = True
    goal: str = ""
    cpu_pct: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    load1: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    peer: str = ""  # "" for realmchat; "ngircd" for the IRC peer (its losses are reported, not failed)


class Workers:
    """The generator processes and the pipe to each."""

    def __init__(self, n: int, use_uvloop: bool) -> None:
        ctx = mp.get_context("spawn")  # no inherited threads or event loop state
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for wid in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=wk.run, args=(child, wid, use_uvloop), daemon=True, name=f"bench-gen-{wid}")
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    @property
    def n(self) -> int:
        return len(self.conns)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def call(self, ops: list[dict[str, Any] | None], timeout: float = 900) -> list[dict[str, Any]]:
        """Sends op i to worker i (None: skip it) and waits for all answers."""
        for conn, op in zip(self.conns, ops, strict=True):
            if op is not None:
                conn.send(op)
        out: list[dict[str, Any]] = []
        errors: list[str] = []
        # Every answer is read before raising, so that the pipes stay in step for the next call.
        for conn, op in zip(self.conns, ops, strict=True):
            if op is None:
                out.append({})
                continue
            if not conn.poll(timeout):
                raise TimeoutError(f"generator did not answer {op['op']} within {timeout} s")
            r = conn.recv()
            if not r.pop("ok"):
                errors.append(r["error"])
            out.append(r)
        if errors:
            raise RuntimeError("\n".join(errors))
        return out

    def all(self, op: str, **kw: Any) -> list[dict[str, Any]]:
        return self.call([{"op": op, **kw} for _ in self.conns])

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send({"op": "exit"})
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def percentiles(lat_us: array) -> tuple[float, float, float]:
    if not lat_us:
        return 0.0, 0.0, 0.0
    s = sorted(lat_us)
    n = len(s)

    def q(x: float) -> float:
        return s[min(n - 1, int(x * n))] / 1000

    return q(0.50), q(0.99), q(0.999)


@dataclass
class PhaseResult:
    sent: int
    acked: int
    errors: int
    error_samples: list[str]
    unacked: int
    delivered: int
    expected: int
    lost: int
    duplicates: int
    lat_us: array
    ack_lat_us: array
    rate: float
    drain_s: float
    lag_p99_ms: float
    lag_max_ms: float
    window: Window

    @property
    def pcts(self) -> tuple[float, float, float]:
        return percentiles(self.lat_us)


class Bench:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.workers = Workers(args.workers, not args.no_uvloop)
        self.meter = Meter()
        self.meter.set("gen", [*self.workers.pids, os.getpid()])  # generators + this coordinator
        self.stack: Stack | None = None
        self.stack_key = ""
        self.data_dir: Path | None = None
        self.next_cid = 0
        self.users: dict[int, tuple[str, str]] = {}  # cid -> (user, realm)
        self.phase = 0
        self.rows: list[Row] = []
        self.private_cids: list[int] = []
        self.server_warnings: dict[str, list[str]] = {}
        self.profile_dir: Path | None = Path(args.profile) if args.profile else None
        self.pg: Any = None  # tests.pg.PgCluster with --db postgres
        self.placed: dict[int, int] = {}  # cid -> generator process, where cid % n will not do
        self.login_times: dict[str, float] = {}  # slowest connect/register/auth of add_clients_tolerant
        self.peer: Any = None  # bench.peer.NgircdPair while the peer runs

    # ---- stack -------------------------------------------------------------------------------

    def use_stack(self, key: str, production_hash: bool = False) -> Stack:
        """A fresh stack (and fresh data dir) whenever the workload family changes."""
        if self.stack is not None and self.stack_key == key:
            return self.stack
        self.stop_stack()
        self.stop_peer()
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"realmchat-bench-{key}-", dir=self.args.data_dir))
        production = production_hash or self.args.production_hash
        extra: tuple[str, ...] = () if production else (*CHEAP_HASH, *main_extra())
        if self.args.db == "postgres":
            if self.pg is None:
                from tests.pg import PgCluster

                self.pg = PgCluster(fsync=True).start()  # durable like SQLite's FULL: a fair comparison
            extra = (*extra, "--db", self.pg.create_database())
        self.stack = start_stack(self.data_dir / "data", REALMS, main_extra=extra, realm_extra=realm_extra())
        self.stack_key = key
        self.set_server_pids()
        log(f"stack {key}: main {self.stack.main.addr} (pid {self.stack.main.pid}), "
            + ", ".join(f"{n} {p.addr} (pid {p.pid})" for n, p in self.stack.realms.items())
            + (", production argon2id" if production else "") + f", {self.args.db}")
        return self.stack

    def set_server_pids(self) -> None:
        assert self.stack is not None
        self.meter.set("main", [self.stack.main.pid])
        for name, p in self.stack.realms.items():
            self.meter.set(name, [p.pid])

    def stop_stack(self) -> None:
        if self.stack is None:
            return
        self.workers.all("close")
        # What the servers complained about (overload, disconnects) explains odd figures; read
        # before the shutdown, whose own warnings ("main ended the event stream") are expected.
        for name, proc in (("main", self.stack.main), *self.stack.realms.items()):
            lines = [ln for ln in proc.log().splitlines()
                     if any(w in ln for w in ("WARNING", "ERROR", "Traceback", "overloaded"))]
            if lines:
                self.server_warnings[f"{self.stack_key}/{name}"] = lines[:20]
        self.stack.stop()
        for name in ("main", *REALMS):
            self.meter.drop(name)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.stack = None
        self.stack_key = ""
        self.users.clear()

    def use_peer(self, key: str) -> Any:
        """Two fresh linked ngIRCd servers (bench.peer) whenever the workload family changes;
        realmchat's stack is stopped first, so the two never share the machine."""
        if self.peer is not None and self.stack_key == f"peer-{key}":
            return self.peer
        from .peer import NgircdPair

        self.stop_stack()
        self.stop_peer()
        self.peer = NgircdPair(self.args.data_dir)
        self.stack_key = f"peer-{key}"
        for name in self.peer.names:
            self.meter.set(name, [self.peer.pid(name)])
        log(f"peer {key}: " + ", ".join(f"{n} 127.0.0.1:{self.peer.ports[n]} (pid {self.peer.pid(n)})"
                                        for n in self.peer.names))
        return self.peer

    def stop_peer(self) -> None:
        """Closes the peer's clients and stops its servers (bench.peer starts them)."""
        if self.peer is None:
            return
        self.workers.all("close")
        if warnings := self.peer.warnings():
            self.server_warnings[self.stack_key] = warnings
        try:
            self.peer.stop()
        finally:
            for name in self.peer.names:
                self.meter.drop(name)
            self.peer = None
            self.stack_key = ""
            self.users.clear()
            self.placed.clear()

    def close(self) -> None:
        try:
            self.stop_stack()
            self.stop_peer()
        finally:
            self.workers.close()
            self.meter.close()
            if self.pg is not None:
                self.pg.stop()

    # ---- clients -----------------------------------------------------------------------------

    def worker_of(self, cid: int) -> int:
        w = self.placed.get(cid)
        return cid % self.workers.n if w is None else w

    def _assign(self, users: list[tuple[str, str]]) -> tuple[list[int], list[list[tuple[int, str, str, int]]]]:
        """New client ids for (user, realm) pairs, and each worker's share of them to connect."""
        assert self.stack is not None
        cids = list(range(self.next_cid, self.next_cid + len(users)))
        self.next_cid += len(users)
        per: list[list[tuple[int, str, str, int]]] = [[] for _ in range(self.workers.n)]
        for cid, (user, realm) in zip(cids, users, strict=True):
            self.users[cid] = (user, realm)
            host, port = self.stack.realm(realm)
            per[self.worker_of(cid)].append((cid, user, host, port))
        return cids, per

    def add_clients(self, users: list[tuple[str, str]], steps: tuple[str, ...] = ("register", "auth"),
                    concurrency: int = 64) -> tuple[list[int], list[dict[str, Any]]]:
        """Connects one client per (user, realm), then registers and logs each in (see login)."""
        cids, per = self._assign(users)
        self.workers.call([{"op": "connect", "clients": p} for p in per])
        return cids, self.login(cids, steps, concurrency) if steps else []

    def add_clients_tolerant(self, users: list[tuple[str, str]], timeout: float, concurrency: int = 64,
                             ) -> tuple[list[int], set[int], list[str]]:
        """add_clients for a run that reports failures instead of stopping: a connect, register
        or auth not answered OK within `timeout` leaves its client out. Returns (every cid, the
        failed ones, error samples)."""
        cids, per = self._assign(users)
        connected = self.workers.call([{"op": "connect", "clients": p, "tolerant": True, "timeout": timeout}
                                       for p in per], timeout=len(users) * timeout + 120)
        failed = {c for r in connected for c in r["failed"]}
        samples = [s for r in connected for s in r["error_samples"]]
        per_login: list[list[int]] = [[] for _ in range(self.workers.n)]
        for cid in cids:
            if cid not in failed:
                per_login[self.worker_of(cid)].append(cid)
        res = self.workers.call([{"op": "login", "cids": p, "steps": ["register", "auth"], "concurrency": concurrency,
                                  "timeout": timeout} for p in per_login], timeout=len(users) * timeout + 120)
        failed |= {c for r in res for c in r["failed"]}
        samples += [s for r in res for s in r["error_samples"]]
        self.login_times = {"connect_max_ms": round(max(r["max_ms"] for r in connected), 1),
                            **{f"{v}_max_ms": round(max(r.get(f"{v}_max_ms", 0.0) for r in res), 1)
                               for v in ("register", "auth")}}
        return cids, failed, samples[:5]

    def login(self, cids: list[int], steps: tuple[str, ...], concurrency: int = 64) -> list[dict[str, Any]]:
        """Runs register and/or auth for the clients, in bounded parallel; returns each
        generator's timings per step."""
        per: list[list[int]] = [[] for _ in range(self.workers.n)]
        for cid in cids:
            per[self.worker_of(cid)].append(cid)
        res = self.workers.call([{"op": "login", "cids": p, "steps": list(steps), "concurrency": concurrency}
                                 for p in per])
        errors = sum(r["errors"] for r in res)
        if errors:
            raise RuntimeError(f"{errors} logins failed, e.g. {[s for r in res for s in r['error_samples']][:3]}")
        return res

    def commands(self, cmds: list[tuple[int, str]]) -> None:
        per: list[list[tuple[int, str]]] = [[] for _ in range(self.workers.n)]
        for cid, line in cmds:
            per[self.worker_of(cid)].append((cid, line))
        res = self.workers.call([{"op": "commands", "cmds": p} for p in per])
        errors = [s for r in res for s in r["error_samples"]]
        if errors:
            raise RuntimeError(f"setup commands failed: {errors}")

    def set_prefixes(self, prefixes: dict[int, str]) -> None:
        per: list[dict[int, str]] = [{} for _ in range(self.workers.n)]
        for cid, p in prefixes.items():
            per[self.worker_of(cid)][cid] = p
        self.workers.call([{"op": "prefix", "prefixes": p} for p in per])

    # ---- one measured phase ------------------------------------------------------------------

    def wait_quiet(self) -> None:
        """With --quiet-below PCT: before a measurement, wait (at most --quiet-wait s) until the
        rest of the machine uses less than PCT % of one core, so that a shared machine (other
        people's test runs) does not pass for realmchat's own figures."""
        limit = self.args.quiet_below
        if limit is None:
            return
        deadline = time.monotonic() + self.args.quiet_wait
        waited = 0.0
        while True:
            w = self.meter.start(threads=False)
            time.sleep(1.0)
            other = w.stop().cpu_pct.get("other", 0.0)
            if other < limit or time.monotonic() > deadline:
                break
            waited += 1.0
        if waited:
            log(f"waited {waited:.0f} s for a quiet machine (other CPU now {other:.0f} %)")

    def run_phase(self, senders: list[int], fanout: int, duration: float, rate: float = 0.0,
                  depth: int = 0, profile_tag: str = "", drain: float | None = None) -> PhaseResult:
        """rate > 0: open loop at `rate` msg/s in total; else closed loop, `depth` in flight per
        sender. Returns after every acked message was delivered or the drain time (--drain unless
        given) ran out; a send still unanswered then counts as an error."""
        drain = self.args.drain if drain is None else drain
        self.phase += 1
        phase = self.phase
        per: list[list[int]] = [[] for _ in range(self.workers.n)]
        for cid in senders:
            per[self.worker_of(cid)].append(cid)
        mode = "open" if rate > 0 else "closed"
        self.wait_quiet()
        window = self.meter.start()
        start_ns = time.monotonic_ns() + 300_000_000  # every generator starts its clock together
        profilers = self.start_profilers(profile_tag, duration) if profile_tag else []
        ops = [{"op": "send", "phase": phase, "mode": mode, "start_ns": start_ns, "duration_s": duration,
                "rate": rate * len(p) / max(len(senders), 1), "depth": depth, "senders": p,
                "drain_s": drain} for p in per]
        sends = self.workers.call(ops, timeout=duration + drain + 120)
        acked = sum(s["acked"] for s in sends)
        expected = acked * fanout
        # Deliveries may still be in flight after the last ack. Counting alone cannot tell when
        # they are all in (a message answered with an error may be delivered too), so wait until
        # the count reached what the acks promise AND stopped moving; the loss check below is
        # then exact, per message.
        deadline = time.monotonic() + drain
        prev = -1
        while True:
            got = sum(r["n"] for r in self.workers.all("received", phase=phase))
            if (got >= expected and got == prev) or time.monotonic() > deadline:
                break
            prev = got
            time.sleep(0.25)
        win = window.stop()
        for p in profilers:
            p.wait(duration + 60)
        recs = self.workers.all("collect", phase=phase)
        lat = array("q")
        for r in recs:
            lat.extend(wk.unpack_lat(r["lat_us"]))
        ack_lat = array("q")
        for s in sends:
            ack_lat.extend(wk.unpack_lat(s["ack_lat_us"]))
        lost, dups = 0, 0
        for wid, s in enumerate(sends):
            amap = s["acked_map"]
            total = [0] * len(amap)
            for r in recs:
                c = r["counts"].get(wid, b"")
                for i in range(min(len(c), len(total))):
                    total[i] += c[i]
            for a, t in zip(amap, total, strict=True):
                if a and t < fanout:
                    lost += 1
                elif t > fanout:
                    dups += t - fanout
        delivered = sum(r["n"] for r in recs)
        last_ns = max((r["last_ns"] for r in recs), default=start_ns)
        end_ns = start_ns + int(duration * 1e9)
        span = max(last_ns - start_ns, 1) / 1e9
        return PhaseResult(
            sent=sum(s["sent"] for s in sends), acked=acked, errors=sum(s["errors"] for s in sends),
            error_samples=[e for s in sends for e in s["error_samples"]][:5],
            unacked=sum(s["unacked"] for s in sends), delivered=delivered, expected=expected, lost=lost,
            duplicates=dups, lat_us=lat, ack_lat_us=ack_lat, rate=delivered / span,
            drain_s=max(0.0, (last_ns - end_ns) / 1e9), lag_p99_ms=max(s["lag_p99_ms"] for s in sends),
            lag_max_ms=max(s["lag_max_ms"] for s in sends), window=win,
        )

    def start_profilers(self, tag: str, duration: float) -> list[subprocess.Popen[bytes]]:
        """py-spy on each server for the measured interval (--nonblocking unless --native: the
        servers are not paused while sampled, so the figures stay comparable with unprofiled runs)."""
        if self.profile_dir is None or self.stack is None:
            return []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.path.exists(spy):
            log("py-spy not found: pip install py-spy into the venv to profile")
            return []
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        procs = []
        targets = {"main": self.stack.main.pid, **{n: p.pid for n, p in self.stack.realms.items()}}
        for name, pid in targets.items():
            out = self.profile_dir / f"{tag}-{name}.txt"
            procs.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(max(1, int(duration))),
                 "--format", "raw", "--threads",
                 # py-spy cannot unwind C frames without pausing the process
                 *(["--native"] if self.args.profile_native else ["--nonblocking"]), "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return procs

    # ---- rows --------------------------------------------------------------------------------

    def row(self, workload: str, name: str, target: str, res: PhaseResult | None = None,
            window: Window | None = None, **kw: Any) -> Row:
        win = window or (res.window if res else None)
        r = Row(workload=workload, name=name, target=target, load1=os.getloadavg()[0], **kw)
        if res is not None:
            p50, p99, p999 = res.pcts
            a50, a99, a999 = percentiles(res.ack_lat_us)
            r.rate = res.rate if r.rate is None else r.rate
            r.p50_ms, r.p99_ms, r.p999_ms = p50, p99, p999
            r.lost = res.lost
            r.errors = res.errors + res.unacked
            r.extra.update({
                "sent": res.sent, "acked": res.acked, "unacked": res.unacked, "delivered": res.delivered,
                "expected_deliveries": res.expected, "duplicates": res.duplicates,
                "ack_p50_ms": a50, "ack_p99_ms": a99, "ack_p999_ms": a999, "drain_s": round(res.drain_s, 3),
                "generator_lag_p99_ms": round(res.lag_p99_ms, 2), "generator_lag_max_ms": round(res.lag_max_ms, 2),
                "error_samples": res.error_samples,
            })
            if res.lost and not r.peer:  # the peer promises no delivery: its losses are reported only
                r.ok = False
        if win is not None:
            r.cpu_pct = {k: round(v, 1) for k, v in win.cpu_pct.items()}
            r.rss_mb = {k: round(v, 1) for k, v in win.rss_mb.items()}
            r.extra["peak_rss_mb"] = {k: round(v, 1) for k, v in win.peak_rss_mb.items()}
            r.extra["thread_cpu_pct"] = win.threads
            r.extra["seconds"] = round(win.seconds, 2)
            if res is not None and res.acked:
                # CPU cost per message is what contention cannot distort: 2 cores give
                # 2,000,000 CPU-us per second to share between all processes.
                cpu_s = {k: v / 100 * win.seconds for k, v in win.cpu_pct.items() if k != "other"}
                r.extra["cpu_us_per_send"] = {k: round(v / res.acked * 1e6, 1) for k, v in cpu_s.items()}
                r.extra["cpu_us_per_delivery"] = {k: round(v / max(res.delivered, 1) * 1e6, 1)
                                                  for k, v in cpu_s.items()}
        self.rows.append(r)
        log(format_row(r))
        return r


# ---- formatting ---------------------------------------------------------------------------------

COLS = ("workload", "target", "delivered/s", "p50 ms", "p99 ms", "p999 ms", "lost", "err",
        "CPU% main/alpha/beta/gen", "RSS MB main/alpha/beta/gen", "other CPU%", "load1")


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def _quad(d: dict[str, float], peer: str = "") -> str:
    """main/alpha/beta/gen; for a peer row, its two servers take the realms' places."""
    keys = ("main", "alpha", "beta", "gen") if not peer else ("-", f"{peer}-a", f"{peer}-b", "gen")
    return "/".join(f"{d[k]:.0f}" if k in d else "-" for k in keys)


def row_cells(r: Row) -> list[str]:
    rate = "-" if r.rate is None else f"{_num(r.rate)} {r.unit}" if r.unit != "msg/s" else _num(r.rate)
    return [f"{r.workload} {r.name}", r.target, rate, _num(r.p50_ms, 2), _num(r.p99_ms, 2),
            _num(r.p999_ms, 2), str(r.lost), str(r.errors), _quad(r.cpu_pct, r.peer), _quad(r.rss_mb, r.peer),
            f"{r.cpu_pct['other']:.0f}" if "other" in r.cpu_pct else "-", f"{r.load1:.2f}"]


def format_row(r: Row) -> str:
    return " | ".join(row_cells(r))


def table(rows: list[Row]) -> str:
    return grid(COLS, [row_cells(r) for r in rows])


def grid(header: tuple[str, ...], body: list[list[str]]) -> str:
    """A Markdown table, columns padded."""
    cells = [list(header), *body]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
