"""The chat screen: header (who, where, connection state), side list (conversations, people
online, files), and the open conversation with its composer.

Wide screens show the side list and the conversation side by side; narrow ones (phones) show one
at a time: the list, then the conversation with a back button, as chat apps do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import flet as ft

from chat_cli.models import SearchHit
from realmchat.display import sanitize
from realmchat.errors import ChatError

from ..controller import COMMON_REACTIONS, Change, ChatController, human_size
from ..state import (
    ChatLine,
    Conversation,
    Kind,
    LineKind,
    Status,
    Transfer,
    TransferState,
    clock,
    day_label,
    local_date,
    local_time,
)
from .common import icon_button, section_title, update
from .dialogs import ask_group, ask_name, ask_text, browse_groups, confirm, show_trace
from .files import FileActions
from .members import MembersPanel

STATUS_COLORS = {
    Status.ONLINE: ft.Colors.GREEN,
    Status.CONNECTED: ft.Colors.AMBER,
    Status.CONNECTING: ft.Colors.AMBER,
    Status.RECONNECTING: ft.Colors.ORANGE,
    Status.DEGRADED: ft.Colors.ORANGE,
    Status.OFFLINE: ft.Colors.RED,
}


DIALOG_EXIT = 0.4  # seconds: a Material dialog's exit transition, with a margin
REFOCUS_AFTER = 0.5  # seconds: a newly shown message box is built by then


PRESENCE_COLORS = {"online": ft.Colors.GREEN, "away": ft.Colors.AMBER}
# Log out (the session) and Leave group (one group) sit side by side on a phone: a door, not a
# second arrow out of a box.
LOGOUT_ICON = ft.Icons.LOGOUT
LEAVE_ICON = ft.Icons.MEETING_ROOM_OUTLINED


def presence_dot(status: str, size: int = 10) -> ft.Control:
    """A coloured dot for a user's presence. Decoration only: the row says the same in words
    where it matters (the conversation header, *away* under a name), so screen readers do not
    hear "online" before every name."""
    return ft.Icon(ft.Icons.CIRCLE, size=size, color=PRESENCE_COLORS.get(status, ft.Colors.GREY))


def status_label(status: Status, realm: str) -> str:
    return {Status.ONLINE: f"online · realm {realm}", Status.RECONNECTING: "reconnecting…",
            Status.DEGRADED: "main server unreachable, reconnecting…"}.get(status, status.value)


class Header:
    def __init__(self, controller: ChatController, on_logout: Callable[[], Awaitable[None]],
                 on_error: Callable[[str], None] | None = None) -> None:
        self.controller = controller
        self.on_logout = on_logout
        self.on_error = on_error or (lambda text: None)
        self.dot = ft.Icon(ft.Icons.CIRCLE, size=12)
        # One line each, cut with an ellipsis: the header never wraps, whatever the width.
        self.status = ft.Text("", size=13, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS, no_wrap=True)
        self.who = ft.Text("", size=13, weight=ft.FontWeight.BOLD, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS,
                           no_wrap=True)
        self.brand = ft.Text("realmchat", size=18, weight=ft.FontWeight.BOLD)
        self.spacer = ft.Container(expand=True)
        self.status_row = ft.Row([self.dot, self.status], spacing=6, tooltip="connection to the realm")
        self.person = ft.Icon(ft.Icons.PERSON, size=18)
        self.divider = ft.VerticalDivider(width=16)
        # Away toggle: "Away" asks for an optional message; while away it reads "Back".
        self.away_text = ft.TextButton("Set away", icon=ft.Icons.BEDTIME, on_click=self._toggle_away)
        self.away_icon = icon_button(ft.Icons.BEDTIME, "Set away", self._toggle_away)
        # Read receipts: whether senders see when the user read their private messages. A
        # labelled switch on wide screens; on a phone an icon button that says its state.
        self.receipts_switch = ft.Switch(label="Read receipts", value=True, on_change=self._receipts_switched,
                                         tooltip="senders see when you read their private messages")
        self.receipts_icon = icon_button(ft.Icons.DONE_ALL, "Read receipts on", self._toggle_receipts)
        self.logout_text = ft.TextButton("Log out", icon=LOGOUT_ICON, on_click=self._logout)
        self.logout_icon = icon_button(LOGOUT_ICON, "Log out", self._logout)
        self.row = ft.Row(
            spacing=8,
            controls=[ft.Icon(ft.Icons.FORUM, color=ft.Colors.PRIMARY), self.brand, self.spacer, self.status_row,
                      self.divider, self.person, self.who, self.receipts_switch, self.receipts_icon, self.away_text,
                      self.away_icon, self.logout_text,
                      self.logout_icon],
        )
        self.root = ft.Container(padding=ft.Padding.symmetric(horizontal=16, vertical=8),
                                 bgcolor=ft.Colors.SURFACE_CONTAINER, content=self.row)
        self.set_narrow(False)

    def set_narrow(self, narrow: bool) -> None:
        """Phone: no brand text and divider, state and name share the width (each cut with an
        ellipsis), Log out as an icon button that stays on screen."""
        self.brand.visible = self.spacer.visible = self.divider.visible = self.person.visible = not narrow
        self.logout_text.visible = self.away_text.visible = self.receipts_switch.visible = not narrow
        self.logout_icon.visible = self.away_icon.visible = self.receipts_icon.visible = narrow
        self.status_row.expand = 1 if narrow else None
        self.status.expand = 1 if narrow else None
        self.who.expand = 1 if narrow else None
        self.root.padding = ft.Padding.symmetric(horizontal=8 if narrow else 16, vertical=4 if narrow else 8)

    def render(self) -> None:
        st = self.controller.state
        self.dot.color = STATUS_COLORS.get(st.status, ft.Colors.GREY)
        self.status.value = status_label(st.status, sanitize(st.realm))
        self.status.tooltip = st.status_detail
        self.who.value = f"{sanitize(st.user)} @ {sanitize(st.realm)}" if st.user else ""
        if st.away:
            self.status.value = "away" + (f": {sanitize(st.away_message)}" if st.away_message else "")
            self.dot.color = ft.Colors.AMBER
        label = "I'm back" if st.away else "Set away"
        icon = ft.Icons.WB_SUNNY if st.away else ft.Icons.BEDTIME
        self.away_text.content = label
        self.away_text.icon = icon
        sem = self.away_icon.content
        assert isinstance(sem, ft.Semantics) and isinstance(sem.content, ft.IconButton)
        sem.label = label
        sem.content.icon = icon
        self.receipts_switch.value = st.receipts
        sem = self.receipts_icon.content
        assert isinstance(sem, ft.Semantics) and isinstance(sem.content, ft.IconButton)
        sem.label = "Read receipts on" if st.receipts else "Read receipts off"
        sem.toggled = st.receipts
        sem.content.icon = ft.Icons.DONE_ALL if st.receipts else ft.Icons.REMOVE_DONE

    async def _set_receipts(self, on: bool) -> None:
        try:
            await self.controller.set_receipts(on)
        except ChatError as err:
            self.on_error(err.message)
            # The switch shows what the server has, not what was asked.
            self.render()
            update(self.root)

    async def _receipts_switched(self, e: ft.Event[ft.Control]) -> None:
        await self._set_receipts(bool(self.receipts_switch.value))

    async def _toggle_receipts(self, e: ft.Event[ft.Control]) -> None:
        await self._set_receipts(not self.controller.state.receipts)

    async def _toggle_away(self, e: ft.Event[ft.Control]) -> None:
        if self.controller.state.away:
            try:
                await self.controller.set_back()
            except ChatError:
                pass  # the header keeps saying away: the user can try again
            return

        async def submit(text: str) -> None:
            await self.controller.set_away(text)

        ask_text("Set away", "Message (optional)", "Set away", submit, optional=True)

    async def _logout(self, e: ft.Event[ft.Control]) -> None:
        await self.on_logout()


class Sidebar:
    """Conversations with unread counts and previews; people online (with realm); files."""

    def __init__(self, controller: ChatController, files: FileActions,
                 on_open: Callable[[str], Awaitable[None]], on_error: Callable[[str], None],
                 on_focus: Callable[[], Awaitable[None]],
                 on_open_hit: Callable[[SearchHit], Awaitable[None]] | None = None) -> None:
        self.controller = controller
        self.on_open_hit = on_open_hit
        # Search over every conversation the user may read; results open their conversation.
        self.search_field = ft.TextField(label="Search messages", dense=True, on_submit=self._search,
                                         prefix_icon=ft.Icons.SEARCH, expand=True)
        self.search_clear = icon_button(ft.Icons.CLOSE, "Clear search", self._clear_search, icon_size=16)
        self.search_status = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT)
        self.search_results = ft.ListView(spacing=0, expand=3)
        self.search_box = ft.Column([ft.Row([section_title("SEARCH RESULTS"), self.search_clear],
                                            alignment=ft.MainAxisAlignment.SPACE_BETWEEN),
                                     self.search_status, self.search_results],
                                    spacing=2, expand=3, visible=False)
        self.files = files
        self.on_open = on_open
        self.on_focus = on_focus
        self.on_error = on_error
        self.conversations = ft.ListView(spacing=0, expand=3)
        self.online = ft.ListView(spacing=0, expand=2)
        self.online_title = section_title("ONLINE")
        self.incoming = ft.Column(spacing=4)
        self.transfers = ft.Column(spacing=4)
        self.files_box = ft.Column([section_title("FILES"), self.incoming, self.transfers], spacing=6,
                                   visible=False)
        self.invitations = ft.Column(spacing=2)
        self.invitations_box = ft.Column([section_title("INVITATIONS"), self.invitations], spacing=4, visible=False)
        actions = ft.Row(
            spacing=0,
            controls=[
                ft.TextButton("Chat", icon=ft.Icons.ADD_COMMENT, tooltip="start a private chat",
                              on_click=self._new_chat),
                ft.TextButton("New group", icon=ft.Icons.GROUP_ADD, tooltip="create a group",
                              on_click=self._new_group),
                ft.TextButton("Join", icon=ft.Icons.GROUP, tooltip="join a group", on_click=self._join_group),
            ],
        )
        self.stale = ft.Text("", size=11, italic=True, color=ft.Colors.ON_SURFACE_VARIANT, visible=False)
        self.root = ft.Container(
            width=310,
            padding=ft.Padding.only(left=8, right=8, top=8, bottom=8),
            content=ft.Column(
                spacing=6,
                controls=[
                    actions,
                    ft.Row([self.search_field]),
                    self.search_box,
                    self.invitations_box,
                    ft.Row([section_title("CONVERSATIONS"),
                            ft.TextButton("Browse groups", icon=ft.Icons.TRAVEL_EXPLORE,
                                          tooltip="find public groups and join them", on_click=self._browse)],
                           alignment=ft.MainAxisAlignment.SPACE_BETWEEN),
                    self.conversations,
                    ft.Divider(height=1),
                    ft.Row([self.online_title, icon_button(ft.Icons.REFRESH, "Refresh who is online",
                                                           self._refresh_online, icon_size=16)],
                           alignment=ft.MainAxisAlignment.SPACE_BETWEEN),
                    self.stale,
                    self.online,
                    self.files_box,
                ],
            ),
        )

    def set_narrow(self, narrow: bool) -> None:
        """Phone: the list takes the whole width (the conversation replaces it when opened)."""
        self.root.width = None if narrow else 310
        self.root.expand = narrow

    # ---- rendering ---------------------------------------------------------------------------

    def render_conversations(self) -> None:
        st = self.controller.state
        rows: list[ft.Control] = []
        for conv in st.sorted_conversations():
            rows.append(self._conversation_tile(conv, selected=conv.key == st.current))
        if not rows:
            rows.append(ft.Text("No conversations yet: start a chat or join a group.", size=12,
                                color=ft.Colors.ON_SURFACE_VARIANT))
        if st.waiting_line:  # what waited at login, above the list
            rows.insert(0, ft.Text(sanitize(st.waiting_line), size=12, italic=True, color=ft.Colors.PRIMARY))
        self.conversations.controls = rows

    def _conversation_tile(self, conv: Conversation, selected: bool) -> ft.Control:
        trailing: list[ft.Control] = []
        if conv.last is not None:
            trailing.append(ft.Text(local_time(conv.last.ts, tz=self.controller.state.tz), size=11,
                                    color=ft.Colors.ON_SURFACE_VARIANT))
        if conv.mentions:
            trailing.append(ft.Container(
                content=ft.Text(f"@{conv.mentions}", size=11, color=ft.Colors.ON_TERTIARY,
                                weight=ft.FontWeight.BOLD, semantics_label=f"{conv.mentions} mentioning you"),
                bgcolor=ft.Colors.TERTIARY, border_radius=10, padding=ft.Padding.symmetric(horizontal=6, vertical=1),
            ))
        if conv.unread:
            trailing.append(ft.Container(
                content=ft.Text(str(conv.unread), size=11, color=ft.Colors.ON_PRIMARY,
                                weight=ft.FontWeight.BOLD, semantics_label=f"{conv.unread} unread"),
                bgcolor=ft.Colors.PRIMARY, border_radius=10, padding=ft.Padding.symmetric(horizontal=7, vertical=1),
            ))

        async def clicked(e: ft.Event[ft.ListTile], key: str = conv.key) -> None:
            await self.on_open(key)

        leading: ft.Control = ft.Icon(ft.Icons.GROUP)
        if conv.kind is Kind.PRIVATE:
            p = self.controller.state.presence_of(conv.name)
            leading = ft.Row([presence_dot(p.status if p else "offline", 12), ft.Icon(ft.Icons.PERSON)],
                             spacing=2, tight=True)
        typing = conv.typing_label
        subtitle = conv.preview or ("group" if conv.kind is Kind.GROUP else "private chat")
        return ft.ListTile(
            leading=leading,
            title=ft.Text(sanitize(conv.title), weight=ft.FontWeight.BOLD if conv.unread else None,
                          max_lines=1, overflow=ft.TextOverflow.ELLIPSIS),
            subtitle=ft.Text(sanitize(typing) if typing else subtitle, italic=bool(typing),
                             size=12, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS),
            trailing=ft.Column(trailing, spacing=2, alignment=ft.MainAxisAlignment.CENTER,
                               horizontal_alignment=ft.CrossAxisAlignment.END) if trailing else None,
            selected=selected,
            dense=True,
            on_click=clicked,
        )

    def render_search(self) -> None:
        st = self.controller.state
        shown = bool(st.search_query) or st.searching or bool(st.search_error)
        self.search_box.visible = shown
        if not shown:
            self.search_results.controls = []
            return
        if st.searching:
            self.search_status.value = "searching…"
        elif st.search_error:
            self.search_status.value = f"search failed: {st.search_error}"
        else:
            n = len(st.search_results)
            self.search_status.value = (f"{n} result{'' if n == 1 else 's'} for “{sanitize(st.search_query)}”"
                                        if n else f"nothing found for “{sanitize(st.search_query)}”")
        rows: list[ft.Control] = []
        for hit in st.search_results:
            m = hit.message
            who = "you" if m.sender.casefold() == st.user.casefold() else sanitize(m.sender)
            where = f"# {sanitize(hit.peer.lstrip('#'))}" if hit.kind == "group" else sanitize(hit.peer)
            text = " ".join(m.text.split())

            async def clicked(e: ft.Event[ft.ListTile], hit: SearchHit = hit) -> None:
                if self.on_open_hit is not None:
                    try:
                        await self.on_open_hit(hit)
                    except ChatError as err:
                        self.on_error(err.message)

            rows.append(ft.ListTile(
                leading=ft.Icon(ft.Icons.GROUP if hit.kind == "group" else ft.Icons.PERSON, size=18),
                title=ft.Text(f"{where} · {local_time(m.time, tz=st.tz)}", size=12, weight=ft.FontWeight.BOLD,
                              max_lines=1, overflow=ft.TextOverflow.ELLIPSIS),
                subtitle=ft.Text(f"{who}: {sanitize(text)}", size=12, max_lines=2,
                                 overflow=ft.TextOverflow.ELLIPSIS),
                dense=True, on_click=clicked,
            ))
        self.search_results.controls = rows

    async def _search(self, e: ft.Event[ft.Control]) -> None:
        query = (self.search_field.value or "").strip()
        if not query:
            self.controller.clear_search()
            return
        with contextlib.suppress(ChatError):  # shown in the results box
            await self.controller.search(query)

    async def _clear_search(self, e: ft.Event[ft.Control]) -> None:
        self.search_field.value = ""
        update(self.search_field)
        self.controller.clear_search()

    def render_online(self) -> None:
        st = self.controller.state
        self.online_title.value = f"ONLINE ({len(st.online)})"
        # While the realm or its main server is down the list cannot be refreshed: say how old it is.
        stale = st.online_stale and st.online_at is not None
        self.stale.visible = stale
        if stale:
            self.stale.value = f"not current: as of {local_time(st.online_at, tz=st.tz)}"
        rows: list[ft.Control] = []
        for p in st.online:
            me = p.user.casefold() == st.user.casefold()

            async def clicked(e: ft.Event[ft.ListTile], user: str = p.user) -> None:
                await self._start_chat(user)

            name = sanitize(p.user)
            away = f"away: {sanitize(p.message)}" if p.away and p.message else ("away" if p.away else "")
            rows.append(ft.ListTile(
                leading=presence_dot("unknown" if stale else p.status),
                title=ft.Text(f"{name} (you)" if me else name, size=13),
                subtitle=ft.Text(away, size=11, italic=True, max_lines=1,
                                 overflow=ft.TextOverflow.ELLIPSIS) if away else None,
                trailing=ft.Text(sanitize(p.realm), size=11, color=ft.Colors.ON_SURFACE_VARIANT),
                dense=True,
                on_click=None if me else clicked,
            ))
        self.online.controls = rows

    def render_files(self) -> None:
        st = self.controller.state
        incoming: list[ft.Control] = []
        for f in st.incoming_files.values():
            async def save(e: ft.Event[ft.Control], file_id: int = f.id) -> None:
                await self.files.save(file_id)

            incoming.append(ft.Row(
                [ft.Icon(ft.Icons.INSERT_DRIVE_FILE, size=16),
                 ft.Text(f"{sanitize(f.name)} ({human_size(f.size)}) from {sanitize(f.sender)}", size=12,
                         expand=True, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS),
                 icon_button(ft.Icons.DOWNLOAD, f"Save {sanitize(f.name)}", save, icon_size=18)],
                spacing=4,
            ))
        self.incoming.controls = incoming
        # Running transfers, and the last few finished ones so the user sees the outcome.
        shown = [t for t in st.transfers if t.state is TransferState.RUNNING]
        shown += [t for t in st.transfers if t.state is not TransferState.RUNNING][-3:]
        self.transfers.controls = [transfer_row(t) for t in shown]
        self.files_box.visible = bool(incoming or shown)

    # ---- actions -----------------------------------------------------------------------------

    async def _start_chat(self, user: str) -> None:
        try:
            conv = await self.controller.start_private(user)
        except ChatError as e:
            self.on_error(e.message)
            return
        await self.on_open(conv.key)

    async def _new_chat(self, e: ft.Event[ft.Control]) -> None:
        async def submit(name: str) -> None:
            conv = await self.controller.start_private(name)
            await self.on_open(conv.key)

        ask_name("Start a private chat", "User name", "Start chat", submit, self.on_focus)

    async def _new_group(self, e: ft.Event[ft.Control]) -> None:
        async def submit(name: str, private: bool, key: str) -> None:
            conv = await self.controller.create_group(name, private=private, key=key)
            await self.on_open(conv.key)

        ask_group("Create a group", "Create group", submit, create=True, after=self.on_focus)

    async def _join_group(self, e: ft.Event[ft.Control]) -> None:
        self.ask_join()

    def ask_join(self, group: str = "") -> None:
        async def submit(name: str, private: bool, key: str) -> None:
            conv = await self.controller.join_group(name, key)
            await self.on_open(conv.key)

        ask_group("Join a group", "Join group", submit, create=False, after=self.on_focus, name=group)

    async def _browse(self, e: ft.Event[ft.Control]) -> None:
        st = self.controller.state

        def is_member(name: str) -> bool:
            return st.role_in(name) != ""

        async def join(name: str) -> None:
            conv = await self.controller.join_group(name)
            await self.on_open(conv.key)

        browse_groups(self.controller.list_groups, is_member, join)

    async def join_invited(self, group: str) -> None:
        """Joins a group the user was invited to (no key needed); errors as a notice."""
        try:
            conv = await self.controller.join_group(group)
        except ChatError as err:
            self.on_error(err.message)
            return
        await self.on_open(conv.key)

    def render_invitations(self) -> None:
        rows: list[ft.Control] = []
        for inv in self.controller.state.invitations:
            async def join(e: ft.Event[ft.Control], group: str = inv.group) -> None:
                await self.join_invited(group)

            def dismiss(e: ft.Event[ft.Control], group: str = inv.group) -> None:
                self.controller.dismiss_invitation(group)

            rows.append(ft.Row(
                [ft.Icon(ft.Icons.MAIL, size=16),
                 ft.Text(f"{sanitize(inv.by)} invited you to #{sanitize(inv.group)}", size=12, expand=True,
                         max_lines=2, overflow=ft.TextOverflow.ELLIPSIS),
                 ft.TextButton("Join", on_click=join, tooltip=f"join #{sanitize(inv.group)}"),
                 icon_button(ft.Icons.CLOSE, f"Dismiss the invitation to {sanitize(inv.group)}", dismiss,
                             icon_size=16)],
                spacing=4,
            ))
        self.invitations.controls = rows
        self.invitations_box.visible = bool(rows)

    async def _refresh_online(self, e: ft.Event[ft.Control]) -> None:
        try:
            await self.controller.refresh_online()
        except ChatError as err:
            self.on_error(err.message)


def transfer_row(t: Transfer) -> ft.Control:
    name, peer = sanitize(t.name), sanitize(t.peer)
    if t.direction == "browser":
        verb = "uploading from the browser"
    elif t.direction == "up":
        verb = f"sent to {peer}" if t.state is TransferState.DONE else f"sending to {peer}"
    else:
        verb = f"saved to {sanitize(t.path)}" if t.state is TransferState.DONE else f"saving from {peer}"
    if t.state is TransferState.FAILED:
        label = f"{name}: failed: {t.error}"
    elif t.state is TransferState.DONE:
        label = f"{name}: {verb}"
    else:
        label = f"{name}: {verb} {human_size(t.done_bytes)} / {human_size(t.size)}"
    color = ft.Colors.ERROR if t.state is TransferState.FAILED else None
    icon = ft.Icons.UPLOAD if t.direction in ("up", "browser") else ft.Icons.DOWNLOAD
    return ft.Column(
        [ft.Row([ft.Icon(icon, size=14),
                 ft.Text(label, size=11, color=color, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS,
                         expand=True)], spacing=4),
         ft.ProgressBar(value=t.progress, bar_height=4, semantics_label=f"transfer of {name}")],
        spacing=2,
    )


@ft.control("TextField")
class MessageBox(ft.TextField):
    """The message box: a TextField whose focus can be asked for. Flet's TextField.focus() asks a
    focus node that a shift_enter field does not use, so it does nothing here; the field's
    `focus` property (any new value) reaches the node the field really uses."""

    focus: str | None = None  # type: ignore[assignment]

    def request_focus(self) -> None:
        self.focus = str(int(self.focus or 0) + 1)


class ConversationPane:
    """The open conversation: title and actions, messages, composer."""

    def __init__(self, controller: ChatController, files: FileActions,
                 on_error: Callable[[str], None], on_back: Callable[[], Awaitable[None]],
                 on_members: Callable[[], Awaitable[None]] | None = None) -> None:
        self.controller = controller
        self.files = files
        self.on_error = on_error
        self.on_back = on_back
        self.on_members = on_members
        # The group's topic, under the title; owners and admins edit it with the pencil.
        self.topic = ft.Text("", size=12, italic=True, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS, visible=False)
        self.topic_button = icon_button(ft.Icons.EDIT, "Edit topic", self._edit_topic, icon_size=16)
        self.members_button = ft.TextButton("Members", icon=ft.Icons.PEOPLE, on_click=self._members)
        self.members_icon = icon_button(ft.Icons.PEOPLE, "Members", self._members)
        self.closed_banner = ft.Container(
            visible=False, padding=ft.Padding.symmetric(horizontal=12, vertical=10),
            bgcolor=ft.Colors.ERROR_CONTAINER,
            content=ft.Text("", color=ft.Colors.ON_ERROR_CONTAINER),
        )
        self.title = ft.Text("", size=18, weight=ft.FontWeight.BOLD, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS)
        self.subtitle = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT, max_lines=1,
                                overflow=ft.TextOverflow.ELLIPSIS)
        # "bob is typing…" under the header (one line, cut on a phone).
        self.typing = ft.Text("", size=12, italic=True, color=ft.Colors.PRIMARY, max_lines=1,
                              overflow=ft.TextOverflow.ELLIPSIS, visible=False)
        self.back_button = icon_button(ft.Icons.ARROW_BACK, "Back to conversations", self._back)
        self.send_file_button = ft.TextButton("Send file", icon=ft.Icons.ATTACH_FILE, on_click=self._send_file)
        self.leave_button = ft.TextButton("Leave group", icon=LEAVE_ICON, on_click=self._leave)
        # Phone: the same actions as icon buttons (named for screen readers), so the title keeps room.
        self.send_file_icon = icon_button(ft.Icons.ATTACH_FILE, "Send file", self._send_file)
        self.leave_icon = icon_button(LEAVE_ICON, "Leave group", self._leave)
        self.narrow = False
        # Icon buttons instead of labelled ones: on a phone, and beside the members panel.
        self.compact = False
        # Newest at the bottom, built bottom-up (reverse): the view stays at the newest message as
        # lines arrive, and older pages loaded on top (scrolling back) do not move what is shown.
        self.messages = ft.ListView(expand=True, spacing=6, reverse=True, padding=ft.Padding.all(12),
                                    on_scroll=self._scrolled, scroll_interval=100)
        # The reply (or edit) preview above the message box.
        self.reply_text = ft.Text("", size=12, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS, expand=True)
        self.reply_icon = ft.Icon(ft.Icons.REPLY, size=16, color=ft.Colors.PRIMARY)
        self.reply_bar = ft.Container(
            visible=False, padding=ft.Padding.only(left=12, right=4, top=2, bottom=2),
            border=ft.Border.only(left=ft.BorderSide(3, ft.Colors.PRIMARY)), bgcolor=ft.Colors.SURFACE_CONTAINER,
            content=ft.Row([self.reply_icon, self.reply_text,
                            icon_button(ft.Icons.CLOSE, "Cancel reply", self._cancel_reply, icon_size=16)],
                           spacing=6),
        )
        # The action bar shown (hover on a desktop, long press on a phone): one at a time.
        self._open_bar: ft.Control | None = None
        self.composer = MessageBox(hint_text="Write a message…", expand=True, dense=True, on_submit=self._send,
                                   multiline=True, shift_enter=True, min_lines=1, max_lines=4, label="Message",
                                   on_change=self._typed)
        self.send_button = icon_button(ft.Icons.SEND, "Send", self._send)
        self.composer_error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False)
        self.empty = ft.Container(
            expand=True, alignment=ft.Alignment.CENTER,
            content=ft.Text("Pick a conversation on the left, or start a chat with someone online.",
                            color=ft.Colors.ON_SURFACE_VARIANT),
        )
        self.composer_row = ft.Row([self.composer, self.send_button])
        self.body = ft.Column(
            expand=True, spacing=0,
            controls=[
                ft.Container(
                    padding=ft.Padding.symmetric(horizontal=8, vertical=8),
                    content=ft.Row([self.back_button,
                                    ft.Column([self.title, self.subtitle, ft.Row([self.topic, self.topic_button],
                                                                                 spacing=0, tight=True)],
                                              spacing=0, expand=True),
                                    self.members_button, self.send_file_button, self.leave_button,
                                    self.members_icon, self.send_file_icon, self.leave_icon]),
                ),
                ft.Container(self.typing, padding=ft.Padding.only(left=16, right=16)),
                ft.Divider(height=1),
                self.messages,
                ft.Divider(height=1),
                self.closed_banner,
                ft.Container(padding=ft.Padding.symmetric(horizontal=12, vertical=8),
                             content=ft.Column([self.reply_bar, self.composer_row, self.composer_error],
                                               spacing=4)),
            ],
        )
        self.root = ft.Container(expand=True, content=self.empty)
        # The conversation on screen, whose draft the message box holds (and which revision of
        # it: the controller changes drafts too, e.g. a failed message put back).
        self._shown_key: str | None = None
        self._draft_rev = 0
        # Bubbles are reused while their line is unchanged: Flet diffs by control, so a reused
        # bubble costs nothing on update, and a new message sends one bubble, not the whole list.
        self._bubbles: dict[int, tuple[tuple[object, ...], ft.Control]] = {}
        self._separators: dict[tuple[object, str], ft.Control] = {}

    def set_narrow(self, narrow: bool) -> None:
        self.narrow = narrow
        self._bubbles = {}  # their side margins depend on the width

    def focus_composer(self) -> None:
        self.composer.request_focus()
        update(self.composer)

    def render(self) -> None:
        conv = self.controller.current
        if conv is None:
            self.root.content = self.empty
            self._shown_key = None
            return
        self.root.content = self.body
        if self._shown_key != conv.key:
            self._shown_key = conv.key
            self._bubbles = {}
            self._show_draft(conv)
        elif self._draft_rev != conv.draft_rev:
            self._show_draft(conv)
        self.composer_error.value = f"not sent: {conv.send_error}"
        self.composer_error.visible = bool(conv.send_error) and not conv.closed
        self.title.value = sanitize(conv.title)
        st = self.controller.state
        group = conv.kind is Kind.GROUP
        usable = not conv.closed
        if group:
            g = st.groups.get(conv.name.casefold())
            members = f"{g.members} member{'' if g.members == 1 else 's'}" if g else ""
            mode = " · private" if g and g.mode == "private" else ""
            role = st.role_in(conv.name) or (g.role if g else "")
            self.subtitle.value = f"group · {members} · you are {role}{mode}" if g else "group"
            topic = st.topic_of(conv.name) if usable else ""
            setter = st.topic_setter(conv.name) if topic else ""  # sanitized there
            self.topic.value = (f"Topic: {sanitize(topic)}" + (f" ({setter})" if setter else "")) if topic \
                else "No topic yet"
            can_edit = usable and st.can_moderate(conv.name)
            self.topic.visible = bool(topic) or can_edit
            self.topic_button.visible = can_edit
        else:
            p = st.presence_of(conv.name)
            if p is None:
                self.subtitle.value = "offline · private chat"
            elif p.away:
                self.subtitle.value = "away" + (f": {sanitize(p.message)}" if p.message else "")
            else:
                self.subtitle.value = f"online on realm {sanitize(p.realm)}" if p.realm else "online"
            self.topic.visible = self.topic_button.visible = False
        typing = conv.typing_label
        self.typing.value = sanitize(typing)
        self.typing.visible = bool(typing)
        self.back_button.visible = self.narrow
        compact = self.narrow or self.compact
        self.send_file_button.visible = usable and not compact
        self.leave_button.visible = group and usable and not compact
        self.members_button.visible = group and usable and not compact
        self.send_file_icon.visible = usable and compact
        self.leave_icon.visible = group and usable and compact
        self.members_icon.visible = group and usable and compact
        self.closed_banner.visible = bool(conv.closed)
        closed_text = self.closed_banner.content
        assert isinstance(closed_text, ft.Text)
        closed_text.value = f"{sanitize(conv.closed)}. You can read what was said, not write here."
        self.composer_row.visible = usable
        lines: list[ft.Control] = []
        if conv.closed and not conv.history_loaded:
            conv.history_loaded = True  # nothing to load from a group we lost
        if not conv.history_loaded and not conv.history_error:
            lines.append(ft.Text("loading history…", size=12, italic=True))
        if conv.history_error:
            lines.append(ft.Text(conv.history_error, size=12, color=ft.Colors.ERROR))
        day: object = None
        for line in conv.lines:
            # A separator before the first line of each day (in the viewer's time zone).
            line_day = local_date(line.ts, st.tz)
            if line_day is not None and line_day != day and line.ts is not None:
                day = line_day
                lines.append(self._separator(line_day, day_label(line.ts, tz=st.tz)))
            lines.append(self._cached_bubble(line, conv))
        if conv.history_loaded and not conv.lines:
            lines.append(ft.Text("No messages yet. Say hello!", size=12, color=ft.Colors.ON_SURFACE_VARIANT))
        if conv.more or conv.loading_older:
            lines.insert(0, self._older_row(conv))
        # The list is built bottom-up (reverse=True): newest first.
        self.messages.controls = lines[::-1]
        self._render_reply_bar(conv)

    def _show_draft(self, conv: Conversation) -> None:
        self.composer.value = conv.draft
        self._draft_rev = conv.draft_rev

    def _older_row(self, conv: Conversation) -> ft.Control:
        if conv.loading_older:
            return ft.Container(alignment=ft.Alignment.CENTER,
                                content=ft.Text("loading older messages…", size=12, italic=True))
        return ft.Container(alignment=ft.Alignment.CENTER,
                            content=ft.TextButton("Load older messages", icon=ft.Icons.HISTORY,
                                                  on_click=self._load_older))

    def _render_reply_bar(self, conv: Conversation) -> None:
        target = conv.find(conv.editing if conv.editing is not None else conv.replying_to)
        self.reply_bar.visible = target is not None and not conv.closed
        if target is None:
            return
        if conv.editing is not None:
            self.reply_icon.icon = ft.Icons.EDIT
            self.reply_text.value = f"Editing your message: {sanitize(target.snippet)}"
        else:
            self.reply_icon.icon = ft.Icons.REPLY
            who = "yourself" if target.own else sanitize(target.sender)
            self.reply_text.value = f"Replying to {who}: {sanitize(target.snippet)}"

    def _separator(self, day: object, label: str) -> ft.Control:
        key = (day, label)
        control = self._separators.get(key)
        if control is None:
            control = ft.Row(
                [ft.Container(ft.Divider(height=1), expand=True),
                 ft.Text(label, size=11, weight=ft.FontWeight.BOLD, color=ft.Colors.ON_SURFACE_VARIANT),
                 ft.Container(ft.Divider(height=1), expand=True)],
                spacing=8, vertical_alignment=ft.CrossAxisAlignment.CENTER,
            )
            self._separators[key] = control
        return control

    def _cached_bubble(self, line: ChatLine, conv: Conversation) -> ft.Control:
        st = self.controller.state
        file_id = line.file.id if line.file is not None else None
        original = conv.find(line.reply_to) if line.reply_to is not None else None
        version = (line.sender, line.text, line.ts, line.id, line.pending, line.error, clock(line.ts, st.tz),
                   st.saved_files.get(file_id) if file_id is not None else None,
                   file_id in st.incoming_files, conv.seen(line), line.edited, line.deleted, line.mention,
                   tuple((e, tuple(u)) for e, u in line.reactions.items()), conv.highlight == line.id,
                   (original.sender, original.snippet) if original is not None else None,
                   st.can_moderate(conv.name) if conv.kind is Kind.GROUP else False)
        cached = self._bubbles.get(id(line))
        if cached is not None and cached[0] == version:
            return cached[1]
        control = self._bubble(line, conv)
        self._bubbles[id(line)] = (version, control)
        return control

    def _bubble(self, line: ChatLine, conv: Conversation) -> ft.Control:
        if line.kind is LineKind.NOTICE:
            # Membership and topic changes: a centred line, not a message bubble.
            return ft.Container(
                alignment=ft.Alignment.CENTER,
                content=ft.Text(f"{line.text} · {clock(line.ts, self.controller.state.tz)}", size=12, italic=True,
                                color=ft.Colors.ON_SURFACE_VARIANT, text_align=ft.TextAlign.CENTER),
            )
        st = self.controller.state
        head_items: list[ft.Control] = [
            ft.Text("you" if line.own else sanitize(line.sender), size=12, weight=ft.FontWeight.BOLD),
            ft.Text(clock(line.ts, st.tz), size=11, color=ft.Colors.ON_SURFACE_VARIANT)]
        if line.own and conv.kind is Kind.PRIVATE and line.id is not None and not line.pending:
            # One tick: stored; two: the peer read it (a `seen` event).
            # Screen readers hear "seen" once it is; a plain sent tick says nothing.
            seen = conv.seen(line)
            head_items.append(ft.Icon(ft.Icons.DONE_ALL if seen else ft.Icons.DONE, size=14,
                                      color=ft.Colors.PRIMARY if seen else ft.Colors.ON_SURFACE_VARIANT,
                                      semantics_label="seen" if seen else None))
        if line.edited and not line.deleted:
            head_items.append(ft.Text("edited", size=11, italic=True, color=ft.Colors.ON_SURFACE_VARIANT))
        if line.mention and not line.deleted:
            head_items.append(ft.Text("@ mentions you", size=11, color=ft.Colors.TERTIARY))
        head = ft.Row(head_items, spacing=8, tight=True)
        body: list[ft.Control] = [head]
        if line.reply_to is not None:
            body.append(self._quote(conv.find(line.reply_to)))
        # Not selectable: selectable text turns into an editable-text node for screen readers
        # (and Flutter web then hides the text itself from the accessibility tree).
        if line.deleted:
            body.append(ft.Text("message deleted", italic=True, color=ft.Colors.ON_SURFACE_VARIANT))
        else:
            body.append(ft.Text(line.text))
        if line.pending:
            body.append(ft.Text("sending…", size=11, italic=True, color=ft.Colors.ON_SURFACE_VARIANT))
        if line.error:
            async def retry(e: ft.Event[ft.Control], line: ChatLine = line) -> None:
                await self._retry(line)

            body.append(ft.Text(f"not sent: {line.error}", size=11, color=ft.Colors.ERROR))
            body.append(ft.TextButton("Retry", icon=ft.Icons.REFRESH, on_click=retry))
        if line.kind is LineKind.FILE and line.file is not None and not line.own:
            saved = st.saved_files.get(line.file.id)
            if saved:
                body.append(ft.Text(f"saved to {saved}", size=11, color=ft.Colors.ON_SURFACE_VARIANT))
            elif line.file.id in st.incoming_files:
                async def save(e: ft.Event[ft.Control], file_id: int = line.file.id) -> None:
                    await self.files.save(file_id)

                body.append(ft.TextButton("Save", icon=ft.Icons.DOWNLOAD, on_click=save))
        if line.reactions and not line.deleted:
            body.append(ft.Row([self._reaction_chip(line, emoji, users) for emoji, users in line.reactions.items()],
                               wrap=True, spacing=4, run_spacing=4, tight=True))
        bar = self._action_bar(line, conv) if line.actionable and line.kind is LineKind.TEXT else None
        if bar is not None:
            body.append(bar)
        highlighted = conv.highlight is not None and conv.highlight == line.id
        mention = line.mention and not line.deleted
        if mention:
            bgcolor = ft.Colors.TERTIARY_CONTAINER
        else:
            bgcolor = ft.Colors.PRIMARY_CONTAINER if line.own else ft.Colors.SURFACE_CONTAINER_HIGHEST
        border: ft.Border | None = None
        if highlighted:
            border = ft.Border.all(2, ft.Colors.PRIMARY)
        elif mention:
            border = ft.Border.only(left=ft.BorderSide(3, ft.Colors.TERTIARY))
        bubble = ft.Container(
            content=ft.Column(body, spacing=2, tight=True),
            padding=ft.Padding.symmetric(horizontal=12, vertical=8),
            border_radius=12,
            bgcolor=bgcolor,
            border=border,
        )
        margin = 32 if self.narrow else 80

        def hover(e: ft.Event[ft.Container], bar: ft.Control | None = bar) -> None:
            if bar is not None:
                self._show_bar(bar, e.data is True or str(e.data).lower() == "true")

        def long_press(e: ft.Event[ft.Container], bar: ft.Control | None = bar) -> None:
            if bar is not None:
                self._show_bar(bar, not bar.visible)

        return ft.Container(
            content=bubble,
            alignment=ft.Alignment.CENTER_RIGHT if line.own else ft.Alignment.CENTER_LEFT,
            padding=ft.Padding.only(left=margin) if line.own else ft.Padding.only(right=margin),
            on_hover=hover if bar is not None else None,
            on_long_press=long_press if bar is not None else None,
        )

    def _quote(self, original: ChatLine | None) -> ft.Control:
        """The snippet of the message a reply answers, above the reply's text."""
        if original is None:
            text = "↪ an earlier message"
        else:
            who = "you" if original.own else sanitize(original.sender)
            text = f"↪ {who}: {sanitize(original.snippet)}"
        return ft.Container(
            content=ft.Text(text, size=12, italic=True, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS,
                            color=ft.Colors.ON_SURFACE_VARIANT),
            border=ft.Border.only(left=ft.BorderSide(3, ft.Colors.PRIMARY)),
            padding=ft.Padding.only(left=8, top=2, bottom=2),
        )

    def _reaction_chip(self, line: ChatLine, emoji: str, users: list[str]) -> ft.Control:
        me = self.controller.state.user
        mine = line.reacted(emoji, me)
        names = ", ".join("you" if u.casefold() == me.casefold() else sanitize(u) for u in users)

        async def toggle(e: ft.Event[ft.Container], msg_id: int | None = line.id, emoji: str = emoji) -> None:
            if msg_id is not None:
                await self._react(msg_id, emoji)

        chip = ft.Container(
            content=ft.Text(f"{sanitize(emoji)} {len(users)}", size=12),
            padding=ft.Padding.symmetric(horizontal=8, vertical=2),
            border_radius=12,
            border=ft.Border.all(1, ft.Colors.PRIMARY if mine else ft.Colors.OUTLINE_VARIANT),
            bgcolor=ft.Colors.SECONDARY_CONTAINER if mine else None,
            on_click=toggle if line.id is not None else None,
        )
        return ft.MergeSemantics(content=ft.Semantics(
            label=f"{sanitize(emoji)} {len(users)}: {names}", button=True, content=chip))

    def _action_bar(self, line: ChatLine, conv: Conversation) -> ft.Control:
        """Reply, react (a row of common emojis), edit, delete and where it went: hidden until the pointer is
        over the message (desktop) or it is long-pressed (phone)."""
        msg_id = line.id
        assert msg_id is not None
        st = self.controller.state
        picker = ft.Row(wrap=True, spacing=0, run_spacing=0, visible=False, tight=True)

        def pick_button(emoji: str) -> ft.Control:
            async def chosen(e: ft.Event[ft.Control]) -> None:
                picker.visible = False
                await self._react(msg_id, emoji)

            button = ft.TextButton(content=ft.Text(emoji, size=18), on_click=chosen,
                                   style=ft.ButtonStyle(padding=ft.Padding.all(4)))
            return ft.MergeSemantics(content=ft.Semantics(label=f"React {emoji}", button=True, content=button))

        picker.controls = [pick_button(emoji) for emoji in COMMON_REACTIONS]

        async def reply(e: ft.Event[ft.Control]) -> None:
            try:
                self.controller.start_reply(msg_id, conv.key)
            except ChatError as err:
                self.on_error(err.message)
                return
            self.focus_composer()

        def react(e: ft.Event[ft.Control]) -> None:
            picker.visible = not picker.visible
            update(picker)

        async def edit(e: ft.Event[ft.Control]) -> None:
            try:
                self.controller.start_edit(msg_id, conv.key)  # the text goes into the draft
            except ChatError as err:
                self.on_error(err.message)
                return
            self.focus_composer()

        async def delete(e: ft.Event[ft.Control]) -> None:
            # Asked first: a delete is for everyone and cannot be undone. A refusal shows in
            # the dialog.
            async def submit() -> None:
                await self.controller.delete_message(msg_id)

            confirm("Delete message?", "Delete this message for everyone?", "Delete for everyone", submit)

        def trace(e: ft.Event[ft.Control]) -> None:
            show_trace(msg_id, lambda: self.controller.trace_message(msg_id))

        buttons: list[ft.Control] = [icon_button(ft.Icons.REPLY, "Reply", reply, icon_size=18),
                                     icon_button(ft.Icons.ADD_REACTION_OUTLINED, "React", react, icon_size=18)]
        if line.own:
            buttons.append(icon_button(ft.Icons.EDIT_OUTLINED, "Edit", edit, icon_size=18))
        if line.own or (conv.kind is Kind.GROUP and st.can_moderate(conv.name)):
            buttons.append(icon_button(ft.Icons.DELETE_OUTLINE, "Delete", delete, icon_size=18))
        buttons.append(icon_button(ft.Icons.ROUTE, "Where it went", trace, icon_size=18))
        return ft.Column([ft.Row(buttons, spacing=0, tight=True), picker], spacing=0, tight=True, visible=False)

    def _show_bar(self, bar: ft.Control, show: bool) -> None:
        if show and self._open_bar is not None and self._open_bar is not bar:
            self._open_bar.visible = False
            update(self._open_bar)
        if bar.visible == show:
            return
        bar.visible = show
        if not show and isinstance(bar, ft.Column) and len(bar.controls) > 1:
            bar.controls[1].visible = False  # the emoji picker closes with the bar
        self._open_bar = bar if show else None
        update(bar)

    async def _react(self, msg_id: int, emoji: str) -> None:
        try:
            await self.controller.toggle_reaction(msg_id, emoji)
        except ChatError as err:
            self.on_error(err.message)

    async def _load_older(self, e: ft.Event[ft.Control] | None = None) -> None:
        try:
            await self.controller.load_older()
        except ChatError as err:
            self.on_error(err.message)

    async def _scrolled(self, e: ft.OnScrollEvent) -> None:
        # reverse=True: the oldest messages are at the far end of the scroll range.
        conv = self.controller.current
        if conv is None or not conv.more or conv.loading_older:
            return
        if e.pixels >= e.max_scroll_extent - 80:
            await self._load_older()

    async def _cancel_reply(self, e: ft.Event[ft.Control]) -> None:
        self.controller.cancel_reply(self._shown_key)  # an edit cancelled empties the draft

    # ---- actions -----------------------------------------------------------------------------

    async def _send(self, e: ft.Event[ft.Control]) -> None:
        # To the conversation whose draft the box shows, even if another one is being opened.
        key = self._shown_key
        text = (self.composer.value or "").strip()
        if not text or key is None:
            return
        self.composer.value = ""
        self.controller.set_draft("", key)
        update(self.composer)
        try:
            await self.controller.send(text, key)
        except ChatError as err:
            conv = self.controller.conversation(key)
            if conv is None or not conv.send_error:
                self.on_error(err.message)
            # Else the conversation shows it: its "not sent" line, a Retry on the message and
            # the text back in its own box (rendered when it is the one on screen).
        if e.control is not self.composer:
            # Sent with the button: the focus went to it; give the message box the focus back.
            self.focus_composer()

    def _typed(self, e: ft.Event[ft.Control]) -> None:
        value = self.composer.value or ""
        self.controller.set_draft(value, self._shown_key)
        if value.strip():
            self.controller.user_typing(self._shown_key)

    async def _retry(self, line: ChatLine) -> None:
        # Shown in the line's own conversation: its "not sent" line, and the text taken out of
        # its box once it went through.
        with contextlib.suppress(ChatError):
            await self.controller.retry(line)

    async def _back(self, e: ft.Event[ft.Control]) -> None:
        await self.on_back()

    async def _send_file(self, e: ft.Event[ft.Control]) -> None:
        conv = self.controller.current
        if conv is not None and not conv.closed:
            await self.files.pick_and_send(f"#{conv.name}" if conv.kind is Kind.GROUP else conv.name)

    async def _members(self, e: ft.Event[ft.Control]) -> None:
        if self.on_members is not None:
            await self.on_members()

    async def _edit_topic(self, e: ft.Event[ft.Control]) -> None:
        conv = self.controller.current
        if conv is None or conv.kind is not Kind.GROUP:
            return
        group = conv.name

        async def submit(text: str) -> None:
            await self.controller.set_topic(text, group)

        ask_text(f"Topic of #{group}", "Topic (empty: none)", "Set topic", submit, optional=True,
                 value=self.controller.state.topic_of(group))

    async def _leave(self, e: ft.Event[ft.Control]) -> None:
        conv = self.controller.current
        if conv is None or conv.kind is not Kind.GROUP:
            return
        group = conv.name
        private = (g := self.controller.state.groups.get(group.casefold())) is not None and g.mode == "private"
        back = ("To come back you need an invitation or its key." if private
                else "You can join it again later.")

        # Asked first, naming the group; a refusal shows in the dialog.
        async def submit() -> None:
            await self.controller.leave_group(group)

        confirm(f"Leave #{sanitize(group)}?", f"You stop getting its messages. {back}", "Leave", submit)


