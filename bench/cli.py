"""`python -m bench`: argument parsing, the run, the table and the JSON file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .runner import Bench, Row, log, table
from .workloads import PEER_WORKLOADS, WORKLOADS, ratio_rows, ratio_table

RESULTS = Path(__file__).resolve().parent / "results"

# --quick: every workload for a second or two at tiny scale, so that `make test` catches a bench
# that no longer runs (a smoke run, not a measurement).
QUICK = {
    "clients": 40, "rate1": 200.0, "rate2": 1000.0, "duration": 1.5, "full_duration": 1.5, "warmup": 0.3,
    "groups": 2, "group_size": 5, "group_rate": 40.0, "idle": 200, "active_clients": 4, "active_rate": 50.0,
    "file_mib": 4.0, "logins": 4, "drain": 60.0,
    "presence_users": 40, "presence_group": 10, "presence_churn": 8, "presence_hold": 1.2,
    "search_messages": 20_000, "search_queries": 100, "search_users": 12, "search_groups": 6, "search_searchers": 4,
    "contended_clients": 40, "contended_rate": 200.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="realmchat benchmark: a real stack (main + realms alpha and beta) driven by a "
                    "multi-process load generator over the realm text protocol. Workloads: "
                    "1 private at a fixed rate, 2 private at a high fixed rate, 3 private at full speed, "
                    "4 group fan-out (fixed rate, full speed), 5 idle connections, 6 a large file, 7 logins, "
                    "8 presence (users in shared groups logging out and in), 9 search over a large history, "
                    "10 private at a fixed rate with busy loops taking the cores (and the same quiet). "
                    "--peer ngircd: the same runs of 1, 3, 5 and 10 against two linked ngIRCd servers too.")
    p.add_argument("--workloads", default="1,2,3,4,5,6,7,8,9,10", help="comma-separated workload numbers")
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run of every workload at tiny scale")
    p.add_argument("--workers", type=int, default=2, help="load generator processes")
    p.add_argument("--clients", type=int, default=2000, help="workloads 1-3: clients, half on each realm")
    p.add_argument("--rate1", type=float, default=1000.0, help="workload 1: messages/s (open loop)")
    p.add_argument("--rate2", type=float, default=10000.0, help="workload 2: messages/s (open loop)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of each fixed-rate run")
    p.add_argument("--full-duration", type=float, default=10.0, help="seconds of each full-speed run")
    p.add_argument("--warmup", type=float, default=2.0, help="unreported seconds before a fixed-rate run")
    p.add_argument("--depth", type=int, default=2, help="full speed: messages pipelined per client")
    p.add_argument("--groups", type=int, default=10, help="workload 4: groups")
    p.add_argument("--group-size", type=int, default=50, help="workload 4: members per group")
    p.add_argument("--group-rate", type=float, default=500.0, help="workload 4: group sends/s (open loop)")
    p.add_argument("--idle", type=int, default=10000, help="workload 5: idle logged-in connections on alpha")
    p.add_argument("--active-clients", type=int, default=100, help="workload 5: active clients")
    p.add_argument("--active-rate", type=float, default=200.0, help="workload 5: active messages/s")
    p.add_argument("--file-mib", type=float, default=200.0, help="workload 6: file size in MiB")
    p.add_argument("--logins", type=int, default=32, help="workload 7: users registered and logged in")
    p.add_argument("--presence-users", type=int, default=10000, help="workload 8: users, all logged in")
    p.add_argument("--presence-group", type=int, default=100, help="workload 8: members per group (one group each)")
    p.add_argument("--presence-churn", type=int, default=500, help="workload 8: users logging out and in")
    p.add_argument("--presence-hold", type=float, default=1.5,
                   help="workload 8: seconds a churning user stays out and stays in")
    p.add_argument("--search-messages", type=int, default=1_000_000,
                   help="workload 9: messages loaded into main's SQLite before searching")
    p.add_argument("--search-queries", type=int, default=1000, help="workload 9: searches timed")
    p.add_argument("--search-users", type=int, default=200, help="workload 9: users (senders and recipients)")
    p.add_argument("--search-groups", type=int, default=100, help="workload 9: groups")
    p.add_argument("--search-searchers", type=int, default=16,
                   help="workload 9: users who search, each in 5 groups")
    p.add_argument("--contended-clients", type=int, default=400, help="workload 10: clients, half on each realm")
    p.add_argument("--contended-rate", type=float, default=1000.0, help="workload 10: messages/s (open loop)")
    p.add_argument("--busy-loops", type=int, default=3,
                   help="workload 10: processes spinning (`while True: pass`) while clients log in and send")
    p.add_argument("--peer", choices=["ngircd"],
                   help="also run workloads 1, 3, 5 and 10 (those selected) against two linked ngIRCd servers "
                        "(Debian's ngircd; `scripts/setup.sh --bench` installs it) and print ours/peer ratios")
    p.add_argument("--drain", type=float, default=300.0,
                   help="most seconds to wait, after sending, for outstanding acks and deliveries")
    p.add_argument("--production-hash", action="store_true",
                   help="production argon2id for every stack (slow: ~0.3 s of CPU per login)")
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in the generator")
    p.add_argument("--profile", metavar="DIR", help="py-spy the servers during the full-speed runs (3, 4)")
    p.add_argument("--profile-native", action="store_true",
                   help="py-spy --native: also sample C frames (gRPC core, protobuf, sqlite, the event loop)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                   help="main's storage engine: embedded SQLite, or a throwaway PostgreSQL (Debian's, fsync on) "
                        "with a fresh database per stack")
    p.add_argument("--data-dir", help="parent of the temporary data dirs (default: the system temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON results here")
    p.add_argument("--results-dir", default=str(RESULTS), help="where <timestamp>.json is written")
    p.add_argument("--quiet-below", type=float, metavar="PCT",
                   help="before each measurement, wait until other processes use < PCT %% of a core")
    p.add_argument("--quiet-wait", type=float, default=600.0, help="longest wait for a quiet machine (s)")
    args = p.parse_args(argv)
    if args.quick:
        defaults = {a.dest: a.default for a in p._actions}
        for k, v in QUICK.items():
            if getattr(args, k) == defaults[k]:  # explicit flags still win
                setattr(args, k, v)
    args.selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.selected if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    return args


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "uvloop": has_uvloop, "loop_ns": reference_loop_ns()}


def reference_loop_ns(n: int = 2_000_000) -> float:
    """ns per iteration of a fixed pure-Python loop, best of three: how fast this machine runs
    Python today. Virtual machines of one name differ by 2x and more, so figures from two runs
    compare only beside this one."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best / n * 1e9, 1)


