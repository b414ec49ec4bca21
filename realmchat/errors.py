"""Typed errors. Domain code raises these; only the edges (gRPC servicers, the realm's command
runner, the client library) translate them to and from wire form."""

from __future__ import annotations

from .codes import Code


class ChatError(Exception):
    """An error with a protocol code and a message that tells the user what to do."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, code: Code | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        # A short machine-readable word (e.g. a refused join's "banned", "key", "invite") so an
        # edge can choose its reply without reading the wording; crosses gRPC as REASON_KEY.
        self.reason = reason
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}: {self.message!r})"


class InvalidArgument(ChatError):
    code = Code.INVALID_ARGUMENT


class Unauthenticated(ChatError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(ChatError):
    code = Code.PERMISSION_DENIED


class NotFound(ChatError):
    code = Code.NOT_FOUND


class AlreadyExists(ChatError):
    code = Code.ALREADY_EXISTS


class ResourceExhausted(ChatError):
    code = Code.RESOURCE_EXHAUSTED


class Unavailable(ChatError):
    code = Code.UNAVAILABLE


class Unimplemented(ChatError):
    code = Code.UNIMPLEMENTED


class Internal(ChatError):
    code = Code.INTERNAL


_BY_CODE: dict[Code, type[ChatError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        Unavailable,
        Unimplemented,
        Internal,
    )
}


REASON_KEY = "realmchat-reason"  # the gRPC trailing metadata that carries ChatError.reason

# Why a join is refused (PermissionDenied.reason).
JOIN_BANNED = "banned"
JOIN_KEY = "key"
JOIN_INVITE = "invite"
# What a NotFound about a group's people is missing (NotFound.reason); NOT_MEMBER is also a
# PermissionDenied's reason when the caller is not a member, NOT_MODERATOR when their role is too low.
NO_GROUP = "no_group"
NO_USER = "no_user"
NOT_MEMBER = "not_member"
NOT_MODERATOR = "not_moderator"


def error_for(code: Code | str, message: str) -> ChatError:
    """The typed error for a code received from the wire (unknown codes become INTERNAL)."""
    try:
        c = Code(code)
    except ValueError:
        return Internal(f"{code}: {message}")
    if c is Code.DEADLINE_EXCEEDED:
        # A deadline that passed means the main server did not answer in time.
        return Unavailable(message)
    cls = _BY_CODE.get(c)
    return cls(message) if cls else ChatError(message, c)
