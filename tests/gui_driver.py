"""A tiny Chrome DevTools Protocol (CDP) driver for the web GUI end-to-end test.

It starts Debian's headless Chromium on a fresh profile, talks CDP over one websocket (the
`websockets` package), and reads the page through the accessibility (AX) tree that Flutter
web builds from its semantics tree, so the test asserts on what a screen reader would see,
not on pixels. Everything waits in real time with deadlines: Flutter web renders on
requestAnimationFrame, which virtual-time or --screenshot modes never let run past the splash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import websockets

CHROMIUM = os.environ.get("REALMCHAT_CHROMIUM", "/usr/bin/chromium")
T = TypeVar("T")

# Flags from the issue: headless, no sandbox (we run as root in CI), software GL so Flutter's
# CanvasKit renders without a GPU, and nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
    "--window-size=1100,720",
]
VIEWPORT = (1100, 720)
SETTLE_AFTER_TYPING = 0.4  # seconds between typing into a field and the next action


class CDPError(RuntimeError):
    pass


async def wait_for(check: Callable[[], Awaitable[T | None]], timeout: float, what: str,
                   interval: float = 0.25) -> T:
    """Polls `check` until it returns something truthy, or fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
        except (CDPError, OSError, TimeoutError) as e:  # the page may be mid-reload
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        await asyncio.sleep(interval)


@dataclass
class AXNode:
    """One node of the accessibility tree, flattened to what the tests need."""

    node_id: str
    backend_id: int | None
    role: str
    name: str
    value: str
    ignored: bool

    @property
    def text(self) -> str:
        return f"{self.name} {self.value}".strip()


class CDPSession:
    """One websocket to a page target; commands are matched to responses by id, events go to a
    list that `drain_events` hands out."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> CDPSession:
        ws = await websockets.connect(url, max_size=64 * 1024 * 1024, ping_interval=None)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                else:
                    self.events.append(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CDPError("DevTools connection closed"))

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise CDPError(f"{method}: {msg['error']}")
        return msg.get("result", {})

    async def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first collected event named `method` (removed from the list), waiting for it."""

        async def check() -> dict[str, Any] | None:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            return None

        return await wait_for(check, timeout, f"the DevTools event {method}", interval=0.1)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(Exception):
            await self.ws.close()


