"""The refiner service: re-renders the face sharper and pastes it into the body pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarflow_refiner.stage import RefinerStage


def build_stage(engine: str = "blend", **options: Any) -> RefinerStage:
    """The refiner stage with ``engine``; imported lazily so the package imports cheaply."""
    from avatarflow_refiner.stage import RefinerStage

    return RefinerStage(engine=engine, **options)
