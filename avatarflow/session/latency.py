"""A session's frame counts and audio-in -> frame-out latency: per summary period and whole.

A frame's latency is measured when it reaches the front (the pipeline's part; a client that
keeps up takes it at once) and the frame is counted when it goes out to the client. Frames
the pipeline dropped are counted when the frame after them arrives, frames the front dropped
because the client was behind (``stale``) when they are dropped."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from avatarflow.session.events import Latency
from avatarflow.telemetry import metrics


class LatencyMeter:
    """Pairs each frame reaching the front with the arrival of the audio that completed its
    span; counts what went out, what the pipeline dropped and what went stale."""

    def __init__(self) -> None:
        self.frames = self.dropped = self.stale = 0
        self.fps_now = 0.0  # achieved rate over the last summary period
        self._arrivals: deque[tuple[int, float]] = deque()  # (end sample, wall time fed)
        self._all_ms: list[float] = []
        self._period_ms: list[float] = []
        self._period_frames = 0

    def fed(self, end: int, now: float) -> None:
        """Audio up to sample ``end`` (absolute, on the clock) was fed at ``now``."""
        self._arrivals.append((end, now))

    def restart(self) -> None:
        """Barge-in: the audio fed so far will not come back as frames."""
        self._arrivals.clear()

    def went_stale(self) -> None:
        """The front dropped a frame: its client was too far behind to want it."""
        self.stale += 1
        metrics.GATEWAY_STALE.inc()

    def sent(self) -> None:
        """A frame went out to the client."""
        self.frames += 1
        self._period_frames += 1

    def arrived(self, end: int, dropped: int) -> None:
        """A frame whose span ends at sample ``end`` reached the front, the pipeline having
        dropped ``dropped`` frames just before it."""
        self.dropped += dropped
        while len(self._arrivals) > 1 and self._arrivals[0][0] < end:
            self._arrivals.popleft()
        if self._arrivals and self._arrivals[0][0] >= end:
            ms = (time.time() - self._arrivals[0][1]) * 1e3
            metrics.GATEWAY_LATENCY.observe(ms / 1e3)
            self._all_ms.append(ms)
            self._period_ms.append(ms)

    def period(self, seconds: float) -> Latency:
        """The summary of the period just over; starts the next one."""
        s = self._summary(self._period_ms, self._period_frames / seconds)
        self.fps_now = s.fps
        self._period_ms, self._period_frames = [], 0
        return s

    def session(self) -> Latency:
        return self._summary(self._all_ms, 0.0)

    def _summary(self, ms: list[float], fps: float) -> Latency:
        values = np.asarray(ms or [0.0])
        return Latency(frames=self.frames, dropped=self.dropped,
                       p50_ms=float(np.median(values)), p99_ms=float(np.percentile(values, 99)),
                       fps=fps, stale=self.stale)
