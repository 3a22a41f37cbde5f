"""The renderer service: motion + portrait -> body-pass frames (engine "warp", CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avatarflow_renderer.stage import RendererStage


def build_stage(engine: str = "warp", **options: Any) -> RendererStage:
    """The renderer stage with ``engine``; imported lazily so the package imports cheaply."""
    from avatarflow_renderer.stage import RendererStage

    return RendererStage(engine=engine, **options)
