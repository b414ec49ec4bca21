"""The Relay stream's scheduler: a realm's calls, each run as a coroutine stepped by hand (no
asyncio task per call), their deadlines on a timer wheel, and the replies they fill, batched
within the transport's bounds. What a call does is the servicer's business (`start`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from realmchat.errors import ChatError, ResourceExhausted, Unavailable
from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import MAX_MESSAGE_BYTES

# A relayed call runs as the loop's current task without being an asyncio.Task (see _Running):
# the two hooks asyncio's own eager tasks use (no public API sets the current task).
_enter_task, _leave_task = asyncio.tasks._enter_task, asyncio.tasks._leave_task

# One Link or Relay stream message stays far under the transport's cap (MAX_MESSAGE_BYTES).
BATCH_MAX_BYTES = 1 << 20
# A single relayed reply larger than this fails alone (RESOURCE_EXHAUSTED), never the stream.
REPLY_MAX_BYTES = MAX_MESSAGE_BYTES // 2
# The coroutine of one relayed call (raises ChatError if it cannot start); what it returns is
# the reply message, what it raises the call's error.
Start = Callable[[pb.RelayCall], Coroutine[Any, Any, Any]]
# Anything a call raises, as the typed error its result carries.
ErrorOf = Callable[[BaseException, str], ChatError]

# Relay deadlines are checked on a coarse wheel: a call is stopped within this much after its
# deadline, with no timer of its own.
DEADLINE_TICK_S = 0.025
REPLIES_MAX = 4096  # results per RelayReplies
_RESULT_OVERHEAD = 32  # bytes a result adds around its payload, at most (id, tags, lengths, code)


class RelayStream:
    """One Relay stream: its running calls, their deadlines, the replies not yet sent.

    A call is a coroutine of `invoke`, driven here without an asyncio task: its first step runs
    as soon as the call is read, so a call that needs no I/O answers at once; after that every
    future it awaits resumes it through a done callback (what a Task does, minus the task's
    creation, registration and scheduling, which showed at one call per message). A deadline
    sweep on a timer wheel cancels what ran past its deadline: UNAVAILABLE, like before."""

    def __init__(self, start: Start, error_of: ErrorOf) -> None:
        self.start_call = start
        self.error_of = error_of
        self.loop = asyncio.get_running_loop()
        self.running: set[_Running] = set()
        self.wheel: dict[int, set[_Running]] = {}
        self.sweeper: asyncio.TimerHandle | None = None
        self.ready: list[pb.RelayReplies] = []  # replies filled, oldest first
        self.ready_bytes = 0  # of the last one
        self.waiter: asyncio.Future[None] | None = None
        self.reading = True
        self.closed = False

    # ---- calls -------------------------------------------------------------------------------

    def start(self, call: pb.RelayCall) -> None:
        try:
            coro = self.start_call(call)
        except ChatError as exc:  # it cannot even start (its payload does not parse)
            self.failed(call.id, call.method, exc)
            return
        run = _Running(self, call.id, call.method, coro)
        self.running.add(run)
        if call.timeout_ms > 0:
            # Past the realm's deadline nobody waits for the answer: stop (a login the realm
            # gave up on must leave no session behind). Slot: the first tick at or past it.
            slot = -int(-(time.monotonic() + call.timeout_ms / 1000) // DEADLINE_TICK_S)
            due = self.wheel.get(slot)
            if due is None:
                due = self.wheel[slot] = set()
                if self.sweeper is None:
                    self.sweeper = self.loop.call_later(DEADLINE_TICK_S, self._sweep)
            due.add(run)
            run.slot = due
        run.step()

    def _sweep(self) -> None:
        self.sweeper = None
        now = time.monotonic() / DEADLINE_TICK_S
        wheel = self.wheel
        for slot in [s for s in wheel if s <= now]:  # a few hundred slots at most: one per tick
            for run in wheel.pop(slot):
                run.slot = None
                run.expire()
        if wheel and not self.closed:
            self.sweeper = self.loop.call_later(DEADLINE_TICK_S, self._sweep)

    def finished(self, run: _Running, response: Any, exc: BaseException | None) -> None:
        self.running.discard(run)
        if run.slot is not None:
            run.slot.discard(run)
            run.slot = None
        if self.closed:
            return
        if exc is None:
            try:
                payload = response.SerializeToString()
            except Exception as bad:  # a handler's bug: the call fails, never the stream
                self.failed(run.id, run.method, bad)
            else:
                if len(payload) <= REPLY_MAX_BYTES:
                    self._add(run.id, payload, len(payload) + _RESULT_OVERHEAD)
                else:
                    self.failed(run.id, run.method,
                                ResourceExhausted("the reply is too large to send: ask for less"))
        elif isinstance(exc, asyncio.CancelledError) and run.expired:
            self.failed(run.id, run.method, Unavailable("the call ran past its deadline"))
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        else:
            self.failed(run.id, run.method, exc)
        if not self.reading and not self.running:
            self._wake()

    def failed(self, call_id: int, method: str, exc: BaseException) -> None:
        err = exc if isinstance(exc, ChatError) else self.error_of(exc, f"relayed {method[:40]!r}")
        result = pb.RelayResult(id=call_id, code=err.code.value, message=err.message, reason=err.reason)
        self._add(call_id, result, result.ByteSize() + 8)

    # ---- replies -----------------------------------------------------------------------------

    def _add(self, call_id: int, payload: bytes | pb.RelayResult, size: int) -> None:
        """Appends a result to the newest reply batch (a new one past the byte or count bound):
        filled in place, not built and copied."""
        if not self.ready or self.ready_bytes + size > BATCH_MAX_BYTES or len(self.ready[-1].results) >= REPLIES_MAX:
            self.ready.append(pb.RelayReplies())
            self.ready_bytes = 0
        if isinstance(payload, bytes):
            self.ready[-1].results.add(id=call_id, payload=payload)
        else:
            self.ready[-1].results.append(payload)
        self.ready_bytes += size
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next_replies(self) -> pb.RelayReplies | None:
        """The next batch of results (waits for one); None once the calls ended and all answered."""
        while not self.ready:
            if not self.reading and not self.running:
                return None
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        replies = self.ready.pop(0)
        if not self.ready:
            self.ready_bytes = 0
        return replies

    def end_of_calls(self) -> None:
        self.reading = False
        self._wake()

    def close(self) -> None:
        """The stream ended: its running calls are cancelled (nobody reads their answers)."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for run in list(self.running):
            run.cancel()


