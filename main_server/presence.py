"""Presence coalescing, without I/O: at most one presence event per user per interval, the
latest state wins, and a state equal to the last one announced is not announced again (a
relink, or a logout and login within the interval, tells nobody anything).

The service feeds it state changes (`update`, which says when a flush is due, if one is not
already scheduled) and, when that time comes, asks what to announce (`take`). Who hears it is
the service's business (users who share a group or a private conversation with the user)."""

from __future__ import annotations

from dataclasses import dataclass

ONLINE, AWAY, OFFLINE = "online", "away", "offline"
STATUS_MESSAGE_MAX_BYTES = 200
INTERVAL_S = 1.0
# Going offline waits this long first: a session that comes right back (a realm relinking, a
# client reconnecting) shows no flicker.
OFFLINE_GRACE_S = 1.0
SENT_MAX = 500_000  # bound on remembered users (what a restart forgets anyway)


@dataclass(frozen=True, slots=True)
class State:
    status: str
    realm: str = ""
    message: str = ""


class Coalescer:
    def __init__(self, interval: float = INTERVAL_S, offline_grace: float = OFFLINE_GRACE_S) -> None:
        self.interval = interval
        self.offline_grace = offline_grace
        self._sent: dict[str, tuple[State, float]] = {}  # user -> last announced state, when
        self._pending: dict[str, State] = {}
        self._scheduled: set[str] = set()

    def update(self, user: str, state: State, now: float) -> float | None:
        """Records the user's new state. Returns the delay after which `take` should run, or
        None when a flush for this user is already scheduled (it will carry this state)."""
        self._pending[user] = state
        if user in self._scheduled:
            return None
        self._scheduled.add(user)
        last = self._sent.get(user)
        delay = 0.0 if last is None else max(0.0, last[1] + self.interval - now)
        if state.status == OFFLINE:
            delay = max(delay, self.offline_grace)
        return delay

    def take(self, user: str, now: float) -> State | None:
        """The state to announce now, or None (nothing new since the last announcement)."""
        self._scheduled.discard(user)
        state = self._pending.pop(user, None)
        if state is None:
            return None
        last = self._sent.get(user)
        if last is not None and last[0] == state:
            return None
        if last is None and state.status == OFFLINE:
            return None  # never announced: nobody needs to hear that they left
        if len(self._sent) >= SENT_MAX:
            self._sent.clear()
        self._sent[user] = (state, now)
        return state

    def scheduled(self) -> int:
        return len(self._scheduled)
