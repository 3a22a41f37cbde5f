"""Portrait analysis: mediapipe landmarks, the canvas fit and the colours a renderer needs.

Runs once per avatar. The mediapipe graphs (face mesh, pose with segmentation, hands) ship
their models inside the wheel, so nothing is downloaded; a ``PortraitAnalyser`` builds them
once and reuses them for every avatar.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import cv2
import numpy as np

from avatarflow.avatars import mouthclose
from avatarflow.avatars.store import Avatar
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, MissingExtra

# Per mode: eye midpoint height (fraction of canvas height), IOD (fraction of canvas width).
FRAMING = {"upper-body": (0.34, 0.15), "head": (0.42, 0.27)}
MODES = tuple(FRAMING)
# Typical shoulder width in IODs, used when the shoulders are not in the picture.
SHOULDERS_PER_IOD = 5.0
HAND_ASSIGN_MAX = 0.6  # body units: a hand farther than this from a wrist is not that wrist's


def _landmarks(result_landmarks, w: int, h: int) -> np.ndarray:
    return np.array([(p.x * w, p.y * h, p.z * w) for p in result_landmarks.landmark],
                    dtype=np.float64)


def fit_canvas(eye_mid: np.ndarray, iod: float, mode: str, width: int,
               height: int) -> np.ndarray:
    """Similarity (scale + shift, upright) placing the eyes per the mode's framing: 2 x 3."""
    eye_y, iod_frac = FRAMING[mode]
    s = iod_frac * width / max(iod, 1e-6)
    tx = width / 2 - s * eye_mid[0]
    ty = eye_y * height - s * eye_mid[1]
    return np.array([[s, 0.0, tx], [0.0, s, ty]], dtype=np.float64)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts[..., :2] @ m[:, :2].T + m[:, 2]


def fit_face_axes(face_points: np.ndarray) -> np.ndarray:
    """Least-squares scale + in-plane rotation from template (x, y) to canvas px: 2 x 3.

    The z column is left at zero: the camera is treated as orthographic, so depth motion of
    the template does not shift pixels.
    """
    t = mo.HEAD_TEMPLATE[:, :2].astype(np.float64)
    p = face_points.astype(np.float64)
    tc, pc = t - t.mean(0), p - p.mean(0)
    # Complex-number least squares: p = z * t with z = s * exp(i theta).
    tz, pz = tc[:, 0] + 1j * tc[:, 1], pc[:, 0] + 1j * pc[:, 1]
    z = np.vdot(tz, pz) / np.vdot(tz, tz)
    a, b = z.real, z.imag
    return np.array([[a, -b, 0.0], [b, a, 0.0]], dtype=np.float32)


def _sample(img: np.ndarray, pts: np.ndarray, radius: int) -> np.ndarray:
    """Median colour of small patches around ``pts`` (N x 2 px)."""
    h, w = img.shape[:2]
    out = []
    for x, y in np.round(pts).astype(int):
        x0, x1 = np.clip([x - radius, x + radius + 1], 0, w)
        y0, y1 = np.clip([y - radius, y + radius + 1], 0, h)
        if x1 > x0 and y1 > y0:
            out.append(img[y0:y1, x0:x1].reshape(-1, 3))
    if not out:
        return np.array([128, 100, 90], dtype=np.float64)
    return np.median(np.concatenate(out), axis=0).astype(np.float64)


