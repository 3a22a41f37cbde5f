"""A fixed linear hand basis: hand coefficients -> 2 x 21 x 3 hand keypoints.

ChatAnyone predicts MANO-style hand coefficients; we keep a small, fixed (not learned) linear
basis around ``HAND_REST`` so the coefficients have a meaning renderers can rely on and the
keypoints follow the same convention as the signal engine: hand 0 is the left hand, hand 1 the
right, each at its wrist body keypoint, in canonical body units:

    hands[h] = wrist[h] + HAND_REST[h] + sum_c coeffs[h, c] * HAND_BASIS[h, c]

Components, each a displacement per joint at coefficient 1 (rotations are linearised, so keep
coefficients within about +-1.5):

- ``curl``: every finger curls (the signal engine's ``CURL_DELTA``, so curl 1 is its full curl);
- ``spread``: fingers fan out from the middle finger;
- ``thumb``: the thumb alone curls;
- ``point``: middle, ring and little fingers curl, the index stays out;
- ``flex``: the hand turns in the image plane about the wrist, fingers swinging away from the
  body at +1 (1 rad);
- ``tilt``: the hand turns towards the camera about the wrist's x axis (1 rad).
"""

from __future__ import annotations

import numpy as np

from avatarflow.contracts.motion import HAND_JOINTS, HAND_REST

from ..engines.body import CURL_DELTA

HAND_COMPONENTS = ("curl", "spread", "thumb", "point", "flex", "tilt")


def _finger(f: int) -> slice:
    return slice(1 + 4 * f, 5 + 4 * f)


def _basis() -> np.ndarray:
    rest = HAND_REST.astype(np.float64)
    basis = np.zeros((2, len(HAND_COMPONENTS), HAND_JOINTS, 3))
    for h, mirror in enumerate((-1.0, 1.0)):  # hand 0 (left) is the mirror image of hand 1
        p = rest[h]
        basis[h, 0] = CURL_DELTA[h]
        basis[h, 1, 1:, 0] = 0.5 * p[1:, 0]
        basis[h, 2, _finger(0)] = CURL_DELTA[h, _finger(0)]
        for f in (2, 3, 4):
            basis[h, 3, _finger(f)] = CURL_DELTA[h, _finger(f)]
        basis[h, 4, :, 0] = -mirror * p[:, 1]
        basis[h, 4, :, 1] = mirror * p[:, 0]
        basis[h, 5, :, 1] = -p[:, 2]
        basis[h, 5, :, 2] = p[:, 1]
    return basis.astype(np.float32)


HAND_BASIS = _basis()  # 2 x C x 21 x 3


def hand_keypoints(wrists: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """Wrists (2 x 3, left then right) and coefficients (2 x C, C <= 6) -> 2 x 21 x 3 float32."""
    c = coeffs.shape[-1]
    shape = np.einsum("hc,hcjd->hjd", coeffs.astype(np.float32), HAND_BASIS[:, :c])
    return (wrists.astype(np.float32)[:, None] + HAND_REST + shape).astype(np.float32)
