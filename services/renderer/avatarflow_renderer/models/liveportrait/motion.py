"""LivePortrait's head-motion estimator M: image -> keypoints, pose, expression, scale, shift."""

from __future__ import annotations

import torch
from torch import nn

from avatarflow_renderer.models.liveportrait.convnextv2 import ConvNeXtBackbone

BACKBONES = {"convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768))}


class HeadMotionEstimator(nn.Module):
    """B x 3 x 256 x 256 in [0, 1] -> raw motion outputs (see ``ConvNeXtBackbone``).

    The pose comes as bin logits; ``avatarflow_renderer.engines.neural_kp`` turns them into
    degrees and the keypoints into driving keypoints.
    """

    def __init__(self, num_kp: int = 21, backbone: str = "convnextv2_tiny",
                 num_bins: int = 66) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
        depths, dims = BACKBONES[backbone]
        self.detector = ConvNeXtBackbone(depths=depths, dims=dims, num_kp=num_kp,
                                         num_bins=num_bins)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(image)
