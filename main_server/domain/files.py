"""Files: checks before an upload, the upload itself (bounded slots, a stall timeout), pending
files, downloads, and the sweep of stored contents nothing refers to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from realmchat.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from realmchat.names import check_name, name_key
from realmchat.textproto import base_file_name

from .. import events
from ..blobs import BlobStore
from ..config import MainConfig
from ..hub import Hub
from ..metrics import MESSAGES
from ..storage.base import FileRecord, GroupRecord, Storage, User
from ..uploads import UploadSlots
from .accounts import Caller
from .notify import Notify

log = logging.getLogger(__name__)

FILES_STORED = MESSAGES.labels("file")


@dataclass(frozen=True, slots=True)
class UploadSpec:
    """What an upload announces before its bytes."""

    to: str
    name: str
    size: int
    sha256: str = ""


class Files:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, blobs: BlobStore, notify: Notify) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.blobs = blobs
        self.notify = notify
        self.uploads = UploadSlots(config.max_uploads_per_user, config.max_uploads)

    async def check_upload(self, header: UploadSpec, caller: Caller, slots: bool = True
                           ) -> tuple[User | GroupRecord, str]:
        """The recipient (a user, or for `#GROUP` a group the caller is a member of) and the bare
        file name, or the error the upload would end with."""
        if slots:
            # Refused here with its clear message: once the bytes flow, gRPC may only say that
            # main ended the transfer early.
            self.uploads.check(caller.session.user_key)
        group = header.to.startswith("#")
        check_name(header.to[1:] if group else header.to, "group" if group else "user")
        name = base_file_name(header.name)
        if header.size < 0:
            raise InvalidArgument("size must not be negative")
        if header.size > self.config.max_file_bytes:
            raise ResourceExhausted(f"file too large: at most {self.config.max_file_bytes} bytes")
        to: User | GroupRecord | None
        if group:
            to = await self.storage.member_group(name_key(header.to[1:]), caller.session.user_key)
        else:
            to = await self.storage.get_user(name_key(header.to))
            if to is None:
                raise NotFound(f"no user {header.to!r}: check the name")
        self.blobs.fits(header.size)
        return to, name

    async def upload(self, caller: Caller, header: UploadSpec, chunks: AsyncIterator[bytes]) -> FileRecord:
        to, name = await self.check_upload(header, caller, slots=False)
        with self.uploads.slot(caller.session.user_key):
            up = self.blobs.upload(header.size)  # reserves the declared size on the disk
            try:
                it = aiter(chunks)
                while (chunk := await self._next_chunk(it)) is not None:
                    await up.write(chunk)
                digest = await up.finish(header.sha256)
            except BaseException:
                up.abort()
                raise
        if isinstance(to, GroupRecord):
            # Stored once; it waits for every member but the sender (the sender's other
            # sessions see it too). Membership is checked again in the same transaction.
            record, recipients = await self.storage.add_group_file(caller.user, to.key, name, header.size, digest)
            users = [*recipients, caller.session.user_key]
        else:
            record = await self.storage.add_file(caller.user, to, name, header.size, digest)
            users = [to.key]
        FILES_STORED.inc()
        self.hub.push(users, events.FileOffered(record), caller.session.id)
        if (cluster := self.notify.cluster) is not None:
            cluster.publish_notice(events.FileStored(record.id, tuple(users), caller.session.id))
        return record

    async def on_file_notice(self, local: list[str], file_id: int, exclude_session: int) -> None:
        """Another replica stored a file for users attached here."""
        record = await self.storage.get_file(file_id)
        if record is not None:
            self.hub.push(local, events.FileOffered(record), exclude_session)

    async def _next_chunk(self, it: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk; an upload that sends nothing for upload_stall_s is ended (it holds a
        temp file, a disk reservation and an upload slot)."""
        stall = self.config.upload_stall_s
        try:
            async with asyncio.timeout(stall if stall > 0 else None):
                return await anext(it)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise Unavailable(f"upload stalled: no data for {stall:g} s; send the file again") from None

    async def pending_files(self, caller: Caller) -> list[FileRecord]:
        return await self.storage.pending_files(caller.session.user_key)

    async def open_download(self, caller: Caller, file_id: int) -> tuple[FileRecord, Path]:
        # The recipient of a private file; for a group file, rooms.check_download's rule.
        record = await self.storage.open_file(file_id, caller.session.user_key)
        return record, self.blobs.path(record.sha256)

    async def mark_downloaded(self, caller: Caller, file_id: int) -> None:
        await self.storage.mark_downloaded(file_id, caller.session.user_key)

    async def discard_group(self, group: str, digests: list[str]) -> None:
        """A deleted group's files go with it, from the disk too."""
        try:
            await self.blobs.discard(digests, time.time())
        except OSError:
            log.exception("removing the files of deleted group %s failed", group)

    async def sweep_files(self, now: float) -> int:
        """Removes stored contents no file refers to: a deleted group's written in its last
        minute, an upload's whose file was never recorded (main stopped or the commit failed
        in between). Returns how many. A content must be unreferenced when storage is asked and
        still older than the grace when removed: an upload of the same bytes renames it anew."""
        settled = await self.blobs.settled(now)
        if not settled:
            return 0
        referenced = await self.storage.file_digests()
        return await self.blobs.discard([d for d in settled if d not in referenced], now)
