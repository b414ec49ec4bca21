"""Crash safety of the SQLite files: a lost or damaged write-ahead log is detected, not ignored.

In WAL mode, committed transactions live in DB-wal until a checkpoint copies them into DB. A
clean shutdown checkpoints and deletes DB-wal; after a crash (kill -9, power loss) DB-wal holds
commits the main file does not have. If that file is then missing (a backup that copied only
DB, a careless cleanup) or damaged, SQLite opens DB without complaint and those commits are
silently gone.

The method: main writes a marker file DB-open (fsynced, with its directory) before it opens the
database and removes it only after a clean close, when SQLite has checkpointed and removed the
log. A marker at startup therefore means "the last run did not close cleanly, so DB-wal may hold
commits". Then DB-wal must exist and its 32-byte header must be valid (magic, format version,
page size and the header checksum SQLite itself verifies); otherwise main refuses to start
unless told --allow-wal-loss. A log with a valid header whose last frames are torn is normal
after a crash: SQLite replays the committed frames and ignores the torn tail itself.
A zero-length log is valid too (SQLite truncated it and nothing was written since)."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

MAGIC_LE, MAGIC_BE = 0x377F0682, 0x377F0683
WAL_VERSION = 3007000


class WalLost(Exception):
    """The write-ahead log of an unclean shutdown is missing or damaged."""


def marker_path(db: Path) -> Path:
    return db.with_name(db.name + "-open")


def wal_path(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def _checksum(data: bytes, big_endian: bool) -> tuple[int, int]:
    s0 = s1 = 0
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_problem(wal: Path) -> str:
    """'' when the log's header is sound, else what is wrong with it."""
    try:
        with wal.open("rb") as f:
            header = f.read(32)
    except FileNotFoundError:
        return "is missing"
    if not header:
        return ""
    if len(header) < 32:
        return f"is damaged (only {len(header)} bytes)"
    magic, version, page_size = struct.unpack(">III", header[:12])
    if magic not in (MAGIC_LE, MAGIC_BE):
        return "is damaged (bad magic number)"
    if version != WAL_VERSION:
        return f"is damaged (unknown format {version})"
    if page_size != 1 and (page_size < 512 or page_size > 32768 or page_size & (page_size - 1)):
        return f"is damaged (bad page size {page_size})"
    if _checksum(header[:24], magic == MAGIC_BE) != struct.unpack(">II", header[24:32]):
        return "is damaged (header checksum mismatch)"
    return ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_and_mark(db: Path, allow_loss: bool) -> str:
    """Before opening db: raises WalLost if an unclean shutdown's log is missing or damaged
    (unless allow_loss; then the problem is returned for a warning), and writes the marker."""
    marker = marker_path(db)
    problem = ""
    if marker.exists() and db.exists():
        what = wal_problem(wal_path(db))
        if what:
            problem = (f"{db} was not closed cleanly and its write-ahead log {wal_path(db).name} {what}: "
                       "transactions committed before the crash may be lost. Restore DB and DB-wal "
                       "together (or from a backup made with `python -m main_server backup`), or start "
                       "with --allow-wal-loss to accept the loss")
            if not allow_loss:
                raise WalLost(problem)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"pid {os.getpid()} opened {time.time():.0f}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(db.parent)
    return problem


def mark_closed(db: Path) -> None:
    """After a clean close (the log is checkpointed and removed)."""
    marker_path(db).unlink(missing_ok=True)
    _fsync_dir(db.parent)
