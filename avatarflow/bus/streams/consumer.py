"""The reading side of a replica: a stage reading its input topic, or the gateway reading its
sessions' final frames.

One XREADGROUP per fetch covers the topic's join stream (new sessions to own) and, for every
owned session, its control stream and its data stream on the topic; the entries land in the
session's queues (``queues.TopicQueue``), which hand them out in round robin between
sessions, control first.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ResponseError
from redis.typing import KeyT, StreamIdT

from avatarflow.bus import keys
from avatarflow.bus.base import Delivery
from avatarflow.bus.streams.ownership import Ownership
from avatarflow.bus.streams.queues import SessionQueue, TopicQueue
from avatarflow.bus.streams.replica import Replica
from avatarflow.runtime.registry import FRAMES

log = logging.getLogger(__name__)

# A read is sent, and done by Redis, within this of the lease check before it (a margin for
# the network; a quarter of the takeover time at most); while the lease may have lapsed, it
# is checked again this often.
LEASE_SLACK_S = 0.05
LEASE_POLL_S = 0.01


class Consumer:
    """This replica's ``TopicQueue`` per (topic, group) it reads, and the reads that fill them."""

    def __init__(self, replica: Replica, ownership: Ownership, *, read_count: int,
                 block_ms: int) -> None:
        self.replica, self.ownership = replica, ownership
        self.read_count, self.block_ms = read_count, block_ms
        self.queues: dict[tuple[str, str], TopicQueue] = {}

    def queue(self, topic: str, group: str, join: bool) -> TopicQueue:
        """The queue of ``topic`` for ``group``, created (and, for a stage, watched by
        ownership) on first use."""
        q = self.queues.get((topic, group))
        if q is None:
            q = self.queues[(topic, group)] = TopicQueue(topic, group, join)
            if join:
                self.ownership.watch(q)
        return q

    async def receive(self, topic: str, group: str) -> Delivery:
        q = self.queue(topic, group, join=topic != FRAMES)
        if q.join and not q.ready:
            await self.ownership.join(q)
        while True:
            d = None if self.replica.draining else q.next()
            if d is not None:
                return d
            await self._fetch(q)

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        batch = [await self.receive(topic, group)]
        q = self.queues[(topic, group)]
        while len(batch) < limit and not self.replica.draining:
            d = q.next()
            if d is None:
                break
            batch.append(d)
        return batch

    def attach(self, sid: str, topic: str) -> None:
        """Reads ``topic`` of a session this process opened (the gateway's final frames)."""
        q = self.queue(topic, keys.GROUP_OF[topic], join=False)
        if sid not in q.sessions:
            q.add(SessionQueue(sid, started=True))

    def detach(self, sid: str, topic: str) -> None:
        q = self.queues.get((topic, keys.GROUP_OF[topic]))
        if q is not None:
            q.remove(sid)

    def interrupt(self, sid: str, turn: int) -> None:
        """This process interrupted a session it also reads: drop its old turn here too."""
        for q in self.queues.values():
            s = q.sessions.get(sid)
            if s is not None:
                q.set_turn(s, turn)

    def turn_of(self, d: Delivery) -> int:
        """The delivery's session's current turn (the delivery's own once it is forgotten)."""
        s = self.queues[(d.topic, d.group)].sessions.get(d.msg.session_id)
        return s.turn if s is not None else d.turn

    def lost(self) -> list[str]:
        """The sessions other replicas took from this one since the last call."""
        out: list[str] = []
        for q in self.queues.values():
            out += q.lost
            q.lost.clear()
        return out

    def forget(self, d: Delivery) -> None:
        """Stops reading the delivery's session (it ended here, or another replica has it)."""
        self.queues[(d.topic, d.group)].remove(d.msg.session_id)

    async def _fetch(self, q: TopicQueue) -> None:
        r = self.replica
        if q.skipped:
            skipped, q.skipped = q.skipped, []
            async with r.redis.pipeline(transaction=False) as p:
                for stream, entry_id in skipped:
                    p.xack(stream, q.group, entry_id)
                    if not stream.endswith(":" + keys.CTL):  # only this group reads it
                        p.xdel(stream, entry_id)
                await p.execute()
        if r.draining:
            await asyncio.sleep(self.block_ms / 1000)
            return
        block_ms = self.block_ms
        if q.join:
            # Read only while the lease surely holds, until the read's last moment: after a
            # lapse another replica may own these sessions, and what we read it would never.
            slack = min(LEASE_SLACK_S, r.settings.claim_idle_ms / 4000)
            left = q.lease.left(asyncio.get_running_loop().time()) - slack
            if left * 1000 < 1:
                q.lease.want()
                await asyncio.sleep(LEASE_POLL_S)
                return
            block_ms = min(block_ms, int(left * 1000))
        streams: dict[KeyT, StreamIdT] = {}
        if q.join:
            streams[keys.join(q.topic)] = ">"
        for sid in q.sessions:
            if q.join:  # stages read control; the gateway is its source
                streams[keys.stream(sid, keys.CTL)] = ">"
            streams[keys.stream(sid, q.topic)] = ">"
        if not streams:
            await asyncio.sleep(self.block_ms / 1000)
            return
        try:
            reply = await r.redis.xreadgroup(q.group, r.consumer, streams,
                                             count=self.read_count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.debug("%s: %s", q.group, exc)
            await self._forget_missing(q, str(exc))
            return
        for stream, entries in reply or ():
            name = stream.decode()
            if name == keys.join(q.topic):
                for entry_id, fields in entries:
                    await self.ownership.own(q, entry_id, fields)
                continue
            s = q.sessions.get(keys.sid_of(name))
            if s is not None:
                (s.ctl if name.endswith(":" + keys.CTL) else s.data).extend(entries)

    async def _forget_missing(self, q: TopicQueue, error: str) -> None:
        """A session's stream vanished (expired, or ended elsewhere): stop reading it."""
        for sid in list(q.sessions):
            for topic in (q.topic, keys.CTL):
                key = keys.stream(sid, topic)
                if f"'{key}'" in error or not await self.replica.redis.exists(key):
                    log.warning("%s: session %s: %s is gone; forgetting the session",
                                q.group, sid, key)
                    q.remove(sid)
                    break
