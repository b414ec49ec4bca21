"""The main server's service: a thin facade over the domain's desks (main_server/domain/), so
the servicer, server.py and the benches reach every operation in one place. Plain arguments in,
records out, realmchat.errors raised."""

from __future__ import annotations

from . import events
from .blobs import BlobStore
from .cluster import Cluster
from .config import MainConfig
from .domain.accounts import BAD_LOGIN, BAD_TOKEN, Accounts, Caller, Login, token_hash
from .domain.conversation import TYPING_INTERVAL_S, Conversation
from .domain.delivery import Delivery, Page, fit_bytes
from .domain.files import Files, UploadSpec
from .domain.groups import GROUP_KEY_MAX, Groups, MemberView, Roster
from .domain.messages import Messages, check_emoji, mentions_in, search_words
from .domain.notify import Notify
from .hub import Channel, Hub
from .passwords import PasswordHasher
from .storage.base import Storage
from .wire import file_pb, message_pb

__all__ = ["BAD_LOGIN", "BAD_TOKEN", "GROUP_KEY_MAX", "TYPING_INTERVAL_S", "Caller", "ChatService", "Login",
           "MemberView", "Page", "Roster", "UploadSpec", "check_emoji", "file_pb", "fit_bytes", "mentions_in",
           "message_pb", "search_words", "token_hash"]


class ChatService:
    def __init__(self, config: MainConfig, storage: Storage, hub: Hub, hasher: PasswordHasher,
                 blobs: BlobStore) -> None:
        self.config = config
        self.storage = storage
        self.hub = hub
        self.notify = Notify(storage, hub)
        self.accounts = Accounts(config, storage, hub, hasher, self.notify)
        self.delivery = Delivery(config, storage, hub, self.notify)
        self.conversation = Conversation(storage, hub, self.notify)
        self.messages = Messages(config, storage, self.delivery, self.notify)
        self.files = Files(config, storage, hub, blobs, self.notify)
        self.groups = Groups(config, storage, hasher, self.notify, self.files, self.conversation.who)
        # The operations, straight from their desks (bound methods: no extra call per request).
        a, d, c, m, g, f = self.accounts, self.delivery, self.conversation, self.messages, self.groups, self.files
        self.register, self.auth, self.caller, self.logout, self.attach = (
            a.register, a.auth, a.caller, a.logout, a.attach)
        self.acked, self.close_channel, self.flush, self.push_all_pending = (
            d.acked, d.close_channel, d.flush, d.push_all_pending)
        self.who, self.who_status, self.set_status, self.conversations = (
            c.who, c.who_status, c.set_status, c.conversations)
        self.mark_read, self.set_receipts, self.typing = c.mark_read, c.set_receipts, c.typing
        self.send_private, self.send_group, self.reply, self.edit, self.delete, self.react = (
            m.send_private, m.send_group, m.reply, m.edit, m.delete, m.react)
        self.search, self.inbox, self.inbox_group, self.history = m.search, m.inbox, m.inbox_group, m.history
        self.create_group, self.join_group, self.leave_group, self.list_groups, self.browse_groups = (
            g.create_group, g.join_group, g.leave_group, g.list_groups, g.browse_groups)
        self.invite, self.kick, self.ban, self.unban, self.set_role = g.invite, g.kick, g.ban, g.unban, g.set_role
        self.members, self.topic, self.set_group_key, self.delete_group = (
            g.members, g.topic, g.set_group_key, g.delete_group)
        self.check_upload, self.upload, self.pending_files = f.check_upload, f.upload, f.pending_files
        self.open_download, self.mark_downloaded, self.sweep_files = f.open_download, f.mark_downloaded, f.sweep_files

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
