"""Config helpers: every command-line option can also come from an environment variable."""

from __future__ import annotations

import argparse
import os
from typing import Any


def env_default(prefix: str, dest: str, default: Any) -> Any:
    """The default of option `dest`, overridden by env PREFIX_DEST (e.g. REALMCHAT_MAIN_PORT)."""
    raw = os.environ.get(f"{prefix}_{dest.upper()}")
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


class EnvArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose option defaults read PREFIX_<DEST> from the environment."""

    def __init__(self, env_prefix: str, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)
        self.env_prefix = env_prefix

    def add_option(self, *flags: str, default: Any, help: str, **kwargs: Any) -> None:
        dest = kwargs.pop("dest", None) or flags[0].lstrip("-").replace("-", "_")
        value = env_default(self.env_prefix, dest, default)
        env = f"{self.env_prefix}_{dest.upper()}"
        if isinstance(default, bool):
            self.add_argument(*flags, dest=dest, default=value, action=argparse.BooleanOptionalAction,
                              help=f"{help} [env {env}]", **kwargs)
        else:
            kind = type(default) if default is not None and "type" not in kwargs else kwargs.pop("type", str)
            self.add_argument(*flags, dest=dest, default=value, type=kind, help=f"{help} [env {env}]",
                              **kwargs)


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """'host:port', 'host' or '[v6]:port' -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host or "127.0.0.1", int(port)
    return value, default_port
