"""What a warp cannot produce: the inside of an open mouth and a closed eyelid.

Both painters draw in place into an RGB image at any resolution: keypoints are given in that
image's pixels and ``iod`` is the eye distance in the same pixels.
"""

from __future__ import annotations

import numpy as np

from avatarflow.avatars._cv import cv2
from avatarflow.contracts import motion as mo

RING = [mo.HEAD[n] for n in mo.INNER_LIP_RING]
SUB = 3  # fillPoly shift: 8 sub-pixel steps


def closed_curve(pts: np.ndarray, samples: int = 4) -> np.ndarray:
    """Closed Catmull-Rom curve through ``pts`` (N x 2): (N * samples) x 2."""
    p = np.asarray(pts, np.float64)
    p0, p1, p2, p3 = np.roll(p, 1, 0), p, np.roll(p, -1, 0), np.roll(p, -2, 0)
    t = (np.arange(samples) / samples)[:, None, None]
    t2, t3 = t * t, t * t * t
    c = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
               + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
    return c.transpose(1, 0, 2).reshape(-1, 2)


def open_curve(pts: np.ndarray, samples: int = 4) -> np.ndarray:
    """Catmull-Rom through ``pts`` with the ends kept: ((N - 1) * samples + 1) x 2."""
    p = np.asarray(pts, np.float64)
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    p0, p1, p2, p3 = ext[:-3], ext[1:-2], ext[2:-1], ext[3:]
    t = (np.arange(samples) / samples)[:, None, None]
    c = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
               + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
    return np.concatenate([c.transpose(1, 0, 2).reshape(-1, 2), p[-1:]])


def _roi(img: np.ndarray, pts: np.ndarray, pad: int):
    h, w = img.shape[:2]
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - pad, 0)
    x1 = int(min(np.ceil(pts[:, 0].max()) + pad + 1, w))
    y1 = int(min(np.ceil(pts[:, 1].max()) + pad + 1, h))
    return x0, y0, x1, y1