class ChatView:
    def __init__(self, controller: ChatController, files: FileActions,
                 on_logout: Callable[[], Awaitable[None]], on_error: Callable[[str], None],
                 narrow: bool = False, on_info: Callable[[str], None] | None = None) -> None:
        self.controller = controller
        self.header = Header(controller, on_logout, on_error)
        self.sidebar = Sidebar(controller, files, self.open, on_error, self.focus_after_dialog, self.open_hit)
        self.pane = ConversationPane(controller, files, on_error, self.back, self.toggle_members)
        self.members = MembersPanel(controller, on_error, on_info or (lambda text: None), self.toggle_members)
        # The members panel of the open group: beside the conversation (wide), or instead of it
        # (phone). Wide screens open it with a group; a phone opens it from the header button.
        self.show_members = not narrow
        self.members_divider = ft.VerticalDivider(width=1)
        self.divider = ft.VerticalDivider(width=1)
        self.body = ft.Row(expand=True, spacing=0, vertical_alignment=ft.CrossAxisAlignment.STRETCH)
        self.root = ft.Column(expand=True, spacing=0, controls=[self.header.root, self.body])
        self.narrow = narrow
        self.set_narrow(narrow)
        self.render(set(Change))

    def set_narrow(self, narrow: bool) -> None:
        if narrow != self.narrow:
            self.show_members = not narrow
        self.narrow = narrow
        self.header.set_narrow(narrow)
        self.sidebar.set_narrow(narrow)
        self.pane.set_narrow(narrow)
        self.members.set_narrow(narrow)
        self._layout()
        self.pane.render()
        self.members.render()

    def _members_shown(self) -> bool:
        conv = self.controller.current
        return self.show_members and conv is not None and conv.kind is Kind.GROUP and not conv.closed

    async def toggle_members(self) -> None:
        self.show_members = not self.show_members
        self._layout()
        self.pane.render()
        if self._members_shown():
            self.members.render()
        update(self.root)

    def _layout(self) -> None:
        """Wide: list, conversation and (for a group) its members side by side. Narrow: the
        members panel if asked for, else the open conversation, else the list."""
        members = self._members_shown()
        self.pane.compact = members
        if not self.narrow:
            wanted: list[ft.Control] = [self.sidebar.root, self.divider, self.pane.root]
            if members:
                wanted += [self.members_divider, self.members.root]
        elif members:
            wanted = [self.members.root]
        elif self.controller.current is not None:
            wanted = [self.pane.root]
        else:
            wanted = [self.sidebar.root]
        if self.body.controls != wanted:
            self.body.controls = wanted

    async def open(self, key: str) -> None:
        await self.controller.open_conversation(key)
        # The conversation is on screen once rendered; then the message box takes the focus, so
        # the user can type at once.
        self._layout()
        self.pane.render()
        update(self.root)
        self.pane.focus_composer()
        # Asked again once the pane is surely laid out: a request that reaches the browser
        # before a newly shown message box is built is lost (seen on a loaded machine).
        def refocus() -> None:
            if self.controller.current is not None and self.controller.current.key == key:
                self.pane.focus_composer()

        asyncio.get_running_loop().call_later(REFOCUS_AFTER, refocus)

    async def open_hit(self, hit: SearchHit) -> None:
        """Opens the conversation of a search result, the message marked."""
        await self.controller.open_hit(hit)
        self._layout()
        self.pane.render()
        update(self.root)

    async def focus_after_dialog(self) -> None:
        # A closing dialog hands the focus back to what had it before (the button that opened
        # it) once its exit transition ends; a new message box after that takes it back.
        await asyncio.sleep(DIALOG_EXIT)
        if self.controller.current is not None:
            self.pane.focus_composer()

    async def back(self) -> None:
        if self.narrow:
            self.show_members = False
        self.controller.close_conversation()

    def render(self, changes: set[Change]) -> None:
        if changes & {Change.CONVERSATIONS, Change.MESSAGES, Change.MEMBERS, Change.GROUPS}:
            self._layout()
        if Change.INVITATIONS in changes:
            self.sidebar.render_invitations()
        if changes & {Change.MEMBERS, Change.GROUPS, Change.MESSAGES, Change.CONVERSATIONS}:
            self.members.render()
        if Change.STATUS in changes:
            self.header.render()
        if Change.CONVERSATIONS in changes:
            self.sidebar.render_conversations()
        if Change.ONLINE in changes:
            self.sidebar.render_online()
        if Change.SEARCH in changes:
            self.sidebar.render_search()
        if Change.FILES in changes:
            self.sidebar.render_files()
        if changes & {Change.MESSAGES, Change.GROUPS, Change.ONLINE, Change.FILES, Change.CONVERSATIONS,
                      Change.MEMBERS}:
            self.pane.render()
