"""Motion engines by name; each is imported only when chosen."""

from __future__ import annotations

from typing import Any

from avatarflow.runtime import engines

ENGINES = {
    "signal": "avatarflow_motion_gen.engines.signal:SignalEngine",
    "diffusion": "avatarflow_motion_gen.engines.diffusion:DiffusionEngine",
}


def create(name: str, **options: Any) -> Any:
    """Instantiates motion engine ``name`` with ``options``."""
    return engines.create(ENGINES, "motion-gen", name, "motion", **options)
