"""Logging of unexpected errors without flooding the log: the first one of a kind (where it
happened, exception type) in a minute is logged with its traceback, repeats as one line each,
at most a few per second; the rest are counted and reported with the next line."""

from __future__ import annotations

import logging
import time

WINDOW_S = 60.0
LINES_PER_S = 5.0


class ErrorLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self._traced: dict[tuple[str, type[BaseException]], float] = {}
        self._tokens = LINES_PER_S
        self._stamp = time.monotonic()
        self._dropped = 0

    def __call__(self, where: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._tokens = min(LINES_PER_S, self._tokens + (now - self._stamp) * LINES_PER_S)
        self._stamp = now
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        dropped, self._dropped = self._dropped, 0
        suffix = f" ({dropped} more not logged)" if dropped else ""
        key = (where, type(exc))
        if now - self._traced.get(key, -WINDOW_S) >= WINDOW_S:
            if len(self._traced) > 1000:
                self._traced.clear()
            self._traced[key] = now
            self.log.error("%s: %s: %s%s", where, type(exc).__name__, exc, suffix, exc_info=exc)
        else:
            self.log.error("%s: %s: %s (traceback logged once a minute)%s", where, type(exc).__name__, exc, suffix)
