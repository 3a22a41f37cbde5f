"""LivePortrait's appearance encoder F: source image -> 3D appearance feature volume."""

from __future__ import annotations

import torch
from torch import nn

from avatarflow_renderer.models.liveportrait.blocks import (
    ConvBnAct2d,
    ConvBnPool2d,
    PreActResBlock3d,
)


class AppearanceEncoder(nn.Module):
    """B x 3 x H x W in [0, 1] -> B x C x D x H/4 x W/4 (published: 32 x 16 x 64 x 64 at 256).

    2D convolutions downsample the image to ``max_features`` channels, which are read as
    ``reshape_channel`` channels over ``reshape_depth`` depth slices and refined in 3D.
    """

    def __init__(self, image_channel: int = 3, block_expansion: int = 64,
                 num_down_blocks: int = 2, max_features: int = 512, reshape_channel: int = 32,
                 reshape_depth: int = 16, num_resblocks: int = 6) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ValueError(f"reshape_channel x reshape_depth ({reshape_channel} x "
                             f"{reshape_depth}) must equal max_features ({max_features})")
        self.reshape_channel, self.reshape_depth = reshape_channel, reshape_depth
        self.first = ConvBnAct2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * 2 ** i)
                  for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            ConvBnPool2d(widths[i], widths[i + 1]) for i in range(num_down_blocks))
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", PreActResBlock3d(reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        volume = x.view(b, self.reshape_channel, self.reshape_depth, h, w)
        return self.resblocks_3d(volume)
