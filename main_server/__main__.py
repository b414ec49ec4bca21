"""python -m main_server --host H --port P --data-dir DIR"""

from __future__ import annotations

import asyncio
import logging
import sys

from .config import parse_args
from .server import serve


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s main %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
