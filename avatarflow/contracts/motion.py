"""The hybrid motion representation shared by motion generators and renderers.

Follows ChatAnyone: explicit 3D head keypoints projected from a template driven by named
expression coefficients and a head pose (``X_head = pose(template + B @ e) + offset``), planar
upper-body keypoints (``X_body = s * (canonical + delta) + t``, R = identity) and 21 keypoints per
hand. Head units: the distance between the eye centres (IOD), origin between the eyes, x to the
image right, y down, z away from the camera. Body units: shoulder width, origin between the
shoulders. Every renderer reads motion through these definitions only.
"""

from __future__ import annotations

import numpy as np

EXPRESSIONS: tuple[str, ...] = (
    "jaw_open", "mouth_wide", "mouth_round", "smile",
    "blink_left", "blink_right", "brow_raise", "brow_frown",
)
EXPR = {name: i for i, name in enumerate(EXPRESSIONS)}

# Head keypoints: name, index in mediapipe's 478-point face mesh, template position (IOD units).
# Positions come from a frontal face mesh; the inner lips are closed in the template.
_HEAD = (
    ("jaw_r2", 234, (-1.080, 0.213, 0.918)), ("jaw_r1", 132, (-1.045, 0.658, 0.928)),
    ("jaw_r0", 172, (-0.900, 1.114, 0.727)), ("chin_r", 150, (-0.646, 1.426, 0.453)),
    ("chin", 152, (0.000, 1.757, 0.117)), ("chin_l", 379, (0.651, 1.436, 0.439)),
    ("jaw_l0", 397, (0.904, 1.124, 0.708)), ("jaw_l1", 361, (1.050, 0.669, 0.907)),
    ("jaw_l2", 454, (1.078, 0.226, 0.893)),
    ("brow_r_out", 70, (-0.898, -0.245, 0.031)), ("brow_r_mid", 105, (-0.650, -0.358, -0.211)),
    ("brow_r_in", 107, (-0.241, -0.312, -0.349)), ("brow_l_in", 336, (0.231, -0.297, -0.353)),
    ("brow_l_mid", 334, (0.639, -0.339, -0.222)), ("brow_l_out", 300, (0.877, -0.226, 0.015)),
    ("eye_r_out", 33, (-0.716, -0.021, 0.046)), ("eye_r_up_out", 160, (-0.622, -0.093, -0.065)),
    ("eye_r_up", 159, (-0.540, -0.110, -0.089)), ("eye_r_up_in", 158, (-0.457, -0.101, -0.093)),
    ("eye_r_in", 133, (-0.284, 0.021, -0.036)), ("eye_r_lo_in", 153, (-0.437, 0.043, -0.066)),
    ("eye_r_lo", 145, (-0.517, 0.049, -0.061)), ("eye_r_lo_out", 144, (-0.597, 0.041, -0.038)),
    ("eye_l_in", 362, (0.279, 0.020, -0.042)), ("eye_l_up_in", 385, (0.453, -0.107, -0.101)),
    ("eye_l_up", 386, (0.539, -0.118, -0.099)), ("eye_l_up_out", 387, (0.625, -0.101, -0.075)),
    ("eye_l_out", 263, (0.721, -0.020, 0.033)), ("eye_l_lo_out", 373, (0.589, 0.043, -0.048)),
    ("eye_l_lo", 374, (0.508, 0.048, -0.070)), ("eye_l_lo_in", 380, (0.429, 0.042, -0.075)),
    ("nose_bridge", 168, (-0.013, -0.071, -0.320)), ("nose_tip", 1, (-0.010, 0.631, -0.604)),
    ("nostril_r", 98, (-0.332, 0.601, -0.216)), ("nostril_l", 327, (0.328, 0.603, -0.219)),
    ("mouth_r", 61, (-0.511, 0.877, 0.117)), ("lip_up_r", 37, (-0.148, 0.858, -0.273)),
    ("lip_up", 0, (0.007, 0.879, -0.283)), ("lip_up_l", 267, (0.162, 0.853, -0.276)),
    ("mouth_l", 291, (0.514, 0.863, 0.106)), ("lip_lo_l", 314, (0.156, 1.196, -0.158)),
    ("lip_lo", 17, (0.004, 1.213, -0.172)), ("lip_lo_r", 84, (-0.152, 1.197, -0.156)),
    ("in_r", 78, (-0.475, 0.890, 0.090)), ("in_up_r", 82, (-0.133, 1.013, -0.179)),
    ("in_up", 13, (0.007, 1.025, -0.198)), ("in_up_l", 312, (0.146, 1.010, -0.181)),
    ("in_l", 308, (0.477, 0.877, 0.081)), ("in_lo_l", 317, (0.137, 1.010, -0.126)),
    ("in_lo", 14, (0.004, 1.025, -0.143)), ("in_lo_r", 87, (-0.132, 1.013, -0.123)),
    ("cheek_r", 205, (-0.692, 0.540, -0.080)), ("cheek_l", 425, (0.690, 0.546, -0.092)),
    ("forehead", 10, (-0.019, -0.754, -0.313)),
)
HEAD_NAMES: tuple[str, ...] = tuple(n for n, _, _ in _HEAD)
HEAD = {name: i for i, name in enumerate(HEAD_NAMES)}
HEAD_MEDIAPIPE_INDEX = np.array([m for _, m, _ in _HEAD], dtype=np.int64)
HEAD_TEMPLATE = np.array([p for _, _, p in _HEAD], dtype=np.float32)  # K x 3
K = len(HEAD_NAMES)

