"""The renderer service: motion + portrait -> body-pass frames (engine "warp", CPU)."""

from __future__ import annotations

from typing import Any


def build_stage(engine: str = "warp", **options: Any):
    """The renderer stage with ``engine``; imported lazily so the package imports cheaply."""
    from avatarflow_renderer.stage import RendererStage

    return RendererStage(engine=engine, **options)
