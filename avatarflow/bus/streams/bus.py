"""``RedisBus``: the ``Bus`` of distributed mode, composed of the producer (a session's
source), the consumer (reading), the committer (the COMMIT script) and ownership (sessions
shared between replicas, taken over from dead ones), over one Redis client."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from avatarflow.bus import connect, keys
from avatarflow.bus.base import Bus, Commit, Delivery
from avatarflow.bus.streams.commits import Committer
from avatarflow.bus.streams.consumer import Consumer
from avatarflow.bus.streams.ownership import Ownership
from avatarflow.bus.streams.producer import Producer
from avatarflow.bus.streams.replica import Replica
from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput, Unavailable
from avatarflow.runtime.settings import Settings


class RedisBus(Bus):
    """The bus on Redis streams; one per process, shared by its stage runners (or sessions)."""

    keeps_state = True

    def __init__(self, settings: Settings, *, client: connect.AsyncClient | None = None,
                 raw_pictures: bool = False, read_count: int = 8, block_ms: int = 50) -> None:
        self.settings = settings
        self.consumer = settings.consumer_name
        self.redis = client or connect.async_client(settings)
        self.raw_pictures = raw_pictures
        self._replica = Replica(self.redis, settings, self.consumer, raw_pictures)
        self._ownership = Ownership(self._replica)
        self._consumer = Consumer(self._replica, self._ownership, read_count=read_count,
                                  block_ms=block_ms)
        self._producer = Producer(self._replica)
        self._committer = Committer(self._replica)

    @property
    def shards(self) -> int:
        """The key layout's shard count (avatarflow.bus.keys)."""
        return self._replica.shards

    # -- the source side (the gateway) ---------------------------------------------------

    async def publish(self, topic: str, msg: m.Message, *, turn: int = 0) -> None:
        await self._producer.publish(topic, msg, turn)
        if msg.tier is m.Tier.URGENT and isinstance(msg, m.Interrupt):
            self._consumer.interrupt(msg.session_id, turn)

    def attach(self, sid: str, topic: str) -> None:
        """Reads ``topic`` of a session this process opened (the gateway's final frames)."""
        self._consumer.attach(sid, topic)

    def detach(self, sid: str, topic: str) -> None:
        self._consumer.detach(sid, topic)

    async def end_session(self, sid: str) -> None:
        """Deletes what is left of a session at its source (control and frames streams)."""
        await self._producer.end_session(sid)

    async def session_keys(self, sid: str) -> list[str]:
        """The keys still in Redis that hold session ``sid``'s id (empty once every stage
        and the source have let it go)."""
        return await self._producer.session_keys(sid)

    # -- the consumer side (a stage, or the gateway for frames) ---------------------------

    async def receive(self, topic: str, group: str) -> Delivery:
        return await self._consumer.receive(topic, group)

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        return await self._consumer.receive_batch(topic, group, limit)

    def newer_waiting(self, delivery: Delivery) -> bool:
        q = self._consumer.queues.get((delivery.topic, delivery.group))
        return q is not None and q.newer_waiting(delivery.msg.session_id)

    def backlog(self, topic: str, group: str) -> int:
        q = self._consumer.queues.get((topic, group))
        return 0 if q is None else q.backlog()

    def session_count(self, topic: str, group: str) -> int:
        q = self._consumer.queues.get((topic, group))
        return 0 if q is None else len(q.sessions)

    def lost_sessions(self) -> list[str]:
        return self._consumer.lost()

    # -- commits ---------------------------------------------------------------------------

    def prepare(self, outputs: Sequence[m.Message]) -> list[bytes]:
        return self._committer.prepare(outputs)

    async def commit(self, delivery: Delivery, topic: str | None,
                     outputs: Sequence[m.Message], state: bytes | None = None,
                     *, ended: bool = False) -> bool:
        return (await self.commit_many(topic, [Commit(delivery, outputs, state, ended)]))[0]

    async def commit_many(self, topic: str | None, commits: Sequence[Commit]) -> list[bool]:
        """Publishes, acknowledges and saves state for each delivery, in order, in one round
        trip; each one is atomic and checks that this consumer still owns the session."""
        turns = [self._consumer.turn_of(c.delivery) for c in commits]
        source = {(c.delivery.topic, c.delivery.group) for c in commits}
        lane, then = None, None
        if len(source) == 1:  # the usual batch: one topic and group, read by this replica
            (read_topic, group), = source
            lane = self._consumer.read_lane(read_topic, group)
            leaving = {c.delivery.msg.session_id for c in commits if c.ended}

            def then() -> None:  # the next read goes out in the commit's write
                self._consumer.prefetch(read_topic, group, leaving)
        oks = await self._committer.commit(topic, commits, turns, lane=lane, then=then)
        for c, ok in zip(commits, oks, strict=True):
            if c.ended or not ok:
                self._consumer.forget(c.delivery)
        return oks

    # -- lifecycle -------------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                await self.redis.ping()
                break
            except (OSError, RedisConnectionError) as exc:  # not up yet: try again
                if loop.time() > end:
                    where = connect.shown_url(self.settings.redis_url)
                    raise Unavailable(f"cannot reach redis at {where}: {exc}") from exc
                await asyncio.sleep(0.2)
        await self._agree_on_shards()

    async def _agree_on_shards(self) -> None:
        """Records this deployment's shard count, or checks it against the one recorded: a
        process with another count would look for sessions where they are not."""
        mine = self._replica.shards
        await self.redis.set(keys.SHARDS, mine, nx=True)
        recorded = int(await self.redis.get(keys.SHARDS) or mine)
        if recorded != mine:
            raise InvalidInput(
                f"this process uses {mine} bus shard(s) but the deployment on "
                f"{connect.shown_url(self.settings.redis_url)} uses {recorded}: set "
                f"AVATARFLOW_BUS_SHARDS={recorded} on every service (or 0 for the default of "
                "the Redis kind, the same everywhere)")

    async def release(self) -> None:
        """Stops taking work and hands this replica's sessions to the others at once."""
        await self._ownership.release(self._consumer.queues.values())

    async def close(self) -> None:
        self._replica.draining = True
        self._consumer.close()
        await self._ownership.close()
        await self._replica.close_lanes()
        await self.redis.aclose()
