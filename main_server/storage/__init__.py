"""Storage behind one small interface; one class per engine."""

from __future__ import annotations

from pathlib import Path

from .base import Storage


def open_storage(db_url: str, data_dir: Path, synchronous: str = "FULL", allow_wal_loss: bool = False) -> Storage:
    """The engine for a --db URL: '' or sqlite:///path (default: DATA_DIR/chat.db), or
    postgresql://user[:password]@host:port/dbname[?pool_max=N] (asyncpg is imported only then)."""
    if db_url in ("", "sqlite"):
        from .sqlite import SQLiteStorage

        return SQLiteStorage(data_dir / "chat.db", synchronous=synchronous, allow_wal_loss=allow_wal_loss)
    if db_url.startswith("sqlite:///"):
        from .sqlite import SQLiteStorage

        return SQLiteStorage(Path(db_url.removeprefix("sqlite:///")), synchronous=synchronous,
                             allow_wal_loss=allow_wal_loss)
    if db_url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(db_url)
    raise ValueError(f"unsupported --db {db_url.split(':', 1)[0]!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
