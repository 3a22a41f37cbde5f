"""LivePortrait's warping field estimator W: dense 3D motion from sparse keypoint motion, then
the source feature volume warped by it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avatarflow_renderer.models.liveportrait.blocks import (
    ConvBnAct2d,
    Hourglass3d,
    keypoint_gaussians,
    volume_grid,
)

KP_VARIANCE = 0.01  # of the keypoint Gaussians, in normalised units squared


class FlowEstimator(nn.Module):
    """Features (B x C x D x H x W) + source/driving keypoints (B x K x 3) -> backward flow.

    Every keypoint proposes a local translation (driving -> source) and the identity is the
    background proposal; a 3D hourglass over the features warped by each proposal and the
    keypoint heatmap differences picks a soft mask over the K + 1 proposals per voxel.
    Returns ``deformation`` (B x D x H x W x 3 sampling grid), ``mask`` (B x K+1 x D x H x W)
    and, when estimated, ``occlusion_map`` (B x 1 x H x W).
    """

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int,
                 estimate_occlusion_map: bool = True) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass3d(block_expansion, (num_kp + 1) * (compress + 1),
                                     levels=num_blocks, cap=max_features)
        out = self.hourglass.out_channels
        self.mask = nn.Conv3d(out, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (nn.Conv2d(out * reshape_depth, 1, kernel_size=7, padding=3)
                          if estimate_occlusion_map else None)

    def proposals(self, grid: torch.Tensor, kp_source: torch.Tensor,
                  kp_driving: torch.Tensor) -> torch.Tensor:
        """Sampling grids B x K+1 x D x H x W x 3: the identity, then one per keypoint."""
        b = kp_source.shape[0]
        per_kp = (grid[None, None] - kp_driving[:, :, None, None, None, :]
                  + kp_source[:, :, None, None, None, :])
        identity = grid[None, None].expand(b, 1, *grid.shape)
        return torch.cat([identity, per_kp], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = F.relu(self.norm(self.compress(feature)))
        b, c, d, h, w = feature.shape
        n = self.num_kp + 1
        grid = volume_grid(d, h, w, kp_source)
        motions = self.proposals(grid, kp_source, kp_driving)

        repeated = feature[:, None].expand(b, n, c, d, h, w).reshape(b * n, c, d, h, w)
        warped = F.grid_sample(repeated, motions.reshape(b * n, d, h, w, 3),
                               align_corners=False).view(b, n, c, d, h, w)
        heat = (keypoint_gaussians(kp_driving, grid, KP_VARIANCE)
                - keypoint_gaussians(kp_source, grid, KP_VARIANCE))
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)

        x = torch.cat([heat[:, :, None], warped], dim=2).view(b, n * (c + 1), d, h, w)
        hidden = self.hourglass(x)
        mask = F.softmax(self.mask(hidden), dim=1)
        deformation = (motions * mask[..., None]).sum(dim=1)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            flat = hidden.reshape(b, -1, h, w)
            out["occlusion_map"] = torch.sigmoid(self.occlusion(flat))
        return out


class FeatureWarper(nn.Module):
    """Warps the appearance volume from the source keypoints to the driving keypoints and
    flattens it to 2D decoder features (B x block_expansion * 2**num_down_blocks x H x W),
    attenuated by the occlusion map."""

    def __init__(self, num_kp: int = 21, block_expansion: int = 64, max_features: int = 512,
                 num_down_blocks: int = 2, reshape_channel: int = 32,
                 estimate_occlusion_map: bool = True,
                 dense_motion_params: dict[str, Any] | None = None,
                 flag_use_occlusion_map: bool = True) -> None:
        super().__init__()
        params = dense_motion_params if dense_motion_params is not None else {
            "block_expansion": 32, "max_features": 1024, "num_blocks": 5, "reshape_depth": 16,
            "compress": 4}
        self.dense_motion_network = FlowEstimator(
            num_kp=num_kp, feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map, **params)
        width = block_expansion * 2 ** num_down_blocks
        self.third = ConvBnAct2d(max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.use_occlusion = flag_use_occlusion_map

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        flow = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = F.grid_sample(feature_3d, flow["deformation"], align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w)))
        occlusion = flow.get("occlusion_map")
        if self.use_occlusion and occlusion is not None:
            out = out * occlusion
        return {"out": out, "deformation": flow["deformation"], "occlusion_map": occlusion}
