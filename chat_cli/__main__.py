"""`python -m chat_cli --host H --port P [--tls] [--ca FILE] [--download-dir DIR] [--json]`: the
terminal client."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from realmchat.config import EnvArgumentParser
from realmchat.errors import ChatError

from .terminal import amain
from .tls import client_context


def main(argv: list[str] | None = None) -> int:
    parser = EnvArgumentParser(
        "REALMCHAT_CLI",
        prog="python -m chat_cli",
        description="Terminal client of a realmchat realm. Interactive when stdin is a terminal; "
        "otherwise runs the piped commands in order and exits 1 if any failed.",
    )
    parser.add_option("--host", default="127.0.0.1", help="realm host")
    parser.add_option("--port", default=8000, help="realm port")
    parser.add_option("--download-dir", default="./downloads", help="where receivefile saves files")
    parser.add_option("--json", default=False, help="print the raw protocol lines instead of human output")
    parser.add_option("--wait", default=0.0,
                      help="piped mode: after the last command, keep printing events for this many seconds")
    parser.add_option("--reconnect", default=True,
                      help="reconnect (and log in again) by itself when the connection is lost")
    parser.add_option("--tls", default=False,
                      help="connect with TLS (the realm's certificate is verified, name included)")
    parser.add_option("--ca", default="", help="PEM file of the CA that signed the realm's certificate "
                      "(instead of the system's trust store); implies --tls")
    parser.add_option("--ids", default=False,
                      help="piped mode: show each message's id (#123) as the interactive client does")
    args = parser.parse_args(argv)
    interactive = sys.stdin.isatty()
    try:
        tls = client_context(args.ca) if args.tls or args.ca else None
    except ChatError as e:
        print(f"chat_cli: {e.message}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(amain(args.host, args.port, Path(args.download_dir), args.json, args.wait,
                                 args.reconnect, interactive, tls, args.ids))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
