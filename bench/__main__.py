"""python -m bench (see bench/cli.py)."""

from __future__ import annotations

import sys

from .cli import main

# The guard matters: generator processes are spawned and re-import this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())
