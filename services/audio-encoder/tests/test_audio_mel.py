"""The "mel" engine: per-frame features that respond to speech, silence, pitch and noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avatarflow.contracts.errors import InvalidInput
from avatarflow_audio_encoder.engines import create
from avatarflow_audio_encoder.engines.mel import MelEngine

ENGINE = MelEngine()
ENERGY, VOICING, ZCR, FLUX = 40, 41, 42, 43


def _pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _speech_like(sr: int, seconds: float, f0: float = 150.0) -> np.ndarray:
    """Harmonic tone with a syllable-rate envelope and a little breath noise."""
    t = np.arange(int(sr * seconds)) / sr
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20) if f0 * k < 7000)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    noise = np.random.default_rng(0).standard_normal(t.size)
    return _pcm(0.3 * voiced * envelope + 0.01 * noise)


def _features(pcm: np.ndarray, sr: int, fps: float = 30.0, chunk: int | None = None,
              engine: MelEngine = ENGINE) -> np.ndarray:
    s = engine.open_session(sr, fps)
    frames: list[np.ndarray] = []
    step = chunk or max(pcm.size, 1)
    for i in range(0, pcm.size, step):
        frames += s.push(pcm[i:i + step])
    frames += s.flush()
    return np.stack(frames) if frames else np.zeros((0, engine.dim), np.float32)


def test_layout_names_every_dimension() -> None:
    engine = create("mel", n_mels=40)
    assert engine.dim == 44
    assert engine.layout == "mel40+energy_db+voicing+zcr+flux"
    assert engine.names == ("energy_db", "voicing", "zcr", "flux")
    f = _features(_speech_like(16000, 0.5), 16000, engine=engine)
    assert f.dtype == np.float32 and f.shape[1] == engine.dim


@pytest.mark.parametrize("sr", [16000, 44100, 48000, 8000])
def test_20ms_chunks_and_whole_input_give_identical_features(sr: int) -> None:
    pcm = _speech_like(sr, 1.5)
    whole = _features(pcm, sr)
    assert np.array_equal(_features(pcm, sr, chunk=sr // 50), whole)
    rng = np.random.default_rng(sr)
    s, frames, i = ENGINE.open_session(sr, 30.0), [], 0
    while i < pcm.size:
        n = int(rng.integers(1, 2000))
        frames += s.push(pcm[i:i + n])
        i += n
    assert np.array_equal(np.stack(frames + s.flush()), whole)


@pytest.mark.parametrize("sr", [16000, 44100, 22050])
@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0, 29.97])
@pytest.mark.parametrize("seconds", [0.01, 0.5, 1.37, 2.0])
def test_frame_count_matches_duration_times_fps(sr: int, fps: float, seconds: float) -> None:
    n = int(sr * seconds)
    count = len(_features(np.zeros(n, np.int16), sr, fps, chunk=sr // 50))
    assert count == math.ceil(round(n / sr * fps, 6))
    assert abs(count - n / sr * fps) < 1.0


def test_silence_is_valid_and_quiet() -> None:
    f = _features(np.zeros(16000, np.int16), 16000)
    assert np.all(f[:, ENERGY] == -100.0)
    assert np.all(f[:, VOICING] == 0.0) and np.all(f[:, ZCR] == 0.0)
    assert np.all(f[:, FLUX] == 0.0)
    assert np.all(f[:, :40] == -10.0)  # log10 floor


def test_energy_is_high_in_speech_and_floored_in_silence() -> None:
    pcm = np.concatenate((_speech_like(16000, 1.0), np.zeros(16000, np.int16)))
    f = _features(pcm, 16000, chunk=320)
    speech, silence = f[2:28], f[32:]
    assert speech[:, ENERGY].mean() > -25.0
    assert np.all(silence[:, ENERGY] == -100.0)
    assert speech[:, :40].mean() > silence[:, :40].mean() + 5.0


def test_voicing_is_high_for_a_harmonic_tone_and_low_for_noise() -> None:
    t = np.arange(32000) / 16000
    tone = _pcm(0.2 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)))
    noise = _pcm(0.2 * np.random.default_rng(1).standard_normal(t.size))
    assert _features(tone, 16000)[2:-2, VOICING].min() > 0.9
    assert _features(noise, 16000)[2:-2, VOICING].max() < 0.35
    assert _features(noise, 16000)[2:-2, ZCR].mean() > _features(tone, 16000)[2:-2, ZCR].mean()


def test_flux_marks_an_onset() -> None:
    pcm = np.concatenate((np.zeros(8000, np.int16), _speech_like(16000, 0.5)))
    flux = _features(pcm, 16000)[:, FLUX]
    assert flux[:14].max() == 0.0 and flux[15:17].max() > 1.0


@pytest.mark.parametrize("fps", [30.0, 60.0])
@pytest.mark.parametrize("sr", [16000, 44100])
def test_a_frame_is_ready_within_two_frames_of_its_end(sr: int, fps: float) -> None:
    pcm = _speech_like(sr, 1.0)
    s = ENGINE.open_session(sr, fps)
    got = s.push(pcm[:math.ceil(3 * sr / fps)])  # end of frame 0 plus two frames
    assert len(got) >= 1


def test_16k_look_ahead_at_30fps_is_94_samples() -> None:
    s = ENGINE.open_session(16000, 30.0)
    assert s.push(np.zeros(533 + 93, np.int16)) == []
    assert len(s.push(np.zeros(1, np.int16))) == 1


def test_memory_stays_bounded() -> None:
    s = ENGINE.open_session(48000, 30.0)
    pcm = _speech_like(48000, 5.0)
    for i in range(0, pcm.size, 960):
        s.push(pcm[i:i + 960])
    assert s._buf.size < 2000  # a frame and its reach, not the stream


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="fps"):
        ENGINE.open_session(16000, 0.5)
    with pytest.raises(InvalidInput, match="sample rate 4000 Hz"):
        ENGINE.open_session(4000, 30.0)
    with pytest.raises(InvalidInput, match="unknown audio-encoder engine 'nope'"):
        create("nope")
