"""Motion engines by name, each imported only when chosen, and the interface the motion-gen
stage calls."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from avatarflow.contracts.controls import Controls
from avatarflow.runtime import engines

from .common import MotionOutput

ENGINES = {
    "signal": "avatarflow_motion_gen.engines.signal:SignalEngine",
    "diffusion": "avatarflow_motion_gen.engines.diffusion:DiffusionEngine",
    "joyvasa": "avatarflow_motion_gen.engines.joyvasa:JoyVASAEngine",
}


class MotionSession(Protocol):
    """One session's motion: feature frames in, ``MotionOutput`` frames out, numbered by the
    feature frame they belong to (an engine may hold frames back for look-ahead). Pickles
    without the engine's weights, so a session moves between replicas."""

    def push(self, features: list[np.ndarray]) -> list[MotionOutput]:
        """Adds D float32 feature vectors (one per frame); returns the frames now complete."""
        ...

    def flush(self) -> list[MotionOutput]:
        """The audio ended: every frame still held back."""
        ...

    def set_controls(self, controls: Controls) -> None: ...

    def set_reference(self, expressions: np.ndarray | None) -> None:
        """Speak in the style of a reference clip (T x E expression coefficients)."""
        ...

    def reset_audio(self) -> None:
        """Barge-in: drop the audio held; the motion continues from the last frame out."""
        ...


class MotionEngine(Protocol):
    def open_session(self, fps: float, controls: Controls, layout: str) -> MotionSession: ...

    def close(self) -> None: ...


def create(name: str, **options: Any) -> MotionEngine:
    """Instantiates motion engine ``name`` with ``options``."""
    engine: MotionEngine = engines.create(ENGINES, "motion-gen", name, "motion", **options)
    return engine
