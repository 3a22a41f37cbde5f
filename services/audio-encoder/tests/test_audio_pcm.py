"""The "pcm" engine: each video frame's 16 kHz samples, passed on for motion engines that run
their own audio model (joyvasa), whatever the chunking and input rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.dev.testing import of_type, run_test
from avatarflow_audio_encoder import build_stage
from avatarflow_audio_encoder.engines import create


def _pcm(rate: int, seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(rate * seconds)) * 3000).astype(np.int16)


def _run(rate: int, pcm: np.ndarray, chunk: int, fps: float = 30.0) -> list[np.ndarray]:
    s = create("pcm").open_session(rate, fps)
    out: list[np.ndarray] = []
    for i in range(0, pcm.size, chunk):
        out += s.push(pcm[i:i + chunk])
    return out + s.flush()


@pytest.mark.parametrize("rate", [16000, 48000])
def test_frames_carry_the_16k_audio_of_their_span_for_any_chunking(rate: int) -> None:
    pcm = _pcm(rate, 1.01)
    whole, small = _run(rate, pcm, pcm.size), _run(rate, pcm, rate // 50)
    assert len(whole) == len(small) == math.ceil(1.01 * 30)
    assert all(np.array_equal(a, b) for a, b in zip(whole, small, strict=True))
    assert {len(f) for f in whole[:-1]} == {533, 534}
    if rate == 16000:  # 16 kHz passes through untouched
        np.testing.assert_array_equal(np.concatenate(whole), pcm / np.float32(32768))


def test_stage_emits_one_pcm16k_vector_per_frame() -> None:
    pcm = _pcm(16000, 0.5)
    start = m.SessionStart(session_id="p", fps=25.0, sample_rate=16000, controls=Controls())
    chunks = [m.AudioChunk(session_id="p", index=i, pcm=pcm[k:k + 320], sample_rate=16000)
              for i, k in enumerate(range(0, pcm.size, 320))]
    out = of_type(run_test(build_stage("pcm"), [start, *chunks]), m.AudioFeatures)
    assert [f.index for f in out] == list(range(12))  # the 13th waits for its last sample
    assert all(f.layout == "pcm16k" and f.features.shape == (640,) for f in out)
