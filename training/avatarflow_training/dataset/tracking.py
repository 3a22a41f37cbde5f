"""Per-frame keypoints of a video with mediapipe's graphs in tracking mode: the face mesh's
head keypoints (``avatarflow.contracts.motion.HEAD_MEDIAPIPE_INDEX``) in pixels, depth scaled
as x. One tracker per clip: the graphs carry the previous frame's result forward."""

from __future__ import annotations

import numpy as np

from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import MissingExtra


class FaceTracker:
    """``track(rgb)`` -> K x 3 float64 head keypoints, or None when no face is found."""

    def __init__(self) -> None:
        try:
            import mediapipe as mp
        except ModuleNotFoundError as exc:  # pragma: no cover - render extra
            raise MissingExtra("mediapipe", "render") from exc
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                     refine_landmarks=False)

    def track(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self._mesh.process(np.ascontiguousarray(rgb[..., :3])).multi_face_landmarks
        if not found:
            return None
        h, w = rgb.shape[:2]
        lm = found[0].landmark
        return np.array([(lm[i].x * w, lm[i].y * h, lm[i].z * w)
                         for i in mo.HEAD_MEDIAPIPE_INDEX], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
