"""Head pose of the signal engine: seeded slow sway that grows with speech, jitter and nods."""

from __future__ import annotations

import math

import numpy as np

from .common import decay, follow
from .params import SignalParams


def _cascade_gain(a: float) -> float:
    """Standard deviation of two cascaded one-poles (weight ``a``) fed unit white noise."""
    h0 = h1 = 0.0
    total = 0.0
    for i in range(4096):
        h0 += a * ((1.0 if i == 0 else 0.0) - h0)
        h1 += a * (h0 - h1)
        total += h1 * h1
    return math.sqrt(total)


class HeadPose:
    """Rotation, translation and scale before ``pose_amplitude``; state is a few floats."""

    def __init__(self, p: SignalParams, fps: float, rng: np.random.Generator) -> None:
        self.p = p
        lo, hi = p.head_freq_hz
        # Rows: pitch, yaw, roll, lean; three incommensurate sinusoids per row.
        self._omega = 2.0 * math.pi * rng.uniform(lo, hi, size=(4, 3)) / fps
        self._phase = rng.uniform(0.0, 2.0 * math.pi, size=(4, 3))
        weight = rng.uniform(0.5, 1.0, size=(4, 3))
        self._weight = weight / weight.sum(axis=1, keepdims=True)
        self._amp = np.radians(np.asarray(p.head_deg, dtype=np.float64))
        self._jitter = np.zeros((2, 3))
        self._jitter_a = follow(fps, p.jitter_s)
        self._jitter_norm = math.radians(p.jitter_deg) / _cascade_gain(self._jitter_a)
        self._nod_env = 0.0
        self.nod = 0.0
        self._nod = (follow(fps, p.nod_attack_s), decay(fps, p.nod_decay_s))

    def update(self, n: int, level: float, stress: float,
               u: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Frame ``n`` -> (rotation 3, translation 3, scale); ``u``: 3 uniforms for jitter."""
        p = self.p
        waves = (self._weight * np.sin(self._omega * n + self._phase)).sum(axis=1)
        gain = p.head_idle + p.head_speech * level
        white = (u - 0.5) * math.sqrt(12.0)
        a = self._jitter_a
        self._jitter[0] += a * (white - self._jitter[0])
        self._jitter[1] += a * (self._jitter[0] - self._jitter[1])
        attack, keep = self._nod
        self._nod_env = max(self._nod_env * keep, stress)
        self.nod += attack * (self._nod_env - self.nod)

        rotation = self._amp * gain * waves[:3] + self._jitter_norm * level * self._jitter[1]
        rotation[0] += math.radians(p.nod_deg) * self.nod  # positive pitch tips the face down
        tx, ty = p.translation_gain
        translation = np.array([tx * rotation[1], ty * rotation[0], 0.0])
        return rotation, translation, 1.0 + p.lean * gain * float(waves[3])
