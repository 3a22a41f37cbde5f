"""The session front's audio packing against the real engines: held audio never makes a frame
later than chunk-by-chunk feeding would, and about one message goes out per frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatarflow.session.packing import AudioPacker
from avatarflow_audio_encoder.engines.mel import MelEngine
from avatarflow_audio_encoder.engines.pcm import PCMEngine
from avatarflow_audio_encoder.resample import Resampler


def _speech(rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (8000 * tone + 800 * rng.standard_normal(t.size)).astype(np.int16)


def _made_at(engine, rate: int, fps: float, chunks: list[np.ndarray],
             packer: AudioPacker | None) -> tuple[dict[int, int], int, list[np.ndarray]]:
    """Frame index -> the client chunk after which it was made; messages sent; features."""
    stream = engine.open_session(rate, fps)
    made: dict[int, int] = {}
    features: list[np.ndarray] = []
    held: list[np.ndarray] = []
    end = sent = 0
    for k, chunk in enumerate(chunks):
        end += chunk.size
        held.append(chunk)
        if packer is not None and not packer.due(end):
            continue
        out = stream.push(np.concatenate(held))
        held, sent = [], sent + 1
        if packer is not None:
            packer.sent(end)
        for f in out:
            made[len(features)] = k
            features.append(f)
    if held:
        features += stream.push(np.concatenate(held))
        sent += 1
    return made, sent, features + stream.flush()


@pytest.mark.parametrize("engine_name", ["mel", "pcm"])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_no_frame_comes_later_and_one_message_per_frame(engine_name, rate, fps):
    engine = MelEngine(fps=fps) if engine_name == "mel" else PCMEngine(fps=fps)
    pcm = _speech(rate, 2.0, seed=rate)
    for chunk_ms in (10, 20, 23, 40):
        step = rate * chunk_ms // 1000
        chunks = [pcm[i:i + step] for i in range(0, pcm.size, step)]
        eager, eager_sent, eager_features = _made_at(engine, rate, fps, chunks, None)
        made, sent, features = _made_at(engine, rate, fps, chunks,
                                         AudioPacker(rate, fps, engine_name))
        assert made == eager, (chunk_ms, {i: (made.get(i), k) for i, k in eager.items()
                                          if made.get(i) != k})
        for a, b in zip(features, eager_features, strict=True):
            np.testing.assert_array_equal(a, b)
        # A message per frame (plus one where a piece ends within the slack of a frame's
        # point), never more than the client's chunks.
        frames = len(eager)
        assert sent <= min(eager_sent, math.ceil(frames * 1.1) + 2), (chunk_ms, sent, frames)


def test_the_resampler_reach_matches_the_packers():
    # packing's lead adds the resampler's reach in input samples: taps per side (+1 for a
    # rounded phase), computed from the same zero-crossing count
    from avatarflow.session.packing import ENCODER_RATE, lead_samples
    for rate in (8000, 11025, 22050, 24000, 44100, 48000):
        r = Resampler(rate)
        assert lead_samples(0.0, rate, 30.0) == r.taps_per_side + 1
    assert lead_samples(0.0, ENCODER_RATE, 30.0) == 0


def test_a_wrong_lead_costs_latency_not_content():
    rate, fps = 16000, 30.0
    engine = PCMEngine(fps=fps)
    pcm = _speech(rate, 1.0, seed=7)
    chunks = [pcm[i:i + 320] for i in range(0, pcm.size, 320)]
    _, _, eager_features = _made_at(engine, rate, fps, chunks, None)
    made, _, features = _made_at(engine, rate, fps, chunks, AudioPacker(rate, fps, 30.0))
    assert len(features) == len(eager_features)
    for a, b in zip(features, eager_features, strict=True):
        np.testing.assert_array_equal(a, b)
