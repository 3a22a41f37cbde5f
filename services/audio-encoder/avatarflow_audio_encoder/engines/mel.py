"""Hand-crafted per-video-frame audio features: log-mel bands plus four prosody cues.

Everything is computed in float64 from the 16 kHz stream, one frame at a time on slices of
identical shape, then cast to float32: chunked and whole input give bit-identical features.

Frame ``i`` (at ``fps``) has its centre ``c`` at ``(i + 0.5) / fps`` seconds and owns the samples
``[i / fps, (i + 1) / fps)``; positions are rounded to the nearest 16 kHz sample. It reads
``[c - 360, c + 360)``: three 25 ms STFT windows centred at ``c`` and ``c +- 160`` (10 ms). Its
look-ahead past its own last sample is therefore ``max(0, c + 360 - end)`` = ``360 - 8000 / fps``
samples at 16 kHz (+-1 for rounding): 93-94 samples (5.8 ms) at 30 fps, 227 at 60 fps, none
below 22.2 fps; the resampler adds its own ``taps_per_side`` input samples for other rates.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow_audio_encoder.resample import TARGET_RATE, Resampler

SR = TARGET_RATE
N_FFT = 512
WIN = 400  # 25 ms
HOP = 160  # 10 ms between the three STFT windows of a frame
REACH = HOP + WIN // 2  # samples read on each side of a frame centre
VOICING_HALF = 320  # 40 ms autocorrelation window
MIN_LAG, MAX_LAG = 40, 200  # 2.5 .. 12.5 ms: pitch 80 .. 400 Hz
AC_FFT = 1024  # >= 2 * VOICING_HALF + MAX_LAG, so the circular correlation does not wrap
LAGS = np.arange(MIN_LAG, MAX_LAG + 1)
FMIN, FMAX = 80.0, 7600.0
LOG_FLOOR = 1e-10
DB_FLOOR = -100.0
EXTRA_NAMES = ("energy_db", "voicing", "zcr", "flux")


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sr: int = SR) -> np.ndarray:
    """HTK-style triangular filters, n_mels x (n_fft // 2 + 1), peak 1, from FMIN to FMAX."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(FMIN)), _hz_to_mel(np.array(FMAX)),
                                   n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    return np.clip(np.minimum(rising, falling), 0.0, None)


@functools.lru_cache(maxsize=8)
def _tables(n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """The filterbank and STFT window, built once per process and shared read-only."""
    filterbank = mel_filterbank(n_mels)
    window = np.hanning(WIN + 2)[1:-1]  # no zero end points: all 400 samples count
    for a in (filterbank, window):
        a.flags.writeable = False
    return filterbank, window


class MelEngine:
    """Engine "mel": no model, no extra dependency; cheap enough for every CPU core."""

    def __init__(self, fps: float = 30.0, n_mels: int = 40) -> None:
        if not 1 <= n_mels <= 128:
            raise InvalidInput(f"n_mels must be within 1..128, got {n_mels}")
        self.fps = float(fps)
        self.n_mels = n_mels
        self.names = EXTRA_NAMES
        self.dim = n_mels + len(EXTRA_NAMES)
        self.layout = f"mel{n_mels}+" + "+".join(EXTRA_NAMES)
        self.filterbank, self.window = _tables(n_mels)

    def open_session(self, sample_rate: int, fps: float | None = None) -> MelSession:
        """Starts one audio stream at ``sample_rate`` producing frames at ``fps``."""
        return MelSession(self.n_mels, sample_rate, self.fps if fps is None else float(fps))


class MelSession:
    """One stream's state: resampler, the 16 kHz samples still needed, the next frame.

    Pickles without the constant tables (rebuilt from ``n_mels``), so a snapshot holds little
    more than the buffered samples.
    """

    def __init__(self, n_mels: int, sample_rate: int, fps: float) -> None:
        if not 1.0 <= fps <= 60.0:
            raise InvalidInput(f"fps must be within 1..60, got {fps}")
        self.n_mels = n_mels
        self._filterbank, self._window = _tables(n_mels)
        self.sample_rate = sample_rate
        self.fps = fps
        self._resampler = Resampler(sample_rate)
        self._n_in = 0  # input samples at sample_rate
        self._n16 = 0  # 16 kHz samples received
        self._start = -REACH  # absolute 16 kHz index of _buf[0]; zeros before the stream
        self._buf = np.zeros(REACH)
        self._next = 0  # next frame index
        self._prev_mel = np.full(n_mels, math.log10(LOG_FLOOR))

    def __getstate__(self) -> dict:
        s = self.__dict__.copy()
        del s["_filterbank"], s["_window"]
        return s

    def __setstate__(self, s: dict) -> None:
        self.__dict__.update(s)
        self._filterbank, self._window = _tables(self.n_mels)

    def _at(self, frames: float) -> int:
        """16 kHz sample index of a time given in frames."""
        return math.floor(frames * SR / self.fps + 0.5)

    def _needs(self, i: int) -> int:
        """Samples that must exist before frame ``i`` can be computed (its look-ahead end)."""
        return max(self._at(i + 1), self._at(i + 0.5) + REACH)

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Adds int16 samples; returns features (dim float32) of every frame now complete."""
        self._n_in += pcm.size
        self._append(self._resampler.push(pcm.astype(np.float64) / 32768.0))
        out = []
        while self._needs(self._next) <= self._n16:
            out.append(self._frame(self._next))
        self._trim()
        return out

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: emits frames up to ``ceil(duration * fps)``, zero-padded."""
        self._append(self._resampler.flush())
        total = math.ceil(round(self._n_in * self.fps / self.sample_rate, 6))
        if total > self._next:
            self._append(np.zeros(max(0, self._needs(total - 1) - self._n16)))
        out = [self._frame(self._next) for _ in range(self._next, total)]
        self._trim()
        return out

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._buf = np.concatenate((self._buf, x))
            self._n16 += x.size

    def _trim(self) -> None:
        """Drops samples that no later frame reads: keeps memory bounded."""
        keep = min(self._at(self._next), self._at(self._next + 0.5) - REACH)
        if keep > self._start:
            self._buf = self._buf[keep - self._start:]
            self._start = keep

    def _frame(self, i: int) -> np.ndarray:
        c = self._at(i + 0.5) - self._start
        seg = self._buf[c - REACH:c + REACH]
        # The three windows as one strided view of the samples (no copy before the windowing)
        frames = np.ndarray((3, WIN), seg.dtype, buffer=seg,
                            strides=(HOP * seg.itemsize, seg.itemsize)) * self._window
        power = np.abs(np.fft.rfft(frames, N_FFT, axis=1)) ** 2
        # add.reduce / 3 is what mean computes, minus its Python-level dispatch
        mel = np.log10(np.maximum(self._filterbank @ (np.add.reduce(power, axis=0) / 3),
                                  LOG_FLOOR))
        flux = float(np.add.reduce(np.maximum(mel - self._prev_mel, 0.0))) / mel.size
        self._prev_mel = mel
        own = self._buf[self._at(i) - self._start:self._at(i + 1) - self._start]
        rms = math.sqrt(float(np.add.reduce(own * own)) / own.size) if own.size else 0.0
        energy = max(DB_FLOOR, 20.0 * math.log10(rms)) if rms > 0.0 else DB_FLOOR
        pos = own >= 0.0
        zcr = np.count_nonzero(pos[1:] != pos[:-1]) / (own.size - 1) if own.size > 1 else 0.0
        voicing = _voicing(self._buf[c - VOICING_HALF:c + VOICING_HALF])
        self._next = i + 1
        extra = np.array([energy, voicing, zcr, flux])
        return np.concatenate((mel, extra)).astype(np.float32)


def _voicing(x: np.ndarray) -> float:
    """Peak normalised autocorrelation over pitch lags, 0..1 (0 for silence)."""
    x = x - np.add.reduce(x) / x.size
    energy = np.cumsum(x * x)
    total = float(energy[-1])
    if total < 1e-12:
        return 0.0
    spec = np.fft.rfft(x, AC_FFT)
    ac = np.fft.irfft(spec.real * spec.real + spec.imag * spec.imag, AC_FFT)[LAGS]
    head = energy[x.size - 1 - LAGS]  # sum of x[n]^2 for n < N - lag
    tail = total - energy[LAGS - 1]  # sum of x[n]^2 for n >= lag
    r = ac / np.sqrt(np.maximum(head * tail, 1e-24))
    return min(1.0, max(0.0, float(r.max())))