class Browser:
    """Headless Chromium with one page, driven over CDP."""

    def __init__(self, proc: subprocess.Popen[bytes], profile: Path, cdp: CDPSession) -> None:
        self.proc = proc
        self.profile = profile
        self.cdp = cdp

    @classmethod
    async def launch(cls, url: str = "about:blank", timeout: float = 30.0,
                     setup: Callable[[Browser], Awaitable[None]] | None = None) -> Browser:
        """Starts chromium on a blank page, applies the viewport (and `setup`, e.g. download or
        file-chooser settings, which need an attached page), then opens `url`."""
        if not await asyncio.to_thread(os.path.exists, CHROMIUM):
            raise AssertionError(f"{CHROMIUM} is missing: `make test` installs the Debian package "
                                 "chromium (listed in scripts/apt-packages-test.txt)")
        profile = Path(tempfile.mkdtemp(prefix="realmchat-chromium-"))
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # so close() can end the whole process group it spawned
        )
        try:
            port_file = profile / "DevToolsActivePort"

            async def devtools_port() -> int | None:
                if proc.poll() is not None:
                    raise AssertionError(f"chromium exited with {proc.returncode}")
                if port_file.exists():
                    lines = port_file.read_text().split("\n")
                    if lines and lines[0].strip().isdigit():
                        return int(lines[0])
                return None

            port = await wait_for(devtools_port, timeout, "chromium's DevToolsActivePort file")

            async def page_ws() -> str | None:
                targets = await asyncio.to_thread(_http_json, f"http://127.0.0.1:{port}/json/list")
                pages = [t for t in targets if t.get("type") == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None

            ws_url = await wait_for(page_ws, timeout, "a page target in chromium")
            cdp = await CDPSession.connect(ws_url)
        except BaseException:
            _kill_group(proc)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        browser = cls(proc, profile, cdp)
        # A fixed viewport: headless windows differ between versions, screenshots should not.
        await cdp.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                       deviceScaleFactor=1, mobile=False)
        await cdp.send("Page.enable")
        await cdp.send("Runtime.enable")
        await cdp.send("Accessibility.enable")
        try:
            if setup is not None:
                await setup(browser)
            if url != "about:blank":
                await browser.navigate(url)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def close(self) -> None:
        await self.cdp.close()
        await asyncio.to_thread(_kill_group, self.proc)
        await asyncio.to_thread(shutil.rmtree, self.profile, True)

    # --- page ---------------------------------------------------------------------------------

    async def navigate(self, url: str) -> None:
        await self.cdp.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        r = await self.cdp.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in r:
            raise CDPError(f"evaluate {expression!r}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    async def settle(self) -> None:
        """Waits until Flutter painted its latest frame: the semantics (AX) tree is updated in
        the same frame as the picture, but the compositor may show it a frame or two later."""
        await self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => "
                            "setTimeout(r, 150))))")

    async def screenshot(self, path: Path) -> Path:
        await self.settle()
        r = await self.cdp.send("Page.captureScreenshot", format="png")
        data = base64.b64decode(r["data"])

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path

    # --- accessibility tree ----------------------------------------------------------------------

    async def enable_flutter_semantics(self) -> bool:
        """Flutter web builds its semantics (AX) tree only once asked: it renders a hidden
        'Enable accessibility' button (flt-semantics-placeholder); clicking it switches the tree
        on. Returns True once the semantics host has nodes."""
        return bool(await self.evaluate(
            """(() => {
                const host = document.querySelector('flt-semantics-host');
                if (host && host.querySelector('flt-semantics')) return true;
                const ph = document.querySelector('flt-semantics-placeholder');
                if (ph) { ph.click(); }
                return false;
            })()"""
        ))

    async def ax_nodes(self) -> list[AXNode]:
        r = await self.cdp.send("Accessibility.getFullAXTree")
        nodes = []
        for n in r.get("nodes", []):
            nodes.append(AXNode(
                node_id=n.get("nodeId", ""),
                backend_id=n.get("backendDOMNodeId"),
                role=str(n.get("role", {}).get("value", "")),
                name=str(n.get("name", {}).get("value", "")),
                value=str(n.get("value", {}).get("value", "")),
                ignored=bool(n.get("ignored")),
            ))
        return nodes

    async def ax_texts(self) -> list[str]:
        """Visible texts, leaves only (for failure messages)."""
        return [n.text for n in await self.ax_nodes()
                if not n.ignored and n.text and n.role not in ("generic", "InlineTextBox")]

    async def find(self, text: str | re.Pattern[str], role: str | None = None) -> AXNode | None:
        """The most specific visible AX node whose name/value contains `text` (or matches the
        pattern): an exact match first, else the shortest. Containers carry the text of all
        their children, so "shortest" is the node itself rather than the screen around it."""
        best: AXNode | None = None
        for n in await self.ax_nodes():
            if n.ignored or n.backend_id is None or (role and n.role != role):
                continue
            hay = n.text
            if isinstance(text, re.Pattern):
                if not text.search(hay):
                    continue
            elif text not in hay:
                continue
            if n.name == text:
                return n
            if best is None or len(hay) < len(best.text):
                best = n
        return best

    async def fill_and_submit(self, label: str, text: str, button: str, empty_error: str,
                              done: str | re.Pattern[str] | None = None) -> None:
        """Types into a field and presses the form's button. Once in a while (seen after many
        pages in one run) the app gets the click without the text and answers `empty_error`:
        then the text is typed again, and the button pressed again. With `done`, waits for it."""
        await self.fill(label, text)
        for _ in range(3):
            await self.click(await self.wait_text(button, role="button"))
            await asyncio.sleep(1.0)
            if await self.find(empty_error) is None:
                break
            await self.fill(label, text, replace=True)
        if done is not None:
            await self.wait_text(done, 30)

    async def wait_text(self, text: str | re.Pattern[str], timeout: float = 30.0,
                        role: str | None = None) -> AXNode:
        async def check() -> AXNode | None:
            await self.enable_flutter_semantics()
            return await self.find(text, role)

        try:
            return await wait_for(check, timeout, f"{text!r} in the accessibility tree")
        except AssertionError as e:
            texts = await self.ax_texts()
            raise AssertionError(f"{e}; visible texts: {texts}") from None

    async def center_of(self, node: AXNode) -> tuple[float, float]:
        r = await self.cdp.send("DOM.getBoxModel", backendNodeId=node.backend_id)
        q = r["model"]["border"]
        xs, ys = q[0::2], q[1::2]
        return sum(xs) / 4, sum(ys) / 4

    async def click(self, node: AXNode) -> None:
        """A real mouse click at the node's centre: Flutter listens to pointer events on its own
        glass pane, not to DOM clicks on the semantics overlay."""
        x, y = await self.center_of(node)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.cdp.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                                clickCount=1 if kind != "mouseMoved" else 0)
            await asyncio.sleep(0.05)

    async def type_text(self, text: str) -> None:
        await self.cdp.send("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.cdp.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                                windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                                **({"text": "\r"} if kind == "keyDown" else {}))

    # --- files -----------------------------------------------------------------------------------

    async def intercept_file_chooser(self) -> None:
        """From now on a file dialog opened by the page raises Page.fileChooserOpened instead of
        showing a native dialog (there is none in headless mode)."""
        await self.cdp.send("Page.setInterceptFileChooserDialog", enabled=True)

    async def choose_file(self, path: Path, timeout: float = 20.0) -> None:
        """Answers the next file dialog the page opens with `path`."""
        ev = await self.cdp.wait_event("Page.fileChooserOpened", timeout)
        await self.cdp.send("DOM.setFileInputFiles", files=[str(path)],
                            backendNodeId=ev["params"]["backendNodeId"])

    async def allow_downloads(self, directory: Path) -> None:
        """Downloads the page starts land in `directory` (no prompt)."""
        await self.cdp.send("Page.setDownloadBehavior", behavior="allow", downloadPath=str(directory))

    async def select_all(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.cdp.send("Input.dispatchKeyEvent", type=kind, key="a", code="KeyA",
                                windowsVirtualKeyCode=65, modifiers=2)  # 2 = Ctrl

    async def focused_value(self) -> str | None:
        """The value of the focused text input, or None if no text input has focus. Flutter web
        edits text through one hidden <input>/<textarea> that exists only while a field has focus."""
        return await self.evaluate(
            "(() => { const el = document.activeElement;"
            " return el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') ? el.value : null; })()")

    async def _text_input_focused(self) -> bool:
        return await self.focused_value() is not None

    async def fill(self, label: str, text: str, timeout: float = 20.0, replace: bool = False) -> None:
        """Focuses the text field labelled `label` and types `text` into it (over its current
        content if `replace`). Waits until the field has focus before typing and until the text
        is in it afterwards: under load Flutter may take a while to set up its editing input."""
        deadline = time.monotonic() + timeout
        while True:
            # Look the field up again on every attempt: the layout may have moved since.
            node = await self.wait_text(label, max(1.0, deadline - time.monotonic()), role="textbox")
            await self.click(node)
            try:
                await wait_for(self._text_input_focused, 3.0, f"the {label!r} field to take focus",
                               interval=0.1)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        if replace:
            await self.select_all()
        await self.type_text(text)

        async def typed() -> bool:
            value = await self.focused_value()
            return value is not None and (value == text if replace else text in value)

        await wait_for(typed, timeout, f"{text!r} in the {label!r} field", interval=0.1)
        # The text is in the browser; the app hears of it by a change event on the websocket.
        # A click right after can overtake it on a busy machine: the app then sees an empty field.
        await asyncio.sleep(SETTLE_AFTER_TYPING)


def _http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Ends chromium and its helper processes (renderer, GPU, zygote): they share its session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
