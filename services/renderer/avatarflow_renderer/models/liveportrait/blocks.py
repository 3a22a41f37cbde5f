"""Convolution blocks and coordinate helpers shared by LivePortrait's modules.

Attribute names (``conv``, ``norm``, ``conv1`` ...) are the published checkpoints' names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def volume_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised sampling coordinates of a feature volume: D x H x W x 3 (x, y, z).

    Each axis runs from -1 to 1 over its cells (x right, y down, z into the image), the
    frame in which LivePortrait's implicit keypoints live.
    """
    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """Isotropic Gaussians around keypoints ``kp`` (B x K x 3) on ``grid`` (D x H x W x 3):
    B x K x D x H x W."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / variance)


class ConvBnAct2d(nn.Module):
    """Conv -> batch norm -> ReLU (or leaky ReLU), resolution kept."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: int = 1,
                 leaky: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.ac = nn.LeakyReLU() if leaky else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class ConvBnPool2d(nn.Module):
    """Conv -> batch norm -> ReLU -> 2x2 average pool: halves the resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class PreActResBlock3d(nn.Module):
    """Residual 3D block with pre-activation: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(y)))


class Down3d(nn.Module):
    """3D conv -> batch norm -> ReLU -> pool of height and width (depth kept)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)
        self.pool = nn.AvgPool3d((1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class Up3d(nn.Module):
    """Nearest 2x upsampling of height and width -> 3D conv -> batch norm -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


def _width(level: int, base: int, cap: int) -> int:
    return min(cap, base * 2 ** level)


class HourglassEncoder(nn.Module):
    def __init__(self, base: int, cin: int, levels: int, cap: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            Down3d(cin if i == 0 else _width(i, base, cap), _width(i + 1, base, cap))
            for i in range(levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, base: int, cin: int, levels: int, cap: int) -> None:
        super().__init__()
        # The deepest block sees only the bottleneck; the others also the skip of their level.
        self.up_blocks = nn.ModuleList(
            Up3d((1 if i == levels - 1 else 2) * _width(i + 1, base, cap), _width(i, base, cap))
            for i in reversed(range(levels)))
        self.out_channels = base + cin
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net: ``levels`` pooled levels of width ``base * 2**i`` (at most ``cap``); the
    output concatenates the decoder's features with the input (``base + cin`` channels)."""

    def __init__(self, base: int, cin: int, levels: int = 3, cap: int = 256) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(base, cin, levels, cap)
        self.decoder = HourglassDecoder(base, cin, levels, cap)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
