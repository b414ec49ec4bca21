"""A small modal dialog that asks for one name (user or group) and shows the realm's error in
place when the action fails, so the user can correct the name without starting over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import flet as ft

from realmchat.errors import ChatError

from .common import update


def ask_name(title: str, label: str, action: str, submit: Callable[[str], Awaitable[None]],
             after: Callable[[], Awaitable[None]] | None = None) -> ft.AlertDialog:
    """`after` runs once the dialog is closed after a successful submit (e.g. to move the focus:
    a closing dialog gives the focus back to what had it before)."""
    page = ft.context.page
    field = ft.TextField(label=label, autofocus=True, dense=True, width=320)
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2, visible=False)

    async def go(e: ft.Event[ft.Control]) -> None:
        name = (field.value or "").strip()
        if not name:
            field.error = f"enter a {label.lower()}"
            update(field)
            return
        field.error = None
        busy.visible = True
        update(field, busy)
        try:
            await submit(name)
        except ChatError as err:
            field.error = err.message
            busy.visible = False
            update(field, busy)
            return
        page.pop_dialog()
        if after is not None:
            await after()

    def cancel(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    field.on_submit = go
    dialog = ft.AlertDialog(
        modal=True,
        title=ft.Text(title),
        content=ft.Row([field, busy], tight=True),
        actions=[ft.TextButton("Cancel", on_click=cancel), ft.FilledButton(action, on_click=go)],
    )
    page.show_dialog(dialog)
    return dialog
