"""The in-process bus for embedded mode: bounded tiered queues per topic and group."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from avatarflow.bus.base import Bus, Delivery
from avatarflow.contracts import messages as m

Entry = tuple[m.Message, int]  # a message and the barge-in turn it belongs to


class TieredQueue:
    """A bounded FIFO where urgent messages jump ahead and an interrupt purges its session."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._urgent: deque[Entry] = deque()
        self._rest: deque[Entry] = deque()
        self._changed = asyncio.Condition()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._rest)

    async def put(self, msg: m.Message, turn: int = 0) -> None:
        async with self._changed:
            if msg.tier is m.Tier.URGENT:
                if isinstance(msg, m.Interrupt):
                    self._purge(msg.session_id)
                self._urgent.append((msg, turn))
            else:
                await self._changed.wait_for(lambda: len(self._rest) < self.maxsize)
                self._rest.append((msg, turn))
            self._changed.notify_all()

    async def get(self) -> m.Message:
        return (await self.take(1))[0][0]

    async def take(self, limit: int) -> list[Entry]:
        """Waits for one entry, then takes up to ``limit`` (urgent first)."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._urgent or self._rest))
            out: list[Entry] = []
            while len(out) < limit and (self._urgent or self._rest):
                out.append(self._urgent.popleft() if self._urgent else self._rest.popleft())
            self._changed.notify_all()
            return out

    def _purge(self, session_id: str) -> None:
        kept = [x for x in self._rest
                if x[0].session_id != session_id or x[0].tier is not m.Tier.DATA]
        self.dropped += len(self._rest) - len(kept)
        self._rest = deque(kept)


class MemoryBus(Bus):
    """Topics as tiered queues, one per (topic, group), created on first use. A message keeps
    the turn it was published with, and whatever a stage makes of it inherits that turn, so
    the session front tells the frames of a cut-off turn from the new ones as on Redis."""

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
            await queue.put(msg, turn)

    async def receive(self, topic: str, group: str) -> Delivery:
        return (await self.receive_batch(topic, group, 1))[0]

    async def receive_batch(self, topic: str, group: str, limit: int) -> list[Delivery]:
        return [Delivery(msg, topic, group, turn=turn)
                for msg, turn in await self._queue(topic, group).take(max(1, limit))]

    def backlog(self, topic: str, group: str) -> int:
        return len(self._queue(topic, group))

    async def commit(self, delivery: Delivery, topic: str | None,
                     outputs: Sequence[m.Message], state: bytes | None = None,
                     *, ended: bool = False) -> bool:
        if topic is not None:
            for out in outputs:
                await self.publish(topic, out, turn=delivery.turn)
        return True
