"""Messages: send (private and group), reply, edit, delete, react, search, inbox and history.
Every rule is checked by storage in the transaction that makes the change (roomops, with
rooms.py's rules)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable

from realmchat.errors import InvalidArgument, NotFound, ResourceExhausted
from realmchat.names import check_name, name_key
from realmchat.textproto import HISTORY_MAX

from .. import events
from ..config import MainConfig
from ..metrics import MESSAGES
from ..storage.base import MessageChange, MessageRecord, Storage, Window
from ..storage.searchtext import prefix_problem
from .accounts import Caller
from .delivery import Delivery, Page, fit_bytes
from .groups import group_key
from .history import HistoryAsk, Point, Ref, check_ref, reads
from .notify import Notify

PRIVATE_STORED, GROUP_STORED = (MESSAGES.labels(k) for k in ("private", "group"))
SEARCH_MAX = 50
SEARCH_WORDS_MAX = 16
EMOJI_MAX = 16
MENTIONS_MAX = 50
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{1,32})")
_WORD = re.compile(r"\w+\**|\*+")  # a word and the stars after it, or stars alone


def mentions_in(text: str) -> tuple[str, ...]:
    """Keys of the names written as @name (also without trailing . or -: "thanks @bob.")."""
    if "@" not in text:  # most messages: no regex scan
        return ()
    keys: set[str] = set()
    for m in _MENTION.finditer(text):
        name = m.group(1)
        keys.add(name_key(name))
        if (bare := name.rstrip(".-")) and bare != name:
            keys.add(name_key(bare))
        if len(keys) >= MENTIONS_MAX:
            break
    return tuple(sorted(keys))


def search_words(query: str) -> list[str]:
    """The words of a search query, lower case; one ending in `*` is a prefix (searchtext)."""
    words = [w.lower() for w in _WORD.findall(query)]
    if not words:
        raise InvalidArgument("search for at least one word (letters or digits)")
    for w in words:
        if "*" in w and (problem := prefix_problem(w)):
            raise InvalidArgument(problem)
    if len(words) > SEARCH_WORDS_MAX or any(len(w) > 64 for w in words):
        raise InvalidArgument(f"search for at most {SEARCH_WORDS_MAX} words of at most 64 characters")
    return words


def check_emoji(emoji: str) -> str:
    if not 1 <= len(emoji) <= EMOJI_MAX or any(c.isspace() or unicodedata.category(c) == "Cc" for c in emoji):
        raise InvalidArgument(f"a reaction is 1-{EMOJI_MAX} characters without spaces")
    return emoji


def check_text(text: str, max_bytes: int) -> None:
    if not text.strip():
        raise InvalidArgument("the message must not be empty")
    if "\x00" in text:  # PostgreSQL cannot store it; refused on every engine alike
        raise InvalidArgument("the message must not contain NUL characters (U+0000)")
    if len(text.encode()) > max_bytes:
        raise ResourceExhausted(f"message too long: at most {max_bytes} bytes")


def _where(m: MessageRecord) -> dict[str, str]:
    """Which conversation an event is about: the group, or a private one's two parties."""
    return {"group": m.group} if m.group else {"sender": m.sender, "to": m.to}


