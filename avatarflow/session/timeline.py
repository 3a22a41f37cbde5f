"""A session's audio clock: the samples the pipeline was fed, real or filled-in silence.

Frame ``i`` covers samples ``[round(i * rate / fps), round((i + 1) * rate / fps))``; the
session front sends each frame with that slice (plus the slices of frames dropped just before it),
so a client plays exactly the audio the frames were made from, without holes. Only the
samples of frames not yet delivered are kept.
"""

from __future__ import annotations

import numpy as np


class Timeline:
    """The samples of one session's clock that frames still to be delivered need."""

    def __init__(self, rate: int, fps: float) -> None:
        self.rate, self.fps = rate, fps
        self._buf = np.zeros(0, np.int16)
        self._base = 0  # absolute sample index of _buf[0]

    @property
    def end(self) -> int:
        """Samples on the clock so far (absolute)."""
        return self._base + len(self._buf)

    def span(self, index: int) -> tuple[int, int]:
        return (round(index * self.rate / self.fps), round((index + 1) * self.rate / self.fps))

    def append(self, pcm: np.ndarray) -> tuple[int, int]:
        """Adds samples; returns their absolute [start, end)."""
        start = self.end
        self._buf = np.concatenate([self._buf, pcm.astype(np.int16, copy=False)])
        return start, self.end

    def frame_audio(self, index: int, first: int | None = None) -> bytes:
        """PCM16 bytes of frames ``first`` (default ``index``) to ``index``: the audio of
        frames that were dropped on the way rides with the next delivered frame, so the
        client's audio never has a hole (zeros where the clock has no samples). Forgets
        everything before it."""
        a = self.span(index if first is None else min(first, index))[0]
        b = self.span(index)[1]
        out = np.zeros(b - a, np.int16)
        lo, hi = max(a, self._base), min(b, self.end)
        if hi > lo:
            out[lo - a:hi - a] = self._buf[lo - self._base:hi - self._base]
        self._forget(a)
        return out.astype("<i2").tobytes()

    def cut(self, index: int) -> int:
        """Barge-in: the clock continues at frame ``index``; later samples are dropped.
        Returns the new end."""
        a, _ = self.span(index)
        if a < self._base:
            self._buf, self._base = np.zeros(0, np.int16), a
        else:
            self._buf = self._buf[:a - self._base]
            if len(self._buf) < a - self._base:  # the clock had not reached it: pad silence
                self._buf = np.concatenate(
                    [self._buf, np.zeros(a - self._base - len(self._buf), np.int16)])
        return self.end

    def _forget(self, sample: int) -> None:
        drop = min(max(0, sample - self._base), len(self._buf))
        if drop:
            self._buf = self._buf[drop:]
            self._base += drop
