"""Content-addressed file store in the data dir: uploads go to tmp/, are verified (size,
sha256) and renamed into objects/ab/abcdef...; nothing partial is ever visible."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from realmchat.errors import InvalidArgument

# A stored content younger than this is never removed (see BlobStore.discard).
DISCARD_GRACE_S = 60.0


class Upload:
    def __init__(self, store: BlobStore, expected_size: int) -> None:
        self.store = store
        self.expected_size = expected_size
        self.size = 0
        self._sha = hashlib.sha256()
        fd, name = store.tmp_file()
        self.path = Path(name)
        self._f = os.fdopen(fd, "wb")

    def _write(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._f.write(chunk)

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.expected_size:
            raise InvalidArgument(f"more bytes than the declared size {self.expected_size}")
        await asyncio.to_thread(self._write, chunk)

    async def finish(self, expected_sha256: str = "") -> str:
        if self.size != self.expected_size:
            raise InvalidArgument(f"got {self.size} bytes, declared {self.expected_size}")
        digest = self._sha.hexdigest()
        if expected_sha256 and expected_sha256.lower() != digest:
            raise InvalidArgument("sha256 mismatch: the file was corrupted in transit")

        def commit() -> None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            dest = self.store.path(digest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, dest)

        await asyncio.to_thread(commit)
        return digest

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.objects = root / "objects"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads cut by a crash are garbage: nothing refers to them.
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def tmp_file(self) -> tuple[int, str]:
        import tempfile

        return tempfile.mkstemp(dir=self.tmp, prefix="up-")

    def fits(self, size: int) -> None:
        """Raises RESOURCE_EXHAUSTED if `size` more bytes would not fit (see diskguard)."""

    def upload(self, expected_size: int) -> Upload:
        return Upload(self, expected_size)

    def path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    async def settled(self, now: float) -> list[str]:
        """The stored contents written more than DISCARD_GRACE_S ago (what a sweep may weigh)."""

        def walk() -> list[str]:
            out = []
            for shard in self.objects.iterdir():
                if not shard.is_dir():
                    continue
                for p in shard.iterdir():
                    try:
                        if now - p.stat().st_mtime >= DISCARD_GRACE_S:
                            out.append(p.name)
                    except FileNotFoundError:
                        continue
            return out

        return await asyncio.to_thread(walk)

    async def discard(self, digests: list[str], now: float) -> int:
        """Removes stored contents no file refers to any more (a deleted group's). One written
        within the last DISCARD_GRACE_S stays: an upload of the same bytes may have just put it
        there and not yet recorded its file. Returns how many were removed."""

        def remove() -> int:
            n = 0
            for digest in digests:
                p = self.path(digest)
                try:
                    if now - p.stat().st_mtime < DISCARD_GRACE_S:
                        continue
                    p.unlink()
                    n += 1
                except FileNotFoundError:
                    continue
            return n

        return await asyncio.to_thread(remove) if digests else 0
