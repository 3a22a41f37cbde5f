"""Convolution blocks shared by the refine network's parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """conv -> instance norm -> leaky ReLU, optionally halving the resolution."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2),
                         nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


class UpBlock(nn.Module):
    """Nearest-neighbour x2 upsampling then a ConvBlock."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBlock(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """B x cin x S x S -> B x cout x S/2**down x S/2**down."""

    def __init__(self, cin: int, cout: int, down: int) -> None:
        super().__init__()
        widths = [max(cout // 2 ** (down - i), 8) for i in range(down)] + [cout]
        layers: list[nn.Module] = [ConvBlock(cin, widths[0], kernel=7)]
        layers += [ConvBlock(widths[i], widths[i + 1], stride=2) for i in range(down)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Hourglass(nn.Module):
    """A small U-Net: ``depth`` stride-2 stages down and back up, with skips.

    B x cin x R x R -> B x (cin + width) x R x R (the input is concatenated at the top).
    """

    def __init__(self, cin: int, width: int, depth: int) -> None:
        super().__init__()
        chans = [cin] + [min(width * 2 ** i, 512) for i in range(depth)]
        self.down = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], stride=2)
                                  for i in range(depth))
        ups, cur = [], chans[depth]
        for i in reversed(range(depth)):
            out = chans[i] if i else width
            ups.append(UpBlock(cur, out))
            cur = out + chans[i]  # the skip at this level is concatenated after the block
        self.up = nn.ModuleList(ups)
        self.out_channels = cur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = torch.cat([block(y), skips.pop()], 1)
        return y


class AdaIN(nn.Module):
    """Instance norm whose scale and shift come from a style code (Huang & Belongie)."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(style_dim, 2 * channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(style)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class AdaINResBlock(nn.Module):
    """Residual block with AdaIN before each conv: how the body crop steers the face."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaIN(channels, style_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2 = AdaIN(channels, style_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.norm1(x, style), 0.2))
        y = self.conv2(F.leaky_relu(self.norm2(y, style), 0.2))
        return x + y
