"""TLS towards a realm that serves it (the realm's --tls-cert/--tls-key): one context for the
terminal client and the GUI. The realm's certificate is always verified, against the system's
trust store or the CA file given with --ca, including its name (host or IP address)."""

from __future__ import annotations

import ssl

from realmchat.errors import InvalidArgument


def client_context(ca: str = "") -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context; `ca` (PEM) replaces the system's trust store."""
    try:
        ctx = ssl.create_default_context(cafile=ca or None)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(f"cannot use the CA file {ca!r}: {getattr(e, 'strerror', None) or e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
