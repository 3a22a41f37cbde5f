"""Face motion labels from mediapipe face-mesh keypoints, in avatarflow's representation.

The engines pose a head as ``scale * R (template(e) - pivot) + pivot + t + offset`` in template
units (``avatarflow.contracts.motion.head_keypoints``), relative to the portrait: zero rotation
and translation and scale 1 are the portrait's own pose. A clip's labels are therefore relative
to the clip's reference pose (the mean rotation, the median scale and position of its frames):

- each frame's similarity from the template onto the observed keypoints, fitted on the points
  no expression moves (Umeyama's least squares): ``obs = a_f R_f T + b_f``;
- in the reference frame ``x = R_ref^T (obs - b_ref) / a_ref``, which the model reproduces with
  ``s = a_f / a_ref``, ``R = R_ref^T R_f`` and ``t = R_ref^T (b_f - b_ref) / a_ref + s R pivot
  - pivot``; rotation as (pitch, yaw, roll) radians;
- the expression coefficients of the pose-removed keypoints (least squares onto the expression
  basis, as style references are extracted);
- the offset: what the posed template leaves unexplained, less its median over the clip (the
  person's own face shape, which no motion label should carry).

Frames without a face carry NaN labels and ``present`` False.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatarflow.cli.style_extract import coefficients
from avatarflow.contracts import motion as mo

_TEMPLATE = mo.HEAD_TEMPLATE.astype(np.float64)
_PIVOT = mo.HEAD_PIVOT.astype(np.float64)
# Points no expression moves (eye corners, nose, upper jaw): the pose is fitted on these only.
RIGID = np.flatnonzero(np.abs(mo.EXPRESSION_BASIS).sum(axis=(0, 2)) == 0.0)


@dataclass
class FaceLabels:
    """A clip's face labels, T frames (NaN where ``present`` is False)."""

    present: np.ndarray  # T bool: a face was found
    rotation: np.ndarray  # T x 3 float32: pitch, yaw, roll (radians), relative to the clip
    translation: np.ndarray  # T x 3 float32, template units
    scale: np.ndarray  # T float32
    expression: np.ndarray  # T x E float32, names in motion.EXPRESSIONS
    head_offset: np.ndarray  # T x K x 3 float32, template units


def similarity(keypoints: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(a, R, b) with ``keypoints ~ a R template + b`` on the rigid points (K x 3 in)."""
    return mo.similarity_fit(_TEMPLATE[RIGID], keypoints[RIGID])


def mean_rotation(rotations: np.ndarray) -> np.ndarray:
    """The chordal L2 mean of N x 3 x 3 rotations (the nearest rotation to their average)."""
    u, _, vt = np.linalg.svd(rotations.mean(axis=0))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    out: np.ndarray = u @ d @ vt
    return out


def face_labels(keypoints: list[np.ndarray | None]) -> FaceLabels:
    """Labels of a clip from its per-frame K x 3 mesh keypoints (None: no face)."""
    n, e, k = len(keypoints), len(mo.EXPRESSIONS), mo.K
    present = np.array([kp is not None for kp in keypoints], dtype=bool)
    out = FaceLabels(present, np.full((n, 3), np.nan, np.float32),
                     np.full((n, 3), np.nan, np.float32), np.full(n, np.nan, np.float32),
                     np.full((n, e), np.nan, np.float32), np.full((n, k, 3), np.nan, np.float32))
    found = [(i, kp.astype(np.float64)) for i, kp in enumerate(keypoints) if kp is not None]
    if not found:
        return out
    fits = [similarity(kp) for _, kp in found]
    a_ref = float(np.median([a for a, _, _ in fits]))
    r_ref = mean_rotation(np.stack([r for _, r, _ in fits]))
    b_ref = np.median(np.stack([b for _, _, b in fits]), axis=0)
    residuals = []
    for (i, kp), (a, r, b) in zip(found, fits, strict=True):
        s, rel = a / a_ref, r_ref.T @ r
        t = r_ref.T @ (b - b_ref) / a_ref + s * rel @ _PIVOT - _PIVOT
        expression = coefficients(kp)
        x = (kp - b_ref) @ r_ref / a_ref  # rows: R_ref^T (obs - b_ref) / a_ref
        rotation = mo.matrix_to_euler(rel)
        posed = mo.head_keypoints(mo.head_template(expression), np.zeros((k, 3), np.float32),
                                  rotation, t.astype(np.float32), s)
        out.rotation[i], out.translation[i], out.scale[i] = rotation, t, s
        out.expression[i] = expression
        residuals.append(x - posed)
    res = np.stack(residuals)
    out.head_offset[present] = (res - np.median(res, axis=0)).astype(np.float32)
    return out
