"""The connection cap must fit the process's descriptor limit (RLIMIT_NOFILE): past it, accept()
fails with EMFILE, the client gets no answer at all and asyncio logs an error per attempt. With
the cap below the limit, a client past it gets a clear "realm is full" ERROR line instead."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def headroom(limit: int) -> int:
    """Descriptors kept for everything that is not a client: the listening socket, main's gRPC
    channel, log files, the refusal of one more client, imports."""
    return max(64, limit // 10)


def connection_cap(configured: int) -> int:
    """Raises the soft descriptor limit to the hard one, then returns the connection cap:
    `configured` (0 = as many as fit), never more than the limit minus headroom."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    fits = max(soft - headroom(soft), 1)
    if configured <= 0:
        return fits
    if configured > fits:
        log.warning("--max-connections %d does not fit the descriptor limit %d: using %d", configured, soft, fits)
        return fits
    return configured
