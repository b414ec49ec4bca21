"""Disk space as a limit: main refuses new data with RESOURCE_EXHAUSTED before the disk is full,
and turns "disk full" errors that still happen (a race, another process filling the disk) into
the same clear error instead of INTERNAL.

Wraps the storage engine and the blob store that ChatService is given, so it holds for every
path into the domain code (unary calls, streams, relayed calls) without touching them:
- a write that creates new data (user, message, group, membership) needs `reserve` free bytes;
- an upload needs its declared size plus `reserve` before a byte is written;
- reads, deliveries and deletes are never refused: marking a message delivered
  must not fail because the disk is low, and deleting is how space comes back.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

from realmchat.errors import ResourceExhausted

from .blobs import BlobStore, Upload
from .storage.base import Storage

log = logging.getLogger(__name__)

DISK_FULL = "the server is out of disk space: nothing was stored; try again later"
SQLITE_FULL = 13
PG_DISK_FULL = "53100"

# Storage calls that create new data and may be refused while the disk is low.
GROWING = frozenset({"create_user", "store_private", "store_group", "create_group", "join_group"})


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from the OS, SQLITE_FULL from SQLite, 53100 (disk_full) from PostgreSQL."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return True
    return PG_DISK_FULL in (getattr(exc, "sqlstate", None), getattr(exc, "pgcode", None))


CACHE_S = 0.5
CACHE_MARGIN = 64 * 1024 * 1024


class DiskSpace:
    def __init__(self, path: Path, reserve: int) -> None:
        self.path = path
        self.reserve = reserve
        self._cached = (0.0, 0)  # (monotonic time, free bytes)
        # Bytes promised to uploads that are running: the disk does not show them yet, so two
        # concurrent uploads could each pass the check and together eat into the reserve.
        self.reserved = 0

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize - self.reserved

    def take(self, need: int) -> None:
        """check(need), then holds `need` bytes until release(need)."""
        self.check(need)
        self.reserved += need

    def release(self, need: int) -> None:
        self.reserved = max(0, self.reserved - need)

    def _free_for_check(self) -> int:
        # statvfs on every write was 8-15 % of main's CPU at full speed: far from the reserve, a
        # reading up to CACHE_S old is good enough (a message is a few KiB; files pass `need`).
        now = time.monotonic()
        at, free = self._cached
        if now - at < CACHE_S and free > self.reserve + CACHE_MARGIN:
            return free
        free = self.free()
        self._cached = (now, free)
        return free

    def check(self, need: int = 0) -> None:
        """Raises RESOURCE_EXHAUSTED unless `need` bytes fit while keeping the reserve free."""
        if self.reserve <= 0 and need <= 0:
            return
        free = self.free() if need else self._free_for_check()
        if free < need + self.reserve:
            log.warning("disk low in %s: %d bytes free (%d promised to running uploads), %d needed + %d reserve",
                        self.path, free, self.reserved, need, self.reserve)
            if need:
                raise ResourceExhausted(f"not enough disk space on the server for {need} bytes; try later")
            raise ResourceExhausted("the server is low on disk space: nothing was stored; try again later")


def _translate(exc: BaseException) -> BaseException:
    if is_disk_full(exc):
        log.error("disk full: %s", exc)
        return ResourceExhausted(DISK_FULL)
    return exc


class GuardedStorage:
    """Delegates to a Storage; checks the reserve before growing calls; disk full -> RESOURCE_EXHAUSTED."""

    def __init__(self, inner: Storage, space: DiskSpace) -> None:
        self._inner = inner
        self._space = space

    def __getattr__(self, name: str) -> Any:
        """Only called for a name not yet looked up: the wrapper is kept on the instance (a
        storage call is on every message's path; building a wrapper each time showed in
        profiles)."""
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        growing = name in GROWING

        @functools.wraps(attr)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if growing:
                self._space.check()
            try:
                return await attr(*args, **kwargs)
            except Exception as exc:
                new = _translate(exc)
                if new is exc:
                    raise
                raise new from exc

        setattr(self, name, guarded)
        return guarded


class GuardedUpload:
    """An Upload whose disk-full errors read RESOURCE_EXHAUSTED (the caller still aborts it);
    it holds its declared size reserved until it is finished or aborted."""

    def __init__(self, inner: Upload, space: DiskSpace, reserved: int) -> None:
        self._inner = inner
        self._space = space
        self._reserved = reserved

    def _release(self) -> None:
        self._space.release(self._reserved)
        self._reserved = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def write(self, chunk: bytes) -> None:
        try:
            await self._inner.write(chunk)
        except OSError as exc:
            raise _translate(exc) from exc

    async def finish(self, expected_sha256: str = "") -> str:
        try:
            return await self._inner.finish(expected_sha256)
        except OSError as exc:
            raise _translate(exc) from exc
        finally:
            self._release()  # written (the disk shows it now) or failed

    def abort(self) -> None:
        self._release()
        self._inner.abort()


class GuardedBlobStore:
    """A BlobStore that refuses an upload whose declared size does not fit, before any byte."""

    def __init__(self, inner: BlobStore, space: DiskSpace) -> None:
        self._inner = inner
        self._space = space

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def fits(self, size: int) -> None:
        """The pre-check of an upload (CheckUpload): counts what running uploads hold."""
        self._space.check(size)

    def upload(self, expected_size: int) -> Upload:
        self._space.take(expected_size)
        try:
            up = self._inner.upload(expected_size)
        except OSError as exc:
            self._space.release(expected_size)
            raise _translate(exc) from exc
        return cast(Upload, GuardedUpload(up, self._space, expected_size))


def guard(storage: Storage, blobs: BlobStore, data_dir: Path, reserve: int) -> tuple[Storage, BlobStore]:
    """The storage and blob store to hand to ChatService. The file store may live on another
    mount than the data dir (--files-dir): each is measured where it writes; on one file system
    they share one DiskSpace, so upload reservations hold for messages too."""
    data_space = DiskSpace(data_dir, reserve)
    same = os.stat(data_dir).st_dev == os.stat(blobs.root).st_dev
    blob_space = data_space if same else DiskSpace(blobs.root, reserve)
    return (cast(Storage, GuardedStorage(storage, data_space)),
            cast(BlobStore, GuardedBlobStore(blobs, blob_space)))
