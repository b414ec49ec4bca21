"""Process plumbing both servers share: the event loop (uvloop when installed) and waiting for
SIGTERM/SIGINT, which start a graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

_stop: asyncio.Event | None = None


def _install_handlers() -> asyncio.Event:
    global _stop
    _stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop.set)
    return _stop


def run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def guarded() -> None:
        # Handlers first: a SIGTERM that arrives while the server is still starting (right after
        # it printed "listening") is a graceful shutdown too, not the default instant death.
        _install_handlers()
        await main

    asyncio.run(guarded())


async def until_stopped() -> None:
    """Returns at the first SIGTERM or SIGINT (also one received before this call, under run())."""
    stop = _stop if _stop is not None else _install_handlers()
    await stop.wait()
