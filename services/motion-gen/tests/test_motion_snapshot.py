"""A session snapshotted after any message continues on a fresh replica bit for bit."""

from __future__ import annotations

import numpy as np
from motion_gen_synth import speech
from test_motion_stage import SID, features, start

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.dev.testing import run_test
from avatarflow_motion_gen import build_stage

MAX_SNAPSHOT = 16_000  # bytes: saved after every message, so it must stay small


def _messages() -> list[m.Message]:
    feats = features(speech(4.0, seed=4).features)
    return [start(seed=7, emotion="happy"), *feats[:40],
            m.ControlUpdate(session_id=SID, controls=Controls(seed=8, emotion="sad",
                                                              pose_amplitude=1.5)),
            *feats[40:70], m.Interrupt(session_id=SID), *feats[70:],
            m.EndOfAudio(session_id=SID, index=len(feats))]


def _same(a: list[m.Message], b: list[m.Message]) -> bool:
    def fields(x: m.Message) -> list:
        return [getattr(x, f) for f in x.__dataclass_fields__]

    return len(a) == len(b) and all(
        type(x) is type(y) and all(np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v
                                   for u, v in zip(fields(x), fields(y), strict=True))
        for x, y in zip(a, b, strict=True))


def test_restored_session_continues_exactly() -> None:
    msgs = _messages()
    whole = run_test(build_stage(), msgs)
    for k in (1, 2, 25, 41, 42, 72, len(msgs) - 1):
        first = build_stage()
        out = run_test(first, msgs[:k])
        data = first.snapshot(SID)
        assert data is not None and len(data) < MAX_SNAPSHOT, (k, len(data))
        fresh = build_stage()  # another replica: its own engine, nothing shared
        fresh.restore(SID, data)
        out += run_test(fresh, msgs[k:])
        assert _same(out, whole), f"diverged after a snapshot at message {k}"


def test_ended_session_leaves_nothing_to_save() -> None:
    stage = build_stage()
    run_test(stage, _messages())
    assert stage.snapshot(SID) is None and stage.session_count == 0
