"""Renderer engines by name, imported lazily."""

from __future__ import annotations

from typing import Any

from avatarflow.runtime import engines

ENGINES = {"warp": "avatarflow_renderer.engines.warp:WarpEngine",
           "neural": "avatarflow_renderer.engines.neural:NeuralEngine"}


def create(name: str, **options: Any) -> Any:
    return engines.create(ENGINES, "renderer", name, "render", **options)
