"""ConvNeXt V2 (tiny) with LivePortrait's regression heads: the head-motion estimator's body."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm2d(nn.Module):
    """Layer norm over the channels of an N x C x H x W tensor."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LastDimNorm(nn.Module):
    """Layer norm over the last dimension (channels-last tensors)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's GRN on channels-last input: scales each channel by its spatial L2 norm
    relative to the mean over channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        relative = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> norm -> 4x MLP with GELU and GRN, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LastDimNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtBackbone(nn.Module):
    """ConvNeXt V2 with heads for LivePortrait's motion outputs.

    Returns raw head outputs (B x ...): ``kp`` canonical keypoints (3 * num_kp), ``pitch``,
    ``yaw``, ``roll`` angle-bin logits (num_bins), ``t`` translation (3), ``exp`` expression
    deformation (3 * num_kp) and ``scale`` (1).
    """

    def __init__(self, in_chans: int = 3, depths: tuple[int, ...] = (3, 3, 9, 3),
                 dims: tuple[int, ...] = (96, 192, 384, 768), num_kp: int = 24,
                 num_bins: int = 66) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), ChannelNorm2d(dims[0]))])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for dim, depth in zip(dims, depths, strict=True))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        pooled = self.norm(x.mean(dim=(-2, -1)))
        return {"pitch": self.fc_pitch(pooled), "yaw": self.fc_yaw(pooled),
                "roll": self.fc_roll(pooled), "t": self.fc_t(pooled), "exp": self.fc_exp(pooled),
                "scale": self.fc_scale(pooled), "kp": self.fc_kp(pooled)}
