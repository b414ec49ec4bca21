"""Who gets which event: fan-out of live notices to the sessions attached here (the hub) and,
with replicas, to the others (the cluster)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from realmchat.names import name_key

from .. import events
from ..cluster import Cluster
from ..hub import Hub
from ..storage.base import RoomChange, Storage


class Notify:
    def __init__(self, storage: Storage, hub: Hub) -> None:
        self.storage = storage
        self.hub = hub
        self.cluster: Cluster | None = None  # set when replicas share a PostgreSQL database

    def send(self, users: Iterable[str], event: events.Event, exclude_session: int) -> None:
        """A live notice (no undelivered entry) for the users' sessions, here and elsewhere."""
        targets = sorted(set(users))
        if not targets:
            return
        self.hub.push(targets, event, exclude_session)
        if self.cluster is not None:
            self.cluster.publish_notice(events.Broadcast(event, tuple(targets), exclude_session))

    def member_event(self, by: str, exclude_session: int, change: RoomChange, action: str, users: Iterable[str],
                     reason: str = "", role: str = "") -> None:
        self.send(users, events.Member(change.group.name, change.user, action, by, reason, role), exclude_session)

    def online_anywhere(self) -> Callable[[str], bool]:
        remote = {name_key(n) for n in self.cluster.online_names()} if self.cluster is not None else set()
        return lambda key: self.hub.is_online(key) or key in remote

    async def audience_online(self, user_key: str) -> list[str]:
        """Users sharing a group or a private conversation with the user, online somewhere."""
        audience = await self.storage.audience(user_key)
        online = self.online_anywhere()
        return [u for u in audience if online(u)]

    def on_broadcast(self, local: list[str], event: events.Event, exclude_session: int) -> None:
        """Another replica's live notice, for the users attached here."""
        self.hub.push(local, event, exclude_session)
