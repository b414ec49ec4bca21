"""python -m main_server --host H --port P --data-dir DIR
python -m main_server backup DEST [--data-dir DIR | --db URL]"""

from __future__ import annotations

import sys
from pathlib import Path

from realmchat.logs import setup_logging
from realmchat.runtime import run

from .config import MainConfig, parse_args
from .server import serve


def backup(dest: str, config: MainConfig) -> int:
    """An online backup of the SQLite database (safe while main runs), or advice for PostgreSQL."""
    if config.db.startswith(("postgresql://", "postgres://")):
        print("main_server backup: the data is in PostgreSQL; back it up with its own tools, e.g.\n"
              "  pg_dump --format=custom --file=realmchat.dump 'DATABASE_URL'\n"
              "(restore with pg_restore; also copy the file store, --files-dir)", file=sys.stderr)
        return 2
    from .storage.sqlite import backup as sqlite_backup

    sqlite_url = config.db.startswith("sqlite:///")
    src = Path(config.db.removeprefix("sqlite:///")) if sqlite_url else config.data_dir / "chat.db"
    target = Path(dest)
    if target.is_dir():
        target = target / "chat.db"
    if target.exists():
        print(f"main_server backup: {target} exists; give a new file name", file=sys.stderr)
        return 1
    try:
        pages = sqlite_backup(src, target)
    except (OSError, FileNotFoundError) as exc:
        print(f"main_server backup: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {src} to {target} ({pages} pages); files are in "
          f"{config.files_dir or config.data_dir / 'files'} (copy them too)")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["backup"]:
        if len(args) < 2 or args[1].startswith("-"):
            raise SystemExit("usage: python -m main_server backup DEST [--data-dir DIR | --db URL]")
        raise SystemExit(backup(args[1], parse_args(args[2:])))
    config = parse_args(args)
    setup_logging(config.log_level, config.log_format, "main")
    run(serve(config))


if __name__ == "__main__":
    main()
