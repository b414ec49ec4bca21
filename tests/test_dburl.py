"""The --db URL parser (main_server/dburl.py): one parser for the storage pool and the replicas'
LISTEN/NOTIFY connections, so realmchat's own options never reach PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from main_server.config import parse_args
from main_server.dburl import DbUrl, parse_db_url

DATA = Path("/var/lib/realmchat")


@pytest.mark.parametrize(("text", "want"), [
    ("", DbUrl("sqlite", sqlite_path=DATA / "chat.db")),
    ("sqlite", DbUrl("sqlite", sqlite_path=DATA / "chat.db")),
    ("sqlite:////srv/chat.db", DbUrl("sqlite", sqlite_path=Path("/srv/chat.db"))),
    ("postgresql://rc:pw@db:5432/realmchat?pool_max=10",
     DbUrl("postgresql", dsn="postgresql://rc:pw@db:5432/realmchat", pool_min=2, pool_max=10)),
    ("postgres://rc@db/realmchat?sslmode=verify-full&pool_min=4&pool_max=20",
     DbUrl("postgresql", dsn="postgres://rc@db/realmchat?sslmode=verify-full", pool_min=4, pool_max=20)),
    # pool_min above pool_max: the pool cannot hold more than its maximum
    ("postgresql://rc@db/x?pool_min=30", DbUrl("postgresql", dsn="postgresql://rc@db/x", pool_min=10, pool_max=10)),
    ("postgresql://rc@db/x", DbUrl("postgresql", dsn="postgresql://rc@db/x")),
])
def test_urls_main_accepts(text: str, want: DbUrl) -> None:
    assert parse_db_url(text, DATA) == want


@pytest.mark.parametrize(("text", "error"), [
    ("mysql://rc@db/x", "unsupported --db 'mysql'"),
    ("sqlite:///", "needs a path"),
    ("postgresql:///x", "no host"),
    ("postgresql://rc@db/x?pool_max=ten", "pool_max='ten': a whole number"),
    ("postgresql://rc@db/x?pool_max=0", "pool_max=0: between 1 and 1000"),
    ("postgresql://rc@db/x?pool_min=-1", "pool_min=-1: between 1 and 1000"),
])
def test_urls_main_refuses_say_why(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=r"^--db|^unsupported") as info:
        parse_db_url(text, DATA)
    assert error in str(info.value)


def test_the_password_never_appears_in_what_is_logged() -> None:
    db = parse_db_url("postgresql://rc:s3cret@db:5432/realmchat?pool_max=5", DATA)
    assert db.redacted() == "postgresql://rc:***@db:5432/realmchat"
    with pytest.raises(ValueError) as info:
        parse_db_url("postgresql://rc:s3cret@db/x?pool_max=many", DATA)
    assert "s3cret" not in str(info.value)


def test_a_bad_url_stops_main_at_start_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--db", "postgresql://rc@db/x?pool_max=ten"])
    assert info.value.code == 2
    assert "pool_max='ten': a whole number of connections" in capsys.readouterr().err
