"""Prometheus /metrics for any realmchat process: one HTTP endpoint in a thread, the default
registry (which also carries process CPU, RSS and open fds)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server

# Latency buckets from 100 µs to 10 s: commits and relayed calls sit at the low end.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)


def serve_metrics(host: str, port: int, component: str) -> int:
    """Starts the endpoint (port 0 = any free port), prints where, returns the port."""
    server, _ = start_http_server(port, addr=host)
    real_port = server.server_port
    print(f"{component} metrics on http://{host}:{real_port}/metrics", flush=True)
    return real_port


def labelled(metric: Any) -> Callable[..., Any]:
    """metric.labels(...) memoised: on hot paths (a call per message) prometheus' own lookup takes
    a lock each time. Label values here come from closed sets (verbs, methods, codes)."""
    return functools.lru_cache(maxsize=1024)(metric.labels)
