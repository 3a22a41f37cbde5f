"""Dense motion from explicit keypoints: where each feature of the output comes from.

First-order-motion style (zero order per keypoint): every keypoint proposes translating the
source by its own displacement; an hourglass looks at the keypoint heatmaps, their depth change
and the source moved by each proposal, and mixes the proposals per pixel. It also predicts an
occlusion map for what the source cannot show (the inside of an opened mouth).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatarflow_refiner.models.blocks import Hourglass


def identity_grid(size: int) -> torch.Tensor:
    """size x size x 2 sampling coordinates (x, y) of pixel centres in [-1, 1]
    (``grid_sample`` with ``align_corners=False``)."""
    c = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    gy, gx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([gx, gy], -1)


class DenseMotion(nn.Module):
    """Keypoints -> backward flow and occlusion at ``size`` x ``size``.

    Inputs: ``source`` B x 3 x size x size, ``kp_source`` / ``kp_driving`` B x K x 3
    (x, y in normalised crop coordinates, z in the same units). Outputs: ``flow``
    B x size x size x 2 (a ``grid_sample`` grid into the source) and ``occlusion``
    B x 1 x size x size in (0, 1).
    """

    grid: torch.Tensor  # size x size x 2: a registered buffer

    def __init__(self, num_kp: int, size: int, width: int, depth: int, sigma: float) -> None:
        super().__init__()
        self.num_kp, self.sigma = num_kp, sigma
        self.register_buffer("grid", identity_grid(size), persistent=False)
        self.hourglass = Hourglass((num_kp + 1) * 5, width, depth)
        self.mask = nn.Conv2d(self.hourglass.out_channels, num_kp + 1, 3, 1, 1)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels, 1, 3, 1, 1)

    def _heat(self, kp: torch.Tensor) -> torch.Tensor:
        """B x K x size x size Gaussian bumps at the keypoints' (x, y)."""
        d = self.grid[None, None] - kp[:, :, None, None, :2]
        return torch.exp(-0.5 * (d * d).sum(-1) / self.sigma)

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor,
                kp_driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = kp_driving.shape[:2]
        size = self.grid.shape[0]
        heat_d = self._heat(kp_driving)
        zeros = heat_d.new_zeros(b, 1, size, size)
        heat = torch.cat([zeros, heat_d - self._heat(kp_source)], 1)
        dz = (kp_driving[..., 2] - kp_source[..., 2])[:, :, None, None]
        depth = torch.cat([zeros, heat_d * dz], 1)
        # Proposal k: the output pixel q samples the source at q - driving_k + source_k.
        shift = (kp_source - kp_driving)[:, :, None, None, :2]
        sparse = torch.cat([self.grid.expand(b, 1, size, size, 2),
                            self.grid[None, None] + shift], 1)  # B x (K+1) x s x s x 2
        moved = F.grid_sample(
            source[:, None].expand(b, k + 1, *source.shape[1:]).reshape(b * (k + 1), -1,
                                                                        size, size),
            sparse.reshape(b * (k + 1), size, size, 2), mode="bilinear",
            padding_mode="border", align_corners=False).reshape(b, -1, size, size)
        feat = self.hourglass(torch.cat([heat, depth, moved], 1))
        weights = torch.softmax(self.mask(feat), 1)  # B x (K+1) x s x s
        flow = (weights[..., None] * sparse).sum(1)
        return flow, torch.sigmoid(self.occlusion(feat))
