"""A replica's reading state for one topic, in memory: the entries read for each session it
owns, taken in round robin between sessions, control before data, with the data of a turn an
interrupt ended dropped. No I/O here: ``consumer`` fills the queues from Redis and
acknowledges what they skipped."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from avatarflow.bus import keys
from avatarflow.bus.base import Delivery
from avatarflow.bus.streams.wire import Entry, stale
from avatarflow.contracts import codec
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import AvatarflowError

log = logging.getLogger(__name__)


@dataclass
class SessionQueue:
    """One owned session's entries, read and not yet taken."""

    sid: str
    data_key: str  # its data stream on the topic, and its control stream
    ctl_key: str
    turn: int = 0
    started: bool = False  # its SessionStart was delivered (control waits until then)
    restore: bytes | None = None  # state to hand to the runner with the next delivery
    ctl: deque[Entry] = field(default_factory=deque)
    data: deque[Entry] = field(default_factory=deque)


class Lease:
    """Until when (event loop time) this replica's liveness key in the group surely exists:
    the send time of the last heartbeat that renewed it plus its lifetime. Before then no
    other replica can take its sessions."""

    def __init__(self) -> None:
        self.until = 0.0
        self._wanted = asyncio.Event()  # a reader waits for a renewal: beat now

    def renewed(self, until: float) -> None:
        self.until = until
        self._wanted.clear()

    def left(self, now: float) -> float:
        """Seconds the lease surely lasts from ``now`` (negative once it may have lapsed)."""
        return self.until - now

    def want(self) -> None:
        """Asks the heartbeat for a renewal now rather than at its next beat."""
        self._wanted.set()

    async def until_next_beat(self, period_s: float) -> None:
        """The heartbeat's pause: ``period_s``, or less when a reader wants a renewal."""
        try:
            await asyncio.wait_for(self._wanted.wait(), period_s)
        except TimeoutError:
            pass


class JoinShare:
    """Whether this replica takes new sessions now: they go to the replicas holding the fewest.
    ``peers`` is the fewest sessions another live replica of the group holds (None: there is
    no other), refreshed every heartbeat by the claim pass. A replica holding more leaves the
    join streams out of its reads and passes on a join entry it read anyway (a read returns
    several; on a cluster several reads are in flight), so a less busy one takes the session.
    A session left waiting unread for ``patience_s`` (the less busy peer does not take it: its
    count out of date, say) it takes itself, one at a time."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.peers: int | None = None
        self._waiting_since: float | None = None  # sessions wait unread since
        self._granted = False  # they waited too long: the next one is this replica's

    def seen(self, waiting: bool, now: float) -> None:
        """The claim pass's finding: whether sessions wait in the join streams, unread."""
        if not waiting:
            self._waiting_since, self._granted = None, False
        elif self._waiting_since is None:
            self._waiting_since = now

    def _fair(self, held: int) -> bool:
        return self.peers is None or held <= self.peers

    def reads(self, held: int, now: float) -> bool:
        """Whether the next read includes the join streams."""
        if self._fair(held):
            return True
        if not self._granted and self._waiting_since is not None:
            self._granted = now - self._waiting_since >= self.patience_s
        return self._granted

    def takes(self, held: int) -> bool:
        """Whether to own the session of a join entry just read (else it is passed on)."""
        if self._fair(held):
            return True
        if self._granted:
            self._granted, self._waiting_since = False, None
            return True
        return False


class TopicQueue:
    """This replica's sessions on one topic for one consumer group."""

    def __init__(self, topic: str, group: str, join: bool) -> None:
        self.topic, self.group, self.join = topic, group, join
        self.sessions: dict[str, SessionQueue] = {}
        self.order: deque[str] = deque()  # round robin between sessions
        self.skipped: list[tuple[str, bytes]] = []  # (stream, entry id) to acknowledge
        self.ready = False  # the join stream's consumer group exists
        self.lease = Lease()  # renewed by ownership's heartbeat (stages only)
        self.lost: list[str] = []  # sessions taken over by another replica, for the runner
        self.share = JoinShare(patience_s=1.0)  # set from the settings by ownership

    def add(self, s: SessionQueue) -> None:
        self.sessions[s.sid] = s
        self.order.append(s.sid)
        if s.sid in self.lost:  # ours again before the runner heard it was lost: keep it
            self.lost.remove(s.sid)

    def remove(self, sid: str) -> None:
        if self.sessions.pop(sid, None) is not None:
            self.order.remove(sid)

    def next(self) -> Delivery | None:
        """The next message in round robin between sessions, control before data."""
        for _ in range(len(self.order)):
            sid = self.order[0]
            self.order.rotate(-1)
            d = self._take(self.sessions[sid])
            if d is not None:
                return d
        return None

    def set_turn(self, s: SessionQueue, turn: int) -> None:
        """A new turn began (barge-in): the session's queued data of older turns is dropped."""
        if turn <= s.turn:
            return
        s.turn = turn
        kept: deque[Entry] = deque()
        for entry in s.data:
            if stale(entry[1], turn):
                self.skipped.append((s.data_key, entry[0]))
            else:
                kept.append(entry)
        s.data = kept

    def newer_waiting(self, sid: str) -> bool:
        """Whether data of the session's current turn is queued here."""
        s = self.sessions.get(sid)
        return s is not None and any(
            f is not None and f.get(b"k") == b"D" and int(f[b"t"]) >= s.turn for _, f in s.data)

    def backlog(self) -> int:
        return sum(len(s.data) + len(s.ctl) for s in self.sessions.values())

    def _take(self, s: SessionQueue) -> Delivery | None:
        while s.started and s.ctl:
            d = self._delivery(s, s.ctl.popleft(), keys.CTL)
            if d is not None:
                if isinstance(d.msg, m.Interrupt):
                    self.set_turn(s, d.turn)
                return d
        while s.data:
            entry = s.data.popleft()
            if stale(entry[1], s.turn):  # barge-in purge
                self.skipped.append((s.data_key, entry[0]))
                continue
            d = self._delivery(s, entry, self.topic)
            if d is not None:
                if isinstance(d.msg, m.SessionStart):
                    s.started = True
                return d
        return None

    def _delivery(self, s: SessionQueue, entry: Entry, source: str) -> Delivery | None:
        entry_id, fields = entry
        stream = s.ctl_key if source == keys.CTL else s.data_key
        if fields is None:  # trimmed while pending
            self.skipped.append((stream, entry_id))
            return None
        data = fields[b"m"]
        try:
            msg = codec.decode(data)
        except AvatarflowError as exc:
            log.warning("%s: session %s: undecodable entry %s: %s", self.group, s.sid,
                        entry_id, exc.message)
            msg = m.SessionError(session_id=s.sid, stage=self.group, category=exc.category,
                                 message=f"undecodable message on {self.topic}: {exc.message}")
        d = Delivery(msg, self.topic, self.group, entry_id=entry_id.decode(), stream=stream,
                     turn=int(fields[b"t"]), restore=s.restore, published_at=float(fields[b"p"]),
                     size=len(data))
        s.restore = None
        return d
