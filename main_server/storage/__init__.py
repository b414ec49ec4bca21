"""Storage behind one small interface; one class per engine."""

from __future__ import annotations

from pathlib import Path

from ..dburl import DbUrl, parse_db_url
from .base import Storage


def open_storage(db: str | DbUrl, data_dir: Path, synchronous: str = "FULL", allow_wal_loss: bool = False) -> Storage:
    """The engine for a --db URL (main_server/dburl.py): '' or sqlite:///path (default:
    DATA_DIR/chat.db), or postgresql://user[:password]@host:port/dbname[?pool_max=N] (asyncpg is
    imported only then)."""
    url = parse_db_url(db, data_dir) if isinstance(db, str) else db
    if url.engine == "sqlite":
        from .sqlite import SQLiteStorage

        assert url.sqlite_path is not None
        return SQLiteStorage(url.sqlite_path, synchronous=synchronous, allow_wal_loss=allow_wal_loss)
    from .postgres import PostgresStorage

    return PostgresStorage(url.dsn, min_size=url.pool_min, max_size=url.pool_max)