class Messages:
    def __init__(self, config: MainConfig, storage: Storage, delivery: Delivery, notify: Notify) -> None:
        self.config = config
        self.storage = storage
        self.delivery = delivery
        self.notify = notify

    def _check_text(self, text: str) -> None:
        check_text(text, self.config.max_message_bytes)

    async def send_private(self, caller: Caller, to: str, text: str, reply_to: int = 0) -> MessageRecord:
        check_name(to, "user")
        self._check_text(text)
        stored = await self.storage.store_private(caller.user, name_key(to), text, reply_to, mentions_in(text))
        PRIVATE_STORED.inc()
        # Carbons: the sender's other sessions get it too (no undelivered entry is theirs).
        users = sorted({*stored.recipients, caller.session.user_key})
        self.delivery.push_message(stored.message, users, stored.recipients, caller.session.id,
                                   mentioned=stored.mentioned)
        return stored.message

    async def send_group(self, caller: Caller, group: str, text: str, reply_to: int = 0) -> MessageRecord:
        check_name(group, "group")
        self._check_text(text)
        stored = await self.storage.store_group(caller.user, name_key(group), text, reply_to, mentions_in(text))
        GROUP_STORED.inc()
        # The sender's other sessions see it too; only recipients have entries to mark.
        self.delivery.push_message(stored.message, [*stored.recipients, caller.session.user_key],
                                   stored.recipients, caller.session.id, mentioned=stored.mentioned)
        return stored.message

    # ---- the life of a message ------------------------------------------------------------------
    # Events are live notices to everyone who can see the message, the actor's other sessions
    # included (the acting session has its OK): no undelivered entry. What waits undelivered is
    # read from storage when delivered, so it arrives as it is then.

    async def reply(self, caller: Caller, msg_id: int, text: str) -> MessageRecord:
        self._check_text(text)
        target = await self.storage.message_for(caller.session.user_key, msg_id)
        if target.deleted:
            raise NotFound(f"message {msg_id} was deleted")
        if target.group:
            return await self.send_group(caller, target.group, text, reply_to=msg_id)
        # The other party of the conversation (to oneself: notes to self).
        me = caller.session.user_name
        peer = target.to if name_key(target.sender) == caller.session.user_key else target.sender
        return await self.send_private(caller, peer or me, text, reply_to=msg_id)

    async def edit(self, caller: Caller, msg_id: int, text: str) -> MessageChange:
        self._check_text(text)
        change = await self.storage.edit_message(caller.user, msg_id, text, mentions_in(text))
        m = change.message
        named = set(change.mentioned)
        # An edit names its author in a group too (only the author edits): IRC shows it from them.
        where = {**_where(m), "sender": m.sender}
        for users, flag in (([u for u in change.audience if u not in named], False),
                            ([u for u in change.audience if u in named], True)):
            self.notify.send(users, events.Edited(m.id, m.text, m.edited, flag, **where), caller.session.id)
        return change

    async def delete(self, caller: Caller, msg_id: int) -> MessageChange:
        change = await self.storage.delete_message(caller.user, msg_id)
        e = events.Deleted(msg_id, caller.session.user_name, **_where(change.message))
        self.notify.send(change.audience, e, caller.session.id)
        return change

    async def react(self, caller: Caller, msg_id: int, emoji: str, on: bool) -> MessageChange:
        change = await self.storage.react(caller.user, msg_id, check_emoji(emoji), on)
        if change.changed:
            e = events.Reaction(msg_id, caller.session.user_name, emoji, on, **_where(change.message))
            self.notify.send(change.audience, e, caller.session.id)
        return change

    async def search(self, caller: Caller, query: str, group: str = "", user: str = "") -> list[MessageRecord]:
        words = search_words(query)
        if group and user:
            raise InvalidArgument("search one conversation at a time: #GROUP or @USER")
        gkey = group_key(group) if group else ""
        ukey = ""
        if user:
            ukey = name_key(check_name(user.removeprefix("@"), "user"))
            if await self.storage.get_user(ukey) is None:
                raise NotFound(f"no user {user!r}: check the name")
        return await self.storage.search(caller.session.user_key, words, gkey, ukey, SEARCH_MAX)

    # ---- reading -------------------------------------------------------------------------------

    async def inbox(self, caller: Caller) -> Page:
        user, n = caller.session.user_key, self.config.inbox_page
        return await self.delivery.inbox_page(caller, lambda skip: self.storage.peek_inbox(user, n, skip))

    async def inbox_group(self, caller: Caller, group: str) -> Page:
        check_name(group, "group")
        user, gkey, n = caller.session.user_key, name_key(group), self.config.inbox_page
        return await self.delivery.inbox_page(
            caller, lambda skip: self.storage.peek_inbox_group(user, gkey, n, skip))

    async def history(self, caller: Caller, peer: str, ask: HistoryAsk) -> Page:
        """Oldest first, in one of the forms of a HistoryAsk (history.py); `more`: messages lie
        beyond the page (older ones for the newest or before, newer ones for after)."""
        if not 0 <= ask.limit <= HISTORY_MAX:
            raise InvalidArgument(f"a history limit is 1-{HISTORY_MAX} (0: {self.config.history_default})")
        limit = ask.limit or self.config.history_default
        form = ask.form()
        force_group = peer.startswith("#")
        name = peer[1:] if force_group else peer
        check_name(name, "group" if force_group else "user or group")
        key, me = name_key(name), caller.session.user_key
        read: Callable[[str, str, Window], Awaitable[list[MessageRecord]]]
        if not force_group and await self.storage.get_user(key) is not None:
            read, group = self.storage.window_private, ""
        elif await self.storage.get_group(key) is None:
            raise NotFound(f"no user or group {name!r}")
        else:
            read, group = self.storage.window_group, key
        if group and ask.refs():  # a non-member is told so, not that their reference is wrong
            await self.storage.member_group(key, me)
        points = {f: await self._point(me, key, group, ref) for f, ref in
                  (("before_ref", ask.before_ref), ("after_ref", ask.after_ref), ("around", ask.around),
                   ("start", ask.start), ("end", ask.end)) if ref is not None}
        msgs: list[MessageRecord] = []
        more = False
        plan = reads(ask, form, limit, points)
        for r in plan:
            kept, beyond = r.keep(await read(me, key, r.window))
            msgs += kept
            more = more or beyond
        # Too many bytes: the messages nearest the anchor are kept (counting forward: the oldest).
        page, cut = fit_bytes(msgs, self.config.reply_max_bytes, newest=plan[-1].window.newest)
        return Page(page, more or cut)

    async def _point(self, me: str, key: str, group: str, ref: Ref) -> Point:
        """A reference checked: a time, or a message of this conversation the caller may see."""
        ref = check_ref(ref)
        if not ref.id:
            return Point(0, ref.ts)
        wrong = InvalidArgument(f"message {ref.id} is not one of this conversation's: check the id")
        try:
            m = await self.storage.message_for(me, ref.id)
        except NotFound:
            raise wrong from None
        if group or m.group:
            ours = name_key(m.group) == group
        else:  # a private one: between the caller and the peer (notes to self: both the caller)
            ours = {name_key(m.sender), name_key(m.to)} == {me, key}
        if not ours:
            raise wrong
        return Point(m.id, m.ts)
