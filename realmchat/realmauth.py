"""The realm credential: a shared secret that realms present to main on their own calls (Link,
Relay, AckEvents, Attach). Users' tokens never open those calls: whoever holds a realm's link
sees every event of its users. Main and the realm both use this module."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

METADATA_KEY = "x-realm-credential"
# The secret itself may come from the environment (both servers read it): handy for containers
# and the test suite; a file keeps it out of process listings.
ENV_SECRET = "REALMCHAT_REALM_SECRET"
DEFAULT_FILE = "realm-secret"


class CredentialError(Exception):
    pass


def read_secret(path: str) -> str:
    """The secret from $REALMCHAT_REALM_SECRET, else from the file at path ('' if neither)."""
    value = os.environ.get(ENV_SECRET, "").strip()
    if value:
        return value
    if not path:
        return ""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise CredentialError(f"cannot read the realm credential file {path}: {exc.strerror}") from None
    if len(value) < 16:
        raise CredentialError(f"the realm credential in {path} is too short: use at least 16 characters")
    return value


def ensure_secret(path: Path) -> str:
    """Main's secret: the environment's, else the file's, else a new random one written to the
    file (mode 0600) for the realms on this host to read."""
    value = os.environ.get(ENV_SECRET, "").strip()
    if value:
        return value
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return read_secret(str(path))


def metadata(secret: str) -> tuple[tuple[str, str], ...]:
    return ((METADATA_KEY, secret),)


def presented(md: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in md or ():
        if key == METADATA_KEY and isinstance(value, str):
            return value
    return ""


def matches(given: str, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
