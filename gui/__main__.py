"""`python -m gui [--web] [--host H] [--port P] [--realm HOST:PORT] [--tls] [--ca FILE]`.

Desktop by default (Flet's desktop client). `--web` serves the web app with Flet's own
FastAPI app under uvicorn, offline (no CDN: CanvasKit and fonts come from the flet-web
package), and prints `listening on HOST:PORT` once the port accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import secrets
import signal
import socket
import sys
import tempfile
from pathlib import Path

from .config import GuiConfig, parse_args

log = logging.getLogger("gui")


def _bind(host: str, port: int) -> socket.socket:
    """Binds the listening socket ourselves so that `--port 0` works without a race (Flet's own
    runner picks a "free" port and binds it later) and the real port can be printed."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve_web(config: GuiConfig) -> int:
    # Imported here so `python -m gui --help` and desktop mode stay light.
    import flet_web
    import flet_web.fastapi as flet_fastapi
    import uvicorn

    from .app import GuiApp
    from .web import FontStore, RuntimeFiles, WebExtras

    upload_dir = config.upload_dir or Path(tempfile.mkdtemp(prefix="realmchat-gui-uploads-"))
    upload_dir.mkdir(parents=True, exist_ok=True)
    gui = GuiApp(config, upload_dir=upload_dir)
    asgi = flet_fastapi.app(
        gui.main,
        no_cdn=True,  # offline-capable: never fetch CanvasKit, Pyodide or fonts from a CDN
        upload_dir=str(upload_dir),
        # Flet signs upload URLs; a per-process secret is enough since the URLs live minutes.
        secret_key=os.environ.get("FLET_SECRET_KEY") or secrets.token_urlsafe(32),
        app_name="realmchat",
        app_short_name="realmchat",
        # A closed tab keeps its Flet session (and its realm login) this long, so a reload or a
        # flaky network resumes where the user was; after that Flet's eviction (every 10 s,
        # started by the lifespan) closes the page and with it the realm connection.
        session_timeout_seconds=config.session_timeout,
    )
    web_dir = Path(flet_web.__file__).parent / "web"
    fonts = FontStore()
    if not fonts.has("notocoloremoji") or not fonts.has("notosanscjk"):
        print("realmchat gui: Debian's Noto fonts are missing (fonts-noto-core, fonts-noto-cjk, "
              "fonts-noto-color-emoji; `make setup` installs them): emoji and many scripts will show as boxes",
              file=sys.stderr, flush=True)
    app = WebExtras(asgi, fonts, RuntimeFiles(web_dir))
    try:
        sock = _bind(config.host, config.port)
    except OSError as e:
        print(f"realmchat gui: cannot listen on {config.host}:{config.port}: {e.strerror or e}", file=sys.stderr,
              flush=True)
        return 2
    host, port = sock.getsockname()[:2]
    # The lifespan starts Flet's app manager: without it disconnected sessions are never
    # evicted, page.on_close never fires and a closed tab stays logged in to its realm.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="websockets-sansio",
                                           lifespan="on"))
    # uvicorn re-raises the signal it caught after its graceful shutdown; with no-op handlers
    # in place that re-raise is harmless and SIGTERM or Ctrl-C end the process with exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # The socket already listens, so the address can be announced now: a browser that comes
    # early waits in the accept queue until uvicorn takes it.
    shown = f"[{host}]" if ":" in host else host
    print(f"realmchat gui: listening on {shown}:{port} - open http://{shown}:{port}/ "
          f"(realm {config.realm})", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        await gui.close_all()
        sock.close()
    return 0


def run_desktop(config: GuiConfig) -> int:
    import flet as ft

    from .app import GuiApp

    gui = GuiApp(config, upload_dir=None)
    ft.run(gui.main, view=ft.AppView.FLET_APP)
    return 0


def _headless_linux() -> bool:
    return platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("REALMCHAT_GUI_LOG", "WARNING").upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = parse_args(argv)
    if config.tls:
        from chat_cli.tls import client_context
        from realmchat.errors import ChatError

        try:
            client_context(config.ca)  # a bad CA file is said now, not at the first login
        except ChatError as e:
            print(f"realmchat gui: {e.message}", file=sys.stderr)
            return 2
    if not config.web and _headless_linux():
        # Flet would silently serve the web app on port 8000 (the realm's default port) here;
        # say what happens instead and serve on our own port.
        print("realmchat gui: no display found, serving the web app instead of a window", flush=True)
        config = GuiConfig(**{**config.__dict__, "web": True})
    if config.web:
        return asyncio.run(serve_web(config))
    return run_desktop(config)


if __name__ == "__main__":
    sys.exit(main())
