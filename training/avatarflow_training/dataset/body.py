"""Upper-body and hand motion labels from mediapipe's pose and hand graphs.

The engines move the body in canonical body units (``avatarflow.contracts.motion``): the
shoulders at x = +-0.5 around their midpoint, y down, depth scaled as x; hands as 21 joints
each, (left, right) being the person's own. A clip's labels are relative to its reference: the
median shoulder midpoint and shoulder width over its frames, so a sway or a lean shows as
motion and the framing of the shot does not.

Hands are matched to the pose's wrists by distance, not by mediapipe's handedness, which
assumes a mirrored (selfie) image. A hand's depth is its own (relative to its wrist) added to
the pose's wrist depth. Frames without shoulders carry NaN body and hands; a hand not found
carries NaN; per keypoint, ``body_visible`` says whether mediapipe saw it (visibility >= 0.5:
hips are often outside an upper-body shot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import MissingExtra

VISIBLE = 0.5
_SHOULDERS = [mo.BODY["shoulder_l"], mo.BODY["shoulder_r"]]
_WRISTS = [mo.BODY["wrist_l"], mo.BODY["wrist_r"]]  # in HANDS order: left, right


@dataclass
class BodyObservation:
    """One frame in pixels (depth scaled as x)."""

    body: np.ndarray  # B x 3 float64
    visibility: np.ndarray  # B float64
    hands: np.ndarray  # 2 x 21 x 3 float64 (left, right), NaN where not found


@dataclass
class BodyLabels:
    """A clip's body labels, T frames."""

    present: np.ndarray  # T bool: the shoulders were seen
    body: np.ndarray  # T x B x 3 float32, canonical body units
    body_visible: np.ndarray  # T x B bool
    hands: np.ndarray  # T x 2 x 21 x 3 float32 (left, right), canonical body units
    hands_present: np.ndarray  # T x 2 bool


class BodyTracker:
    """``track(rgb)`` -> BodyObservation, or None when no person is found."""

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ModuleNotFoundError as exc:  # pragma: no cover - render extra
            raise MissingExtra("mediapipe", "render") from exc
        sol = mp.solutions
        self._pose = sol.pose.Pose(static_image_mode=False, model_complexity=1)
        self._hands = sol.hands.Hands(static_image_mode=False, max_num_hands=2)

    def track(self, rgb: np.ndarray) -> BodyObservation | None:
        img = np.ascontiguousarray(rgb[..., :3])
        h, w = img.shape[:2]
        pose = self._pose.process(img).pose_landmarks
        if pose is None:
            return None
        lm = pose.landmark
        body = np.array([(lm[i].x * w, lm[i].y * h, lm[i].z * w)
                         for i in mo.BODY_MEDIAPIPE_INDEX])
        visibility = np.array([lm[i].visibility for i in mo.BODY_MEDIAPIPE_INDEX])
        hands = np.full((2, mo.HAND_JOINTS, 3), np.nan)
        found = self._hands.process(img).multi_hand_landmarks or []
        taken: set[int] = set()
        for hand in found:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in hand.landmark])
            dist = [np.linalg.norm(pts[0, :2] - body[j, :2]) for j in _WRISTS]
            side = int(np.argmin(dist))
            if side in taken:  # two hands at one wrist: keep the nearer
                continue
            taken.add(side)
            pts[:, 2] += body[_WRISTS[side], 2] - pts[0, 2]
            hands[side] = pts
        return BodyObservation(body, visibility, hands)

    def close(self) -> None:
        self._pose.close()
        self._hands.close()

    def __enter__(self) -> BodyTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def body_labels(observations: list[BodyObservation | None]) -> BodyLabels:
    """Labels of a clip from its per-frame observations (None: nobody found)."""
    n, b = len(observations), mo.B
    out = BodyLabels(np.zeros(n, bool), np.full((n, b, 3), np.nan, np.float32),
                     np.zeros((n, b), bool),
                     np.full((n, 2, mo.HAND_JOINTS, 3), np.nan, np.float32),
                     np.zeros((n, 2), bool))
    seen = [(i, o) for i, o in enumerate(observations)
            if o is not None and (o.visibility[_SHOULDERS] >= VISIBLE).all()]
    if not seen:
        return out
    mids = np.stack([o.body[_SHOULDERS].mean(axis=0) for _, o in seen])
    widths = [float(np.linalg.norm(o.body[_SHOULDERS[0], :2] - o.body[_SHOULDERS[1], :2]))
              for _, o in seen]
    mid, width = np.median(mids, axis=0), max(float(np.median(widths)), 1e-6)
    for i, o in seen:
        out.present[i] = True
        out.body[i] = (o.body - mid) / width
        out.body_visible[i] = o.visibility >= VISIBLE
        out.hands[i] = (o.hands - mid) / width
        out.hands_present[i] = ~np.isnan(o.hands).any(axis=(1, 2))
    return out
