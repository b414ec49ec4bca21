"""The chat screen: header (who, where, connection state), side list (conversations, people
online, files), and the open conversation with its composer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import flet as ft

from realmchat.errors import ChatError

from ..controller import Change, ChatController, human_size
from ..state import ChatLine, Conversation, Kind, LineKind, Status, Transfer, TransferState
from .common import icon_button, section_title, update
from .dialogs import ask_name
from .files import FileActions

STATUS_COLORS = {
    Status.ONLINE: ft.Colors.GREEN,
    Status.CONNECTED: ft.Colors.AMBER,
    Status.CONNECTING: ft.Colors.AMBER,
    Status.RECONNECTING: ft.Colors.ORANGE,
    Status.OFFLINE: ft.Colors.RED,
}


class Header:
    def __init__(self, controller: ChatController, on_logout: Callable[[], Awaitable[None]]) -> None:
        self.controller = controller
        self.on_logout = on_logout
        self.dot = ft.Icon(ft.Icons.CIRCLE, size=12)
        self.status = ft.Text("", size=13)
        self.who = ft.Text("", size=13, weight=ft.FontWeight.BOLD)
        self.root = ft.Container(
            padding=ft.Padding.symmetric(horizontal=16, vertical=8),
            bgcolor=ft.Colors.SURFACE_CONTAINER,
            content=ft.Row(
                controls=[
                    ft.Icon(ft.Icons.FORUM, color=ft.Colors.PRIMARY),
                    ft.Text("realmchat", size=18, weight=ft.FontWeight.BOLD),
                    ft.Container(expand=True),
                    ft.Row([self.dot, self.status], spacing=6, tooltip="connection to the realm"),
                    ft.VerticalDivider(width=16),
                    ft.Icon(ft.Icons.PERSON, size=18),
                    self.who,
                    ft.TextButton("Log out", icon=ft.Icons.LOGOUT, on_click=self._logout),
                ],
            ),
        )

    def render(self) -> None:
        st = self.controller.state
        self.dot.color = STATUS_COLORS.get(st.status, ft.Colors.GREY)
        label = {Status.ONLINE: f"online · realm {st.realm}", Status.RECONNECTING: "reconnecting…"}.get(
            st.status, st.status.value)
        self.status.value = label
        self.status.tooltip = st.status_detail
        self.who.value = f"{st.user} @ {st.realm}" if st.user else ""

    async def _logout(self, e: ft.Event[ft.Control]) -> None:
        await self.on_logout()


class Sidebar:
    """Conversations with unread counts and previews; people online (with realm); files."""

    def __init__(self, controller: ChatController, files: FileActions,
                 on_open: Callable[[str], Awaitable[None]], on_error: Callable[[str], None]) -> None:
        self.controller = controller
        self.files = files
        self.on_open = on_open
        self.on_error = on_error
        self.conversations = ft.ListView(spacing=0, expand=3)
        self.online = ft.ListView(spacing=0, expand=2)
        self.online_title = section_title("ONLINE")
        self.incoming = ft.Column(spacing=4)
        self.transfers = ft.Column(spacing=4)
        self.files_box = ft.Column([section_title("FILES"), self.incoming, self.transfers], spacing=6,
                                   visible=False)
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
        self.root = ft.Container(
            width=310,
            padding=ft.Padding.only(left=8, right=8, top=8, bottom=8),
            content=ft.Column(
                spacing=6,
                controls=[
                    actions,
                    section_title("CONVERSATIONS"),
                    self.conversations,
                    ft.Divider(height=1),
                    ft.Row([self.online_title, icon_button(ft.Icons.REFRESH, "Refresh who is online",
                                                           self._refresh_online, icon_size=16)],
                           alignment=ft.MainAxisAlignment.SPACE_BETWEEN),
                    self.online,
                    self.files_box,
                ],
            ),
        )

    # ---- rendering ---------------------------------------------------------------------------

    def render_conversations(self) -> None:
        st = self.controller.state
        rows: list[ft.Control] = []
        for conv in st.sorted_conversations():
            rows.append(self._conversation_tile(conv, selected=conv.key == st.current))
        if not rows:
            rows.append(ft.Text("No conversations yet: start a chat or join a group.", size=12,
                                color=ft.Colors.ON_SURFACE_VARIANT))
        self.conversations.controls = rows

    def _conversation_tile(self, conv: Conversation, selected: bool) -> ft.Control:
        trailing: list[ft.Control] = []
        if conv.last is not None:
            trailing.append(ft.Text(conv.last.time_label, size=11, color=ft.Colors.ON_SURFACE_VARIANT))
        if conv.unread:
            trailing.append(ft.Container(
                content=ft.Text(str(conv.unread), size=11, color=ft.Colors.ON_PRIMARY,
                                weight=ft.FontWeight.BOLD, semantics_label=f"{conv.unread} unread"),
                bgcolor=ft.Colors.PRIMARY, border_radius=10, padding=ft.Padding.symmetric(horizontal=7, vertical=1),
            ))

        async def clicked(e: ft.Event[ft.ListTile], key: str = conv.key) -> None:
            await self.on_open(key)

        return ft.ListTile(
            leading=ft.Icon(ft.Icons.GROUP if conv.kind is Kind.GROUP else ft.Icons.PERSON),
            title=ft.Text(conv.title, weight=ft.FontWeight.BOLD if conv.unread else None,
                          max_lines=1, overflow=ft.TextOverflow.ELLIPSIS),
            subtitle=ft.Text(conv.preview or ("group" if conv.kind is Kind.GROUP else "private chat"),
                             size=12, max_lines=1, overflow=ft.TextOverflow.ELLIPSIS),
            trailing=ft.Column(trailing, spacing=2, alignment=ft.MainAxisAlignment.CENTER,
                               horizontal_alignment=ft.CrossAxisAlignment.END) if trailing else None,
            selected=selected,
            dense=True,
            on_click=clicked,
        )

    def render_online(self) -> None:
        st = self.controller.state
        self.online_title.value = f"ONLINE ({len(st.online)})"
        rows: list[ft.Control] = []
        for p in st.online:
            me = p.user.casefold() == st.user.casefold()

            async def clicked(e: ft.Event[ft.ListTile], user: str = p.user) -> None:
                await self._start_chat(user)

            rows.append(ft.ListTile(
                leading=ft.Icon(ft.Icons.CIRCLE, color=ft.Colors.GREEN, size=10),
                title=ft.Text(f"{p.user} (you)" if me else p.user, size=13),
                trailing=ft.Text(p.realm, size=11, color=ft.Colors.ON_SURFACE_VARIANT),
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
                 ft.Text(f"{f.name} ({human_size(f.size)}) from {f.sender}", size=12, expand=True,
                         max_lines=2, overflow=ft.TextOverflow.ELLIPSIS),
                 icon_button(ft.Icons.DOWNLOAD, f"Save {f.name}", save, icon_size=18)],
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

        ask_name("Start a private chat", "User name", "Start chat", submit)

    async def _new_group(self, e: ft.Event[ft.Control]) -> None:
        async def submit(name: str) -> None:
            conv = await self.controller.create_group(name)
            await self.on_open(conv.key)

        ask_name("Create a group", "Group name", "Create group", submit)

    async def _join_group(self, e: ft.Event[ft.Control]) -> None:
        async def submit(name: str) -> None:
            conv = await self.controller.join_group(name)
            await self.on_open(conv.key)

        ask_name("Join a group", "Group name", "Join group", submit)

    async def _refresh_online(self, e: ft.Event[ft.Control]) -> None:
        try:
            await self.controller.refresh_online()
        except ChatError as err:
            self.on_error(err.message)


def transfer_row(t: Transfer) -> ft.Control:
    if t.direction == "browser":
        verb = "uploading from the browser"
    elif t.direction == "up":
        verb = f"sent to {t.peer}" if t.state is TransferState.DONE else f"sending to {t.peer}"
    else:
        verb = f"saved to {t.path}" if t.state is TransferState.DONE else f"saving from {t.peer}"
    if t.state is TransferState.FAILED:
        label = f"{t.name}: failed: {t.error}"
    elif t.state is TransferState.DONE:
        label = f"{t.name}: {verb}"
    else:
        label = f"{t.name}: {verb} {human_size(t.done_bytes)} / {human_size(t.size)}"
    color = ft.Colors.ERROR if t.state is TransferState.FAILED else None
    icon = ft.Icons.UPLOAD if t.direction in ("up", "browser") else ft.Icons.DOWNLOAD
    return ft.Column(
        [ft.Row([ft.Icon(icon, size=14),
                 ft.Text(label, size=11, color=color, max_lines=2, overflow=ft.TextOverflow.ELLIPSIS,
                         expand=True)], spacing=4),
         ft.ProgressBar(value=t.progress, bar_height=4, semantics_label=f"transfer of {t.name}")],
        spacing=2,
    )


class ConversationPane:
    """The open conversation: title and actions, messages, composer."""

    def __init__(self, controller: ChatController, files: FileActions,
                 on_error: Callable[[str], None]) -> None:
        self.controller = controller
        self.files = files
        self.on_error = on_error
        self.title = ft.Text("", size=18, weight=ft.FontWeight.BOLD)
        self.subtitle = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT)
        self.send_file_button = ft.TextButton("Send file", icon=ft.Icons.ATTACH_FILE, on_click=self._send_file)
        self.leave_button = ft.TextButton("Leave group", icon=ft.Icons.EXIT_TO_APP, on_click=self._leave)
        # auto_scroll keeps the newest message in view as lines arrive.
        self.messages = ft.ListView(expand=True, spacing=6, auto_scroll=True, padding=ft.Padding.all(12))
        self.composer = ft.TextField(hint_text="Write a message…", expand=True, dense=True,
                                     on_submit=self._send, multiline=True, shift_enter=True, min_lines=1, max_lines=4,
                                     label="Message")
        self.send_button = icon_button(ft.Icons.SEND, "Send", self._send)
        self.composer_error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False)
        self.empty = ft.Container(
            expand=True, alignment=ft.Alignment.CENTER,
            content=ft.Text("Pick a conversation on the left, or start a chat with someone online.",
                            color=ft.Colors.ON_SURFACE_VARIANT),
        )
        self.body = ft.Column(
            expand=True, spacing=0,
            controls=[
                ft.Container(
                    padding=ft.Padding.symmetric(horizontal=16, vertical=8),
                    content=ft.Row([ft.Column([self.title, self.subtitle], spacing=0, expand=True),
                                    self.send_file_button, self.leave_button]),
                ),
                ft.Divider(height=1),
                self.messages,
                ft.Divider(height=1),
                ft.Container(padding=ft.Padding.symmetric(horizontal=12, vertical=8),
                             content=ft.Column([ft.Row([self.composer, self.send_button]), self.composer_error],
                                               spacing=4)),
            ],
        )
        self.root = ft.Container(expand=True, content=self.empty)
        self._shown_key: str | None = None
        # Bubbles are reused while their line is unchanged: Flet diffs by control, so a reused
        # bubble costs nothing on update, and a new message sends one bubble, not the whole list.
        self._bubbles: dict[int, tuple[tuple[object, ...], ft.Control]] = {}

    def render(self) -> None:
        conv = self.controller.current
        if conv is None:
            self.root.content = self.empty
            self._shown_key = None
            return
        self.root.content = self.body
        if self._shown_key != conv.key:
            self._shown_key = conv.key
            self.composer_error.visible = False
            self._bubbles = {}
        self.title.value = conv.title
        st = self.controller.state
        if conv.kind is Kind.GROUP:
            g = st.groups.get(conv.name.casefold())
            members = f"{g.members} member{'' if g.members == 1 else 's'}" if g else ""
            self.subtitle.value = f"group · {members} · you are {g.role}" if g else "group"
        else:
            online = [p.realm for p in st.online if p.user.casefold() == conv.name.casefold()]
            self.subtitle.value = f"online on realm {', '.join(online)}" if online else "private chat"
        self.send_file_button.visible = conv.kind is Kind.PRIVATE
        self.leave_button.visible = conv.kind is Kind.GROUP
        lines: list[ft.Control] = []
        if not conv.history_loaded and not conv.history_error:
            lines.append(ft.Text("loading history…", size=12, italic=True))
        if conv.history_error:
            lines.append(ft.Text(conv.history_error, size=12, color=ft.Colors.ERROR))
        lines.extend(self._cached_bubble(line, conv) for line in conv.lines)
        if conv.history_loaded and not conv.lines:
            lines.append(ft.Text("No messages yet. Say hello!", size=12, color=ft.Colors.ON_SURFACE_VARIANT))
        self.messages.controls = lines

    def _cached_bubble(self, line: ChatLine, conv: Conversation) -> ft.Control:
        st = self.controller.state
        file_id = line.file.id if line.file is not None else None
        version = (line.sender, line.text, line.ts, line.id, line.pending, line.error, line.time_label,
                   st.saved_files.get(file_id) if file_id is not None else None,
                   file_id in st.incoming_files)
        cached = self._bubbles.get(id(line))
        if cached is not None and cached[0] == version:
            return cached[1]
        control = self._bubble(line, conv)
        self._bubbles[id(line)] = (version, control)
        return control

    def _bubble(self, line: ChatLine, conv: Conversation) -> ft.Control:
        head = ft.Row(
            [ft.Text("you" if line.own else line.sender, size=12, weight=ft.FontWeight.BOLD),
             ft.Text(line.time_label, size=11, color=ft.Colors.ON_SURFACE_VARIANT)],
            spacing=8, tight=True,
        )
        # Not selectable: selectable text turns into an editable-text node for screen readers
        # (and Flutter web then hides the text itself from the accessibility tree).
        body: list[ft.Control] = [head, ft.Text(line.text)]
        if line.pending:
            body.append(ft.Text("sending…", size=11, italic=True, color=ft.Colors.ON_SURFACE_VARIANT))
        if line.error:
            body.append(ft.Text(f"not sent: {line.error}", size=11, color=ft.Colors.ERROR))
        if line.kind is LineKind.FILE and line.file is not None and not line.own:
            saved = self.controller.state.saved_files.get(line.file.id)
            if saved:
                body.append(ft.Text(f"saved to {saved}", size=11, color=ft.Colors.ON_SURFACE_VARIANT))
            elif line.file.id in self.controller.state.incoming_files:
                async def save(e: ft.Event[ft.Control], file_id: int = line.file.id) -> None:
                    await self.files.save(file_id)

                body.append(ft.TextButton("Save", icon=ft.Icons.DOWNLOAD, on_click=save))
        bubble = ft.Container(
            content=ft.Column(body, spacing=2, tight=True),
            padding=ft.Padding.symmetric(horizontal=12, vertical=8),
            border_radius=12,
            bgcolor=ft.Colors.PRIMARY_CONTAINER if line.own else ft.Colors.SURFACE_CONTAINER_HIGHEST,
        )
        return ft.Container(
            content=bubble,
            alignment=ft.Alignment.CENTER_RIGHT if line.own else ft.Alignment.CENTER_LEFT,
            padding=ft.Padding.only(left=80) if line.own else ft.Padding.only(right=80),
        )

    # ---- actions -----------------------------------------------------------------------------

    async def _send(self, e: ft.Event[ft.Control]) -> None:
        text = (self.composer.value or "").strip()
        if not text:
            return
        self.composer.value = ""
        self.composer_error.visible = False
        update(self.composer, self.composer_error)
        try:
            await self.controller.send(text)
        except ChatError as err:
            self.composer_error.value = f"not sent: {err.message}"
            self.composer_error.visible = True
            update(self.composer_error)
        await self.composer.focus()

    async def _send_file(self, e: ft.Event[ft.Control]) -> None:
        conv = self.controller.current
        if conv is not None and conv.kind is Kind.PRIVATE:
            await self.files.pick_and_send(conv.name)

    async def _leave(self, e: ft.Event[ft.Control]) -> None:
        conv = self.controller.current
        if conv is None or conv.kind is not Kind.GROUP:
            return
        try:
            await self.controller.leave_group(conv.name)
        except ChatError as err:
            self.on_error(err.message)


class ChatView:
    def __init__(self, controller: ChatController, files: FileActions,
                 on_logout: Callable[[], Awaitable[None]], on_error: Callable[[str], None]) -> None:
        self.controller = controller
        self.header = Header(controller, on_logout)
        self.sidebar = Sidebar(controller, files, self.open, on_error)
        self.pane = ConversationPane(controller, files, on_error)
        self.root = ft.Column(
            expand=True, spacing=0,
            controls=[self.header.root,
                      ft.Row([self.sidebar.root, ft.VerticalDivider(width=1), self.pane.root],
                             expand=True, spacing=0, vertical_alignment=ft.CrossAxisAlignment.STRETCH)],
        )
        self.render(set(Change))

    async def open(self, key: str) -> None:
        await self.controller.open_conversation(key)

    def render(self, changes: set[Change]) -> None:
        if Change.STATUS in changes:
            self.header.render()
        if Change.CONVERSATIONS in changes:
            self.sidebar.render_conversations()
        if Change.ONLINE in changes:
            self.sidebar.render_online()
        if Change.FILES in changes:
            self.sidebar.render_files()
        if changes & {Change.MESSAGES, Change.GROUPS, Change.ONLINE, Change.FILES, Change.CONVERSATIONS}:
            self.pane.render()
