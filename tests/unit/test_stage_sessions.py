"""Session lifetime belongs to the runner: a stage only opens a session's state and transforms
its frames; the runner ends the session when its audio ends, when it fails, and when another
replica has taken it over, so a replica never keeps a session it no longer owns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from avatarflow.bus.base import Commit, Delivery
from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m
from avatarflow.dev.testing import of_type, run_test
from avatarflow.runtime.registry import StageSpec
from avatarflow.runtime.runner import StageRunner
from avatarflow.runtime.stage import Stage

SPEC = StageSpec("counter", "none", "in", "out")


class Counter(Stage[list[int], m.AudioFeatures]):
    """Numbers each session's frames; on EndOfAudio reports how many it saw."""

    name = "counter"
    accepts = m.AudioFeatures

    def start(self, msg: m.SessionStart) -> list[int]:
        return []

    def frame(self, session: list[int], msg: m.AudioFeatures) -> list[m.Message]:
        session.append(msg.index)
        return [m.AudioFeatures(session_id=msg.session_id, index=len(session) - 1,
                                features=msg.features)]

    def finish(self, session: list[int], msg: m.EndOfAudio) -> list[m.Message]:
        return [m.AudioFeatures(session_id=msg.session_id, index=len(session),
                                features=np.zeros(1, np.float32))]


class Taken(MemoryBus):
    """The in-memory bus, told that another replica now owns some sessions."""

    def __init__(self, taken: set[str]) -> None:
        super().__init__()
        self.taken = taken

    async def commit_many(self, topic: str | None, commits: Sequence[Commit]) -> list[bool]:
        oks = await super().commit_many(topic, commits)
        return [ok and c.delivery.msg.session_id not in self.taken
                for c, ok in zip(commits, oks, strict=True)]


def _frame(sid: str, i: int) -> m.AudioFeatures:
    return m.AudioFeatures(session_id=sid, index=i, features=np.zeros(1, np.float32))


def _handle(bus: MemoryBus, stage: Stage, msgs: list[m.Message]) -> list[m.Message]:
    bus.subscribe("out", "sink")
    runner = StageRunner(SPEC, stage, bus, batch=len(msgs))

    async def main() -> list[m.Message]:
        await runner.handle([Delivery(x, "in", "counter-workers") for x in msgs])
        q = bus._queue("out", "sink")
        return [await q.get() for _ in range(len(q))]

    return asyncio.run(main())


def test_the_end_of_audio_flushes_passes_on_and_ends_the_session() -> None:
    stage = Counter()
    out = _handle(MemoryBus(), stage, [m.SessionStart(session_id="a"), _frame("a", 7),
                                       _frame("a", 9), m.EndOfAudio(session_id="a")])
    assert [type(x).__name__ for x in out] == ["SessionStart", "AudioFeatures", "AudioFeatures",
                                               "AudioFeatures", "EndOfAudio"]
    assert [x.index for x in of_type(out, m.AudioFeatures)] == [0, 1, 2]
    assert stage.session_count == 0
    (err,) = run_test(stage, [_frame("a", 10)])
    assert isinstance(err, m.SessionError) and err.category == "not_found"


def test_a_session_another_replica_took_is_forgotten_here() -> None:
    stage = Counter()
    _handle(Taken({"b"}), stage, [m.SessionStart(session_id="a"), m.SessionStart(session_id="b"),
                                  _frame("a", 0), _frame("b", 0)])
    assert stage.session_count == 1 and stage.snapshot("b") is None
    assert stage.snapshot("a") is not None


def test_controls_for_an_unknown_session_pass_on_and_its_frames_are_not_found() -> None:
    out = run_test(Counter(), [m.Interrupt(session_id="x"), m.ControlUpdate(session_id="x"),
                               _frame("x", 0)])
    assert isinstance(out[0], m.Interrupt) and isinstance(out[1], m.ControlUpdate)
    assert isinstance(out[2], m.SessionError) and "'x'" in out[2].message
