"""chat_cli: the asyncio client library of the realm text protocol and the terminal client
(`python -m chat_cli`). See docs/CLI.md.

    from chat_cli import ChatClient, ChatError
    client = await ChatClient.connect("127.0.0.1", 8000)
"""

from realmchat.errors import (
    AlreadyExists,
    ChatError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

from .client import ChatClient, EventCallback, ProgressCallback
from .models import (
    ConnectionEvent,
    ConnState,
    Downloaded,
    Event,
    FileEvent,
    FileInfo,
    GroupInfo,
    Message,
    MessageEvent,
    OtherEvent,
    Presence,
    Sent,
    Session,
    SessionEvent,
    Uploaded,
)

__all__ = [
    "AlreadyExists",
    "ChatClient",
    "ChatError",
    "ConnState",
    "ConnectionEvent",
    "Downloaded",
    "Event",
    "EventCallback",
    "FileEvent",
    "FileInfo",
    "GroupInfo",
    "Internal",
    "InvalidArgument",
    "Message",
    "MessageEvent",
    "NotFound",
    "OtherEvent",
    "PermissionDenied",
    "Presence",
    "ProgressCallback",
    "ResourceExhausted",
    "Sent",
    "Session",
    "SessionEvent",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Uploaded",
]
