"""The --db URL, parsed once for every part of main that opens a database.

    ''  or  sqlite            DATA_DIR/chat.db
    sqlite:///PATH            that file
    postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?pool_min=N&pool_max=N&...]   (postgres:// too)

pool_min and pool_max are realmchat's own options: they size main's connection pool and are taken
out of the URL, because asyncpg sends every query parameter it does not know to the server as a
setting, which the server rejects ("unrecognized configuration parameter"). The other parameters
(sslmode, ...) stay for asyncpg. The storage pool and the replicas' LISTEN/NOTIFY connections both
connect with `dsn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POOL_MIN = 2
# Ten connections saturate a small server; more only add lock and memory contention.
POOL_MAX = 10
POOL_LIMIT = 1000  # a pool larger than this is a typo, not a tuning
OWN_OPTIONS = ("pool_min", "pool_max")


@dataclass(frozen=True, slots=True)
class DbUrl:
    engine: Literal["sqlite", "postgresql"]
    sqlite_path: Path | None = None  # sqlite only
    dsn: str = ""  # postgresql only: what asyncpg connects with (no pool options)
    pool_min: int = POOL_MIN
    pool_max: int = POOL_MAX

    @property
    def is_postgres(self) -> bool:
        return self.engine == "postgresql"

    def redacted(self) -> str:
        return redact(self.dsn) if self.is_postgres else str(self.sqlite_path)


def parse_db_url(text: str, data_dir: Path, pool_min: int = POOL_MIN, pool_max: int = POOL_MAX) -> DbUrl:
    """Raises ValueError saying what is wrong and what a good URL looks like."""
    if text in ("", "sqlite"):
        return DbUrl("sqlite", sqlite_path=data_dir / "chat.db")
    if text.startswith("sqlite:///"):
        path = text.removeprefix("sqlite:///")
        if not path:
            raise ValueError("--db sqlite:/// needs a path: sqlite:///PATH")
        return DbUrl("sqlite", sqlite_path=Path(path))
    if text.startswith(("postgresql://", "postgres://")):
        return parse_postgres_url(text, pool_min, pool_max)
    raise ValueError(f"unsupported --db {text.split(':', 1)[0]!r}: use sqlite:///PATH or "
                     "postgresql://USER@HOST:PORT/DB")


def parse_postgres_url(text: str, pool_min: int = POOL_MIN, pool_max: int = POOL_MAX) -> DbUrl:
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"not a PostgreSQL URL: {redact(text)}: use postgresql://USER@HOST:PORT/DB")
    parts = urlsplit(text)
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"--db {redact(text)}: no host: use postgresql://USER@HOST:PORT/DB")
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in OWN_OPTIONS:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"--db {key}={value!r}: a whole number of connections") from None
            if not 1 <= n <= POOL_LIMIT:
                raise ValueError(f"--db {key}={n}: between 1 and {POOL_LIMIT} connections")
            if key == "pool_min":
                pool_min = n
            else:
                pool_max = n
        else:
            rest.append((key, value))
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return DbUrl("postgresql", dsn=dsn, pool_min=min(pool_min, pool_max), pool_max=pool_max)


def redact(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
