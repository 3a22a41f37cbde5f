"""A session snapshotted after any message continues on a fresh replica bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_audio_stage import _chunks

from avatarflow.contracts import messages as m
from avatarflow.dev.testing import run_test
from avatarflow.runtime.state import StateError
from avatarflow_audio_encoder import build_stage

MAX_SNAPSHOT = 10_000  # bytes: saved after every message, so it must stay small


def _messages(sr: int, fps: float) -> list[m.Message]:
    chunks = _chunks("s", 1.0, sr)
    return [m.SessionStart(session_id="s", sample_rate=sr, fps=fps), *chunks[:20],
            m.Interrupt(session_id="s", index=9), *chunks[20:], m.EndOfAudio(session_id="s")]


def _same(a: list[m.Message], b: list[m.Message]) -> bool:
    def fields(x: m.Message) -> list:
        return [getattr(x, f) for f in x.__dataclass_fields__]

    return len(a) == len(b) and all(
        type(x) is type(y) and all(np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v
                                   for u, v in zip(fields(x), fields(y), strict=True))
        for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("sr", "fps"), [(16000, 30.0), (44100, 25.0), (48000, 60.0)])
def test_restored_session_continues_exactly(sr: int, fps: float) -> None:
    msgs = _messages(sr, fps)
    whole = run_test(build_stage(), msgs)
    for k in (1, 7, 20, 21, 22, len(msgs) - 2, len(msgs) - 1):
        first = build_stage()
        out = run_test(first, msgs[:k])
        data = first.snapshot("s")
        assert data is not None and len(data) < MAX_SNAPSHOT, (k, len(data))
        fresh = build_stage()  # another replica: its own engine, nothing shared
        fresh.restore("s", data)
        out += run_test(fresh, msgs[k:])
        assert _same(out, whole), f"diverged after a snapshot at message {k}"


def test_snapshot_of_an_unknown_or_ended_session_is_none() -> None:
    stage = build_stage()
    assert stage.snapshot("s") is None
    run_test(stage, _messages(16000, 30.0))
    assert stage.snapshot("s") is None and stage.session_count == 0


def test_foreign_state_is_refused() -> None:
    with pytest.raises(StateError, match="not allowed"):
        build_stage().restore("s", b"\x80\x04\x95\x0f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os"
                                   b"\x94\x8c\x06system\x94\x93\x94.")
