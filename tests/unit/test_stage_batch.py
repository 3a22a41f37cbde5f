"""Cross-session batching in the stage runner: consecutive frames of several sessions go through
``Stage.process_many`` in one call; control messages keep their order; a failing batch is retried
one by one so only the guilty session gets an error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.contracts.errors import InvalidInput
from avatarflow.runtime.stage import Stage, run_batch


def _frame(sid: str, i: int, value: float = 1.0) -> m.AudioFeatures:
    return m.AudioFeatures(session_id=sid, index=i, features=np.full(2, value, np.float32))


class Doubler(Stage[None, m.AudioFeatures]):
    """Doubles features of any session, no SessionStart needed; batches; a negative feature
    is bad input."""

    name = "doubler"
    accepts = m.AudioFeatures
    batches = True

    def __init__(self) -> None:
        super().__init__()
        self.batches_seen: list[list[tuple[str, int]]] = []

    def session(self, session_id: str) -> None:
        return None

    def frame(self, session: None, msg: m.AudioFeatures) -> list[m.Message]:
        return [self._double(msg)]

    def frames(self, items: Sequence[tuple[None, m.AudioFeatures]]) -> list[list[m.Message]]:
        self.batches_seen.append([(x.session_id, x.index) for _, x in items])
        return [[self._double(x)] for _, x in items]

    @staticmethod
    def _double(msg: m.AudioFeatures) -> m.AudioFeatures:
        if (msg.features < 0).any():
            raise InvalidInput(f"frame {msg.index} has a negative feature")
        return m.AudioFeatures(session_id=msg.session_id, index=msg.index,
                               features=msg.features * 2)


def test_frames_of_several_sessions_run_as_one_batch_in_order() -> None:
    stage = Doubler()
    msgs = [_frame("a", 0), _frame("b", 0), _frame("a", 1), m.EndOfAudio(session_id="b"),
            _frame("a", 2), None, _frame("b", 1)]
    outs = run_batch(stage, msgs)
    assert stage.batches_seen == [[("a", 0), ("b", 0), ("a", 1)], [("a", 2), ("b", 1)]]
    assert [len(o) for o in outs] == [1, 1, 1, 1, 1, 0, 1]
    assert isinstance(outs[3][0], m.EndOfAudio)
    assert all(float(o[0].features[0]) == 2.0 for i, o in enumerate(outs) if i not in (3, 5))


def test_a_bad_frame_fails_only_its_session() -> None:
    stage = Doubler()
    outs = run_batch(stage, [_frame("a", 0), _frame("b", 0, -1.0), _frame("c", 0)])
    assert isinstance(outs[1][0], m.SessionError) and outs[1][0].session_id == "b"
    assert "negative feature" in outs[1][0].message
    assert [o[0].features[0] for o in (outs[0], outs[2])] == [2.0, 2.0]


def test_a_stage_that_does_not_batch_runs_one_at_a_time() -> None:
    stage = Stage()
    assert not stage.batches and Doubler().batches
    msgs = [_frame("a", 0), _frame("b", 0)]
    assert [o[0] for o in run_batch(stage, msgs)] == msgs
