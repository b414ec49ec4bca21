"""Realm server configuration: a frozen dataclass built from argv and REALMCHAT_REALM_* env."""

from __future__ import annotations

import argparse
import re
import socket
from dataclasses import dataclass
from typing import Any

from realmchat.config import EnvArgumentParser, parse_hostport
from realmchat.names import check_name
from realmchat.textproto import DEFAULT_MAX_LINE

from .limits import parse_networks


def default_name() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:32] or "realm"


@dataclass(frozen=True)
class RealmConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    irc_port: int = 6667  # IRC clients (docs/IRC.md); 0: no IRC listener
    mains: tuple[tuple[str, int], ...] = (("127.0.0.1", 8080),)
    name: str = "realm"
    max_line: int = DEFAULT_MAX_LINE
    max_file_bytes: int = 1 << 30
    rpc_timeout_s: float = 5.0
    secret_file: str = ""  # the realm credential main expects ($REALMCHAT_REALM_SECRET overrides)
    max_send_queue: int = 10_000
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int = -1  # -1: no /metrics endpoint
    # ---- hardening (docs/SECURITY.md lists each limit and the threat it answers) ----
    max_send_queue_bytes: int = 4 * 1024 * 1024
    stall_timeout_s: float = 60.0
    idle_timeout_s: float = 3600.0
    login_timeout_s: float = 60.0
    max_connections: int = 0  # 0: as many as the descriptor limit allows, with headroom
    max_conns_per_ip: int = 32
    trusted_nets: str = "127.0.0.0/8,::1/128"
    cmd_rate: float = 100.0
    cmd_burst: int = 500
    byte_rate: int = 256 * 1024
    byte_burst: int = 1024 * 1024
    max_unread_bytes: int = 4 * 1024 * 1024
    login_attempts_per_ip: int = 20
    login_window_s: float = 60.0
    # TLS: on the client port (tls_cert/tls_key) and towards main (main_ca, optional client cert)
    tls_cert: str = ""
    tls_key: str = ""
    main_ca: str = ""
    main_cert: str = ""
    main_key: str = ""
    main_server_name: str = ""

    @property
    def main_addrs(self) -> list[str]:
        return [f"{h}:{p}" for h, p in self.mains]


def parse_args(argv: list[str] | None = None) -> RealmConfig:
    d = RealmConfig()
    p = EnvArgumentParser("REALMCHAT_REALM", prog="python -m realm_server",
                          description="realmchat realm server (text protocol on TCP)")
    p.add_option("--host", default=d.host, help="address to listen on")
    p.add_option("--port", default=d.port, help="TCP port for clients (0 = any free port)")
    p.add_option("--irc-port", default=d.irc_port, help="TCP port for IRC clients (0 = no IRC listener)")
    p.add_option("--main", default="127.0.0.1:8080",
                 help="main server HOST:PORT; several, comma-separated, are tried in order")
    p.add_option("--name", default=default_name(), help="this realm's name")
    p.add_option("--max-line", default=d.max_line, help="longest command line in bytes")
    p.add_option("--max-file-bytes", default=d.max_file_bytes, help="largest file accepted")
    p.add_option("--rpc-timeout-s", default=d.rpc_timeout_s, help="deadline of each call to main")
    p.add_option("--secret-file", default=d.secret_file,
                 help="file holding the realm credential (main writes DATA_DIR/realm-secret); "
                      "$REALMCHAT_REALM_SECRET overrides")
    p.add_option("--max-send-queue", default=d.max_send_queue,
                 help="lines queued for a slow client before it is disconnected")
    p.add_option("--log-level", default=d.log_level, help="DEBUG, INFO, WARNING or ERROR")
    p.add_option("--log-format", default=d.log_format, choices=["text", "json"], help="log lines as text or JSON")
    p.add_option("--metrics-port", default=d.metrics_port,
                 help="serve Prometheus /metrics on this port of --host (0 = any free port, -1 = off)")
    _add_hardening_options(p, d)
    a = p.parse_args(argv)
    mains = tuple(parse_hostport(x, 8080) for x in a.main.split(",") if x.strip())
    if not mains:
        p.error("--main needs at least one HOST:PORT")
    try:
        check_name(a.name, "realm")
    except Exception as e:
        p.error(str(e))
    if not 0 <= a.irc_port <= 65535:
        p.error("--irc-port must be 0 (off) or a TCP port")
    return RealmConfig(host=a.host, port=a.port, irc_port=a.irc_port, mains=mains, name=a.name, max_line=a.max_line,
                       max_file_bytes=a.max_file_bytes, rpc_timeout_s=a.rpc_timeout_s,
                       secret_file=a.secret_file,
                       max_send_queue=a.max_send_queue, log_level=a.log_level, log_format=a.log_format,
                       metrics_port=a.metrics_port,
                       **_hardening_values(p, a))


