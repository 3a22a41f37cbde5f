"""Typed messages that flow between stages. Encoded for the wire by ``avatarflow.contracts.codec``.

Three tiers decide delivery order within a session: ``URGENT`` control (interrupt, control
update) overtakes queued data; ``ORDERED`` control (session start, end of audio) and ``DATA``
keep their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.contracts.picture import Picture
from avatarflow.contracts.style import StyleReference


class Tier(IntEnum):
    URGENT = 0
    ORDERED = 1
    DATA = 2


@dataclass(kw_only=True, slots=True)
class Message:
    """Envelope fields every message carries."""

    tier: ClassVar[Tier] = Tier.DATA
    session_id: str
    index: int = 0  # chunk index for audio, frame index for everything else
    pts: float = 0.0  # seconds on the session's audio clock
    traceparent: str = ""  # W3C trace context
    deadline: float = 0.0  # wall-clock deadline (unix seconds), 0 = none


@dataclass(kw_only=True, slots=True)
class SessionStart(Message):
    """Opens a session on every stage."""

    tier: ClassVar[Tier] = Tier.ORDERED
    avatar_id: str = ""
    image: bytes = b""  # encoded portrait; empty when avatar_id is already analysed
    sample_rate: int = 16000
    mode: str = "upper-body"  # upper-body | head
    width: int = 512
    height: int = 768
    fps: float = 30.0
    controls: Controls = field(default_factory=Controls)
    style: StyleReference | None = None  # speaking-style reference for motion-gen


@dataclass(kw_only=True, slots=True)
class ControlUpdate(Message):
    """New controls from the next frame on."""

    tier: ClassVar[Tier] = Tier.URGENT
    controls: Controls = field(default_factory=Controls)


@dataclass(kw_only=True, slots=True)
class Interrupt(Message):
    """Barge-in: drop everything queued for the session."""

    tier: ClassVar[Tier] = Tier.URGENT


@dataclass(kw_only=True, slots=True)
class EndOfAudio(Message):
    """No more audio: stages flush what they hold and pass it on."""

    tier: ClassVar[Tier] = Tier.ORDERED


@dataclass(kw_only=True, slots=True)
class AudioChunk(Message):
    sample_rate: int
    pcm: np.ndarray  # N int16, mono


@dataclass(kw_only=True, slots=True)
class AudioFeatures(Message):
    features: np.ndarray  # D float32
    layout: str = ""


@dataclass(kw_only=True, slots=True)
class LivePortraitMotion:
    """One frame of motion in LivePortrait's space, de-normalised as JoyVASA does: the renderer
    drives the portrait's keypoints with it relative to the session's first frame."""

    exp: np.ndarray  # 21 x 3 float32 expression deltas
    scale: float
    t: np.ndarray  # 3 float32
    pitch: float
    yaw: float
    roll: float  # degrees


@dataclass(kw_only=True, slots=True)
class MotionFrame(Message):
    rotation: np.ndarray  # 3 float32: pitch, yaw, roll (radians)
    translation: np.ndarray  # 3 float32, head template units
    scale: float
    expression: np.ndarray  # E float32, names in avatarflow.contracts.motion.EXPRESSIONS
    head_template: np.ndarray  # K x 3 float32: template driven by expression (unposed)
    head_offset: np.ndarray  # K x 3 float32: implicit per-keypoint offset
    body: np.ndarray  # B x 3 float32, canonical body units
    hands: np.ndarray  # 2 x 21 x 3 float32 (left, right), canonical body units
    liveportrait: LivePortraitMotion | None = None  # set by engines that speak LivePortrait


@dataclass(kw_only=True, slots=True)
class RenderedFrame(Message):
    image: Picture  # H x W x 3 uint8 RGB, body pass
    motion: MotionFrame


@dataclass(kw_only=True, slots=True)
class FinalFrame(Message):
    image: Picture  # H x W x 3 uint8 RGB
    refined: bool = True  # False: the refiner passed a late body pass on as it was


@dataclass(kw_only=True, slots=True)
class SessionError(Message):
    """A stage failed one of the session's messages; travels to the sink and ends the session."""

    tier: ClassVar[Tier] = Tier.ORDERED
    stage: str = ""
    category: str = "internal"  # an AvatarflowError category
    message: str = ""
