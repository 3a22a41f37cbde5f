"""The in-process bus for embedded mode: bounded tiered queues per topic and group."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from avatarflow.bus.base import Bus, Delivery
from avatarflow.contracts import messages as m


class TieredQueue:
    """A bounded FIFO where urgent messages jump ahead and an interrupt purges its session."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._urgent: deque[m.Message] = deque()
        self._rest: deque[m.Message] = deque()
        self._changed = asyncio.Condition()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._rest)

    async def put(self, msg: m.Message) -> None:
        async with self._changed:
            if msg.tier is m.Tier.URGENT:
                if isinstance(msg, m.Interrupt):
                    self._purge(msg.session_id)
                self._urgent.append(msg)
            else:
                await self._changed.wait_for(lambda: len(self._rest) < self.maxsize)
                self._rest.append(msg)
            self._changed.notify_all()

    async def get(self) -> m.Message:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._urgent or self._rest))
            msg = self._urgent.popleft() if self._urgent else self._rest.popleft()
            self._changed.notify_all()
            return msg

    def _purge(self, session_id: str) -> None:
        kept = [x for x in self._rest
                if x.session_id != session_id or x.tier is not m.Tier.DATA]
        self.dropped += len(self._rest) - len(kept)
        self._rest = deque(kept)


class MemoryBus(Bus):
    """Topics as tiered queues, one per (topic, group), created on first use."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._groups: dict[str, dict[str, TieredQueue]] = {}

    def _queue(self, topic: str, group: str) -> TieredQueue:
        return self._groups.setdefault(topic, {}).setdefault(group, TieredQueue(self.maxsize))

    def subscribe(self, topic: str, group: str) -> None:
        """Declares a consumer group so messages published before its first receive wait."""
        self._queue(topic, group)

    async def publish(self, topic: str, msg: m.Message, *, turn: int = 0) -> None:
        for queue in self._groups.setdefault(topic, {}).values():
            await queue.put(msg)

    async def receive(self, topic: str, group: str) -> Delivery:
        return Delivery(await self._queue(topic, group).get(), topic, group)

    def backlog(self, topic: str, group: str) -> int:
        return len(self._queue(topic, group))

    async def commit(self, delivery: Delivery, topic: str | None,
                     outputs: Sequence[m.Message], state: bytes | None = None,
                     *, ended: bool = False) -> bool:
        if topic is not None:
            for out in outputs:
                await self.publish(topic, out)
        return True