INNER_LIP_UPPER = ("in_up_r", "in_up", "in_up_l")
INNER_LIP_LOWER = ("in_lo_r", "in_lo", "in_lo_l")
INNER_LIP_RING = ("in_r", "in_up_r", "in_up", "in_up_l", "in_l", "in_lo_l", "in_lo", "in_lo_r")
EYE_RINGS = {
    "right": ("eye_r_out", "eye_r_up_out", "eye_r_up", "eye_r_up_in", "eye_r_in",
              "eye_r_lo_in", "eye_r_lo", "eye_r_lo_out"),
    "left": ("eye_l_in", "eye_l_up_in", "eye_l_up", "eye_l_up_out", "eye_l_out",
             "eye_l_lo_out", "eye_l_lo", "eye_l_lo_in"),
}


def _basis() -> np.ndarray:
    """Expression blendshapes: E x K x 3 keypoint displacements at coefficient 1."""
    b = np.zeros((len(EXPRESSIONS), K, 3), dtype=np.float32)

    def put(expr: str, names: tuple[str, ...] | str, d: tuple[float, float, float]) -> None:
        for n in (names,) if isinstance(names, str) else names:
            b[EXPR[expr], HEAD[n]] += d

    put("jaw_open", INNER_LIP_LOWER, (0, 0.42, 0))
    put("jaw_open", ("lip_lo_r", "lip_lo", "lip_lo_l"), (0, 0.40, 0))
    put("jaw_open", "chin", (0, 0.36, 0))
    put("jaw_open", ("chin_r", "chin_l"), (0, 0.30, 0))
    put("jaw_open", ("jaw_r0", "jaw_l0"), (0, 0.17, 0))
    put("jaw_open", ("jaw_r1", "jaw_l1"), (0, 0.05, 0))
    put("jaw_open", INNER_LIP_UPPER, (0, -0.03, 0))
    put("jaw_open", ("mouth_r", "in_r"), (0.03, 0.13, 0))
    put("jaw_open", ("mouth_l", "in_l"), (-0.03, 0.13, 0))
    put("mouth_wide", ("mouth_r", "in_r"), (-0.10, 0, 0))
    put("mouth_wide", ("mouth_l", "in_l"), (0.10, 0, 0))
    put("mouth_wide", ("lip_up_r", "lip_lo_r", "in_up_r", "in_lo_r"), (-0.04, 0, 0))
    put("mouth_wide", ("lip_up_l", "lip_lo_l", "in_up_l", "in_lo_l"), (0.04, 0, 0))
    put("mouth_round", ("mouth_r", "in_r"), (0.12, 0.02, -0.08))
    put("mouth_round", ("mouth_l", "in_l"), (-0.12, 0.02, -0.08))
    put("mouth_round", ("lip_up_r", "lip_lo_r"), (0.05, 0, -0.08))
    put("mouth_round", ("lip_up_l", "lip_lo_l"), (-0.05, 0, -0.08))
    put("mouth_round", INNER_LIP_LOWER, (0, 0.07, -0.05))
    put("mouth_round", INNER_LIP_UPPER, (0, -0.03, -0.05))
    put("smile", ("mouth_r", "in_r"), (-0.07, -0.10, 0))
    put("smile", ("mouth_l", "in_l"), (0.07, -0.10, 0))
    put("smile", ("cheek_r", "cheek_l"), (0, -0.05, 0))
    put("smile", ("lip_up_r", "lip_up_l", "lip_lo_r", "lip_lo_l"), (0, -0.03, 0))
    for side, s in (("blink_right", "r"), ("blink_left", "l")):
        for up, lo in (("up_out", "lo_out"), ("up", "lo"), ("up_in", "lo_in")):
            gap = HEAD_TEMPLATE[HEAD[f"eye_{s}_{lo}"], 1] - HEAD_TEMPLATE[HEAD[f"eye_{s}_{up}"], 1]
            put(side, f"eye_{s}_{up}", (0, 0.92 * float(gap), 0))
            put(side, f"eye_{s}_{lo}", (0, -0.05 * float(gap), 0))
    put("brow_raise", ("brow_r_out", "brow_r_mid", "brow_r_in"), (0, -0.12, 0))
    put("brow_raise", ("brow_l_out", "brow_l_mid", "brow_l_in"), (0, -0.12, 0))
    put("brow_raise", "forehead", (0, -0.03, 0))
    put("brow_frown", "brow_r_in", (0.05, 0.07, 0))
    put("brow_frown", "brow_l_in", (-0.05, 0.07, 0))
    put("brow_frown", ("brow_r_mid", "brow_l_mid"), (0, 0.03, 0))
    return b


