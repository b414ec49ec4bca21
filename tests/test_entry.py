"""One entry point for every call into main: a unary RPC and the same call relayed by a realm get
the same access check, the same answer and the same error, and the metrics' label set stays
closed whatever method names a caller invents."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from realmchat import realmauth
from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import bearer

from .hardutil import Grpc
from .stack import start_stack
from .test_ops import metrics_url, scrape

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


async def relay(g: Grpc, calls: list[pb.RelayCall]) -> dict[int, pb.RelayResult]:
    async def one_batch() -> AsyncIterator[pb.RelayRequests]:
        yield pb.RelayRequests(calls=calls)

    got: dict[int, pb.RelayResult] = {}
    md = realmauth.metadata(os.environ[realmauth.ENV_SECRET])
    async for replies in g.stub.Relay(one_batch(), timeout=30, metadata=md):
        for r in replies.results:
            got[r.id] = r
        if len(got) == len(calls):
            break
    return got


async def test_unary_and_relayed_calls_answer_alike_and_labels_stay_closed(tmp_path: Path, uname: Names) -> None:
    s = start_stack(tmp_path / "data", realms=(), main_extra=(*CHEAP, "--metrics-port", "0"))
    g = Grpc(s.main.addr)
    try:
        token = await g.login(uname("entry"))
        req = pb.SendPrivateRequest(to="nobody-at-all", text="hi")
        try:
            await g.stub.SendPrivate(req, metadata=bearer(token))
            raise AssertionError("a message to an unknown user was accepted")
        except grpc.aio.AioRpcError as exc:
            unary = (exc.code().name, exc.details())
        calls = [pb.RelayCall(id=1, method="SendPrivate", token=token, payload=req.SerializeToString()),
                 pb.RelayCall(id=2, method="SendPrivate", token="forged", payload=req.SerializeToString())]
        calls += [pb.RelayCall(id=10 + i, method=f"Invented{i}", token=token) for i in range(500)]
        got = await relay(g, calls)
        assert (got[1].code, got[1].message) == unary
        assert got[2].code == "UNAUTHENTICATED"
        assert {got[10 + i].code for i in range(500)} == {"UNIMPLEMENTED"}
        series = [k for k in scrape(metrics_url(s.main)) if k.startswith("realmchat_main_rpc_errors_total{")]
        assert any('method="unknown"' in k for k in series), series
        assert not any("Invented" in k for k in series), "a caller's method names became metric labels"
        assert len(series) < 20, series
    finally:
        await g.close()
        s.stop()
