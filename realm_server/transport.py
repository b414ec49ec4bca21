"""The realm's channel to main with optional TLS / mTLS.

Upstream (realm_server/upstream.py) opens plaintext channels. Rather than change that module's
transport code, this subclass only swaps how a channel to one address is opened: everything
else (calls, the Link stream, backoff, failover) is Upstream's. If Upstream grows a channel
factory parameter, this module shrinks to realmchat.tls.open_channel."""

from __future__ import annotations

from typing import Any

import grpc

from realmchat.pb import chat_pb2_grpc as pb_grpc
from realmchat.tls import open_channel

from .upstream import CHANNEL_OPTIONS, Upstream


class SecureUpstream(Upstream):
    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials | None, server_name: str = "",
                 **kwargs: Any) -> None:
        # Set before Upstream.__init__, which opens the first channel.
        self._credentials = credentials
        self._server_name = server_name
        super().__init__(*args, **kwargs)

    def _stub(self, addr: str) -> pb_grpc.ChatStub:
        if addr not in self._channels:
            self._channels[addr] = open_channel(addr, CHANNEL_OPTIONS, self._credentials, self._server_name)
        return super()._stub(addr)
