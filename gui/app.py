"""Wires one Flet page (one browser tab, or the desktop window) to its own ChatController and
switches between the connect screen and the chat screen as the login state changes.

Controller changes arrive from the chat client's reader task, often several per event; they
are collected and rendered once per loop iteration, then pushed with one page.update().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from datetime import tzinfo
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import flet as ft

from chat_cli.tls import client_context

from .config import GuiConfig
from .controller import Change, ChatController
from .prefs import Prefs
from .views.chat import ChatView
from .views.connect import ConnectView
from .views.files import FileActions

log = logging.getLogger("gui")

def tls_context(config: GuiConfig) -> ssl.SSLContext | None:
    return client_context(config.ca) if config.tls else None


NARROW = 700  # px: below this width one pane shows at a time (phones, small windows)


def browser_tz(url: str | None) -> tzinfo | None:
    """The viewer's time zone from the page URL's `tz` (gui/web.py puts it there); None (this
    machine's zone) on the desktop or when the browser did not say."""
    name = parse_qs(urlparse(url or "").query).get("tz", [""])[0]
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


class PageSession:
    """Everything that belongs to one page: controller, views, pending redraws."""

    def __init__(self, page: ft.Page, config: GuiConfig, upload_dir: Path | None) -> None:
        self.page = page
        self.config = config
        self.controller = ChatController(config.downloads, tls=tls_context(config))
        self.prefs = Prefs()
        self.files = FileActions(self.controller, upload_dir, self.error, self.info)
        self.connect_view = ConnectView(self.controller, self.prefs, config.realm_host, config.realm_port,
                                        self._logged_in)
        self.chat_view: ChatView | None = None
        self._invitations_seen: set[str] = set()
        self._pending: set[Change] = set()
        self._flush_scheduled = False
        self.controller.subscribe(self._on_change)

    async def start(self) -> None:
        page = self.page
        page.title = "realmchat"
        page.padding = 0
        page.theme_mode = ft.ThemeMode.LIGHT
        page.theme = ft.Theme(color_scheme_seed=ft.Colors.INDIGO)
        self.controller.state.tz = browser_tz(page.url)
        page.on_resize = self._resized
        self.connect_view.set_narrow(self.narrow)
        await self.connect_view.load_prefs()
        self._show_connect()

    @property
    def narrow(self) -> bool:
        width = self.page.width
        return width is not None and width < NARROW

    def _resized(self, e: ft.PageResizeEvent) -> None:
        self.connect_view.set_narrow(self.narrow)
        if self.chat_view is not None:
            self.chat_view.set_narrow(self.narrow)
        self.page.update()

    # ---- screens -----------------------------------------------------------------------------

    def _set_root(self, root: ft.Control) -> None:
        self.page.controls = [root]
        self.page.update()

    def _show_connect(self) -> None:
        self.chat_view = None
        self._set_root(self.connect_view.root)

    def _show_chat(self) -> None:
        self.chat_view = ChatView(self.controller, self.files, self._logout, self.error, narrow=self.narrow,
                                  on_info=self.info)
        self._invitations_seen = {i.group.casefold() for i in self.controller.state.invitations}
        self._set_root(self.chat_view.root)

    async def _logged_in(self) -> None:
        self._show_chat()

    async def _logout(self) -> None:
        await self.controller.logout()
        self.connect_view.show_notice("You are logged out.")
        self._show_connect()

    # ---- controller changes ------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        self._pending.add(change)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        changes, self._pending = self._pending, set()
        try:
            self._render(changes)
        except Exception:  # a rendering bug must not stop later updates
            log.exception("render failed for %s", changes)

    def _render(self, changes: set[Change]) -> None:
        st = self.controller.state
        if Change.NOTICE in changes and self.controller.notice:
            self.info(self.controller.notice)
        if self.chat_view is not None and not st.logged_in:
            # Logged out behind our back (re-authentication failed after a reconnect).
            self.connect_view.show_notice(self.controller.notice or "You were logged out.")
            self._show_connect()
            return
        if self.chat_view is None:
            if Change.STATUS in changes:
                self.connect_view.show_connection(st.status_detail)
                self.page.update()
            return
        self.chat_view.render(changes)
        if Change.INVITATIONS in changes:
            self._announce_invitations()
        self.page.update()

    def _announce_invitations(self) -> None:
        """A new invitation pops up once with a Join action (it also stays in the side list)."""
        current = {i.group.casefold(): i for i in self.controller.state.invitations}
        new = [i for k, i in current.items() if k not in self._invitations_seen]
        self._invitations_seen = set(current)
        if not new or self.chat_view is None:
            return
        inv = new[-1]
        view = self.chat_view

        async def join(e: ft.Event[ft.SnackBar]) -> None:
            await view.sidebar.join_invited(inv.group)

        with contextlib.suppress(Exception):
            self.page.show_dialog(ft.SnackBar(
                ft.Text(f"{inv.by} invited you to #{inv.group}"),
                action="Join", on_action=join, duration=ft.Duration(seconds=10),
            ))

    # ---- messages for the user ---------------------------------------------------------------

    def _snack(self, text: str, error: bool) -> None:
        with contextlib.suppress(Exception):
            self.page.show_dialog(ft.SnackBar(
                ft.Text(text, color=ft.Colors.ON_ERROR if error else None),
                bgcolor=ft.Colors.ERROR if error else None,
                duration=ft.Duration(seconds=6 if error else 4),
            ))

    def error(self, text: str) -> None:
        self._snack(text, error=True)

    def info(self, text: str) -> None:
        self._snack(text, error=False)

    async def close(self) -> None:
        await self.controller.close()


class GuiApp:
    """The Flet entry point: `main(page)` runs once per page (browser tab / window)."""

    def __init__(self, config: GuiConfig, upload_dir: Path | None) -> None:
        self.config = config
        self.upload_dir = upload_dir
        self.sessions: set[PageSession] = set()

    async def main(self, page: ft.Page) -> None:
        session = PageSession(page, self.config, self.upload_dir)
        self.sessions.add(session)

        async def closed(e: ft.Event[ft.Page]) -> None:
            self.sessions.discard(session)
            await session.close()

        await session.start()
        page.on_close = closed

    async def close_all(self) -> None:
        """Shutdown: say goodbye to the realm for every open page."""
        sessions, self.sessions = list(self.sessions), set()
        for s in sessions:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.close(), 5)
