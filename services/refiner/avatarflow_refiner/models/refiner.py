"""The face refine network of ChatAnyone's stage 2, LivePortrait family but lighter.

An appearance encoder turns the source face crop into 2D features; keypoint-driven dense
motion warps them to the driven pose (and masks what the source cannot show); a generator of
AdaIN residual blocks, whose style code comes from the body frame's head crop with the face
masked out, decodes the warped features to the refined crop. The style code is what makes the
re-rendered face match the body pass it is pasted into (lighting, colour, blur).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatarflow_refiner.models.blocks import AdaINResBlock, ConvBlock, Encoder, UpBlock
from avatarflow_refiner.models.config import RefinerConfig
from avatarflow_refiner.models.motion import DenseMotion


class StyleEncoder(nn.Module):
    """B x 3 x S x S masked body crop -> B x style_dim AdaIN code."""

    def __init__(self, style_dim: int, down: int) -> None:
        super().__init__()
        self.encoder = Encoder(3, style_dim, down)
        self.fc = nn.Linear(style_dim, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x).mean((2, 3)))


class Generator(nn.Module):
    """B x C x R x R warped features + B x style_dim -> B x 3 x out x out in [0, 1]."""

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(AdaINResBlock(cfg.channels, cfg.style_dim)
                                    for _ in range(cfg.res_blocks))
        widths = [max(cfg.channels // 2 ** (i + 1), 16) for i in range(cfg.up)]
        chans = [cfg.channels, *widths]
        self.up = nn.Sequential(*(UpBlock(chans[i], chans[i + 1]) for i in range(cfg.up)))
        self.head = nn.Sequential(ConvBlock(chans[-1], chans[-1]),
                                  nn.Conv2d(chans[-1], 3, 7, 1, 3))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, style)
        return torch.sigmoid(self.head(self.up(x)))


class FaceRefineNet(nn.Module):
    """Re-renders the head crop driven by explicit head keypoints.

    ``forward(source, kp_source, kp_driving, context)``:
      source: B x 3 x S x S float in [0, 1], the avatar's face crop (S = image_size);
      kp_source: B x K x 3, keypoints of ``source``; kp_driving: B x K x 3, driven keypoints;
        x, y in normalised crop coordinates (-1 left/top edge, +1 right/bottom edge), z in
        the same units;
      context: B x 3 x S x S float in [0, 1], the body frame's head crop, face masked out.
    Returns B x 3 x out_size x out_size in [0, 1].
    """

    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.appearance = Encoder(3, cfg.channels, cfg.down)
        self.motion = DenseMotion(cfg.num_kp, cfg.feature_size, cfg.motion_channels,
                                  cfg.motion_depth, cfg.kp_sigma)
        self.style = StyleEncoder(cfg.style_dim, cfg.down)
        self.generator = Generator(cfg)

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                context: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(source, 2 ** self.cfg.down)
        flow, occlusion = self.motion(small, kp_source, kp_driving)
        feat = F.grid_sample(self.appearance(source), flow, mode="bilinear",
                             padding_mode="border", align_corners=False)
        return self.generator(feat * occlusion, self.style(context))
