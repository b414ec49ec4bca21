"""The text protocol (realmchat/textproto.py, docs/PROTOCOL.md) as a connection's codec
(session.Codec): its lines are JSON objects, its commands those of realm_server/commands.py."""

from __future__ import annotations

from realmchat import textproto as tp
from realmchat.errors import ChatError, InvalidArgument, ResourceExhausted
from realmchat.pb import chat_pb2 as pb

from .convert import file_dict, message_dict, room_event


class TextCodec:
    __slots__ = ()

    def hello(self, realm: str) -> bytes:
        return tp.event("hello", realm=realm, protocol=tp.PROTOCOL_VERSION)

    def parse(self, line: bytes) -> tp.Command | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument("the line is not valid UTF-8") from None
        return tp.parse_line(text)

    def error(self, exc: ChatError) -> bytes:
        return tp.error_from(exc)

    def event(self, kind: str, ev: pb.Event) -> bytes | None:
        if kind == "private":
            return tp.event("private", **message_dict(ev.private))
        if kind == "group":
            return tp.event("group", **message_dict(ev.group))
        if kind == "file":
            return tp.event("file", **file_dict(ev.file))
        room = room_event(kind, ev)
        return tp.encode(room) if room is not None else None

    def closing(self, reason: str, message: str) -> bytes:
        return tp.event("closing", reason=reason, message=message)

    def refused(self, message: str) -> bytes:
        return tp.error_from(ResourceExhausted(message))

    def session_expired(self) -> bytes:
        return tp.event("session", state="expired", message="your session ended; log in again with auth USER PASS")

    def shutdown(self) -> bytes:
        return tp.event("shutdown", message="the realm is shutting down")
