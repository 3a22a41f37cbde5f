"""The per-frame backward warp: thin-plate-spline displacement fields from keypoint motion.

For an output pixel q the source pixel is ``q + f(q)``; ``f`` is fitted at the TARGET keypoint
positions with values ``source - target`` in two layers:

- body: a thin-plate spline through the body and hand keypoints, pinned to zero at fixed anchors
  (canvas border, background away from the person) so the background stays still;
- head: the face keypoints' remaining motion, a thin-plate spline pinned to zero on a ring
  around the head and faded out just beyond it, so face motion stays local (an unpinned
  spline would bulge the torso when the jaw opens; compactly supported kernels ring when
  eyelid points close in on each other).

Both are evaluated on a coarse grid over the canvas and the head layer also on a finer grid
over the face, then upsampled. Everything that depends only on the avatar
(anchors, grids, their kernel blocks, the closed-mouth base image) lives in a ``WarpPlan``.
The renderer's warp engine and the refiner's blend engine both use it, so the body pass and the
refined face agree on the geometry.

A frame's controls, field and the field's grid evaluations are a ``Solved``, made once per
motion frame and plan (``WarpPlan.solve``). The plans are the process's (``plans``): where the
refiner runs in the renderer's process (embedded, co-located) it gets the very MotionFrame the
renderer had, and so the renderer's solution instead of solving the frame again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from avatarflow.avatars._cv import cv2
from avatarflow.avatars.mouthclose import MouthClosing, closed_canvas
from avatarflow.avatars.plans import PlanCache
from avatarflow.avatars.store import Avatar
from avatarflow.contracts import motion as mo
from avatarflow.contracts.messages import MotionFrame

# Face box in head-template units (x, y): the fine grid and the refiner's region.
FACE_BOX = ((-1.45, -1.0), (1.45, 2.35))
HEAD_RING = ((0.0, 0.35), (2.0, 2.3), 24)  # centre, semi-axes (IOD), points
FADE = (1.0, 1.25)  # head layer weight 1 inside the ring, 0 beyond 1.25 ring radii
HAND_JOINTS_USED = (0, 2, 4, 5, 8, 9, 12, 13, 16, 17, 20)
ROI_EPS = 0.3  # px: displacements below this are not worth resampling
# Share of the blink's lid motion done by the warp; the painted lid does the rest (stretching
# the thin lid fold of an open-eyed photo any further smears the brow).
LID_WARP = 0.4
BLINKS = [mo.EXPR["blink_left"], mo.EXPR["blink_right"]]
SOLVED_KEPT = 32  # frames' solutions a plan keeps (a batch of frames is rendered, then refined)


def iod_px(avatar: Avatar) -> float:
    return float(np.hypot(*avatar.face_axes[:, 0]))


def tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """r^2 log r between point sets (N x 2, M x 2, normalised units): N x M float32."""
    dx = a[:, 0:1].astype(np.float32) - b[:, 0].astype(np.float32)
    dy = a[:, 1:2].astype(np.float32) - b[:, 1].astype(np.float32)
    r2 = dx * dx
    r2 += dy * dy
    np.maximum(r2, 1e-12, out=r2)
    return cv2.log(r2) * r2 * 0.5


def face_targets(avatar: Avatar, motion: MotionFrame,
                 template: np.ndarray | None = None) -> np.ndarray:
    """Driven head keypoints in canvas px: K x 2 float32."""
    tpl = motion.head_template if template is None else template
    d = mo.head_keypoints(tpl, motion.head_offset, motion.rotation, motion.translation,
                          float(motion.scale))
    return (avatar.face_rest + (d - mo.HEAD_TEMPLATE) @ avatar.face_axes.T).astype(np.float32)


def warp_targets(avatar: Avatar, motion: MotionFrame, face: np.ndarray) -> np.ndarray:
    """Face targets for the warp: the lids travel only ``LID_WARP`` of a blink."""
    blink = np.asarray(motion.expression, np.float32)[BLINKS]
    if not np.any(blink):
        return face
    tpl = motion.head_template - np.tensordot(blink, mo.EXPRESSION_BASIS[BLINKS], axes=1)
    open_eyes = face_targets(avatar, motion, tpl)
    return open_eyes + LID_WARP * (face - open_eyes)


def _cell_grid(x0: int, y0: int, w: int, h: int, cell: int) -> tuple[np.ndarray, tuple]:
    """Cell-centre points of a box, laid out so ``cv2.resize`` by ``cell`` lands on pixels."""
    gw, gh = w // cell, h // cell
    xs = x0 + cell * np.arange(gw) + (cell - 1) / 2
    ys = y0 + cell * np.arange(gh) + (cell - 1) / 2
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32), (gh, gw)


def _ramp(h: int, w: int, width: float) -> np.ndarray:
    """Weight 0 at a box's edge rising to 1 ``width`` px inside: h x w x 1 float32."""
    ry = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / width
    rx = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / width
    r = np.clip(np.minimum.outer(ry, rx), 0, 1)
    return (r * r * (3 - 2 * r)).astype(np.float32)[..., None]


