"""The motion-gen service: audio features in, per-frame motion (head, body, hands) out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarflow_motion_gen.stage import MotionGenStage


def build_stage(engine: str = "signal", **options: Any) -> MotionGenStage:
    """Returns a ``MotionGenStage`` using ``engine``; imported lazily to keep start-up cheap."""
    from avatarflow_motion_gen.stage import MotionGenStage

    return MotionGenStage(engine, **options)
