"""Data safety and the smaller abuse items, against real processes: a lost or damaged SQLite
write-ahead log is detected at startup, online backups, file modes, disk space reserved by
running uploads, upload stall timeout and caps, no log flooding, names shared by no user and
group (both engines), bidi-free file names, password rules, logout across replicas."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from realmchat import realmauth
from realmchat.pb import chat_pb2 as pb
from realmchat.rpc import bearer

from .hardutil import Grpc, tmp_files, wait_until
from .pg import PgCluster
from .stack import PYTHON, ROOT, Stack, start_main, start_realm, start_stack
from .textclient import login

Names = Callable[[str], str]
CHEAP = ("--argon2-time-cost", "1", "--argon2-memory-kib", "8192")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m main_server ARGS` in the foreground until it exits by itself."""
    return subprocess.run([PYTHON, "-m", "main_server", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)


def run_main(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Runs main until it exits by itself (a refused start)."""
    return run_cli("--port", "0", "--data-dir", str(data_dir), *extra)


async def crash_with_data(data: Path, uname: Names) -> str:
    s = start_stack(data, realms=("alpha",), main_extra=CHEAP)
    a = uname("wal")
    c = await login(*s.realm("alpha"), a)
    await c.ok(f"sendprivate {a} kept in the log")
    s.main.kill()  # kill -9: the commits are in chat.db-wal
    s.stop()
    assert (data / "chat.db-wal").exists() and (data / "chat.db-open").exists()
    return a


async def test_a_missing_wal_after_a_crash_refuses_to_start(tmp_path: Path, uname: Names) -> None:
    data = tmp_path / "data"
    await crash_with_data(data, uname)
    (data / "chat.db-wal").unlink()
    r = run_main(data, *CHEAP)
    assert r.returncode != 0
    assert "not closed cleanly" in r.stderr and "chat.db-wal is missing" in r.stderr, r.stderr
    assert "--allow-wal-loss" in r.stderr
    m = start_main(data, 0, *CHEAP, "--allow-wal-loss")  # told to: it starts, and says so
    assert "--allow-wal-loss" in m.log()
    assert m.terminate() == 0
    assert not (data / "chat.db-open").exists(), m.log()  # a clean close clears the marker
    m = start_main(data, 0, *CHEAP)
    assert m.terminate() == 0


async def test_a_damaged_wal_after_a_crash_refuses_to_start(tmp_path: Path, uname: Names) -> None:
    data = tmp_path / "data"
    a = await crash_with_data(data, uname)
    wal = data / "chat.db-wal"
    good = wal.read_bytes()
    wal.write_bytes(good[:16] + bytes(b ^ 0xFF for b in good[16:24]) + good[24:])  # salts changed
    r = run_main(data, *CHEAP)
    assert r.returncode != 0 and "chat.db-wal is damaged (header checksum mismatch)" in r.stderr, r.stderr
    wal.write_bytes(good)  # restored: the crash is recovered as usual, nothing lost
    s = Stack(data, start_main(data, 0, *CHEAP))
    try:
        s.realms["alpha"] = start_realm("alpha", s.main.addr)
        c = await login(*s.realm("alpha"), a, register=False)
        assert [m["text"] for m in (await c.ok(f"history {a}"))["messages"]] == ["kept in the log"]
    finally:
        s.stop()


async def test_online_backup_and_file_modes(tmp_path: Path, uname: Names) -> None:
    data = tmp_path / "data"
    s = start_stack(data, realms=("alpha",), main_extra=CHEAP)
    try:
        a = uname("bk")
        c = await login(*s.realm("alpha"), a)
        await c.ok(f"sendprivate {a} in the backup")
        await c.send_raw(f"sendfile {a} f.txt 5\n".encode() + b"hello")
        assert (await c.response())["status"] == "OK"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for p in [data / "chat.db", data / "chat.db-wal", data / "chat.db-shm", *data.rglob("objects/*/*")]:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE((data / "files").stat().st_mode) == 0o700
        dest = tmp_path / "restore"
        dest.mkdir()
        r = await asyncio.to_thread(run_cli, "backup", str(dest / "chat.db"), "--data-dir", str(data))
        assert r.returncode == 0 and "backed up" in r.stdout, r.stderr
        assert stat.S_IMODE((dest / "chat.db").stat().st_mode) == 0o600
        await c.ok(f"sendprivate {a} after the backup")  # main kept running
    finally:
        s.stop()
    s2 = start_stack(dest, realms=("alpha",), main_extra=CHEAP)
    try:
        c = await login(*s2.realm("alpha"), a, register=False)
        assert [m["text"] for m in (await c.ok(f"history {a}"))["messages"]] == ["in the backup"]
    finally:
        s2.stop()
    pg = await asyncio.to_thread(run_cli, "backup", "x", "--db", "postgresql://u@h/db")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr


# ---- uploads -------------------------------------------------------------------------------

def held_upload(g: Grpc, token: str, to: str, size: int, release: asyncio.Event,
                started: asyncio.Event | None = None) -> asyncio.Future[pb.FileInfo]:
    """An UploadFile that sends its header and a first chunk, then waits for release."""

    async def parts() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=pb.UploadHeader(to=to, name="big.bin", size=size))
        yield pb.UploadRequest(chunk=b"x" * 1000)
        if started is not None:
            started.set()
        await release.wait()

    return asyncio.ensure_future(g.stub.UploadFile(parts(), metadata=bearer(token), timeout=60))


async def test_running_uploads_reserve_their_disk_space(tmpfs: Path, uname: Names) -> None:
    # On a tmpfs of its own: free space on a shared disk moves under the test's feet.
    data = tmpfs / "data"
    data.mkdir()
    st = os.statvfs(data)
    size = 5 * 2**20
    reserve = st.f_bavail * st.f_frsize - size * 3 // 2  # room for one such upload, not for two
    s = start_stack(data, realms=(), main_extra=(*CHEAP, "--min-free-bytes", str(reserve)))
    g = Grpc(s.main.addr)
    try:
        a = uname("dk")
        token = await g.login(a)
        release, started = asyncio.Event(), asyncio.Event()
        first = held_upload(g, token, a, size, release, started)
        await asyncio.wait_for(started.wait(), 10)
        await wait_until(lambda: bool(tmp_files(data)), 10, "the first upload to start")
        header = pb.UploadHeader(to=a, name="second.bin", size=size)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await g.stub.CheckUpload(header, metadata=bearer(token), timeout=10)
        assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "not enough disk space" in (ei.value.details() or "")
        second = held_upload(g, token, a, size, asyncio.Event())
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await second
        assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()  # the first one ends: its reservation goes with it
        await wait_until(lambda: not tmp_files(data), 10, "the first upload's temp file to go")
        for _ in range(50):
            try:
                assert (await g.stub.CheckUpload(header, metadata=bearer(token), timeout=10)).name == "second.bin"
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the reservation was not released")
    finally:
        await g.close()
        s.stop()


async def test_upload_stall_timeout_and_caps(tmp_path: Path, uname: Names) -> None:
    data = tmp_path / "data"
    s = start_stack(data, realms=("alpha",), main_extra=(*CHEAP, "--upload-stall-s", "2",
                                                          "--max-uploads-per-user", "2"))
    g = Grpc(s.main.addr)
    try:
        a = uname("up")
        token = await g.login(a)
        never = asyncio.Event()
        t0 = time.monotonic()
        held = [held_upload(g, token, a, 10**6, never) for _ in range(2)]
        await wait_until(lambda: len(tmp_files(data)) == 2, 10, "two uploads to start")
        # A third at once: refused with a clear message, over gRPC and through a realm.
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await g.stub.CheckUpload(pb.UploadHeader(to=a, name="c.bin", size=10), metadata=bearer(token), timeout=10)
        assert ei.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many uploads at once: at most 2 per user" in (ei.value.details() or "")
        c = await login(*s.realm("alpha"), a, register=False)
        await c.send_raw(f"sendfile {a} c.bin 10\n".encode() + b"0123456789")
        r = await c.response()
        assert r["code"] == "RESOURCE_EXHAUSTED" and "too many uploads at once" in r["message"], r
        # The stalled ones end by themselves (no chunk for 2 s) and leave nothing behind.
        for f in held:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await f
            assert "upload stalled: no data for 2 s" in (ei.value.details() or "")
        assert time.monotonic() - t0 < 15
        await wait_until(lambda: not tmp_files(data), 10, "the temp files to go")
        await c.send_raw(f"sendfile {a} c.bin 10\n".encode() + b"0123456789")
        assert (await c.response())["status"] == "OK"
    finally:
        await g.close()
        s.stop()


async def test_garbage_relayed_calls_do_not_flood_the_log(tmp_path: Path) -> None:
    """Hostile input is a typed error (one line per call at most, no traceback); only bugs get a
    traceback, once per kind (realmchat/errlog.py, tested in-process)."""
    s = start_stack(tmp_path / "data", realms=(), main_extra=CHEAP)
    g = Grpc(s.main.addr)
    try:
        calls = [pb.RelayCall(id=i, method="Register", payload=b"\xff\xff\xff") for i in range(300)]
        calls += [pb.RelayCall(id=1000 + i, method=f"NoSuch{i}") for i in range(300)]

        async def one_batch() -> AsyncIterator[pb.RelayRequests]:
            yield pb.RelayRequests(calls=calls)

        got = []
        md = realmauth.metadata(os.environ[realmauth.ENV_SECRET])
        async for replies in g.stub.Relay(one_batch(), timeout=30, metadata=md):
            got.extend(replies.results)
            if len(got) == len(calls):
                break
        assert {r.code for r in got} == {"INVALID_ARGUMENT", "UNIMPLEMENTED"}
        log = s.main.log()
        assert log.count("Traceback") == 0, log[-3000:]
        assert len(log.splitlines()) < 50, log[-3000:]
    finally:
        await g.close()
        s.stop()


# ---- names, file names, passwords ----------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def engine_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    extra: tuple[str, ...] = CHEAP
    if request.param == "postgres":
        extra += ("--db", request.getfixturevalue("pg_cluster").create_database())
    s = start_stack(tmp_path / "data", realms=("alpha",), main_extra=extra)
    yield s
    s.stop()


async def test_a_user_and_a_group_never_share_a_name(engine_stack: Stack, uname: Names) -> None:
    a, g = uname("nm_u"), uname("nm_g")
    c = await login(*engine_stack.realm("alpha"), a)
    r = await c.err(f"creategroup {a.upper()}", "ALREADY_EXISTS")
    assert r["message"] == f"{a.upper()!r} is the name of a user: pick another group name"
    await c.ok(f"creategroup {g}")
    r = await c.err(f"register {g} pw-secret", "ALREADY_EXISTS")
    assert r["message"] == f"{g!r} is the name of a group: pick another user name"
    # Racing register and creategroup of one name: exactly one wins.
    n = uname("nm_race")
    c2 = await login(*engine_stack.realm("alpha"), uname("nm_o"))
    await c.send_raw(f"creategroup {n}\n".encode())
    await c2.send_raw(f"register {n} pw-secret\n".encode())
    results = [await c.response(), await c2.response()]
    assert sorted(r["status"] for r in results) == ["ERROR", "OK"], results


async def test_file_names_lose_bidi_controls(stack: Stack, uname: Names) -> None:
    a, b = uname("bd_a"), uname("bd_b")
    ca = await login(*stack.realm("alpha"), a)
    cb = await login(*stack.realm("beta"), b)
    name = "invoice\u202egpj.exe"  # shows as "invoiceexe.jpg"
    data = b"MZ"
    await ca.send_raw(f"sendfile {b} {name} {len(data)}\n".encode() + data)
    r = await ca.response()
    assert r["name"] == "invoicegpj.exe", r
    assert (await cb.event())["name"] == "invoicegpj.exe"
    for evil in ("a\u2066b\u2069.txt", "x\u200e\u200fy.pdf", "\ufeffz.png", "p\u202ad\u202cf.doc"):
        await ca.send_raw(f"sendfile {b} {evil} 1\n".encode() + b"x")
        got = (await ca.response())["name"]
        assert not any(ch in got for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\ufeff")


async def test_password_rules_are_the_same_on_both_edges(stack: Stack, uname: Names) -> None:
    c = await login(*stack.realm("alpha"), uname("pwr"))
    r = await c.err(f"register {uname('pw')} pw-1234", "INVALID_ARGUMENT")
    assert r["message"] == "password too short: use at least 8 characters"
    r = await c.err(f"register {uname('pw')} Password123", "INVALID_ARGUMENT")
    assert "too easy to guess" in r["message"]
    r = await c.err(f"register {uname('pw')} two words", "INVALID_ARGUMENT")
    assert r["message"] == "passwords cannot contain spaces; usage: register USER PASS"
    g = Grpc(stack.main.addr)
    try:
        for pw, msg in (("correct horse battery", "must not contain spaces"), ("tab\tinside-pw", "must not contain"),
                        ("qwertyuiop", "too easy to guess"), ("short", "too short")):
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await g.stub.Register(pb.RegisterRequest(user=uname("pwg"), password=pw), timeout=10)
            assert ei.value.code() is grpc.StatusCode.INVALID_ARGUMENT and msg in (ei.value.details() or ""), pw
    finally:
        await g.close()


# ---- replicas ------------------------------------------------------------------------------

async def test_logout_on_one_replica_ends_the_session_on_the_others(pg_cluster: PgCluster, tmp_path: Path,
                                                                     uname: Names) -> None:
    url = pg_cluster.create_database()
    extra = (*CHEAP, "--db", url, "--files-dir", str(tmp_path / "files"))
    m1, m2 = start_main(tmp_path / "m1", 0, *extra), start_main(tmp_path / "m2", 0, *extra)
    g1, g2 = Grpc(m1.addr), Grpc(m2.addr)
    try:
        token = await g1.login(uname("rep"))
        await g2.stub.Who(pb.WhoRequest(), metadata=bearer(token), timeout=5)  # cached on replica 2
        await g1.stub.Logout(pb.LogoutRequest(), metadata=bearer(token), timeout=5)
        await g2.until_refused(token, 10, "replica 2 still accepts a token logged out on replica 1")
    finally:
        await g1.close()
        await g2.close()
        for m in (m1, m2):
            m.kill()
