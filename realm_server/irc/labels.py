"""IRCv3 labeled-response: what a labelled command's answer looks like once it is complete.
Pure: the command runner collects a command's own lines, then asks `labelled` for the wire form."""

from __future__ import annotations

from dataclasses import replace

from .codec import Message

LABEL_MAX = 64  # bytes of label a client may use; a longer one is refused, never cut


def with_tag(m: Message, key: str, value: str) -> Message:
    return replace(m, tags={**m.tags, key: value})


def labelled(label: str, msgs: list[Message], server: str, batch_id: str) -> list[Message]:
    """No line: ACK; one: the label on it; several: a labeled-response batch around them."""
    if not msgs:
        return [Message("ACK", [], server, {"label": label})]
    if len(msgs) == 1:
        return [with_tag(msgs[0], "label", label)]
    return [Message("BATCH", [f"+{batch_id}", "labeled-response"], server, {"label": label}),
            # A line of a batch of the command's own (chathistory) stays in it; that batch's
            # BATCH lines are in this one.
            *(m if "batch" in m.tags else with_tag(m, "batch", batch_id) for m in msgs),
            Message("BATCH", [f"-{batch_id}"], server)]
