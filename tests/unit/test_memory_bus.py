"""The in-process bus: order, urgent control first, barge-in purge, back-pressure."""

from __future__ import annotations

import asyncio

import numpy as np

from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m


def _chunk(sid: str, i: int) -> m.AudioChunk:
    return m.AudioChunk(session_id=sid, index=i, sample_rate=16000, pcm=np.zeros(4, np.int16))


async def _drain(bus: MemoryBus, n: int) -> list[m.Message]:
    return [(await bus.receive("t", "g")).msg for _ in range(n)]


def test_data_keeps_order_and_urgent_control_overtakes() -> None:
    async def main() -> list[m.Message]:
        bus = MemoryBus()
        bus.subscribe("t", "g")
        for i in range(3):
            await bus.publish("t", _chunk("a", i))
        await bus.publish("t", m.ControlUpdate(session_id="a"))
        return await _drain(bus, 4)

    got = asyncio.run(main())
    assert isinstance(got[0], m.ControlUpdate)
    assert [x.index for x in got[1:]] == [0, 1, 2]


def test_interrupt_drops_only_that_sessions_queued_data() -> None:
    async def main() -> list[m.Message]:
        bus = MemoryBus()
        bus.subscribe("t", "g")
        for i in range(3):
            await bus.publish("t", _chunk("a", i))
            await bus.publish("t", _chunk("b", i))
        await bus.publish("t", m.EndOfAudio(session_id="a", index=3))
        await bus.publish("t", m.Interrupt(session_id="a"))
        return await _drain(bus, 5)

    got = asyncio.run(main())
    assert isinstance(got[0], m.Interrupt)
    assert [(x.session_id, x.index) for x in got[1:4]] == [("b", 0), ("b", 1), ("b", 2)]
    assert isinstance(got[4], m.EndOfAudio)  # ordered control is kept


def test_every_group_gets_every_message_and_publish_waits_when_full() -> None:
    async def main() -> tuple[int, bool]:
        bus = MemoryBus(maxsize=2)
        bus.subscribe("t", "g")
        bus.subscribe("t", "h")
        await bus.publish("t", _chunk("a", 0))
        await bus.publish("t", _chunk("a", 1))
        blocked = asyncio.create_task(bus.publish("t", _chunk("a", 2)))
        await asyncio.sleep(0.01)
        was_blocked = not blocked.done()
        await bus.receive("t", "g")
        await bus.receive("t", "h")
        await asyncio.wait_for(blocked, 1)
        return len(await _drain(bus, 2)), was_blocked

    n, was_blocked = asyncio.run(main())
    assert was_blocked and n == 2
