"""The motion-gen service: audio features in, per-frame motion (head, body, hands) out."""

from __future__ import annotations

from typing import Any


def build_stage(engine: str = "signal", **options: Any) -> Any:
    """Returns a ``MotionGenStage`` using ``engine``; imported lazily to keep start-up cheap."""
    from avatarflow_motion_gen.stage import MotionGenStage

    return MotionGenStage(engine, **options)
