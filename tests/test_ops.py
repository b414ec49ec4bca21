"""Operations: Prometheus /metrics on main and realm move with traffic; JSON log lines."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .stack import ServerProcess, start_stack
from .textclient import login

Names = Callable[[str], str]
_METRICS_RE = re.compile(r"metrics on (http://\S+/metrics)")


def metrics_url(p: ServerProcess) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(p.output):
            if m := _METRICS_RE.search(line):
                return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"{p.name} announced no metrics endpoint:\n{p.log()}")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_metrics_move_and_logs_are_json(tmp_path: Path, uname: Names) -> None:
    ops = ("--metrics-port", "0", "--log-format", "json")
    s = start_stack(tmp_path, main_extra=ops, realm_extra=ops)
    try:
        main_url, alpha_url = metrics_url(s.main), metrics_url(s.realms["alpha"])
        beta_url = metrics_url(s.realms["beta"])
        before_main, before_alpha = scrape(main_url), scrape(alpha_url)
        a, b = uname("ma"), uname("mb")
        ca = await login(*s.realm("alpha"), a)
        cb = await login(*s.realm("beta"), b)
        for i in range(5):
            await ca.ok(f"sendprivate {b} m{i}")
            await cb.event()
        await ca.err("bogus", "UNIMPLEMENTED")
        main, alpha, beta = scrape(main_url), scrape(alpha_url), scrape(beta_url)

        key = 'realmchat_realm_commands_total{status="OK",verb="sendprivate"}'
        assert alpha[key] - before_alpha.get(key, 0) == 5
        assert alpha['realmchat_realm_commands_total{status="UNIMPLEMENTED",verb="-"}'] == 1
        assert beta['realmchat_realm_events_total{kind="private"}'] >= 5
        assert alpha["realmchat_realm_sessions"] >= 1 and alpha["realmchat_realm_link_up"] == 1
        k = 'realmchat_main_messages_total{kind="private"}'
        assert main[k] - before_main.get(k, 0) == 5
        assert main["realmchat_main_commit_seconds_count"] > before_main["realmchat_main_commit_seconds_count"]
        assert main['realmchat_main_rpc_seconds_count{method="SendPrivate"}'] >= 5
        assert main["realmchat_main_event_lag_seconds_count"] >= 5
        assert main["realmchat_main_online_sessions"] >= 2
    finally:
        s.stop()
    logs = [line for line in s.main.output if line.startswith("{")]
    assert logs, s.main.log()
    entry = json.loads(logs[0])
    assert {"ts", "level", "component", "logger", "msg"} <= entry.keys()
