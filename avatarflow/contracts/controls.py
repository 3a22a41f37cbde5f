"""Generation controls and their valid ranges."""

from __future__ import annotations

from dataclasses import dataclass

from avatarflow.contracts.errors import OutOfRange, shown

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")


@dataclass(frozen=True)
class Controls:
    """What a caller may steer. Validated on construction."""

    expression_intensity: float = 1.0  # 0..2, scales expression coefficients
    pose_amplitude: float = 1.0  # 0..2, scales head and body motion
    emotion: str = "neutral"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("expression_intensity", "pose_amplitude"):
            value = getattr(self, name)
            if not 0.0 <= value <= 2.0:
                raise OutOfRange(f"{name} must be within 0..2, got {value}")
        if self.emotion not in EMOTIONS:
            raise OutOfRange(f"emotion must be one of {', '.join(EMOTIONS)}, "
                             f"got {shown(self.emotion)}")
        if not 0 <= self.seed < 2**63:
            raise OutOfRange(f"seed must be a non-negative 63-bit integer, got {self.seed}")
