"""The GUI's configuration: a frozen dataclass built from the command line (and environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from realmchat.config import EnvArgumentParser, parse_hostport

DEFAULT_REALM = "127.0.0.1:8000"


@dataclass(frozen=True)
class GuiConfig:
    web: bool = False
    host: str = "127.0.0.1"
    port: int = 8550
    realm_host: str = "127.0.0.1"
    realm_port: int = 8000
    downloads: Path = Path("downloads")
    upload_dir: Path | None = None  # web mode: where the browser's uploads land (a temp dir if None)
    session_timeout: int = 90       # web mode: seconds a closed tab keeps its session and realm login
    tls: bool = False               # connect to realms with TLS (certificate verified)
    ca: str = ""                    # PEM CA for the realms' certificates (default: the system's)

    @property
    def realm(self) -> str:
        return f"{self.realm_host}:{self.realm_port}"


def parse_args(argv: list[str] | None = None) -> GuiConfig:
    p = EnvArgumentParser("REALMCHAT_GUI", prog="python -m gui",
                          description="realmchat's Flet chat app (desktop window, or a web app with --web)")
    p.add_option("--web", default=False, help="serve the web app instead of opening a desktop window")
    p.add_option("--host", default="127.0.0.1", help="web mode: address to listen on")
    p.add_option("--port", default=8550, help="web mode: port to listen on (0 = any free port)")
    p.add_option("--realm", default=DEFAULT_REALM,
                 help="HOST:PORT of the realm the connect screen proposes (the user can change it)")
    p.add_option("--downloads", default="downloads", help="directory where received files are saved")
    p.add_option("--upload-dir", default="", help="web mode: directory for browser uploads (default: a temp dir)")
    p.add_option("--session-timeout", default=90,
                 help="web mode: seconds a closed tab keeps its session (a reload within it resumes); "
                      "then its realm connection closes")
    p.add_option("--tls", default=False,
                 help="connect to realms with TLS (their certificate is verified, name included)")
    p.add_option("--ca", default="", help="PEM file of the CA that signed the realms' certificates "
                 "(instead of the system's trust store); implies --tls")
    a = p.parse_args(argv)
    realm_host, realm_port = parse_hostport(a.realm, 8000)
    return GuiConfig(
        web=a.web, host=a.host, port=a.port, realm_host=realm_host, realm_port=realm_port,
        downloads=Path(a.downloads).expanduser(),
        upload_dir=Path(a.upload_dir).expanduser() if a.upload_dir else None,
        session_timeout=max(1, int(a.session_timeout)),
        tls=bool(a.tls or a.ca), ca=a.ca,
    )