class _Running:
    """One relayed call's coroutine, stepped by hand (see RelayStream). While a step runs it is
    the loop's current task, with Task's cancel/uncancel/cancelling, so that code under it that
    asks for its task (asyncio.timeout, asyncpg's timeouts) works as it does under a Task."""

    __slots__ = ("__weakref__", "cancels", "coro", "expired", "finished", "id", "method", "must_cancel", "slot",
                 "stream", "waiting")

    def __init__(self, stream: RelayStream, call_id: int, method: str, coro: Any) -> None:
        self.stream = stream
        self.id = call_id
        self.method = method
        self.coro = coro
        self.waiting: asyncio.Future[Any] | None = None
        self.expired = False
        self.cancels = 0  # cancellation requests not taken back (Task.cancelling())
        self.must_cancel = False  # CancelledError is thrown in at the next step
        self.slot: set[_Running] | None = None
        self.finished = False

    def step(self, _fut: Any = None) -> None:
        self.waiting = None
        loop = self.stream.loop
        outer = asyncio.current_task(loop)  # the Relay reader, for a call's first step
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, self)
        try:
            if self.must_cancel:
                self.must_cancel = False
                awaited = self.coro.throw(asyncio.CancelledError())
            else:
                awaited = self.coro.send(None)
        except StopIteration as stop:
            self._done(stop.value, None)
            return
        except BaseException as exc:  # every outcome is the call's answer
            self._done(None, exc)
            return
        finally:
            _leave_task(loop, self)
            if outer is not None:
                _enter_task(loop, outer)
        if getattr(awaited, "_asyncio_future_blocking", None):
            # An asyncio future (what `await fut` hands up): resume when it is done.
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(self.step)
            self.waiting = awaited
            if self.must_cancel and awaited.cancel():
                self.must_cancel = False
        elif awaited is None:
            # A bare yield (asyncio.sleep(0)): run again on the next loop iteration.
            loop.call_soon(self.step)
        else:
            self.coro.close()
            self._done(None, RuntimeError(f"relayed call awaited {awaited!r}, not an asyncio future"))

    def _done(self, value: Any, exc: BaseException | None) -> None:
        self.finished = True
        self.stream.finished(self, value, exc)

    # ---- what asyncio.timeout and the deadline sweep use of a Task ---------------------------

    def done(self) -> bool:
        return self.finished

    def cancel(self, msg: Any = None) -> bool:
        if self.finished:
            return False
        self.cancels += 1
        if self.waiting is not None and self.waiting.cancel():
            return True
        self.must_cancel = True
        return True

    def uncancel(self) -> int:
        if self.cancels > 0:
            self.cancels -= 1
        return self.cancels

    def cancelling(self) -> int:
        return self.cancels

    def expire(self) -> None:
        if not self.expired and not self.finished:
            self.expired = True
            self.cancel()
