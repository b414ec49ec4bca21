"""python -m main_server --host H --port P --data-dir DIR"""

from __future__ import annotations

from realmchat.logs import setup_logging
from realmchat.runtime import run

from .config import parse_args
from .server import serve


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    setup_logging(config.log_level, config.log_format, "main")
    run(serve(config))


if __name__ == "__main__":
    main()
