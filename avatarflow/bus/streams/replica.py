"""What the roles of one Redis bus share: the client, who this replica is, the key layout's
shard count, and whether it is draining."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from avatarflow.bus import keys
from avatarflow.bus.connect import AsyncClient
from avatarflow.bus.streams.lane import Lane
from avatarflow.runtime.settings import Settings

# Shards when the settings leave it open: one on a single Redis (nothing to spread), enough
# on a cluster that the sessions' slots spread over a few masters.
CLUSTER_SHARDS = 16


@dataclass
class Replica:
    """One process's link to Redis, shared by its producer, consumer, commits and ownership.

    ``consumer`` is this replica's name in every consumer group it joins. Once ``draining``,
    it reads, heartbeats and claims no more, so the other replicas take its sessions.
    """

    redis: AsyncClient
    settings: Settings
    consumer: str
    raw_pictures: bool = False
    draining: bool = False
    ttl_ms: int = field(init=False)  # lifetime of a session's keys while it is idle
    cluster: bool = field(init=False)  # commands must stay within one slot
    shards: int = field(init=False)
    lanes: dict[str, Lane] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.ttl_ms = int(self.settings.session_ttl_s * 1000)
        self.cluster = isinstance(self.redis, RedisCluster)
        self.shards = self.settings.bus_shards or (CLUSTER_SHARDS if self.cluster else 1)

    def lane(self, name: str) -> Lane | None:
        """The connection of its own for hot path ``name`` (avatarflow.bus.streams.lane);
        None on a cluster, whose client routes each command to its slot's node."""
        if self.cluster:
            return None
        found = self.lanes.get(name)
        if found is None:
            found = self.lanes[name] = Lane(cast(aioredis.Redis, self.redis))
        return found

    async def close_lanes(self) -> None:
        for lane in self.lanes.values():
            await lane.close()
        self.lanes.clear()

    def stream(self, sid: str, topic: str) -> str:
        return keys.stream(sid, topic, self.shards)

    def own(self, group: str, sid: str) -> str:
        return keys.own(group, sid, self.shards)

    def join_of(self, sid: str, topic: str) -> str:
        return keys.join_of(sid, topic, self.shards)
