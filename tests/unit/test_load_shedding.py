"""Load shedding in the stage runner: a stage that keeps no history and is more than
``shed_after_s`` past a frame's due time while a newer frame of the same session waits skips it
(or, the refiner, passes it on unrefined), so it catches up instead of working through a queue.
The newest frame of a session is never shed, frames not yet due are never shed, and stages with
history never shed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import numpy as np

from avatarflow.bus.base import Delivery
from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import StageSpec
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.stage import Stage

SPEC = StageSpec("worker", "none", "in", "out")


class Worker(Stage):
    name = "worker"
    drops_late = True

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[int] = []

    def process(self, msg: m.Message) -> Iterable[m.Message]:
        if isinstance(msg, m.AudioFeatures):
            self.ran.append(msg.index)
        return (msg,)


class HistoryWorker(Worker):
    drops_late = False


class Waiting(MemoryBus):
    """The in-memory bus, told which sessions have a newer frame waiting."""

    def __init__(self, newer: set[str]) -> None:
        super().__init__()
        self.newer = newer

    def newer_waiting(self, delivery: Delivery) -> bool:
        return delivery.msg.session_id in self.newer


BUDGET_S = 0.5


def _delivery(sid: str, i: int, behind_s: float) -> Delivery:
    """A frame due ``behind_s`` ago (negative: due in the future, its audio came early)."""
    now = time.time()
    msg = m.AudioFeatures(session_id=sid, index=i, features=np.zeros(2, np.float32),
                          deadline=now - behind_s + BUDGET_S)
    return Delivery(msg, "in", "worker-workers", published_at=now - 0.01)


def _run(stage: Stage, bus: MemoryBus, batch: list[Delivery], shed_after_s: float = 0.1
         ) -> tuple[StageRunner, list[int]]:
    bus.subscribe("out", "sink")
    runner = StageRunner(SPEC, stage, bus, batch=len(batch), budget_s=BUDGET_S,
                         shed_after_s=shed_after_s)

    async def main() -> list[int]:
        await runner.handle(batch)
        q = bus._queue("out", "sink")
        return [(await q.get()).index for _ in range(len(q))]

    return runner, asyncio.run(main())


def test_a_stale_frame_with_a_newer_one_waiting_is_skipped() -> None:
    stage = Worker()
    runner, out = _run(stage, Waiting({"a"}), [_delivery("a", 0, 0.3), _delivery("b", 0, 0.3)])
    assert stage.ran == [0] and out == [0]  # b's frame ran: nothing newer of b waits
    assert runner.stats.shed == 1 and runner.stats.dropped == 1


def test_a_fresh_frame_runs_even_with_newer_ones_waiting() -> None:
    stage = Worker()
    runner, out = _run(stage, Waiting({"a"}), [_delivery("a", 0, 0.02)])
    assert stage.ran == [0] and out == [0] and runner.stats.shed == 0


def test_within_a_batch_only_the_newest_frame_of_a_session_survives() -> None:
    stage = Worker()
    batch = [_delivery("a", i, 0.3 - 0.03 * i) for i in range(4)]
    runner, out = _run(stage, Waiting(set()), batch)
    assert stage.ran == [3] and out == [3] and runner.stats.shed == 3


def test_frames_of_audio_sent_ahead_of_time_are_never_shed() -> None:
    """A client that sends its audio in a burst queues frames that are not due yet."""
    stage = Worker()
    runner, out = _run(stage, Waiting({"a"}), [_delivery("a", i, -2.0 + 0.03 * i)
                                               for i in range(4)])
    assert out == [0, 1, 2, 3] and runner.stats.shed == 0


def test_shedding_off_and_stages_with_history_run_everything() -> None:
    batch = [_delivery("a", i, 0.3) for i in range(3)]
    stage = Worker()
    _, out = _run(stage, Waiting({"a"}), batch, shed_after_s=0.0)
    assert out == [0, 1, 2]
    stage = HistoryWorker()
    _, out = _run(stage, Waiting({"a"}), [_delivery("a", i, 0.3) for i in range(3)])
    assert out == [0, 1, 2]
