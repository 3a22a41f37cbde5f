"""Where portraits and their analyses outlive one session: the avatar registry.

Every replica of the renderer and refiner, and the session front that registers portraits,
share one registry: encoded bytes by key, each entry leased for ``ttl_s`` after its last use.
``MemoryAvatarRegistry`` serves one process (embedded mode, tests); the Redis one
(``avatarflow.bus.avatars``) serves a cluster. Calls block: stage threads make them directly,
asyncio code through ``asyncio.to_thread``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from avatarflow.avatars.store import AvatarBacking


def image_key(avatar_id: str) -> str:
    """Where the portrait uploaded under ``avatar_id`` is kept."""
    return f"{avatar_id}:image"


class AvatarRegistry(AvatarBacking, Protocol):
    """An ``AvatarStore``'s backing plus what the session front needs."""

    ttl_s: float

    def touch(self, key: str) -> bool:
        """Renews the lease of ``key``; False when there is no such entry."""
        ...

    def load_image(self, avatar_id: str) -> bytes | None:
        """The portrait uploaded under ``avatar_id`` (RegisterAvatar or an inline image)."""
        ...

    def save_image(self, avatar_id: str, image: bytes) -> None: ...

    def close(self) -> None: ...


class MemoryAvatarRegistry:
    """The registry of one process: a dict whose entries lapse ``ttl_s`` after their last
    use, as Redis keys do."""

    def __init__(self, ttl_s: float = 3600.0) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key)
            if item is None:
                return None
            self._items[key] = (item[0], time.monotonic() + self.ttl_s)
            return item[0]

    def save(self, key: str, data: bytes) -> None:
        with self._lock:
            self._items[key] = (data, time.monotonic() + self.ttl_s)

    def touch(self, key: str) -> bool:
        return self.load(key) is not None

    def load_image(self, avatar_id: str) -> bytes | None:
        return self.load(image_key(avatar_id))

    def save_image(self, avatar_id: str, image: bytes) -> None:
        self.save(image_key(avatar_id), image)

    def close(self) -> None:
        with self._lock:
            self._items.clear()

    def _live(self, key: str) -> tuple[bytes, float] | None:
        item = self._items.get(key)
        if item is not None and item[1] < time.monotonic():
            del self._items[key]
            return None
        return item
