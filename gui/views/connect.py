"""The connect screen: realm address, user name, password; log in or create an account.

Errors appear on the field they are about: realm down under the address, wrong password under
the password, name taken under the user name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import flet as ft

from realmchat.codes import Code
from realmchat.errors import ChatError

from ..controller import ChatController
from ..prefs import Prefs
from ..state import Status
from .common import update


class ConnectView:
    def __init__(self, controller: ChatController, prefs: Prefs, default_host: str, default_port: int,
                 on_logged_in: Callable[[], Awaitable[None]]) -> None:
        self.controller = controller
        self.prefs = prefs
        self.on_logged_in = on_logged_in
        self.host = ft.TextField(label="Realm host", value=default_host, expand=True, dense=True,
                                 on_submit=self._focus_user)
        self.port = ft.TextField(label="Port", value=str(default_port), width=110, dense=True,
                                 keyboard_type=ft.KeyboardType.NUMBER, on_submit=self._focus_user)
        self.user = ft.TextField(label="User name", dense=True, autofocus=True,
                                 on_submit=self._focus_password,
                                 helper="1-32 letters, digits, _ . -")
        self.password = ft.TextField(label="Password", password=True, can_reveal_password=True, dense=True,
                                     on_submit=self._login_clicked)
        self.login_button = ft.FilledButton("Log in", icon=ft.Icons.LOGIN, on_click=self._login_clicked)
        self.register_button = ft.OutlinedButton("Create account", icon=ft.Icons.PERSON_ADD,
                                                 on_click=self._register_clicked)
        self.busy = ft.ProgressRing(width=18, height=18, stroke_width=2, visible=False)
        self.status = ft.Text("", size=13)  # notices ("You are logged out.")
        self.connection = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT)  # connection state
        self.card_box = ft.Container(
                padding=24,
                width=440,
                content=ft.Column(
                    tight=True,
                    spacing=14,
                    horizontal_alignment=ft.CrossAxisAlignment.STRETCH,
                    controls=[
                        ft.Row([ft.Icon(ft.Icons.FORUM, color=ft.Colors.PRIMARY, size=32),
                                ft.Text("realmchat", size=26, weight=ft.FontWeight.BOLD)]),
                        ft.Text("Chat with people on every realm.", color=ft.Colors.ON_SURFACE_VARIANT),
                        ft.Row([self.host, self.port]),
                        self.user,
                        self.password,
                        ft.Row([self.login_button, self.register_button, self.busy], spacing=12),
                        self.status,
                        self.connection,
                    ],
                ),
            )
        card = ft.Card(content=self.card_box)
        self.root = ft.Container(content=card, alignment=ft.Alignment.CENTER, expand=True, padding=8)

    def set_narrow(self, narrow: bool) -> None:
        """On a phone the form takes the screen's width instead of a fixed 440 px."""
        self.card_box.width = None if narrow else 440
        self.card_box.padding = 16 if narrow else 24

    async def load_prefs(self) -> None:
        """Fills the fields with the remembered realm and user name."""
        host = await self.prefs.get("host")
        port = await self.prefs.get("port")
        user = await self.prefs.get("user")
        if host:
            self.host.value = str(host)
        if port:
            self.port.value = str(port)
        if user:
            self.user.value = str(user)

    def show_notice(self, text: str) -> None:
        self.status.value = text

    def show_connection(self, text: str) -> None:
        self.connection.value = text

    # ---- actions -----------------------------------------------------------------------------

    async def _focus_user(self, e: ft.Event[ft.TextField]) -> None:
        await self.user.focus()

    async def _focus_password(self, e: ft.Event[ft.TextField]) -> None:
        await self.password.focus()

    def _clear_errors(self) -> None:
        for f in (self.host, self.port, self.user, self.password):
            f.error = None
        self.status.value = ""

    def _set_busy(self, busy: bool) -> None:
        self.busy.visible = busy
        self.login_button.disabled = busy
        self.register_button.disabled = busy

    async def _ensure_connected(self) -> bool:
        """Connects to the realm in the fields unless already connected to it."""
        try:
            port = int((self.port.value or "").strip())
        except ValueError:
            self.port.error = "a number, e.g. 8000"
            return False
        host = (self.host.value or "").strip()
        st = self.controller.state
        if self.controller.client is not None and st.status is not Status.OFFLINE and \
                (st.host, st.port) == (host, port):
            return True
        try:
            await self.controller.connect(host, port)
        except ChatError as e:
            self.host.error = e.message
            return False
        await self.prefs.set("host", host)
        await self.prefs.set("port", port)
        return True

    def _show_error(self, e: ChatError) -> None:
        """Puts the realm's message on the field it concerns."""
        if e.code is Code.UNAUTHENTICATED:
            self.password.error = e.message
        elif e.code is Code.ALREADY_EXISTS or (e.code is Code.INVALID_ARGUMENT and "name" in e.message):
            self.user.error = e.message
        elif e.code is Code.INVALID_ARGUMENT:
            self.password.error = e.message
        elif e.code is Code.UNAVAILABLE:
            self.host.error = e.message
        else:
            self.status.value = e.message

    async def _run(self, register: bool) -> None:
        self._clear_errors()
        self._set_busy(True)
        self.root.update()
        try:
            if not await self._ensure_connected():
                return
            user, password = (self.user.value or "").strip(), self.password.value or ""
            try:
                if register:
                    await self.controller.register(user, password)
                await self.controller.login(user, password)
            except ChatError as e:
                self._show_error(e)
                return
            await self.prefs.set("user", user)
            self.password.value = ""
            await self.on_logged_in()
        finally:
            self._set_busy(False)
            update(self.root)

    async def _login_clicked(self, e: ft.Event[ft.Control]) -> None:
        await self._run(register=False)

    async def _register_clicked(self, e: ft.Event[ft.Control]) -> None:
        await self._run(register=True)