EXPRESSION_BASIS = _basis()  # E x K x 3

# Upper-body keypoints: name, mediapipe pose index, canonical position (shoulder-width units).
_BODY = (
    ("shoulder_r", 12, (-0.5, 0.0, 0.0)), ("shoulder_l", 11, (0.5, 0.0, 0.0)),
    ("elbow_r", 14, (-0.62, 0.78, 0.0)), ("elbow_l", 13, (0.62, 0.78, 0.0)),
    ("wrist_r", 16, (-0.45, 1.45, 0.0)), ("wrist_l", 15, (0.45, 1.45, 0.0)),
    ("hip_r", 24, (-0.36, 1.65, 0.0)), ("hip_l", 23, (0.36, 1.65, 0.0)),
)
BODY_NAMES: tuple[str, ...] = tuple(n for n, _, _ in _BODY)
BODY = {name: i for i, name in enumerate(BODY_NAMES)}
BODY_MEDIAPIPE_INDEX = np.array([m for _, m, _ in _BODY], dtype=np.int64)
BODY_CANONICAL = np.array([p for _, _, p in _BODY], dtype=np.float32)  # B x 3
B = len(BODY_NAMES)

HAND_JOINTS = 21  # mediapipe / MANO order: wrist, then 4 joints per finger, thumb first
HANDS = ("left", "right")


def _rest_hand(mirror: float) -> np.ndarray:
    """A relaxed open hand, wrist at the origin, fingers pointing down (body units)."""
    pts = [(0.0, 0.0, 0.0)]
    for f, spread in enumerate((-0.09, -0.04, 0.0, 0.035, 0.065)):
        length = (0.045, 0.06, 0.065, 0.06, 0.045)[f]
        base = (mirror * spread, 0.10 if f else 0.04, 0.0)
        for j in range(4):
            pts.append((base[0] + mirror * spread * 0.2 * j, base[1] + length * j, 0.0))
    return np.array(pts, dtype=np.float32)


HAND_REST = np.stack([_rest_hand(-1.0), _rest_hand(1.0)])  # 2 x 21 x 3, relative to the wrist


def euler_to_matrix(rotation: np.ndarray) -> np.ndarray:
    """Pitch (x), yaw (y), roll (z) in radians -> 3 x 3 rotation, applied as R @ p."""
    p, y, r = (float(v) for v in rotation)
    cx, sx, cy, sy, cz, sz = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(a, R, b) minimising ``|dst - (a R src + b)|^2`` over N x 3 point pairs (Umeyama's
    least-squares similarity; R a proper rotation)."""
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sv * d).sum() / (a**2).sum(axis=1).mean())
    return scale, rot, mu_d - scale * rot @ mu_s


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """The inverse of ``euler_to_matrix`` (yaw within +-90 degrees): 3 float32 radians."""
    r = np.asarray(rot, dtype=np.float64)
    yaw = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.array([pitch, yaw, roll], dtype=np.float32)


# Head rotations pivot about the neck, below and behind the point between the eyes.
HEAD_PIVOT = np.array([0.0, 1.6, 1.2], dtype=np.float32)


def head_template(expression: np.ndarray) -> np.ndarray:
    """Template keypoints driven by expression coefficients: K x 3 float32."""
    return HEAD_TEMPLATE + np.tensordot(expression.astype(np.float32), EXPRESSION_BASIS, axes=1)


def head_keypoints(template: np.ndarray, offset: np.ndarray, rotation: np.ndarray,
                   translation: np.ndarray, scale: float) -> np.ndarray:
    """Posed head keypoints: ``scale * R (template - pivot) + pivot + t + offset`` (K x 3)."""
    rot = euler_to_matrix(rotation)
    posed = scale * (template - HEAD_PIVOT) @ rot.T + HEAD_PIVOT
    return (posed + translation + offset).astype(np.float32)
