"""Synthetic audio-feature sequences for motion-gen tests: voiced syllable bursts and pauses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAYOUT = "mel40+energy_db+voicing+zcr+flux"
MELS = 40
FPS = 30.0


@dataclass
class Speech:
    features: np.ndarray  # T x 44 float32
    envelope: np.ndarray  # T linear amplitude of the speech alone, 0 in pauses
    silent: np.ndarray  # T bool: inside a pause, at least 3 frames after the last speech
    tilt: np.ndarray  # T vowel colour: > 0 spread (/i/), < 0 rounded (/u/), 0 in pauses


def _frame(rng: np.random.Generator, db: float, voicing: float, tilt: float) -> np.ndarray:
    bands = np.linspace(0.0, 1.0, MELS)
    # Voiced speech: energy falls with frequency; ``tilt`` > 0 lifts the upper-mid bands (/i/),
    # < 0 the low bands (/u/). Silence: a flat noise spectrum.
    shape = -1.5 * bands + tilt * np.exp(-((bands - 0.6) / 0.15) ** 2) \
        - tilt * np.exp(-((bands - 0.15) / 0.1) ** 2)
    mel = db / 10.0 + voicing * shape + rng.normal(0.0, 0.05, MELS)
    zcr = 0.05 + 0.3 * (1.0 - voicing)
    flux = float(rng.uniform(0.0, 1.0))
    return np.concatenate([mel, [db, voicing, zcr, flux]]).astype(np.float32)


def speech(seconds: float, seed: int = 0, pause_db: float = -65.0,
           lead_silence_s: float = 0.5) -> Speech:
    """Words of 1-4 syllables (4-9 frames each, raised-cosine envelope, random loudness and
    vowel colour) separated by pauses of 0.3-0.9 s."""
    rng = np.random.default_rng(seed)
    total = int(seconds * FPS)
    env = np.zeros(total)
    tilt = np.zeros(total)
    t = int(lead_silence_s * FPS)
    while t < total:
        for _ in range(int(rng.integers(1, 5))):
            if t >= total:
                break
            n = int(rng.integers(4, 10))
            amp = 10 ** (rng.uniform(-28, -16) / 20.0)
            hump = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 1.5
            end = min(total, t + n)
            env[t:end] = amp * hump[: end - t]
            tilt[t:end] = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0)
            t = end + int(rng.integers(0, 3))  # short dips between syllables
        t += int(rng.integers(int(0.3 * FPS), int(0.9 * FPS)))
    noise = 10 ** (pause_db / 20.0)
    frames = []
    for i in range(total):
        level = env[i] + noise * (1.0 + 0.1 * rng.standard_normal())
        db = max(-100.0, 20.0 * np.log10(max(level, 1e-5)))
        voicing = float(np.clip(env[i] / (env[i] + 4 * noise), 0.0, 1.0)) * 0.9
        frames.append(_frame(rng, db, voicing, tilt[i]))
    speaking = env > 0
    since = np.full(total, 99)
    last = -99
    for i in range(total):
        if speaking[i]:
            last = i
        since[i] = i - last
    return Speech(np.stack(frames), env, (~speaking) & (since >= 3), tilt)


def silence(seconds: float, db: float = -100.0, seed: int = 0) -> np.ndarray:
    """T x 44 frames of silence (digital silence at -100 dBFS by default)."""
    rng = np.random.default_rng(seed)
    return np.stack([_frame(rng, db, 0.0, 0.0) for _ in range(int(seconds * FPS))])
