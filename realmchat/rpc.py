"""The one translation between typed errors and gRPC status codes, used by the main server
(ChatError -> status) and by gRPC clients such as the realm (status -> ChatError)."""

from __future__ import annotations

import grpc

from .codes import Code
from .errors import REASON_KEY, ChatError, Unavailable, error_for

# Messages stay far below gRPC's 4 MiB default; chunks of files are this big.
FILE_CHUNK = 256 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


# grpcio aio (grpc/grpc#36066): when the server ends a client-streaming call (an upload) while the
# client is still sending - it refused the file from its header, or its disk filled up - a write
# that races with the status replaces the server's code and details with this INTERNAL error.
CORE_WRITE_RACE = "Internal error from Core"
EARLY_END = ("the main server ended the transfer early (it refused it or could not store it: check the "
             "recipient and the size, or try again later); nothing was stored")


def status_for(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.value] if code is not Code.OK else grpc.StatusCode.OK


def error_from_rpc(exc: grpc.aio.AioRpcError) -> ChatError:
    """A gRPC failure as the typed error the text protocol reports."""
    status = exc.code()
    details = exc.details() or ""
    if status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                  grpc.StatusCode.CANCELLED):
        return Unavailable("the main server is unavailable, try again shortly" +
                           (f" ({details})" if details and status is not grpc.StatusCode.UNAVAILABLE else ""))
    if status is grpc.StatusCode.UNKNOWN:
        return error_for(Code.INTERNAL, "internal error in the main server")
    if status is grpc.StatusCode.INTERNAL and details == CORE_WRITE_RACE:
        return Unavailable(EARLY_END)
    err = error_for(status.name, details)
    err.reason = next((str(v) for k, v in exc.trailing_metadata() or () if k == REASON_KEY), "")
    return err


def reason_metadata(exc: ChatError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that carries a typed error's reason across gRPC (none if it has none)."""
    return ((REASON_KEY, exc.reason),) if exc.reason else ()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def token_from(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[7:].strip()
    return ""


KEEPALIVE_OPTIONS = [
    # Dead peers are found in seconds, not after the kernel's 2-hour TCP keepalive.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # grpcio 1.85 waits for a keepalive ping's ack up to the general ping timeout (60 s by
    # default) whatever keepalive_timeout_ms says: without this a hung peer (SIGSTOP, a frozen
    # host) is found after ~70 s, not 15 s (tests/test_faults.py measures it).
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

SERVER_OPTIONS = [
    *KEEPALIVE_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
]


def server_options(keepalive_time_s: float = 10.0, keepalive_timeout_s: float = 5.0) -> list[tuple[str, int]]:
    """SERVER_OPTIONS with main's own keepalive: main pings each realm's connection every
    keepalive_time_s and drops it after keepalive_timeout_s without an answer, so the users of a
    realm whose host died (no FIN, no RST) go offline in seconds. The ping interval main accepts
    from clients stays at 5 s: realms ping every 10 s (KEEPALIVE_OPTIONS)."""
    tuned = {"grpc.keepalive_time_ms": int(keepalive_time_s * 1000),
             "grpc.keepalive_timeout_ms": int(keepalive_timeout_s * 1000),
             "grpc.http2.ping_timeout_ms": int(keepalive_timeout_s * 1000),
             "grpc.http2.min_ping_interval_without_data_ms": min(5_000, int(keepalive_time_s * 1000))}
    return [(k, tuned.get(k, v)) for k, v in SERVER_OPTIONS]
