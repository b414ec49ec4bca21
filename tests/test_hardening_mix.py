"""Every attack of docs/SECURITY.md at once against a default install (bench/attack_mix.py),
shortened for the suite: a normal user keeps chatting, and nothing it sent is lost or doubled.
The full 60 s run with its p99 bound is run by hand (docs/SECURITY.md gives the figures)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from .stack import ROOT, start_stack


async def test_the_attacks_together_lose_nothing(tmp_path: Path) -> None:
    s = start_stack(tmp_path / "data", realms=("alpha",))  # default options: a default install
    try:
        host, port = s.realm("alpha")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.attack_mix", "--main", s.main.addr, "--realm", f"{host}:{port}",
            "--duration", "8", "--p99-ms", "2000", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert out, err.decode()[-3000:]
        result = json.loads(out)
        print(json.dumps(result))
        assert result["lost"] == 0 and result["duplicates"] == 0, result
        assert result["sent"] > 50, result
        attacks = result["attacks"]
        assert attacks.get("guess:UNAUTHENTICATED", 0) <= 10, attacks  # the account limit held
        assert attacks.get("flood-answers:ERROR", 0) == 0, attacks  # the flood was paced, not refused
        assert proc.returncode == 0, result
        assert "Traceback" not in s.realms["alpha"].log(), s.realms["alpha"].log()[-3000:]
    finally:
        s.stop()
