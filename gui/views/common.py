"""Small helpers shared by the views."""

from __future__ import annotations

import contextlib

import flet as ft


def update(*controls: ft.Control) -> None:
    """Pushes changes of controls that may have left the page meanwhile (e.g. the login form
    after a successful login switched to the chat screen): then there is nothing to update."""
    for c in controls:
        with contextlib.suppress(RuntimeError, AssertionError):
            c.update()


def section_title(text: str) -> ft.Text:
    return ft.Text(text, size=12, weight=ft.FontWeight.BOLD, color=ft.Colors.ON_SURFACE_VARIANT)


def icon_button(icon: ft.IconData, label: str, on_click: ft.ControlEventHandler[ft.IconButton] | None,
                **kwargs: object) -> ft.Control:
    """An IconButton that screen readers (and the browser tests) can name: a plain IconButton
    has no accessible name, so the label is merged into the button's semantics node. (No
    tooltip: merged, it would repeat the label.)"""
    button = ft.IconButton(icon, on_click=on_click, **kwargs)  # type: ignore[arg-type]
    return ft.MergeSemantics(content=ft.Semantics(label=label, button=True, content=button))
