"""The "warp" renderer: one thin-plate-spline backward warp of the portrait per frame (CPU),
plus a painted mouth interior and eyelids."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from avatarflow.avatars.store import Avatar
from avatarflow.contracts.messages import MotionFrame
from avatarflow_renderer import paint
from avatarflow_renderer.analysis import PortraitAnalyser
from avatarflow_renderer.warpfield import WarpPlan

P = TypeVar("P")


class PlanCache(Generic[P]):
    """Per-avatar plans (session-constant precomputation), least recently used evicted.

    Plans are keyed by ``Avatar.key`` (id and output format); a plan is rebuilt when its key
    has been re-analysed into a new Avatar object.
    Shared by the renderer and the refiner.
    """

    def __init__(self, build: Callable[[Avatar], P], capacity: int = 16) -> None:
        self.build, self.capacity = build, capacity
        self._plans: OrderedDict[str, tuple[Avatar, P]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, avatar: Avatar) -> P:
        with self._lock:
            hit = self._plans.get(avatar.key)
            if hit is not None and hit[0] is avatar:
                self._plans.move_to_end(avatar.key)
                return hit[1]
        plan = self.build(avatar)
        with self._lock:
            self._plans[avatar.key] = (avatar, plan)
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()


class WarpEngine:
    """Analyses portraits (mediapipe) and renders motion frames by warping them."""

    def __init__(self, grid: int = 16, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown warp engine options: {', '.join(options)}")
        self._analyser: PortraitAnalyser | None = None
        self.plans: PlanCache[WarpPlan] = PlanCache(lambda a: WarpPlan(a, grid))

    def prepare(self, image_rgb: np.ndarray, avatar_id: str, mode: str, width: int,
                height: int) -> Avatar:
        if self._analyser is None:
            self._analyser = PortraitAnalyser()
        avatar = self._analyser.analyse(image_rgb, avatar_id, mode, width, height)
        self.plans.get(avatar)  # session-constant work happens now, not on the first frame
        return avatar

    def warm(self, avatar: Avatar) -> None:
        """Does the avatar's session-constant work now (a session is starting), so its first
        frame is as fast as the rest."""
        self.plans.get(avatar)

    def render(self, avatar: Avatar, motion: MotionFrame) -> np.ndarray:
        """H x W x 3 uint8 RGB for one motion frame."""
        plan = self.plans.get(avatar)
        rest, warp_face, body_src, body_tgt, face = plan.controls(motion)
        out = plan.base.copy()
        mapped = plan.backward_map(plan.field(rest, warp_face, body_src, body_tgt))
        if mapped is not None:
            (x0, y0, x1, y1), xy = mapped
            out[y0:y1, x0:x1] = cv2.remap(plan.base, xy, None, cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE)
        paint.paint_mouth(out, face, avatar.mouth_color, plan.iod)
        paint.paint_eyelids(out, face, avatar.face_rest, avatar.skin_color, plan.iod)
        return out

    def close(self) -> None:
        if self._analyser is not None:
            self._analyser.close()
            self._analyser = None
        self.plans.clear()
