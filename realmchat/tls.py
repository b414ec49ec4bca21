"""TLS material loading for the three places that can use it: the realm's client port (plain TLS,
so `openssl s_client` and `ncat --ssl` work), main's gRPC port (TLS, or mTLS when a client CA is
given) and the realm's channel to main. Files are PEM; errors name the file that is wrong."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SystemExit(f"cannot read {what} {path!r}: {e.strerror}") from None


def client_port_context(cert: str, key: str) -> ssl.SSLContext:
    """The realm's listening context: TLS 1.2+, the server's certificate chain and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise SystemExit(f"cannot load TLS certificate {cert!r} / key {key!r}: {e}") from None
    return ctx


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """main's gRPC credentials. With client_ca, every client (realm, grpcurl) must present a
    certificate signed by it (mTLS)."""
    pair = [(_read(key, "TLS key"), _read(cert, "TLS certificate"))]
    if client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(client_ca, "client CA"),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """A realm's credentials towards main: main's CA, and a client certificate for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "main CA"),
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None,
    )


def open_channel(addr: str, options: list[tuple[str, Any]], credentials: grpc.ChannelCredentials | None = None,
                 server_name: str = "") -> grpc.aio.Channel:
    """A grpc.aio channel, secure when credentials are given. server_name overrides the name
    checked in the server's certificate (for a main reached by an address not in its cert)."""
    if credentials is None:
        return grpc.aio.insecure_channel(addr, options=options)
    opts = list(options)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(addr, credentials, options=opts)