def _spline_block_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a thin-plate spline system over fixed points ``a`` (normalised)."""
    na = len(a)
    blk = np.zeros((na + 3, na + 3))
    blk[:na, :na] = tps_kernel(a, a)
    blk[np.arange(na), np.arange(na)] += 1e-7
    blk[:na, na] = 1.0
    blk[:na, na + 1:] = a
    blk[na, :na] = 1.0
    blk[na + 1:, :na] = a.T
    return np.linalg.inv(blk)


def _solve_pinned(t: np.ndarray, a: np.ndarray, a_inv: np.ndarray,
                  vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spline weights for moving points ``t`` with values ``vals`` and fixed zero points ``a``.

    Solves ``[[K_tt, B^T], [B, A]] [w; z] = [vals; 0]`` through the Schur complement of the
    fixed block ``A`` (inverse given), so a frame solves only a small system. Returns the
    moving weights and ``z`` (fixed-point weights, then the 3 affine rows).
    """
    na, m = len(a), len(t)
    b = np.empty((na + 3, m))
    b[:na] = tps_kernel(a, t)
    b[na] = 1.0
    b[na + 1:] = t.T
    k = tps_kernel(t, t).astype(np.float64)
    k[np.arange(m), np.arange(m)] += 1e-7
    a_inv_b = a_inv @ b
    w = np.linalg.solve(k - b.T @ a_inv_b, vals)
    return w, -a_inv_b @ w


@dataclass(eq=False)
class Field:
    """One frame's two-layer displacement field (px); evaluate it with the plan's grids."""

    plan: WarpPlan
    body_centres: np.ndarray | None  # N x 2 normalised: moving body targets, then anchors
    body_w: np.ndarray | None  # N x 2
    body_affine: np.ndarray | None  # 3 x 2
    head_centres: np.ndarray | None  # H x 2 normalised: face targets, then the ring
    head_w: np.ndarray | None  # H x 2
    head_affine: np.ndarray | None  # 3 x 2

    @property
    def zero(self) -> bool:
        return self.body_w is None and self.head_w is None

    def body(self, pts: np.ndarray, anchor_kernel: np.ndarray) -> np.ndarray:
        """Body-layer displacements (px) at points whose anchor kernel is precomputed."""
        centres, w, affine = self.body_centres, self.body_w, self.body_affine
        if centres is None or w is None or affine is None:  # all or none are set
            return np.zeros((len(pts), 2), np.float32)
        s, m = self.plan.norm, len(w) - len(self.plan.anchors)
        p = pts / s
        v = tps_kernel(p, centres[:m]) @ w[:m]
        v += anchor_kernel @ w[m:]
        v += affine[0] + p @ affine[1:]
        return v * s

    def head(self, pts: np.ndarray, fade: np.ndarray) -> np.ndarray:
        """Head-layer displacements (px) at points with precomputed fade weights (N x 1)."""
        centres, w, affine = self.head_centres, self.head_w, self.head_affine
        if centres is None or w is None or affine is None:  # all or none are set
            return np.zeros((len(pts), 2), np.float32)
        s = self.plan.norm
        p = pts / s
        v = tps_kernel(p, centres) @ w
        v += affine[0] + p @ affine[1:]
        return v * (fade * s)