def raise_fd_limit() -> None:
    # 10k idle clients need 10k sockets in the generator and in the realm (which inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    started = time.strftime("%Y%m%d-%H%M%S")
    info = {"started": started, "argv": sys.argv[1:] if argv is None else argv, "machine": machine(),
            "load_before": os.getloadavg(),
            "args": {k: v for k, v in vars(args).items() if k != "selected"}}
    m = info["machine"]
    log(f"machine: {m['nproc']} x {m['cpu_model']}, load {info['load_before']}, "
        f"reference loop {m['loop_ns']} ns/iteration")
    bench = Bench(args)
    failures: list[str] = []
    try:
        for w in args.selected:
            log(f"workload {w}")
            try:
                WORKLOADS[w](bench)
            except Exception:
                failures.append(f"workload {w}: {traceback.format_exc()}")
                log(failures[-1])
                bench.rows.append(Row(workload=w, name="FAILED", target="", ok=False))
                bench.stop_stack()  # a broken stack is not reused by the next workload
        if args.peer:
            for w in args.selected:
                if w not in PEER_WORKLOADS:
                    continue
                log(f"workload {w}, peer {args.peer}")
                try:
                    PEER_WORKLOADS[w](bench, args.peer)
                except Exception:
                    failures.append(f"workload {w} peer {args.peer}: {traceback.format_exc()}")
                    log(failures[-1])
                    bench.rows.append(Row(workload=w, name=f"{args.peer} FAILED", target="", ok=False,
                                          peer=args.peer))
                    bench.stop_peer()
    finally:
        bench.close()
    rows = bench.rows
    lost = sum(r.lost for r in rows if not r.peer)  # the peer's losses are reported, not failed
    ok = not failures and lost == 0 and all(r.ok for r in rows)
    if bench.server_warnings:
        log(f"server warnings: {json.dumps(bench.server_warnings, indent=1)[:3000]}")
    doc = {**info, "load_after": os.getloadavg(), "ok": ok, "failures": failures,
           "server_warnings": bench.server_warnings,
           "rows": [dataclasses.asdict(r) for r in rows]}
    if args.peer:
        doc["ratios"] = [dict(zip(("figure", "realmchat", args.peer, "ours_over_peer", "other_cpu_pct"), x,
                                  strict=True)) for x in ratio_rows(rows, args.peer, args.busy_loops)]
    paths = [Path(args.results_dir) / f"{started}.json"] + ([Path(args.json)] if args.json else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
    print(table(rows))
    if args.peer:
        print(f"\nPeer rows: the alpha/beta columns are {args.peer} servers a/b; \"lost\" = sent, never "
              "received (IRC has no acknowledgement). Ours / peer:\n")
        print(ratio_table(rows, args.peer, args.busy_loops))
    print(f"\nJSON: {', '.join(str(p) for p in paths)}")
    if not ok:
        print(f"FAILED: {lost} lost messages, {len(failures)} failed workloads", file=sys.stderr)
    return 0 if ok else 1