def _soften_outside(canvas: np.ndarray, src: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Where the canvas reaches past the portrait, edge replication draws streaks; a heavy
    blur of them, feathered in, reads as out-of-focus background instead."""
    h, w = canvas.shape[:2]
    inside = cv2.warpAffine(np.ones(src.shape[:2], np.float32), m, (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(0,))
    if inside.min() >= 0.999:
        return canvas
    soft = cv2.GaussianBlur(canvas, (0, 0), w / 24)
    alpha = cv2.GaussianBlur(inside, (0, 0), 3)[..., None]
    return (alpha * canvas + (1.0 - alpha) * soft).astype(np.uint8)


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """Silences what mediapipe's C++ side writes to stderr while its graphs start and run
    (feedback-tensor and projection notices a user cannot act on). Python errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class PortraitAnalyser:
    """Owns the mediapipe graphs; ``analyse`` turns a portrait into an ``Avatar``."""

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ModuleNotFoundError as exc:  # pragma: no cover - render extra
            raise MissingExtra("mediapipe", "render") from exc
        sol = mp.solutions
        with _quiet_native_logs():
            self._face = sol.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                max_num_faces=1)
            self._pose = sol.pose.Pose(static_image_mode=True, enable_segmentation=True)
            self._hands = sol.hands.Hands(static_image_mode=True, max_num_hands=2)
            self._selfie = sol.selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._lock = threading.Lock()  # mediapipe graphs are not re-entrant

    def close(self) -> None:
        for g in (self._face, self._pose, self._hands, self._selfie):
            g.close()

    def _face_mesh(self, img: np.ndarray, pose_lm: np.ndarray | None) -> np.ndarray | None:
        h, w = img.shape[:2]
        res = self._face.process(img)
        if res.multi_face_landmarks:
            return _landmarks(res.multi_face_landmarks[0], w, h)
        if pose_lm is None:
            return None
        # Small faces in wide shots: retry on a crop around the pose's face landmarks.
        face = pose_lm[:11, :2]
        c = face.mean(0)
        half = max(float(np.ptp(face[:, 0])), float(np.ptp(face[:, 1])), 16.0) * 1.6
        x0, y0 = (np.maximum(c - half, 0)).astype(int)
        x1, y1 = int(min(c[0] + half, w)), int(min(c[1] + half, h))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        crop = np.ascontiguousarray(img[y0:y1, x0:x1])
        res = self._face.process(crop)
        if not res.multi_face_landmarks:
            return None
        lm = _landmarks(res.multi_face_landmarks[0], x1 - x0, y1 - y0)
        lm[:, 0] += x0
        lm[:, 1] += y0
        return lm

    def analyse(self, image_rgb: np.ndarray, avatar_id: str, mode: str, width: int,
                height: int) -> Avatar:
        """Finds the face, body and hands and fits the portrait to a ``width x height`` canvas."""
        if mode not in FRAMING:
            raise InvalidInput(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        img = np.ascontiguousarray(image_rgb[..., :3], dtype=np.uint8)
        ph, pw = img.shape[:2]
        with self._lock, _quiet_native_logs():
            pose = self._pose.process(img)
            pose_lm = (_landmarks(pose.pose_landmarks, pw, ph)
                       if pose.pose_landmarks else None)
            pose_vis = (np.array([p.visibility for p in pose.pose_landmarks.landmark])
                        if pose.pose_landmarks else None)
            lm = self._face_mesh(img, pose_lm)
            if lm is None:
                raise InvalidInput(
                    "no face found in the image: upload a well-lit, roughly frontal photo "
                    "in which one face is clearly visible (at least ~80 px between the eyes "
                    "works best)")
            hands = self._hands.process(img)
            mask = pose.segmentation_mask
            if mask is None:
                mask = self._selfie.process(img).segmentation_mask
        return self._build(img, lm, pose_lm, pose_vis, hands, mask, avatar_id, mode,
                           width, height)

    def _build(self, img, lm, pose_lm, pose_vis, hands, mask, avatar_id, mode, width,
               height) -> Avatar:
        ph, pw = img.shape[:2]
        k = mo.HEAD_MEDIAPIPE_INDEX
        ring = {s: [mo.HEAD[n] for n in names] for s, names in mo.EYE_RINGS.items()}
        face_p = lm[k, :2]
        eye_r, eye_l = face_p[ring["right"]].mean(0), face_p[ring["left"]].mean(0)
        iod = float(np.linalg.norm(eye_l - eye_r))
        m = fit_canvas((eye_r + eye_l) / 2, iod, mode, width, height)
        s = m[0, 0]

        src = img
        src_m = m
        if s < 0.5:  # pre-shrink big portraits so the warp does not alias
            f = min(1.0, 2 * s)
            src = cv2.resize(img, (max(1, round(pw * f)), max(1, round(ph * f))),
                             interpolation=cv2.INTER_AREA)
            src_m = m.copy()
            src_m[:, :2] *= pw / src.shape[1]
        interp = cv2.INTER_CUBIC if s > 1 else cv2.INTER_LINEAR
        canvas = cv2.warpAffine(src, src_m, (width, height), flags=interp,
                                borderMode=cv2.BORDER_REPLICATE)
        canvas = _soften_outside(canvas, src, src_m)

        face_points = _apply(m, face_p).astype(np.float32)
        face_axes = fit_face_axes(face_points)
        iod_px = float(np.hypot(*face_axes[:, 0]))
        closing = mouthclose.MouthClosing(face_points, iod_px)
        face_rest = closing.forward(face_points).astype(np.float32)

        body_points, body_visible, body_scale = self._body(pose_lm, pose_vis, m, face_points,
                                                           face_axes, width, height)
        hand_points, hand_visible = self._hand_points(hands, pw, ph, m, body_points,
                                                      body_scale, width, height)

        pm = cv2.warpAffine(mask.astype(np.float32), m, (width, height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sigma = max(1.0, iod_px / 20)
        pm = cv2.GaussianBlur(np.clip(pm, 0, 1), (0, 0), sigma)

        lips = face_points[[mo.HEAD[n] for n in ("lip_up", "lip_lo", "lip_up_r", "lip_up_l",
                                                   "lip_lo_r", "lip_lo_l")]]
        lips = lips + (face_points[mo.HEAD["in_up"]] - lips) * 0.35  # into the lip body
        lip = _sample(canvas, lips, max(1, round(iod_px / 40)))
        mouth = np.clip(lip * np.array([0.42, 0.22, 0.22]) + np.array([8, 2, 2]), 0, 255)
        brow_eye = []
        for side, brow in (("right", "brow_r_mid"), ("left", "brow_l_mid")):
            up = face_points[mo.HEAD["eye_r_up" if side == "right" else "eye_l_up"]]
            brow_eye.append(up + (face_points[mo.HEAD[brow]] - up) * 0.45)
        skin = _sample(canvas, np.array(brow_eye), max(1, round(iod_px / 30)))

        return Avatar(
            avatar_id=avatar_id, mode=mode, width=width, height=height, canvas=canvas,
            portrait=img, canvas_from_portrait=m, face_points=face_points, face_rest=face_rest,
            face_axes=face_axes, body_points=body_points, body_visible=body_visible,
            body_scale=body_scale, hand_points=hand_points, hand_visible=hand_visible,
            person_mask=pm.astype(np.float32), mouth_color=mouth.astype(np.uint8),
            skin_color=skin.astype(np.uint8))

    @staticmethod
    def _body(pose_lm, pose_vis, m, face_points, face_axes, width, height):
        iod_px = float(np.hypot(*face_axes[:, 0]))
        chin = face_points[mo.HEAD["chin"]]
        fallback_scale = SHOULDERS_PER_IOD * iod_px
        if pose_lm is None:
            origin = chin + np.array([0.0, 0.9 * iod_px])
            pts = origin + fallback_scale * mo.BODY_CANONICAL[:, :2]
            return pts.astype(np.float32), np.zeros(mo.B, bool), fallback_scale
        pts = _apply(m, pose_lm[mo.BODY_MEDIAPIPE_INDEX])
        vis = pose_vis[mo.BODY_MEDIAPIPE_INDEX] > 0.5
        inside = ((pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0)
                  & (pts[:, 1] < height))
        visible = vis & inside
        sh = [mo.BODY["shoulder_r"], mo.BODY["shoulder_l"]]
        if visible[sh].all():
            scale = float(np.linalg.norm(pts[sh[0]] - pts[sh[1]]))
            scale = scale if scale > 2 * iod_px else fallback_scale
        else:
            scale = fallback_scale
        return pts.astype(np.float32), visible, scale

    @staticmethod
    def _hand_points(hands, pw, ph, m, body_points, body_scale, width, height):
        points = np.zeros((2, mo.HAND_JOINTS, 2), np.float32)
        visible = np.zeros(2, bool)
        wrists = body_points[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]  # HANDS order
        for i in range(2):
            points[i] = wrists[i] + body_scale * mo.HAND_REST[i, :, :2]
        if not hands.multi_hand_landmarks:
            return points, visible
        for hl in hands.multi_hand_landmarks:
            pts = _apply(m, _landmarks(hl, pw, ph))
            # Assign by proximity to the pose wrists: mediapipe's handedness label assumes a
            # mirrored selfie image.
            d = np.linalg.norm(wrists - pts[0], axis=1) / body_scale
            i = int(np.argmin(d))
            if d[i] > HAND_ASSIGN_MAX or visible[i]:
                continue
            if (pts[:, 0].min() < 0 or pts[:, 1].min() < 0 or pts[:, 0].max() >= width
                    or pts[:, 1].max() >= height):
                continue
            points[i], visible[i] = pts, True
        return points, visible


def analyse(image_rgb: np.ndarray, avatar_id: str, mode: str, width: int,
            height: int) -> Avatar:
    """One-off analysis with throw-away graphs; the renderer stage keeps a ``PortraitAnalyser``."""
    analyser = PortraitAnalyser()
    try:
        return analyser.analyse(image_rgb, avatar_id, mode, width, height)
    finally:
        analyser.close()
