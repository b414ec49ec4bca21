"""The main server's composition root: it makes the domain's desks (main_server/domain/) and
wires them together; the servicer calls the desks directly. What spans desks lives here: a
session resuming on a new link, and the notices of other replicas."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import events
from .blobs import BlobStore
from .cluster import Cluster
from .config import MainConfig
from .domain.accounts import Accounts
from .domain.conversation import Conversation
from .domain.delivery import Delivery
from .domain.files import Files
from .domain.groups import Groups
from .domain.messages import Messages
from .domain.notify import Notify
from .hub import Channel, Hub
from .passwords import PasswordHasher
from .storage.base import Storage
from .trace import Trace


class ChatService:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, hasher: PasswordHasher,
                 blobs: BlobStore, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.notify = Notify(storage, hub)
        self.accounts = Accounts(config, storage, hub, hasher, self.notify)
        self.delivery = Delivery(config, storage, hub, self.notify, Trace(clock, config.trace_messages))
        self.conversation = Conversation(storage, hub, self.notify)
        self.messages = Messages(config, storage, self.delivery, self.notify)
        self.files = Files(config, storage, hub, blobs, self.notify)
        self.groups = Groups(config, storage, hasher, self.notify, self.files, self.conversation.who)

    @property
    def cluster(self) -> Cluster | None:
        return self.notify.cluster

    @cluster.setter
    def cluster(self, cluster: Cluster | None) -> None:
        self.notify.cluster = cluster  # every desk reaches the other replicas through notify

    @property
    def presence_sent(self) -> int:
        return self.conversation.presence_sent

    async def resume(self, tokens: list[str], channel: Channel) -> list[int]:
        return await self.delivery.resume(tokens, channel, self.accounts.caller)

    async def on_notice(self, notice: events.Notice) -> None:
        """Another replica stored something for users who may be attached here, or ended a
        session, or a user's status changed."""
        if isinstance(notice, events.LoggedOut):
            self.accounts.logged_out_elsewhere(notice.token_hash, notice.session_id, notice.user_key)
            return
        if isinstance(notice, events.StatusChanged):
            self.conversation.status_elsewhere(notice.user_key, notice.status, notice.message)
            return
        local = [u for u in notice.users if self.hub.is_online(u)]
        if not local:
            return
        if isinstance(notice, events.MessageStored):
            await self.delivery.on_message_notice(local, notice.id, list(notice.track), notice.exclude_session,
                                                  notice.mentioned)
        elif isinstance(notice, events.Broadcast):
            self.notify.on_broadcast(local, notice.event, notice.exclude_session)
        elif isinstance(notice, events.FileStored):
            await self.files.on_file_notice(local, notice.id, notice.exclude_session)
