"""The streaming RPCs (Link, Subscribe, Relay, UploadFile, DownloadFile) pass the same guard as
unary calls: the same access check and errors, and they show in the same metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import bearer

from .hardutil import Grpc
from .stack import start_stack
from .test_ops import metrics_url, scrape

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


async def _code(call: Callable[[], object]) -> tuple[str, str]:
    try:
        got = call()
        if hasattr(got, "__aiter__"):
            async for _ in got:  # type: ignore[attr-defined]
                pass
        else:
            await got  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    raise AssertionError("the call was accepted")


async def test_streams_are_checked_counted_and_mapped_like_unary_calls(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path / "data", realms=(), main_extra=(*CHEAP, "--metrics-port", "0"))
    g = Grpc(s.main.addr)
    try:
        token = await g.login(uname("guard"))

        async def upload() -> AsyncIterator[pb.UploadRequest]:
            yield pb.UploadRequest(chunk=b"no header first")

        async def no_calls() -> AsyncIterator[pb.RelayRequests]:
            return
            yield  # an async generator that sends nothing

        forged = bearer("forged-token")
        # The same refusal a unary call gets for the same identity.
        unary_user = await _code(lambda: g.stub.Who(pb.WhoRequest(), metadata=forged, timeout=10))
        unary_realm = await _code(lambda: g.stub.AckEvents(pb.AckEventsRequest(), metadata=bearer(token),
                                                           timeout=10))
        assert unary_user[0] == "UNAUTHENTICATED" and unary_realm[0] == "PERMISSION_DENIED"
        assert await _code(lambda: g.stub.Subscribe(pb.SubscribeRequest(), metadata=forged, timeout=10)) == unary_user
        assert await _code(lambda: g.stub.DownloadFile(pb.DownloadRequest(id=1), metadata=forged,
                                                       timeout=10)) == unary_user
        assert await _code(lambda: g.stub.UploadFile(upload(), metadata=forged, timeout=10)) == unary_user
        assert await _code(lambda: g.stub.Link(pb.LinkRequest(realm="r"), metadata=bearer(token),
                                               timeout=10)) == unary_realm
        assert await _code(lambda: g.stub.Relay(no_calls(), metadata=bearer(token), timeout=10)) == unary_realm
        # Errors of the body itself: typed, and counted under the stream's own label.
        bad_upload = await _code(lambda: g.stub.UploadFile(upload(), metadata=bearer(token), timeout=10))
        assert bad_upload == ("INVALID_ARGUMENT", "the first UploadRequest must carry the header")
        missing = await _code(lambda: g.stub.DownloadFile(pb.DownloadRequest(id=987654), metadata=bearer(token),
                                                          timeout=10))
        assert missing[0] == "NOT_FOUND", missing

        m = scrape(metrics_url(s.main))
        errors = {k: v for k, v in m.items() if k.startswith("realmchat_main_rpc_errors_total{")}

        def count(method: str, code: str) -> float:
            return sum(v for k, v in errors.items() if f'method="{method}"' in k and f'code="{code}"' in k)

        assert count("Subscribe", "UNAUTHENTICATED") == 1, errors
        assert count("DownloadFile", "UNAUTHENTICATED") == 1, errors
        assert count("DownloadFile", "NOT_FOUND") == 1, errors
        assert count("UploadFile", "UNAUTHENTICATED") == 1, errors
        assert count("UploadFile", "INVALID_ARGUMENT") == 1, errors
        assert count("Link", "PERMISSION_DENIED") == 1, errors
        assert count("Relay", "PERMISSION_DENIED") == 1, errors
        for method in ("Subscribe", "DownloadFile", "UploadFile", "Link", "Relay"):
            assert m.get(f'realmchat_main_rpc_seconds_count{{method="{method}"}}', 0) >= 1, method
    finally:
        await g.close()
        s.stop()
