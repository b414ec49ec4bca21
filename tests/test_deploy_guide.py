"""docs/DEPLOY.md, followed as written: its SQL creates the role and the database, and two main
replicas start with exactly the REALMCHAT_MAIN_DB line it prints (only the database host is this
machine's), with the password checked by SCRAM as on a deployed server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from .pg import PgCluster
from .stack import ROOT, start_main, start_realm
from .textclient import login

GUIDE = ROOT / "docs" / "DEPLOY.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), re.S)


def test_the_guide_gives_the_url_in_one_place() -> None:
    text = GUIDE.read_text()
    lines = re.findall(r"^REALMCHAT_MAIN_DB=\S+$", text, re.M)
    assert len(lines) == 1, lines
    assert "EnvironmentFile=/etc/realmchat/main.env" in text
    assert "?pool_max=" in lines[0]  # the option that once stopped main at start


async def test_two_mains_start_with_the_url_the_guide_prints(pg_cluster: PgCluster, tmp_path: Path) -> None:
    sql = next(b for b in _blocks("sql") if "CREATE ROLE" in b)
    for statement in filter(None, (s.strip() for s in sql.split(";"))):
        pg_cluster.psql(statement)  # one at a time: CREATE DATABASE runs outside a transaction
    (line,) = re.findall(r"^REALMCHAT_MAIN_DB=(\S+)$", GUIDE.read_text(), re.M)
    m = re.fullmatch(r"(postgresql://(\w+):[^@]+@)db\.internal:5432(/(\w+)\?.*)", line)
    assert m, line
    pg_cluster.require_password(m.group(4), m.group(2))
    url = f"{m.group(1)}127.0.0.1:{pg_cluster.port}{m.group(3)}"

    env = {"REALMCHAT_MAIN_DB": url}
    main1 = start_main(tmp_path / "m1", env=env)
    main2 = start_main(tmp_path / "m2", env=env)
    alpha = start_realm("alpha", f"{main1.addr},{main2.addr}")
    beta = start_realm("beta", main2.addr)
    try:
        a = await login(alpha.host, alpha.port, "deploy_alice")
        b = await login(beta.host, beta.port, "deploy_bob")
        r = await a.ok("sendprivate deploy_bob stored by main 1, pushed by main 2")
        ev = await b.event()
        assert (ev["id"], ev["text"]) == (r["id"], "stored by main 1, pushed by main 2")
        await asyncio.sleep(0.5)
        for p in (main1, main2):
            assert p.proc.poll() is None, p.log()
            assert "cluster replica" in p.log()
        # The server checks the password: the URL's is the one in use, and a wrong one is one
        # clear line at start.
        bad = url.replace(":change-me@", ":wrong@")
        assert bad != url
        with pytest.raises(RuntimeError, match="password authentication failed"):
            start_main(tmp_path / "m3", env={"REALMCHAT_MAIN_DB": bad})
    finally:
        for p in (alpha, beta, main1, main2):
            p.kill()
