"""The "blend" refiner: re-renders the face at twice the working resolution straight from the
uploaded portrait, then pastes it into the body pass under a feathered ellipse.

The body pass resamples the portrait twice (portrait -> canvas -> frame); here the face's warp
map is composed with the canvas-to-portrait affine, so the face is resampled once (bicubic)
from the high-resolution source. The portrait is sampled bicubically once per avatar onto a
2x grid around the face (mouth closed); each frame then resamples that 2x face bilinearly,
which after the 2:1 area reduction is as sharp as a bicubic pass at a third of its cost.
The warp field, the mouth closing and the painters are the renderer's own
(``avatarflow.avatars.warp`` / ``paint``, shared by both), so both passes agree on the geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from avatarflow.avatars import paint, warp
from avatarflow.avatars.plans import PlanCache
from avatarflow.avatars.store import Avatar
from avatarflow.avatars.warp import WarpPlan
from avatarflow.contracts import motion as mo
from avatarflow.contracts.messages import MotionFrame

FACTOR = 2
MARGIN = 0.4  # IOD around the face box that the high-resolution face may sample
ELLIPSE = ((0.0, 0.55), (1.22, 1.5))  # template units: centre, semi-axes of the pasted face
FEATHER = 0.12  # IOD: Gaussian sigma of the ellipse's edge
SHARPEN = 0.6


class RefinePlan:
    """Per-avatar pieces: the warp plan, the closed face at 2x and the paste mask."""

    def __init__(self, avatar: Avatar) -> None:
        self.avatar = avatar
        x0, y0, x1, y1 = self.warp.box
        iod = self.warp.iod
        self.pad = int(np.ceil(MARGIN * iod))
        self.hires = self._hires_face(avatar, x0 - self.pad, y0 - self.pad,
                                      x1 + self.pad, y1 + self.pad)
        h2, w2 = (y1 - y0) * FACTOR, (x1 - x0) * FACTOR
        gx, gy = np.meshgrid(np.arange(w2, dtype=np.float32), np.arange(h2, dtype=np.float32))
        self.identity = np.dstack([gx, gy]) + FACTOR * self.pad
        mask = self._mask(avatar, x0, y0, x1, y1)
        rows, cols = np.nonzero(mask[..., 0] > 0)
        # Only the pasted ellipse's bounding box is refined: (x0, y0, x1, y1) in box px.
        self.inner = (int(cols.min()), int(rows.min()), int(cols.max()) + 1,
                      int(rows.max()) + 1)
        ix0, iy0, ix1, iy1 = self.inner
        self.mask = np.ascontiguousarray(mask[iy0:iy1, ix0:ix1])
        self.face_weight = np.ascontiguousarray(self.mask[..., 0])  # for cv2.blendLinear
        self.body_weight = 1.0 - self.face_weight
        f = FACTOR
        self.identity = np.ascontiguousarray(self.identity[iy0 * f: iy1 * f, ix0 * f: ix1 * f])

    @property
    def warp(self) -> WarpPlan:
        """The process's warp plan of the avatar: the renderer's, where it runs here (looked
        up each time: the process's cache may have rebuilt it)."""
        return warp.plans().get(self.avatar)

    def _hires_face(self, avatar: Avatar, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The closed-mouth face sampled FACTOR times per canvas pixel from the portrait."""
        m = avatar.canvas_from_portrait
        portrait = avatar.portrait
        s = float(np.hypot(m[0, 0], m[1, 0])) * FACTOR  # hires px per portrait px
        shrink = 1.0
        if s < 0.75:  # portrait much sharper than needed: pre-filter instead of aliasing
            shrink = min(1.0, 1.5 * s)
            ph, pw = portrait.shape[:2]
            portrait = cv2.resize(portrait, (max(1, round(pw * shrink)),
                                             max(1, round(ph * shrink))),
                                  interpolation=cv2.INTER_AREA)
            shrink = portrait.shape[1] / avatar.portrait.shape[1]
        cx, cy = self.warp.closing.source_map(x0, y0, x1, y1, FACTOR)
        inv = cv2.invertAffineTransform(m)
        px = (inv[0, 0] * cx + inv[0, 1] * cy + inv[0, 2]) * shrink
        py = (inv[1, 0] * cx + inv[1, 1] * cy + inv[1, 2]) * shrink
        return cv2.remap(portrait, px.astype(np.float32), py.astype(np.float32),
                         cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

    def _mask(self, avatar: Avatar, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        (cx, cy), (rx, ry) = ELLIPSE
        h, w = y1 - y0, x1 - x0
        inv = np.linalg.inv(avatar.face_axes[:, :2].astype(np.float64))
        origin = avatar.face_rest[[mo.HEAD["eye_r_out"], mo.HEAD["eye_l_out"]]].mean(0)
        gx, gy = np.meshgrid(np.arange(w) + x0, np.arange(h) + y0)
        d = np.stack([gx - origin[0], gy - origin[1]], -1) @ inv.T
        inside = (((d[..., 0] - cx) / rx) ** 2 + ((d[..., 1] - cy) / ry) ** 2 <= 1.0)
        sigma = FEATHER * self.warp.iod
        mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), sigma)
        # Shrink so the blurred edge is zero well inside the box: no seam at the box border.
        edge = int(np.ceil(3 * sigma))
        mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = 0, 0, 0, 0
        return mask[..., None]


class BlendEngine:
    """Sharper face pass pasted into the body pass; CPU only, one frame at a time."""

    batches = False

    def __init__(self, capacity: int = 16, **options: Any) -> None:
        if options:
            raise TypeError(f"unknown blend engine options: {', '.join(options)}")
        self.plans: PlanCache[RefinePlan] = PlanCache(RefinePlan, capacity)

    def warm(self, avatar: Avatar) -> None:
        """Does the avatar's session-constant work now (a session is starting), so its first
        frame is as fast as the rest."""
        self.plans.get(avatar)

    def refine(self, avatar: Avatar, frame: np.ndarray, motion: MotionFrame) -> np.ndarray:
        """H x W x 3 uint8: ``frame`` with the face re-rendered sharper."""
        plan = self.plans.get(avatar)
        wp = plan.warp
        solved = wp.solve(motion)  # the renderer's solution where it ran in this process
        face = solved.face
        disp = wp.fine_field(solved, FACTOR, plan.inner)
        ix0, iy0, ix1, iy1 = plan.inner
        f = FACTOR
        xy = disp * f
        xy += plan.identity
        m1, m2 = cv2.convertMaps(xy, None, cv2.CV_16SC2)  # type: ignore[call-overload]  # map2 may be None
        hi = cv2.remap(plan.hires, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        bx0, by0 = wp.box[:2]
        x0, y0, x1, y1 = bx0 + ix0, by0 + iy0, bx0 + ix1, by0 + iy1
        offset = np.array([x0, y0], np.float32)
        face_hi = (face - offset) * FACTOR + (FACTOR - 1) / 2
        rest_hi = (avatar.face_rest - offset) * FACTOR + (FACTOR - 1) / 2
        paint.paint_mouth(hi, face_hi, avatar.mouth_color, wp.iod * FACTOR)
        paint.paint_eyelids(hi, face_hi, rest_hi, avatar.skin_color, wp.iod * FACTOR)
        lo = cv2.resize(hi, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        blur = cv2.GaussianBlur(lo, (0, 0), 1.0)
        sharp = cv2.addWeighted(lo, 1.0 + SHARPEN, blur, -SHARPEN, 0)
        out = frame.copy()
        region = out[y0:y1, x0:x1]
        region[:] = cv2.blendLinear(sharp, region, plan.face_weight, plan.body_weight)
        return out

    def refine_batch(self, items: Sequence[tuple[Avatar, np.ndarray, MotionFrame]]
                     ) -> list[np.ndarray]:
        return [self.refine(avatar, frame, motion) for avatar, frame, motion in items]

    def close(self) -> None:
        self.plans.clear()
