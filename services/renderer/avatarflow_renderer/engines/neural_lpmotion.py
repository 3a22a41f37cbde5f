"""Driving keypoints from motion in LivePortrait's own space (``MotionFrame.liveportrait``), built
the way JoyVASA's LivePortrait pipeline builds them (its ``execute`` loop, animation region
"all", "pose-friendly" driving).

Every frame is relative to the session's first frame that carried the block (its *anchor*):

- rotation ``R = (R_i @ R_0^T) @ R_s`` (row-vector matrices of pitch, yaw, roll in degrees);
- expression ``delta = exp_s + (exp_i - exp_0)``, except the lip keypoints (6, 12, 14, 17, 19,
  20), which take ``exp_i`` as it is;
- scale ``s = s_s * s_i / s_0``; translation ``t = t_s + (t_i - t_0)`` with z zeroed;
- ``x_d = s (x_c R + delta) + t``, then the stitching MLP (``stitching``); with
  ``normalize_lip``, a source whose mouth is open (lip ratio >= 0.03) gets the lip-retargeting
  delta that closes it added after stitching, once per avatar; finally
  ``x_d = x_s + (x_d - x_s) * multiplier``.

``DRIVES`` names the two ways JoyVASA runs: ``joyvasa`` is its ``InferenceConfig`` defaults
(stitching, lip normalisation, multiplier 1), ``joyvasa-cli`` what its ``inference.py`` ends up
with once its argument defaults override those (no stitching, no lip normalisation, multiplier
1.1). JoyVASA's lip and eye retargeting flags are off in both (with relative motion they would
freeze the face); they are not offered. The source lip ratio comes from avatarflow's portrait
analysis (LivePortrait reads it from its own 203-point landmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.messages import LivePortraitMotion
from avatarflow_renderer.engines import neural_kp as kpm

LIP_KEYPOINTS = [6, 12, 14, 17, 19, 20]  # implicit keypoints JoyVASA drives absolutely


@dataclass(frozen=True)
class BlockDrive:
    """JoyVASA's pipeline flags that change the driving keypoints."""

    stitching: bool = True
    normalize_lip: bool = True
    lip_threshold: float = 0.03
    multiplier: float = 1.0


DRIVES = {"joyvasa": BlockDrive(),
          "joyvasa-cli": BlockDrive(stitching=False, normalize_lip=False, multiplier=1.1)}


def drive_named(name: str) -> BlockDrive:
    try:
        return DRIVES[name]
    except KeyError:
        raise InvalidInput(f"unknown liveportrait_drive {name!r}: one of "
                           f"{', '.join(DRIVES)}") from None


class SourceInfo(Protocol):
    """What the drive needs of an avatar's source (``neural_drive.LivePortraitSource``)."""

    @property
    def kp(self) -> torch.Tensor: ...  # 1 x K x 3: x_s

    @property
    def canonical(self) -> torch.Tensor: ...  # 1 x K x 3: x_c

    @property
    def expression(self) -> torch.Tensor: ...  # 1 x K x 3

    @property
    def rot(self) -> torch.Tensor: ...  # 1 x 3 x 3

    @property
    def scale(self) -> torch.Tensor: ...  # 1 x 1

    @property
    def shift(self) -> torch.Tensor: ...  # 1 x 3

    @property
    def lip_closed(self) -> torch.Tensor | None: ...  # 1 x K x 3, or None


class Retargeting(Protocol):
    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor: ...

    def retarget_lip(self, kp_source: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor: ...


def lip_closing_delta(net: Retargeting, kp_source: torch.Tensor, lip_ratio: float,
                      drive: BlockDrive) -> torch.Tensor | None:
    """The delta that closes an open source mouth before animation (1 x K x 3), or None."""
    ratio = float(np.float32(lip_ratio))
    if not drive.normalize_lip or ratio < drive.lip_threshold:
        return None
    ratios = torch.tensor([[ratio, 0.0]], dtype=torch.float32, device=kp_source.device)
    return net.retarget_lip(kp_source, ratios).float()


def _stack(blocks: Sequence[LivePortraitMotion], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expression B x K x 3, scale B x 1, translation B x 3, rotation B x 3 x 3."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, np.float32), device=device)

    angles = t(np.array([[b.pitch, b.yaw, b.roll] for b in blocks], np.float32))
    return (t(np.stack([b.exp for b in blocks])), t(np.array([[b.scale] for b in blocks])),
            t(np.stack([b.t for b in blocks])),
            kpm.rotation(angles[:, 0], angles[:, 1], angles[:, 2]))


def driving_keypoints(net: Retargeting, sources: Sequence[SourceInfo],
                      blocks: Sequence[LivePortraitMotion],
                      anchors: Sequence[LivePortraitMotion], drive: BlockDrive) -> torch.Tensor:
    """B x K x 3 driving keypoints for frames ``blocks`` of sessions anchored at ``anchors``."""
    dev = sources[0].kp.device
    k = sources[0].kp.shape[1]
    if any(b.exp.shape != (k, 3) for b in blocks):
        raise InvalidInput(f"motion.liveportrait.exp: this network drives {k} keypoints, "
                           f"the motion has {blocks[0].exp.shape[0]}")
    exp_i, s_i, t_i, r_i = _stack(blocks, dev)
    exp_0, s_0, t_0, r_0 = _stack(anchors, dev)
    x_s = torch.cat([s.kp for s in sources])
    exp_s = torch.cat([s.expression for s in sources])
    rot = (r_i @ r_0.permute(0, 2, 1)) @ torch.cat([s.rot for s in sources])
    delta = exp_s + (exp_i - exp_0)
    delta[:, LIP_KEYPOINTS] = exp_i[:, LIP_KEYPOINTS]
    scale = torch.cat([s.scale for s in sources]) * (s_i / s_0)
    shift = torch.cat([s.shift for s in sources]) + (t_i - t_0)
    shift[:, 2] = 0
    x_d = (scale[:, :, None] * (torch.cat([s.canonical for s in sources]) @ rot + delta)
           + shift[:, None, :])
    if drive.stitching:
        x_d = net.stitch(x_s, x_d)
    lip = [s.lip_closed for s in sources]
    if any(d is not None for d in lip):
        x_d = x_d + torch.cat([torch.zeros_like(x_s[:1]) if d is None else d for d in lip])
    return x_s + (x_d - x_s) * drive.multiplier
