"""Main server configuration: a frozen dataclass built from argv and REALMCHAT_MAIN_* env."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realmchat.config import EnvArgumentParser

from .dburl import parse_db_url


@dataclass(frozen=True)
class MainConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    db: str = ""
    sqlite_synchronous: str = "FULL"
    max_file_bytes: int = 1 << 30
    max_message_bytes: int = 16 * 1024
    min_password_length: int = 8
    inbox_page: int = 1000
    trace_messages: int = 5_000  # messages whose delivery hops are kept in memory (0: none)
    # A reply (inbox page, history) stays far under gRPC's message cap, whatever the texts.
    reply_max_bytes: int = 1 << 20
    realm_secret_file: str = ""  # default DATA_DIR/realm-secret (created when missing)
    history_default: int = 50
    session_ttl_s: float = 30 * 86400.0
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    hash_concurrency: int = 2
    channel_max_queue: int = 100_000
    grace_s: float = 5.0
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int = -1  # -1: no /metrics endpoint
    files_dir: str = ""  # default DATA_DIR/files; replicas share one (a shared mount)
    file_sweep_s: float = 3600.0  # how often stored contents no file refers to are removed
    # ---- hardening (docs/SECURITY.md lists each limit and the threat it answers) ----
    login_max_failures: int = 10
    login_window_s: float = 300.0
    min_free_bytes: int = 64 * 1024 * 1024
    keepalive_time_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    hash_queue: int = 32
    peer_login_attempts: int = 20
    peer_login_window_s: float = 60.0
    group_key_attempts: int = 10
    group_key_window_s: float = 600.0
    trusted_nets: str = ""
    bad_token_limit: int = 100
    bad_token_window_s: float = 10.0
    upload_stall_s: float = 60.0
    max_uploads_per_user: int = 4
    max_uploads: int = 64
    groups_per_user: int = 1000
    allow_wal_loss: bool = False


def parse_args(argv: list[str] | None = None) -> MainConfig:
    d = MainConfig()
    p = EnvArgumentParser("REALMCHAT_MAIN", prog="python -m main_server",
                          description="realmchat main server (gRPC, package chat.v1)")
    p.add_option("--host", default=d.host, help="address to listen on")
    p.add_option("--port", default=d.port, help="gRPC port (0 = any free port)")
    p.add_option("--data-dir", default=str(d.data_dir), help="directory for the database and files")
    p.add_option("--db", default=d.db, help="database: empty for DATA_DIR/chat.db, sqlite:///PATH, or postgresql://USER@HOST:PORT/DB")
    p.add_option("--sqlite-synchronous", default=d.sqlite_synchronous, choices=["FULL", "NORMAL"],
                 help="SQLite synchronous mode (FULL survives power loss; NORMAL only process crashes)")
    p.add_option("--max-file-bytes", default=d.max_file_bytes, help="largest file accepted")
    p.add_option("--max-message-bytes", default=d.max_message_bytes, help="largest message text (UTF-8)")
    p.add_option("--min-password-length", default=d.min_password_length, help="shortest password accepted")
    p.add_option("--inbox-page", default=d.inbox_page, help="most messages one inbox call returns")
    p.add_option("--trace-messages", default=d.trace_messages,
                 help="the most recent messages whose delivery hops `trace` can show (0: keep none)")
    p.add_option("--reply-max-bytes", default=d.reply_max_bytes,
                 help="largest inbox or history reply: longer pages are cut (more=true)")
    p.add_option("--realm-secret-file", default=d.realm_secret_file,
                 help="the realm credential realms must present (default DATA_DIR/realm-secret, "
                      "created when missing; $REALMCHAT_REALM_SECRET overrides)")
    p.add_option("--session-ttl-s", default=d.session_ttl_s, help="how long a session token stays valid")
    p.add_option("--argon2-time-cost", default=d.argon2_time_cost, help="argon2id iterations")
    p.add_option("--argon2-memory-kib", default=d.argon2_memory_kib, help="argon2id memory per hash")
    p.add_option("--hash-concurrency", default=d.hash_concurrency, help="password hashes run at once")
    p.add_option("--grace-s", default=d.grace_s, help="graceful shutdown: time for in-flight calls")
    p.add_option("--log-level", default=d.log_level, help="DEBUG, INFO, WARNING or ERROR")
    p.add_option("--log-format", default=d.log_format, choices=["text", "json"], help="log lines as text or JSON")
    p.add_option("--files-dir", default=d.files_dir,
                 help="file store (default DATA_DIR/files); main replicas must share one")
    p.add_option("--file-sweep-s", default=d.file_sweep_s,
                 help="remove stored file contents that no file refers to at start and this often (0 = never)")
    p.add_option("--metrics-port", default=d.metrics_port,
                 help="serve Prometheus /metrics on this port of --host (0 = any free port, -1 = off)")
    _add_hardening_options(p, d)
    a = p.parse_args(argv)
    try:  # a bad --db is one clear line at start, not a traceback when the pool opens
        parse_db_url(a.db, Path(a.data_dir))
    except ValueError as exc:
        p.error(str(exc))
    return MainConfig(
        host=a.host, port=a.port, data_dir=Path(a.data_dir), db=a.db,
        sqlite_synchronous=a.sqlite_synchronous, max_file_bytes=a.max_file_bytes,
        max_message_bytes=a.max_message_bytes, min_password_length=a.min_password_length,
        inbox_page=a.inbox_page, trace_messages=a.trace_messages, reply_max_bytes=a.reply_max_bytes,
        realm_secret_file=a.realm_secret_file, session_ttl_s=a.session_ttl_s, argon2_time_cost=a.argon2_time_cost,
        argon2_memory_kib=a.argon2_memory_kib, hash_concurrency=a.hash_concurrency,
        grace_s=a.grace_s, log_level=a.log_level, log_format=a.log_format, metrics_port=a.metrics_port,
        files_dir=a.files_dir, file_sweep_s=a.file_sweep_s,
        **_hardening_values(p, a),
    )


def _add_hardening_options(p: EnvArgumentParser, d: MainConfig) -> None:
    p.add_option("--login-max-failures", default=d.login_max_failures,
                 help="failed logins per account per login window before Auth is refused (0 = no limit)")
    p.add_option("--login-window-s", default=d.login_window_s, help="window of --login-max-failures")
    p.add_option("--min-free-bytes", default=d.min_free_bytes,
                 help="free disk space kept in the data dir: new messages, users and files are refused below it")
    p.add_option("--keepalive-time-s", default=d.keepalive_time_s,
                 help="ping idle realm/client connections this often to find dead peers")
    p.add_option("--keepalive-timeout-s", default=d.keepalive_timeout_s,
                 help="a peer that does not answer a ping within this long is dropped (its users go offline)")
    p.add_option("--hash-queue", default=d.hash_queue,
                 help="password hashes waiting or running before Auth/Register fail fast "
                      "(registrations: half; 0 = no limit)")
    p.add_option("--peer-login-attempts", default=d.peer_login_attempts,
                 help="Auth attempts and registrations per direct gRPC peer address per window (0 = no limit)")
    p.add_option("--peer-login-window-s", default=d.peer_login_window_s, help="window of --peer-login-attempts")
    p.add_option("--group-key-attempts", default=d.group_key_attempts,
                 help="group keys an account may try per window (joingroup GROUP KEY); "
                      "five times as many per group (0 = no limit)")
    p.add_option("--group-key-window-s", default=d.group_key_window_s, help="window of --group-key-attempts")
    p.add_option("--trusted-nets", default=d.trusted_nets,
                 help="comma-separated networks exempt from the per-peer limits of direct gRPC callers")
    p.add_option("--bad-token-limit", default=d.bad_token_limit,
                 help="calls with an unknown or expired token per direct gRPC peer per window (0 = no limit)")
    p.add_option("--bad-token-window-s", default=d.bad_token_window_s, help="window of --bad-token-limit")
    p.add_option("--upload-stall-s", default=d.upload_stall_s,
                 help="an upload that sends no chunk for this long is cancelled (0 = never)")
    p.add_option("--max-uploads-per-user", default=d.max_uploads_per_user,
                 help="uploads one user may run at once (0 = no limit)")
    p.add_option("--max-uploads", default=d.max_uploads, help="uploads running at once in all (0 = no limit)")
    p.add_option("--groups-per-user", default=d.groups_per_user,
                 help="groups one user may be a member of, created or joined (0 = no limit)")
    p.add_option("--allow-wal-loss", default=d.allow_wal_loss,
                 help="start even though the SQLite write-ahead log of an unclean shutdown is missing or damaged")
    p.add_option("--tls-cert", default=d.tls_cert, help="PEM certificate (chain): serve gRPC over TLS")
    p.add_option("--tls-key", default=d.tls_key, help="PEM private key of --tls-cert")
    p.add_option("--tls-ca", default=d.tls_ca, help="PEM CA bundle: require client certificates signed by it (mTLS)")


def _hardening_values(p: EnvArgumentParser, a: argparse.Namespace) -> dict[str, Any]:
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.tls_ca and not a.tls_cert:
        p.error("--tls-ca (mTLS) needs --tls-cert and --tls-key")
    if a.keepalive_time_s <= 0 or a.keepalive_timeout_s <= 0:
        p.error("--keepalive-time-s and --keepalive-timeout-s must be positive")
    names = ("login_max_failures", "login_window_s", "min_free_bytes", "keepalive_time_s", "keepalive_timeout_s",
             "tls_cert", "tls_key", "tls_ca", "hash_queue", "peer_login_attempts", "peer_login_window_s",
             "trusted_nets", "bad_token_limit", "bad_token_window_s", "upload_stall_s", "max_uploads_per_user",
             "max_uploads", "groups_per_user", "allow_wal_loss", "group_key_attempts", "group_key_window_s")
    return {n: getattr(a, n) for n in names}
