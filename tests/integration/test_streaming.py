"""Streaming equivalence: the same motion whether the audio arrives whole or in 20 ms chunks."""

from __future__ import annotations

import numpy as np

from avatarflow.contracts import messages as m
from avatarflow.dev.testing import of_type, run_test
from avatarflow_audio_encoder import build_stage as build_encoder
from avatarflow_motion_gen import build_stage as build_motion

TENSORS = ("rotation", "translation", "expression", "head_template", "head_offset", "body",
           "hands")


def _motion(pcm: np.ndarray, rate: int, chunk: int) -> list[m.MotionFrame]:
    encoder, motion = build_encoder("mel"), build_motion("signal")
    msgs: list[m.Message] = [m.SessionStart(session_id="s", sample_rate=rate, fps=30.0)]
    msgs += [m.AudioChunk(session_id="s", index=i, sample_rate=rate, pcm=pcm[s:s + chunk])
             for i, s in enumerate(range(0, pcm.size, chunk))]
    msgs.append(m.EndOfAudio(session_id="s"))
    return of_type(run_test(motion, run_test(encoder, msgs)), m.MotionFrame)


def test_whole_and_20ms_chunks_give_the_same_motion(inputs: dict) -> None:
    pcm, rate = inputs["pcm"], inputs["rate"]
    whole = _motion(pcm, rate, pcm.size)
    chunked = _motion(pcm, rate, int(0.02 * rate))
    assert len(whole) == len(chunked) > 0
    assert [f.index for f in whole] == list(range(len(whole)))
    worst = max(float(np.max(np.abs(getattr(a, t) - getattr(b, t))))
                for a, b in zip(whole, chunked, strict=True) for t in TENSORS)
    assert worst <= 1e-4
    assert max(abs(a.scale - b.scale) for a, b in zip(whole, chunked, strict=True)) <= 1e-4