class Solved:
    """One motion frame's warp on one plan: the face keypoints the painters use, the field, and
    the field's grid evaluations, each computed when first asked for."""

    __slots__ = ("plan", "face", "field", "_body", "_coarse", "_fine")

    def __init__(self, plan: WarpPlan, face: np.ndarray, fld: Field) -> None:
        self.plan, self.face, self.field = plan, face, fld
        self._body: np.ndarray | None = None
        self._coarse: np.ndarray | None = None
        self._fine: np.ndarray | None = None

    def body(self) -> np.ndarray | None:
        """The body layer on the coarse grid (gh x gw x 2, px), None where it is zero."""
        fld = self.field
        if self._body is None and fld.body_w is not None:
            p = self.plan
            self._body = (fld.body(p.coarse_pts, p.k_ca).reshape(*p.coarse_shape, 2)
                          * p.coarse_person)
        return self._body

    def coarse(self) -> np.ndarray:
        """Both layers on the coarse grid: gh x gw x 2 px."""
        if self._coarse is None:
            p, fld, body = self.plan, self.field, self.body()
            gh, gw = p.coarse_shape
            total = (np.zeros((gh * gw, 2), np.float32) if body is None
                     else body.reshape(-1, 2).copy())
            if fld.head_w is not None:
                total[p.head_idx] += fld.head(p.coarse_pts[p.head_idx], p.coarse_fade)
            self._coarse = total.reshape(gh, gw, 2)
        return self._coarse

    def fine(self, cells: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Both layers on the fine grid (or its ``cells`` window r0, r1, c0, c1): the whole
        grid is kept once computed; a window alone is not."""
        if self._fine is not None:
            if cells is None:
                return self._fine
            r0, r1, c0, c1 = cells
            return self._fine[r0:r1, c0:c1]
        fine = self.plan.fine_layers(self.field, self.body(), cells)
        if cells is None:
            self._fine = fine
        return fine


class WarpPlan:
    """Session-constant pieces of the warp for one avatar."""

    def __init__(self, avatar: Avatar, cell: int = 16) -> None:
        self.avatar = avatar
        w, h = avatar.width, avatar.height
        self.width, self.height, self.cell = w, h, cell
        self.norm = max(w, h) / 4.0
        self.iod = iod_px(avatar)
        self.closing = MouthClosing(avatar.face_points, self.iod)
        self.base = closed_canvas(avatar.canvas, self.closing)

        self.coarse_pts, self.coarse_shape = _cell_grid(0, 0, w, h, cell)
        self.fine_cell = int(np.clip(round(self.iod / 15), 3, 10))
        self.box = self._face_box()
        x0, y0, x1, y1 = self.box
        self.fine_pts, self.fine_shape = _cell_grid(x0, y0, x1 - x0, y1 - y0, self.fine_cell)
        # Weights of the fine layer and of the coarse one over the face box (cv2.blendLinear).
        self.fine_ramp = _ramp(y1 - y0, x1 - x0, 2.0 * self.fine_cell)[..., 0]
        self.coarse_ramp = 1.0 - self.fine_ramp

        self.ring = self._ring()
        self.person = self._person_weight()
        coarse_fade = self._fade(self.coarse_pts)
        self.head_idx = np.nonzero(coarse_fade[:, 0] > 0)[0]
        self.coarse_fade = coarse_fade[self.head_idx]
        self.fine_fade = self._fade(self.fine_pts)
        self.ring_inv = _spline_block_inverse(self.ring / self.norm)
        self.anchors = self._anchors()
        a = self.anchors / self.norm
        self.a_inv = _spline_block_inverse(a)
        self.k_ca = tps_kernel(self.coarse_pts / self.norm, a)
        self.coarse_person = self._at(self.person, self.coarse_pts).reshape(
            *self.coarse_shape, 1)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.identity = np.dstack([gx, gy])  # H x W x 2: the map that moves nothing
        # Fine grid points in coarse-grid index units, to sample the body layer there.
        self.fine_in_coarse = ((self.fine_pts - (cell - 1) / 2) / cell).reshape(
            *self.fine_shape, 2).astype(np.float32)
        self._solved: OrderedDict[int, tuple[MotionFrame, Solved]] = OrderedDict()
        self._solved_lock = threading.Lock()

    def _template_to_canvas(self, pts: np.ndarray) -> np.ndarray:
        av = self.avatar
        origin = av.face_rest[[mo.HEAD["eye_r_out"], mo.HEAD["eye_l_out"]]].mean(0)
        return (origin + pts.astype(np.float32) @ av.face_axes.T).astype(np.float32)

    def _face_box(self) -> tuple[int, int, int, int]:
        c = self.fine_cell
        (ax, ay), (bx, by) = FACE_BOX
        pts = self._template_to_canvas(
            np.array([[ax, ay, 0], [bx, ay, 0], [ax, by, 0], [bx, by, 0]]))
        x0, y0 = np.maximum(np.floor(pts.min(0)), 0).astype(int)
        x1 = int(min(np.ceil(pts[:, 0].max()), self.width))
        y1 = int(min(np.ceil(pts[:, 1].max()), self.height))
        x1 = x0 + max((x1 - x0) // c, 2) * c
        y1 = y0 + max((y1 - y0) // c, 2) * c
        if x1 > self.width:
            x0, x1 = x0 - (x1 - self.width), self.width
        if y1 > self.height:
            y0, y1 = y0 - (y1 - self.height), self.height
        return max(x0, 0), max(y0, 0), x1, y1

    def _person_weight(self) -> np.ndarray:
        """Motion weight per pixel: the person (slightly grown) 1, the background 0, so
        neither layer drags the background along: H x W float32."""
        person = (self.avatar.person_mask > 0.5).astype(np.uint8)
        r = max(2, int(0.15 * self.iod))
        grown = cv2.dilate(person, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
        return cv2.GaussianBlur(grown.astype(np.float32), (0, 0), max(1.0, self.cell / 2))

    @staticmethod
    def _at(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        x = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
        return img[y, x].astype(np.float32)

    def _fade(self, pts: np.ndarray) -> np.ndarray:
        """Head-layer weight by elliptical ring radius: N x 1 float32."""
        (cx, cy), (rx, ry), _ = HEAD_RING
        inv = np.linalg.inv(self.avatar.face_axes[:, :2].astype(np.float64))
        origin = self._template_to_canvas(np.array([[cx, cy, 0.0]]))[0]
        t = (pts - origin) @ inv.T
        r = np.hypot(t[:, 0] / rx, t[:, 1] / ry)
        u = np.clip((FADE[1] - r) / (FADE[1] - FADE[0]), 0, 1)
        return (u * u * (3 - 2 * u) * self._at(self.person, pts)).astype(np.float32)[:, None]

    def _ring(self) -> np.ndarray:
        (cx, cy), (rx, ry), n = HEAD_RING
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self._template_to_canvas(
            np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t), np.zeros(n)], 1))

    def _anchors(self) -> np.ndarray:
        av, w, h = self.avatar, self.width, self.height
        step = 64
        border = [(x, y) for x in np.linspace(0, w - 1, w // step + 1)
                  for y in (0.0, h - 1.0)]
        border += [(x, y) for y in np.linspace(0, h - 1, h // step + 1)[1:-1]
                   for x in (0.0, w - 1.0)]
        # Background: lattice points well away from the person.
        person = (av.person_mask > 0.1).astype(np.uint8)
        r = max(3, int(0.5 * self.iod))
        near = cv2.dilate(person, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
        bg = [(x, y) for y in range(step // 2, h, step) for x in range(step // 2, w, step)
              if not near[y, x]]
        cand = np.array(border + bg, np.float32)
        moving = [av.body_points[av.body_visible]]
        moving += [av.hand_points[i] for i in range(2) if av.hand_visible[i]]
        mv = np.concatenate(moving + [np.full((1, 2), -1e6, np.float32)])
        keep: list[np.ndarray] = []
        min_moving, min_anchor = 0.45 * self.iod, step * 0.4
        for p in cand:
            if np.min(np.hypot(*(mv - p).T)) < min_moving:
                continue
            if keep and np.min(np.hypot(*(np.array(keep) - p).T)) < min_anchor:
                continue
            keep.append(p)
        return np.array(keep, np.float32).reshape(-1, 2)

    # -- per frame -------------------------------------------------------------------------

    def solve(self, motion: MotionFrame) -> Solved:
        """The frame's controls and field, solved once per MotionFrame object: a second engine
        asking for the same frame (the refiner after the renderer, in one process) gets the
        first one's solution and its grid evaluations."""
        with self._solved_lock:
            hit = self._solved.get(id(motion))
            if hit is not None and hit[0] is motion:
                return hit[1]
        rest, warp_face, body_src, body_tgt, face = self.controls(motion)
        solved = Solved(self, face, self.field(rest, warp_face, body_src, body_tgt))
        with self._solved_lock:
            self._solved[id(motion)] = (motion, solved)  # the frame held: its id stays unique
            while len(self._solved) > SOLVED_KEPT:
                self._solved.popitem(last=False)
        return solved

    def controls(self, motion: MotionFrame):
        """(face source, warp face target, body source, body target, face target), canvas px.

        The last is where the keypoints really go (the painters use it); the warp's face
        targets differ only in how far the eyelids travel.
        """
        av = self.avatar
        face = face_targets(av, motion)
        ft = warp_targets(av, motion, face)
        bsrc, btgt = [], []
        vis = av.body_visible
        if vis.any():
            delta = (motion.body - mo.BODY_CANONICAL)[:, :2] * av.body_scale
            bsrc.append(av.body_points[vis])
            btgt.append(av.body_points[vis] + delta[vis])
        for i, wrist in enumerate((mo.BODY["wrist_l"], mo.BODY["wrist_r"])):
            if not av.hand_visible[i]:
                continue
            rest = mo.HAND_REST[i] + mo.BODY_CANONICAL[wrist]
            delta = (motion.hands[i] - rest)[HAND_JOINTS_USED, :2] * av.body_scale
            pts = av.hand_points[i][list(HAND_JOINTS_USED)]
            bsrc.append(pts)
            btgt.append(pts + delta)
        empty = np.zeros((0, 2), np.float32)
        bs = np.concatenate(bsrc) if bsrc else empty
        bt = np.concatenate(btgt) if btgt else empty
        return av.face_rest, ft, bs, bt, face

    def field(self, face_src: np.ndarray, face_tgt: np.ndarray, body_src: np.ndarray,
              body_tgt: np.ndarray) -> Field:
        """Solves both layers for one frame's controls."""
        bc = bw = ba = None
        vals = (body_src.astype(np.float64) - body_tgt) / self.norm
        if len(vals) and np.abs(vals).max() * self.norm > 1e-3:
            a = self.anchors / self.norm
            t = body_tgt.astype(np.float64) / self.norm
            w_m, z = _solve_pinned(t, a, self.a_inv, vals)
            bc = np.concatenate([t, a]).astype(np.float32)
            bw = np.concatenate([w_m, z[: len(a)]]).astype(np.float32)
            ba = z[len(a):].astype(np.float32)
        fld = Field(self, bc, bw, ba, None, None, None)

        want = face_src.astype(np.float64) - face_tgt
        if bw is not None:
            want -= fld.body(face_tgt, tps_kernel(face_tgt / self.norm, self.anchors / self.norm))
        keep = np.ones(len(face_tgt), bool)
        for up, lo in zip(mo.INNER_LIP_UPPER, mo.INNER_LIP_LOWER, strict=True):
            if np.hypot(*(face_tgt[mo.HEAD[up]] - face_tgt[mo.HEAD[lo]])) < 0.75:
                keep[mo.HEAD[lo]] = False  # coincident centres: a singular system
        if np.abs(want[keep]).max() > 1e-3:
            t = face_tgt[keep].astype(np.float64) / self.norm
            r = self.ring / self.norm
            w_m, z = _solve_pinned(t, r, self.ring_inv, want[keep] / self.norm)
            fld.head_centres = np.concatenate([t, r]).astype(np.float32)
            fld.head_w = np.concatenate([w_m, z[: len(r)]]).astype(np.float32)
            fld.head_affine = z[len(r):].astype(np.float32)
        return fld

    def fine_layers(self, fld: Field, coarse_body: np.ndarray | None,
                    cells: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Total displacement on the fine grid (or its ``cells`` window r0, r1, c0, c1), the
        body layer sampled from its coarse grid."""
        gh, gw = self.fine_shape
        r0, r1, c0, c1 = cells or (0, gh, 0, gw)
        pts = self.fine_pts.reshape(gh, gw, 2)[r0:r1, c0:c1].reshape(-1, 2)
        fade = self.fine_fade.reshape(gh, gw, 1)[r0:r1, c0:c1].reshape(-1, 1)
        fine = fld.head(pts, fade).reshape(r1 - r0, c1 - c0, 2)
        if coarse_body is not None:
            g = np.ascontiguousarray(self.fine_in_coarse[r0:r1, c0:c1])
            fine += cv2.remap(coarse_body, g[..., 0], g[..., 1], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return fine

    def backward_map(self, solved: Solved) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Source coordinates for the region that moves: (roi, h x w x 2 map), or None."""
        if solved.field.zero:
            return None
        c = self.cell
        gh, gw = self.coarse_shape
        coarse = solved.coarse()
        big = np.abs(coarse).max(axis=2) > ROI_EPS
        fx0, fy0, fx1, fy1 = self.box
        rows, cols = np.nonzero(big)
        x0, y0, x1, y1 = fx0, fy0, fx1, fy1
        if len(rows):
            x0 = min(x0, (cols.min() - 1) * c)
            x1 = max(x1, (cols.max() + 2) * c)
            y0 = min(y0, (rows.min() - 1) * c)
            y1 = max(y1, (rows.max() + 2) * c)
        # Align the region to coarse cells so the upsampled field lines up with the full grid.
        x0, y0 = max(0, x0 // c * c), max(0, y0 // c * c)
        x1, y1 = min(gw * c, -(-x1 // c) * c), min(gh * c, -(-y1 // c) * c)
        sub = coarse[y0 // c: y1 // c, x0 // c: x1 // c]
        up: np.ndarray = cv2.resize(sub, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        fup: np.ndarray = cv2.resize(solved.fine(), (fx1 - fx0, fy1 - fy0),
                                     interpolation=cv2.INTER_LINEAR)
        bx0, by0 = max(fx0, x0), max(fy0, y0)
        bx1, by1 = min(fx1, x1), min(fy1, y1)
        if bx1 > bx0 and by1 > by0:
            dst = up[by0 - y0: by1 - y0, bx0 - x0: bx1 - x0]
            src = fup[by0 - fy0: by1 - fy0, bx0 - fx0: bx1 - fx0]
            win = (slice(by0 - fy0, by1 - fy0), slice(bx0 - fx0, bx1 - fx0))
            dst[:] = cv2.blendLinear(src, dst, self.fine_ramp[win], self.coarse_ramp[win])
        up += self.identity[y0:y1, x0:x1]
        return (x0, y0, x1, y1), up

    def fine_field(self, solved: Solved, factor: int,
                   region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Displacements (canvas px) over the face box, ``factor`` samples per pixel.

        ``region``: (x0, y0, x1, y1) in face-box px to compute only that part.
        """
        bx0, by0, bx1, by1 = self.box
        x0, y0, x1, y1 = region or (0, 0, bx1 - bx0, by1 - by0)
        if solved.field.zero:
            return np.zeros(((y1 - y0) * factor, (x1 - x0) * factor, 2), np.float32)
        c = self.fine_cell
        gh, gw = self.fine_shape
        r0, c0 = y0 // c, x0 // c
        r1, c1 = min(gh, -(-y1 // c)), min(gw, -(-x1 // c))
        fine = solved.fine((r0, r1, c0, c1))
        up = cv2.resize(fine, ((c1 - c0) * c * factor, (r1 - r0) * c * factor),
                        interpolation=cv2.INTER_LINEAR)
        oy, ox = (y0 - r0 * c) * factor, (x0 - c0 * c) * factor
        return up[oy: oy + (y1 - y0) * factor, ox: ox + (x1 - x0) * factor]


_PLANS: dict[int, PlanCache[WarpPlan]] = {}
_PLANS_LOCK = threading.Lock()


def plans(cell: int = 16) -> PlanCache[WarpPlan]:
    """The process's warp plans with ``cell`` px coarse cells, shared by every engine in it."""
    with _PLANS_LOCK:
        cache = _PLANS.get(cell)
        if cache is None:
            cache = _PLANS[cell] = PlanCache(lambda a: WarpPlan(a, cell))
        return cache
