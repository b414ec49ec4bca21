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


def ask_text(title: str, label: str, action: str, submit: Callable[[str], Awaitable[None]],
             optional: bool = False, value: str = "") -> ft.AlertDialog:
    """Like ask_name for free text (a reason, a topic); `optional` allows an empty answer."""
    page = ft.context.page
    field = ft.TextField(label=label, autofocus=True, dense=True, width=320, value=value)
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2, visible=False)

    async def go(e: ft.Event[ft.Control]) -> None:
        text = " ".join((field.value or "").split())
        if not text and not optional:
            field.error = f"enter a {label.lower()}"
            update(field)
            return
        field.error = None
        busy.visible = True
        update(field, busy)
        try:
            await submit(text)
        except ChatError as err:
            field.error = err.message
            busy.visible = False
            update(field, busy)
            return
        page.pop_dialog()

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


def ask_group(title: str, action: str, submit: Callable[[str, bool, str], Awaitable[None]],
              create: bool, after: Callable[[], Awaitable[None]] | None = None,
              name: str = "") -> ft.AlertDialog:
    """Asks for a group: its name, and a key (optional). Creating also offers "Private"
    (invitation or key only). submit(name, private, key); the realm's error shows in place."""
    page = ft.context.page
    field = ft.TextField(label="Group name", autofocus=not name, dense=True, width=320, value=name)
    private = ft.Checkbox(label="Private (invitation or key only)", value=False,
                          visible=create)
    key = ft.TextField(label="Key (optional)", dense=True, width=320, password=True, can_reveal_password=True,
                       autofocus=bool(name),
                       helper="people who know it can join" if create else "needed for a private group "
                                                                           "you were not invited to")
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2, visible=False)
    error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False, width=320)

    async def go(e: ft.Event[ft.Control]) -> None:
        group = (field.value or "").strip()
        if not group:
            field.error = "enter a group name"
            update(field)
            return
        field.error = None
        error.visible = False
        busy.visible = True
        update(field, busy, error)
        try:
            await submit(group, bool(private.value), (key.value or "").strip())
        except ChatError as err:
            error.value, error.visible = err.message, True
            busy.visible = False
            update(error, busy)
            return
        page.pop_dialog()
        if after is not None:
            await after()

    def cancel(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    field.on_submit = go
    key.on_submit = go
    dialog = ft.AlertDialog(
        modal=True,
        title=ft.Text(title),
        content=ft.Column([ft.Row([field, busy], tight=True), private, key, error], tight=True, spacing=8),
        actions=[ft.TextButton("Cancel", on_click=cancel), ft.FilledButton(action, on_click=go)],
    )
    page.show_dialog(dialog)
    return dialog
