"""Refiner engines by name, imported lazily, and the interface the refiner stage calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from avatarflow.avatars.store import Avatar
from avatarflow.contracts.messages import MotionFrame
from avatarflow.runtime import engines

ENGINES = {"blend": "avatarflow_refiner.engines.blend:BlendEngine",
           "neural": "avatarflow_refiner.engines.neural:NeuralEngine"}

# One frame to refine: the session's avatar, the body pass (H x W x 3 uint8 RGB) and its motion.
RefineItem = tuple[Avatar, np.ndarray, MotionFrame]


class RefineEngine(Protocol):
    """Body pass + motion -> the same frame with the face re-rendered sharper.

    ``batches``: whether ``refine_batch`` refines frames of several sessions in one pass (a
    network's forward); otherwise it refines them one by one.
    """

    batches: bool

    def warm(self, avatar: Avatar) -> None: ...

    def refine(self, avatar: Avatar, frame: np.ndarray, motion: MotionFrame) -> np.ndarray: ...

    def refine_batch(self, items: Sequence[RefineItem]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def create(name: str, **options: Any) -> RefineEngine:
    """Instantiates refiner engine ``name``; an unknown name raises InvalidInput."""
    engine: RefineEngine = engines.create(ENGINES, "refiner", name, "refine", **options)
    return engine
