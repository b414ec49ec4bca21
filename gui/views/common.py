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
