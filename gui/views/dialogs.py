"""A small modal dialog that asks for one name (user or group) and shows the realm's error in
place when the action fails, so the user can correct the name without starting over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import flet as ft

from chat_cli.models import GroupListing, TraceHop
from chat_cli.render import fmt_hop
from realmchat.display import sanitize
from realmchat.errors import ChatError

from .common import icon_button, update


async def _submit(page: ft.Page, busy: ft.ProgressRing, show_error: Callable[[str], None],
                  action: Awaitable[None], after: Callable[[], Awaitable[None]] | None = None) -> None:
    """A dialog's action: the ring turns while it runs; a refusal shows in place (the dialog
    stays open to correct it); success closes the dialog, then `after` runs."""
    show_error("")
    busy.visible = True
    update(busy)
    try:
        await action
    except ChatError as err:
        busy.visible = False
        update(busy)
        show_error(err.message)
        return
    page.pop_dialog()
    if after is not None:
        await after()


def _field_error(field: ft.TextField) -> Callable[[str], None]:
    def show(message: str) -> None:
        field.error = message or None
        update(field)

    return show


def _text_error(text: ft.Text) -> Callable[[str], None]:
    def show(message: str) -> None:
        text.value, text.visible = message, bool(message)
        update(text)

    return show


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
        await _submit(page, busy, _field_error(field), submit(name), after)

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
        await _submit(page, busy, _field_error(field), submit(text))

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
        update(field)
        await _submit(page, busy, _text_error(error), submit(group, bool(private.value), (key.value or "").strip()),
                      after)

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


def confirm(title: str, text: str, action: str, submit: Callable[[], Awaitable[None]],
            after: Callable[[], Awaitable[None]] | None = None) -> ft.AlertDialog:
    """Asks before doing something that cannot be undone (a delete): Cancel does nothing;
    `action` runs submit(), the realm's error shows in place (the dialog stays open)."""
    page = ft.context.page
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2, visible=False)
    error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False, width=320)

    async def go(e: ft.Event[ft.Control]) -> None:
        await _submit(page, busy, _text_error(error), submit(), after)

    def cancel(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    dialog = ft.AlertDialog(
        modal=True,
        title=ft.Text(title),
        content=ft.Column([ft.Row([ft.Text(text, width=300), busy], tight=True), error], tight=True, spacing=8),
        actions=[ft.TextButton("Cancel", on_click=cancel, autofocus=True),
                 ft.FilledButton(action, on_click=go,
                                 style=ft.ButtonStyle(bgcolor=ft.Colors.ERROR, color=ft.Colors.ON_ERROR))],
    )
    page.show_dialog(dialog)
    return dialog


def show_trace(msg_id: int, load: Callable[[], Awaitable[list[TraceHop]]]) -> ft.AlertDialog:
    """Where a message went: its hops, one line each, loaded when the dialog opens (a refusal or
    a failure shows in place)."""
    page = ft.context.page
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2)
    lines = ft.Column([busy], tight=True, spacing=4, scroll=ft.ScrollMode.AUTO, width=460, height=260)

    def close(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    dialog = ft.AlertDialog(modal=True, title=ft.Text(f"Where #{msg_id} went"), content=lines,
                            actions=[ft.TextButton("Close", on_click=close, autofocus=True)])

    async def fill() -> None:
        try:
            hops = await load()
        except ChatError as err:
            lines.controls = [ft.Text(err.message, size=12, color=ft.Colors.ERROR)]
        else:
            lines.controls = [ft.Text(fmt_hop(h), size=12) for h in hops]
        update(lines)

    page.show_dialog(dialog)
    page.run_task(fill)
    return dialog


def ask_key(title: str, submit: Callable[[str], Awaitable[None]],
            after: Callable[[str], Awaitable[None]] | None = None) -> ft.AlertDialog:
    """Asks for a group's key: "Set key" sets the one typed (one word), "Clear key" removes it
    (nobody joins with a key then). submit(key), "" to clear; the realm's error shows in place.
    after(key) runs once the dialog is closed."""
    page = ft.context.page
    field = ft.TextField(label="New key", autofocus=True, dense=True, width=320, password=True,
                         can_reveal_password=True, helper="people who know it can join")
    busy = ft.ProgressRing(width=16, height=16, stroke_width=2, visible=False)

    async def run(key: str) -> None:
        await _submit(page, busy, _field_error(field), submit(key), None if after is None else lambda: after(key))

    async def set_key(e: ft.Event[ft.Control]) -> None:
        key = (field.value or "").strip()
        if not key:
            field.error = "enter a key (or clear it)"
            update(field)
            return
        await run(key)

    async def clear_key(e: ft.Event[ft.Control]) -> None:
        await run("")

    def cancel(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    field.on_submit = set_key
    dialog = ft.AlertDialog(
        modal=True,
        title=ft.Text(title),
        content=ft.Row([field, busy], tight=True),
        actions=[ft.TextButton("Cancel", on_click=cancel), ft.TextButton("Clear key", on_click=clear_key),
                 ft.FilledButton("Set key", on_click=set_key)],
    )
    page.show_dialog(dialog)
    return dialog


def browse_groups(search: Callable[[str], Awaitable[list[GroupListing]]],
                  is_member: Callable[[str], bool],
                  join: Callable[[str], Awaitable[None]]) -> ft.AlertDialog:
    """A group browser: public groups (and the private ones the user is in), filtered by a name
    or pattern (* and ? as wildcards; a plain word matches anywhere in the name). Each row has
    Join (or Open, for a group the user is in): join(name), then the dialog closes; a refusal
    (a private group, a ban) shows in place."""
    page = ft.context.page
    field = ft.TextField(label="Find groups", hint_text="name or pattern, e.g. prog*", dense=True,
                         expand=True, autofocus=True, prefix_icon=ft.Icons.SEARCH)
    status = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT)
    error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False)
    rows = ft.ListView(spacing=0, height=300)

    def row(g: GroupListing) -> ft.Control:
        member = is_member(g.name)
        verb = "Open" if member else "Join"

        async def go(e: ft.Event[ft.Control], name: str = g.name) -> None:
            error.visible = False
            update(error)
            try:
                await join(name)
            except ChatError as err:
                error.value, error.visible = f"#{sanitize(name)}: {err.message}", True
                update(error)
                return
            page.pop_dialog()

        n = f"{g.members} member{'' if g.members == 1 else 's'}"
        detail = " · ".join(x for x in (g.mode or "public", n, sanitize(g.topic)) if x)
        button = ft.MergeSemantics(content=ft.Semantics(
            label=f"{verb} {sanitize(g.name)}", button=True,
            content=ft.TextButton(verb, on_click=go)))
        return ft.ListTile(
            leading=ft.Icon(ft.Icons.LOCK if g.private else ft.Icons.GROUP, size=18),
            title=ft.Text(f"#{sanitize(g.name)}", size=13, weight=ft.FontWeight.BOLD, max_lines=1,
                          overflow=ft.TextOverflow.ELLIPSIS),
            subtitle=ft.Text(detail, size=11, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS),
            trailing=button, dense=True,
        )

    async def find(e: ft.Event[ft.Control] | None = None) -> None:
        text = (field.value or "").strip()
        pattern = text if not text or any(c in text for c in "*?") else f"*{text}*"
        status.value, error.visible = "searching…", False
        update(status, error)
        try:
            groups = await search(pattern)
        except ChatError as err:
            status.value = ""
            error.value, error.visible = err.message, True
            update(status, error)
            return
        rows.controls = [row(g) for g in groups]
        n = len(groups)
        status.value = (f"{n} group{'' if n == 1 else 's'}" if n else
                        ("no group matches" if text else "no groups yet: create one"))
        update(status, rows)

    def close(e: ft.Event[ft.Control]) -> None:
        page.pop_dialog()

    field.on_submit = find
    dialog = ft.AlertDialog(
        modal=True,
        title=ft.Text("Browse groups"),
        content=ft.Column([ft.Row([field, icon_button(ft.Icons.SEARCH, "Search groups", find)], width=340),
                           status, error, rows], tight=True, spacing=6, width=340),
        actions=[ft.TextButton("Close", on_click=close)],
    )
    page.show_dialog(dialog)
    page.run_task(find)
    return dialog
