"""Engine "pcm": the audio itself, at 16 kHz, cut at video frame boundaries.

For motion engines that run their own audio model on raw audio (``joyvasa`` computes its
HuBERT / wav2vec 2.0 features per window inside the motion model, with the encoder weights of
its own checkpoint). Frame ``i`` carries the float32 samples ``[round(16000 i / fps),
round(16000 (i + 1) / fps))`` in [-1, 1) (533 or 534 at 30 fps, so the length varies), layout
``pcm16k``. No look-ahead: a frame is out as soon as its last sample is in (plus the
resampler's few taps for other input rates). ``flush`` returns the rest, the last frame
holding only the samples that arrived, ``ceil(duration * fps)`` frames in all.
"""

from __future__ import annotations

import math

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.limits import MAX_FPS, MIN_FPS
from avatarflow_audio_encoder.resample import TARGET_RATE, Resampler

LAYOUT = "pcm16k"


class PCMSession:
    """One stream: the resampler, the samples of the frame not yet complete, the frame count."""

    def __init__(self, sample_rate: int, fps: float) -> None:
        self.fps = fps
        self.sample_rate = sample_rate
        self._resampler = Resampler(sample_rate, TARGET_RATE)
        self._n_in = 0
        self._buf = np.zeros(0, np.float32)
        self._start = 0  # absolute 16 kHz index of _buf[0]
        self._next = 0  # next frame

    def _edge(self, i: int) -> int:
        return round(i * TARGET_RATE / self.fps)

    def _take(self, final: bool) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        while True:
            end = self._edge(self._next + 1)
            if end - self._start > self._buf.size and not (final and self._buf.size):
                return out
            cut = min(end - self._start, self._buf.size)
            out.append(self._buf[:cut].copy())
            self._buf, self._start, self._next = self._buf[cut:], self._start + cut, self._next + 1

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Adds int16 samples; returns the samples of every frame now complete."""
        self._n_in += pcm.size
        x = self._resampler.push(pcm.astype(np.float64) / 32768.0)
        self._buf = np.concatenate((self._buf, x.astype(np.float32)))
        return self._take(final=False)

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: the remaining frames, up to ``ceil(duration * fps)``."""
        x = self._resampler.flush()
        self._buf = np.concatenate((self._buf, x.astype(np.float32)))
        total = math.ceil(round(self._n_in * self.fps / self.sample_rate, 6))
        out = self._take(final=True)
        while self._next < total:  # resampler rounding: frames without samples of their own
            out.append(np.zeros(0, np.float32))
            self._next += 1
        return out


class PCMEngine:
    """Passes 16 kHz audio on, one variable-length vector per video frame."""

    layout = LAYOUT
    names: tuple[str, ...] = ()

    def __init__(self, fps: float = 30.0) -> None:
        self.fps = float(fps)
        self.dim = round(TARGET_RATE / self.fps)  # nominal: a frame's length varies by one

    def open_session(self, sample_rate: int, fps: float | None = None) -> PCMSession:
        fps = self.fps if fps is None else float(fps)
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InvalidInput(f"fps must be within {MIN_FPS:g}..{MAX_FPS:g}, got {fps}")
        return PCMSession(int(sample_rate), fps)
