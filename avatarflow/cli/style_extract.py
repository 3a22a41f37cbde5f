"""A speaking-style reference from a video: mediapipe face mesh -> expression coefficients.

Per frame: the head keypoints of ``avatarflow.contracts.motion`` (mediapipe mesh points), head pose
removed by a similarity (Procrustes) fit of the points no expression moves onto the template in
IOD units, then the E coefficients by least squares against ``motion.EXPRESSION_BASIS``,
clipped to the ranges ``avatarflow.contracts.style`` accepts. The person's own face shape is
not removed, so it shows as a constant bias in the levels.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatarflow.contracts import style
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.motion import (
    EXPRESSION_BASIS,
    HEAD_MEDIAPIPE_INDEX,
    HEAD_TEMPLATE,
    similarity_fit,
)

_TEMPLATE = HEAD_TEMPLATE.astype(np.float64)
# Points no blendshape moves (eye corners, nose, upper jaw): the pose is fitted on these only.
_RIGID = np.flatnonzero(np.abs(EXPRESSION_BASIS).sum(axis=(0, 2)) == 0.0)
_Z_WEIGHT = 0.5  # mediapipe's depth is noisier than its image-plane positions
_W = np.array([1.0, 1.0, _Z_WEIGHT])
_SOLVE = np.linalg.pinv((EXPRESSION_BASIS.astype(np.float64) * _W).reshape(len(EXPRESSION_BASIS),
                                                                            -1).T)  # E x K*3


@dataclass
class Extraction:
    reference: style.StyleReference
    frames: int  # decoded
    dropped: int  # without a face


def remove_pose(keypoints: np.ndarray) -> np.ndarray:
    """K x 3 keypoints in any similarity frame -> template frame (IOD units), fitted on the
    rigid points (Umeyama's least-squares similarity)."""
    scale, rot, shift = similarity_fit(keypoints[_RIGID], _TEMPLATE[_RIGID])
    out: np.ndarray = scale * keypoints.astype(np.float64) @ rot.T + shift
    return out


def coefficients(keypoints: np.ndarray) -> np.ndarray:
    """K x 3 mesh keypoints (any pose and scale) -> E expression coefficients, clipped."""
    delta = (remove_pose(keypoints) - _TEMPLATE) * _W
    return np.clip(_SOLVE @ delta.reshape(-1), style.LOW, style.HIGH).astype(np.float32)


def _video_frames(path: Path) -> tuple[Generator[np.ndarray, None, None], float]:
    try:
        import av
    except ModuleNotFoundError as exc:  # pragma: no cover - cli extra
        raise MissingExtra("av", "cli") from exc
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError) as exc:
        raise InvalidInput(f"cannot open video {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise InvalidInput(f"{path} has no video stream")
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 0.0)

    def frames() -> Generator[np.ndarray, None, None]:
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise InvalidInput(f"cannot decode video from {path}: {exc}") from exc
        finally:
            container.close()

    return frames(), rate


def extract(video: str | Path, fps: float | None = None) -> Extraction:
    """Reads up to ``style.MAX_FRAMES`` frames with a face; ``fps`` overrides the file's rate.
    Raises InvalidInput when no frame shows a face."""
    path = Path(video)
    if not path.is_file():
        raise InvalidInput(f"video file {path} does not exist")
    try:
        import mediapipe as mp
    except ModuleNotFoundError as exc:  # pragma: no cover - render extra
        raise MissingExtra("mediapipe", "render") from exc
    frames, rate = _video_frames(path)
    rate = fps or rate
    if not rate:
        raise InvalidInput(f"{path} does not state its frame rate: pass --fps")
    rows: list[np.ndarray] = []
    seen = 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=False) as mesh:
        for rgb in frames:
            seen += 1
            found = mesh.process(rgb).multi_face_landmarks
            if found:
                h, w = rgb.shape[:2]
                lm = found[0].landmark
                rows.append(coefficients(np.array(
                    [(lm[i].x * w, lm[i].y * h, lm[i].z * w) for i in HEAD_MEDIAPIPE_INDEX])))
            if len(rows) == style.MAX_FRAMES:
                frames.close()
                break
    if not rows:
        raise InvalidInput(f"no face found in any of the {seen} frames of {path}")
    if len(rows) < style.MIN_FRAMES:
        raise InvalidInput(f"a face was found in only {len(rows)} frames of {path}; a style "
                           f"reference needs at least {style.MIN_FRAMES}")
    return Extraction(style.check(np.stack(rows), rate), seen, seen - len(rows))
