"""What a client of a session sees, as plain objects: the gateway turns them into
``SessionResponse`` messages, an in-process caller uses them as they are."""

from __future__ import annotations

from dataclasses import dataclass

from avatarflow.contracts.picture import Picture
from avatarflow.session.spec import SessionSpec


@dataclass(frozen=True, slots=True)
class Started:
    """The session is open on every stage."""

    session_id: str
    avatar_id: str
    spec: SessionSpec


@dataclass(frozen=True, slots=True)
class Frame:
    """One output frame with the audio it was made from: PCM16 little-endian bytes of its own
    span of the clock, plus the spans of frames dropped just before it."""

    index: int
    pts: float
    image: Picture  # H x W x 3 uint8 RGB
    audio: bytes
    refined: bool = True


@dataclass(frozen=True, slots=True)
class Gap:
    """The client's audio stalled: ``duration`` seconds of silence were filled in at ``pts``."""

    pts: float
    duration: float


@dataclass(frozen=True, slots=True)
class Latency:
    """Frames so far and the audio-in -> frame-out latency over a period (or the session)."""

    frames: int
    dropped: int
    p50_ms: float
    p99_ms: float
    fps: float  # achieved over the period; 0 for a whole session
    stale: int = 0  # frames dropped at the front because the client was behind


@dataclass(frozen=True, slots=True)
class Ended:
    """The last event of a session that ended normally."""

    frames: int
    dropped: int
    duration_s: float
    latency: Latency


Event = Frame | Gap | Latency | Ended
