"""The members panel of the open group: who is in it, their role, whether they are online and
on which realm. Owners and admins also get Invite, Kick, Ban, Unban, the group's key and making
it private or public here, and under the members a Banned section: each ban in force (by whom,
when, why) with its own Unban button. The owner makes members admins (and back) and may delete
the group (after a confirmation). Controls a role may not use are not shown at all.

Wide screens show it to the right of the conversation; phones show it instead of the
conversation, with a back button, like the conversation replaces the list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo

import flet as ft

from chat_cli.models import Ban, Member
from realmchat.display import sanitize
from realmchat.errors import ChatError

from ..controller import ChatController
from ..state import Kind, local_time, sorted_members
from .common import icon_button, section_title
from .dialogs import ask_key, ask_name, ask_text, confirm

ROLE_COLORS = {"owner": ft.Colors.TERTIARY, "admin": ft.Colors.PRIMARY}


def ban_detail(b: Ban, me: str, tz: tzinfo | None = None, now: datetime | None = None) -> str:
    """'by alice · 10:42 · spam' ('by you' for the viewer): who banned the user, when, and why
    if they said."""
    by = "you" if b.by.casefold() == me.casefold() else sanitize(b.by)
    parts = [f"by {by}", local_time(b.when, now, tz), sanitize(b.reason)]
    return " · ".join(p for p in parts if p)


def member_line(m: Member, me: str) -> str:
    """'bob (you) · admin · online on beta': one line a screen reader says as a whole."""
    you = " (you)" if m.user.casefold() == me.casefold() else ""
    where = f"online on {sanitize(m.realm)}" if m.online and m.realm else ("online" if m.online else "offline")
    return f"{sanitize(m.user)}{you} · {m.role} · {where}"


class MembersPanel:
    def __init__(self, controller: ChatController, on_error: Callable[[str], None],
                 on_info: Callable[[str], None], on_close: Callable[[], Awaitable[None]]) -> None:
        self.controller = controller
        self.on_error = on_error
        self.on_info = on_info
        self.on_close = on_close
        self.title = ft.Text("Members", size=16, weight=ft.FontWeight.BOLD, max_lines=1,
                             overflow=ft.TextOverflow.ELLIPSIS)
        self.subtitle = ft.Text("", size=12, color=ft.Colors.ON_SURFACE_VARIANT, max_lines=1,
                                overflow=ft.TextOverflow.ELLIPSIS)
        self.back = icon_button(ft.Icons.ARROW_BACK, "Back to the conversation", self._close)
        self.hide = icon_button(ft.Icons.CLOSE, "Hide members", self._close)
        self.invite_button = ft.TextButton("Invite", icon=ft.Icons.PERSON_ADD, on_click=self._invite)
        # Group-wide moderation under the title: lift a ban by name (also one older than the
        # newest bans the Banned section lists), set or clear the key, delete (owner).
        self.unban_button = ft.TextButton("Unban…", icon=ft.Icons.LOCK_OPEN, on_click=self._unban)
        self.key_button = ft.TextButton("Group key…", icon=ft.Icons.KEY, on_click=self._key)
        self.mode_button = ft.TextButton("Make private", icon=ft.Icons.LOCK, on_click=self._mode)
        self.delete_button = ft.TextButton("Delete group", icon=ft.Icons.DELETE_FOREVER, on_click=self._delete,
                                           style=ft.ButtonStyle(color=ft.Colors.ERROR))
        self.moderation = ft.Row([self.unban_button, self.key_button, self.mode_button, self.delete_button],
                                 spacing=0, wrap=True,
                                 run_spacing=0, visible=False)
        self.error = ft.Text("", size=12, color=ft.Colors.ERROR, visible=False)
        self.rows = ft.ListView(spacing=0, expand=True)
        self.narrow = False
        self.root = ft.Container(
            width=300, padding=ft.Padding.all(8), bgcolor=ft.Colors.SURFACE_CONTAINER_LOW,
            content=ft.Column(
                spacing=6, expand=True,
                controls=[ft.Row([self.back, ft.Column([self.title, self.subtitle], spacing=0, expand=True),
                                  self.invite_button, self.hide], spacing=4),
                          self.moderation, section_title("ROLES · ONLINE"), self.error, self.rows],
            ),
        )

    def set_narrow(self, narrow: bool) -> None:
        self.narrow = narrow
        self.root.width = None if narrow else 300
        self.root.expand = narrow

    @property
    def group(self) -> str | None:
        conv = self.controller.current
        return conv.name if conv is not None and conv.kind is Kind.GROUP else None

    def render(self) -> None:
        group = self.group
        st = self.controller.state
        self.back.visible = self.narrow
        self.hide.visible = not self.narrow
        if group is None:
            self.rows.controls = []
            return
        key = group.casefold()
        members = sorted_members(st.members.get(key, []))
        online = sum(1 for m in members if m.online)
        self.title.value = f"Members ({len(members)})" if members else "Members"
        self.subtitle.value = f"#{sanitize(group)}" + (f" · {online} online" if members else "")
        role = st.role_in(group)
        self.invite_button.visible = self.moderation.visible = role in ("owner", "admin")
        self.delete_button.visible = role == "owner"
        private = st.mode_of(group) == "private"
        self.mode_button.content = "Make public" if private else "Make private"
        self.mode_button.icon = ft.Icons.PUBLIC if private else ft.Icons.LOCK
        self.mode_button.tooltip = ("anyone may join; its members stay" if private
                                    else "only invited users, or those with its key, may join; its members stay")
        err = st.members_error.get(key, "")
        self.error.value, self.error.visible = err, bool(err)
        if not members and not err:
            self.rows.controls = [ft.Text("loading members…", size=12, italic=True)]
            return
        self.rows.controls = [self._row(m, role) for m in members]
        bans = st.banned.get(key, []) if role in ("owner", "admin") else []
        if bans:
            self.rows.controls += [ft.Container(padding=ft.Padding.only(top=12, bottom=2),
                                                content=section_title(f"BANNED ({len(bans)})")),
                                   *(self._ban_row(b) for b in bans)]

    def _row(self, m: Member, my_role: str) -> ft.Control:
        st = self.controller.state
        me = m.user.casefold() == st.user.casefold()
        dot = ft.Icon(ft.Icons.CIRCLE, size=10, color=ft.Colors.GREEN if m.online else ft.Colors.OUTLINE)
        name = ft.Text(sanitize(m.user) + (" (you)" if me else ""), size=13, weight=ft.FontWeight.BOLD,
                       max_lines=1, overflow=ft.TextOverflow.ELLIPSIS)
        where = f"online on {sanitize(m.realm)}" if m.online and m.realm else ("online" if m.online else "offline")
        detail = ft.Text(f"{m.role} · {where}", size=11, color=ROLE_COLORS.get(m.role, ft.Colors.ON_SURFACE_VARIANT),
                         max_lines=1, overflow=ft.TextOverflow.ELLIPSIS)
        actions: list[ft.Control] = []
        # Who may do what (the server checks it again): owner/admin moderate, never the owner;
        # an admin does not moderate another admin's role; only the owner changes roles.
        if not me and m.role != "owner" and my_role in ("owner", "admin"):
            if my_role == "owner":
                if m.role == "admin":
                    actions.append(icon_button(ft.Icons.ARROW_DOWNWARD, f"Make {m.user} member",
                                               self._role_handler(m.user, "member"), icon_size=18))
                else:
                    actions.append(icon_button(ft.Icons.ARROW_UPWARD, f"Make {m.user} admin",
                                               self._role_handler(m.user, "admin"), icon_size=18))
            if my_role == "owner" or m.role == "member":
                actions.append(icon_button(ft.Icons.PERSON_REMOVE, f"Kick {m.user}",
                                           self._moderate_handler(m.user, "kick"), icon_size=18))
                actions.append(icon_button(ft.Icons.BLOCK, f"Ban {m.user}",
                                           self._moderate_handler(m.user, "ban"), icon_size=18))
        info = ft.MergeSemantics(content=ft.Row(
            [ft.Semantics(label="online" if m.online else "offline", content=dot),
             ft.Column([name, detail], spacing=0, tight=True, expand=True)],
            spacing=8, expand=True))
        return ft.Container(padding=ft.Padding.symmetric(horizontal=4, vertical=4),
                            content=ft.Row([info, *actions], spacing=0))

    def _ban_row(self, b: Ban) -> ft.Control:
        name = ft.Text(sanitize(b.user), size=13, weight=ft.FontWeight.BOLD, max_lines=1,
                       overflow=ft.TextOverflow.ELLIPSIS)
        st = self.controller.state
        detail = ft.Text(ban_detail(b, st.user, st.tz), size=11, color=ft.Colors.ON_SURFACE_VARIANT,
                         max_lines=2, overflow=ft.TextOverflow.ELLIPSIS)
        info = ft.MergeSemantics(content=ft.Row(
            [ft.Icon(ft.Icons.BLOCK, size=14, color=ft.Colors.ERROR),
             ft.Column([name, detail], spacing=0, tight=True, expand=True)],
            spacing=8, expand=True))
        unban = icon_button(ft.Icons.LOCK_OPEN, f"Unban {b.user}", self._unban_handler(b.user), icon_size=18)
        return ft.Container(padding=ft.Padding.symmetric(horizontal=4, vertical=4),
                            content=ft.Row([info, unban], spacing=0))

    # ---- actions -----------------------------------------------------------------------------

    async def _close(self, e: ft.Event[ft.Control]) -> None:
        await self.on_close()

    async def _invite(self, e: ft.Event[ft.Control]) -> None:
        group = self.group
        if group is None:
            return

        invited: list[str] = []

        async def submit(user: str) -> None:
            await self.controller.invite(user, group)
            invited.append(user)

        async def after() -> None:
            # After the dialog is gone: a snack bar shown while it is open would be what its
            # close pops.
            if invited:
                self.on_info(f"invited {invited[-1]} to #{group}")

        ask_name(f"Invite to #{group}", "User to invite", "Send invitation", submit, after)

    def _role_handler(self, user: str, role: str) -> Callable[[ft.Event[ft.Control]], Awaitable[None]]:
        async def go(e: ft.Event[ft.Control]) -> None:
            group = self.group
            if group is None:
                return
            try:
                await self.controller.set_role(user, role, group)
            except ChatError as err:
                self.on_error(err.message)

        return go

    def _moderate_handler(self, user: str, action: str) -> Callable[[ft.Event[ft.Control]], Awaitable[None]]:
        async def go(e: ft.Event[ft.Control]) -> None:
            group = self.group
            if group is None:
                return

            async def submit(reason: str) -> None:
                if action == "kick":
                    await self.controller.kick(user, reason, group)
                else:
                    await self.controller.ban(user, reason, group)

            verb = "Kick" if action == "kick" else "Ban"
            ask_text(f"{verb} {user} from #{group}?", "Reason (optional)", verb, submit, optional=True)

        return go

    def _unban_handler(self, user: str) -> Callable[[ft.Event[ft.Control]], Awaitable[None]]:
        async def go(e: ft.Event[ft.Control]) -> None:
            group = self.group
            if group is None:
                return
            try:
                await self.controller.unban(user, group)  # refreshes the panel: the row goes
            except ChatError as err:
                self.on_error(err.message)
                return
            self.on_info(f"{user} may join #{group} again")

        return go

    async def _unban(self, e: ft.Event[ft.Control]) -> None:
        group = self.group
        if group is None:
            return
        unbanned: list[str] = []

        async def submit(user: str) -> None:
            await self.controller.unban(user, group)
            unbanned.append(user)

        async def after() -> None:
            if unbanned:
                self.on_info(f"{unbanned[-1]} may join #{group} again")

        ask_name(f"Unban from #{group}", "User to unban", "Unban", submit, after)

    async def _key(self, e: ft.Event[ft.Control]) -> None:
        group = self.group
        if group is None:
            return

        async def submit(key: str) -> None:
            await self.controller.set_group_key(key, group)

        async def after(key: str) -> None:
            self.on_info(f"the key of #{group} is set" if key else f"#{group} has no key now")

        ask_key(f"Key of #{group}", submit, after)

    async def _mode(self, e: ft.Event[ft.Control]) -> None:
        group = self.group
        if group is None:
            return
        private = self.controller.state.mode_of(group) != "private"
        try:
            await self.controller.set_group_mode(private, group)
        except ChatError as err:
            self.on_error(err.message)
            return
        self.on_info(f"#{group} is private now: others need an invitation or its key" if private
                     else f"#{group} is public now: anyone may join")

    async def _delete(self, e: ft.Event[ft.Control]) -> None:
        group = self.group
        if group is None:
            return
        n = len(self.controller.state.members.get(group.casefold(), []))
        who = f"all {n} members" if n > 1 else "everyone"

        async def submit() -> None:
            await self.controller.delete_group(group)

        async def after() -> None:
            self.on_info(f"#{group} was deleted")

        confirm(f"Delete #{group}?", f"Delete #{group} for everyone? Its messages and files are gone for {who}; "
                "this cannot be undone.", "Delete for everyone", submit, after)
