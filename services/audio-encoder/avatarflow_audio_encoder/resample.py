"""Streaming polyphase resampling of mono audio to 16 kHz.

The rate ratio is reduced to ``L/M`` (output/input) and each output sample is a windowed-sinc
(Kaiser) dot product over the input samples around its instant. The weights for every phase are
computed once into a table, so streaming only gathers and sums. An output sample is emitted only
when all of its input taps have arrived, which makes the output bit-identical however the input
is chunked; the cost is a look-ahead of ``taps_per_side`` input samples.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from avatarflow.contracts.errors import InvalidInput

TARGET_RATE = 16000
MIN_RATE, MAX_RATE = 8000, 192000
ZERO_CROSSINGS = 24  # per side, counted at the lower of the two rates
ROLLOFF = 0.9  # cutoff as a fraction of the lower Nyquist: room for the transition band
KAISER_BETA = 8.6  # about 85 dB of stop-band attenuation
MAX_PHASES = 1024  # odd rates (large L) round their phase to 1/1024 of an input sample


@functools.lru_cache(maxsize=32)
def _table(up: int, down: int, phases: int) -> tuple[np.ndarray, int]:
    """Weights (phases + 1) x 2W and W: row q filters an output at ``q / phases`` input
    samples past its base input sample, column j the input at offset ``j - W + 1``. Cached
    per rate pair and shared read-only."""
    scale = min(1.0, up / down)
    half = math.ceil(ZERO_CROSSINGS / scale)
    cutoff = ROLLOFF * scale
    offsets = np.arange(-half + 1, half + 1, dtype=np.float64)
    frac = np.arange(phases + 1, dtype=np.float64) / phases
    d = offsets[None, :] - frac[:, None]
    inside = np.clip(1.0 - (d / half) ** 2, 0.0, None)
    weights = cutoff * np.sinc(cutoff * d) * np.i0(KAISER_BETA * np.sqrt(inside))
    weights[np.abs(d) >= half] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)  # exact unity gain at DC for every phase
    weights.flags.writeable = False
    return weights, half


class Resampler:
    """Converts a stream at ``sample_rate`` to ``TARGET_RATE`` mono float64.

    Output sample ``n`` sits at input time ``n * M / L``; input before the stream start and
    after ``flush`` counts as zeros, so the total output is ``ceil(n_in * L / M)`` samples.
    Pickles without the weight table, which is rebuilt from the rates.
    """

    def __init__(self, sample_rate: int, target_rate: int = TARGET_RATE) -> None:
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise InvalidInput(f"sample rate {sample_rate} Hz is outside "
                               f"{MIN_RATE}..{MAX_RATE} Hz")
        g = math.gcd(target_rate, sample_rate)
        self.up, self.down = target_rate // g, sample_rate // g
        self.passthrough = self.up == self.down
        self._phases = min(self.up, MAX_PHASES)
        self._weights, self.taps_per_side = _table(self.up, self.down, self._phases)
        self.reset()

    def __getstate__(self) -> dict:
        s = self.__dict__.copy()
        del s["_weights"]
        return s

    def __setstate__(self, s: dict) -> None:
        self.__dict__.update(s)
        self._weights = _table(self.up, self.down, self._phases)[0]

    def reset(self) -> None:
        """Forgets the stream: the next sample pushed is sample 0."""
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples emitted
        self._start = -(self.taps_per_side - 1)  # absolute input index of _buf[0]
        self._buf = np.zeros(self.taps_per_side - 1)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Adds input samples (any real dtype, 1-D); returns the output samples now complete."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        self._n_in += x.size
        if self.passthrough:
            self._n_out += x.size
            return x.copy()
        self._buf = np.concatenate((self._buf, x))
        # Output n is complete once its last tap, base(n) + W, has arrived; a rounded phase may
        # move base up by one.
        reach = self.taps_per_side + (self._phases != self.up)
        ready = -(-(self._n_in - reach) * self.up // self.down)
        return self._emit(max(ready, self._n_out))

    def flush(self) -> np.ndarray:
        """Pads the stream with zeros, returns the remaining output and resets."""
        if self.passthrough:
            self.reset()
            return np.zeros(0)
        self._buf = np.concatenate((self._buf, np.zeros(self.taps_per_side + 1)))
        out = self._emit(-(-self._n_in * self.up // self.down))
        self.reset()
        return out

    def _emit(self, end: int) -> np.ndarray:
        n = np.arange(self._n_out, end, dtype=np.int64)
        if n.size == 0:
            return np.zeros(0)
        num = n * self.down
        base, rem = num // self.up, num % self.up
        if self._phases == self.up:
            row = rem
        else:
            row = (rem * self._phases + self.up // 2) // self.up
            base = base + row // self._phases
            row = row % self._phases
        taps = _windows(self._buf, 2 * self.taps_per_side)[
            base - (self.taps_per_side - 1) - self._start]
        # The gathered taps are a fresh array: weighting them in place saves an allocation.
        taps *= self._weights[0] if self._phases == 1 else self._weights[row]
        out: np.ndarray = np.add.reduce(taps, axis=1)
        self._n_out = end
        keep = int(end * self.down // self.up) - self.taps_per_side  # next output's first tap
        if keep > self._start:
            self._buf = self._buf[keep - self._start:]
            self._start = keep
        return out


def _windows(buf: np.ndarray, width: int) -> np.ndarray:
    """Every ``width`` consecutive samples of ``buf`` (contiguous float64) as the rows of a
    read-only view: ``sliding_window_view`` without its Python-level checks, which cost more
    than the filtering of a 20 ms chunk."""
    view: np.ndarray = np.ndarray((buf.size - width + 1, width), buf.dtype, buffer=buf,
                                  strides=(buf.itemsize, buf.itemsize))
    view.flags.writeable = False
    return view
