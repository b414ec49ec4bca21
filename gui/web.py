"""What the web GUI serves in front of Flet's own app: the fallback fonts Flutter asks for, and
Flutter's large runtime files compressed and cacheable.

Fonts: Flutter web draws every glyph itself. Text its bundled Roboto cannot show (emoji, CJK,
Arabic, Thai, Devanagari, symbols, ...) makes it fetch a Noto font slice from
`assets/fonts/<family>/v<N>/<file>`, a path flet-web has no files for. This module answers those
requests from the Noto fonts of the system (Debian's fonts-noto-core, fonts-noto-cjk and
fonts-noto-color-emoji, which `make setup` installs): every slice of a family redirects to one
URL holding the whole family, so a browser downloads each family once, only when a message
needs it, and keeps it (cache headers). Flutter checks real glyph coverage before it asks
again, so once a family is loaded no further slice of it is requested.

Runtime files (main.dart.wasm, CanvasKit, the JavaScript) are served gzip-compressed (computed
once per process) with an ETag and a Cache-Control lifetime, so a reload costs a revalidation.

The page gets one small script: it puts the browser's time zone into the URL (`?tz=Europe/Paris`)
before Flutter starts, so the server-side app shows times in the viewer's zone, not the server's.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("gui.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FONT_DIRS = (Path("/usr/share/fonts/truetype/noto"), Path("/usr/share/fonts/opentype/noto"))
# Flutter asks for the Japanese, Korean and Chinese families by turns, even within one message;
# each face of Debian's NotoSansCJK-Regular.ttc covers Han, kana and Hangul alike (45k code
# points, ~13 MB gzipped), so all of them get the one Simplified Chinese face: one download.
CJK_FAMILIES = ("notosansjp", "notosanskr", "notosanssc", "notosanstc", "notosanshk")
CJK = "notosanscjk"
CJK_FACE = 2
CJK_FILE = "NotoSansCJK-Regular.ttc"
EMOJI_FILE = "NotoColorEmoji.ttf"
# Flutter's "Noto Sans" is the current Google Fonts one, which also covers Devanagari (Flutter
# then asks for no Devanagari font); Debian's older Noto Sans does not, so the two are merged.
MERGED = {"notosans": ("notosansdevanagari",)}

# Flutter's request for a fallback slice: assets/fonts/notosansthai/v25/<hash>.0.woff2
FALLBACK_RE = re.compile(r"^/assets/fonts/(noto[a-z0-9]+)/v\d+/[A-Za-z0-9_.-]+$")
FONT_URL = "/fonts/{family}.ttf"
FONT_RE = re.compile(r"^/fonts/(noto[a-z0-9]+)\.ttf$")
# Flet patches these per process (app name, CDN settings): they go through Flet unchanged.
PATCHED = frozenset({"index.html", "manifest.json", "assets/FontManifest.json"})
COMPRESSED_SUFFIXES = (".wasm", ".js", ".mjs", ".otf", ".ttf")

FONT_MAX_AGE = 30 * 24 * 3600   # fonts change only with a system upgrade; the ETag covers that
RUNTIME_MAX_AGE = 24 * 3600     # flet-web's files keep their names across versions: a day, then revalidate
# The same isolation headers Flet puts on its own responses (the page is cross-origin isolated).
ISOLATION = [(b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-embedder-policy", b"require-corp"),
             (b"cross-origin-resource-policy", b"same-origin")]


@dataclass(frozen=True)
class Blob:
    raw: bytes
    gz: bytes
    etag: str
    content_type: str


def _blob(raw: bytes, content_type: str) -> Blob:
    # Level 6: most of level 9's gain on wasm at a fraction of the time.
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    return Blob(raw=raw, gz=gz, etag='"' + hashlib.sha256(raw).hexdigest()[:32] + '"', content_type=content_type)


Source = tuple[Path, int | None]  # a font file, and the face if it is a collection


def font_index(dirs: tuple[Path, ...] = FONT_DIRS) -> dict[str, list[Source]]:
    """Flutter's family names (lower case, no spaces: notosansarabic) -> the sources that make
    that family (one, or several merged). Regular weights only: that is all Flutter's fallback
    asks for."""
    index: dict[str, Source] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.name.endswith("-Regular.ttf") or p.name.endswith("-Regular.otf"):
                index.setdefault(p.name.rsplit("-", 1)[0].lower(), (p, None))
            elif p.name == EMOJI_FILE:
                index["notocoloremoji"] = (p, None)
            elif p.name == CJK_FILE:
                index[CJK] = (p, CJK_FACE)
    return {family: [src, *(index[m] for m in MERGED.get(family, ()) if m in index)]
            for family, src in index.items()}


def _load_font(sources: list[Source]) -> bytes:
    from fontTools.merge import Merger
    from fontTools.ttLib import TTCollection

    out = io.BytesIO()
    if len(sources) > 1:
        Merger().merge([str(p) for p, _ in sources]).save(out)
        return out.getvalue()
    path, face = sources[0]
    if face is None:
        return path.read_bytes()
    # One face of an OpenType collection as a standalone font (CanvasKit loads single fonts).
    TTCollection(str(path), lazy=True).fonts[face].save(out)
    return out.getvalue()


class FontStore:
    """The fonts this server can give Flutter, loaded and compressed on first request."""

    def __init__(self, index: dict[str, list[Source]] | None = None) -> None:
        self.index = font_index() if index is None else index
        self._blobs: dict[str, Blob] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def has(self, family: str) -> bool:
        return family in self.index

    async def get(self, family: str) -> Blob | None:
        if family not in self.index:
            return None
        lock = self._locks.setdefault(family, asyncio.Lock())
        async with lock:
            blob = self._blobs.get(family)
            if blob is None:
                sources = self.index[family]
                raw = await asyncio.to_thread(_load_font, sources)
                blob = await asyncio.to_thread(_blob, raw, "font/ttf" if raw[:4] != b"OTTO" else "font/otf")
                self._blobs[family] = blob
                log.info("serving font %s from %s (%d bytes, %d gzipped)", family,
                         ", ".join(str(p) for p, _ in sources), len(raw), len(blob.gz))
            return blob


class RuntimeFiles:
    """flet-web's unpatched runtime files, gzipped once."""

    TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
             ".otf": "font/otf", ".ttf": "font/ttf"}

    def __init__(self, web_dir: Path) -> None:
        self.web_dir = web_dir.resolve()
        self._blobs: dict[str, Blob] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, url_path: str) -> Path | None:
        rel = url_path.lstrip("/")
        if not rel.endswith(COMPRESSED_SUFFIXES) or rel in PATCHED or ".." in rel.split("/"):
            return None
        p = (self.web_dir / rel).resolve()
        return p if p.is_relative_to(self.web_dir) and p.is_file() else None

    async def get(self, url_path: str) -> Blob | None:
        p = self.path_for(url_path)
        if p is None:
            return None
        key = str(p)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            blob = self._blobs.get(key)
            if blob is None:
                raw = await asyncio.to_thread(p.read_bytes)
                blob = await asyncio.to_thread(_blob, raw, self.TYPES[p.suffix])
                self._blobs[key] = blob
            return blob


