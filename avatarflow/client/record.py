"""What a client saw of one session, and the numbers a viewer would notice: latency to the
first frame, frame rate, frame-interval jitter, dropped frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatarflow.contracts.v1 import api_pb2


@dataclass(frozen=True, slots=True)
class ReceivedFrame:
    """One frame as the client received it (a dataclass: a tuple's ``index`` method would
    clash with the frame index)."""

    index: int
    pts: float  # seconds on the session's audio clock
    received_at: float  # time.monotonic() when the client read it
    data: bytes  # JPEG or raw RGB, as negotiated
    audio: bytes  # PCM16 mono of the frame's span
    refined: bool


@dataclass
class SessionRecord:
    """Responses of one session in arrival order, with derived statistics."""

    started: api_pb2.SessionStarted | None = None
    frames: list[ReceivedFrame] = field(default_factory=list)
    events: list[api_pb2.SessionEvent] = field(default_factory=list)
    ended: api_pb2.SessionEnded | None = None
    first_audio_sent_at: float | None = None  # time.monotonic() of the first audio chunk

    def add(self, response: api_pb2.SessionResponse, received_at: float, *,
            keep_data: bool = True) -> None:
        kind = response.WhichOneof("kind")
        if kind == "started":
            self.started = response.started
        elif kind == "frame":
            f = response.frame
            self.frames.append(ReceivedFrame(f.index, f.pts, received_at,
                                             f.data if keep_data else b"",
                                             f.audio if keep_data else b"", f.refined))
        elif kind == "event":
            self.events.append(response.event)
        elif kind == "ended":
            self.ended = response.ended

    @property
    def first_frame_latency_s(self) -> float | None:
        """First audio chunk sent -> first frame received; None without both."""
        if self.first_audio_sent_at is None or not self.frames:
            return None
        return self.frames[0].received_at - self.first_audio_sent_at

    @property
    def frame_intervals_ms(self) -> np.ndarray:
        """Milliseconds between consecutive frame arrivals (N-1 values)."""
        times = np.array([f.received_at for f in self.frames], np.float64)
        return np.diff(times) * 1e3

    @property
    def achieved_fps(self) -> float:
        """Frames per second of arrival: intervals / (last - first arrival); 0 below 2 frames."""
        if len(self.frames) < 2:
            return 0.0
        span = self.frames[-1].received_at - self.frames[0].received_at
        return (len(self.frames) - 1) / span if span > 0 else float("inf")

    @property
    def p99_interval_ms(self) -> float:
        intervals = self.frame_intervals_ms
        return float(np.percentile(intervals, 99)) if intervals.size else 0.0

    @property
    def indexes_strictly_increase(self) -> bool:
        indexes = [f.index for f in self.frames]
        return all(a < b for a, b in zip(indexes, indexes[1:], strict=False))

    @property
    def missing_indexes(self) -> list[int]:
        """Indexes skipped between the first and last frame received (dropped frames)."""
        seen = {f.index for f in self.frames}
        if not seen:
            return []
        return [i for i in range(min(seen), max(seen) + 1) if i not in seen]

    @property
    def dropped(self) -> int:
        """Dropped frames as the server counted them (SessionEnded), else from index gaps."""
        return int(self.ended.dropped) if self.ended is not None else len(self.missing_indexes)

    @property
    def warnings(self) -> list[str]:
        return [e.warning for e in self.events if e.WhichOneof("kind") == "warning"]
