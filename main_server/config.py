"""Main server configuration: a frozen dataclass built from argv and REALMCHAT_MAIN_* env."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from realmchat.config import EnvArgumentParser


@dataclass(frozen=True)
class MainConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    db: str = ""
    sqlite_synchronous: str = "FULL"
    max_file_bytes: int = 1 << 30
    max_message_bytes: int = 16 * 1024
    min_password_length: int = 2
    inbox_page: int = 1000
    history_default: int = 50
    session_ttl_s: float = 30 * 86400
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    hash_concurrency: int = 2
    channel_max_queue: int = 100_000
    grace_s: float = 5.0
    log_level: str = "INFO"


def parse_args(argv: list[str] | None = None) -> MainConfig:
    d = MainConfig()
    p = EnvArgumentParser("REALMCHAT_MAIN", prog="python -m main_server",
                          description="realmchat main server (gRPC, package chat.v1)")
    p.add_option("--host", default=d.host, help="address to listen on")
    p.add_option("--port", default=d.port, help="gRPC port (0 = any free port)")
    p.add_option("--data-dir", default=str(d.data_dir), help="directory for the database and files")
    p.add_option("--db", default=d.db, help="database URL: empty for DATA_DIR/chat.db, or sqlite:///PATH")
    p.add_option("--sqlite-synchronous", default=d.sqlite_synchronous, choices=["FULL", "NORMAL"],
                 help="SQLite synchronous mode (FULL survives power loss; NORMAL only process crashes)")
    p.add_option("--max-file-bytes", default=d.max_file_bytes, help="largest file accepted")
    p.add_option("--max-message-bytes", default=d.max_message_bytes, help="largest message text (UTF-8)")
    p.add_option("--min-password-length", default=d.min_password_length, help="shortest password accepted")
    p.add_option("--inbox-page", default=d.inbox_page, help="most messages one inbox call returns")
    p.add_option("--session-ttl-s", default=d.session_ttl_s, help="how long a session token stays valid")
    p.add_option("--argon2-time-cost", default=d.argon2_time_cost, help="argon2id iterations")
    p.add_option("--argon2-memory-kib", default=d.argon2_memory_kib, help="argon2id memory per hash")
    p.add_option("--hash-concurrency", default=d.hash_concurrency, help="password hashes run at once")
    p.add_option("--grace-s", default=d.grace_s, help="graceful shutdown: time for in-flight calls")
    p.add_option("--log-level", default=d.log_level, help="DEBUG, INFO, WARNING or ERROR")
    a = p.parse_args(argv)
    return MainConfig(
        host=a.host, port=a.port, data_dir=Path(a.data_dir), db=a.db,
        sqlite_synchronous=a.sqlite_synchronous, max_file_bytes=a.max_file_bytes,
        max_message_bytes=a.max_message_bytes, min_password_length=a.min_password_length,
        inbox_page=a.inbox_page, session_ttl_s=a.session_ttl_s, argon2_time_cost=a.argon2_time_cost,
        argon2_memory_kib=a.argon2_memory_kib, hash_concurrency=a.hash_concurrency,
        grace_s=a.grace_s, log_level=a.log_level,
    )
