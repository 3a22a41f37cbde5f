"""The resampler: any rate in, 16 kHz out, the same whatever the chunking."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow.contracts.errors import InvalidInput
from avatarflow_audio_encoder.resample import Resampler


def _run(sr: int, x: np.ndarray, sizes: list[int] | None = None) -> np.ndarray:
    r = Resampler(sr)
    if sizes is None:
        return np.concatenate((r.push(x), r.flush()))
    parts, i = [], 0
    for n in sizes:
        parts.append(r.push(x[i:i + n]))
        i += n
    parts.append(r.push(x[i:]))
    parts.append(r.flush())
    return np.concatenate(parts)


def _tone(sr: int, hz: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * hz * np.arange(int(sr * seconds)) / sr)


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 8000, 16000, 11025, 96000])
def test_random_chunks_give_bit_identical_output(sr: int) -> None:
    rng = np.random.default_rng(sr)
    x = rng.standard_normal(int(sr * 1.3))
    whole = _run(sr, x)
    sizes = [int(n) for n in rng.integers(1, sr // 25, size=60)] + [1] * 50
    assert np.array_equal(_run(sr, x, sizes), whole)
    assert np.array_equal(_run(sr, x, [sr // 50] * 64), whole)  # 20 ms chunks
    assert whole.size == -(-x.size * 16000 // sr)


def test_16k_passes_through_unchanged() -> None:
    x = np.random.default_rng(0).standard_normal(5000)
    assert np.array_equal(_run(16000, x, [320] * 10), x)


def test_1khz_sine_at_44k1_stays_1khz_with_its_amplitude() -> None:
    y = _run(44100, _tone(44100, 1000.0))
    ideal = _tone(16000, 1000.0)
    assert y.size == 16000
    mid = slice(400, -400)  # away from the zero padding at both ends
    assert np.abs(y[mid] - ideal[mid]).max() < 1e-3  # right frequency, amplitude and timing
    spectrum = np.abs(np.fft.rfft(y[mid] * np.hanning(y[mid].size)))
    peak_hz = np.argmax(spectrum) * 16000 / y[mid].size
    assert abs(peak_hz - 1000.0) < 2.0


@pytest.mark.parametrize(("sr", "hz"), [(44100, 9000.0), (44100, 12000.0), (48000, 8500.0),
                                        (48000, 20000.0), (22050, 10000.0)])
def test_content_above_8khz_does_not_alias(sr: int, hz: float) -> None:
    y = _run(sr, _tone(sr, hz))[400:-400]
    rms_db = 20 * np.log10(np.sqrt(np.mean(y ** 2)) / (0.5 / np.sqrt(2)))
    assert rms_db < -60.0


def test_8k_upsampling_keeps_a_300hz_tone() -> None:
    y = _run(8000, _tone(8000, 300.0))[400:-400]
    assert np.abs(y - _tone(16000, 300.0)[400:-400]).max() < 1e-3


@pytest.mark.parametrize("sr", [7999, 192001, 0])
def test_unsupported_rates_are_rejected_by_name(sr: int) -> None:
    with pytest.raises(InvalidInput, match=f"sample rate {sr} Hz"):
        Resampler(sr)
