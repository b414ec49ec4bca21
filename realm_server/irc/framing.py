"""Sans-IO framing of IRC input: feed it bytes as they arrive, pull complete lines out.

Like h11, LineBuffer does no I/O and owns no socket: the edge calls `feed(data)` after each read,
then `next_event()` until it returns None (more data needed), and `feed_eof()` when the peer
closes. Events, in wire order:

- `bytes`: one complete line without its terminator, never empty. A line ends at LF; a CR right
  before it (CR LF) and any lone CR inside the line are dropped, so neither reaches the parser.
  Empty lines are dropped here (IRC answers them with nothing).
- `LineTooLong`: a line longer than the limit. Its bytes are discarded as they arrive, never
  kept: the buffer holds at most `limit` bytes of an unfinished line, whatever the peer sends, so
  a peer that never sends LF costs at most `limit` bytes. The event is reported once, when the
  LF that ends the line arrives (or at EOF), and nothing of that line is ever handed out.
- `Eof`: after `feed_eof()` once everything before it was pulled. An unterminated last line is
  not a command and is dropped (`Eof.unterminated` says how many bytes it had).

Limits (IRCv3 message-tags): the tag section may take 8191 bytes including its leading '@' and
trailing space, and the rest of the line 512 bytes including CR LF, so a line is at most
8703 bytes. The framing enforces only that total (one cheap check per line); `codec.parse`
enforces the two parts, and the stricter 4094 bytes of tag data a client may send, answering
417 ERR_INPUTTOOLONG. Lines are handed out as bytes; the codec decodes them (invalid UTF-8
becomes U+FFFD, see codec.decode).

Memory: the queue of pulled-later events holds at most what was fed and not yet pulled, so a
reader that pulls after every bounded read keeps the whole buffer bounded by its read size plus
`limit`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

TAG_SECTION_MAX = 8191  # '@' + tag data + ' ', what a server may receive (IRCv3 message-tags)
CLIENT_TAG_DATA_MAX = 4094  # tag data a client may send (without '@' and the space)
BODY_MAX = 512  # source, command and params, including CR LF (RFC 1459)
LINE_MAX = TAG_SECTION_MAX + BODY_MAX


@dataclass(slots=True, frozen=True)
class LineTooLong:
    """A refused line; `length` is how many bytes it had, its terminator included."""

    length: int


@dataclass(slots=True, frozen=True)
class Eof:
    """The peer closed; `unterminated` bytes of a last line without LF were dropped."""

    unterminated: int = 0


Event = bytes | LineTooLong | Eof


class LineBuffer:
    """Splits a byte stream into IRC lines of at most `limit` bytes (terminator included)."""

    __slots__ = ("_closed", "_events", "_partial", "_skipped", "_skipping", "limit")

    def __init__(self, limit: int = LINE_MAX) -> None:
        if limit < 2:
            raise ValueError("limit must leave room for a byte and its LF")
        self.limit = limit
        self._partial = b""  # the unfinished line, always shorter than limit
        self._skipping = False  # discarding an over-long line until its LF
        self._skipped = 0  # bytes discarded of it so far
        self._events: deque[Event] = deque()
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line held (never more than limit - 1)."""
        return len(self._partial)

    def feed(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("feed() after feed_eof()")
        if not data:
            return
        limit = self.limit
        events = self._events
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if pieces:
            first = pieces[0]
            if self._skipping:
                events.append(LineTooLong(self._skipped + len(first) + 1))
                self._skipping = False
                self._skipped = 0
                del pieces[0]
            elif self._partial:
                pieces[0] = self._partial + first
            self._partial = b""
            for line in pieces:
                if len(line) >= limit:
                    events.append(LineTooLong(len(line) + 1))
                    continue
                if b"\r" in line:
                    line = line.replace(b"\r", b"")
                if line:
                    events.append(line)
        if self._skipping:
            self._skipped += len(tail)
        elif tail:
            partial = self._partial + tail if self._partial else tail
            if len(partial) >= limit:  # cannot fit even with its LF: drop it now, report at LF
                self._skipping = True
                self._skipped = len(partial)
                self._partial = b""
            else:
                self._partial = partial

    def feed_eof(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._skipping:
            self._events.append(LineTooLong(self._skipped))
            self._skipping = False
        self._events.append(Eof(len(self._partial)))
        self._partial = b""

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed (or everything, Eof included, was pulled)."""
        return self._events.popleft() if self._events else None

    def __iter__(self) -> Iterator[Event]:
        """The events available now (stops when more data is needed)."""
        events = self._events
        while events:
            yield events.popleft()
