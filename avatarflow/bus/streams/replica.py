"""What the roles of one Redis bus share: the client, who this replica is, and whether it is
draining."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from avatarflow.runtime.settings import Settings


@dataclass
class Replica:
    """One process's link to Redis, shared by its producer, consumer, commits and ownership.

    ``consumer`` is this replica's name in every consumer group it joins. Once ``draining``,
    it reads, heartbeats and claims no more, so the other replicas take its sessions.
    """

    redis: aioredis.Redis
    settings: Settings
    consumer: str
    raw_pictures: bool = False
    draining: bool = False
    ttl_ms: int = field(init=False)  # lifetime of a session's keys while it is idle

    def __post_init__(self) -> None:
        self.ttl_ms = int(self.settings.session_ttl_s * 1000)
