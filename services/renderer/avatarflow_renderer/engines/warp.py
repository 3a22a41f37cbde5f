"""The "warp" renderer: one thin-plate-spline backward warp of the portrait per frame (CPU),
plus a painted mouth interior and eyelids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from avatarflow.avatars import paint, warp
from avatarflow.avatars.plans import PlanCache
from avatarflow.avatars.store import Avatar
from avatarflow.avatars.warp import WarpPlan
from avatarflow.contracts.messages import LivePortraitMotion, MotionFrame


class WarpEngine:
    """Renders motion frames by warping the analysed portrait; one frame at a time."""

    batches = False

    def __init__(self, grid: int = 16, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown warp engine options: {', '.join(options)}")
        self.plans: PlanCache[WarpPlan] = warp.plans(grid)  # the process's: see WarpPlan.solve

    def warm(self, avatar: Avatar) -> None:
        """Does the avatar's session-constant work now (a session is starting), so its first
        frame is as fast as the rest."""
        self.plans.get(avatar)

    def render(self, avatar: Avatar, motion: MotionFrame,
               anchor: LivePortraitMotion | None = None) -> np.ndarray:
        """H x W x 3 uint8 RGB for one motion frame (from the hybrid motion: a LivePortrait
        motion block and its ``anchor`` are not used)."""
        plan = self.plans.get(avatar)
        solved = plan.solve(motion)
        face = solved.face
        out = plan.base.copy()
        mapped = plan.backward_map(solved)
        if mapped is not None:
            (x0, y0, x1, y1), xy = mapped
            out[y0:y1, x0:x1] = cv2.remap(  # type: ignore[call-overload]  # map2 may be None
                plan.base, xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        paint.paint_mouth(out, face, avatar.mouth_color, plan.iod)
        paint.paint_eyelids(out, face, avatar.face_rest, avatar.skin_color, plan.iod)
        return out

    def render_batch(self, items: Sequence[tuple[Avatar, MotionFrame]],
                     anchors: Sequence[LivePortraitMotion | None] | None = None
                     ) -> list[np.ndarray]:
        return [self.render(avatar, motion) for avatar, motion in items]

    def close(self) -> None:
        self.plans.clear()