def _add_hardening_options(p: EnvArgumentParser, d: RealmConfig) -> None:
    p.add_option("--max-send-queue-bytes", default=d.max_send_queue_bytes,
                 help="bytes of events queued for a slow client before it is disconnected")
    p.add_option("--stall-timeout-s", default=d.stall_timeout_s,
                 help="a file payload or a write to the client that makes no progress this long closes it")
    p.add_option("--idle-timeout-s", default=d.idle_timeout_s,
                 help="close a connection that sends no command for this long (0 = never)")
    p.add_option("--login-timeout-s", default=d.login_timeout_s,
                 help="close a connection that is not logged in within this long (0 = never)")
    p.add_option("--max-connections", default=d.max_connections,
                 help="open connections in all (0 = as many as the descriptor limit allows, with headroom)")
    p.add_option("--max-conns-per-ip", default=d.max_conns_per_ip,
                 help="open connections per client IP address (0 = no limit)")
    p.add_option("--trusted-nets", default=d.trusted_nets,
                 help="comma-separated networks exempt from per-IP limits ('' = none)")
    p.add_option("--cmd-rate", default=d.cmd_rate,
                 help="commands per second per account (all its connections; before login per connection); "
                      "faster senders are paced, not refused (0 = no limit)")
    p.add_option("--cmd-burst", default=d.cmd_burst, help="commands an account may send at once before pacing")
    p.add_option("--byte-rate", default=d.byte_rate, help="command bytes per second per account (0 = no limit)")
    p.add_option("--byte-burst", default=d.byte_burst, help="command bytes an account may send at once")
    p.add_option("--max-unread-bytes", default=d.max_unread_bytes,
                 help="a paced connection whose unread backlog passes this is disconnected (0 = never)")
    p.add_option("--login-attempts-per-ip", default=d.login_attempts_per_ip,
                 help="failed auth and register attempts per IP per login window (0 = no limit)")
    p.add_option("--login-window-s", default=d.login_window_s, help="window of --login-attempts-per-ip")
    p.add_option("--tls-cert", default=d.tls_cert, help="PEM certificate (chain): serve clients over TLS")
    p.add_option("--tls-key", default=d.tls_key, help="PEM private key of --tls-cert")
    p.add_option("--main-ca", default=d.main_ca, help="PEM CA bundle: connect to main over TLS, verified by it")
    p.add_option("--main-cert", default=d.main_cert, help="PEM client certificate for main (mTLS)")
    p.add_option("--main-key", default=d.main_key, help="PEM private key of --main-cert")
    p.add_option("--main-server-name", default=d.main_server_name,
                 help="name to verify in main's certificate (default: the host of --main)")


def _hardening_values(p: EnvArgumentParser, a: argparse.Namespace) -> dict[str, Any]:
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if bool(a.main_cert) != bool(a.main_key):
        p.error("--main-cert and --main-key go together")
    if a.main_cert and not a.main_ca:
        p.error("--main-cert (mTLS) needs --main-ca")
    try:
        parse_networks(a.trusted_nets)
    except ValueError as e:
        p.error(f"--trusted-nets: {e}")
    names = ("max_send_queue_bytes", "stall_timeout_s", "idle_timeout_s", "login_timeout_s", "max_connections",
             "max_conns_per_ip", "trusted_nets", "cmd_rate", "cmd_burst", "byte_rate", "byte_burst",
             "max_unread_bytes",
             "login_attempts_per_ip", "login_window_s", "tls_cert", "tls_key", "main_ca", "main_cert",
             "main_key", "main_server_name")
    return {n: getattr(a, n) for n in names}
