"""The IRC protocol layer of the realm, sans-IO: framing (LineBuffer), the message codec
(parse, Message.serialize, split_text), numerics and standard replies, case mapping and the
name rules. Nothing here reads a socket or knows a session."""

from __future__ import annotations

from .codec import (
    IrcParseError,
    IrcSerializeError,
    Message,
    Source,
    message,
    numeric,
    parse,
    parse_source,
    split_text,
    text_prefix_len,
)
from .framing import Eof, LineBuffer, LineTooLong
from .numerics import Numeric, isupport, standard_reply

__all__ = [
    "Eof",
    "IrcParseError",
    "IrcSerializeError",
    "LineBuffer",
    "LineTooLong",
    "Message",
    "Numeric",
    "Source",
    "isupport",
    "message",
    "numeric",
    "parse",
    "parse_source",
    "split_text",
    "standard_reply",
    "text_prefix_len",
]
