"""The whole motion network (ChatAnyone's stage 1) and the statistics it was trained with."""

from __future__ import annotations

import torch
from torch import nn

from .body import BodyNet
from .face_dit import FaceDiT

# Initial per-value scales of a fresh network; a trained checkpoint carries its own.
EXPRESSION_STD = 0.3
ROTATION_STD = 0.08  # radians
TRANSLATION_STD = 0.03  # head template units
OFFSET_STD = 0.02  # dX_head, head template units
BODY_STD = 0.05  # body keypoint displacement, shoulder widths
HAND_STD = 0.3  # hand coefficients


class MotionDiffusion(nn.Module):
    """The face DiT, the body transformer and their normalisation buffers.

    Buffers (saved with the weights): ``audio_mean``/``audio_std`` (D) normalise audio features;
    ``motion_mean``/``motion_std`` (M = E + 6) map motion to the face DiT's unit-variance space;
    ``output_std`` (3) scales the body network's offsets, body displacements and hand
    coefficients to their units.
    """

    def __init__(self, face: FaceDiT, body: BodyNet, *, audio_dim: int,
                 expression_dim: int) -> None:
        super().__init__()
        self.face = face
        self.body = body
        std = [EXPRESSION_STD] * expression_dim + [ROTATION_STD] * 3 + [TRANSLATION_STD] * 3
        self.register_buffer("audio_mean", torch.zeros(audio_dim))
        self.register_buffer("audio_std", torch.ones(audio_dim))
        self.register_buffer("motion_mean", torch.zeros(len(std)))
        self.register_buffer("motion_std", torch.tensor(std))
        self.register_buffer("output_std", torch.tensor([OFFSET_STD, BODY_STD, HAND_STD]))