def _mask(shape: tuple[int, int], polys: list[np.ndarray], offset: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    fixed = [np.round((p - offset) * (1 << SUB)).astype(np.int32) for p in polys]
    cv2.fillPoly(m, fixed, (255,), lineType=cv2.LINE_AA, shift=SUB)
    return m.astype(np.float32) * (1.0 / 255)


def _blend(roi: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    a = alpha[..., None]
    roi[:] = np.clip(roi + a * (colour - roi), 0, 255).astype(np.uint8)


def mouth_gap(face: np.ndarray) -> float:
    return float(np.hypot(*(face[mo.HEAD["in_lo"]] - face[mo.HEAD["in_up"]])))


def paint_mouth(img: np.ndarray, face: np.ndarray, colour: np.ndarray, iod: float) -> None:
    """Dark interior with a hint of upper teeth inside the parted inner lips."""
    gap = mouth_gap(face)
    if gap <= 1.0:
        return
    strength = min(1.0, (gap - 1.0) / 1.5)
    curve = closed_curve(face[RING], 6)
    x0, y0, x1, y1 = _roi(img, curve, 2)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    h = y1 - y0
    mask = _mask((h, x1 - x0), [curve], np.array([x0, y0]))
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    base = colour.astype(np.float32)
    fill = base * (0.7 + 0.5 * t)  # shadow under the upper lip, tongue lighter below
    fill = np.broadcast_to(fill, roi.shape).copy()
    band = int(round(min(0.3 * gap, 0.1 * iod)))
    if gap > 0.1 * iod and band >= 1:
        shifted = np.zeros_like(mask)
        shifted[band:] = mask[:-band]
        teeth = cv2.GaussianBlur(mask * (1.0 - shifted), (0, 0), max(0.5, band / 3))
        teeth *= mask * min(1.0, (gap - 0.1 * iod) / (0.1 * iod))
        tooth = np.array([205, 195, 185], np.float32) * 0.7 + base * 0.3
        fill += teeth[..., None] * 0.6 * (tooth - fill)
    _blend(roi, fill, mask * strength)


def eye_closure(face: np.ndarray, rest: np.ndarray, side: str) -> float:
    s = "r" if side == "right" else "l"
    pairs = [(mo.HEAD[f"eye_{s}_up{x}"], mo.HEAD[f"eye_{s}_lo{x}"]) for x in ("_out", "", "_in")]
    gap = sum(np.hypot(*(face[lo] - face[up])) for up, lo in pairs)
    gap0 = sum(np.hypot(*(rest[lo] - rest[up])) for up, lo in pairs)
    return float(np.clip(1.0 - gap / max(gap0, 1e-6), 0.0, 1.0))


def paint_eyelids(img: np.ndarray, face: np.ndarray, rest: np.ndarray, skin: np.ndarray,
                  iod: float) -> None:
    """Covers closing eyes with eyelid skin and a lash line. ``rest``: the open eye's points
    in the same pixels (only its lid shape is used)."""
    for side, names in mo.EYE_RINGS.items():
        closure = eye_closure(face, rest, side)
        alpha = float(np.clip((closure - 0.35) / 0.5, 0.0, 1.0))
        if alpha <= 0.0:
            continue
        alpha = alpha * alpha * (3 - 2 * alpha)
        idx = [mo.HEAD[n] for n in names]
        s = "r" if side == "right" else "l"
        ups = [mo.HEAD[f"eye_{s}_up{x}"] for x in ("_out", "", "_in")]
        los = [mo.HEAD[f"eye_{s}_lo{x}"] for x in ("_out", "", "_in")]
        opened = face.copy()
        opened[ups] = face[los] + (rest[ups] - rest[los])  # the open lid, for coverage
        corners = face[[mo.HEAD[f"eye_{s}_out"], mo.HEAD[f"eye_{s}_in"]]]
        centre = corners.mean(0)
        cover = centre + (opened[idx] - centre) * np.array([1.08, 1.25])
        curve = closed_curve(cover, 4)
        lid = open_curve(np.concatenate([corners[:1], face[ups], corners[1:]]), 4)
        x0, y0, x1, y1 = _roi(img, np.concatenate([curve, lid]), int(iod * 0.05) + 3)
        if x1 <= x0 or y1 <= y0:
            continue
        roi = img[y0:y1, x0:x1]
        off = np.array([x0, y0])
        mask = _mask((roi.shape[0], roi.shape[1]), [curve], off)
        sigma = max(0.6, iod * 0.012)
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
        # Lid colour continues the skin just above the covered region, column by column,
        # darkening a little towards the lashes.
        inside = mask > 0.5
        top = np.where(inside.any(0), inside.argmax(0), roi.shape[0] // 2)
        above = np.clip(top - max(2, int(iod * 0.04)), 0, roi.shape[0] - 1)
        cols = cv2.GaussianBlur(roi, (0, 0), max(1.0, iod * 0.03)).astype(np.float32)
        colour = cols[above, np.arange(roi.shape[1])]  # w x 3
        colour = 0.7 * colour + 0.3 * skin.astype(np.float32)
        rows = np.arange(roi.shape[0])[:, None]
        depth = np.clip((rows - top) / max(1.0, iod * 0.15), 0, 1)[..., None]
        fill = colour[None] * (1.0 - 0.12 * depth)
        lash = np.zeros(roi.shape[:2], np.uint8)
        thick = max(1, int(round(iod * 0.02)))
        pl = np.round((lid - off) * (1 << SUB)).astype(np.int32)
        cv2.polylines(lash, [pl], False, (255,), thick, cv2.LINE_AA, SUB)
        lash_a = lash.astype(np.float32) * (0.8 / 255)
        fill += lash_a[..., None] * (skin.astype(np.float32) * 0.3 - fill)
        _blend(roi, fill, np.maximum(mask, lash_a) * alpha)
