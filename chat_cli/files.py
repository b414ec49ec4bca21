"""Files: uploading a local file (streamed in chunks, its sha256 checked against the realm's)
and downloading one (streamed to a hidden temp file, verified, then given a free name; never
overwriting, never leaving a partial file)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realmchat.errors import ChatError, Internal, InvalidArgument, error_for
from realmchat.framing import LineReader
from realmchat.textproto import base_file_name

from .connection import Connection, Link
from .models import Downloaded, FileInfo, Uploaded
from .verbs import verb

# File bytes go out and come in in chunks of this size: big enough for throughput, small enough
# that memory stays flat for any file size.
FILE_CHUNK = 256 * 1024

ProgressCallback = Callable[[int, int], None]
"""progress(done_bytes, total_bytes), called as a transfer advances (and once at the end)."""

_umask = os.umask(0)
os.umask(_umask)


def expand(path: str | os.PathLike[str]) -> Path:
    """`~` expanded (no file system access beyond the home directory lookup)."""
    return Path(os.path.expanduser(path))


async def send_file(conn: Connection, to: str, path: str | os.PathLike[str], progress: ProgressCallback | None,
                    name: str | None) -> Uploaded:
    """Uploads the local file `path` to `to` (a user, or "#GROUP"); see ChatClient.send_file."""
    sendfile = verb("sendfile")
    sendfile.line(to)  # the recipient is checked before the file is opened
    local = expand(path)
    try:
        # Opened off the event loop: a slow or network disk must not stall events.
        f = await asyncio.to_thread(open, local, "rb")
    except FileNotFoundError:
        raise error_for("NOT_FOUND", f"no such local file: {local}") from None
    except OSError as e:
        raise InvalidArgument(f"cannot read {local}: {e.strerror or e}") from None
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{local} is not a regular file")
        size = st.st_size
        file_name = base_file_name(name if name is not None else local.name)
        digest = hashlib.sha256()

        async def body(link: Link) -> None:
            sent = 0
            if progress:
                progress(0, size)
            while sent < size:
                chunk = await asyncio.to_thread(f.read, min(FILE_CHUNK, size - sent))
                if not chunk:
                    # The file shrank after we announced its size; the realm would wait for
                    # bytes that never come. Drop the connection: a broken upload is
                    # discarded by the server, never stored.
                    conn.lost(link, f"{local} changed while it was being sent")
                    raise InvalidArgument(f"{local} changed while it was being sent; try again")
                digest.update(chunk)
                link.writer.write(chunk)
                sent += len(chunk)
                await link.writer.drain()
                if progress:
                    progress(sent, size)

        r = await conn.call(sendfile.line(to, file_name, size), body=body)
    finally:
        f.close()
    result = Uploaded(id=int(r.get("id", 0)), name=str(r.get("name", file_name)),
                      size=int(r.get("size", size)), sha256=str(r.get("sha256", "")))
    if result.sha256.lower() != digest.hexdigest() or result.size != size:
        raise Internal(f"the realm stored {result.size} bytes with sha256 {result.sha256}, "
                       f"but {size} bytes with sha256 {digest.hexdigest()} were sent")
    return result


async def pending_files(conn: Connection) -> list[FileInfo]:
    r = await conn.call(verb("receivefile").line())
    return [FileInfo.from_wire(f) for f in r.get("files", []) if isinstance(f, dict)]


async def receive_file(conn: Connection, file_id: int, dest_dir: str | os.PathLike[str],
                       progress: ProgressCallback | None) -> Downloaded:
    """Downloads file `file_id` into `dest_dir`; see ChatClient.receive_file."""
    line = verb("receivefile").line(file_id)
    dest = expand(dest_dir)
    try:
        await asyncio.to_thread(os.makedirs, dest, exist_ok=True)
    except OSError as e:
        raise InvalidArgument(f"cannot create download directory {dest}: {e.strerror or e}") from None

    async def payload(header: dict[str, Any], lines: LineReader, fut: asyncio.Future[Any]) -> Downloaded | None:
        return await _download(header, lines, fut, dest, progress)

    return await conn.call(line, payload=payload)


# ---- downloads ------------------------------------------------------------------------------

_DOUBLE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")


def _split_name(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in _DOUBLE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # "README" or ".bashrc": no extension to keep apart
        return name, ""
    return stem, "." + ext


def claim_free_name(dest: Path, name: str) -> Path:
    """Creates (O_EXCL) and returns the first free path among dest/name, dest/"stem (1).ext", ...
    Creating it reserves it against other downloads racing for the same name."""
    stem, ext = _split_name(name)
    for i in range(100_000):
        candidate_name = name if i == 0 else f"{stem} ({i}){ext}"
        while len(candidate_name.encode()) > 255 and stem:
            stem = stem[:-1]
            candidate_name = f"{stem} ({i}){ext}"
        candidate = dest / candidate_name
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise Internal(f"no free file name for {name!r} in {dest}")


async def _download(header: dict[str, Any], lines: LineReader, fut: asyncio.Future[Any], dest: Path,
                    progress: ProgressCallback | None) -> Downloaded | None:
    """Consumes exactly header["size"] payload bytes whatever happens locally: leaving any in
    the stream would make the reader parse file bytes as protocol lines."""
    info = FileInfo.from_wire(header)
    size = info.size
    if fut.done():  # the caller gave up (cancelled or timed out): drop the bytes
        await lines.discard(size)
        return None
    try:
        safe = base_file_name(info.name)
    except ChatError:
        safe = f"file-{info.id}"
    digest = hashlib.sha256()
    local_error: OSError | None = None
    tmp_path: str | None = None
    out = None
    try:
        fd, tmp_path = tempfile.mkstemp(prefix=".", suffix=".part", dir=dest)
        out = os.fdopen(fd, "wb")
    except OSError as e:
        local_error = e
    received = 0
    try:
        if progress:
            progress(0, size)
        async for chunk in lines.iter_payload(size, FILE_CHUNK):
            if fut.done():
                # The caller gave up mid-way: stop writing (the finally removes the temp file)
                # but keep consuming, the stream must stay in sync.
                if out is not None:
                    out.close()
                    out = None
                continue
            digest.update(chunk)
            received += len(chunk)
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as e:  # disk full: keep consuming, report at the end
                    local_error = e
                    out.close()
                    out = None
            if progress:
                progress(received, size)
        if fut.done():
            return None
        if out is not None:
            out.close()
            out = None
        if local_error is not None:
            raise InvalidArgument(f"cannot write into {dest}: {local_error.strerror or local_error}")
        if digest.hexdigest() != info.sha256.lower():
            raise Internal(f"checksum mismatch for file {info.id} ({safe}): expected {info.sha256}, "
                           f"got {digest.hexdigest()}; nothing was saved")
        assert tmp_path is not None
        os.chmod(tmp_path, 0o666 & ~_umask)
        final = claim_free_name(dest, safe)
        os.replace(tmp_path, final)  # replaces only the placeholder we just created
        tmp_path = None
        return Downloaded(file=info, path=str(final))
    finally:
        if out is not None:
            out.close()
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
