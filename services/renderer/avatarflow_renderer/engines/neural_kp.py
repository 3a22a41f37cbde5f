"""LivePortrait's keypoint algebra: pose bins -> degrees -> rotation, and the implicit keypoint
transform ``x = s * (x_c R + delta) + t``; plus its lip and eye openness ratios.

Keypoints live in the feature volume's normalised frame: x right and y down over the source
image in [-1, 1], z into the image. Rotations are applied to row vectors (``x_c @ R``), as
LivePortrait does, so composing a relative rotation ``R_m`` onto a pose ``R_s`` is
``R_m @ R_s``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from avatarflow.contracts import motion as mo

POSE_BINS = 66
BIN_DEGREES = 3.0
BIN_OFFSET = 97.5  # degrees: bin i covers about 3 * i - 97.5 (LivePortrait's calibration)


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Angle-bin logits (B x 66) -> expected angle in degrees (B)."""
    index = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (torch.softmax(logits, dim=1) * index).sum(dim=1) * BIN_DEGREES - BIN_OFFSET


def rotation(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Angles in degrees (B each) -> B x 3 x 3 rotation for row vectors (``kp @ R``).

    The column-vector rotation is ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``; this returns its
    transpose, LivePortrait's convention.
    """
    p, y, r = (a.reshape(-1) * (math.pi / 180) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1)
    m = rz.view(-1, 3, 3) @ ry.view(-1, 3, 3) @ rx.view(-1, 3, 3)
    return m.transpose(1, 2)


def pose_keypoints(canonical: torch.Tensor, rot: torch.Tensor, expression: torch.Tensor,
                   scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``scale * (canonical @ rot + expression) + (tx, ty, 0)``: B x K x 3.

    ``canonical``, ``expression``: B x K x 3; ``rot``: B x 3 x 3; ``scale``: B x 1;
    ``shift``: B x 3 (its z is dropped, as LivePortrait drops it).
    """
    kp = (canonical @ rot + expression) * scale[..., None]
    return torch.cat([kp[..., :2] + shift[:, None, :2], kp[..., 2:]], dim=-1)


def motion_info(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Motion-estimator outputs -> pitch, yaw, roll in degrees (B x 1), ``kp`` and ``exp``
    reshaped to B x K x 3, ``t`` (B x 3) and ``scale`` (B x 1)."""
    b = raw["kp"].shape[0]
    info = {k: bins_to_degrees(raw[k])[:, None] for k in ("pitch", "yaw", "roll")}
    info.update(kp=raw["kp"].reshape(b, -1, 3), exp=raw["exp"].reshape(b, -1, 3),
                t=raw["t"], scale=raw["scale"])
    return info


def source_keypoints(info: dict[str, torch.Tensor]) -> torch.Tensor:
    """The source's implicit keypoints x_s from ``motion_info``: B x K x 3."""
    rot = rotation(info["pitch"], info["yaw"], info["roll"])
    return pose_keypoints(info["kp"], rot, info["exp"], info["scale"], info["t"])


def _gap(points: np.ndarray, a: str, b: str, c: str, d: str) -> float:
    """|ab| / |cd| over head keypoints (x, y only), LivePortrait's distance ratio."""
    h = mo.HEAD
    num = np.linalg.norm(points[h[a], :2] - points[h[b], :2])
    den = np.linalg.norm(points[h[c], :2] - points[h[d], :2])
    return float(num / (den + 1e-6))


def lip_ratio(points: np.ndarray) -> float:
    """Lip-open ratio: inner-lip gap over mouth width (LivePortrait's landmarks 90-102 over
    48-66, here avatarflow's ``in_up``-``in_lo`` over ``mouth_r``-``mouth_l``)."""
    return _gap(points, "in_up", "in_lo", "mouth_r", "mouth_l")


def eye_ratios(points: np.ndarray) -> tuple[float, float]:
    """Eye-open ratios (lid gap over eye width), the image-left eye first."""
    return (_gap(points, "eye_r_up", "eye_r_lo", "eye_r_out", "eye_r_in"),
            _gap(points, "eye_l_up", "eye_l_lo", "eye_l_in", "eye_l_out"))


REST_EYE_RATIO = float(np.mean(eye_ratios(mo.HEAD_TEMPLATE)))
