"""Main's plain events in process: each becomes the pb Event the wire always carried (built once
per event however many channels get it), and live notices cross replicas in one encoding."""

from __future__ import annotations

import asyncio

import pytest

from main_server import events, wire
from main_server.hub import Hub
from main_server.storage.base import FileRecord, MessageRecord
from realmchat.pb import chat_pb2 as pb

MSG = MessageRecord(5, "Ann", "hi @bob", "2026-01-01T00:00:00Z", to="Bob", reactions=(("+1", ("Bob",)),))
FILE = FileRecord(9, "Ann", "Bob", "bob", "a.txt", 3, "ab" * 32, "2026-01-01T00:00:00Z")

# Each event next to the pb Event main sent for it before events existed.
CASES: list[tuple[events.Event, pb.Event]] = [
    (events.PrivateMessage(MSG, True), pb.Event(private=pb.Message(**{
        "id": 5, "from": "Ann", "to": "Bob", "text": "hi @bob", "ts": MSG.ts, "mention": True,
        "reactions": [pb.Reaction(emoji="+1", users=["Bob"])]}))),
    (events.GroupMessage(MessageRecord(6, "Ann", "yo", "t", group="g")),
     pb.Event(group=pb.Message(**{"id": 6, "from": "Ann", "group": "g", "text": "yo", "ts": "t"}))),
    (events.FileOffered(FILE), pb.Event(file=pb.FileInfo(**{
        "id": 9, "from": "Ann", "to": "Bob", "name": "a.txt", "size": 3, "sha256": "ab" * 32, "ts": FILE.ts}))),
    (events.Edited(5, "new", "t2", False, sender="Ann", to="Bob"),
     pb.Event(edited=pb.EditedEvent(**{"id": 5, "text": "new", "edited": "t2", "from": "Ann", "to": "Bob"}))),
    (events.Deleted(5, "Ann", group="g"), pb.Event(deleted=pb.DeletedEvent(id=5, by="Ann", group="g"))),
    (events.Reaction(5, "Bob", "+1", True, sender="Ann", to="Bob"),
     pb.Event(reaction=pb.ReactionEvent(**{"id": 5, "user": "Bob", "emoji": "+1", "on": True, "from": "Ann",
                                           "to": "Bob"}))),
    (events.Member("g", "Bob", "kick", "Ann", reason="spam"),
     pb.Event(member=pb.MemberEvent(group="g", user="Bob", action="kick", by="Ann", reason="spam"))),
    (events.Invited("g", "Ann"), pb.Event(invited=pb.InvitedEvent(group="g", by="Ann"))),
    (events.Topic("g", "news", "Ann"), pb.Event(topic=pb.TopicEvent(group="g", topic="news", by="Ann"))),
    (events.Topic("g", "news", "Ann", "2026-01-01T00:00:00.000Z"),
     pb.Event(topic=pb.TopicEvent(group="g", topic="news", by="Ann", at="2026-01-01T00:00:00.000Z"))),
    (events.GroupMode("g", "private", "Ann"),
     pb.Event(group_mode=pb.GroupModeEvent(group="g", mode="private", by="Ann"))),
    (events.GroupKey("g", True, "Ann", "sesame"),
     pb.Event(group_key=pb.GroupKeyEvent(group="g", has_key=True, by="Ann", key="sesame"))),
    (events.GroupKey("g", False, "Ann"), pb.Event(group_key=pb.GroupKeyEvent(group="g", by="Ann"))),
    (events.GroupDeleted("g", "Ann"), pb.Event(group_deleted=pb.GroupDeletedEvent(group="g", by="Ann"))),
    (events.Presence("Ann", "away", "alpha", "lunch"),
     pb.Event(presence=pb.PresenceEvent(user="Ann", status="away", realm="alpha", message="lunch"))),
    (events.Typing("Ann", "g"), pb.Event(typing=pb.TypingEvent(user="Ann", peer="g"))),
    (events.Read("Bob", 7), pb.Event(read=pb.ReadEvent(peer="Bob", id=7))),
    (events.Seen("Bob", 7), pb.Event(seen=pb.SeenEvent(by="Bob", id=7))),
]


@pytest.mark.parametrize(("event", "want"), CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_event_becomes_the_pb_event_of_before(event: events.Event, want: pb.Event) -> None:
    assert wire.event_template(event) == want
    got = wire.channel_event(wire.event_template(event), [3, 4], 11)
    assert list(got.session_ids) == [3, 4] and got.seq == 11
    assert got.WhichOneof("kind") == want.WhichOneof("kind")


def test_every_kind_of_pushed_event_is_covered() -> None:
    kinds = {f.name for f in pb.Event.DESCRIPTOR.oneofs_by_name["kind"].fields} - {"linked"}
    assert {wire.event_template(e).WhichOneof("kind") for e, _ in CASES} == kinds


@pytest.mark.parametrize("event", [e for e, _ in CASES if not isinstance(
    e, events.PrivateMessage | events.GroupMessage | events.FileOffered)], ids=lambda e: type(e).__name__)
def test_live_notices_survive_the_cluster_encoding(event: events.Event) -> None:
    assert events.decode(events.encode(event)) == event
    assert events.from_plain(events.to_plain(event)) == event


@pytest.mark.parametrize("bad", [b"", b"[]", b'{"type": "Nope"}', b'{"type": "Seen", "by": "x"}',
                                 b'{"type": "Seen", "by": "x", "id": 1, "extra": 2}'])
def test_a_bad_notice_is_a_clear_error(bad: bytes) -> None:
    with pytest.raises(ValueError, match="event"):
        events.decode(bad)


def test_messages_travel_by_id_not_by_value() -> None:
    with pytest.raises(TypeError, match="by id"):
        events.encode(events.PrivateMessage(MSG))


class Seqs:
    """The hub's tracker reduced to numbering pushes (what they carry is not this test's)."""

    def __init__(self) -> None:
        self.next = 0

    def channel_opened(self, channel_id: str, realm: str) -> None: ...

    def channel_closed(self, channel_id: str) -> None: ...

    def session_left(self, channel_id: str, session_id: int) -> None: ...

    def record(self, channel_id: str, targets: dict[int, str], entries: dict[str, list[int]]) -> int:
        self.next += 1
        return self.next

    def backlog(self, channel_id: str) -> int:
        return 0


async def test_the_hub_converts_an_event_once_for_all_its_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = Hub()
    hub.tracker = Seqs()
    a, b = hub.open_channel("alpha"), hub.open_channel("beta")
    hub.attach(a, 1, "ann", "Ann")
    hub.attach(a, 2, "bob", "Bob")
    hub.attach(b, 3, "cy", "Cy")
    built: list[events.Event] = []
    real = wire.event_template

    def counting(e: events.Event) -> pb.Event:
        built.append(e)
        return real(e)

    monkeypatch.setattr(wire, "event_template", counting)
    event = events.Typing("Dee", "g")
    hub.push(["ann", "bob", "cy", "nobody"], event, exclude_session=2)
    assert built == [event], "one pb conversion per event, not per channel or recipient"
    got = {ch.realm: ch.queue.get_nowait().event for ch in (a, b)}
    assert list(got["alpha"].session_ids) == [1] and list(got["beta"].session_ids) == [3]
    assert got["alpha"].typing == got["beta"].typing == pb.TypingEvent(user="Dee", peer="g")
    hub.push(["nobody"], events.Typing("Dee", "h"))
    assert len(built) == 1, "no channel, no conversion"
    await asyncio.sleep(0)
