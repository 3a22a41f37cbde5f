"""One live joyvasa session: 16 kHz audio in, JoyVASA windows every ``stride`` frames, motion
resampled from JoyVASA's 25 fps to the session's fps.

Timeline. As offline, the audio of a segment (the stream from its start or from a barge-in) is
preceded by 80 ms of zeros; JoyVASA frame ``j`` (shown at ``j / 25`` s) hears the padded
samples ``[640 j, 640 j + 640)``. Session frame ``i`` (shown at ``i / fps``) is the linear
interpolation of JoyVASA frames around ``p = 25 i / fps``.

Windows. Window ``k`` starts at JoyVASA frame ``c = k * stride``, is conditioned on the last
``n_prev`` frames committed before it (the learned start features at first) and their audio
features, hears the padded audio ``[640 c, T_k)`` with ``T_k = 640 (c + stride) + lookahead``
(zeros after, as JoyVASA pads a clip's end) and commits its first ``stride`` frames. It runs
once ``T_k`` samples have arrived, always on exactly that audio, so the motion depends only on
the audio and the seed, never on how the audio was chunked. Noise: the seed's initial noise for
every window (as JoyVASA reuses it) and per-step noise from a generator seeded by (seed, k).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.messages import LivePortraitMotion

from ..common import MotionOutput
from . import sampler
from .generator import Generator, load
from .hybrid import hybrid

LAYOUT = "pcm16k"


class JoyVASASession:
    """A session's state, numpy only; pickles without the generator (re-attached by key)."""

    def __init__(self, key: tuple[str, str, str], stride: int, lookahead: int,
                 cfg_scale: float, fps: float, controls: Controls, layout: str) -> None:
        if layout != LAYOUT:
            raise InvalidInput(f"the joyvasa engine reads raw 16 kHz audio: run the audio "
                               f"encoder's 'pcm' engine (layout {LAYOUT!r}), got {layout!r}")
        if not math.isfinite(fps) or fps <= 0.0:
            raise InvalidInput(f"fps must be positive, got {fps}")
        self._key = key
        self._gen: Generator | None = load(*key)
        g = self._gen
        self.fps, self.stride, self.lookahead, self.cfg_scale = fps, stride, lookahead, cfg_scale
        self._controls = controls
        self._windows = 0  # windows run in this session: picks each one's step noise
        self._hist_motion = g.start_motion.copy()  # n_prev x D, normalised
        self._hist_audio = g.start_audio.copy()  # n_prev x F
        self._ref: LivePortraitMotion | None = None  # the session's first frame
        self._pushed = 0  # session frames pushed in all
        self._segment()

    def _segment(self) -> None:
        """Starts a segment at the next frame pushed; the history carries over."""
        self._base = self._pushed  # session frame number of the segment's frame 0
        self._audio = np.zeros(sampler.LEAD, np.float32)  # padded samples from _a0
        self._a0 = 0
        self._heard = 0  # real samples received in the segment
        self._joy = np.zeros((0, self.generator.motion_dim), np.float32)  # committed, from _j0
        self._j0 = 0
        self._done = 0  # JoyVASA frames committed in the segment
        self._frames = 0  # session frames pushed in the segment
        self._emitted = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gen": None}

    @property
    def generator(self) -> Generator:
        if self._gen is None:
            self._gen = load(*self._key)
        return self._gen

    def set_controls(self, controls: Controls) -> None:
        """Seed from the next window; intensity and pose amplitude from the next frame."""
        self._controls = controls

    def set_reference(self, expressions: np.ndarray | None) -> None:
        """JoyVASA has no style input: a reference clip changes nothing."""

    def reset_audio(self) -> None:
        """Barge-in: frames not yet out are dropped; the next audio starts a new segment
        that continues from the motion history."""
        self._segment()

    def push(self, features: list[np.ndarray]) -> list[MotionOutput]:
        for f in features:
            x = np.asarray(f, dtype=np.float32)
            if x.ndim != 1 or not np.isfinite(x).all():
                raise InvalidInput(f"pcm16k frames must be finite 1-D sample arrays, got "
                                   f"shape {x.shape}")
            self._audio = np.concatenate([self._audio, x])
            self._heard += x.size
            self._frames += 1
            self._pushed += 1
        while sampler.LEAD + self._heard >= self._end(self._done):
            self._window()
        return self._emit(final=False)

    def flush(self) -> list[MotionOutput]:
        """The audio ended: windows until every pushed frame can be made, zeros past the end."""
        if self._frames:
            last = (self._frames - 1) * self.generator.model.fps / self.fps
            while self._done <= math.ceil(last - 1e-9):
                self._window()
        out = self._emit(final=True)
        self._segment()
        return out

    def _end(self, done: int) -> int:
        """The padded sample at which the window starting at JoyVASA frame ``done`` stops
        hearing (and may run)."""
        return round((done + self.stride) * self.generator.unit) + self.lookahead

    def _window(self) -> None:
        g = self.generator
        start = round(self._done * g.unit)
        length = round(g.unit * g.n_motions)
        hear = min(self._end(self._done), sampler.LEAD + self._heard) - start
        wav = np.zeros(length, np.float32)
        have = self._audio[start - self._a0: start - self._a0 + min(hear, length)]
        wav[: have.size] = have
        motion, feats = g.window(wav, self._hist_motion, self._hist_audio,
                                 self._controls.seed, self._windows, self.cfg_scale)
        self._windows += 1
        s = self.stride
        self._joy = np.concatenate([self._joy, motion[:s]])
        self._done += s
        self._hist_motion = np.concatenate([self._hist_motion, motion[:s]])[-g.n_prev:]
        self._hist_audio = np.concatenate([self._hist_audio, feats[:s]])[-g.n_prev:]
        keep = round(self._done * g.unit)  # later windows start here or later
        self._audio, self._a0 = self._audio[keep - self._a0:], keep

    def _emit(self, final: bool) -> list[MotionOutput]:
        g = self.generator
        out = []
        while self._emitted < self._frames:
            p = self._emitted * g.model.fps / self.fps
            j = math.floor(p + 1e-9)
            w = max(p - j, 0.0)
            if w > 1e-9 and j + 1 >= self._done and not final:
                break
            if j >= self._done:
                break
            a = self._joy[j - self._j0]
            b = self._joy[min(j + 1, self._done - 1) - self._j0]
            coef = ((1.0 - w) * a + w * b).astype(np.float32)
            out.append(self._frame(self._base + self._emitted, coef))
            self._emitted += 1
        drop = math.floor(self._emitted * g.model.fps / self.fps + 1e-9) - self._j0
        if drop > 0:
            self._joy, self._j0 = self._joy[drop:], self._j0 + drop
        return out

    def _frame(self, number: int, coef: np.ndarray) -> MotionOutput:
        lp = sampler.denormalise(coef[None], self.generator.template)
        motion = LivePortraitMotion(exp=lp["exp"][0], scale=float(lp["scale"][0, 0]),
                                    t=lp["t"][0], pitch=float(lp["pitch"][0]),
                                    yaw=float(lp["yaw"][0]), roll=float(lp["roll"][0]))
        if self._ref is None:
            self._ref = motion
        return hybrid(number, motion, self._ref, self._controls, self.generator.template)
