"""The benchmark must keep running: `python -m bench --quick` (every workload for a second or two
at tiny scale) exits 0, loses nothing and reports a positive rate for every workload. A behaviour
test, not a timed one: the figures themselves are in docs/PERFORMANCE.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_bench_quick_runs_every_workload_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out), "--data-dir", str(tmp_path),
                           "--results-dir", str(tmp_path)],  # keep test runs out of bench/results
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["failures"] == []
    rows = doc["rows"]
    assert {r["workload"] for r in rows} >= {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}
    for r in rows:
        assert r["lost"] == 0, r
        assert r["errors"] == 0, r
        assert r["rate"] is not None and r["rate"] > 0, r
        if r["p50_ms"] is not None:  # message workloads: every acked message was delivered
            assert r["extra"]["delivered"] >= r["extra"]["expected_deliveries"] > 0, r
        assert r["cpu_pct"].get("gen") is not None and r["rss_mb"].get("main", 0) > 0, r
    # Workload 10: the same clients and rate quiet and beside busy loops; every client logged in.
    contended = [r for r in rows if r["workload"] == "10"]
    assert [r["extra"]["busy_loops"] for r in contended] == [0, 3], contended
    for r in contended:
        assert r["extra"]["logged_in"] == r["extra"]["clients"] > 0, r
    assert "| workload" in proc.stdout  # the table was printed


@pytest.mark.timeout(300)
def test_bench_search_runs_on_postgres(tmp_path: Path) -> None:
    """Workload 9 on the PostgreSQL engine: the history goes in by COPY while main is stopped,
    main comes back, and every search is answered."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--db", "postgres", "--workloads", "9",
                           "--json", str(out), "--data-dir", str(tmp_path), "--results-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["workload"] for r in rows] == ["9"], rows
    r = rows[0]
    assert r["errors"] == 0 and r["extra"]["delivered"] == r["extra"]["expected_deliveries"] > 0, r
    assert r["extra"]["messages"] > 0 and r["extra"]["results"] > 0, r
