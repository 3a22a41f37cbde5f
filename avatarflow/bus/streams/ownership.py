"""Which replica owns a session, and taking over the sessions of a dead one.

A replica owns a session once it reads the session's entry on the topic's join stream and
the OWN script records it in the session's owner hash; the entry stays pending with it until
the session ends. Every heartbeat it refreshes a liveness key; when another replica's key has
lapsed, the claim loop takes that replica's join entries (XCLAIM), the messages it had read
and not committed, and the session's saved state. A restarted process with the same consumer
name resumes its own pending sessions the same way before its first read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from redis.exceptions import ResponseError

from avatarflow.bus import keys
from avatarflow.bus.streams.queues import SessionQueue, TopicQueue
from avatarflow.bus.streams.replica import Replica
from avatarflow.bus.streams.wire import Entry
from avatarflow.runtime.tasks import TaskGroup

log = logging.getLogger(__name__)


class Ownership:
    """Joins the consumer groups, owns sessions, heartbeats, claims and hands sessions back."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._own_script = replica.redis.register_script(keys.OWN)
        self._tasks = TaskGroup(f"bus-{replica.consumer}")

    def watch(self, q: TopicQueue) -> None:
        """Starts heartbeating and claiming for a topic this replica now reads."""
        self._tasks.spawn(self._heartbeat(q), f"heartbeat-{q.topic}")
        self._tasks.spawn(self._claim_loop(q), f"claim-{q.topic}")

    async def join(self, q: TopicQueue) -> None:
        """Creates the join stream's group if needed and resumes the sessions a previous
        process with our consumer name left pending; done before the first read."""
        r = self.replica
        join = keys.join(q.topic)
        try:
            await r.redis.xgroup_create(join, q.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pending = await r.redis.xpending_range(join, q.group, min="-", max="+", count=1000,
                                               consumername=r.consumer)
        ids = [p["message_id"] for p in pending]
        for entry_id, fields in (await r.redis.xclaim(join, q.group, r.consumer, 0, ids)
                                 if ids else []):
            await self.own(q, entry_id, fields, takeover=True)
        q.ready = True

    async def own(self, q: TopicQueue, join_id: bytes, fields: dict[bytes, bytes] | None,
                  *, takeover: bool = False) -> None:
        """Takes the session a join entry announces, with its saved state and turn."""
        if fields is None:
            return
        sid = fields[b"s"].decode()
        if sid in q.sessions:
            return
        r = self.replica
        got = await self._own_script(
            keys=[keys.own(q.group, sid), keys.stream(sid, q.topic), keys.join(q.topic)],
            args=[r.consumer, join_id, q.group, r.ttl_ms])
        if got == b"gone":
            return
        state, turn = got
        s = SessionQueue(sid, turn=int(turn), restore=state or None)
        if takeover:
            # What the dead replica had read but not committed comes first, in order.
            for topic, queue in ((keys.CTL, s.ctl), (q.topic, s.data)):
                queue.extend(await self._claim_pending(keys.stream(sid, topic), q.group))
            s.started = bool(state)
        q.add(s)

    async def release(self, queues: Iterable[TopicQueue]) -> None:
        """Stops heartbeating, so the other replicas take this one's sessions at once."""
        self.replica.draining = True
        for q in queues:
            if q.join:
                await self.replica.redis.delete(keys.alive(q.group, self.replica.consumer))

    async def close(self) -> None:
        await self._tasks.__aexit__(None, None, None)

    async def _claim_pending(self, stream: str, group: str) -> list[Entry]:
        r = self.replica
        try:
            pending = await r.redis.xpending_range(stream, group, min="-", max="+",
                                                   count=10000)
        except ResponseError:
            return []
        ids = [p["message_id"] for p in pending]
        if not ids:
            return []
        claimed: list[Entry] = await r.redis.xclaim(stream, group, r.consumer, 0, ids)
        return claimed

    async def _heartbeat(self, q: TopicQueue) -> None:
        r = self.replica
        key = keys.alive(q.group, r.consumer)
        while not r.draining:
            await r.redis.set(key, b"1", px=r.settings.claim_idle_ms)
            await asyncio.sleep(r.settings.heartbeat_ms / 1000)

    async def _claim_loop(self, q: TopicQueue) -> None:
        r = self.replica
        join = keys.join(q.topic)
        while not q.ready:
            await asyncio.sleep(r.settings.heartbeat_ms / 1000)
        while not r.draining:
            try:
                await self._claim_dead(q, join)
            except ResponseError as exc:
                log.warning("%s: claim pass failed: %s", q.group, exc)
            await asyncio.sleep(r.settings.heartbeat_ms / 1000)

    async def _claim_dead(self, q: TopicQueue, join: str) -> None:
        """Claims the join entries of every replica of the group whose liveness key lapsed."""
        r = self.replica
        summary = await r.redis.xpending(join, q.group)
        for row in summary.get("consumers") or ():
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            if name == r.consumer or await r.redis.exists(keys.alive(q.group, name)):
                continue
            pending = await r.redis.xpending_range(join, q.group, min="-", max="+",
                                                   count=1000, consumername=name)
            ids = [p["message_id"] for p in pending]
            claimed = await r.redis.xclaim(join, q.group, r.consumer,
                                           r.settings.claim_idle_ms // 2, ids) if ids else []
            for entry_id, fields in claimed:
                log.info("%s: taking over session from %s", q.group, name)
                await self.own(q, entry_id, fields, takeover=True)
