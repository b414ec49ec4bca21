"""Micro-measurement behind design change 1 of docs/PERFORMANCE.md: the CPU a pushed line costs
when each line is its own transport.write (what the realm does per event and session) against
one write of several joined lines (what a batched Link plus per-session coalescing would do).
uvloop, loopback TCP, a separate process reads and discards.

    python -m bench.micro [--lines 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

# A group event as the realm writes it (about 150 bytes).
LINE = (b'{"event":"group","id":123456,"from":"g17","group":"grp3","text":"t=1234567890123 w=0 s=42 p=7",'
        b'"ts":"2026-11-24T08:00:00.000000+00:00"}\n')


class _Writer(asyncio.Protocol):
    """Tells when the transport's buffer has drained (resume_writing with a low-water mark of 0)."""

    def __init__(self) -> None:
        self.drained = asyncio.Event()
        self.drained.set()

    def pause_writing(self) -> None:
        self.drained.clear()

    def resume_writing(self) -> None:
        self.drained.set()


async def measure(conn: socket.socket, n: int, batches: tuple[int, ...]) -> dict[int, float]:
    loop = asyncio.get_running_loop()
    tr, proto = await loop.connect_accepted_socket(_Writer, conn)
    tr.set_write_buffer_limits(high=1 << 20, low=0)
    out: dict[int, float] = {}
    for batch in batches:
        data = LINE * batch
        t0 = time.process_time()  # this process's CPU only: the sink is not counted
        for i in range(n // batch):
            tr.write(data)
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the loop run, as a server does between events
            await proto.drained.wait()
        await proto.drained.wait()
        out[batch] = (time.process_time() - t0) / n * 1e6
    tr.close()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=200_000)
    a = p.parse_args(argv)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    sink = subprocess.Popen([sys.executable, "-c", "import socket\n"
                             f"s = socket.create_connection(('127.0.0.1', {srv.getsockname()[1]}))\n"
                             "while s.recv(1 << 20): pass"])
    conn, _ = srv.accept()
    conn.setblocking(False)
    batches = (1, 5, 25)
    try:
        try:
            import uvloop

            result = uvloop.run(measure(conn, a.lines, batches))
        except ImportError:
            result = asyncio.run(measure(conn, a.lines, batches))
    finally:
        sink.kill()
        srv.close()
    for batch, us in result.items():
        print(f"{batch:3d} lines per write: {us:6.2f} CPU-us per line")


if __name__ == "__main__":
    main()
