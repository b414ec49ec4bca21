"""Realm server configuration: a frozen dataclass built from argv and REALMCHAT_REALM_* env."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from realmchat.config import EnvArgumentParser, parse_hostport
from realmchat.names import check_name
from realmchat.textproto import DEFAULT_MAX_LINE


def default_name() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:32] or "realm"


@dataclass(frozen=True)
class RealmConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    mains: tuple[tuple[str, int], ...] = (("127.0.0.1", 8080),)
    name: str = "realm"
    max_line: int = DEFAULT_MAX_LINE
    max_file_bytes: int = 1 << 30
    rpc_timeout_s: float = 5.0
    max_send_queue: int = 10_000
    log_level: str = "INFO"

    @property
    def main_addrs(self) -> list[str]:
        return [f"{h}:{p}" for h, p in self.mains]


def parse_args(argv: list[str] | None = None) -> RealmConfig:
    d = RealmConfig()
    p = EnvArgumentParser("REALMCHAT_REALM", prog="python -m realm_server",
                          description="realmchat realm server (text protocol on TCP)")
    p.add_option("--host", default=d.host, help="address to listen on")
    p.add_option("--port", default=d.port, help="TCP port for clients (0 = any free port)")
    p.add_option("--main", default="127.0.0.1:8080",
                 help="main server HOST:PORT; several, comma-separated, are tried in order")
    p.add_option("--name", default=default_name(), help="this realm's name")
    p.add_option("--max-line", default=d.max_line, help="longest command line in bytes")
    p.add_option("--max-file-bytes", default=d.max_file_bytes, help="largest file accepted")
    p.add_option("--rpc-timeout-s", default=d.rpc_timeout_s, help="deadline of each call to main")
    p.add_option("--max-send-queue", default=d.max_send_queue,
                 help="lines queued for a slow client before it is disconnected")
    p.add_option("--log-level", default=d.log_level, help="DEBUG, INFO, WARNING or ERROR")
    a = p.parse_args(argv)
    mains = tuple(parse_hostport(x, 8080) for x in a.main.split(",") if x.strip())
    if not mains:
        p.error("--main needs at least one HOST:PORT")
    try:
        check_name(a.name, "realm")
    except Exception as e:
        p.error(str(e))
    return RealmConfig(host=a.host, port=a.port, mains=mains, name=a.name, max_line=a.max_line,
                       max_file_bytes=a.max_file_bytes, rpc_timeout_s=a.rpc_timeout_s,
                       max_send_queue=a.max_send_queue, log_level=a.log_level)
