"""The avatar registry in Redis, so every renderer and refiner replica finds an avatar analysed
once, and the uploaded portraits they come from. Entries expire ``avatar_ttl_s`` after their
last use."""

from __future__ import annotations

import redis

from avatarflow.avatars.registry import image_key
from avatarflow.bus import connect, keys
from avatarflow.runtime.settings import Settings


class RedisAvatarRegistry:
    """An ``AvatarRegistry`` on Redis: blocking calls, made from stage threads (and from the
    session front through ``asyncio.to_thread``)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.redis = client or connect.sync_client(settings)
        self.ttl_s = settings.avatar_ttl_s
        self.ttl_ms = int(settings.avatar_ttl_s * 1000)

    def load(self, key: str) -> bytes | None:
        with self.redis.pipeline(transaction=False) as p:
            p.get(keys.avatar(key))
            p.pexpire(keys.avatar(key), self.ttl_ms)
            data, _ = p.execute()
        return data

    def save(self, key: str, data: bytes) -> None:
        self.redis.set(keys.avatar(key), data, px=self.ttl_ms)

    def touch(self, key: str) -> bool:
        return bool(self.redis.pexpire(keys.avatar(key), self.ttl_ms))

    def load_image(self, avatar_id: str) -> bytes | None:
        return self.load(image_key(avatar_id))

    def save_image(self, avatar_id: str, image: bytes) -> None:
        self.save(image_key(avatar_id), image)

    def close(self) -> None:
        self.redis.close()
