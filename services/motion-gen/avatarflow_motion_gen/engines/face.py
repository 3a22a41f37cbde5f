"""Face sub-stage of the signal engine: speech activity, mouth, blinks and brows.

Everything is a per-frame recursive update over a few floats, so the result does not depend on
how frames are grouped and memory stays constant.
"""

from __future__ import annotations

import math

import numpy as np

from avatarflow.contracts.motion import EXPR, EXPRESSIONS

from .common import decay, follow
from .params import SignalParams


class SpeechTracker:
    """Speech activity (0..1) and stressed syllables from energy in dBFS, causally."""

    def __init__(self, p: SignalParams, fps: float) -> None:
        self.p = p
        self.floor = p.floor_init_db
        self.peak = p.peak_init_db
        self.level = 0.0  # recent speech level (smoothed activity)
        self._floor_fall = follow(fps, p.floor_fall_s)
        self._floor_rise = follow(fps, 2.0)
        self._floor_rise_max = p.floor_rise_db_s / fps
        self._peak_attack = follow(fps, p.peak_attack_s)
        self._peak_decay = p.peak_decay_db_s / fps
        self._level = follow(fps, p.speech_level_s)
        self._gap = max(1, round(p.syllable_gap_s * fps))
        self.reset()

    def reset(self) -> None:
        """Forgets the syllable in progress; the floor and peak describe the microphone, kept."""
        self._prev = -100.0
        self._valley = -100.0
        self._rising = False
        self._since = self._gap
        self._nucleus: float | None = None  # running level of syllable nuclei (dB)

    def update(self, e: float) -> tuple[float, float]:
        """Takes one frame's energy; returns (activity, stress of a nucleus just found or 0)."""
        p = self.p
        if e < self.floor:
            self.floor += self._floor_fall * (e - self.floor)
        else:
            self.floor += min(self._floor_rise * (e - self.floor), self._floor_rise_max)
        floor = max(self.floor, p.floor_min_db)
        if e > self.peak:
            self.peak += self._peak_attack * (e - self.peak)
        else:
            self.peak -= self._peak_decay
        self.peak = max(self.peak, floor + p.min_range_db)
        gate = max(floor + p.gate_db, self.peak - p.range_db)
        activity = min(max((e - gate) / (self.peak - gate), 0.0), 1.0)
        self.level += self._level * (activity - self.level)
        return activity, self._syllable(e, gate)

    def _syllable(self, e: float, gate: float) -> float:
        """Finds energy maxima one frame late; stress grows with height over recent nuclei."""
        p = self.p
        stress = 0.0
        self._since += 1
        if e > self._prev + 0.5:
            self._rising = True
        elif self._rising and e < self._prev - 0.5:
            self._rising = False
            top = self._prev
            if top - self._valley >= p.syllable_prominence_db and top > gate \
                    and self._since >= self._gap:
                self._since = 0
                if self._nucleus is None:
                    self._nucleus = top
                emphasis = top - self._nucleus - p.stress_db
                stress = min(max(emphasis / p.stress_span_db, 0.0), 1.0)
                self._nucleus += p.syllable_level_weight * (top - self._nucleus)
            self._valley = e
        self._valley = min(self._valley, e)
        self._prev = e
        return stress


class Blinker:
    """Both eyes close together every few seconds; sometimes twice in a row."""

    def __init__(self, p: SignalParams, fps: float, first: float) -> None:
        self.p, self.fps = p, fps
        self._countdown = self._frames(p.blink_first_s, first)
        self._profile: tuple[float, ...] = ()
        self._pos = 0
        self._doubled = False

    def _frames(self, span: tuple[float, float], u: float) -> int:
        return max(1, round(self.fps * (span[0] + u * (span[1] - span[0]))))

    @staticmethod
    def profile(n: int) -> tuple[float, ...]:
        """Fast close, short hold, slower open, sampled at ``n`` frames."""
        out = []
        for i in range(n):
            x = (i + 0.5) / n
            if x < 0.25:
                s = x / 0.25
                out.append(s * s * (3.0 - 2.0 * s))
            elif x <= 0.45:
                out.append(1.0)
            else:
                out.append((1.0 - (x - 0.45) / 0.55) ** 1.5)
        return tuple(out)

    def update(self, u_gap: float, u_double: float, u_len: float) -> float:
        """Eyelid closure 0..1 for this frame; three uniforms are consumed every frame."""
        if self._pos < len(self._profile):
            value = self._profile[self._pos]
            self._pos += 1
            if self._pos == len(self._profile):
                double = not self._doubled and u_double < self.p.double_blink_p
                self._doubled = double
                gap = self.p.double_blink_gap_s if double else self.p.blink_gap_s
                self._countdown = self._frames(gap, u_gap)
            return value
        self._countdown -= 1
        if self._countdown > 0:
            return 0.0
        n = max(3, self._frames(self.p.blink_duration_s, u_len))
        self._profile, self._pos = self.profile(n), 1
        return self._profile[0]


class Face:
    """Audio-driven expression coefficients before controls (intensity, emotion)."""

    def __init__(self, p: SignalParams, fps: float, first_blink: float) -> None:
        self.p = p
        self.speech = SpeechTracker(p, fps)
        self.blinks = Blinker(p, fps, first_blink)
        self.jaw = 0.0
        self.shape = 0.0  # > 0 wide, < 0 round
        self.brow = 0.0
        self._brow_env = 0.0
        self._tilt_mean: float | None = None
        self._jaw = (follow(fps, p.jaw_attack_s), follow(fps, p.jaw_release_s),
                     follow(fps, p.jaw_close_s))
        self._shape = follow(fps, p.shape_s)
        self._tilt = follow(fps, p.shape_mean_s)
        self._brow = (follow(fps, p.brow_attack_s), decay(fps, p.brow_decay_s))

    def reset_audio(self) -> None:
        """Barge-in: the syllable in progress is dropped; the mouth relaxes by its own filter."""
        self.speech.reset()

    def update(self, energy: float, voicing: float | None, low: float, high: float,
               u: np.ndarray) -> tuple[np.ndarray, float, float]:
        """One frame -> (E coefficients, activity, stress). ``low``/``high``: mean log10 mel."""
        p = self.p
        activity, stress = self.speech.update(energy)
        target = p.jaw_max * activity
        if voicing is not None:
            target *= 1.0 - p.voicing_weight * (1.0 - min(max(voicing, 0.0), 1.0))
        attack, release, close = self._jaw
        rate = attack if target > self.jaw else (release if activity > 0.0 else close)
        self.jaw += rate * (target - self.jaw)

        tilt = high - low
        shape = 0.0
        if activity > 0.0:
            if self._tilt_mean is None:
                self._tilt_mean = tilt
            self._tilt_mean += self._tilt * activity * (tilt - self._tilt_mean)
            shape = p.shape_max * activity * math.tanh(p.shape_gain * (tilt - self._tilt_mean))
        self.shape += self._shape * (shape - self.shape)

        attack, keep = self._brow
        self._brow_env = max(self._brow_env * keep, p.brow_gain * stress)
        self.brow += attack * (self._brow_env - self.brow)

        blink = self.blinks.update(float(u[0]), float(u[1]), float(u[2]))
        e = np.zeros(len(EXPRESSIONS))
        e[EXPR["jaw_open"]] = self.jaw
        e[EXPR["mouth_wide"]] = max(self.shape, 0.0)
        e[EXPR["mouth_round"]] = max(-self.shape, 0.0)
        e[EXPR["blink_left"]] = e[EXPR["blink_right"]] = blink
        e[EXPR["brow_raise"]] = self.brow
        return e, activity, stress
