"""Renderer engines by name, imported lazily, and the interface the renderer stage calls.

An engine gets avatars already analysed by the stage (``avatarflow_renderer.analysis``); what
it needs beyond the analysis per avatar (warp grids, source keypoints, appearance features) it
computes in ``warm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from avatarflow.avatars.store import Avatar
from avatarflow.contracts.messages import LivePortraitMotion, MotionFrame
from avatarflow.runtime import engines

ENGINES = {"warp": "avatarflow_renderer.engines.warp:WarpEngine",
           "neural": "avatarflow_renderer.engines.neural:NeuralEngine"}


class RenderEngine(Protocol):
    """Motion + analysed avatar -> body-pass frames (H x W x 3 uint8 RGB at the avatar's size).

    ``batches``: whether ``render_batch`` renders frames of several sessions in one pass (a
    network's forward); otherwise it renders them one by one and the stage does not wait to
    gather them.
    """

    batches: bool

    def warm(self, avatar: Avatar) -> None: ...

    def render(self, avatar: Avatar, motion: MotionFrame,
               anchor: LivePortraitMotion | None = None) -> np.ndarray:
        """``anchor``: the session's first LivePortrait motion block, what a frame's own
        block is relative to (engines that do not read the block ignore it)."""
        ...

    def render_batch(self, items: Sequence[tuple[Avatar, MotionFrame]],
                     anchors: Sequence[LivePortraitMotion | None] | None = None
                     ) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def create(name: str, **options: Any) -> RenderEngine:
    """Instantiates renderer engine ``name``; an unknown name raises InvalidInput."""
    engine: RenderEngine = engines.create(ENGINES, "renderer", name, "render", **options)
    return engine
