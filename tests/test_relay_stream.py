"""The Relay stream in process (no gRPC transport): calls run without a task each, a call that
needs no I/O answers at once, a call past its deadline is cancelled and answers UNAVAILABLE,
calls fail alone, and the stream's end cancels what still runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from main_server.domain.accounts import Caller
from main_server.servicer import DEADLINE_TICK_S, ChatServicer
from main_server.storage.base import SessionRecord
from realmchat import realmauth
from realmchat.errors import Unauthenticated
from realmchat.pb import chat_pb2 as pb

SECRET = "relay-stream-test-secret-0123456789"


class Ctx:
    def invocation_metadata(self) -> Any:
        return realmauth.metadata(SECRET)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


class FakeService:
    """What the Who, Logout and AckEvents handlers need; Logout blocks until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.logouts_started = 0
        self.logouts_cancelled = 0
        self.acks: list[str] = []
        self.inner_timeout = False  # logout waits under asyncio.timeout (as asyncpg does)
        self.timed_out = 0
        # One object plays every desk the servicer calls.
        self.accounts = self.delivery = self.conversation = self.messages = self.groups = self.files = self

    async def caller(self, token: str, peer: str = "", via_realm: bool = False) -> Caller:
        if token != "good":
            raise Unauthenticated("bad token")
        return Caller(SessionRecord(7, "ann", "Ann", "alpha", time.time()), "h", via_realm)

    def who_status(self) -> list[tuple[str, str, str, str]]:
        return [("Ann", "alpha", "online", "")]

    async def logout(self, caller: Caller) -> None:
        self.logouts_started += 1
        try:
            if self.inner_timeout:
                try:
                    async with asyncio.timeout(0.05):
                        await self.release.wait()
                except TimeoutError:
                    self.timed_out += 1
                await asyncio.sleep(0)
                return
            await self.release.wait()
        except asyncio.CancelledError:
            self.logouts_cancelled += 1
            raise

    def acked(self, link_id: str, written: Any, dropped: Any, written_all: Any, elsewhere: Any = ()) -> None:
        self.acks.append(link_id)


async def drive(servicer: ChatServicer, batches: list[list[pb.RelayCall]], want: int,
                timeout: float = 5.0) -> dict[int, tuple[pb.RelayResult, float]]:
    """Sends the batches, returns each result with when it came (seconds from the start)."""
    t0 = time.monotonic()
    stop = asyncio.Event()

    async def calls() -> AsyncIterator[pb.RelayRequests]:
        for b in batches:
            yield pb.RelayRequests(calls=b)
        await stop.wait()

    got: dict[int, tuple[pb.RelayResult, float]] = {}
    gen = servicer.Relay(calls(), Ctx())
    try:
        async with asyncio.timeout(timeout):
            async for replies in gen:
                for r in replies.results:
                    got[r.id] = (r, time.monotonic() - t0)
                if len(got) >= want:
                    break
    finally:
        stop.set()
        await gen.aclose()
    return got


def call(i: int, method: str, req: Any = None, token: str = "good", timeout_ms: int = 0) -> pb.RelayCall:
    return pb.RelayCall(id=i, method=method, token=token, timeout_ms=timeout_ms,
                        payload=req.SerializeToString() if req is not None else b"")


async def test_calls_answer_fail_alone_and_deadlines_cancel() -> None:
    svc = FakeService()
    servicer = ChatServicer(svc, SECRET)  # type: ignore[arg-type]
    batch = [call(1, "Who", pb.WhoRequest()),
             call(2, "Logout", pb.LogoutRequest(), timeout_ms=200),
             call(3, "Who", pb.WhoRequest(), token="forged"),
             call(4, "NoSuchMethod"),
             pb.RelayCall(id=5, method="Who", token="good", payload=b"\xff\xff\xff"),
             call(6, "AckEvents", pb.AckEventsRequest(link_id="L1"), token="")]
    got = await drive(servicer, [batch], want=6)
    assert pb.WhoResponse.FromString(got[1][0].payload).online[0].user == "Ann"
    assert got[1][1] < 0.15, "a call that needs no I/O waits for nothing"
    assert (got[2][0].code, got[2][0].message) == ("UNAVAILABLE", "the call ran past its deadline")
    assert 0.2 <= got[2][1] < 0.2 + DEADLINE_TICK_S + 0.25, got[2][1]
    assert svc.logouts_started == 1 and svc.logouts_cancelled == 1, "the late call was not stopped"
    assert got[3][0].code == "UNAUTHENTICATED"
    assert got[4][0].code == "UNIMPLEMENTED"
    assert got[5][0].code == "INVALID_ARGUMENT"
    assert got[6][0].code == "" and svc.acks == ["L1"]


async def test_a_call_within_its_deadline_answers() -> None:
    svc = FakeService()
    servicer = ChatServicer(svc, SECRET)  # type: ignore[arg-type]
    asyncio.get_running_loop().call_later(0.05, svc.release.set)
    got = await drive(servicer, [[call(1, "Logout", pb.LogoutRequest(), timeout_ms=2000)]], want=1)
    assert got[1][0].code == "" and svc.logouts_cancelled == 0


async def test_stream_end_cancels_running_calls() -> None:
    svc = FakeService()
    servicer = ChatServicer(svc, SECRET)  # type: ignore[arg-type]
    got = await drive(servicer, [[call(1, "Logout", pb.LogoutRequest()), call(2, "Who", pb.WhoRequest())]],
                      want=1)
    assert list(got) == [2]
    await asyncio.sleep(0.01)
    assert svc.logouts_started == 1 and svc.logouts_cancelled == 1


async def test_many_calls_many_batches_all_answered_once() -> None:
    svc = FakeService()
    servicer = ChatServicer(svc, SECRET)  # type: ignore[arg-type]
    asyncio.get_running_loop().call_later(0.05, svc.release.set)
    batches = [[call(b * 100 + i, "Logout" if i % 3 == 0 else "Who",
                     pb.LogoutRequest() if i % 3 == 0 else pb.WhoRequest(), timeout_ms=5000)
                for i in range(100)] for b in range(30)]
    got = await drive(servicer, batches, want=3000)
    assert len(got) == 3000 and all(r.code == "" for r, _ in got.values())


async def test_code_under_a_call_has_a_current_task_for_asyncio_timeout() -> None:
    svc = FakeService()
    svc.inner_timeout = True
    servicer = ChatServicer(svc, SECRET)  # type: ignore[arg-type]
    got = await drive(servicer, [[call(1, "Logout", pb.LogoutRequest(), timeout_ms=5000),
                                  call(2, "Logout", pb.LogoutRequest())]], want=2)
    assert got[1][0].code == "" and got[2][0].code == "", got
    assert svc.timed_out == 2 and svc.logouts_cancelled == 0
