"""Per-avatar plans: the session-constant work an engine does once per analysed portrait
(warp grids, source tensors, crops), cached by avatar and shared by the renderer's and the
refiner's engines."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from avatarflow.avatars.store import Avatar

P = TypeVar("P")


class PlanCache(Generic[P]):
    """Plans by ``Avatar.key`` (id and output format), least recently used evicted beyond
    ``capacity``; a plan is rebuilt when its key has been re-analysed into a new Avatar."""

    def __init__(self, build: Callable[[Avatar], P], capacity: int = 16) -> None:
        self.build, self.capacity = build, capacity
        self._plans: OrderedDict[str, tuple[Avatar, P]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, avatar: Avatar) -> P:
        with self._lock:
            hit = self._plans.get(avatar.key)
            if hit is not None and hit[0] is avatar:
                self._plans.move_to_end(avatar.key)
                return hit[1]
        plan = self.build(avatar)  # outside the lock: other avatars' frames go on meanwhile
        with self._lock:
            self._plans[avatar.key] = (avatar, plan)
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan

    def __len__(self) -> int:
        with self._lock:
            return len(self._plans)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
