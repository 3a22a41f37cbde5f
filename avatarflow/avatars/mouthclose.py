"""Closing a portrait's mouth: the rest pose must show closed lips even when the photo smiles
with teeth.

Per image column between the mouth corners, the band between the inner lips (the teeth) is
squeezed onto the lips' midline: the upper lip stretches down from ``top`` and the lower lip
up from ``bottom``. The map is exact and discontinuous at the midline, which a smooth warp
field could not represent, so it is applied once per avatar (``closed_canvas``) and the
per-frame warp starts from the closed face (``Avatar.face_rest``).
"""

from __future__ import annotations

import numpy as np

from avatarflow.avatars._cv import cv2
from avatarflow.contracts import motion as mo

UPPER = ("in_r", "in_up_r", "in_up", "in_up_l", "in_l")
LOWER = ("in_r", "in_lo_r", "in_lo", "in_lo_l", "in_l")
ABOVE, BELOW = 0.35, 0.6  # IOD: how far above / below the midline the squeeze reaches
WIDEN = 0.02  # IOD: extra squeeze so teeth between the keypoints do not peek out


class MouthClosing:
    """The closing map of one face, from its inner-lip keypoints (canvas px)."""

    def __init__(self, face_points: np.ndarray, iod_px: float) -> None:
        up = face_points[[mo.HEAD[n] for n in UPPER]].astype(np.float64)
        lo = face_points[[mo.HEAD[n] for n in LOWER]].astype(np.float64)
        self.x = np.linspace(up[0, 0], up[-1, 0], 33)
        if self.x[-1] <= self.x[0] + 1:
            self.x = np.array([0.0, 1.0])
            self.u = self.l = np.zeros(2)
        else:
            ou, ol = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
            self.u = np.interp(self.x, up[ou, 0], up[ou, 1])
            self.l = np.interp(self.x, lo[ol, 0], lo[ol, 1])
            gap = np.maximum(self.l - self.u, 0.0)
            t = (self.x - self.x[0]) / (self.x[-1] - self.x[0])
            widen = WIDEN * iod_px * 4 * t * (1 - t) * min(1.0, gap.max() / (0.05 * iod_px))
            self.u, self.l = self.u - widen, np.maximum(self.l, self.u) + widen
        self.mid = (self.u + self.l) / 2
        self.top = np.minimum(self.mid - ABOVE * iod_px, self.u - 2)
        self.bottom = np.maximum(self.mid + BELOW * iod_px, self.l + 2)
        self.active = bool((self.l - self.u).max() > 0.25)

    def _columns(self, x: np.ndarray):
        f = [np.interp(x, self.x, v) for v in (self.u, self.l, self.mid, self.top, self.bottom)]
        inside = (x > self.x[0]) & (x < self.x[-1])
        return inside, f

    def backward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Source y for closed-face pixels (x, y): same shape as y."""
        if not self.active:
            return y.astype(np.float32)
        inside, (u, lo, mid, top, bot) = self._columns(x)
        sy = y.astype(np.float64).copy()
        a = inside & (y >= top) & (y <= mid)
        sy[a] = (top + (y - top) * (u - top) / np.maximum(mid - top, 1e-6))[a]
        b = inside & (y > mid) & (y <= bot)
        sy[b] = (bot - (bot - y) * (bot - lo) / np.maximum(bot - mid, 1e-6))[b]
        return sy.astype(np.float32)

    def forward(self, points: np.ndarray) -> np.ndarray:
        """Where source points (N x 2) land on the closed face."""
        out = points.astype(np.float64).copy()
        if not self.active:
            return out
        x, y = out[:, 0], out[:, 1]
        inside, (u, lo, mid, top, bot) = self._columns(x)
        ny = y.copy()
        a = inside & (y >= top) & (y < u)
        ny[a] = (top + (y - top) * (mid - top) / np.maximum(u - top, 1e-6))[a]
        b = inside & (y >= u) & (y <= lo)
        ny[b] = mid[b]
        c = inside & (y > lo) & (y <= bot)
        ny[c] = (bot - (bot - y) * (bot - mid) / np.maximum(bot - lo, 1e-6))[c]
        out[:, 1] = ny
        return out

    def zone(self, width: int, height: int, pad: int = 2) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) the closing changes."""
        x0 = int(np.clip(np.floor(self.x[0]) - pad, 0, width))
        x1 = int(np.clip(np.ceil(self.x[-1]) + pad, 0, width))
        y0 = int(np.clip(np.floor(self.top.min()) - pad, 0, height))
        y1 = int(np.clip(np.ceil(self.bottom.max()) + pad, 0, height))
        return x0, y0, x1, y1

    def source_map(self, x0: int, y0: int, x1: int, y1: int,
                   factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Canvas-px source coordinates for a box sampled ``factor`` times per pixel."""
        xs = x0 + (np.arange((x1 - x0) * factor, dtype=np.float64) + 0.5) / factor - 0.5
        ys = y0 + (np.arange((y1 - y0) * factor, dtype=np.float64) + 0.5) / factor - 0.5
        gx, gy = np.meshgrid(xs, ys)
        return gx.astype(np.float32), self.backward(gx, gy)


def closed_canvas(canvas: np.ndarray, closing: MouthClosing) -> np.ndarray:
    """The canvas with the closing applied (a copy)."""
    out = canvas.copy()
    if not closing.active:
        return out
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = closing.zone(w, h)
    if x1 <= x0 or y1 <= y0:
        return out
    mx, my = closing.source_map(x0, y0, x1, y1)
    out[y0:y1, x0:x1] = cv2.remap(canvas, mx, my, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return out
