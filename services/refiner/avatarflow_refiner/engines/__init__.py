"""Refiner engines by name, imported lazily."""

from __future__ import annotations

from typing import Any

from avatarflow.runtime import engines

ENGINES = {"blend": "avatarflow_refiner.engines.blend:BlendEngine",
           "neural": "avatarflow_refiner.engines.neural:NeuralEngine"}


def create(name: str, **options: Any) -> Any:
    return engines.create(ENGINES, "refiner", name, "refine", **options)
