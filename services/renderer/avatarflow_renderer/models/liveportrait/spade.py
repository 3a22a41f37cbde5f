"""LivePortrait's generator G: SPADE residual decoder from warped features to the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class SpadeNorm(nn.Module):
    """Instance norm whose scale and shift are predicted per pixel from a label map."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = F.interpolate(label, size=x.shape[2:], mode="nearest")
        act = self.mlp_shared(label)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(act)) + self.mlp_beta(act)


class SpadeResBlock(nn.Module):
    """Two SPADE-normalised, spectrally normalised 3x3 convs with a (learned when the width
    changes) shortcut."""

    def __init__(self, cin: int, cout: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.learned_shortcut = cin != cout
        self.conv_0 = spectral_norm(nn.Conv2d(cin, mid, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(mid, cout, kernel_size=3, padding=1))
        self.norm_0 = SpadeNorm(cin, label_channels, hidden)
        self.norm_1 = SpadeNorm(mid, label_channels, hidden)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(cin, cout, kernel_size=1, bias=False))
            self.norm_s = SpadeNorm(cin, label_channels, hidden)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, label)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, label), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), 0.2))
        return skip + dx


class SpadeGenerator(nn.Module):
    """Warped features (B x C x h x w, C = min(max_features, block_expansion *
    2**num_down_blocks)) -> B x 3 x 4h*upscale x 4w*upscale image in [0, 1].

    Six SPADE blocks at the input resolution, two nearest 2x upsamplings with a SPADE block
    each, then a conv to RGB (pixel-shuffled by 2 when ``upscale`` is 2). The warped features
    are also the SPADE label map of every block.
    """

    MIDDLE_BLOCKS = 6

    def __init__(self, upscale: int = 2, max_features: int = 512, block_expansion: int = 64,
                 out_channels: int = 64, num_down_blocks: int = 2, hidden: int = 128) -> None:
        super().__init__()
        width = min(max_features, block_expansion * 2 ** num_down_blocks)
        self.in_channels = width
        self.fc = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        for i in range(self.MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SpadeResBlock(2 * width, 2 * width, width, hidden))
        self.up_0 = SpadeResBlock(2 * width, width, width, hidden)
        self.up_1 = SpadeResBlock(width, out_channels, width, hidden)
        self.up = nn.Upsample(scale_factor=2)
        if upscale is None or upscale <= 1:
            self.conv_img: nn.Module = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * 4, kernel_size=3, padding=1), nn.PixelShuffle(2))

    def middle(self, feature: torch.Tensor) -> torch.Tensor:
        """The input conv and the six blocks at the input resolution."""
        x = self.fc(feature)
        for i in range(self.MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        return x

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.middle(feature)
        x = self.up_0(self.up(x), feature)
        x = self.up_1(self.up(x), feature)
        return self.to_image(x)
