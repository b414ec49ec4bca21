"""Sending and saving files through Flet's FilePicker, on the desktop and in the browser.

Desktop: the picker returns a local path, which the controller streams to the realm; received
files are saved (sha256 verified by chat_cli) into the downloads directory.

Web: the browser holds the file, so it is first uploaded to this web server (Flet's signed
upload endpoint, into a private directory per upload), then streamed to the realm, then
deleted. Received files are downloaded and verified on the server, then handed to the browser
as a download (FilePicker.save_file with the bytes) and the server copy is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import flet as ft

from realmchat.errors import ChatError

from ..controller import ChatController
from ..state import Transfer

log = logging.getLogger("gui.files")

UPLOAD_URL_LIFETIME = 600     # seconds a signed upload URL stays valid
UPLOAD_TIMEOUT = 3600.0       # the browser's upload of one file
BROWSER_SAVE_LIMIT = 256 * 1024 * 1024  # bytes pushed to the browser in one message


class FileActions:
    def __init__(self, controller: ChatController, upload_dir: Path | None,
                 on_error: Callable[[str], None], on_info: Callable[[str], None]) -> None:
        self.controller = controller
        self.upload_dir = upload_dir
        self.on_error = on_error
        self.on_info = on_info
        # Constructed in the page's context, the picker registers itself as a page service;
        # this reference keeps it registered.
        self.picker = ft.FilePicker(on_upload=self._on_upload)
        self._uploads: dict[str, asyncio.Future[None]] = {}
        self._upload_transfers: dict[str, Transfer] = {}

    @property
    def web(self) -> bool:
        return bool(ft.context.page.web)

    # ---- sending -------------------------------------------------------------------------------

    async def pick_and_send(self, to: str) -> None:
        try:
            files = await self.picker.pick_files(dialog_title=f"Send a file to {to}")
        except Exception as e:  # no picker on this platform (e.g. zenity missing on Linux)
            self.on_error(f"cannot open the file picker: {e}")
            return
        if not files:
            return  # cancelled
        f = files[0]
        try:
            if f.path:
                await self.controller.send_file(to, f.path)
            else:
                await self._send_from_browser(to, f)
        except ChatError as e:
            self.on_error(f"{f.name} was not sent: {e.message}")
            return
        self.on_info(f"{f.name} sent to {to}")

    async def _send_from_browser(self, to: str, f: ft.FilePickerFile) -> None:
        if self.upload_dir is None:
            raise ChatError("uploads are not enabled on this server")
        # A directory of its own per upload: names never collide between users or files.
        subdir = uuid.uuid4().hex
        upload_name = f"{subdir}/{f.name}"
        local = self.upload_dir / subdir / f.name
        t = self.controller.track_transfer("browser", f.name, to, f.size)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._uploads[f.name] = done
        self._upload_transfers[f.name] = t
        try:
            url = ft.context.page.get_upload_url(upload_name, UPLOAD_URL_LIFETIME)
            await self.picker.upload([ft.FilePickerUploadFile(upload_url=url, id=f.id, name=f.name)])
            try:
                await asyncio.wait_for(done, UPLOAD_TIMEOUT)
            except ChatError as e:
                self.controller.update_transfer(t, error=e.message)
                raise
            await self._wait_complete(local, f.size)
            # The browser's part is done; the realm upload (its own transfer row) takes over.
            self.controller.forget_transfer(t)
            await self.controller.send_file(to, local, name=f.name)
        finally:
            self._uploads.pop(f.name, None)
            self._upload_transfers.pop(f.name, None)
            await asyncio.to_thread(shutil.rmtree, self.upload_dir / subdir, True)

    @staticmethod
    async def _wait_complete(path: Path, size: int, timeout: float = 30.0) -> None:
        """The browser reports 100 % when its request finished; the server may still be
        flushing the file. Wait until it has all the bytes, or fail plainly."""
        deadline = time.monotonic() + timeout
        while True:
            have = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else -1)
            if have == size:
                return
            if time.monotonic() > deadline:
                raise ChatError(f"the upload of {path.name} did not complete ({have} of {size} bytes)")
            await asyncio.sleep(0.1)

    def _on_upload(self, e: ft.FilePickerUploadEvent) -> None:
        name = e.file_name.rsplit("/", 1)[-1]
        fut = self._uploads.get(name)
        t = self._upload_transfers.get(name)
        if fut is None or fut.done():
            return
        if e.error:
            fut.set_exception(ChatError(f"upload from the browser failed: {e.error}"))
        elif e.progress is not None:
            if t is not None:
                self.controller.update_transfer(t, done_bytes=int(e.progress * t.size))
            if e.progress >= 1.0:
                fut.set_result(None)

    # ---- saving --------------------------------------------------------------------------------

    async def save(self, file_id: int) -> None:
        info = self.controller.state.incoming_files.get(file_id)
        name = info.name if info else f"file {file_id}"
        if not self.web:
            try:
                t = await self.controller.save_file(file_id)
            except ChatError as e:
                self.on_error(f"{name} was not saved: {e.message}")
                return
            self.on_info(f"{name} saved to {t.path} (checksum verified)")
            return
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="realmchat-gui-download-"))
        try:
            try:
                t = await self.controller.save_file(file_id, tmp)
            except ChatError as e:
                self.on_error(f"{name} was not saved: {e.message}")
                return
            path = Path(t.path)
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            if size > BROWSER_SAVE_LIMIT:
                self.on_error(f"{name} is too large to hand to the browser ({size} bytes)")
                return
            data = await asyncio.to_thread(path.read_bytes)
            with contextlib.suppress(Exception):  # the user may cancel the browser's save
                await self.picker.save_file(file_name=path.name, src_bytes=data)
            # The copy on this server is gone; the chat shows where the user got it.
            t.path = "your browser's downloads"
            self.controller.mark_saved(file_id, t.path)
            self.on_info(f"{name} downloaded (checksum verified)")
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