def _header(scope: Scope, name: bytes) -> str:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


async def _send_blob(scope: Scope, send: Send, blob: Blob, max_age: int) -> None:
    headers = [(b"content-type", blob.content_type.encode()), (b"etag", blob.etag.encode()),
               (b"cache-control", f"public, max-age={max_age}".encode()), (b"vary", b"accept-encoding"),
               *ISOLATION]
    if blob.etag in _header(scope, b"if-none-match"):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    accepts = _header(scope, b"accept-encoding")
    gzip_ok = any(part.split(";")[0].strip() == "gzip" for part in accepts.split(","))
    body = blob.gz if gzip_ok else blob.raw
    if gzip_ok:
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _redirect(send: Send, location: str, max_age: int) -> None:
    await send({"type": "http.response.start", "status": 301,
                "headers": [(b"location", location.encode()), (b"content-length", b"0"),
                            (b"cache-control", f"public, max-age={max_age}".encode()), *ISOLATION]})
    await send({"type": "http.response.body", "body": b""})


# Runs before Flutter reads the URL; a failure leaves the URL alone (times then use the server's zone).
TZ_SCRIPT = (b"<script>(function(){try{var tz=Intl.DateTimeFormat().resolvedOptions().timeZone;"
             b"var u=new URL(location.href);if(tz&&u.searchParams.get('tz')!==tz){u.searchParams.set('tz',tz);"
             b"history.replaceState(history.state,'',u.toString());}}catch(e){}})();</script>")


def _inject_tz(send: Send) -> Send:
    """Wraps `send` so that an HTML page gets TZ_SCRIPT at the start of its <head>."""
    start: MutableMapping[str, Any] | None = None
    chunks: list[bytes] = []

    async def wrapped(message: MutableMapping[str, Any]) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            ctype = dict(message.get("headers", [])).get(b"content-type", b"")
            if message.get("status") == 200 and ctype.startswith(b"text/html"):
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks).replace(b"<head>", b"<head>" + TZ_SCRIPT, 1)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"etag")]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


class WebExtras:
    """ASGI app in front of Flet's: fonts and compressed runtime files; everything else
    (pages, the websocket, uploads, lifespan) passes through to Flet."""

    def __init__(self, app: ASGIApp, fonts: FontStore, runtime: RuntimeFiles) -> None:
        self.app = app
        self.fonts = fonts
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            m = FALLBACK_RE.match(path)
            family = CJK if m and m.group(1) in CJK_FAMILIES else m.group(1) if m else ""
            if family and self.fonts.has(family):
                await _redirect(send, FONT_URL.format(family=family), FONT_MAX_AGE)
                return
            m = FONT_RE.match(path)
            if m:
                blob = await self.fonts.get(m.group(1))
                if blob is not None:
                    await _send_blob(scope, send, blob, FONT_MAX_AGE)
                    return
            elif path.endswith(COMPRESSED_SUFFIXES):
                blob = await self.runtime.get(path)
                if blob is not None:
                    await _send_blob(scope, send, blob, RUNTIME_MAX_AGE)
                    return
            if scope["method"] == "GET":
                send = _inject_tz(send)
        await self.app(scope, receive, send)
